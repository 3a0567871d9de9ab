"""Transformer encoder used for both MAE-AST encoder and decoder.

Parameter names follow fairseq's ``TransformerSentenceEncoderLayer`` (``self_attn.q_proj``,
``self_attn_layer_norm``, ``fc1``, ``final_layer_norm``, ...) so that checkpoints of the
original implementation load unchanged; the computation goes through
``torch.nn.functional.scaled_dot_product_attention`` (flash / memory-efficient kernels on
GPU, fused on CPU), which fairseq's MultiheadAttention does not use.

Fast paths (tests/test_speed_paths.py checks each against the plain computation): on CPU,
dropout masks from 16-bit slices of 64-bit random draws (torch's ``bernoulli_`` draws one
Mersenne-twister number per element, serially), applied as 0/1 weights with the
1 / (1 - p) scale folded into the next add; attention with dropout as one autograd function
over cache-sized chunks of heads (:class:`_DropoutAttention`); and ``query_idx``, which lets
the decoder's last layer compute only the positions the loss reads.
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


_INT64_MIN = torch.iinfo(torch.int64).min
_INT16_MIN = torch.iinfo(torch.int16).min


def _random_int16(shape, device) -> torch.Tensor:
    n = math.prod(shape)
    bits = torch.empty((n + 3) // 4, dtype=torch.int64, device=device).random_(_INT64_MIN, None)
    return bits.view(torch.int16)[:n].view(shape)


def _threshold(p: float) -> int:
    return int(round(p * 65536)) - 32768


def drop_mask(shape, p: float, device) -> torch.Tensor:
    """Bool mask, True (dropped) with probability ``p`` (rounded to a multiple of 2^-16).

    Draws 64 random bits per four elements (torch's CPU generator, so ``torch.manual_seed``
    still makes runs reproducible): about 5x fewer generator calls than ``bernoulli_``,
    whose serial Mersenne twister is the slowest part of dropout on a CPU."""
    return _random_int16(shape, device) < _threshold(p)


def keep_weights(shape, p: float, device, dtype) -> torch.Tensor:
    """``(~drop_mask(shape, p, device)).to(dtype)`` from the same random draws."""
    return keep_from_draws(_random_int16(shape, device), p, torch.empty(shape, dtype=dtype, device=device))


def keep_from_draws(draws: torch.Tensor, p: float, out: torch.Tensor) -> torch.Tensor:
    """Writes 1.0 where ``draws >= _threshold(p)`` (kept) and 0.0 elsewhere into ``out`` and
    returns it. Integer clamp to [t - 1, t] minus (t - 1) gives exactly 0 or 1 in three
    vectorised passes; torch's CPU bool kernels (``masked_fill``, ``where``, bool to float)
    are not vectorised: multiplying by these weights measured 14x faster than ``masked_fill``
    with a bool mask on a cache-sized tensor (1.5x on a 35 MB one)."""
    threshold = _threshold(p)
    if threshold <= _INT16_MIN:  # p below 2^-17: nothing is dropped
        return out.fill_(1.0)
    return out.copy_(draws.clamp(threshold - 1, threshold).sub_(threshold - 1))


class _CPUDropout(torch.autograd.Function):
    """Zeroes dropped elements; the 1 / (1 - p) scale is left to the caller, who folds it
    into a cheaper place (a residual add's ``alpha``, the small attention values)."""

    @staticmethod
    def forward(ctx, x, p):
        keep = keep_weights(x.shape, p, x.device, x.dtype)
        ctx.save_for_backward(keep)
        return x * keep

    @staticmethod
    def backward(ctx, grad):
        (keep,) = ctx.saved_tensors
        return grad * keep, None


def dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """``F.dropout`` with a faster mask on CPU (same distribution up to p's rounding to 2^-16);
    ``F.dropout`` elsewhere (fused on GPU)."""
    if not training or p <= 0.0:
        return x
    if p >= 1.0 or x.device.type != "cpu":
        return F.dropout(x, p, True)
    return _CPUDropout.apply(x, p).mul_(1.0 / (1.0 - p))


def add_dropout(residual: torch.Tensor, x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """``residual + dropout(x)``, the scale folded into the add on CPU."""
    if not training or p <= 0.0:
        return residual + x
    if p >= 1.0 or x.device.type != "cpu":
        return residual + F.dropout(x, p, True)
    return torch.add(residual, _CPUDropout.apply(x, p), alpha=1.0 / (1.0 - p))


class Dropout(nn.Dropout):
    """``nn.Dropout`` (same name, no parameters) through :func:`dropout`."""

    def forward(self, x):
        return dropout(x, self.p, self.training)


class SelfAttention(nn.Module):
    """Multi-head self-attention with fairseq's parameter names (``q_proj``, ``k_proj``,
    ``v_proj``, ``out_proj``), computed through :func:`attention`."""

    def __init__(self, dim: int, heads: int, dropout: float):
        super().__init__()
        if dim % heads:
            raise ValueError(f"embedding dim {dim} is not divisible by {heads} attention heads")
        self.heads, self.dropout = heads, dropout
        self.q_proj, self.k_proj, self.v_proj, self.out_proj = (nn.Linear(dim, dim) for _ in range(4))

    def forward(self, x: torch.Tensor, attend: Optional[torch.Tensor],
                query_idx: Optional[torch.Tensor] = None) -> torch.Tensor:
        """x: (B, T, C); attend: (B, 1, 1, T) bool, True where a key may be attended.
        query_idx: (B, M) to compute the output at those positions only: (B, M, C)."""
        b, t, c = x.shape
        h = self.heads

        def split_heads(y):
            return y.view(b, -1, h, c // h).transpose(1, 2)

        # (one product on the concatenated q/k/v weights measured no faster on CPU: not worth a
        # weight copy per step)
        queries = x if query_idx is None else gather_tokens(x, query_idx)
        q, k, v = split_heads(self.q_proj(queries)), split_heads(self.k_proj(x)), split_heads(self.v_proj(x))
        y = attention(q, k, v, attend, self.dropout if self.training else 0.0)
        return self.out_proj(y.transpose(1, 2).reshape(b, -1, c))


def attention(q, k, v, attend: Optional[torch.Tensor] = None, p: float = 0.0) -> torch.Tensor:
    """softmax(q k^T / sqrt(d)) v with dropout ``p`` on the weights: ``scaled_dot_product_attention``
    (flash / memory-efficient kernels on GPU, fused on CPU), except when training on a CPU with
    dropout, where torch has no fused kernel and :func:`dropout_attention` runs instead.
    q: (B, H, Tq, D); k, v: (B, H, T, D); attend: (B, 1, 1, T) bool (True: may be attended)."""
    if p > 0.0 and q.device.type == "cpu":
        return dropout_attention(q, k, v, attend, p)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=attend, dropout_p=p)


# elements of one chunk's (heads, queries, keys) scores: its work buffers stay in the cache
_ATTENTION_CHUNK = 1 << 20


class _DropoutAttention(torch.autograd.Function):
    """softmax(q k^T, keys in ``blocked`` left out) with dropout on the weights, times v, for
    CPU training. Autograd's version streams each (heads, queries, keys) tensor through
    memory about ten times (scores, softmax, mask, dropout and their gradients); here the
    softmax output (kept for the backward pass) and the 16-bit dropout draws are the only
    full-size tensors, and everything else is computed a few heads at a time in work buffers
    that stay in the cache. Same values as the plain computation (tests/test_speed_paths.py).

    q: (N, Tq, D), already scaled; k, v: (N, T, D); blocked: (N, 1, T) bool or None."""

    @staticmethod
    def forward(ctx, q, k, v, blocked, p):
        n, tq, t = q.size(0), q.size(1), k.size(1)
        chunk = max(1, _ATTENTION_CHUNK // (tq * t))
        draws = _random_int16((n, tq, t), q.device)
        probs, out = q.new_empty(n, tq, t), q.new_empty(n, tq, v.size(2))
        work = q.new_empty(min(chunk, n), tq, t)
        for c in _chunks(n, chunk):
            w = work[: c.stop - c.start]
            scores = torch.bmm(q[c], k[c].transpose(1, 2), out=w)
            if blocked is not None:
                scores.masked_fill_(blocked[c], float("-inf"))
            # (ATen's out= variants write into the saved tensor / work buffer: no allocation)
            torch.ops.aten._softmax.out(scores, -1, False, out=probs[c])
            dropped = torch.mul(probs[c], keep_from_draws(draws[c], p, out=w), out=w)
            torch.bmm(dropped, v[c], out=out[c])
        ctx.save_for_backward(q, k, v, probs, draws)
        ctx.p, ctx.chunk = p, chunk
        return out.mul_(1.0 / (1.0 - ctx.p))

    @staticmethod
    def backward(ctx, grad):
        q, k, v, probs, draws = ctx.saved_tensors
        n, tq, t = probs.shape
        grad = grad * (1.0 / (1.0 - ctx.p))
        gq, gk, gv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
        keep_work, work = (probs.new_empty(min(ctx.chunk, n), tq, t) for _ in range(2))
        for c in _chunks(n, ctx.chunk):
            m = c.stop - c.start
            keep = keep_from_draws(draws[c], ctx.p, out=keep_work[:m])
            torch.bmm(torch.mul(probs[c], keep, out=work[:m]).transpose(1, 2), grad[c], out=gv[c])
            grad_dropped = torch.bmm(grad[c], v[c].transpose(1, 2), out=work[:m]).mul_(keep)
            grad_scores = torch.ops.aten._softmax_backward_data.out(
                grad_dropped, probs[c], -1, probs.dtype, grad_input=keep_work[:m])
            torch.bmm(grad_scores, k[c], out=gq[c])
            torch.bmm(grad_scores.transpose(1, 2), q[c], out=gk[c])
        return gq, gk, gv, None, None


def _chunks(n: int, size: int):
    return (slice(i, min(i + size, n)) for i in range(0, n, size))


def dropout_attention(q, k, v, attend, p):
    """softmax(q k^T / sqrt(d)) v with dropout ``p`` on the weights, as SDPA's math path, for
    CPU training (torch's SDPA has no fused CPU kernel with dropout). q: (B, H, Tq, D);
    k, v: (B, H, T, D); attend: (B, 1, 1, T) bool (True: may be attended) or None."""
    b, h, tq, d = q.shape
    t = k.size(2)
    blocked = None if attend is None else (~attend).expand(b, h, 1, t).reshape(b * h, 1, t)
    q = (q * (1.0 / math.sqrt(d))).reshape(b * h, tq, d)
    k, v = k.reshape(b * h, t, d), v.reshape(b * h, t, d)
    with torch.autocast("cpu", enabled=False):  # under autocast, q, k and v are already bf16
        return _DropoutAttention.apply(q, k, v, blocked, p).view(b, h, tq, d)


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
        return self.around_attention(x, lambda y: self.self_attn(y, attend, query_idx), residual)

    def around_attention(self, x, attention, residual=None):
        """The layer's norms, residuals, dropouts and FFN around ``attention``, a function from
        the attention's input to its output (the s3prl upstream passes packed attention here).
        ``residual``: what the attention output is added to (default ``x``)."""
        residual = x if residual is None else residual
        p, training = self.dropout.p, self.training
        if self.layer_norm_first:
            x = add_dropout(residual, attention(self.self_attn_layer_norm(x)), p, training)
            return add_dropout(x, self._ffn(self.final_layer_norm(x)), p, training)
        x = self.self_attn_layer_norm(add_dropout(residual, attention(x), p, training))
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

        Returns the output and the list of every layer's output (B, T, C). With
        ``last_layer`` = n, stops after n layers and returns that layer's output (no final
        LayerNorm). With ``query_idx`` (B, M), the last layer computes (and the output and
        last hidden state hold) only those positions: the same values as gathering them
        from the full output, for less work."""
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
        last_kept = max((i for i, kept in enumerate(keep) if kept), default=-1)
        if query_idx is not None and last_kept < 0:
            x = gather_tokens(x, query_idx)
        for i, (layer, kept) in enumerate(zip(layers, keep)):
            if not kept:
                continue
            q_idx = query_idx if i == last_kept else None
            if self.checkpoint_activations and self.training:
                x = torch.utils.checkpoint.checkpoint(layer, x, attend, q_idx, use_reentrant=False)
            else:
                x = layer(x, attend, q_idx)
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
