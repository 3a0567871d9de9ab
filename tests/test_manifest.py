"""tools/make_manifest.py run as users run it (a subprocess) on real audio files, and
Manifest.load on malformed manifests."""
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio.functional as AF

from conftest import REPO, read_wav, write_mkv_opus
from mae_ast import audio
from mae_ast.manifest import Manifest, ManifestError

TOOL = REPO / "tools" / "make_manifest.py"


def make_manifest(root, dest, *args, check=True):
    proc = subprocess.run([sys.executable, str(TOOL), str(root), "--dest", str(dest), *map(str, args)],
                          capture_output=True, text=True, timeout=300)
    if check and proc.returncode != 0:
        raise AssertionError(f"make_manifest failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def read_tsv(path):
    lines = path.read_text().splitlines()
    return lines[0], [tuple(line.split("\t")) for line in lines[1:]]


def write_good_files(folder, speech_wavs):
    """flac (16 kHz), 22.05 kHz wav and opus-in-mkv, in nested sub-folders; returns relative paths."""
    rels = []
    for i, src in enumerate(speech_wavs):
        wav, rate = read_wav(src)
        kind = i % 3
        if kind == 0:
            rel = f"flac/spk{i}/utt{i}.flac"
            (folder / rel).parent.mkdir(parents=True, exist_ok=True)
            sf.write(folder / rel, AF.resample(torch.from_numpy(wav), rate, 16000).numpy(), 16000)
        elif kind == 1:
            rel = f"wav/utt{i}.wav"
            (folder / rel).parent.mkdir(parents=True, exist_ok=True)
            sf.write(folder / rel, wav, rate)
        else:
            rel = f"mkv/a/b/utt{i}.mkv"
            (folder / rel).parent.mkdir(parents=True, exist_ok=True)
            write_mkv_opus(wav, rate, folder / rel)
        rels.append(rel)
    (folder / "wav" / "README.txt").write_text("not audio, and not an audio extension\n")
    return sorted(rels)


@pytest.fixture(scope="module")
def good_dir(tmp_path_factory, speech_wavs):
    folder = tmp_path_factory.mktemp("good_audio")
    return folder, write_good_files(folder, speech_wavs)


@pytest.fixture(scope="module")
def broken_dir(tmp_path_factory, speech_wavs):
    """Good files plus: truncated flac, text named .wav, empty file, a 50 ms clip."""
    folder = tmp_path_factory.mktemp("broken_audio")
    good = write_good_files(folder, speech_wavs[:5])
    wav, rate = read_wav(speech_wavs[6])
    wav16 = AF.resample(torch.from_numpy(wav), rate, 16000).numpy()
    whole = folder / "tmp.flac"
    sf.write(whole, np.tile(wav16, 2), 16000)
    data = whole.read_bytes()
    whole.unlink()
    bad = {
        "bad/truncated.flac": None,
        "bad/notes.wav": None,
        "bad/sub/empty.flac": None,
        "bad/short_50ms.wav": None,
    }
    (folder / "bad" / "sub").mkdir(parents=True)
    (folder / "bad/truncated.flac").write_bytes(data[:len(data) // 2])
    (folder / "bad/notes.wav").write_text("Meeting notes: bring the audio files.\n" * 30)
    (folder / "bad/sub/empty.flac").write_bytes(b"")
    sf.write(folder / "bad/short_50ms.wav", wav16[8000:8800], 16000)  # 800 samples = 50 ms
    return folder, good, sorted(bad)


@pytest.fixture(scope="module")
def default_run(tmp_path_factory, good_dir):
    folder, rels = good_dir
    dest = tmp_path_factory.mktemp("manifests") / "out"
    proc = make_manifest(folder, dest, "--valid-percent", 0.3, "--seed", 1)
    return folder, rels, dest, proc


# ---- layout -----------------------------------------------------------------------------------
def test_manifest_layout_and_lengths(default_run):
    folder, rels, dest, _ = default_run
    seen = []
    for split in ("train", "valid"):
        root, rows = read_tsv(dest / f"{split}.tsv")
        assert root == os.path.realpath(folder)
        for rel, n in rows:
            assert not os.path.isabs(rel) and os.path.isfile(os.path.join(root, rel))
            # the length is the exact 16 kHz sample count the reader reports
            assert int(n) == audio.num_samples(os.path.join(root, rel)), rel
            seen.append(rel)
    assert sorted(seen) == rels  # every audio file once, in one split; README.txt not included
    assert len(set(seen)) == len(seen)
    # the three formats are all there, and their lengths are right in absolute terms too
    train = Manifest.load(str(dest / "train.tsv"))
    valid = Manifest.load(str(dest / "valid.tsv"))
    assert len(train) + len(valid) == len(rels)
    for m in (train, valid):
        for i in range(len(m)):
            path = m.audio_path(i)
            if path.endswith(".flac"):
                assert m.sizes[i] == sf.info(path).frames
            elif path.endswith(".wav"):
                assert sf.info(path).samplerate == 22050
                assert abs(m.sizes[i] - sf.info(path).frames * 16000 / 22050) < 1
            else:
                # opus: the exact decoded length (container durations are only estimates)
                assert abs(m.sizes[i] - len(audio.read(path))) <= 16


def test_manifest_summary(default_run):
    folder, rels, dest, proc = default_run
    out = proc.stdout
    assert f"{len(rels)} files found" in out
    counts = {}
    for split in ("train", "valid"):
        _, rows = read_tsv(dest / f"{split}.tsv")
        hours = sum(int(n) for _, n in rows) / 16000 / 3600
        m = re.search(rf"{split}\.tsv: (\d+) files, ([\d.]+) h", out)
        assert m, out
        assert int(m.group(1)) == len(rows)
        assert float(m.group(2)) == pytest.approx(hours, abs=0.006)
        counts[split] = len(rows)
    assert counts["valid"] >= 1 and counts["train"] >= 1
    assert re.search(r"left out: 0\b", out), out
    assert "left out:" not in proc.stderr  # nothing named as left out


def test_valid_percent_and_seed_are_deterministic(tmp_path, default_run):
    folder, rels, dest, _ = default_run
    again = make_manifest(folder, tmp_path / "again", "--valid-percent", 0.3, "--seed", 1)
    assert again.returncode == 0
    for split in ("train", "valid"):
        assert (tmp_path / "again" / f"{split}.tsv").read_text() == (dest / f"{split}.tsv").read_text()
    make_manifest(folder, tmp_path / "other", "--valid-percent", 0.3, "--seed", 2)
    _, v1 = read_tsv(dest / "valid.tsv")
    _, v2 = read_tsv(tmp_path / "other" / "valid.tsv")
    assert sorted(v1) != sorted(v2)  # another seed, another split
    _, t2 = read_tsv(tmp_path / "other" / "train.tsv")
    assert sorted(r for r, _ in v2 + t2) == rels


def test_valid_percent_zero_and_ext_filter(tmp_path, good_dir):
    folder, rels = good_dir
    make_manifest(folder, tmp_path / "m", "--valid-percent", 0, "--ext", "flac,.MKV")
    root, valid = read_tsv(tmp_path / "m" / "valid.tsv")
    assert root == os.path.realpath(folder) and valid == []
    _, train = read_tsv(tmp_path / "m" / "train.tsv")
    names = sorted(r for r, _ in train)
    assert names == [r for r in rels if r.endswith((".flac", ".mkv"))]
    assert not any(n.endswith(".wav") for n in names) and any(n.endswith(".mkv") for n in names)


# ---- broken files -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def broken_runs(tmp_path_factory, broken_dir):
    folder, good, bad = broken_dir
    out = tmp_path_factory.mktemp("broken_manifests")
    one = make_manifest(folder, out / "jobs1", "--valid-percent", 0.2, "--jobs", 1)
    two = make_manifest(folder, out / "jobs2", "--valid-percent", 0.2, "--jobs", 2)
    return folder, good, bad, out, one, two


def left_out_lines(stderr):
    return sorted(line for line in stderr.splitlines() if line.startswith("left out:"))


def test_broken_files_are_named_with_a_reason_and_left_out(broken_runs):
    folder, good, bad, out, proc, _ = broken_runs
    root = os.path.realpath(folder)
    lines = left_out_lines(proc.stderr)
    assert len(lines) == len(bad), proc.stderr
    for rel in bad:
        path = os.path.join(root, rel)
        line = next((line for line in lines if path + ":" in line), None)
        assert line is not None, f"{rel} not named in:\n{proc.stderr}"
        reason = line.split(path + ":", 1)[1].strip()
        assert len(reason) > 3, line
    by_name = {rel: next(line for line in lines if os.path.join(root, rel) in line) for rel in bad}
    assert "too short" in by_name["bad/short_50ms.wav"]
    assert "empty" in by_name["bad/sub/empty.flac"]
    # the good files are still written, and only they
    listed = []
    for split in ("train", "valid"):
        _, rows = read_tsv(out / "jobs1" / f"{split}.tsv")
        listed += [r for r, _ in rows]
    assert sorted(listed) == good
    assert re.search(rf"left out: {len(bad)}\b", proc.stdout), proc.stdout
    assert f"{len(good) + len(bad)} files found" in proc.stdout


def test_jobs_2_gives_the_same_manifests_as_jobs_1(broken_runs):
    _, _, _, out, one, two = broken_runs
    for split in ("train", "valid"):
        assert (out / "jobs2" / f"{split}.tsv").read_text() == (out / "jobs1" / f"{split}.tsv").read_text()
    assert left_out_lines(two.stderr) == left_out_lines(one.stderr)
    assert two.stdout == one.stdout


def test_manifest_from_the_tool_loads(broken_runs):
    _, good, _, out, _, _ = broken_runs
    m = Manifest.load(str(out / "jobs1" / "train.tsv"))
    assert len(m) >= 1 and all(os.path.isfile(m.audio_path(i)) for i in range(len(m)))
    assert m.line_numbers == list(range(2, len(m) + 2))


def test_tool_fails_clearly_on_a_folder_without_audio(tmp_path):
    (tmp_path / "empty_dir").mkdir()
    proc = make_manifest(tmp_path / "empty_dir", tmp_path / "m", check=False)
    assert proc.returncode != 0
    assert "no files" in proc.stderr


# ---- Manifest.load errors ---------------------------------------------------------------------
def write(path, text):
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize("text,lineno,words", [
    ("/data\na.flac\t16000\nb.flac 16000\n", 3, "num_samples"),           # no tab
    ("/data\na.flac\tsixteen\n", 2, "sixteen"),                          # not a number
    ("/data\na.flac\t16000\nb.flac\t1.5e4\n", 3, "1.5e4"),               # not a whole number
    ("a.flac\t16000\nb.flac\t16000\n", 1, "root"),                       # root line missing
    ("/data\na.flac\t16000\tx\n", 2, "num_samples"),                     # too many fields
    ("", 1, "root"),                                                     # empty file
])
def test_manifest_load_errors_name_file_and_line(tmp_path, text, lineno, words):
    path = write(tmp_path / "train.tsv", text)
    with pytest.raises(ManifestError) as err:
        Manifest.load(path)
    msg = str(err.value)
    assert f"{path}:{lineno}" in msg, msg
    assert words in msg, msg


def test_manifest_load_missing_file(tmp_path):
    path = str(tmp_path / "valid.tsv")
    with pytest.raises(ManifestError, match=re.escape(path)):
        Manifest.load(path)


def test_manifest_load_good_file_with_size_limits(tmp_path):
    path = write(tmp_path / "train.tsv", "/data/audio\na.flac\t16000\n\nsub/b.wav\t100\nc.mkv\t900000\n")
    m = Manifest.load(path, min_size=1000, max_size=500000)
    assert m.root == "/data/audio"
    assert m.names == ["a.flac"] and m.sizes == [16000] and m.line_numbers == [2]
    assert m.skipped_short == 1 and m.skipped_long == 1
    assert m.audio_path(0) == os.path.join("/data/audio", "a.flac")
    m = Manifest.load(path)
    assert m.names == ["a.flac", "sub/b.wav", "c.mkv"] and m.line_numbers == [2, 4, 5]
