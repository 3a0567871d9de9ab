"""Which tokens the encoder sees: the MAE-AST masking strategies, and EAT's, vectorised.

Every strategy reduces to one rule: give each token a *keep score*, and each example keeps
its ``num_keep`` highest-scoring valid tokens. Padding scores -inf so it is never kept.
One ``argsort`` over the whole batch then yields the kept and masked index sets, as in
facebookresearch/mae; there is no Python loop over examples or tokens.

- ``random_mask``: i.i.d. uniform scores per example.
- ``random_mask_batched``: one row of uniform scores shared by the batch.
- ``chunk_mask`` (the paper's patch model, SSAST's masking): each example picks a square side
  k in 3..5 once, then places k x k chunks at uniform top-left tokens (clipped at the grid) and
  *masks* them, chunk after chunk, until ``T - num_keep`` tokens are masked; the encoder sees
  what lies between the chunks. A token's score is the placement order of the first chunk
  that covers it, so the first chunks score lowest and are masked first. Drawn per example
  (the original shares one mask across the batch).
- ``retain_spans``: wav2vec2 span sampling (``mask_length`` tokens per span, ``p * T /
  mask_length`` spans at distinct starts, overlap allowed); spans mark masked tokens, so the
  masked share is about ``1 - exp(-p)``: 79 % at p = 1.45 and 54 % at p = 0.74 on 500 tokens
  (the paper's "~75 %" and "~50 %"). Kept tokens are the gaps left between masked spans.
- ``inverse_block`` (EAT's ``inverse_mask``, not the paper's): square blocks of side
  ``block_size`` around uniform centres mark the *kept* tokens, the rest is masked; random
  tokens are then added to or removed from the blocks until exactly ``num_keep`` are kept.
"""
import math
from dataclasses import dataclass
from typing import Optional

import torch

MASK_TYPES = ("random_mask", "random_mask_batched", "chunk_mask", "retain_spans", "inverse_block")
CHUNK_SIDES = (3, 5)  # inclusive range of chunk side lengths, in tokens (SSAST)
BLOCK_SIZE = 5  # inverse_block's block side, in tokens (EAT)
UNCOVERED = 1e9  # chunk score of a token no chunk covers: kept first
MAX_CHUNK_ROUNDS = 64  # a tiny grid at a high ratio may need several rounds of chunks
# EAT draws (keep share + 0.07) * T / block_size**2 block centres: the 0.07 makes up for overlap
BLOCK_SHARE_ADJUST = 0.07


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
    block_size: int = BLOCK_SIZE,
) -> MaskPlan:
    """Draw a mask for tokens laid out time-major on a ``grid`` = (n_time, n_freq).

    Args:
        padding: (B, T) bool, True on padding tokens (the last time steps of shorter
            examples), or None for none; T = n_time * n_freq.
        mask_length: span length of ``retain_spans``; block_size: block side of ``inverse_block``.
        generator: for reproducible masks; it must live on the tokens' device.
    """
    batch, tokens = padding.shape if padding is not None else (batch_size, grid[0] * grid[1])
    num_valid = (~padding).sum(1) if padding is not None else tokens
    device = padding.device if padding is not None else device
    keep = num_kept(num_valid, mask_prob)
    if mask_type == "random_mask":
        scores = torch.rand(batch, tokens, device=device, generator=generator)
    elif mask_type == "random_mask_batched":
        scores = torch.rand(1, tokens, device=device, generator=generator).expand(batch, -1)
    elif mask_type == "chunk_mask":
        scores = chunk_scores(batch, grid, valid_steps(num_valid, grid, batch, device), keep,
                              mask_prob, device, generator)
    elif mask_type == "inverse_block":
        scores = block_scores(batch, grid, valid_steps(num_valid, grid, batch, device), mask_prob,
                              block_size, device, generator)
    elif mask_type == "retain_spans":
        masked = span_mask(batch, tokens, num_valid, mask_prob, mask_length, device, generator)
        if padding is not None:
            masked = masked | padding
        keep = (~masked).sum(1).clamp_min(1)
        # spans are masked, gaps kept; a random tiebreak only matters for the min-1 rule
        noise = torch.rand(batch, tokens, device=device, generator=generator)
        scores = (~masked).float() + 0.5 * noise
    else:
        raise ValueError(f"unknown mask_type {mask_type!r}; choose one of {MASK_TYPES}")
    return plan_from_scores(scores, padding, keep)


def valid_steps(num_valid, grid, batch, device) -> torch.Tensor:
    """(B, 1, 1) time steps of real tokens per example (padding fills the last steps)."""
    steps = torch.as_tensor(num_valid, device=device).expand(batch) // grid[1]
    return steps.clamp_min(1).view(batch, 1, 1)


def square_cover(t0, f0, side, grid, device) -> torch.Tensor:
    """(B, N, T) bool: which tokens the squares with top-left (``t0``, ``f0``) and ``side``
    (each (B, N, 1)) cover, clipped at the grid."""
    n_time, n_freq = grid
    tok = torch.arange(n_time * n_freq, device=device)
    t, f = (tok // n_freq).view(1, 1, -1), (tok % n_freq).view(1, 1, -1)
    return (t >= t0) & (t < t0 + side) & (f >= f0) & (f < f0 + side)


def chunk_count(grid, mask_prob) -> int:
    """Chunks per example in a round: n chunks of mean clipped area a cover about
    ``1 - exp(-n a / T)`` of the grid; draw twice the n that reaches ``mask_prob`` with the
    smallest side (clipping at a narrow grid shrinks the area), plus a few for tiny grids."""
    n_time, n_freq = grid
    lo = CHUNK_SIDES[0]
    area = min(lo, n_freq) * lo * 0.8
    need = -math.log(1.0 - min(max(mask_prob, 0.0), 0.999))
    return math.ceil(2 * need * n_time * n_freq / area) + 8


def chunk_scores(batch, grid, steps, keep, mask_prob, device, generator=None) -> torch.Tensor:
    """Keep scores for SSAST chunk masking, per example; ``steps`` (B, 1, 1) valid time steps,
    ``keep`` (int or (B,)) tokens to keep.

    Each example draws one side k in 3..5 and a sequence of k x k chunks with uniform
    top-left tokens in its valid grid. A token scores the index of the first chunk covering
    it, plus a fraction in [0, 1) that orders tokens inside one chunk and never crosses
    chunks: the lowest scores (masked first) are the first chunks' tokens, and the chunk that
    completes the masked count is masked in a random part. Uncovered tokens score highest
    (``UNCOVERED``). Chunks are drawn in rounds until every example's chunks cover the tokens
    it masks; the first round nearly always suffices (one host sync per round).
    """
    n_time, n_freq = grid
    lo, hi = CHUNK_SIDES
    need = (steps.view(batch) * n_freq - torch.as_tensor(keep, device=device)).view(batch, 1)
    side = torch.randint(lo, hi + 1, (batch, 1, 1), device=device, generator=generator)
    first_cover = torch.full((batch, n_time * n_freq), UNCOVERED, device=device)
    # a chunk near a padded clip's end reaches into padding: only its valid tokens count
    in_clip = (torch.arange(n_time * n_freq, device=device) // n_freq).view(1, 1, -1) < steps
    drawn, num_chunks = 0, chunk_count(grid, mask_prob)
    for _ in range(MAX_CHUNK_ROUNDS):
        t0 = (torch.rand(batch, num_chunks, 1, device=device, generator=generator) * steps).long()
        f0 = torch.randint(0, n_freq, (batch, num_chunks, 1), device=device, generator=generator)
        covers = square_cover(t0, f0, side, grid, device) & in_clip  # (B, chunks, T), valid steps only
        order = torch.arange(drawn, drawn + num_chunks, device=device, dtype=torch.float32).view(1, -1, 1)
        first_cover = torch.minimum(first_cover, torch.where(covers, order, UNCOVERED).amin(dim=1))
        drawn += num_chunks
        if bool(((first_cover < UNCOVERED).sum(1, keepdim=True) >= need).all()):
            break
    jitter = torch.rand(batch, n_time * n_freq, device=device, generator=generator)
    return first_cover + jitter


def block_scores(batch, grid, steps, mask_prob, block_size, device, generator=None) -> torch.Tensor:
    """Keep scores for EAT's inverse block masking; ``steps`` (B, 1, 1) valid time steps.

    ``(keep share + 0.07) * T / block_size**2`` block centres per example, uniform over its
    valid tokens (with replacement, as EAT); a block spans ``block_size`` tokens around its
    centre in time and frequency, clipped at the grid. Covered tokens score in [1, 2),
    others in [0, 1): keeping the top ``num_keep`` removes random covered tokens when the
    blocks hold too many and adds random uncovered ones when they hold too few (EAT's rule).
    """
    n_time, n_freq = grid
    keep_share = max(0.0, 1.0 - mask_prob)
    valid_tokens = steps.view(batch) * n_freq
    num_blocks = (valid_tokens.double() * (keep_share + BLOCK_SHARE_ADJUST) / block_size ** 2).long()
    max_blocks = max(1, int(n_time * n_freq * (keep_share + BLOCK_SHARE_ADJUST) / block_size ** 2))
    centre = (torch.rand(batch, max_blocks, 1, device=device, generator=generator)
              * valid_tokens.view(batch, 1, 1)).long()
    half = block_size // 2
    t0, f0 = centre // n_freq - half, centre % n_freq - half
    used = torch.arange(max_blocks, device=device).view(1, -1, 1) < num_blocks.view(batch, 1, 1)
    covered = (square_cover(t0, f0, block_size, grid, device) & used).any(dim=1)  # (B, T)
    return covered.float() + torch.rand(batch, n_time * n_freq, device=device, generator=generator)


def span_mask(batch, tokens, num_valid, mask_prob, mask_length, device, generator=None):
    """wav2vec2-style spans, drawn as fairseq's ``compute_mask_indices`` (static lengths,
    overlap allowed): ``int(p * T_b / L + U[0,1))`` spans (at least 2) of L tokens, their starts
    distinct and uniform among the positions where a span fits wholly in the example. Covers
    about ``1 - exp(-p)`` of the tokens: 79 % at p = 1.45, 54 % at 0.74 (500 tokens, spans of
    10). Returns (B, T) bool.

    Two deliberate differences from fairseq: its starts stop one short (``choice(T - L)``, so
    the last token is never masked), and it trims every example to the batch's smallest masked
    count, which would make a clip's mask depend on its batch."""
    span_len = max(1, min(mask_length, tokens))
    num_valid = torch.as_tensor(num_valid, device=device).expand(batch).clamp_min(1)
    span_len_b = num_valid.clamp(max=span_len)  # a clip shorter than a span is one span
    positions = num_valid - span_len_b + 1  # starts at which a span fits wholly
    num_spans = (
        mask_prob * num_valid.double() / span_len
        + torch.rand(batch, device=device, generator=generator, dtype=torch.float64)
    ).floor().long().clamp_min(2)
    num_spans = torch.minimum(num_spans, positions)
    max_spans = min(int(mask_prob * tokens / span_len) + 2, tokens)  # bound known on the host
    # distinct uniform starts: the max_spans highest of random scores over allowed positions
    pos = torch.arange(tokens, device=device).unsqueeze(0)
    noise = torch.rand(batch, tokens, device=device, generator=generator)
    starts = noise.masked_fill(pos >= positions.unsqueeze(1), -1.0).topk(max_spans, dim=1).indices
    used = torch.arange(max_spans, device=device).unsqueeze(0) < num_spans.unsqueeze(1)
    is_start = torch.zeros(batch, tokens, device=device).scatter_add_(1, starts, used.float())
    # a token is masked if a span started within the last span_len positions
    cover = torch.nn.functional.conv1d(
        is_start.unsqueeze(1), torch.ones(1, 1, span_len, device=device), padding=span_len - 1,
    )[:, 0, :tokens]
    return (cover > 0) & (pos < num_valid.unsqueeze(1))
