"""Which tokens the encoder sees: the four MAE-AST masking strategies, vectorised.

Every strategy reduces to one rule: give each token a *keep score*, and each example keeps
its ``num_keep`` highest-scoring valid tokens. Padding scores -inf so it is never kept.
One ``argsort`` over the whole batch then yields the kept and masked index sets, as in
facebookresearch/mae; there is no Python loop over examples or tokens.

- ``random_mask``: i.i.d. uniform scores per example.
- ``random_mask_batched``: one row of uniform scores shared by the batch.
- ``chunk_mask``: SSAST-style square chunks (side 3..5 tokens) dropped at random in time and
  frequency, drawn independently per example. A token's score is minus the placement order
  of the first chunk that covers it, so masking "chunk after chunk until enough are masked"
  becomes "mask the lowest scores".
- ``retain_spans``: wav2vec2 span sampling (``mask_length`` tokens per span, ``p * T /
  mask_length`` spans, overlap allowed); spans mark masked tokens, so the masked share is
  ``1 - exp(-p)``: about 75 % at p = 1.45 and 52 % at p = 0.74, the paper's figures. Kept
  tokens are the spans left between masked spans.
"""
import math
from dataclasses import dataclass
from typing import Optional

import torch

MASK_TYPES = ("random_mask", "random_mask_batched", "chunk_mask", "retain_spans")
CHUNK_SIDES = (3, 5)  # inclusive range of chunk side lengths, in tokens (SSAST)


@dataclass
class MaskPlan:
    """Index sets that split each example's tokens.

    ``kept_idx`` (B, K) and ``masked_idx`` (B, M) index tokens. ``kept_valid`` and
    ``masked_valid`` (same shapes, bool) say which slots are real: examples of a padded batch
    keep and mask different numbers of tokens, and padding tokens are in neither valid set.
    They are None when every slot is real (no padding), which keeps the step free of host
    synchronisation and lets attention run without a mask.
    """

    kept_idx: torch.Tensor
    masked_idx: torch.Tensor
    kept_valid: Optional[torch.Tensor] = None
    masked_valid: Optional[torch.Tensor] = None

    @property
    def kept_padding(self) -> Optional[torch.Tensor]:
        return None if self.kept_valid is None else ~self.kept_valid

    def masked_tokens(self, num_tokens: int) -> torch.Tensor:
        """(B, T) bool: True where a valid token is masked."""
        out = torch.zeros(
            self.masked_idx.size(0), num_tokens, dtype=torch.bool, device=self.masked_idx.device)
        valid = self.masked_valid if self.masked_valid is not None else torch.ones_like(out[:, :1]).expand_as(self.masked_idx)
        return out.scatter(1, self.masked_idx, valid)


def num_kept(num_valid, mask_prob: float):
    """Tokens an example keeps: ``max(1, int((1 - p) * T))`` as in the original.
    ``num_valid`` is an int (no padding) or a (B,) tensor."""
    keep_share = max(0.0, 1.0 - mask_prob)
    if isinstance(num_valid, int):
        return max(1, int(num_valid * keep_share))
    return (num_valid.double() * keep_share).floor().long().clamp_min(1)


def plan_from_scores(scores: torch.Tensor, padding: Optional[torch.Tensor], keep) -> MaskPlan:
    """Keep each example's ``keep`` highest-scoring valid tokens; mask the other valid ones.

    ``keep`` is an int shared by the batch or a (B,) tensor."""
    if padding is None and isinstance(keep, int):
        order = scores.argsort(dim=1, descending=True)
        return MaskPlan(order[:, :keep], order[:, keep:])
    tokens = scores.size(1)
    if padding is None:
        padding = torch.zeros_like(scores, dtype=torch.bool)
    scores = scores.masked_fill(padding, float("-inf"))
    order = scores.argsort(dim=1, descending=True)
    valid_count = (~padding).sum(1, keepdim=True)
    keep = torch.as_tensor(keep, device=scores.device).view(-1, 1).expand_as(valid_count)
    keep = torch.minimum(keep, valid_count)
    k_max, k_min = int(keep.max()), int(keep.min())  # host sync: only for padded or span masks
    rank = torch.arange(tokens, device=order.device).unsqueeze(0)
    return MaskPlan(
        kept_idx=order[:, :k_max],
        masked_idx=order[:, k_min:],
        kept_valid=(rank < keep)[:, :k_max],
        masked_valid=((rank >= keep) & (rank < valid_count))[:, k_min:],
    )


def compute_mask(
    mask_type: str,
    padding: Optional[torch.Tensor],
    mask_prob: float,
    grid: tuple,
    mask_length: int = 10,
    generator: Optional[torch.Generator] = None,
    batch_size: int = 1,
    device: Optional[torch.device] = None,
) -> MaskPlan:
    """Draw a mask for tokens laid out time-major on a ``grid`` = (n_time, n_freq).

    Args:
        padding: (B, T) bool, True on padding tokens, or None for none; T = n_time * n_freq.
        generator: for reproducible masks; it must live on the tokens' device.
    """
    batch, tokens = padding.shape if padding is not None else (batch_size, grid[0] * grid[1])
    num_valid = (~padding).sum(1) if padding is not None else tokens
    device = padding.device if padding is not None else device
    if mask_type == "random_mask":
        scores = torch.rand(batch, tokens, device=device, generator=generator)
    elif mask_type == "random_mask_batched":
        scores = torch.rand(1, tokens, device=device, generator=generator).expand(batch, -1)
    elif mask_type == "chunk_mask":
        scores = chunk_scores(batch, grid, mask_prob, device, generator)
    elif mask_type == "retain_spans":
        masked = span_mask(batch, tokens, num_valid, mask_prob, mask_length, device, generator)
        if padding is not None:
            masked = masked | padding
        keep_per_example = (~masked).sum(1).clamp_min(1)
        # spans are masked, gaps kept; a random tiebreak only matters for the min-1 rule
        noise = torch.rand(batch, tokens, device=device, generator=generator)
        return plan_from_scores((~masked).float() + 0.5 * noise, padding, keep_per_example)
    else:
        raise ValueError(f"unknown mask_type {mask_type!r}; choose one of {MASK_TYPES}")
    return plan_from_scores(scores, padding, num_kept(num_valid, mask_prob))


def chunk_scores(batch, grid, mask_prob, device, generator=None) -> torch.Tensor:
    """Keep scores for SSAST chunk masking, per example.

    Chunks are placed in a random order; a token's score is minus the index of the first
    chunk covering it, plus a fraction in [0, 1) that orders tokens inside one chunk and
    never crosses chunks. Uncovered tokens score highest. Enough chunks are drawn that,
    even with overlap, they nearly always cover more than ``mask_prob`` of the grid.
    """
    n_time, n_freq = grid
    tokens = n_time * n_freq
    lo, hi = CHUNK_SIDES
    num_chunks = max(4, math.ceil(3.0 * mask_prob * tokens / (lo * lo)))
    side = torch.randint(lo, hi + 1, (batch, num_chunks, 1), device=device, generator=generator)
    # top-left corners may hang over the top/left edge so every token is equally likely hit
    t0 = (torch.rand(batch, num_chunks, 1, device=device, generator=generator) * (n_time + side - 1)).long() - side + 1
    f0 = (torch.rand(batch, num_chunks, 1, device=device, generator=generator) * (n_freq + side - 1)).long() - side + 1
    tok = torch.arange(tokens, device=device)
    t, f = (tok // n_freq).view(1, 1, -1), (tok % n_freq).view(1, 1, -1)
    covers = (t >= t0) & (t < t0 + side) & (f >= f0) & (f < f0 + side)  # (B, chunks, T)
    order = torch.arange(num_chunks, device=device, dtype=torch.float32).view(1, -1, 1)
    first_cover = torch.where(covers, order, float(num_chunks)).amin(dim=1)  # (B, T)
    jitter = torch.rand(batch, tokens, device=device, generator=generator)
    return -(first_cover + jitter)


def span_mask(batch, tokens, num_valid, mask_prob, mask_length, device, generator=None):
    """wav2vec2-style spans: ``int(p * T_b / L + U[0,1))`` span starts (at least 2), uniform
    over ``[0, T_b)``, each covering L tokens (cut at the end). Covers ``1 - exp(-p)`` of the
    tokens on average: 76 % at p = 1.45, 52 % at 0.74. Returns (B, T) bool."""
    span_len = max(1, min(mask_length, tokens))
    num_valid = torch.as_tensor(num_valid, device=device).expand(batch).clamp_min(1)
    num_spans = (
        mask_prob * num_valid.double() / span_len
        + torch.rand(batch, device=device, generator=generator, dtype=torch.float64)
    ).floor().long().clamp_min(2)
    max_spans = int(mask_prob * tokens / span_len) + 2  # bound on num_spans, known on the host
    starts = (torch.rand(batch, max_spans, device=device, generator=generator)
              * num_valid.unsqueeze(1)).long()
    used = torch.arange(max_spans, device=device).unsqueeze(0) < num_spans.unsqueeze(1)
    is_start = torch.zeros(batch, tokens, device=device).scatter_add_(1, starts, used.float())
    # a token is masked if a span started within the last span_len positions
    cover = torch.nn.functional.conv1d(
        is_start.unsqueeze(1), torch.ones(1, 1, span_len, device=device), padding=span_len - 1,
    )[:, 0, :tokens]
    pos = torch.arange(tokens, device=device).unsqueeze(0)
    return (cover > 0) & (pos < num_valid.unsqueeze(1))
