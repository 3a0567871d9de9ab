"""mae_ast.core.extractor.extract, the one road from waveform to features: a clip's features do
not depend on its batch, long clips are encoded segment by segment, the packed encoder equals
the dense one, and the frame layout is the tokens side by side; extract_at_hop interleaves
shifted copies into finer frames and covers the end of each clip."""
import pytest
import torch
import torch.nn.functional as F

from mae_ast.core import MAEAST
from mae_ast.core.extractor import (Segments, covered_samples, extract, extract_at_hop, hop_choices_ms,
                                    hop_frames_for, num_steps, steps_at_hop, windows)
from mae_ast.core.features import fbank
from mae_ast.core.transformer import Packing, TransformerEncoder
from test_core import FRAME, PATCH, tiny_cfg

SR = 16000


def model_of(kernel, **kw):
    torch.manual_seed(0)
    return MAEAST(tiny_cfg(kernel, **kw)).eval()


def clips(lengths, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(n, generator=gen) * 0.1 for n in lengths]


@pytest.mark.parametrize("kernel", [PATCH, FRAME], ids=["patch", "frame"])
def test_a_clip_alone_and_in_any_batch(kernel):
    """Lengths around the token boundaries, one shorter than a token, one long enough to be cut
    into segments: each clip's frames equal its frames alone, zeros after."""
    model = model_of(kernel)
    lengths = [SR, 3 * SR + 77, 900, 2800, 43670, 28623]
    wavs = clips(lengths)
    with torch.no_grad():
        batch = extract(model, wavs, chunk_steps=5)
        for i, wav in enumerate(wavs):
            alone = extract(model, [wav], chunk_steps=5)
            steps = int(alone.steps[0])
            assert steps == int(batch.steps[i]) == num_steps(model, lengths[i]) >= 1
            for b, a in zip(batch.hidden_states + [batch.output], alone.hidden_states + [alone.output]):
                torch.testing.assert_close(b[i, :steps], a[0], atol=1e-5, rtol=1e-5)
                assert b[i, steps:].abs().max() == 0 if steps < b.size(1) else True


def test_padded_tensor_with_lengths_equals_the_list():
    """A (B, N) batch with lengths: what lies past a clip's end is ignored, even if not zeros."""
    model = model_of(PATCH)
    wavs = clips([SR, 2000, 2 * SR])
    padded = torch.randn(3, 2 * SR)  # garbage past each end
    for i, w in enumerate(wavs):
        padded[i, :len(w)] = w
    with torch.no_grad():
        a = extract(model, wavs)
        b = extract(model, padded, lengths=torch.tensor([len(w) for w in wavs]))
    assert torch.equal(a.steps, b.steps)
    torch.testing.assert_close(a.output, b.output, atol=1e-5, rtol=1e-5)


def test_segments_are_encoded_on_their_own():
    """A 7 s clip in segments of 10 steps: each segment equals that part of the clip encoded
    alone (positions from 0), the frames of the whole clip in order."""
    model = model_of(PATCH)
    wav = clips([7 * SR])[0]
    with torch.no_grad():
        out = extract(model, [wav], chunk_steps=10).output[0]
        hop = 10 * 16 * 160  # samples between segment starts
        first = extract(model, [wav[: hop + 240]]).output[0]  # 10 steps: 160 frames need 25600 + 240 samples
        second = extract(model, [wav[hop: 2 * hop + 240]]).output[0]
    assert first.size(0) == second.size(0) == 10
    torch.testing.assert_close(out[:10], first, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out[10:20], second, atol=1e-5, rtol=1e-5)


def test_layers_and_frame_layout():
    model = model_of(PATCH)
    wav = clips([2 * SR])[0]
    with torch.no_grad():
        full = extract(model, [wav])
        first = extract(model, [wav], layers=[1])
        feats = fbank(wav[None])
        dense = model(feats, None, mask=False)
    assert len(full.hidden_states) == 2 and len(first.hidden_states) == 1
    torch.testing.assert_close(first.hidden_states[0], full.hidden_states[0])
    # the frame layout is the time-major tokens, the n_freq patches of a step side by side
    tokens = dense["hidden_states"][1]  # (1, steps * 8, 32)
    torch.testing.assert_close(full.hidden_states[1], tokens.reshape(1, -1, 8 * 32), atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="precision"):
        extract(model, [wav], precision="fp16")


def test_bf16_runs_the_encoder_in_bf16():
    """precision="bf16" really runs the matmuls in bfloat16 (an encoder layer's output dtype,
    seen by a hook), and the outputs come back fp32 and close to fp32's."""
    model = model_of(PATCH)
    wav = clips([2 * SR])[0]
    seen = []
    hook = model.encoder.layers[0].fc1.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    with torch.no_grad():
        ref, low = extract(model, [wav]), extract(model, [wav], precision="bf16")
    hook.remove()
    assert seen == [torch.float32, torch.bfloat16]
    assert low.output.dtype == torch.float32
    torch.testing.assert_close(low.output, ref.output, atol=0.1, rtol=0.05)


def test_packed_encoder_equals_the_masked_dense_encoder():
    """Padding anywhere (not only at the end): packing gives what SDPA with a key mask gives,
    on every real token, and zeros on padding; gradients flow through it."""
    torch.manual_seed(0)
    enc = TransformerEncoder(2, 32, 64, 4, dropout=0.0, attention_dropout=0.0).eval()
    x = torch.randn(4, 12, 32, requires_grad=True)
    padding = torch.zeros(4, 12, dtype=torch.bool)
    padding[1, 7:] = True
    padding[2, :3] = True
    padding[3, ::2] = True
    packed, hidden = enc(x, padding)
    y = enc.layer_norm(x)
    attend = (~padding)[:, None, None, :]
    for layer in enc.layers:
        y = layer(y, attend)
    torch.testing.assert_close(packed[~padding], y[~padding], atol=1e-5, rtol=1e-5)
    assert packed[padding].abs().max() == 0 and hidden[0][padding].abs().max() == 0
    packed.sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad[padding].abs().max() == 0
    runs = Packing(padding).runs
    assert runs == [(1, 12), (1, 9), (1, 7), (1, 6)]


def test_segment_plan_and_windows():
    steps = torch.tensor([7, 3, 0])
    seg = Segments(steps, width=7, n_freq=2, size=3)
    assert seg.count == 4  # 3 + 3 + 1 | 3 | none
    assert seg.padding.tolist()[2] == [False, False, True, True, True, True]  # 1 step of 2 tokens
    tokens = torch.arange(3 * 14, dtype=torch.float32).view(3, 14, 1)
    joined = seg.join(seg.split(tokens))
    for i, n in enumerate(steps.tolist()):
        assert torch.equal(joined[i, :2 * n], tokens[i, :2 * n]) and joined[i, 2 * n:].abs().sum() == 0
    model = model_of(PATCH)
    total = 10 * SR + 123
    spans = list(windows(model, total, steps_per_window=12))
    assert [s for s, _ in spans] == [k * 12 * 16 * 160 for k in range(6)]  # 62 steps: 5 x 12 + 2
    assert sum(num_steps(model, n) for _, n in spans) == num_steps(model, total)
    assert [n for _, n in spans] == [400 + (12 * 16 - 1) * 160] * 5 + [total - 5 * 12 * 16 * 160]
    # a frame model (2 x 128): steps of 2 frames, so the time axis is the one that counts
    frame = model_of(FRAME)
    assert list(windows(frame, 3 * SR + 5, steps_per_window=50)) == [(0, 16240), (16000, 16240), (32000, 16005)]


# ---- extract_at_hop: finer time steps from shifted copies ------------------------------------
def copy_alone(model, wav, hop_frames, j, **kw):
    """Copy j of a clip made by hand: zero-padded to where its last frame ends, without its
    first j hops; plain :func:`extract` of it alone."""
    end = covered_samples(model, len(wav), hop_frames)
    padded = F.pad(wav, (0, max(0, end - len(wav))))
    return extract(model, [padded[j * hop_frames * 160:end]], **kw)


def test_extract_at_hop_interleaves_the_shifted_copies():
    """Every 4 fbank frames (40 ms) for a 16x16 patch model, clips of different lengths in one
    batch (one shorter than a token, one whose last frame falls in copy 0, long ones cut into
    segments): frame m is token m // 4 of copy m % 4 extracted alone; a clip's frames equal
    the clip alone; zeros after; copy 0 is plain extract when the last frame is not in it."""
    model = model_of(PATCH)
    lengths = [SR, 900, 5000, 2960, 37920, 3 * SR + 77]
    wavs = clips(lengths, seed=3)
    with torch.no_grad():
        batch = extract_at_hop(model, wavs, 4, chunk_steps=5)
        for i, wav in enumerate(wavs):
            total = steps_at_hop(model, lengths[i], 4)
            assert int(batch.steps[i]) == total
            alone = extract_at_hop(model, [wav], 4, chunk_steps=5)
            for b, a in zip(batch.hidden_states + [batch.output], alone.hidden_states + [alone.output]):
                torch.testing.assert_close(b[i, :total], a[0], atol=1e-5, rtol=1e-5)
                assert total == b.size(1) or b[i, total:].abs().max() == 0
            for j in range(min(4, total)):
                copy = copy_alone(model, wav, 4, j, chunk_steps=5)
                assert int(copy.steps[0]) == len(range(j, total, 4))
                torch.testing.assert_close(alone.output[0, j::4], copy.output[0], atol=1e-5, rtol=1e-5)
                torch.testing.assert_close(alone.hidden_states[0][0, j::4], copy.hidden_states[0][0],
                                           atol=1e-5, rtol=1e-5)
            if (total - 1) % 4:  # the last frame is in another copy: copy 0 is the clip's own tokens
                native = extract(model, [wav], chunk_steps=5)
                torch.testing.assert_close(alone.output[0, 0::4], native.output[0], atol=1e-5, rtol=1e-5)
    assert [(n - 1) % 4 for n in batch.steps.tolist()] == [1, 0, 0, 1, 3, 3]  # both cases are here


def test_extract_at_hop_covers_the_end():
    """The fewest frames whose last one's audio reaches the clip's end: the one before does not
    reach it, so the zero padding is shorter than one hop. Worked by hand: 1 s has 99 fbank
    frames to its end (the 99th reaches past it), frames start every 4 fbank frames and span
    16, so 1 + ceil((99 - 16) / 4) = 22 frames, padded to (21 * 4 + 16 - 1) * 160 + 400."""
    model = model_of(PATCH)
    assert steps_at_hop(model, SR, 4) == 22 and covered_samples(model, SR, 4) == 16240
    assert [steps_at_hop(model, n, 4) for n in (0, 900, 2800, 10 * SR, 11 * SR)] == [1, 1, 1, 247, 272]
    gen = torch.Generator().manual_seed(0)
    for n in torch.randint(2800, 12 * SR, (300,), generator=gen).tolist() + list(range(2800, 2800 + 1300)):
        for hop in (1, 2, 4, 8, 16):
            total = steps_at_hop(model, n, hop)
            end_of = lambda m: (m * hop + 16 - 1) * 160 + 400  # noqa: E731 (last sample + 1 of frame m)
            assert end_of(total - 1) == covered_samples(model, n, hop) >= n
            assert total == 1 or end_of(total - 2) < n
            assert covered_samples(model, n, hop) - n < hop * 160
            if hop == 16:  # on the token grid: the tokens that fit, plus one if the end is not reached
                assert total - num_steps(model, n) == (end_of(num_steps(model, n) - 1) < n)


def test_hop_choices_and_bad_hops():
    assert hop_choices_ms(model_of(PATCH)) == [10, 20, 40, 80, 160]
    assert hop_choices_ms(model_of(FRAME)) == [10, 20]
    assert hop_frames_for(model_of(PATCH), 40) == hop_frames_for(model_of(PATCH), 40.0) == 4
    for bad in (30, 15, 0, -40, 320, 40.5, True, "40", None):
        with pytest.raises(ValueError, match="valid values: 10, 20, 40, 80, 160"):
            hop_frames_for(model_of(PATCH), bad)
    with pytest.raises(ValueError, match="valid values: 10, 20$"):
        hop_frames_for(model_of(FRAME), 40)
    with pytest.raises(ValueError, match="divide"):
        extract_at_hop(model_of(PATCH), clips([SR]), 3)
