"""The s3prl upstream (s3prl_upstream/): equality with s3prl's stock mae_ast upstream, padding
invariance, s3prl's upstream contract, no fairseq, the install tool, and real
``run_downstream.py -m train -u mae_ast -d speech_commands`` runs on a small keyword set spoken
by espeak-ng. Real tiny checkpoints come from the real fairseq-hydra-train.

s3prl is never modified in place: the install tool and the runner work on a copy of the
installed s3prl package (put first on PYTHONPATH of the subprocesses)."""
import hashlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from conftest import REPO, fairseq_train, read_wav, speak, tiny_model_overrides

sys.path.insert(0, str(REPO))

from s3prl_upstream.expert import UpstreamExpert  # noqa: E402

# every test here needs real fairseq checkpoints or runs s3prl itself
pytestmark = pytest.mark.slow

S3PRL_PKG = Path(__import__("importlib").util.find_spec("s3prl").submodule_search_locations[0])
SR = 16000


# ---------------------------------------------------------------------------------------------
# checkpoints
@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory, corpus):
    """Real training checkpoints (checkpoint_last.pt) of a tiny patch and a tiny frame model."""
    root = tmp_path_factory.mktemp("s3prl_ckpt")
    out = {}
    for kind, patch in (("patch", True), ("frame", False)):
        run = root / kind
        fairseq_train(corpus["manifests"], run, *tiny_model_overrides(patch), "optimization.max_update=2",
                      "checkpoint.save_interval_updates=2",
                      "task.mask_type=" + ("chunk_mask" if patch else "retain_spans"),
                      *([] if patch else ["model.random_mask_prob=1.45"]))
        out[kind] = str(run / "checkpoints" / "checkpoint_last.pt")
    return out


@pytest.fixture(scope="session")
def original_checkpoint(tmp_path_factory, checkpoints):
    """A checkpoint in the original release's layout: the stock s3prl model (a copy of the
    original MAE_AST), randomly initialised, with the original-style cfg and no extras."""
    from types import SimpleNamespace

    from s3prl.upstream.mae_ast.mae_ast import MAE_AST

    state = torch.load(checkpoints["patch"], map_location="cpu", weights_only=True)
    cfg = {"model": dict(state["cfg"]["model"]), "task": dict(state["cfg"]["task"])}
    cfg["model"].update(enc_sine_pos=True, dec_sine_pos=True, encoder_layers=3)
    torch.manual_seed(7)
    model = MAE_AST(SimpleNamespace(**cfg["model"]), SimpleNamespace(**cfg["task"]))
    path = tmp_path_factory.mktemp("orig") / "original.pt"
    torch.save({"cfg": cfg, "model": model.state_dict(), "args": None}, path)
    return str(path)


def waves(lengths, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(n, generator=gen) * 0.1 for n in lengths]


def speech(speech_wavs, lengths):
    """Real speech (espeak-ng, resampled to 16 kHz) cut to the given lengths."""
    import torchaudio.functional as AF

    out = []
    for i, n in enumerate(lengths):
        wav, rate = read_wav(speech_wavs[i % len(speech_wavs)])
        wav = AF.resample(torch.from_numpy(wav), rate, SR)
        out.append(torch.cat([wav, wav])[:n].contiguous())
    return out


def stock(ckpt):
    from s3prl.upstream.mae_ast.expert import UpstreamExpert as Stock

    return Stock(ckpt).eval()


# ---------------------------------------------------------------------------------------------
# equality with the stock upstream
@pytest.mark.parametrize("kind", ["patch", "frame", "original"])
def test_equals_stock_upstream_on_equal_lengths(kind, checkpoints, original_checkpoint, speech_wavs):
    ckpt = original_checkpoint if kind == "original" else checkpoints[kind]
    ours, theirs = UpstreamExpert(ckpt).eval(), stock(ckpt)
    assert ours.get_downsample_rates("hidden_states") == theirs.get_downsample_rates()
    with torch.no_grad():
        for n, batch in ((SR, 3), (int(2.37 * SR), 2), (5000, 1)):
            wavs = speech(speech_wavs, [n] * batch)
            a, b = theirs(wavs)["hidden_states"], ours(wavs)
            assert len(b["hidden_states"]) == len(a) == ours.model.cfg.encoder_layers
            for x, y in zip(a, b["hidden_states"]):
                assert x.shape == y.shape
                # the batched fbank and torchaudio's differ by float rounding only
                torch.testing.assert_close(y, x, atol=2e-4, rtol=1e-4)
            torch.testing.assert_close(b["last_hidden_state"], b["hidden_states"][-1])
    kt, kc = ours.model.kernel
    dim = ours.model.cfg.encoder_embed_dim * (128 // kc)
    assert b["hidden_states"][0].size(-1) == dim
    assert ours.get_downsample_rates("hidden_states") == kt * 160


def s3prl_valid_frames(n, rate):
    """How many frames s3prl's wrapper counts as valid for a clip of n samples."""
    return (n - 1) // rate + 1


@pytest.mark.parametrize("kind", ["patch", "frame"])
def test_mixed_lengths_equal_each_alone(kind, checkpoints, speech_wavs):
    """Every frame s3prl counts as valid is the same alone and in a batch: the model's own
    frames equal, and the frames s3prl counts past them repeat the clip's last frame (what
    s3prl's wrapper appends to a clip alone)."""
    up = UpstreamExpert(checkpoints[kind]).eval()
    lengths = [SR, int(3.3 * SR), 800, int(1.7 * SR), 2900, 43670, 28623]
    wavs = speech(speech_wavs, lengths)
    rate = up.get_downsample_rates("hidden_states")
    with torch.no_grad():
        batch = up(wavs)
        assert batch["hidden_states"][0].size(1) == len(range(0, max(lengths), rate)) - 1
        for i, wav in enumerate(wavs):
            alone = up([wav])
            own = alone["hidden_states"][0].size(1)
            counted = min(s3prl_valid_frames(lengths[i], rate), batch["hidden_states"][0].size(1))
            assert 1 <= own <= counted or own == 1
            for h_batch, h_alone in zip(batch["hidden_states"] + [batch["last_hidden_state"]],
                                        alone["hidden_states"] + [alone["last_hidden_state"]]):
                torch.testing.assert_close(h_batch[i:i + 1, :own], h_alone, atol=1e-5, rtol=1e-5)
                for extra in range(own, counted):  # the frames s3prl counts that the model lacks
                    torch.testing.assert_close(h_batch[i, extra], h_alone[0, -1], atol=1e-5, rtol=1e-5)


def test_s3prl_wrapper_gives_a_clip_the_same_features_in_any_batch(s3prl_site, checkpoints):
    """Through s3prl's own ``S3PRLUpstream`` (s3prl.nn), on the lengths of its pseudo wavs."""
    code = (
        "import torch\n"
        "from s3prl.nn import S3PRLUpstream\n"
        f"up = S3PRLUpstream('mae_ast', path_or_url={checkpoints['patch']!r}).eval()\n"
        "gen = torch.Generator().manual_seed(0)\n"
        "lengths = torch.tensor([43670, 28623, 16000])\n"
        "wavs = torch.randn(3, 43670, generator=gen) * 0.1\n"
        "with torch.no_grad():\n"
        "    hs, lens = up(wavs, lengths)\n"
        "    worst = 0.0\n"
        "    for i, n in enumerate(lengths.tolist()):\n"
        "        alone, alone_lens = up(wavs[i:i + 1, :n], lengths[i:i + 1])\n"
        "        for a, b, la, lb in zip(alone, hs, alone_lens, lens):\n"
        "            assert int(la[0]) == int(lb[i]), (la, lb)\n"
        "            worst = max(worst, (a[0, :int(la[0])] - b[i, :int(la[0])]).abs().max().item())\n"
        "print('worst', worst)\n"
    )
    env = dict(os.environ, PYTHONPATH=str(s3prl_site))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          cwd=str(s3prl_site), timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    worst = float(proc.stdout.split("worst")[-1])
    assert worst < 1e-4, proc.stdout


# ---------------------------------------------------------------------------------------------
# s3prl's upstream contract
@pytest.mark.parametrize("kind", ["patch", "frame"])
def test_upstream_contract(kind, checkpoints):
    up = UpstreamExpert(checkpoints[kind])
    rate = up.get_downsample_rates("hidden_states")
    assert isinstance(rate, int) and rate == up.model.stride[0] * 160
    for seconds in (0.05, 1.0):
        for batch in (1, 2, 3):
            lengths = [int(seconds * SR) - 37 * i for i in range(batch)]
            wavs = [w.requires_grad_() for w in waves(lengths, seed=batch)]
            up.train()
            out_train = up(wavs)
            up.eval()
            out_eval, out_eval2 = up(wavs), up(wavs)
            assert len(out_train["hidden_states"]) == len(out_eval["hidden_states"]) == up.model.cfg.encoder_layers
            for a, b in zip(out_eval["hidden_states"], out_eval2["hidden_states"]):
                assert torch.equal(a, b)  # deterministic in eval mode
            for h in out_eval["hidden_states"]:
                assert h.dim() == 3 and h.size(0) == batch and h.size(1) >= 1
                assert abs(h.size(1) - len(range(0, max(lengths), rate))) <= 5  # s3prl's tolerance
            up.train()
            up.zero_grad()
            loss = sum(h.pow(2).mean() for h in up(wavs)["hidden_states"])
            loss.backward()
            grads = [p.grad for p in up.parameters() if p.grad is not None]
            assert grads and all(torch.isfinite(g).all() for g in grads)
            assert up.model.post_extract_proj.weight.grad.abs().sum() > 0
    up.eval()


def test_strict_load_with_clear_error(tmp_path, checkpoints):
    from mae_ast.core.checkpoint import CheckpointError

    state = torch.load(checkpoints["patch"], map_location="cpu", weights_only=True)
    state["cfg"]["model"]["encoder_layers"] = 3
    torch.save(state, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match="encoder layers: checkpoint 2, model 3"):
        UpstreamExpert(str(tmp_path / "bad.pt"))
    state["cfg"]["model"]["encoder_layers"] = 2
    state["cfg"]["model"].update(ast_kernel_size_chan=32, ast_kernel_stride_chan=32)
    torch.save(state, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match="patch"):
        UpstreamExpert(str(tmp_path / "bad.pt"))
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        UpstreamExpert(str(tmp_path / "missing.pt"))


def test_needs_no_fairseq(checkpoints):
    code = (
        "import sys; sys.modules['fairseq'] = None\n"
        f"sys.path.insert(0, {str(REPO)!r})\n"
        "import torch\n"
        "from s3prl_upstream.hubconf import mae_ast, mae_ast_local\n"
        f"up = mae_ast({checkpoints['frame']!r}).eval()\n"
        "out = up([torch.randn(16000), torch.randn(8000)])\n"
        "print(len(out['hidden_states']), tuple(out['last_hidden_state'].shape))\n"
        "assert not any(m == 'fairseq' or m.startswith('fairseq.') for m in sys.modules if sys.modules[m])\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "2 (2, 49, 32)" in proc.stdout


# ---------------------------------------------------------------------------------------------
# the install tool, on a copy of the installed s3prl
def copy_s3prl(dest: Path) -> Path:
    site = dest / "site"
    shutil.copytree(S3PRL_PKG, site / "s3prl")  # keeps mtimes, so the cached bytecode stays valid
    return site


def run_install(site, *args):
    proc = subprocess.run([sys.executable, str(REPO / "tools" / "install_s3prl_upstream.py"),
                           "--s3prl", str(site / "s3prl"), *args], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return proc


HUB_CHECK = (
    "from s3prl import hub\n"
    "names = [n for n in dir(hub) if not n.startswith('_')]\n"
    "print('mae_ast' in names, getattr(hub, 'mae_ast', None) and hub.mae_ast.__module__)\n"
    "print(hub.mae_ast_local.__module__, hub.mae_ast_patch.__module__, hub.wav2vec2_local.__module__)\n"
)


def hub_check(site):
    env = dict(os.environ, PYTHONPATH=str(site))
    proc = subprocess.run([sys.executable, "-c", HUB_CHECK], capture_output=True, text=True, env=env,
                          cwd=str(site), timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout.split("\n")


@pytest.fixture(scope="session")
def s3prl_site(tmp_path_factory):
    """A copy of the installed s3prl with our upstream installed (twice: idempotent)."""
    site = copy_s3prl(tmp_path_factory.mktemp("s3prl_copy"))
    run_install(site)
    run_install(site)
    return site


def test_install_and_uninstall(s3prl_site, tmp_path):
    hub_text = (s3prl_site / "s3prl" / "hub.py").read_text()
    assert hub_text.count("tools/install_s3prl_upstream.py") == 1  # installed twice, one line
    lines = hub_check(s3prl_site)
    assert lines[0] == "True s3prl_upstream.hubconf"
    # stock upstreams untouched, the stock mae_ast_local included
    assert lines[1] == ("s3prl.upstream.mae_ast.hubconf s3prl.upstream.mae_ast.hubconf "
                        "s3prl.upstream.wav2vec2.hubconf")

    site = copy_s3prl(tmp_path)
    original = (site / "s3prl" / "hub.py").read_text()
    run_install(site)
    run_install(site, "--uninstall")
    run_install(site, "--uninstall")
    assert (site / "s3prl" / "hub.py").read_text() == original
    assert not (site / "s3prl" / "upstream" / "mae_ast_repo").exists()
    assert hub_check(site)[0] == "False None"


# ---------------------------------------------------------------------------------------------
# a real SUPERB KS1 run with run_downstream.py on a small Speech Commands-style set
WORDS = ["yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go"]
UNKNOWN = ["bed", "cat"]
TRAIN_VOICES = ["en-us", "en+m3", "en+f3", "en-029"]
TEST_VOICES = ["en-gb-scotland", "en+f4"]


def split_share(speaker: str) -> float:
    """s3prl's (and TensorFlow's) speaker hash split: < 10 valid, < 20 test, else train."""
    hashed = hashlib.sha1(speaker.encode("utf-8")).hexdigest()
    return (int(hashed, 16) % (2 ** 27)) * (100.0 / (2 ** 27 - 1))


def speakers(count_train: int, count_valid: int):
    train, valid, k = [], [], 0
    while len(train) < count_train or len(valid) < count_valid:
        name, share = f"{k:08x}", split_share(f"{k:08x}")
        if share < 10 and len(valid) < count_valid:
            valid.append(name)
        elif share >= 20 and len(train) < count_train:
            train.append(name)
        k += 1
    return train, valid


def one_second(src: Path, dest: Path):
    """espeak-ng's 22.05 kHz speech as a 16 kHz, 1 s, 16-bit clip, as Speech Commands ships them."""
    import torchaudio.functional as AF

    wav, rate = read_wav(src)
    wav = AF.resample(torch.from_numpy(wav), rate, SR).numpy()[:SR]
    wav = np.pad(wav, (0, SR - len(wav)))
    sf.write(dest, wav, SR, subtype="PCM_16")


@pytest.fixture(scope="session")
def keyword_set(tmp_path_factory):
    root = tmp_path_factory.mktemp("speech_commands")
    raw = root / "raw"
    raw.mkdir()
    train_dir, test_dir = root / "speech_commands_v0.01", root / "speech_commands_test_set_v0.01"
    train_spk, valid_spk = speakers(3, 1)
    lists = {"validation": [], "testing": []}
    for spk, voice in zip(train_spk + valid_spk, TRAIN_VOICES):
        for word in WORDS + UNKNOWN:
            (train_dir / word).mkdir(parents=True, exist_ok=True)
            name = f"{spk}_nohash_0.wav"
            one_second(speak(word, raw / f"{spk}_{word}.wav", voice), train_dir / word / name)
            if spk in valid_spk:
                lists["validation"].append(f"{word}/{name}")
    for kind, entries in lists.items():
        (train_dir / f"{kind}_list.txt").write_text("".join(e + "\n" for e in entries))
    noise = train_dir / "_background_noise_"
    noise.mkdir()
    rng = np.random.default_rng(0)
    sf.write(noise / "white_noise.wav", (rng.standard_normal(3 * SR) * 0.05).astype(np.float32), SR,
             subtype="PCM_16")
    for v, voice in enumerate(TEST_VOICES):
        for word in WORDS + ["_unknown_"]:
            (test_dir / word).mkdir(parents=True, exist_ok=True)
            text = "tree" if word == "_unknown_" else word
            one_second(speak(text, raw / f"test{v}_{word}.wav", voice), test_dir / word / f"test{v}_nohash_0.wav")
        (test_dir / "_silence_").mkdir(exist_ok=True)
        sf.write(test_dir / "_silence_" / f"test{v}_nohash_0.wav",
                 (rng.standard_normal(SR) * 0.01).astype(np.float32), SR, subtype="PCM_16")
    return {"train": train_dir, "test": test_dir}


@pytest.mark.parametrize("kind,select", [("patch", "last_hidden_state"), ("frame", "hidden_states")])
def test_run_downstream_speech_commands(kind, select, checkpoints, keyword_set, s3prl_site, tmp_path):
    expdir = tmp_path / "exp"
    overrides = ",,".join([
        f"config.downstream_expert.datarc.speech_commands_root={keyword_set['train']}",
        f"config.downstream_expert.datarc.speech_commands_test_root={keyword_set['test']}",
        "config.downstream_expert.datarc.num_workers=0",
        "config.downstream_expert.datarc.batch_size=8",
        "config.runner.total_steps=4", "config.runner.eval_step=2", "config.runner.log_step=2",
        "config.runner.save_step=4",
    ])
    cmd = [sys.executable, str(s3prl_site / "s3prl" / "run_downstream.py"), "-m", "train",
           "-u", "mae_ast", "-k", checkpoints[kind], "-d", "speech_commands",
           "-c", str(REPO / "s3prl_upstream" / "config" / "speech_commands" / "config.yaml"),
           "-s", select, "-p", str(expdir), "--device", "cpu", "-o", overrides]
    env = dict(os.environ, PYTHONPATH=str(s3prl_site), OMP_NUM_THREADS="2")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=str(tmp_path), timeout=300)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-5000:]
    rate = 16 * 160 if kind == "patch" else 2 * 160
    assert f"downsample rate is {rate}" in log
    if select == "hidden_states":
        assert "Take a list of 2 features and weighted sum them" in log
    results = (expdir / "log.log").read_text()
    assert re.search(r"dev at step 4: [0-9.]+", results), results
    assert re.search(r"test at step 4: [0-9.]+", results), results
    truth = (expdir / "test_truth.txt").read_text().split("\n")
    assert len([t for t in truth if t]) == len(TEST_VOICES) * 12
    assert (expdir / "states-4.ckpt").exists()


def test_bf16_precision_close_to_fp32(checkpoints, speech_wavs):
    wavs = speech(speech_wavs, [SR, int(1.6 * SR)])
    fp32, bf16 = UpstreamExpert(checkpoints["patch"]).eval(), UpstreamExpert(checkpoints["patch"], precision="bf16").eval()
    with torch.no_grad():
        a, b = fp32(wavs), bf16(wavs)
    for x, y in zip(a["hidden_states"], b["hidden_states"]):
        assert y.dtype == torch.float32 and x.shape == y.shape
        assert (x - y).abs().max() <= 5e-2 * x.abs().max()
