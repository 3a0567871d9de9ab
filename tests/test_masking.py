"""What each mask *is*, checked against reference generators written here from the papers'
descriptions (not from mae_ast/core/masking.py): SSAST chunks, EAT inverse blocks, wav2vec2
spans and uniform random masks. Per draw we measure the shape of the masked and the kept sets
(connected components, how much of each set lies in solid 3x3 squares); over a few hundred
draws the means must agree with the reference's within sampling error. Swapping masked and
kept (the chunk bug this suite once let through) moves every statistic by many standard errors.
"""
import math
import random

import numpy as np
import pytest
import torch
from scipy import ndimage

from mae_ast.core.masking import (BLOCK_SHARE_ADJUST, CHUNK_SIDES, MASK_TYPES, UNCOVERED, block_scores, chunk_scores,
                                  compute_mask, num_kept)

DRAWS = 300


# ---- reference generators (from the papers' descriptions) ------------------------------------
def ssast_reference(grid, p, rng):
    """SSAST: pick k in 3..5 once; add k x k squares (clipped at the grid) at uniform top-left
    tokens to the masked set until T - kept tokens are masked (the last square in part)."""
    n_time, n_freq = grid
    need = n_time * n_freq - max(1, int((1 - p) * n_time * n_freq))
    k = rng.randint(*CHUNK_SIDES)
    masked = np.zeros(grid, bool)
    while masked.sum() < need:
        t0, f0 = rng.randrange(n_time), rng.randrange(n_freq)
        square = np.zeros(grid, bool)
        square[t0:t0 + k, f0:f0 + k] = True
        new = np.argwhere(square & ~masked)
        rng.shuffle(new := list(map(tuple, new)))
        for t, f in new[:need - int(masked.sum())]:
            masked[t, f] = True
    return masked


def eat_reference(grid, p, block, rng):
    """EAT inverse block masking: (keep + 0.07) T / block^2 uniform centres (with replacement),
    blocks of side ``block`` around them are kept; random tokens are then added to or dropped
    from the kept set until exactly int((1 - p) T) are kept; the rest is masked."""
    n_time, n_freq = grid
    tokens = n_time * n_freq
    keep = max(1, int((1 - p) * tokens))
    kept = np.zeros(grid, bool)
    for _ in range(int(tokens * ((1 - p) + BLOCK_SHARE_ADJUST) / block ** 2)):
        c = rng.randrange(tokens)
        t, f = c // n_freq - block // 2, c % n_freq - block // 2
        kept[max(t, 0):t + block, max(f, 0):f + block] = True
    on, off = list(zip(*np.nonzero(kept))), list(zip(*np.nonzero(~kept)))
    if len(on) > keep:
        for t, f in rng.sample(on, len(on) - keep):
            kept[t, f] = False
    else:
        for t, f in rng.sample(off, keep - len(on)):
            kept[t, f] = True
    return ~kept


def wav2vec2_reference(tokens, p, length, rng):
    """wav2vec2 spans: int(p T / L + U) spans (at least 2) of L tokens at distinct uniform starts
    where they fit wholly; the spans are masked."""
    n = max(2, int(p * tokens / length + rng.random()))
    masked = np.zeros((tokens, 1), bool)
    for s in rng.sample(range(tokens - length + 1), n):
        masked[s:s + length] = True
    return masked


def uniform_reference(grid, p, rng):
    tokens = grid[0] * grid[1]
    masked = np.ones(tokens, bool)
    masked[rng.sample(range(tokens), max(1, int((1 - p) * tokens)))] = False
    return masked.reshape(grid)


# ---- shape statistics -------------------------------------------------------------------------
def in_solid_squares(m):
    """Share of the set's tokens that lie in some 3x3 window (inside the grid) wholly in the set."""
    if m.shape[1] < 3:
        return 0.0
    solid = ndimage.binary_erosion(m, np.ones((3, 3)), border_value=0)
    return float(ndimage.binary_dilation(solid, np.ones((3, 3))).sum() / max(1, m.sum()))


def shape_stats(m):
    """Per-draw statistics of a (n_time, n_freq) masked set and of its complement."""
    sizes_m = np.bincount(ndimage.label(m)[0].ravel())[1:]
    sizes_k = np.bincount(ndimage.label(~m)[0].ravel())[1:]
    return {
        "masked share": m.mean(),
        "masked components": len(sizes_m),
        "kept components": len(sizes_k),
        "largest masked component": sizes_m.max(initial=0),
        "largest kept component": sizes_k.max(initial=0),
        "masked in solid squares": in_solid_squares(m),
        "kept in solid squares": in_solid_squares(~m),
        # where masks fall: top-left placement, centred blocks and spans that fit show at the edges
        "first time steps masked": m[:2].mean(),
        "last time steps masked": m[-2:].mean(),
        "first frequency patch masked": m[:, 0].mean(),
        "last frequency patch masked": m[:, -1].mean(),
    }


def ours(mask_type, grid, p, seed, draws=DRAWS, **kw):
    gen = torch.Generator().manual_seed(seed)
    plan = compute_mask(mask_type, None, p, grid, generator=gen, batch_size=draws, **kw)
    return plan.masked_tokens(grid[0] * grid[1]).view(draws, *grid).numpy()


def assert_same_distribution(ours_masks, ref_masks, z=5.0):
    """Every statistic's mean over draws agrees within ``z`` standard errors."""
    a = [shape_stats(m) for m in ours_masks]
    b = [shape_stats(m) for m in ref_masks]
    for key in a[0]:
        x, y = np.array([s[key] for s in a], float), np.array([s[key] for s in b], float)
        se = math.sqrt(x.var() / len(x) + y.var() / len(y)) + 1e-9
        assert abs(x.mean() - y.mean()) < z * se + 1e-6, (
            f"{key}: ours {x.mean():.3f} vs reference {y.mean():.3f} (se {se:.3f})")


# ---- the tests --------------------------------------------------------------------------------
@pytest.mark.parametrize("grid, p", [((40, 8), 0.75), ((64, 8), 0.5), ((30, 8), 0.9), ((5, 8), 0.9)])
def test_chunk_mask_is_ssast(grid, p):
    """(5, 8) at 0.9 needs several rounds of chunks: their order carries over."""
    rng = random.Random(0)
    assert_same_distribution(ours("chunk_mask", grid, p, 0), [ssast_reference(grid, p, rng) for _ in range(DRAWS)])


def test_chunk_mask_masks_squares_and_keeps_the_gaps():
    """The masked set is a union of squares and the kept set is not: the sign of the method."""
    stats = [shape_stats(m) for m in ours("chunk_mask", (40, 8), 0.75, 1)]
    masked_solid = np.mean([s["masked in solid squares"] for s in stats])
    kept_solid = np.mean([s["kept in solid squares"] for s in stats])
    assert masked_solid > 0.9 and kept_solid < 0.5, (masked_solid, kept_solid)


def test_inverse_block_is_eat():
    grid, p, rng = (64, 8), 0.8, random.Random(0)
    mine = ours("inverse_block", grid, p, 0, block_size=5)
    assert_same_distribution(mine, [eat_reference(grid, p, 5, rng) for _ in range(DRAWS)])
    stats = [shape_stats(m) for m in mine]
    # kept tokens come in blocks; the masked set is the background
    assert np.mean([s["kept in solid squares"] for s in stats]) > 0.6
    assert np.mean([s["masked components"] for s in stats]) < 3


@pytest.mark.parametrize("p", [1.45, 0.74])
def test_retain_spans_is_wav2vec2(p):
    rng = random.Random(0)
    mine = ours("retain_spans", (500, 1), p, 0, mask_length=10)
    assert_same_distribution(mine, [wav2vec2_reference(500, p, 10, rng) for _ in range(DRAWS)])
    # the paper's figures: p = 1.45 masks ~75 %, 0.74 ~50 %
    assert abs(mine.mean() - (1 - math.exp(-p))) < 0.04
    # every masked run is at least one span long: spans are masked, not kept
    runs = [len(r) for m in mine[:50] for r in np.split(m[:, 0], np.flatnonzero(np.diff(m[:, 0])) + 1) if r[0]]
    assert min(runs) >= 10


@pytest.mark.parametrize("mask_type", ["random_mask", "random_mask_batched"])
def test_random_masks_are_uniform(mask_type):
    grid, p, rng = (40, 8), 0.75, random.Random(0)
    mine = ours(mask_type, grid, p, 0)
    if mask_type == "random_mask_batched":
        assert (mine == mine[0]).all(), "one mask shared by the batch"
        mine = np.stack([ours(mask_type, grid, p, s, draws=1)[0] for s in range(DRAWS)])
    assert_same_distribution(mine, [uniform_reference(grid, p, rng) for _ in range(DRAWS)])


@pytest.mark.parametrize("mask_type", ["random_mask", "random_mask_batched", "chunk_mask", "inverse_block"])
@pytest.mark.parametrize("tokens, p", [(46, 0.75), (78, 0.75), (500, 0.8), (24, 0.6)])
def test_kept_count_is_the_originals(mask_type, tokens, p):
    """max(1, int((1 - p) T)): these T make int() and round() differ."""
    expected = max(1, int((1 - p) * tokens))
    assert round((1 - p) * tokens) != expected or tokens == 500
    plan = compute_mask(mask_type, None, p, (tokens, 1), batch_size=3)
    assert plan.kept_idx.shape == (3, expected) and plan.masked_idx.shape == (3, tokens - expected)
    # the same through the padded path: an example of `tokens` valid tokens beside a longer one
    padding = torch.zeros(2, tokens + 7, dtype=torch.bool)
    padding[0, tokens:] = True
    plan = compute_mask(mask_type, padding, p, (tokens + 7, 1))
    assert int(plan.kept_valid[0].sum()) == expected
    assert num_kept(tokens, p) == expected == int(num_kept(torch.tensor([tokens]), p))


@pytest.mark.parametrize("grid", [(3, 8), (6, 8), (12, 8), (64, 8), (100, 1), (8, 2)])
@pytest.mark.parametrize("p", [0.5, 0.75, 0.9])
@pytest.mark.parametrize("steps", ["all", "half"])
def test_masked_tokens_are_always_chunk_tokens(grid, p, steps):
    """Chunks are drawn until they cover what is masked: no token is masked at random, even on
    tiny grids at high ratios where one round of chunks is not enough, and in a padded clip
    (whose chunks reach into padding: only its own tokens count)."""
    valid_steps = grid[0] if steps == "all" else max(1, grid[0] // 2)
    tokens = valid_steps * grid[1]
    gen = torch.Generator().manual_seed(0)
    keep = max(1, int((1 - p) * tokens))
    scores = chunk_scores(200, grid, torch.full((200, 1, 1), valid_steps), keep, p, None, gen)
    highest_masked = scores[:, :tokens].sort(1).values[:, tokens - keep - 1]
    assert (highest_masked < UNCOVERED).all()


def test_each_clip_draws_one_side_of_3_to_5():
    """The first chunk of each clip (score below 1), where the grid does not clip it, is a
    square of side 3, 4 or 5, and every side occurs."""
    gen = torch.Generator().manual_seed(0)
    scores = chunk_scores(600, (40, 8), torch.full((600, 1, 1), 40), 80, 0.75, None, gen).view(600, 40, 8)
    sides = []
    for first in (scores < 1).numpy():
        t, f = np.nonzero(first)
        if t.max() < 39 and f.max() < 7:  # not clipped at the far edges
            assert t.max() - t.min() == f.max() - f.min() and len(t) == (t.max() - t.min() + 1) ** 2
            sides.append(t.max() - t.min() + 1)
    assert set(sides) == {3, 4, 5}


def test_order_inside_a_chunk_is_drawn_per_clip():
    """Which part of the last chunk is masked is random for each clip (the scores' fractions)."""
    gen = torch.Generator().manual_seed(0)
    chunk = chunk_scores(2, (40, 8), torch.full((2, 1, 1), 40), 80, 0.75, None, gen)
    block = block_scores(2, (40, 8), torch.full((2, 1, 1), 40), 0.8, 5, None, gen)
    for scores in (chunk, block):
        both = (scores < UNCOVERED).all(0)  # (an uncovered token's score has no fraction left)
        differ = (scores[0, both].frac() - scores[1, both].frac()).abs() > 0.01
        assert differ.float().mean() > 0.9


def test_chunks_of_later_rounds_come_after_and_stay_apart():
    """On a tiny grid at a high ratio several rounds are drawn: every chunk keeps its own
    place in the order (scores >= 0, one chunk per integer level, each within a 5x5 square)."""
    gen = torch.Generator().manual_seed(0)
    scores = chunk_scores(200, (3, 8), torch.full((200, 1, 1), 3), 1, 0.99, None, gen)
    assert (scores >= 0).all()
    for row in scores.view(200, 3, 8):
        level = row.floor()
        for value in level.unique():
            if value < UNCOVERED:
                t, f = torch.nonzero(level == value, as_tuple=True)
                assert t.max() - t.min() < 5 and f.max() - f.min() < 5


def test_an_inverse_block_is_a_square_around_its_centre():
    """One block per clip (p = 0.95 on 320 tokens): its tokens (score 1 and above), where the
    grid does not clip it, are a solid 5x5 square."""
    gen = torch.Generator().manual_seed(0)
    scores = block_scores(400, (40, 8), torch.full((400, 1, 1), 40), 0.95, 5, None, gen).view(400, 40, 8)
    seen, top, bottom = 0, set(), set()
    for block in (scores >= 1).numpy():
        t, f = np.nonzero(block)
        if t.min() > 0 and t.max() < 39 and f.min() > 0 and f.max() < 7:
            seen += 1
            assert len(t) == 25 and t.max() - t.min() == 4 and f.max() - f.min() == 4
        (top if t.min() == 0 else bottom if t.max() == 39 else set()).add(t.max() - t.min() + 1)
    assert seen > 50
    # centred: a block at either end of the clip keeps 3 to 5 of its rows, never fewer
    assert top == bottom == {3, 4, 5}, (top, bottom)


def test_chunks_stay_in_each_examples_valid_steps():
    """Chunks of a padded example are placed in its own time steps, so it is masked in chunks
    as if it were alone."""
    grid, p = (40, 8), 0.75
    padding = torch.zeros(DRAWS, 320, dtype=torch.bool)
    padding[:, 160:] = True  # every example: 20 valid time steps of 40
    gen = torch.Generator().manual_seed(0)
    plan = compute_mask("chunk_mask", padding, p, grid, generator=gen)
    padded = plan.masked_tokens(320).view(DRAWS, *grid)[:, :20].numpy()
    rng = random.Random(0)
    assert_same_distribution(padded, [ssast_reference((20, 8), p, rng) for _ in range(DRAWS)])


def test_inverse_blocks_stay_in_each_examples_valid_steps():
    grid, p = (64, 8), 0.8
    padding = torch.zeros(DRAWS, 512, dtype=torch.bool)
    padding[:, 256:] = True  # 32 valid time steps of 64
    plan = compute_mask("inverse_block", padding, p, grid, generator=torch.Generator().manual_seed(0))
    padded = plan.masked_tokens(512).view(DRAWS, *grid)[:, :32].numpy()
    rng = random.Random(0)
    assert_same_distribution(padded, [eat_reference((32, 8), p, 5, rng) for _ in range(DRAWS)])


def test_a_clip_of_one_time_step_beside_longer_ones():
    padding = torch.zeros(4, 320, dtype=torch.bool)
    padding[0, 8:] = True  # one valid time step of 8 patches
    for seed in range(20):
        plan = compute_mask("chunk_mask", padding, 0.75, (40, 8), generator=torch.Generator().manual_seed(seed))
        assert int(plan.kept_valid[0].sum()) == 2 and int(plan.masked_valid[0].sum()) == 6


@pytest.mark.parametrize("mask_type", MASK_TYPES)
def test_a_generator_makes_masks_reproducible(mask_type):
    def draw(seed):
        # p = 0.77: a fractional span count, so its random rounding shows too
        return compute_mask(mask_type, None, 0.77, (40, 8), generator=torch.Generator().manual_seed(seed),
                            batch_size=4).masked_tokens(320)
    assert torch.equal(draw(3), draw(3)) and not torch.equal(draw(3), draw(4))


def test_defaults_one_example_and_spans_of_ten():
    assert compute_mask("random_mask", None, 0.75, (40, 8)).kept_idx.shape == (1, 80)
    masked = ours("retain_spans", (500, 1), 0.74, 0)[:, :, 0]
    runs = [len(r) for m in masked for r in np.split(m, np.flatnonzero(np.diff(m)) + 1) if r[0]]
    assert min(runs) == 10, "an unmerged span is exactly mask_length long"


def test_without_padding_every_slot_is_real():
    """No validity masks without padding: the step stays free of host synchronisation."""
    for mask_type in ("random_mask", "chunk_mask", "inverse_block"):
        plan = compute_mask(mask_type, None, 0.75, (40, 8), batch_size=2)
        assert plan.kept_valid is None and plan.masked_valid is None


def test_at_least_one_token_is_kept():
    assert num_kept(20, 0.99) == 1 and int(num_kept(torch.tensor([20]), 0.99)) == 1
    # spans that cover a whole short clip still leave one token to the encoder
    plan = compute_mask("retain_spans", None, 1.45, (5, 1), mask_length=10, batch_size=3)
    assert plan.kept_idx.shape == (3, 1)


def test_span_count_is_wav2vec2s():
    """int(p T / L + U) spans, at least 2: single-token spans (L = 1) count them exactly."""
    masked = compute_mask("retain_spans", None, 0.37, (100, 1), mask_length=1, batch_size=4000,
                          generator=torch.Generator().manual_seed(0)).masked_tokens(100)
    assert abs(masked.sum(1).float().mean().item() - 37.0) < 0.1  # E[floor(x + U)] = x
    few = compute_mask("retain_spans", None, 0.005, (100, 1), mask_length=1, batch_size=100).masked_tokens(100)
    assert (few.sum(1) == 2).all(), "at least two spans"


def test_an_unknown_mask_type_is_named():
    with pytest.raises(ValueError, match="unknown mask_type 'chunks'; choose one of"):
        compute_mask("chunks", None, 0.75, (40, 8))
