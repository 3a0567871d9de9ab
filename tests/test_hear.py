"""The HEAR 2021 API (mae_ast/hear.py): shapes and timestamps for 0.1 s, 1 s and 11 s clips of
patch and frame models (at the default hop_ms and on the native grid), a clip alone vs in a
batch, agreement with the s3prl upstreams, checkpoints of the original release's layout, layer
options, hop_ms options, long clips, and the real ``hear-validator`` (in its own venv,
tools/setup_hear.sh) on tiny checkpoints.

Checkpoints are made with the core: a tiny model trained for a few steps on espeak-ng speech
with the real loss (so BatchNorm statistics and weights are those of training), saved in our
checkpoint layout; the original-layout one is s3prl's copy of the original model."""
import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import REPO, read_wav

sys.path.insert(0, str(REPO))

import mae_ast.hear as hear  # noqa: E402
from mae_ast.core import MAEAST, MAEASTConfig, checkpoint, fbank, mae_ast_loss  # noqa: E402

SR = 16000
KERNELS = {"patch": (16, 16), "frame": (2, 128)}
# timestamps per clip on the native grid, worked out by hand: Kaldi frames = (n - 400) // 160 + 1,
# tokens = (frames - kernel_time) // kernel_time + 1; a 0.1 s clip is padded to one patch (2800
# samples)
EXPECTED_STEPS = {("patch", 0.1): 1, ("patch", 1.0): 6, ("patch", 11.0): 68,
                  ("frame", 0.1): 4, ("frame", 1.0): 49, ("frame", 11.0): 549}
# patch models at the default 40 ms: fbank frames until one reaches the clip's end, F =
# ceil((n - 400) / 160) + 1; one embedding every 4 frames while the last does not reach it:
# 1 + ceil((F - 16) / 4). 1 s: F = 99, 22; 11 s: F = 1099, 272; 0.1 s is one patch: 1.
EXPECTED_STEPS_40MS = {0.1: 1, 1.0: 22, 11.0: 272}


def tiny_config(kind: str, **overrides) -> MAEASTConfig:
    kt, kc = KERNELS[kind]
    settings = dict(ast_kernel_size_time=kt, ast_kernel_size_chan=kc, ast_kernel_stride_time=kt,
                    ast_kernel_stride_chan=kc, encoder_layers=3, decoder_layers=1, encoder_embed_dim=32,
                    decoder_embed_dim=32, encoder_ffn_embed_dim=64, encoder_attention_heads=2,
                    max_token_length=4000, enc_sine_pos=True, dec_sine_pos=True)
    settings.update(overrides)
    return MAEASTConfig(**settings)


def speech(speech_wavs, seconds, index=0):
    """Real speech (espeak-ng) at 16 kHz, looped to ``seconds``."""
    import torchaudio.functional as AF

    wav, rate = read_wav(speech_wavs[index % len(speech_wavs)])
    wav = AF.resample(torch.from_numpy(wav), rate, SR)
    n = int(round(seconds * SR))
    return wav.repeat(n // len(wav) + 1)[:n].contiguous()


def train_and_save(cfg: MAEASTConfig, speech_wavs, path: Path, mask_type: str, steps: int = 3,
                   seconds: float = 2.0) -> str:
    """A few real training steps on speech clips of ``seconds``, then our checkpoint layout
    (cfg + weights)."""
    torch.manual_seed(0)
    model = MAEAST(cfg, mask_type=mask_type).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    batch = torch.stack([speech(speech_wavs, seconds, i) for i in range(4)])
    for _ in range(steps):
        out = model(fbank(batch))
        loss = mae_ast_loss(out["logit_m_list_recon"], out["logit_m_list_class"], out["target_m_list"],
                            out["target_valid"])["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    checkpoint.save(path, model, sample_rate=SR, max_sample_size=250000)
    return str(path)


@pytest.fixture(scope="session")
def hear_checkpoints(tmp_path_factory, speech_wavs):
    root = tmp_path_factory.mktemp("hear_ckpt")
    return {kind: train_and_save(tiny_config(kind), speech_wavs, root / f"{kind}.pt",
                                 "chunk_mask" if kind == "patch" else "random_mask")
            for kind in KERNELS}


@pytest.fixture(scope="session")
def original_layout_checkpoint(tmp_path_factory):
    """The original release's layout: s3prl's copy of the original MAE_AST model, its own
    state dict and an original-style cfg (with an ``args`` entry, as fairseq wrote them)."""
    from types import SimpleNamespace

    from s3prl.upstream.mae_ast.mae_ast import MAE_AST

    cfg = {"model": dataclasses.asdict(tiny_config("patch")),
           "task": {"sample_rate": SR, "feature_dim": 128, "feature_type": "fbank",
                    "feature_rate": 100, "mask_type": "chunk_mask", "max_sample_size": 250000}}
    torch.manual_seed(7)
    model = MAE_AST(SimpleNamespace(**cfg["model"]), SimpleNamespace(**cfg["task"]))
    path = tmp_path_factory.mktemp("hear_orig") / "original.pt"
    torch.save({"cfg": cfg, "model": model.state_dict(), "args": None}, path)
    return str(path)


@pytest.fixture(scope="session")
def models(hear_checkpoints):
    """At the default hop_ms: 40 ms (4 shifted copies) for patch, the native 20 ms for frame."""
    return {kind: hear.load_model(path) for kind, path in hear_checkpoints.items()}


@pytest.fixture(scope="session")
def native_models(hear_checkpoints):
    return {kind: hear.load_model(path, hop_ms="native") for kind, path in hear_checkpoints.items()}


# ---------------------------------------------------------------------------------------------
# the HEAR contract
@pytest.mark.parametrize("seconds", [0.1, 1.0, 11.0])
@pytest.mark.parametrize("kind", ["patch", "frame"])
@pytest.mark.parametrize("hop", ["default", "native"])
def test_shapes_and_timestamps(kind, seconds, hop, models, native_models, speech_wavs):
    model = (models if hop == "default" else native_models)[kind]
    cfg = model.model.cfg
    audio = torch.stack([speech(speech_wavs, seconds, i) for i in range(3)])
    emb, ts = hear.get_timestamp_embeddings(audio, model)
    shifted = kind == "patch" and hop == "default"
    steps = EXPECTED_STEPS_40MS[seconds] if shifted else EXPECTED_STEPS[(kind, seconds)]
    width = (128 // cfg.ast_kernel_size_chan) * cfg.encoder_embed_dim
    assert model.sample_rate == 16000
    assert model.timestamp_embedding_size == model.scene_embedding_size == width
    assert isinstance(model.timestamp_embedding_size, int)
    assert emb.shape == (3, steps, width) and emb.dtype == torch.float32
    assert ts.shape == (3, steps) and ts.dtype == torch.float32
    assert torch.isfinite(emb).all()
    # milliseconds, centred on the embedding's fbank frames (a frame's window is centred
    # 12.5 ms after its start), spaced by hop_ms: 40 ms for patch models by default, else the
    # token hop of the config
    hop_ms = 40.0 if shifted else cfg.ast_kernel_stride_time * 10.0
    assert hop_ms == {"patch": 40.0 if shifted else 160.0, "frame": 20.0}[kind] == model.hop_ms
    assert model.copies == (4 if shifted else 1)
    half_span = (cfg.ast_kernel_size_time - 1) / 2 * 10.0 + 12.5  # the centre's distance to each end
    expected = half_span + hop_ms * torch.arange(steps, dtype=torch.float32)
    for row in ts:
        torch.testing.assert_close(row, expected)
    if steps > 1:
        assert (ts.diff(dim=1) > 0).all()
        torch.testing.assert_close(ts.diff(dim=1), torch.full((3, steps - 1), hop_ms))
    if seconds >= 1.0:  # the last embedding's centre lies inside the clip
        assert ts[0, -1] < seconds * 1000
        ends = ts[0] + half_span  # where each embedding's audio ends
        if shifted:  # the end is covered: the last embedding's audio reaches it, the one before not
            assert ends[-1] >= seconds * 1000 > ends[-2]
        else:  # the native grid: the tokens that fit, the end less than one token hop away
            assert seconds * 1000 - hop_ms < ends[-1] <= seconds * 1000
    scene = hear.get_scene_embeddings(audio, model)
    assert scene.shape == (3, width) and scene.dtype == torch.float32
    native, _ = hear.get_timestamp_embeddings(audio, native_models[kind])
    torch.testing.assert_close(scene, native.mean(dim=1))


@pytest.mark.parametrize("kind", ["patch", "frame"])
def test_a_clip_alone_and_in_a_batch_agree(kind, models, speech_wavs):
    model = models[kind]
    assert model.copies == {"patch": 4, "frame": 1}[kind]  # patch: shifted copies, 40 ms
    clip = speech(speech_wavs, 1.0, 0)
    alone = hear.get_scene_embeddings(clip[None], model)
    alone_ts, _ = hear.get_timestamp_embeddings(clip[None], model)
    # the HEAR case: a (n_sounds, n_samples) batch of other clips of the same length
    batch = torch.stack([speech(speech_wavs, 1.0, 3), clip, torch.zeros(SR), speech(speech_wavs, 1.0, 5)])
    torch.testing.assert_close(hear.get_scene_embeddings(batch, model)[1:2], alone, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(hear.get_timestamp_embeddings(batch, model)[0][1:2], alone_ts,
                               atol=1e-5, rtol=1e-5)
    # clips of other lengths, longer and shorter, given as a list
    clips = [speech(speech_wavs, 3.7, 2), clip, speech(speech_wavs, 0.3, 4), speech(speech_wavs, 11.0, 6)]
    scenes = hear.get_scene_embeddings(clips, model)
    assert scenes.shape == (4, model.scene_embedding_size)
    torch.testing.assert_close(scenes[1:2], alone, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(scenes[3:4], hear.get_scene_embeddings(clips[3][None], model),
                               atol=1e-5, rtol=1e-5)
    embs, stamps = hear.get_timestamp_embeddings(clips, model)
    assert [e.size(0) for e in embs] == [t.size(0) for t in stamps] == [
        model.num_steps(len(c)) for c in clips]
    torch.testing.assert_close(embs[1], alone_ts[0], atol=1e-5, rtol=1e-5)
    # different clips give different embeddings (the model is not constant)
    assert (scenes[0] - scenes[1]).abs().max() > 1e-3


@pytest.mark.parametrize("kind", ["patch", "frame"])
def test_equals_our_s3prl_upstream(kind, hear_checkpoints, models, native_models, speech_wavs):
    """Same checkpoint, same features as the s3prl upstream's last_hidden_state (frequency
    patches of a time step concatenated, one frame per token hop)."""
    from s3prl_upstream.expert import UpstreamExpert

    up = UpstreamExpert(hear_checkpoints[kind]).eval()
    wavs = [speech(speech_wavs, 2.37, i) for i in range(2)]
    with torch.no_grad():
        theirs = up(wavs)["last_hidden_state"]
    ours, _ = hear.get_timestamp_embeddings(torch.stack(wavs), native_models[kind])
    n = min(theirs.size(1), ours.size(1))
    assert abs(theirs.size(1) - ours.size(1)) <= 1 and n >= 1
    torch.testing.assert_close(ours[:, :n], theirs[:, :n], atol=1e-5, rtol=1e-5)
    # at the default hop, every copies-th embedding is the unshifted copy: the same tokens
    # (2.37 s: 56 embeddings at 40 ms, the one that reaches the end is in the last copy)
    fine, _ = hear.get_timestamp_embeddings(torch.stack(wavs), models[kind])
    assert fine.size(1) == {"patch": 56, "frame": ours.size(1)}[kind]
    torch.testing.assert_close(fine[:, ::models[kind].copies], ours, atol=1e-5, rtol=1e-5)


def test_original_layout_checkpoint(original_layout_checkpoint, speech_wavs):
    """A checkpoint of the original release's layout loads and gives what s3prl's stock
    upstream (the original model's code) gives, layer by layer."""
    from s3prl.upstream.mae_ast.expert import UpstreamExpert as Stock

    stock = Stock(original_layout_checkpoint).eval()
    wavs = [speech(speech_wavs, 1.5, i) for i in range(2)]
    with torch.no_grad():
        hidden = stock(wavs)["hidden_states"]
    audio = torch.stack(wavs)
    last = hear.load_model(original_layout_checkpoint, hop_ms="native")
    assert last.layers == (3,) and last.timestamp_embedding_size == 8 * 32
    ours, _ = hear.get_timestamp_embeddings(audio, last)
    n = min(ours.size(1), hidden[-1].size(1))
    # torchaudio's fbank and our batched one differ by float rounding only
    torch.testing.assert_close(ours[:, :n], hidden[-1][:, :n], atol=2e-4, rtol=1e-4)
    first = hear.load_model(original_layout_checkpoint, layers=[1], hop_ms="native")
    torch.testing.assert_close(hear.get_timestamp_embeddings(audio, first)[0][:, :n], hidden[0][:, :n],
                               atol=2e-4, rtol=1e-4)


def test_layer_options(hear_checkpoints, models, speech_wavs):
    path, last = hear_checkpoints["frame"], models["frame"]
    audio = torch.stack([speech(speech_wavs, 1.2, i) for i in range(2)])
    per_layer = [hear.get_timestamp_embeddings(audio, hear.load_model(path, layers=i))[0] for i in (1, 2, 3)]
    torch.testing.assert_close(per_layer[2], hear.get_timestamp_embeddings(audio, last)[0])
    torch.testing.assert_close(hear.get_timestamp_embeddings(audio, hear.load_model(path, layers=-2))[0],
                               per_layer[1])
    mean_all = hear.load_model(path, layers="all")
    assert mean_all.layers == (1, 2, 3) and mean_all.timestamp_embedding_size == 32
    torch.testing.assert_close(hear.get_timestamp_embeddings(audio, mean_all)[0],
                               torch.stack(per_layer).mean(0), atol=1e-6, rtol=1e-5)
    concat = hear.load_model(path, layers=[1, 3], combine="concat")
    assert concat.scene_embedding_size == 64
    torch.testing.assert_close(hear.get_timestamp_embeddings(audio, concat)[0],
                               torch.cat([per_layer[0], per_layer[2]], dim=-1))
    for bad in (0, 4, -4, [], "first"):
        with pytest.raises(ValueError, match="layers"):
            hear.load_model(path, layers=bad)
    with pytest.raises(ValueError, match="needs a checkpoint"):
        hear.load_model()


def test_hop_ms_options(hear_checkpoints, models, native_models, speech_wavs):
    """hop_ms as heareval passes it (``--model-options '{"hop_ms": 80}'`` becomes load_model
    keywords): valid hops divide the token stride; "native" and the stride itself are the
    token grid; others are refused naming the valid values; frame models keep 20 ms by
    default; scene embeddings do not depend on hop_ms."""
    patch, frame = hear_checkpoints["patch"], hear_checkpoints["frame"]
    audio = torch.stack([speech(speech_wavs, 1.3, i) for i in range(2)])
    native, _ = hear.get_timestamp_embeddings(audio, native_models["patch"])
    at_40, ts_40 = hear.get_timestamp_embeddings(audio, models["patch"])
    at_80 = hear.load_model(patch, **json.loads('{"hop_ms": 80}'))
    assert (at_80.hop_ms, at_80.copies, at_80.native_hop_ms) == (80.0, 2, 160.0)
    emb_80, ts_80 = hear.get_timestamp_embeddings(audio, at_80)
    # 1.3 s: F = 129 frames to the end; 1 + ceil(113 / 8) = 16 at 80 ms, 1 + ceil(113 / 4) = 30 at
    # 40 ms; 128 frames fit, 8 native tokens
    assert emb_80.shape[:2] == (2, 16) and at_40.shape[:2] == (2, 30) and native.shape[:2] == (2, 8)
    torch.testing.assert_close(ts_80[0], 87.5 + 80.0 * torch.arange(16, dtype=torch.float32))
    torch.testing.assert_close(ts_40[0, ::2], ts_80[0, :15])
    # the unshifted copies hold the native tokens (the embedding that reaches the end is in copy
    # 1 of 2 and copy 1 of 4 here); the 40 ms copy 2 is the clip without its first 80 ms (its 7
    # tokens end before the clip does: no padding)
    torch.testing.assert_close(emb_80[:, ::2], native, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(at_40[:, ::4], native, atol=1e-5, rtol=1e-5)
    late, _ = hear.get_timestamp_embeddings(audio[:, 8 * 160:], native_models["patch"])
    assert late.size(1) == 7
    torch.testing.assert_close(at_40[:, 2::4], late, atol=1e-5, rtol=1e-5)
    for off in ("native", 160, 160.0):
        model = hear.load_model(patch, hop_ms=off)
        assert (model.hop_ms, model.copies) == (160.0, 1)
        torch.testing.assert_close(hear.get_timestamp_embeddings(audio, model)[0], native)
    for hop_ms in (80, "native"):
        torch.testing.assert_close(hear.get_scene_embeddings(audio, hear.load_model(patch, hop_ms=hop_ms)),
                                   hear.get_scene_embeddings(audio, models["patch"]))
    assert (models["frame"].hop_ms, models["frame"].copies) == (20.0, 1)  # frame models keep 20 ms
    fine_frame = hear.load_model(frame, hop_ms=10)
    emb_10, ts_10 = hear.get_timestamp_embeddings(audio, fine_frame)
    assert fine_frame.copies == 2 and emb_10.size(1) == 128  # 1 + (129 - 2) / 1; 64 natively
    torch.testing.assert_close(ts_10[0, :3], torch.tensor([17.5, 27.5, 37.5]))
    for path, bad, valid in ((patch, 30, "10, 20, 40, 80, 160"), (patch, 0, "10, 20, 40, 80, 160"),
                             (patch, 320, "10, 20, 40, 80, 160"), (patch, "fast", "10, 20, 40, 80, 160"),
                             (frame, 40, "10, 20"), (frame, 15, "10, 20")):
        with pytest.raises(ValueError, match=f"hop_ms=.*valid values: {valid}, or \"native\""):
            hear.load_model(path, hop_ms=bad)


def test_long_clips_are_chunked(tmp_path, speech_wavs):
    """A clip longer than the position table works: chunks of at most the table, each encoded
    alone, timestamps global. The first chunk equals the clip's start encoded alone."""
    from mae_ast.core.checkpoint import CheckpointError

    cfg = tiny_config("patch", max_token_length=80)  # 80 tokens = 10 time steps of 8 patches
    path = train_and_save(cfg, speech_wavs, tmp_path / "short_table.pt", "chunk_mask", steps=1, seconds=1.0)
    model = hear.load_model(path, hop_ms="native")
    assert model.chunk_steps == 10
    with pytest.raises(ValueError, match="max_token_length"):  # the bare model cannot
        model.model(fbank(speech(speech_wavs, 11.0)[None]), mask=False)
    audio = torch.stack([speech(speech_wavs, 11.0, i) for i in range(2)])
    emb, ts = hear.get_timestamp_embeddings(audio, model)
    assert emb.shape == (2, 68, 256) and ts.shape == (2, 68)
    torch.testing.assert_close(ts[0], 87.5 + 160.0 * torch.arange(68, dtype=torch.float32))
    head = audio[:, :samples_for_steps(16, 10)]
    torch.testing.assert_close(emb[:, :10], hear.get_timestamp_embeddings(head, model)[0], atol=1e-5, rtol=1e-5)
    # at 40 ms each shifted copy is chunked on its own; the unshifted one is the native grid
    # (11 s: 272 embeddings, the one that reaches the end is in the last copy)
    fine, fine_ts = hear.get_timestamp_embeddings(audio, hear.load_model(path))
    assert fine.shape == (2, 272, 256)
    torch.testing.assert_close(fine_ts[0], 87.5 + 40.0 * torch.arange(272, dtype=torch.float32))
    torch.testing.assert_close(fine[:, ::4], emb, atol=1e-5, rtol=1e-5)
    # chunk_seconds chooses shorter chunks; the default comes from task.max_sample_size
    assert hear.load_model(path, chunk_seconds=1.0).chunk_steps == 6
    frame = hear.load_model(train_and_save(tiny_config("frame"), speech_wavs, tmp_path / "f.pt", "random_mask", 1))
    assert frame.chunk_steps == (((250000 - 400) // 160 + 1) - 2) // 2 + 1  # 15.6 s of 20 ms tokens
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        hear.load_model(str(tmp_path / "missing.pt"))


def samples_for_steps(kernel_time: int, steps: int) -> int:
    return 400 + (steps * kernel_time - 1) * 160


def test_bf16_close_to_fp32(hear_checkpoints, models, speech_wavs):
    audio = torch.stack([speech(speech_wavs, 1.0, i) for i in range(2)])
    fp32 = hear.get_scene_embeddings(audio, models["patch"])
    bf16 = hear.get_scene_embeddings(audio, hear.load_model(hear_checkpoints["patch"], precision="bf16"))
    assert bf16.dtype == torch.float32
    assert (bf16 - fp32).norm() / fp32.norm() < 5e-2


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU on this machine")
def test_gpu_matches_cpu(hear_checkpoints, speech_wavs):
    model = hear.load_model(hear_checkpoints["patch"])
    audio = torch.stack([speech(speech_wavs, 1.0, i) for i in range(2)])
    cpu = hear.get_timestamp_embeddings(audio, model)[0]
    model.to("cuda")
    gpu, ts = hear.get_timestamp_embeddings(audio.cuda(), model)
    assert gpu.device.type == ts.device.type == "cuda"
    torch.testing.assert_close(gpu.cpu(), cpu, atol=1e-4, rtol=1e-4)


def test_needs_no_fairseq_or_s3prl(hear_checkpoints):
    code = ("import sys; sys.modules['fairseq'] = None; sys.modules['s3prl'] = None\n"
            "import torch, mae_ast.hear as h\n"
            f"m = h.load_model({hear_checkpoints['frame']!r})\n"
            "print(tuple(h.get_scene_embeddings(torch.zeros(2, 8000), m).shape))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          cwd=str(REPO))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "(2, 32)" in proc.stdout


# ---------------------------------------------------------------------------------------------
# the real hear-validator, in its own venv (it imports tensorflow)
@pytest.fixture(scope="session")
def hear_venv():
    """tools/setup_hear.sh (idempotent: seconds when .venv-hear is up to date, about 2 min and
    8 GB the first time)."""
    proc = subprocess.run(["bash", str(REPO / "tools" / "setup_hear.sh")], capture_output=True, text=True,
                          timeout=1500)
    assert proc.returncode == 0, f"tools/setup_hear.sh failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return Path(os.environ.get("HEAR_VENV", REPO / ".venv-hear"))


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["patch", "frame", "original"])
def test_hear_validator_accepts_the_module(kind, hear_venv, hear_checkpoints, original_layout_checkpoint,
                                          tmp_path):
    ckpt = original_layout_checkpoint if kind == "original" else hear_checkpoints[kind]
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(CUDA_VISIBLE_DEVICES="", TF_CPP_MIN_LOG_LEVEL="2", OMP_NUM_THREADS="2")
    # from a folder outside the repository: mae_ast must come from the venv's install
    proc = subprocess.run([str(hear_venv / "bin" / "hear-validator"), "mae_ast.hear", "--model", ckpt,
                           "--device", "cpu"], capture_output=True, text=True, timeout=600, env=env,
                          cwd=str(tmp_path))
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-4000:]
    assert "Looks good!" in proc.stdout
    hop = {"patch": 40.0, "frame": 20.0, "original": 40.0}[kind]  # the default hop_ms
    assert f"Interval between timestamps is {hop}ms" in proc.stdout


def test_last_layer_of_a_pre_ln_model_is_the_encoder_output():
    """layers="last" is the encoder output: for pre-LN models that includes the final LayerNorm."""
    from mae_ast.core import MAEAST
    from mae_ast.core.features import fbank
    from test_core import PATCH, tiny_cfg

    torch.manual_seed(0)
    model = MAEAST(tiny_cfg(PATCH, layer_norm_first=True)).eval()
    wav = torch.randn(1, 2 * SR) * 0.1
    with torch.no_grad():
        ref = model(fbank(wav), None, mask=False)["x"]
        got = hear.MAEASTHear(model, (2,), "mean", None, "fp32", hop_ms="native")(wav)
    torch.testing.assert_close(got, ref.reshape(1, -1, 8 * 32), atol=1e-5, rtol=1e-5)
