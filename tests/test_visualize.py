"""Listening to and looking into a model: log-mel inverted to audio (mae_ast.core.inversion),
reconstructions as audio, the encoder's attention maps (mae_ast.analysis), visualize.py's
--audio and --attention, and the demo report's players. Real espeak-ng speech, tiny models."""
import copy
import math
import subprocess
import sys
import warnings

import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio

from conftest import REPO, read_wav
from mae_ast import analysis
from mae_ast.core import features, inversion
from test_tools import tiny_checkpoint

SR = 16000
# The inversion's bound: mean |log-mel difference| between a clip's fbank and the fbank of its
# inversion, in dB, both floored 80 dB below the clip's loudest cell (digital silence would
# otherwise weigh in at -156 dB). Measured about 1.0 dB on espeak-ng speech; a wrong hop gives
# about 20, torchaudio's own mel filters and window about 10.
BOUND_DB = 2.0
FLOOR_DB = 80.0


DB = 10 / math.log(10)  # fbank is the natural log of a power: 10 log10(e) dB per unit


def floored(reference: torch.Tensor, other: torch.Tensor):
    """Both log-mels from FLOOR_DB below the reference's loudest cell, over their common frames."""
    floor = reference.max() - FLOOR_DB / DB
    n = min(len(reference), len(other))
    return reference[:n].clamp_min(floor), other[:n].clamp_min(floor)


def log_mel_distance_db(reference: torch.Tensor, other: torch.Tensor) -> float:
    a, b = floored(reference, other)
    return float((a - b).abs().mean() * DB)


@pytest.fixture(scope="module")
def speech(speech_wavs):
    """Two sentences of espeak-ng speech at 16 kHz, about 7 s."""
    waves = []
    for path in speech_wavs[:2]:
        wav, rate = read_wav(path)
        waves.append(torchaudio.functional.resample(torch.from_numpy(wav), rate, SR))
    return torch.cat(waves)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("visualize_ckpt")
    return {kind: analysis.load(tiny_checkpoint(root / f"{kind}.pt", kind == "patch"))
            for kind in ("patch", "frame")}


# ---- log-mel back to audio --------------------------------------------------------------------
def test_inverting_an_unmasked_spectrogram_comes_back_close(speech):
    logmel = features.fbank(speech[None])[0]
    wav = inversion.logmel_to_audio(logmel)
    assert wav.shape == (features.samples_for_frames(len(logmel)),)  # the frames' own length
    again = features.fbank(wav[None])[0]
    assert again.shape == logmel.shape
    distance = log_mel_distance_db(logmel, again)
    assert distance < BOUND_DB, distance
    # at the clip's level, not merely its shape: the same loudness within 1 dB
    rms_db = 20 * math.log10(float(wav.pow(2).mean().sqrt() / speech[:len(wav)].pow(2).mean().sqrt()))
    assert abs(rms_db) < 1.0, rms_db
    assert torch.equal(wav, inversion.logmel_to_audio(logmel))  # seeded: the same audio every time


def test_a_wrong_inversion_is_caught(speech):
    """The bound tells a faithful inversion from a wrong one: a wrong hop, or torchaudio's own
    mel filters, Hann window and frame placement instead of Kaldi's."""
    logmel = features.fbank(speech[None])[0]
    power = inversion.mel_to_power(logmel)
    wrong_hop = inversion.griffin_lim(power, hop=200)
    assert log_mel_distance_db(logmel, features.fbank(wrong_hop[None])[0]) > 5 * BOUND_DB
    with warnings.catch_warnings():  # torchaudio's filters: some are empty at 128 bands
        warnings.simplefilter("ignore", UserWarning)
        stock = torchaudio.transforms.InverseMelScale(257, 128, SR, f_min=20.0, driver="gelsd")
    torch.manual_seed(0)
    naive = torchaudio.transforms.GriffinLim(n_fft=512, win_length=400, hop_length=160, power=2.0,
                                             momentum=0.99)(stock(logmel.exp().t()))
    assert log_mel_distance_db(logmel, features.fbank(naive[None])[0]) > 3 * BOUND_DB


def test_reconstruction_audio(models, speech, tmp_path):
    """The input's audio inverts the clip's own log-mel (normalisation undone with the model's
    running statistics), the masked input is silent where masked, all three are 16 kHz wav."""
    model = models["patch"]
    rec = analysis.reconstruct(model, speech, seed=0, max_seconds=4)
    logmel = features.fbank(speech[None])[0][:len(rec["input"])]
    assert torch.allclose(analysis.denormalise(model, rec["input"]), logmel, atol=1e-4)
    paths = analysis.write_reconstruction_audio(model, rec, str(tmp_path / "utt"))
    assert list(paths) == ["input", "masked", "reconstruction"]
    heard = {}
    for part, path in paths.items():
        wav, rate = sf.read(path, dtype="float32")
        assert rate == SR and wav.shape == (features.samples_for_frames(len(logmel)),)
        assert np.abs(wav).max() <= 1.0
        heard[part] = features.fbank(torch.from_numpy(wav)[None])[0]
    # one gain for the three files (here 1: speech does not clip), so the input is the clip's level
    assert log_mel_distance_db(logmel, heard["input"]) < BOUND_DB
    masked = torch.from_numpy(rec["mask"])
    full, gaps = floored(heard["input"], heard["masked"])
    inside = float((full - gaps)[masked].mean() * DB)
    outside = float((full - gaps)[~masked].abs().mean() * DB)
    print(f"masked input vs input: {inside:.1f} dB quieter where masked, {outside:.1f} dB apart elsewhere")
    assert inside > 20 and outside < 3 * BOUND_DB, (inside, outside)  # silent only where masked


# ---- attention ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def attentive(models):
    """The tiny models with query and key weights scaled up: freshly initialised ones attend almost
    uniformly, which would hide a wrong weight from the checks."""
    sharp = {}
    for kind, model in models.items():
        sharp[kind] = copy.deepcopy(model)
        with torch.no_grad():
            for layer in sharp[kind].encoder.layers:
                layer.self_attn.q_proj.weight.mul_(15)
                layer.self_attn.k_proj.weight.mul_(15)
    return sharp


@pytest.mark.parametrize("kind", ["patch", "frame"])
def test_attention_maps_are_the_encoders_weights(attentive, speech, kind):
    model = attentive[kind]
    maps = analysis.attention_maps(model, speech, max_seconds=3)
    layers, heads = maps["layers"], maps["last_layer_heads"]
    steps, n_freq = maps["grid"]
    tokens = steps * n_freq
    assert layers.shape == (2, tokens, tokens) and heads.shape == (2, tokens, tokens)
    assert n_freq == (8 if kind == "patch" else 1) and steps == model.time_steps(features.num_frames(3 * SR))
    assert torch.allclose(layers.sum(-1), torch.ones(2, tokens), atol=1e-5)  # rows are probabilities
    assert (layers >= 0).all() and torch.allclose(heads.mean(0), layers[-1])

    # by hand, for layer 2: its input is layer 1's output; head by head from the weights
    feats = analysis._features(model, speech)[:, :analysis._max_frames(model, 3)]
    with torch.no_grad():
        x = model(feats, None, mask=False)["hidden_states"][0][0]  # (T, C)
        attn = model.encoder.layers[1].self_attn
        dim = x.size(1) // attn.heads
        for h in range(attn.heads):
            rows = slice(h * dim, (h + 1) * dim)
            q = x @ attn.q_proj.weight[rows].t() + attn.q_proj.bias[rows]
            k = x @ attn.k_proj.weight[rows].t() + attn.k_proj.bias[rows]
            expected = torch.exp(q @ k.t() / dim ** 0.5)
            expected /= expected.sum(1, keepdim=True)
            assert torch.allclose(heads[h], expected, atol=1e-5), h


def test_attention_weights_give_the_modules_output(attentive, speech):
    """The weights are those that scaled_dot_product_attention applied: weights @ values through
    out_proj gives the attention module's own output."""
    model = attentive["patch"]
    attn = model.encoder.layers[0].self_attn
    caught = {}
    hook = attn.register_forward_hook(lambda module, args, out: caught.update(x=args[0], out=out))
    try:
        analysis.attention_maps(model, speech, max_seconds=3)
    finally:
        hook.remove()
    with torch.no_grad():
        probs = analysis.attention_probs(attn, caught["x"])  # (1, H, T, T)
        b, t, c = caught["x"].shape
        v = attn.v_proj(caught["x"]).view(b, t, attn.heads, -1).transpose(1, 2)
        out = attn.out_proj((probs @ v).transpose(1, 2).reshape(b, t, c))
        assert torch.allclose(out, caught["out"], atol=1e-5)
        uniform = torch.full_like(probs, 1 / t)  # the check is not blind: other weights miss
        assert not torch.allclose(attn.out_proj((uniform @ v).transpose(1, 2).reshape(b, t, c)), caught["out"], atol=1e-3)


def test_time_and_frequency_views_of_attention():
    """Token x token weights folded per time step and per frequency patch stay probabilities."""
    torch.manual_seed(0)
    steps, n_freq = 5, 4
    weights = torch.softmax(torch.randn(3, steps * n_freq, steps * n_freq), -1)
    per_step = analysis.to_time_steps(weights, n_freq)
    per_band = analysis.to_freq_bands(weights, n_freq)
    assert per_step.shape == (3, steps, steps) and per_band.shape == (3, n_freq, n_freq)
    assert torch.allclose(per_step.sum(-1), torch.ones(3, steps)) and torch.allclose(per_band.sum(-1), torch.ones(3, n_freq))
    # query step 1 (tokens 4..7, time-major) to key step 3 (tokens 12..15)
    assert torch.isclose(per_step[0, 1, 3], weights[0, 4:8, 12:16].sum(1).mean())
    assert torch.equal(analysis.to_time_steps(weights, 1), weights)  # frame models: tokens are steps
    assert analysis.mean_distance(torch.eye(4)) == 0 and analysis.mean_distance(torch.eye(4).roll(1, 1)) == 1.5


# ---- the tool and the demo report ----------------------------------------------------------
def test_visualize_audio_and_attention(tmp_path, speech):
    files = {}
    for kind in ("patch", "frame"):
        ckpt = tiny_checkpoint(tmp_path / f"{kind}.pt", kind == "patch")
        clip = tmp_path / f"{kind}_clip.flac"
        sf.write(clip, speech[:3 * SR].numpy(), SR)
        out = tmp_path / f"out_{kind}"
        proc = subprocess.run([sys.executable, str(REPO / "tools" / "visualize.py"), ckpt, str(clip),
                               "--out", str(out), "--audio", "--attention"],
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
        files[kind] = sorted(p.name for p in out.iterdir())
        for p in out.iterdir():
            if p.suffix == ".png":
                assert p.stat().st_size > 10000 and p.read_bytes()[:4] == b"\x89PNG", p
                assert str(p) in proc.stdout
            else:
                info = sf.info(str(p))
                # the frames the model cut into whole tokens: 3 s are 298 frames, 18 patches of 16
                frames = {"patch": 288, "frame": 298}[kind]
                assert info.samplerate == SR and info.channels == 1, p
                assert info.frames == features.samples_for_frames(frames), p
    stem = ["clip.png", "clip_attention.png", "clip_attention_heads.png"]
    audio = ["clip_input.wav", "clip_masked.wav", "clip_reconstruction.wav"]
    assert files["frame"] == sorted(f"frame_{n}" for n in stem + audio)
    assert files["patch"] == sorted(f"patch_{n}" for n in stem + audio + ["clip_attention_freq.png"])


def test_demo_report_plays_the_reconstructions(models, speech, tmp_path):
    from mae_ast.demo import html, report

    clip = tmp_path / "utt.flac"
    sf.write(clip, speech[:4 * SR].numpy(), SR)
    out = tmp_path / "report"
    out.mkdir()
    written = report.write_reconstructions(models["patch"], [(clip, "spk/utt.flac", "speech")], out)
    assert written[0]["audio"] == {part: f"reconstruction_0_{part}.wav" for part in analysis.AUDIO_PARTS}
    for name in written[0]["audio"].values():
        assert sf.info(str(out / name)).samplerate == SR
    page = "".join(html._reconstruction_section(written))
    r = written[0]
    assert f"<p>masked MSE {r['mse']:.3f}</p><img src='{r['figure']}'><div class='players'>" in page
    for name in r["audio"].values():
        assert f"<audio controls preload='none' src='{name}'></audio>" in page
