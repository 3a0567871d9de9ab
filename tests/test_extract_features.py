"""tools/extract_features.py on long files: window by window equals the whole file at once, and
the memory it needs does not grow with the file."""
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from conftest import REPO
from test_tools import tiny_checkpoint

SR = 16000
PEAK_RSS = (
    "import resource, subprocess, sys\n"
    "subprocess.run(sys.argv[1:], check=True, capture_output=True)\n"
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"  # KiB, the child's peak
)


def tone_with_noise(seconds, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    return (0.3 * np.sin(2 * np.pi * (200 + 50 * np.sin(t)) * t) + 0.01 * rng.standard_normal(t.size)).astype(np.float32)


def extract(ckpt, folder, out, *flags, measure=False):
    cmd = [sys.executable, str(REPO / "tools" / "extract_features.py"), str(ckpt), str(folder), "--out", str(out), *flags]
    if measure:
        proc = subprocess.run([sys.executable, "-c", PEAK_RSS, *cmd], capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return int(proc.stdout.split()[-1]) / 1024  # MiB
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "patch.pt", True)


def test_windows_equal_the_whole_file(ckpt, tmp_path):
    """70 s in windows of 5 s (rounded to whole 3 s chunks) and in one window: same frames."""
    (tmp_path / "a").mkdir()
    sf.write(tmp_path / "a" / "long.flac", tone_with_noise(70.3), SR)
    extract(ckpt, tmp_path / "a", tmp_path / "small", "--window-seconds", "5")
    extract(ckpt, tmp_path / "a", tmp_path / "whole", "--window-seconds", "1000")
    small, whole = np.load(tmp_path / "small" / "long.npy"), np.load(tmp_path / "whole" / "long.npy")
    assert small.shape == whole.shape == (((int(70.3 * SR) - 400) // 160 + 1 - 16) // 16 + 1, 256)
    np.testing.assert_allclose(small, whole, atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(np.load(tmp_path / "small" / "long.mean.npy"), whole.mean(0), atol=1e-5, rtol=1e-5)


def test_memory_does_not_grow_with_the_file(ckpt, tmp_path):
    """A 15-minute file needs no more memory than a 30 s one (decoding, fbank and the encoder
    all work on one window; the frames go straight to the .npy file)."""
    for name, seconds in (("short", 30), ("long", 900)):
        (tmp_path / name).mkdir()
        sf.write(tmp_path / name / "clip.flac", tone_with_noise(seconds), SR)
    short = extract(ckpt, tmp_path / "short", tmp_path / "out_short", "--window-seconds", "30", measure=True)
    long = extract(ckpt, tmp_path / "long", tmp_path / "out_long", "--window-seconds", "30", measure=True)
    assert np.load(tmp_path / "out_long" / "clip.npy", mmap_mode="r").shape[0] == ((900 * SR - 400) // 160 + 1 - 16) // 16 + 1
    # a whole-file pass holds the 15-minute waveform, its fbank frames and spectra: > 400 MiB more
    assert long - short < 60, (short, long)


def run_tool(*args):
    return subprocess.run([sys.executable, str(REPO / "tools" / "extract_features.py"), *map(str, args)],
                          capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("case", ["not a folder", "missing checkpoint", "no audio", "bad layer",
                                  "bad window", "all unreadable"])
def test_documented_failures(ckpt, tmp_path, case):
    """Each failure --help promises: '<tool>: error: <why>' and its exit code (2: unusable input
    or command line; 1: ran, but every file was unreadable, each named)."""
    audio_dir = tmp_path / "audio"
    audio_dir.mkdir()
    sf.write(audio_dir / "ok.flac", tone_with_noise(1.0), SR)
    out = tmp_path / "out"
    args, code, message = {
        "not a folder": ((ckpt, audio_dir / "ok.flac", "--out", out), 2, "is not a folder"),
        "missing checkpoint": ((tmp_path / "none.pt", audio_dir, "--out", out), 2, "no such checkpoint"),
        "no audio": ((ckpt, tmp_path / "out_empty", "--out", out), 2, "no audio files"),
        "bad layer": ((ckpt, audio_dir, "--out", out, "--layer", "3"), 2, "layers 1..2"),
        "bad window": ((ckpt, audio_dir, "--out", out, "--window-seconds", "0"), 2, "must be positive"),
        "all unreadable": ((ckpt, audio_dir, "--out", out), 1, "unreadable"),
    }[case]
    if case == "no audio":
        (tmp_path / "out_empty").mkdir()
    if case == "all unreadable":
        (audio_dir / "ok.flac").write_bytes(b"not audio at all" * 100)
    proc = run_tool(*args)
    assert proc.returncode == code, (proc.returncode, proc.stderr)
    assert message in proc.stdout + proc.stderr
    if code == 2:
        assert "extract_features.py: error:" in proc.stderr
    else:
        assert "ok.flac" in proc.stderr  # the unreadable file is named
