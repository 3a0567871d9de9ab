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

Windowed attention (the decoder's options, docs/pretraining.md#decoder-attention): heads that
attend within non-overlapping windows of the token grid (Audio-MAE's local windows, shifted on
every other layer as Swin's) or of the flattened sequence (MW-MAE's one window size per head).
The windows are reshaped into the batch and go through the same :func:`attention`, so a window
of w tokens costs w, not T, keys per query. They add no parameters: checkpoints keep their keys.
"""
import math
from typing import List, NamedTuple, Optional, Sequence, Tuple, Union

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


# ---- windowed attention (the decoder's options) ------------------------------------------------
class HeadGroup(NamedTuple):
    """Heads that attend alike. ``size`` (time, freq) in tokens: non-overlapping windows laid on
    the (n_time, n_freq) token grid from its first token, their boundaries moved ``shift``
    tokens on (Swin's shifted windows: the first window is then ``shift`` long); None: the whole
    sequence. ``flat``: the grid is the flattened time-major sequence, (T, 1) (MW-MAE)."""
    heads: Union[slice, List[int]]
    size: Optional[Tuple[int, int]] = None
    shift: Tuple[int, int] = (0, 0)
    flat: bool = False


def window_layout(kind: str, layers: int, heads: int, n_freq: int, window: Sequence[int] = (4, 4),
                  shift_axes: str = "time", head_windows: Sequence[int] = ()) -> List[Optional[List[HeadGroup]]]:
    """Each layer's head groups for a decoder attention ``kind`` (None: global, today's path).

    local: every head in ``window`` = (time, freq) windows, every other layer (1, 3, ...)
    shifted by half a window along ``shift_axes`` (none, time, both). A window as wide as the
    frequency axis or wider is that axis, unshifted (Swin's rule; frame models: windows in time).
    multi_window: head h within windows of ``head_windows[h]`` tokens of the flattened
    sequence, 0 = global; heads of one size form one group."""
    if kind == "global":
        return [None] * layers
    if kind == "local":
        if len(window) != 2 or min(window) < 1:
            raise ValueError(f"model.decoder_window={list(window)}: two window sides (time, freq) of 1 token or more")
        if shift_axes not in ("none", "time", "both"):
            raise ValueError(f"model.decoder_window_shift={shift_axes!r}: none, time or both")
        wt, wf = int(window[0]), min(int(window[1]), n_freq)
        shift = (wt // 2 if shift_axes != "none" else 0, wf // 2 if shift_axes == "both" and wf < n_freq else 0)
        return [[HeadGroup(slice(None), (wt, wf), shift if i % 2 else (0, 0))] for i in range(layers)]
    if kind == "multi_window":
        if len(head_windows) != heads or min(head_windows, default=0) < 0:
            raise ValueError(f"model.decoder_head_windows={list(head_windows)}: one window size per head "
                             f"({heads} heads), in tokens of the flattened sequence, 0 = global "
                             "(MW-MAE with 8 heads: [2,5,10,25,50,125,0,0])")
        groups = []
        for size in dict.fromkeys(int(w) for w in head_windows):  # distinct sizes, first seen first
            members = [h for h, w in enumerate(head_windows) if w == size]
            contiguous = members == list(range(members[0], members[-1] + 1))
            groups.append(HeadGroup(slice(members[0], members[-1] + 1) if contiguous else members,
                                    (size, 1) if size else None, flat=True))
        return [groups] * layers
    raise ValueError(f"model.decoder_attention={kind!r}: global, local or multi_window")


def _pads(grid, size, shift):
    """Tokens added before and after each axis so that windows of ``size`` tile it, the first
    boundary at ``shift``: ((before_t, after_t), (before_f, after_f))."""
    return tuple(((w - s) % w, -(n + (w - s) % w) % w) for n, w, s in zip(grid, size, shift))


def to_windows(x: torch.Tensor, grid, size, shift) -> torch.Tensor:
    """(B, H, T, D), T = n_time * n_freq time-major -> (B * windows, H, size_t * size_f, D),
    windows in (batch, time, freq) order; the positions added at the edges hold zeros."""
    b, h, _, d = x.shape
    (bt, at), (bf, af) = _pads(grid, size, shift)
    x = F.pad(x.reshape(b, h, grid[0], grid[1], d), (0, 0, bf, af, bt, at))
    mt, mf = x.size(2) // size[0], x.size(3) // size[1]
    x = x.view(b, h, mt, size[0], mf, size[1], d).permute(0, 2, 4, 1, 3, 5, 6)
    return x.reshape(b * mt * mf, h, size[0] * size[1], d)


def from_windows(x: torch.Tensor, batch: int, grid, size, shift) -> torch.Tensor:
    """The inverse of :func:`to_windows`: (B * windows, H, w, D) -> (B, H, T, D)."""
    (bt, at), (bf, af) = _pads(grid, size, shift)
    h, d = x.size(1), x.size(-1)
    mt, mf = (bt + grid[0] + at) // size[0], (bf + grid[1] + af) // size[1]
    x = x.view(batch, mt, mf, h, size[0], size[1], d).permute(0, 3, 1, 4, 2, 5, 6)
    x = x.reshape(batch, h, mt * size[0], mf * size[1], d)[:, :, bt:bt + grid[0], bf:bf + grid[1]]
    return x.reshape(batch, h, grid[0] * grid[1], d)


def window_keys(valid: Optional[torch.Tensor], batch: int, grid, size, shift, device) -> Optional[torch.Tensor]:
    """(B * windows, 1, 1, w) bool, True on the keys a window's queries may attend: its real
    tokens (not padding, not the positions added at the grid's edges); None: all of them.
    valid: (B, T) bool or None."""
    edges = any(before or after for before, after in _pads(grid, size, shift))
    if valid is None and not edges:
        return None
    if valid is None:
        valid = torch.ones(1, grid[0] * grid[1], dtype=torch.bool, device=device).expand(batch, -1)
    keys = to_windows(valid[:, None, :, None], grid, size, shift)[:, 0, :, 0]  # (B * windows, w)
    # a window of padding only: its queries (padding, discarded) attend everything there rather
    # than nothing, which would be NaN and poison the gradients
    keys = keys | ~keys.any(1, keepdim=True)
    return keys[:, None, None, :]


def window_attention(q, k, v, valid: Optional[torch.Tensor], grid: Tuple[int, int], group: HeadGroup,
                     p: float) -> torch.Tensor:
    """Attention of one head group. q, k, v: (B, h, T, D); valid: (B, T) bool (True: a real
    token) or None; grid: (n_time, n_freq) with T = n_time * n_freq. -> (B, h, T, D)."""
    if group.flat:
        grid = (grid[0] * grid[1], 1)
    size, shift = group.size, group.shift
    if size is not None:  # an unshifted window as long as its axis or longer is the whole axis
        size = tuple(n if w >= n and s == 0 else w for n, w, s in zip(grid, size, shift))
    if size is None or (tuple(size) == tuple(grid) and shift == (0, 0)):
        return attention(q, k, v, None if valid is None else valid[:, None, None, :], p)
    keys = window_keys(valid, q.size(0), grid, size, shift, q.device)
    y = attention(*(to_windows(t, grid, size, shift) for t in (q, k, v)), keys, p)
    return from_windows(y, q.size(0), grid, size, shift)


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

    def attention(self, q, k, v, heads: int, p: float, attend_run=None) -> torch.Tensor:
        """(tokens, C) queries, keys and values -> (tokens, C), each sequence on its own.
        ``attend_run(q, k, v, p)`` on one run's (sequences, H, length, D) replaces plain
        attention (windowed layers: each run is its clips alone, without padding)."""
        attend_run = attend_run or (lambda q, k, v, p: attention(q, k, v, p=p))
        out, start = [], 0
        for count, length in self.runs:
            span = slice(start, start + count * length)
            split = [y[span].view(count, length, heads, -1).transpose(1, 2) for y in (q, k, v)]
            out.append(attend_run(*split, p).transpose(1, 2).reshape(count * length, -1))
            start = span.stop
        return out[0] if len(out) == 1 else torch.cat(out)


class SelfAttention(nn.Module):
    """Multi-head self-attention with fairseq's parameter names (``q_proj``, ``k_proj``,
    ``v_proj``, ``out_proj``). ``windows``: the heads' :class:`HeadGroup` s (None: every head
    attends the whole sequence); they add no parameters."""

    def __init__(self, dim: int, heads: int, dropout: float, windows: Optional[List[HeadGroup]] = None):
        super().__init__()
        if dim % heads:
            raise ValueError(f"embedding dim {dim} is not divisible by {heads} attention heads")
        self.heads, self.dropout, self.windows = heads, dropout, windows
        self.q_proj, self.k_proj, self.v_proj, self.out_proj = (nn.Linear(dim, dim) for _ in range(4))
        if windows is not None:  # the groups' outputs, concatenated, back in head order
            order = [h for g in windows for h in (range(heads)[g.heads] if isinstance(g.heads, slice) else g.heads)]
            self.head_order = None if order == list(range(heads)) else [order.index(h) for h in range(heads)]

    def forward(self, x: torch.Tensor, attend, query_idx: Optional[torch.Tensor] = None,
                grid: Optional[Tuple[int, int]] = None) -> torch.Tensor:
        """x: (B, T, C) with ``attend`` (B, 1, 1, T) bool (True where a key may be attended) or
        None; or packed tokens (N, C) with ``attend`` their :class:`Packing`.
        query_idx: (B, M) to compute the output at those positions only: (B, M, C).
        grid: (n_time, n_freq) of the time-major tokens, which windowed heads need."""
        p = self.dropout if self.training else 0.0
        if self.windows is not None:
            return self._windowed(x, attend, query_idx, grid, p)
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

    def _windowed(self, x, attend, query_idx, grid, p) -> torch.Tensor:
        """forward for windowed heads: windows tile the whole grid, so every position's query
        is computed and ``query_idx`` picks output rows (before ``out_proj``, so the rest of the
        layer still runs on those rows only)."""
        if grid is None:
            raise ValueError("windowed attention needs the token grid (n_time, n_freq)")
        q, k, v = self.q_proj(x), self.k_proj(x), self.v_proj(x)
        if isinstance(attend, Packing):  # each run: its clips alone, (length / n_freq, n_freq)
            n_freq = grid[1]
            return self.out_proj(attend.attention(q, k, v, self.heads, p, lambda q, k, v, p: self._heads(
                q, k, v, None, (q.size(2) // n_freq, n_freq), p)))
        b, c = x.size(0), x.size(-1)
        if grid[0] * grid[1] != x.size(1):
            raise ValueError(f"grid {tuple(grid)} does not hold the {x.size(1)} tokens")

        def split_heads(y):  # (B, T, C) -> (B, H, T, C / H)
            return y.view(b, -1, self.heads, c // self.heads).transpose(1, 2)

        valid = None if attend is None else attend[:, 0, 0]  # (B, T)
        y = self._heads(split_heads(q), split_heads(k), split_heads(v), valid, grid, p)
        y = y.transpose(1, 2).reshape(b, -1, c)
        return self.out_proj(y if query_idx is None else gather_tokens(y, query_idx))

    def _heads(self, q, k, v, valid, grid, p) -> torch.Tensor:
        """(B, H, T, D) -> (B, H, T, D), each head group through :func:`window_attention`."""
        out = [window_attention(q[:, g.heads], k[:, g.heads], v[:, g.heads], valid, grid, g, p) for g in self.windows]
        y = out[0] if len(out) == 1 else torch.cat(out, 1)
        return y if self.head_order is None else y[:, self.head_order]


def gather_tokens(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """x: (B, T, C), idx: (B, K) -> (B, K, C)."""
    return x.gather(1, idx.unsqueeze(-1).expand(-1, -1, x.size(-1)))


class TransformerLayer(nn.Module):
    """Post-LN (BERT) layer by default; pre-LN with ``layer_norm_first``."""

    def __init__(self, dim, ffn_dim, heads, dropout, attention_dropout, activation_dropout,
                 activation_fn="gelu", layer_norm_first=False, windows: Optional[List[HeadGroup]] = None):
        super().__init__()
        self.self_attn = SelfAttention(dim, heads, attention_dropout, windows)
        self.self_attn_layer_norm = nn.LayerNorm(dim)
        self.fc1, self.fc2 = nn.Linear(dim, ffn_dim), nn.Linear(ffn_dim, dim)
        self.final_layer_norm = nn.LayerNorm(dim)
        self.activation = ACTIVATIONS[activation_fn]
        self.dropout, self.activation_dropout = Dropout(dropout), Dropout(activation_dropout)
        self.layer_norm_first = layer_norm_first

    def _ffn(self, x):
        return self.fc2(self.activation_dropout(self.activation(self.fc1(x))))

    def forward(self, x, attend, query_idx: Optional[torch.Tensor] = None, grid: Optional[Tuple[int, int]] = None):
        """With ``query_idx`` (B, M): the layer's output at those positions only, (B, M, C)
        (keys and values still come from every position). grid: see :class:`SelfAttention`."""
        residual = x if query_idx is None else gather_tokens(x, query_idx)
        p, training = self.dropout.p, self.training
        if self.layer_norm_first:
            x = add_dropout(residual, self.self_attn(self.self_attn_layer_norm(x), attend, query_idx, grid), p, training)
            return add_dropout(x, self._ffn(self.final_layer_norm(x)), p, training)
        x = self.self_attn_layer_norm(add_dropout(residual, self.self_attn(x, attend, query_idx, grid), p, training))
        return self.final_layer_norm(add_dropout(x, self._ffn(x), p, training))


class TransformerEncoder(nn.Module):
    """A stack of layers with input LayerNorm (post-LN) or output LayerNorm (pre-LN),
    and LayerDrop during training. ``windows``: each layer's head groups (:func:`window_layout`),
    None: global attention everywhere."""

    def __init__(self, num_layers, dim, ffn_dim, heads, dropout=0.1, attention_dropout=0.1,
                 activation_dropout=0.0, activation_fn="gelu", layer_norm_first=False,
                 layerdrop=0.0, checkpoint_activations=False,
                 windows: Optional[List[Optional[List[HeadGroup]]]] = None):
        super().__init__()
        self.checkpoint_activations = checkpoint_activations
        windows = windows or [None] * num_layers
        self.layers = nn.ModuleList(
            TransformerLayer(dim, ffn_dim, heads, dropout, attention_dropout,
                             activation_dropout, activation_fn, layer_norm_first, windows[i])
            for i in range(num_layers)
        )
        self.layer_norm = nn.LayerNorm(dim)
        self.layer_norm_first, self.layerdrop = layer_norm_first, layerdrop
        self.dropout = Dropout(dropout)
        self.apply(init_bert_params)

    def forward(self, x: torch.Tensor, padding: Optional[torch.Tensor] = None,
                last_layer: Optional[int] = None, query_idx: Optional[torch.Tensor] = None,
                grid: Optional[Tuple[int, int]] = None) -> Tuple[torch.Tensor, List[torch.Tensor]]:
        """x: (B, T, C); padding: (B, T) bool, True on padding; grid: (n_time, n_freq) of the
        time-major tokens, T = n_time * n_freq (windowed layers need it).

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
                x = torch.utils.checkpoint.checkpoint(layers[i], x, attend, q_idx, grid, use_reentrant=False)
            else:
                x = layers[i](x, attend, q_idx, grid)
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
