"""CPU training kernels: dropout and attention-with-dropout that torch runs slowly on a CPU.

Why they exist: on a GPU, ``F.dropout`` and ``scaled_dot_product_attention(dropout_p=...)`` are
fused kernels. On a CPU, torch draws dropout masks with a serial Mersenne twister
(``bernoulli_``), applies them with bool kernels that are not vectorised, and has no fused
attention with dropout, so autograd streams every (heads, queries, keys) tensor through memory
about ten times. What these kernels buy, on the paper-size models, 4 x 10 s of speech, a 2-core
CPU with AVX512 (``python tools/bench.py``, see docs/performance.md): a fp32 training step about
1.3x faster than the original implementation, where torch's plain ops gave 1.1x.

The switch: :data:`ENABLED` (environment variable ``MAE_AST_CPU_KERNELS=0`` turns them off at
start; :func:`enabled` turns them off for a block). When off, or on any other device, the
transformer takes torch's plain path (``F.dropout``, SDPA with ``dropout_p``), which is what a
GPU runs: tests run the training step through both (tests/test_speed_paths.py).

Same distribution as ``F.dropout`` up to p's rounding to a multiple of 2^-16; ``torch.manual_seed``
makes runs reproducible as before (the draws come from torch's CPU generator).

Private torch ops: ``torch.ops.aten._softmax.out`` and ``torch.ops.aten._softmax_backward_data.out``
write a softmax and its gradient into preallocated buffers; no public API does (``torch.softmax``
has no ``out=``, and an allocation per chunk brings back the page faults this module removes).
Checked on torch 2.8.0; ``test_private_softmax_ops_keep_their_meaning`` fails if they change.
"""
import contextlib
import math
import os

import torch

ENABLED = os.environ.get("MAE_AST_CPU_KERNELS", "1") != "0"

_INT64_MIN = torch.iinfo(torch.int64).min
_INT16_MIN = torch.iinfo(torch.int16).min
# elements of one chunk's (heads, queries, keys) scores: its work buffers stay in the cache
ATTENTION_CHUNK = 1 << 20


def applies(x: torch.Tensor) -> bool:
    """Whether these kernels replace torch's plain dropout and attention for ``x``."""
    return ENABLED and x.device.type == "cpu"


@contextlib.contextmanager
def enabled(on: bool):
    """``with cpu_kernels.enabled(False):`` runs the block on torch's plain (GPU) path."""
    global ENABLED
    before, ENABLED = ENABLED, on
    try:
        yield
    finally:
        ENABLED = before


# ---- dropout masks ----------------------------------------------------------------------------
def _random_int16(shape, device) -> torch.Tensor:
    # 64 random bits per four elements: about 5x fewer generator calls than bernoulli_
    n = math.prod(shape)
    bits = torch.empty((n + 3) // 4, dtype=torch.int64, device=device).random_(_INT64_MIN, None)
    return bits.view(torch.int16)[:n].view(shape)


def _threshold(p: float) -> int:
    return int(round(p * 65536)) - 32768


def drop_mask(shape, p: float, device) -> torch.Tensor:
    """Bool mask, True (dropped) with probability ``p``, from the same draws as the kernels."""
    return _random_int16(shape, device) < _threshold(p)


def keep_from_draws(draws: torch.Tensor, p: float, out: torch.Tensor) -> torch.Tensor:
    """Writes 1.0 where ``draws >= _threshold(p)`` (kept) and 0.0 elsewhere into ``out``.

    An integer clamp to [t - 1, t] minus (t - 1) gives exactly 0 or 1 in three vectorised
    passes; multiplying by these weights measured 14x faster than ``masked_fill`` with a bool
    mask on a cache-sized tensor (1.5x on a 35 MB one)."""
    threshold = _threshold(p)
    if threshold <= _INT16_MIN:  # p below 2^-17: nothing is dropped
        return out.fill_(1.0)
    return out.copy_(draws.clamp(threshold - 1, threshold).sub_(threshold - 1))


class _ZeroDropped(torch.autograd.Function):
    """Zeroes dropped elements; the 1 / (1 - p) scale is left to the caller, who folds it
    into a cheaper place (a residual add's ``alpha``)."""

    @staticmethod
    def forward(ctx, x, p):
        keep = keep_from_draws(_random_int16(x.shape, x.device), p, torch.empty_like(x))
        ctx.save_for_backward(keep)
        return x * keep

    @staticmethod
    def backward(ctx, grad):
        (keep,) = ctx.saved_tensors
        return grad * keep, None


def dropout(x: torch.Tensor, p: float) -> torch.Tensor:
    """``F.dropout(x, p, training=True)`` for 0 < p < 1."""
    return _ZeroDropped.apply(x, p).mul_(1.0 / (1.0 - p))


def add_dropout(residual: torch.Tensor, x: torch.Tensor, p: float) -> torch.Tensor:
    """``residual + F.dropout(x, p, training=True)``, the scale folded into the add."""
    return torch.add(residual, _ZeroDropped.apply(x, p), alpha=1.0 / (1.0 - p))


# ---- attention with dropout --------------------------------------------------------------------
class _DropoutAttention(torch.autograd.Function):
    """softmax(q k^T, keys in ``blocked`` left out) with dropout on the weights, times v.

    The softmax output (kept for the backward pass) and the 16-bit dropout draws are the only
    full-size tensors; everything else is computed a few heads at a time in work buffers that
    stay in the cache. q: (N, Tq, D), already scaled; k, v: (N, T, D); blocked: (N, 1, T) bool
    or None."""

    @staticmethod
    def forward(ctx, q, k, v, blocked, p):
        n, tq, t = q.size(0), q.size(1), k.size(1)
        chunk = max(1, ATTENTION_CHUNK // (tq * t))
        draws = _random_int16((n, tq, t), q.device)
        probs, out = q.new_empty(n, tq, t), q.new_empty(n, tq, v.size(2))
        work = q.new_empty(min(chunk, n), tq, t)
        for c in _chunks(n, chunk):
            w = work[: c.stop - c.start]
            scores = torch.bmm(q[c], k[c].transpose(1, 2), out=w)
            if blocked is not None:
                scores.masked_fill_(blocked[c], float("-inf"))
            torch.ops.aten._softmax.out(scores, -1, False, out=probs[c])
            dropped = torch.mul(probs[c], keep_from_draws(draws[c], p, out=w), out=w)
            torch.bmm(dropped, v[c], out=out[c])
        ctx.save_for_backward(q, k, v, probs, draws)
        ctx.p, ctx.chunk = p, chunk
        return out.mul_(1.0 / (1.0 - p))

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
    """softmax(q k^T / sqrt(d)) v with dropout ``p`` on the weights, as SDPA's math path.
    q: (B, H, Tq, D); k, v: (B, H, T, D); attend: (B, 1, 1, T) bool (True: may be attended)
    or None."""
    b, h, tq, d = q.shape
    t = k.size(2)
    blocked = None if attend is None else (~attend).expand(b, h, 1, t).reshape(b * h, 1, t)
    q = (q * (1.0 / math.sqrt(d))).reshape(b * h, tq, d)
    k, v = k.reshape(b * h, t, d), v.reshape(b * h, t, d)
    with torch.autocast("cpu", enabled=False):  # under autocast, q, k and v are already bf16
        return _DropoutAttention.apply(q, k, v, blocked, p).view(b, h, tq, d)
