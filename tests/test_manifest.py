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

from conftest import REPO, fairseq_train, read_wav, tiny_model_overrides, write_mkv_opus
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
    assert "valid.tsv is empty" not in out
    assert "1 other files ignored (extensions: .txt 1)" in out  # README.txt


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
    proc = make_manifest(folder, tmp_path / "m", "--valid-percent", 0, "--ext", "flac,.MKV")
    root, valid = read_tsv(tmp_path / "m" / "valid.tsv")
    assert root == os.path.realpath(folder) and valid == []
    # the user is told that valid.tsv is empty and how to train with it
    assert "valid.tsv is empty" in proc.stdout and "dataset.disable_validation=true" in proc.stdout
    assert re.search(r"\b\d+ other files ignored \(extensions: \.wav \d+, \.txt 1\)", proc.stdout), proc.stdout
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
    folder = tmp_path / "no_audio"
    folder.mkdir()
    (folder / "notes.txt").write_text("not audio")
    (folder / "photo.png").write_bytes(b"\x89PNG")
    proc = make_manifest(folder, tmp_path / "m", check=False)
    assert proc.returncode == 2
    assert proc.stderr.startswith("make_manifest.py: error: no files with extensions .3gp .aac"), proc.stderr
    assert "other files: .png 1, .txt 1" in proc.stderr  # what was there instead


def test_tool_fails_clearly_on_a_missing_folder(tmp_path):
    proc = make_manifest(tmp_path / "nowhere", tmp_path / "m", check=False)
    assert proc.returncode == 2
    assert proc.stderr == f"make_manifest.py: error: {tmp_path / 'nowhere'} is not a folder\n"
    assert not (tmp_path / "m").exists()


def test_tool_fails_clearly_when_dest_is_a_file(tmp_path, good_dir):
    folder, _ = good_dir
    (tmp_path / "taken").write_text("a file where the manifests should go")
    proc = make_manifest(folder, tmp_path / "taken", check=False)
    assert proc.returncode == 2
    assert proc.stderr == f"make_manifest.py: error: {tmp_path / 'taken'} is a file, not a folder\n"


def test_tool_fails_when_every_file_is_left_out(tmp_path):
    folder = tmp_path / "all_broken"
    folder.mkdir()
    (folder / "notes.wav").write_text("Meeting notes, not audio.\n" * 20)
    (folder / "empty.flac").write_bytes(b"")
    proc = make_manifest(folder, tmp_path / "m", check=False)
    assert proc.returncode == 1
    assert len(left_out_lines(proc.stderr)) == 2
    assert "make_manifest.py: error: all 2 audio files" in proc.stderr
    assert not (tmp_path / "m" / "train.tsv").exists()  # no manifest that training would refuse


# ---- names a manifest line cannot hold --------------------------------------------------------
def flac_bytes(speech_wav, tmp_path):
    wav, rate = read_wav(speech_wav)
    sf.write(tmp_path / "src.flac", AF.resample(torch.from_numpy(wav), rate, 16000).numpy(), 16000)
    return (tmp_path / "src.flac").read_bytes()


UNWRITABLE = {  # relative path -> words of the reason
    "tab\tin name.flac": "tab",
    "new\nline.flac": "newline",
    "carriage\rreturn.flac": "carriage return",
    "folder\twith tab/inside.flac": "tab",
    "both\t\n.flac": "tab and a newline",
}
# characters Python's str.splitlines() also splits on, which the manifest's lines do not
WRITABLE = ["form\x0cfeed.flac", "sub/line\u2028separator.flac", "plain.flac", "caf\u00e9 \u00fc.flac"]


@pytest.fixture(scope="module")
def odd_names_run(tmp_path_factory, speech_wavs):
    folder = tmp_path_factory.mktemp("odd_names")
    data = flac_bytes(speech_wavs[3], tmp_path_factory.mktemp("src"))
    for rel in list(UNWRITABLE) + WRITABLE:
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(data)
    # bytes that are not UTF-8 (a Latin-1 name copied from an old disk); opus in mkv, since
    # PyAV opens such a path where soundfile cannot
    wav, rate = read_wav(speech_wavs[3])
    write_mkv_opus(wav, rate, folder / "latin1.mkv")
    os.rename(folder / "latin1.mkv", os.fsencode(folder) + b"/latin1_caf\xe9.mkv")
    dest = tmp_path_factory.mktemp("odd_manifests") / "m"
    return folder, dest, make_manifest(folder, dest, "--valid-percent", 0)


def test_names_a_manifest_cannot_hold_are_left_out_and_named(odd_names_run):
    folder, dest, proc = odd_names_run
    root = os.path.realpath(folder)
    lines = left_out_lines(proc.stderr)
    for rel, words in UNWRITABLE.items():
        named = [line for line in lines if line.startswith(f"left out: {os.path.join(root, rel)!r}: ")]
        assert len(named) == 1 and f"path holds a {words}" in named[0], (rel, proc.stderr)
    latin1 = os.path.join(root, os.fsdecode(b"latin1_caf\xe9.mkv"))
    assert any(line.startswith(f"left out: {latin1!r}: path is not valid UTF-8") for line in lines), proc.stderr
    assert len(lines) == len(UNWRITABLE) + 1  # one line each, never split by the names they show
    # counted in the summary, by reason
    n_tab = sum(1 for words in UNWRITABLE.values() if words.endswith("tab"))
    assert re.search(rf"left out: {len(UNWRITABLE) + 1} \(", proc.stdout), proc.stdout
    assert f"path holds a tab: {n_tab}" in proc.stdout and "path is not valid UTF-8: 1" in proc.stdout


def test_manifest_with_odd_names_loads_with_the_right_names(odd_names_run):
    folder, dest, _ = odd_names_run
    m = Manifest.load(str(dest / "train.tsv"))
    assert sorted(m.names) == sorted(WRITABLE)
    for i in range(len(m)):
        assert m.sizes[i] == audio.num_samples(m.audio_path(i)) > 16000
    assert len(Manifest.load(str(dest / "valid.tsv"))) == 0


@pytest.mark.parametrize("char,words", [("\t", "tab"), ("\n", "newline")])
def test_root_folder_a_manifest_cannot_hold_is_refused(tmp_path, speech_wavs, char, words):
    folder = tmp_path / f"audio{char}root"
    folder.mkdir()
    (folder / "a.flac").write_bytes(flac_bytes(speech_wavs[0], tmp_path))
    proc = make_manifest(folder, tmp_path / "m", check=False)
    assert proc.returncode == 2
    assert proc.stderr.startswith(f"make_manifest.py: error: the folder {str(folder)!r} cannot be"), proc.stderr
    assert f"path holds a {words}" in proc.stderr
    assert not (tmp_path / "m").exists()


# ---- default extensions -----------------------------------------------------------------------
def write_with_pyav(wav, rate, path, codec, codec_rate):
    """Encode mono ``wav`` with PyAV's ``codec`` at ``codec_rate``; the extension picks the
    container (.m4a: mp4 boxes, .opus: ogg)."""
    import av

    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=codec_rate)
        stream.layout = "mono"
        frame = av.AudioFrame.from_ndarray(np.atleast_2d(wav).astype(np.float32), format="fltp", layout="mono")
        frame.sample_rate = rate
        sample_format = stream.codec_context.codec.audio_formats[0].name
        resampler = av.AudioResampler(format=sample_format, layout="mono", rate=codec_rate)
        for f in resampler.resample(frame) + resampler.resample(None) + [None]:  # None: flush
            out.mux(stream.encode(f))
    return path


def test_help_lists_default_extensions_and_exit_codes():
    proc = subprocess.run([sys.executable, str(TOOL), "--help"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0
    for ext in audio.AUDIO_EXTENSIONS:
        assert re.search(rf"(?<![\w.]){re.escape(ext)}(?!\w)", proc.stdout), ext
    assert "exit codes:" in proc.stdout and "error:" in proc.stdout


def test_phone_and_podcast_formats_are_read_by_default(tmp_path, speech_wavs):
    """m4a (aac in mp4 boxes) and opus (in ogg), written by ffmpeg's encoders, land in the
    manifest with their decoded length; other files are counted, not silently skipped."""
    wav, rate = read_wav(speech_wavs[1])
    folder = tmp_path / "phone"
    (folder / "rec").mkdir(parents=True)
    write_with_pyav(wav, rate, folder / "rec" / "memo.m4a", "aac", 44100)
    write_with_pyav(wav, rate, folder / "episode.opus", "libopus", 48000)
    write_with_pyav(wav, rate, folder / "ringtone.M4A", "aac", 44100)  # extensions in any case
    for name in ("cover.png", "notes.txt", "rec/notes.txt"):
        (folder / name).write_bytes(b"not audio")
    proc = make_manifest(folder, tmp_path / "m", "--valid-percent", 0)
    m = Manifest.load(str(tmp_path / "m" / "train.tsv"))
    assert sorted(m.names) == ["episode.opus", "rec/memo.m4a", "ringtone.M4A"]
    source_length = len(wav) * 16000 / rate
    for i, (name, size) in enumerate(zip(m.names, m.sizes)):
        decoded = len(audio.read(m.audio_path(i)))
        # the manifest holds what training will decode (to the sample resampling rounds to)
        assert abs(size - decoded) <= 1, (name, size, decoded)
        # and that is the speech: opus trims its pre-skip, aac keeps up to ~2 frames of padding
        assert abs(size - source_length) <= (16 if name.endswith(".opus") else 2 * 1024 * 16000 / 44100), name
    assert "3 other files ignored (extensions: .txt 2, .png 1)" in proc.stdout, proc.stdout


# ---- empty validation split in a real fairseq run ---------------------------------------------
@pytest.mark.slow
def test_empty_validation_split_in_training(corpus, tmp_path):
    manifests = tmp_path / "no_valid"
    made = make_manifest(corpus["audio"], manifests, "--valid-percent", 0)
    assert "dataset.disable_validation=true" in made.stdout
    common = [*tiny_model_overrides(True), "task.mask_type=chunk_mask", "optimization.max_update=2"]
    refused = fairseq_train(manifests, tmp_path / "refused", *common, check=False)
    assert refused.returncode != 0
    message = refused.stdout + refused.stderr
    assert f"{manifests / 'valid.tsv'}: no usable clips" in message
    assert "it is a validation split: to train without validation set dataset.disable_validation=true" in message
    trained = fairseq_train(manifests, tmp_path / "trained", *common, "dataset.disable_validation=true")
    assert '"num_updates": "2"' in trained.stdout, trained.stdout[-3000:]
    assert (tmp_path / "trained" / "checkpoints" / "checkpoint_last.pt").is_file()


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
    ("/data\na.flac\t16000\nb.flac\t-5\n", 3, "negative length -5"),     # negative
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


def test_manifest_size_limits_keep_their_bounds_and_count_each_skip(tmp_path):
    sizes = {"empty": 0, "a": 998, "b": 999, "c": 1000, "d": 500000, "e": 500001, "f": 500002}
    path = write(tmp_path / "train.tsv", "/data\n" + "".join(f"{n}.wav\t{s}\n" for n, s in sizes.items()))
    m = Manifest.load(path, min_size=1000, max_size=500000)
    assert m.path == path and m.names == ["c.wav", "d.wav"] and m.sizes == [1000, 500000]
    assert m.skipped_short == 3 and m.skipped_long == 2
    assert Manifest.load(path).sizes == list(sizes.values())  # an empty file's line is a valid line


# ---- mae_ast.manifest's making functions, called directly --------------------------------------
def test_audio_extensions_and_extension():
    from mae_ast.manifest import audio_extensions, extension

    assert audio_extensions("flac, .WAV,,mp3 ") == {".flac", ".wav", ".mp3"}
    assert audio_extensions(" , ") == set()
    assert extension("a/B.FLAC") == ".flac" and extension("noext") == ""


def test_find_files_counts_others_and_excluded(tmp_path):
    from mae_ast.manifest import find_files

    for rel in ("a.wav", "sub/b.FLAC", "sub/c.txt", "noise/n.wav", "noise/m.wav", "noise/r.txt", "x/README"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"")
    found, others, excluded = find_files(str(tmp_path), {".wav", ".flac"}, ["noise"])
    assert found == ["a.wav", os.path.join("sub", "b.FLAC")]
    assert others == {".txt": 1, "(none)": 1}  # noise/r.txt is not counted: the folder is not searched
    assert excluded == {"noise": 2}
    found, others, excluded = find_files(str(tmp_path), {".wav"})
    assert found == ["a.wav", os.path.join("noise", "m.wav"), os.path.join("noise", "n.wav")] and excluded == {}
    assert others == {".txt": 2, ".flac": 1, "(none)": 1}
    assert find_files(str(tmp_path), {".wav"}, ["x"])[2] == {"x": 0}


def test_find_files_follows_linked_folders_also_in_excluded_ones(tmp_path):
    from mae_ast.manifest import find_files

    for rel in ("elsewhere/a.wav", "elsewhere/b.wav", "root/c.wav", "root/noise/n.wav"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"")
    (tmp_path / "root" / "linked").symlink_to(tmp_path / "elsewhere")
    (tmp_path / "root" / "noise" / "linked").symlink_to(tmp_path / "elsewhere")
    found, _, excluded = find_files(str(tmp_path / "root"), {".wav"}, ["noise"])
    assert found == ["c.wav", os.path.join("linked", "a.wav"), os.path.join("linked", "b.wav")]
    assert excluded == {"noise": 3}


def test_checked_root_and_excluded_folders(tmp_path):
    from mae_ast.manifest import check_excluded_folders_exist, checked_root

    (tmp_path / "audio" / "keep").mkdir(parents=True)
    assert checked_root(str(tmp_path / "audio" / ".")) == str((tmp_path / "audio").resolve())
    with pytest.raises(ManifestError, match=re.escape(f"{tmp_path / 'none'} is not a folder")):
        checked_root(str(tmp_path / "none"))
    (tmp_path / "tab\there").mkdir()
    with pytest.raises(ManifestError, match="cannot be a manifest's first line: path holds a tab "
                                            r"\(a manifest line cannot\); move or link the audio to a plain path$"):
        checked_root(str(tmp_path / "tab\there"))
    check_excluded_folders_exist(str(tmp_path / "audio"), ["keep"])
    with pytest.raises(ManifestError, match=r"no folder named 'kept' in .* \(its folders: 'keep'\)"):
        check_excluded_folders_exist(str(tmp_path / "audio"), ["keep", "kept"])
    (tmp_path / "audio" / "kept too").mkdir()
    with pytest.raises(ManifestError, match=r"\(its folders: 'keep', 'kept too'\)$"):
        check_excluded_folders_exist(str(tmp_path / "audio"), ["kept"])
    with pytest.raises(ManifestError, match=r"\(its folders: none\)"):
        check_excluded_folders_exist(str(tmp_path / "audio" / "keep"), ["x"])


def test_assign_splits_fixed_then_drawn():
    from mae_ast.manifest import assign_splits

    good = [(f"f{i}.wav", 16000) for i in range(200)]
    fixed = {"f0.wav": "test", "f1.wav": "valid"}
    drawn = assign_splits(good, fixed, 0.3, seed=1)
    assert drawn[:2] == ["test", "valid"] and set(drawn[2:]) == {"train", "valid"}
    assert 30 < drawn.count("valid") < 90 and drawn == assign_splits(good, fixed, 0.3, seed=1)
    assert drawn != assign_splits(good, fixed, 0.3, seed=2)
    assert assign_splits(good, fixed, 0.3, seed=1, draw_valid=False) == ["test", "valid"] + ["train"] * 198
    assert assign_splits(good, {}, 0.0, seed=1) == ["train"] * 200
    assert assign_splits(good, fixed, 1.0, seed=1) == ["test"] + ["valid"] * 199


def test_write_splits_and_stale_outputs(tmp_path):
    from mae_ast.manifest import stale_outputs, write_splits

    good = [("a.wav", 16000 * 3600), ("b/c.wav", 8000), ("d.wav", 16000)]
    counts = write_splits(str(tmp_path), "/data", good, ["train", "valid", "train"], ("train", "valid", "test"),
                          {"a.wav": ["dog"], "b/c.wav": ["cat", "dog"], "d.wav": ["owl"]})
    assert counts == {"train": (2, pytest.approx(1 + 1 / 3600)), "valid": (1, pytest.approx(0.5 / 3600)),
                      "test": (0, 0)}
    assert (tmp_path / "train.tsv").read_text() == f"/data\na.wav\t{16000 * 3600}\nd.wav\t16000\n"
    assert (tmp_path / "train.lbl").read_text() == "dog\nowl\n"
    assert (tmp_path / "valid.lbl").read_text() == "cat,dog\n" and (tmp_path / "test.tsv").read_text() == "/data\n"
    assert Manifest.load(str(tmp_path / "valid.tsv")).names == ["b/c.wav"]
    (tmp_path / "labels.csv").write_text("index,name\n")
    written = {"train.tsv", "valid.tsv", "test.tsv"}
    assert stale_outputs(str(tmp_path), written) == [str(tmp_path / n) for n in
                                                     ("train.lbl", "valid.lbl", "test.lbl", "labels.csv")]
    (tmp_path / "x").mkdir()
    write_splits(str(tmp_path / "x"), "/data", good, ["train"] * 3, ("train",))  # no labels: no .lbl
    assert sorted(os.listdir(tmp_path / "x")) == ["train.tsv"]
    assert stale_outputs(str(tmp_path / "x"), {"train.tsv"}) == []
    assert stale_outputs(str(tmp_path), {"train.tsv"}) == [str(tmp_path / n) for n in (
        "train.lbl", "valid.tsv", "valid.lbl", "test.tsv", "test.lbl", "labels.csv")]


def test_measure_all_keeps_order_and_reasons(tmp_path):
    from mae_ast.manifest import measure_all

    sf.write(tmp_path / "ok.wav", np.zeros(16000, dtype=np.float32), 16000)
    sf.write(tmp_path / "short.wav", np.zeros(100, dtype=np.float32), 16000)
    (tmp_path / "broken.wav").write_bytes(b"RIFF nonsense")
    calls = []
    results = measure_all(str(tmp_path), ["short.wav", "ok.wav", "broken.wav"], 3200, 1,
                          lambda done, total: calls.append((done, total)))
    assert [r[0] for r in results] == ["short.wav", "ok.wav", "broken.wav"]
    assert results[1] == ("ok.wav", 16000, None)
    assert results[0][1] is None and results[0][2] == "too short (0.006 s)"
    assert results[2][1] is None and results[2][2]
    assert calls == [(3, 3)]  # every 50 files, and once at the end
    assert measure_all(str(tmp_path), ["short.wav", "ok.wav", "broken.wav"], 3200, 2) == results


def test_measure_keeps_a_file_of_exactly_the_shortest_length_and_names_unexpected_errors(tmp_path):
    from mae_ast.manifest import measure, measure_all

    sf.write(tmp_path / "ok.wav", np.zeros(3200, dtype=np.float32), 16000)
    assert measure((str(tmp_path), "ok.wav", 3200)) == ("ok.wav", 3200, None)
    assert measure((str(tmp_path), "ok.wav", 3201))[1:] == (None, "too short (0.200 s)")
    rel, samples, reason = measure((None, "ok.wav", 0))  # not an audio error: a crash, named by its type
    assert (rel, samples) == ("ok.wav", None) and reason.startswith("TypeError: ")
    calls = []
    measure_all(str(tmp_path), ["ok.wav"] * 120, 0, 1, lambda done, total: calls.append((done, total)))
    assert calls == [(50, 120), (100, 120), (120, 120)]


def test_reasons_a_name_cannot_be_written_are_stated():
    from mae_ast.manifest import unwritable_name_reason, unwritable_root_reason

    assert unwritable_name_reason("a\tb\nc.wav") == "path holds a tab and a newline (a manifest line cannot)"
    assert unwritable_name_reason("a\udcff.wav") == "path is not valid UTF-8 (a manifest is UTF-8 text)"
    assert unwritable_root_reason("/data ") == "path starts or ends with white space (the manifest's first line is stripped)"
    assert unwritable_name_reason("a b.wav") is None and unwritable_root_reason("/da ta") is None


def test_printable():
    from mae_ast.manifest import printable

    assert printable("a/b c.wav") == "a/b c.wav" and printable("a\nb") == repr("a\nb")
