"""Transformer encoder used for both MAE-AST encoder and decoder.

Parameter names follow fairseq's ``TransformerSentenceEncoderLayer`` (``self_attn.q_proj``,
``self_attn_layer_norm``, ``fc1``, ``final_layer_norm``, ...) so that checkpoints of the
original implementation load unchanged; the computation goes through
``torch.nn.functional.scaled_dot_product_attention`` (flash / memory-efficient kernels on
GPU, fused on CPU), which fairseq's MultiheadAttention does not use.
"""
import math
from typing import List, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.utils.checkpoint

ACTIVATIONS = {
    "gelu": F.gelu,
    "relu": F.relu,
    "gelu_accurate": lambda x: F.gelu(x, approximate="tanh"),
    "tanh": torch.tanh,
    "linear": lambda x: x,
}


class SelfAttention(nn.Module):
    def __init__(self, dim: int, heads: int, dropout: float):
        super().__init__()
        if dim % heads:
            raise ValueError(f"embedding dim {dim} is not divisible by {heads} attention heads")
        self.heads, self.dropout = heads, dropout
        self.q_proj, self.k_proj, self.v_proj, self.out_proj = (nn.Linear(dim, dim) for _ in range(4))

    def forward(self, x: torch.Tensor, attend: Optional[torch.Tensor]) -> torch.Tensor:
        """x: (B, T, C); attend: (B, 1, 1, T) bool, True where a key may be attended."""
        b, t, c = x.shape
        q, k, v = (
            proj(x).view(b, t, self.heads, c // self.heads).transpose(1, 2)
            for proj in (self.q_proj, self.k_proj, self.v_proj)
        )
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=attend, dropout_p=self.dropout if self.training else 0.0
        )
        return self.out_proj(y.transpose(1, 2).reshape(b, t, c))


class TransformerLayer(nn.Module):
    """Post-LN (BERT) layer by default; pre-LN with ``layer_norm_first``."""

    def __init__(self, dim, ffn_dim, heads, dropout, attention_dropout, activation_dropout,
                 activation_fn="gelu", layer_norm_first=False):
        super().__init__()
        self.self_attn = SelfAttention(dim, heads, attention_dropout)
        self.self_attn_layer_norm = nn.LayerNorm(dim)
        self.fc1, self.fc2 = nn.Linear(dim, ffn_dim), nn.Linear(ffn_dim, dim)
        self.final_layer_norm = nn.LayerNorm(dim)
        self.activation = ACTIVATIONS[activation_fn]
        self.dropout, self.activation_dropout = nn.Dropout(dropout), nn.Dropout(activation_dropout)
        self.layer_norm_first = layer_norm_first

    def _feed_forward(self, x):
        return self.dropout(self.fc2(self.activation_dropout(self.activation(self.fc1(x)))))

    def forward(self, x, attend):
        if self.layer_norm_first:
            x = x + self.dropout(self.self_attn(self.self_attn_layer_norm(x), attend))
            return x + self._feed_forward(self.final_layer_norm(x))
        x = self.self_attn_layer_norm(x + self.dropout(self.self_attn(x, attend)))
        return self.final_layer_norm(x + self._feed_forward(x))


class TransformerEncoder(nn.Module):
    """A stack of layers with input LayerNorm (post-LN) or output LayerNorm (pre-LN),
    and LayerDrop during training."""

    def __init__(self, num_layers, dim, ffn_dim, heads, dropout=0.1, attention_dropout=0.1,
                 activation_dropout=0.0, activation_fn="gelu", layer_norm_first=False,
                 layerdrop=0.0, checkpoint_activations=False):
        super().__init__()
        self.checkpoint_activations = checkpoint_activations
        self.layers = nn.ModuleList(
            TransformerLayer(dim, ffn_dim, heads, dropout, attention_dropout,
                             activation_dropout, activation_fn, layer_norm_first)
            for _ in range(num_layers)
        )
        self.layer_norm = nn.LayerNorm(dim)
        self.layer_norm_first, self.layerdrop = layer_norm_first, layerdrop
        self.dropout = nn.Dropout(dropout)
        self.apply(init_bert_params)

    def forward(self, x: torch.Tensor, padding: Optional[torch.Tensor] = None,
                last_layer: Optional[int] = None) -> Tuple[torch.Tensor, List[torch.Tensor]]:
        """x: (B, T, C); padding: (B, T) bool, True on padding.

        Returns the output and the list of every layer's output (B, T, C). With
        ``last_layer`` = n, stops after n layers and returns that layer's output (no final
        LayerNorm)."""
        attend = None if padding is None or not padding.any() else (~padding)[:, None, None, :]
        if not self.layer_norm_first:
            x = self.layer_norm(x)
        x = self.dropout(x)
        hidden_states = []
        layers = self.layers if last_layer is None else self.layers[:last_layer]
        if self.training and self.layerdrop > 0:
            # one draw per batch, on the host: a skipped layer costs nothing
            keep = torch.rand(len(layers)).ge(self.layerdrop).tolist()
        else:
            keep = [True] * len(layers)
        for layer, kept in zip(layers, keep):
            if kept and self.checkpoint_activations and self.training:
                x = torch.utils.checkpoint.checkpoint(layer, x, attend, use_reentrant=False)
                hidden_states.append(x)
            elif kept:
                x = layer(x, attend)
                hidden_states.append(x)
        if self.layer_norm_first and last_layer is None:
            x = self.layer_norm(x)
        return x, hidden_states


def init_bert_params(module: nn.Module):
    """BERT initialisation, as fairseq's ``init_bert_params``: N(0, 0.02) weights, zero bias."""
    if isinstance(module, nn.Linear):
        nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Embedding):
        nn.init.normal_(module.weight, mean=0.0, std=0.02)


def sinusoidal_table(length: int, dim: int) -> torch.Tensor:
    """(1, length, dim) table: sin on even channels, cos on odd ones (Transformer paper)."""
    position = torch.arange(length, dtype=torch.float32).unsqueeze(1)
    freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    table = torch.zeros(1, length, dim)
    table[0, :, 0::2] = torch.sin(position * freq)
    table[0, :, 1::2] = torch.cos(position * freq)
    return table
