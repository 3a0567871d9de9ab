"""tools/visualize.py, tools/extract_features.py and mae_ast.analysis on tiny checkpoints (a patch
and a frame model, written in the training checkpoints' layout) and real espeak-ng speech."""
import re
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch

from conftest import REPO, read_wav
from mae_ast import analysis
from mae_ast.core import MAEAST, MAEASTConfig, checkpoint

SR = 16000


def tiny_checkpoint(path, patch=True, layers=2, seed=0):
    kt, kc = (16, 16) if patch else (2, 128)
    cfg = MAEASTConfig(encoder_layers=layers, decoder_layers=1, encoder_embed_dim=32, decoder_embed_dim=32,
                       encoder_ffn_embed_dim=64, encoder_attention_heads=2, max_token_length=4000,
                       ast_kernel_size_time=kt, ast_kernel_size_chan=kc, ast_kernel_stride_time=kt,
                       ast_kernel_stride_chan=kc, random_mask_prob=0.75)
    torch.manual_seed(seed)
    mask_type = "chunk_mask" if patch else "random_mask"
    model = MAEAST(cfg, 128, mask_type)
    with torch.no_grad():  # input statistics of log-mel, as after training
        model.batch_norm.running_mean.fill_(-8.0)
        model.batch_norm.running_var.fill_(16.0)
    checkpoint.save(path, model, sample_rate=SR, max_sample_size=48000)
    return str(path)


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny_ckpt")
    return {"patch": tiny_checkpoint(root / "patch.pt", True), "frame": tiny_checkpoint(root / "frame.pt", False)}


@pytest.fixture(scope="module")
def audio_dir(tmp_path_factory, speech_wavs):
    """Speech at 16 kHz flac and 22.05 kHz wav in nested folders, one file of 0.1 s (shorter
    than a token) and one of 7 s (longer than the 3 s crop, so encoded in chunks)."""
    import torchaudio.functional as AF

    root = tmp_path_factory.mktemp("tool_audio")
    (root / "a").mkdir()
    (root / "b" / "c").mkdir(parents=True)
    wav, rate = read_wav(speech_wavs[0])
    sf.write(root / "a" / "utt.wav", wav, rate)
    wav16 = AF.resample(torch.from_numpy(wav), rate, SR).numpy()
    sf.write(root / "b" / "c" / "utt.flac", wav16, SR)
    sf.write(root / "short.flac", wav16[:1600], SR)
    long = np.concatenate([AF.resample(torch.from_numpy(read_wav(w)[0]), read_wav(w)[1], SR).numpy()
                           for w in speech_wavs[1:4]])[: 7 * SR]
    sf.write(root / "long.flac", long, SR)
    (root / "notes.txt").write_text("not audio")
    return root


def run(tool, *args):
    return subprocess.run([sys.executable, str(REPO / "tools" / tool), *map(str, args)],
                          capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("tool", ["visualize.py", "extract_features.py"])
def test_help(tool):
    proc = run(tool, "--help")
    assert proc.returncode == 0 and "--out" in proc.stdout


def test_visualize(ckpts, audio_dir, tmp_path):
    files = [audio_dir / "a" / "utt.wav", audio_dir / "b" / "c" / "utt.flac", audio_dir / "short.flac"]
    proc = run("visualize.py", ckpts["patch"], *files, "--out", tmp_path / "fig", "--seconds", "4")
    assert proc.returncode == 0, proc.stderr
    # same names in different folders get distinct figures
    assert sorted(p.name for p in (tmp_path / "fig").iterdir()) == ["short.png", "utt.png", "utt_2.png"]
    for p in (tmp_path / "fig").iterdir():
        assert p.stat().st_size > 10000 and p.read_bytes()[:4] == b"\x89PNG"
    mses = [float(line.rsplit(" ", 1)[1]) for line in proc.stdout.splitlines() if "MSE" in line]
    assert len(mses) == 3 and all(np.isfinite(mses))
    proc = run("visualize.py", tmp_path / "missing.pt", files[0], "--out", tmp_path / "x")
    assert proc.returncode == 2
    assert proc.stderr == f"visualize.py: error: {tmp_path / 'missing.pt'}: no such checkpoint file\n"


def test_visualize_fails_when_no_audio_can_be_read(ckpts, audio_dir, tmp_path):
    proc = run("visualize.py", ckpts["patch"], audio_dir / "notes.txt", tmp_path / "gone.wav",
               "--out", tmp_path / "fig")
    assert proc.returncode == 1
    assert proc.stderr.count("skipped ") == 2  # each file named with its reason
    assert proc.stderr.endswith("visualize.py: error: none of the 2 audio files could be read "
                                "(each is named above)\n"), proc.stderr
    assert list((tmp_path / "fig").iterdir()) == []


# ---- the CLI tools' shared conventions --------------------------------------------------------
OUR_TOOLS = ["make_manifest.py", "export_checkpoint.py", "visualize.py", "install_s3prl_upstream.py",
             "bench.py", "bench_upstream.py"]


@pytest.mark.parametrize("tool", OUR_TOOLS)
def test_tools_import_the_installed_package(tool, tmp_path):
    """The package is installed (editable): no tool patches sys.path, and each starts from
    any folder."""
    assert "sys.path.insert" not in (REPO / "tools" / tool).read_text()
    proc = subprocess.run([sys.executable, str(REPO / "tools" / tool), "--help"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("tool", ["make_manifest.py", "export_checkpoint.py", "visualize.py",
                                  "install_s3prl_upstream.py"])
def test_help_documents_exit_codes(tool):
    proc = run(tool, "--help")
    assert proc.returncode == 0
    text = proc.stdout.split("exit codes:", 1)[1]
    for code in ("0", "1", "2"):
        assert re.search(rf"^\s+{code}\s+\w", text, re.M), (code, text)


def test_export_checkpoint_errors(ckpts, tmp_path):
    proc = run("export_checkpoint.py", tmp_path / "missing.pt", tmp_path / "out.pt")
    assert proc.returncode == 2
    assert proc.stderr == f"export_checkpoint.py: error: {tmp_path / 'missing.pt'}: no such checkpoint file\n"
    (tmp_path / "notes.pt").write_text("not a checkpoint")
    proc = run("export_checkpoint.py", tmp_path / "notes.pt", tmp_path / "out.pt")
    assert proc.returncode == 2
    assert proc.stderr.startswith(f"export_checkpoint.py: error: {tmp_path / 'notes.pt'}: not a readable"), proc.stderr
    (tmp_path / "taken").write_text("a file where a folder should be")
    proc = run("export_checkpoint.py", ckpts["patch"], tmp_path / "taken" / "out.pt")
    assert proc.returncode == 2
    assert proc.stderr == f"export_checkpoint.py: error: {tmp_path / 'taken'} is a file, not a folder\n"
    assert not (tmp_path / "out.pt").exists()
    proc = run("export_checkpoint.py", ckpts["patch"], tmp_path / "slim" / "out.pt")
    assert proc.returncode == 0 and (tmp_path / "slim" / "out.pt").is_file(), proc.stderr


def test_install_s3prl_upstream_refuses_a_folder_that_is_not_s3prl(tmp_path):
    (tmp_path / "upstream").mkdir()  # half an s3prl: no hub.py
    proc = run("install_s3prl_upstream.py", "--s3prl", tmp_path)
    assert proc.returncode == 2
    assert proc.stderr == (f"install_s3prl_upstream.py: error: {tmp_path} does not look like the s3prl "
                           "package folder (no hub.py / upstream/)\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["upstream"]  # nothing written


@pytest.mark.parametrize("kind", ["patch", "frame"])
def test_reconstruct(ckpts, speech_wavs, kind):
    model = analysis.load(ckpts[kind])
    wav = torch.from_numpy(read_wav(speech_wavs[1])[0])  # 22.05 kHz read as 16 kHz: fine here
    rec = analysis.reconstruct(model, wav, seed=1)
    kt, kc = model.kernel
    frames = rec["input"].shape[0]
    assert rec["input"].shape[1] == 128 and frames % kt == 0
    for k in ("masked", "reconstruction", "prediction", "mask"):
        assert rec[k].shape == rec["input"].shape
    mask = rec["mask"]
    assert 0.7 < mask.mean() < 0.8  # 75 % of the patches
    # kept patches are the input, masked ones the prediction; the encoder saw nothing masked
    np.testing.assert_array_equal(rec["reconstruction"][~mask], rec["input"][~mask])
    assert np.isnan(rec["masked"][mask]).all() and np.isfinite(rec["masked"][~mask]).all()
    assert np.isfinite(rec["reconstruction"]).all() and np.isfinite(rec["mse"])
    assert rec["mse"] == pytest.approx(float(np.mean((rec["prediction"][mask] - rec["input"][mask]) ** 2)), rel=1e-4)
    # the same seed draws the same mask
    np.testing.assert_array_equal(analysis.reconstruct(model, wav, seed=1)["mask"], mask)


def test_extract_features(ckpts, audio_dir, tmp_path):
    out = tmp_path / "feat"
    proc = run("extract_features.py", ckpts["patch"], audio_dir, "--out", out)
    assert proc.returncode == 0, proc.stderr
    names = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.npy"))
    assert names == ["a/utt.mean.npy", "a/utt.npy", "b/c/utt.mean.npy", "b/c/utt.npy",
                     "long.mean.npy", "long.npy", "short.mean.npy", "short.npy"]
    table = (out / "features.tsv").read_text().splitlines()
    assert table[0] == "path\tframes\tdim" and len(table) == 5
    model = analysis.load(ckpts["patch"])
    for rel in ("a/utt", "b/c/utt", "long", "short"):
        feats, mean = np.load(out / f"{rel}.npy"), np.load(out / f"{rel}.mean.npy")
        assert feats.dtype == np.float32 and feats.shape[1] == 8 * 32 and np.isfinite(feats).all()
        np.testing.assert_allclose(mean, feats.mean(0), rtol=1e-5, atol=1e-6)
        n16 = len(analysis.read_audio(str(next(audio_dir.glob(rel + ".*")))))
        n16 = max(n16, model.min_samples())  # shorter is zero-padded to one token
        frames = (max(0, (n16 - 400) // 160 + 1) - 16) // 16 + 1  # one step per 16 fbank frames
        assert feats.shape[0] == max(1, frames), rel
    # unchunked, our features are the s3prl upstream's; chunked (7 s in 3 s crops), each chunk
    # is encoded alone: same frames, the first chunk equals the first 3 s encoded alone
    from s3prl_upstream.expert import UpstreamExpert

    up = UpstreamExpert(ckpts["patch"]).eval()
    wav = analysis.read_audio(str(audio_dir / "long.flac"))
    with torch.no_grad():
        ref = up([wav])["hidden_states"][-1][0].numpy()
    whole = analysis.embed(model, wav, chunk_seconds=60).numpy()
    np.testing.assert_allclose(whole, ref, atol=2e-4, rtol=1e-3)
    long = np.load(out / "long.npy")
    assert long.shape == ref.shape
    steps = (298 - 16) // 16 + 1  # tokens of one 3 s crop (298 fbank frames)
    first = analysis.embed(model, wav[: 3 * SR]).numpy()
    assert first.shape[0] == steps
    np.testing.assert_allclose(long[:steps], first, atol=1e-5, rtol=1e-4)
    # --layer 1 differs from the last layer and equals the upstream's first hidden state
    proc = run("extract_features.py", ckpts["patch"], audio_dir, "--out", tmp_path / "l1", "--layer", "1",
               "--chunk-seconds", "30")
    assert proc.returncode == 0, proc.stderr
    first = np.load(tmp_path / "l1" / "b" / "c" / "utt.npy")
    last = np.load(out / "b" / "c" / "utt.npy")  # 3.7 s: in two chunks
    assert first.shape == last.shape and not np.allclose(first, last)
    with torch.no_grad():
        ref1 = up([analysis.read_audio(str(audio_dir / "b" / "c" / "utt.flac"))])["hidden_states"][0][0].numpy()
    np.testing.assert_allclose(first, ref1, atol=2e-4, rtol=1e-3)
    # a layer that does not exist is refused
    proc = run("extract_features.py", ckpts["patch"], audio_dir, "--out", tmp_path / "l9", "--layer", "9")
    assert proc.returncode != 0 and "layers 1..2" in proc.stderr


def test_extract_features_frame_model(ckpts, audio_dir, tmp_path):
    proc = run("extract_features.py", ckpts["frame"], audio_dir / "b", "--out", tmp_path / "f", "--layer", "-1")
    assert proc.returncode == 0, proc.stderr
    feats = np.load(tmp_path / "f" / "c" / "utt.npy")
    n = sf.info(str(audio_dir / "b" / "c" / "utt.flac")).frames
    assert feats.shape == (((n - 400) // 160 + 1 - 2) // 2 + 1, 32)  # one frame per 20 ms


def test_linear_probe_separates_classes():
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(3, 20)) * 2
    x = np.concatenate([c + rng.normal(size=(60, 20)) for c in centers])
    y = np.repeat(["a", "b", "c"], 60)
    groups = np.arange(180) // 3  # three clips per file
    test = groups % 4 == 0
    res = analysis.linear_probe(x[~test], y[~test], x[test], y[test], groups_train=groups[~test])
    assert res["accuracy"] > 0.9 and res["balanced_accuracy"] > 0.9
    shuffled = analysis.linear_probe(x[~test], rng.permutation(y[~test]), x[test], y[test])
    assert shuffled["accuracy"] < 0.6


def test_random_init_keeps_input_normalisation(ckpts):
    model = analysis.load(ckpts["patch"])
    fresh = analysis.random_init_like(model, seed=3)
    torch.testing.assert_close(fresh.batch_norm.running_var, model.batch_norm.running_var)
    assert not torch.equal(fresh.post_extract_proj.weight, model.post_extract_proj.weight)
    assert not fresh.training


# ---- the benchmarks, in their tiny configuration (so the documented commands cannot rot) ----------
def markdown_rows(text, heading):
    """{first cell: other cells} of the body rows of the markdown table under the line starting
    with ``heading`` (the header row and the |---| line left out)."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(heading))
    table = []
    for line in lines[start + 1:]:
        if not line.startswith("|"):
            if table:
                break
            continue
        table.append([c.strip() for c in line.strip().strip("|").split("|")])
    assert len(table) >= 2 and set(table[1][0]) == {"-"}, table
    return {cells[0]: cells[1:] for cells in table[2:]}


def positive(cell, pattern=r"([0-9.]+)"):
    value = float(re.match(pattern, cell).group(1))
    assert value > 0 and np.isfinite(value), cell
    return value


def test_bench_tiny_prints_every_section():
    """``tools/bench.py --quick --tiny``: every section's table, both models, every precision
    of ours timed (speed-ups are ratios of times: finite and positive only if both are)."""
    proc = run("bench.py", "--quick", "--tiny", "--threads", "2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    for kind in ("patch", "frame"):
        steps = markdown_rows(out, f"### step: {kind} model")
        assert {"fp32", "bf16-autocast", "bf16-pure"} <= set(steps), steps
        for precision in ("fp32", "bf16-autocast", "bf16-pure"):
            original, ours, speed_up, mfu = steps[precision]
            assert re.fullmatch(r"[0-9.]+ \([0-9.]+\)", ours), (precision, ours)
            positive(speed_up, r"([0-9.]+)x")
            assert re.match(r"\d+ % \(\d+ %\) of (fp32|bf16) peak", mfu), mfu
        assert re.fullmatch(r"[0-9.]+ \([0-9.]+\)", steps["fp32"][0]), steps["fp32"]
        assert "best precision" in steps
    assert re.search(r"matmul peak, 256x256x256.*fp32 \d+ GFLOP/s, bf16 \d+ GFLOP/s", out)
    data = markdown_rows(out, "### data")
    assert set(data) == {"flac", "opus-in-mkv"}, data
    for clips_per_s, audio_per_s in data.values():
        positive(clips_per_s)
        positive(audio_per_s)
    for kind in ("patch", "frame"):
        finetune = markdown_rows(out, f"### finetune: {kind} classifier")
        assert set(finetune) == {"fp32", "bf16-autocast"}, finetune
        for plain, kernels, speed_up in finetune.values():
            positive(plain)
            positive(kernels)
            positive(speed_up, r"([0-9.]+)x")
    upstream = markdown_rows(out, "### s3prl upstream")
    assert set(upstream) == {"patch", "frame"}, upstream
    for stock, ours, speed_up, ours_bf16, speed_up_bf16, rel_diff in upstream.values():
        positive(speed_up, r"([0-9.]+)x")
        positive(speed_up_bf16, r"([0-9.]+)x")
        assert 0 < float(rel_diff) < 0.1, rel_diff  # bf16 ran, and stayed close


def test_bench_upstream_tiny():
    proc = run("bench_upstream.py", "--tiny", "--batch", "4", "--max-s", "3", "--repeats", "1", "--threads", "2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "model: 16x16 patches, 2 layers, dim 32" in out, out
    for name in ("stock upstream:", r"our upstream \(fp32\):", r"our upstream \(bf16\):"):
        wall, cpu = re.search(name + r"\s+([0-9.]+)\s+([0-9.]+)", out).groups()
        assert float(wall) >= 0 and float(cpu) >= 0
    for speed_up in re.findall(r"speed-up ([0-9.]+)x wall, ([0-9.]+)x CPU", out):
        assert all(float(s) > 0 for s in speed_up)
    assert len(re.findall(r"speed-up", out)) == 2
    assert 0 < float(re.search(r"max \|difference\| / max \|value\| = ([0-9.e+-]+)", out).group(1)) < 0.1
    assert re.search(r"hidden states: 2 x \(4, \d+, 256\), same shapes as stock: True", out), out


@pytest.mark.parametrize("flags, message", [
    (["--minutes", "0"], "--minutes 0.0: the training time must be positive"),
    (["--hours-of-audio", "50"], "--hours-of-audio 50.0: between 0 and 10.0"),
    (["--audio", "/no/such/folder"], "--audio /no/such/folder is not a folder"),
    (["--packages", "fillets-ng-data-nl,nope"], "--packages: unknown nope"),
    (["--jobs", "0"], "--jobs 0: at least 1"),
])
def test_demo_refuses_bad_flags_before_any_work(tmp_path, flags, message):
    """The main job's command line fails at once, in the tools' style, and creates nothing."""
    proc = run("demo.py", *flags, "--out", tmp_path / "out")
    assert proc.returncode == 2 and f"demo.py: error: {message}" in proc.stderr, proc.stderr
    assert not (tmp_path / "out").exists()
