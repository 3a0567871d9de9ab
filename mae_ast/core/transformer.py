"""The transformer of MAE-AST's encoder and decoder: post-LN (BERT) layers, as fairseq's.

Parameter names follow fairseq's ``TransformerSentenceEncoderLayer`` (``self_attn.q_proj``,
``self_attn_layer_norm``, ``fc1``, ``final_layer_norm``, ...) so that checkpoints of the
original implementation load unchanged. Attention goes through
``torch.nn.functional.scaled_dot_product_attention`` (flash / memory-efficient kernels on a
GPU, fused on a CPU); CPU training with dropout takes :mod:`.cpu_kernels` instead (one switch
there says why and turns it off).

Sequences of different lengths (a padded batch) are packed end to end inside the encoder
(:class:`Packing`): the linear layers see only real tokens and attention runs on each group
of equal-length sequences, so padding costs nothing and changes nothing.
"""
import math
from typing import List, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.utils.checkpoint

from . import cpu_kernels

ACTIVATIONS = {
    "gelu": F.gelu,
    "relu": F.relu,
    "gelu_accurate": lambda x: F.gelu(x, approximate="tanh"),
    "tanh": torch.tanh,
    "linear": lambda x: x,
}


def dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    if not training or p <= 0.0:
        return x
    if p < 1.0 and cpu_kernels.applies(x):
        return cpu_kernels.dropout(x, p)
    return F.dropout(x, p, True)


def add_dropout(residual: torch.Tensor, x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """``residual + dropout(x)``."""
    if not training or p <= 0.0:
        return residual + x
    if p < 1.0 and cpu_kernels.applies(x):
        return cpu_kernels.add_dropout(residual, x, p)
    return residual + F.dropout(x, p, True)


class Dropout(nn.Dropout):
    """``nn.Dropout`` (same name, no parameters) through :func:`dropout`."""

    def forward(self, x):
        return dropout(x, self.p, self.training)


def attention(q, k, v, attend: Optional[torch.Tensor] = None, p: float = 0.0) -> torch.Tensor:
    """softmax(q k^T / sqrt(d)) v with dropout ``p`` on the weights.
    q: (B, H, Tq, D); k, v: (B, H, T, D); attend: (B, 1, 1, T) bool (True: may be attended)."""
    if p > 0.0 and cpu_kernels.applies(q):  # torch has no fused CPU kernel with dropout
        return cpu_kernels.dropout_attention(q, k, v, attend, p)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=attend, dropout_p=p)


class Packing:
    """The real tokens of a padded batch laid end to end, longest sequence first.

    padding: (B, T) bool, True on padding (anywhere, not only at the end). ``pack`` turns
    (B, T, C) into (tokens, C); ``unpack`` puts them back, zeros on padding; ``runs`` lists
    (sequences, length) of consecutive sequences of equal length, which attention takes as
    one dense batch each."""

    def __init__(self, padding: torch.Tensor):
        batch, width = padding.shape
        lengths = (~padding).sum(1)
        order = torch.argsort(lengths, descending=True, stable=True)
        rows = order[:, None] * width + torch.arange(width, device=padding.device)
        self.positions = rows[~padding[order]]  # flat (B * T) index of every real token
        run_lengths, counts = torch.unique_consecutive(lengths[order], return_counts=True)
        self.runs = [(c, t) for c, t in zip(counts.tolist(), run_lengths.tolist()) if t > 0]
        self.shape = (batch, width)

    def pack(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(-1, x.size(-1)).index_select(0, self.positions)

    def unpack(self, x: torch.Tensor) -> torch.Tensor:
        full = x.new_zeros(self.shape[0] * self.shape[1], x.size(-1)).index_copy(0, self.positions, x)
        return full.view(*self.shape, x.size(-1))

    def attention(self, q, k, v, heads: int, p: float) -> torch.Tensor:
        """(tokens, C) queries, keys and values -> (tokens, C), each sequence on its own."""
        out, start = [], 0
        for count, length in self.runs:
            span = slice(start, start + count * length)
            split = [y[span].view(count, length, heads, -1).transpose(1, 2) for y in (q, k, v)]
            out.append(attention(*split, p=p).transpose(1, 2).reshape(count * length, -1))
            start = span.stop
        return out[0] if len(out) == 1 else torch.cat(out)


class SelfAttention(nn.Module):
    """Multi-head self-attention with fairseq's parameter names (``q_proj``, ``k_proj``,
    ``v_proj``, ``out_proj``)."""

    def __init__(self, dim: int, heads: int, dropout: float):
        super().__init__()
        if dim % heads:
            raise ValueError(f"embedding dim {dim} is not divisible by {heads} attention heads")
        self.heads, self.dropout = heads, dropout
        self.q_proj, self.k_proj, self.v_proj, self.out_proj = (nn.Linear(dim, dim) for _ in range(4))

    def forward(self, x: torch.Tensor, attend, query_idx: Optional[torch.Tensor] = None) -> torch.Tensor:
        """x: (B, T, C) with ``attend`` (B, 1, 1, T) bool (True where a key may be attended) or
        None; or packed tokens (N, C) with ``attend`` their :class:`Packing`.
        query_idx: (B, M) to compute the output at those positions only: (B, M, C)."""
        p = self.dropout if self.training else 0.0
        queries = x if query_idx is None else gather_tokens(x, query_idx)
        # (one product on concatenated q/k/v weights measured no faster on a CPU)
        q, k, v = self.q_proj(queries), self.k_proj(x), self.v_proj(x)
        if isinstance(attend, Packing):
            return self.out_proj(attend.attention(q, k, v, self.heads, p))
        b, c = x.size(0), x.size(-1)

        def split_heads(y):  # (B, T, C) -> (B, H, T, C / H)
            return y.view(b, -1, self.heads, c // self.heads).transpose(1, 2)

        y = attention(split_heads(q), split_heads(k), split_heads(v), attend, p)
        return self.out_proj(y.transpose(1, 2).reshape(b, -1, c))


def gather_tokens(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """x: (B, T, C), idx: (B, K) -> (B, K, C)."""
    return x.gather(1, idx.unsqueeze(-1).expand(-1, -1, x.size(-1)))


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
        self.dropout, self.activation_dropout = Dropout(dropout), Dropout(activation_dropout)
        self.layer_norm_first = layer_norm_first

    def _ffn(self, x):
        return self.fc2(self.activation_dropout(self.activation(self.fc1(x))))

    def forward(self, x, attend, query_idx: Optional[torch.Tensor] = None):
        """With ``query_idx`` (B, M): the layer's output at those positions only, (B, M, C)
        (keys and values still come from every position)."""
        residual = x if query_idx is None else gather_tokens(x, query_idx)
        p, training = self.dropout.p, self.training
        if self.layer_norm_first:
            x = add_dropout(residual, self.self_attn(self.self_attn_layer_norm(x), attend, query_idx), p, training)
            return add_dropout(x, self._ffn(self.final_layer_norm(x)), p, training)
        x = self.self_attn_layer_norm(add_dropout(residual, self.self_attn(x, attend, query_idx), p, training))
        return self.final_layer_norm(add_dropout(x, self._ffn(x), p, training))


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
        self.dropout = Dropout(dropout)
        self.apply(init_bert_params)

    def forward(self, x: torch.Tensor, padding: Optional[torch.Tensor] = None,
                last_layer: Optional[int] = None, query_idx: Optional[torch.Tensor] = None,
                ) -> Tuple[torch.Tensor, List[torch.Tensor]]:
        """x: (B, T, C); padding: (B, T) bool, True on padding.

        Returns the output and the list of every layer's output (B, T, C); padded positions
        mean nothing (zeros, except on the ``query_idx`` path). With ``last_layer`` = n, stops after n layers and returns that layer's
        output (no final LayerNorm). With ``query_idx`` (B, M), the last layer computes (and
        the output and last hidden state hold) only those positions: the same values as
        gathering them from the full output, for less work."""
        packing = None
        if padding is not None and padding.any():
            if query_idx is None:  # sequences of different lengths: pack them, no work on padding
                packing = Packing(padding)
                x, attend = packing.pack(x), packing
            else:
                attend = (~padding)[:, None, None, :]
        else:
            attend = None
        if not self.layer_norm_first:
            x = self.layer_norm(x)
        x = self.dropout(x)
        layers = self.layers if last_layer is None else self.layers[:last_layer]
        kept = self._kept_layers(len(layers))
        if query_idx is not None and not kept:
            x = gather_tokens(x, query_idx)
        hidden_states = []
        for i in kept:
            q_idx = query_idx if i == kept[-1] else None
            if self.checkpoint_activations and self.training:
                x = torch.utils.checkpoint.checkpoint(layers[i], x, attend, q_idx, use_reentrant=False)
            else:
                x = layers[i](x, attend, q_idx)
            hidden_states.append(x)
        if self.layer_norm_first and last_layer is None:
            x = self.layer_norm(x)
        if packing is not None:
            x, hidden_states = packing.unpack(x), [packing.unpack(h) for h in hidden_states]
        return x, hidden_states

    def _kept_layers(self, count: int) -> List[int]:
        """Indices of the layers that run: all, or with LayerDrop in training a random subset
        (one draw per batch, on the host: a skipped layer costs nothing)."""
        if self.training and self.layerdrop > 0:
            return [i for i, keep in enumerate(torch.rand(count).ge(self.layerdrop).tolist()) if keep]
        return list(range(count))


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
