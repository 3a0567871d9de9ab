"""tools/make_hear_task.py: HEAR task folders from class folders, label CSVs (scene and event)
and the demo corpus, mixed event scenes, folds, and every kind of bad input named with its file
and line. Real audio: espeak-ng speech (wav, flac, opus in mkv), tones and noise, decoded by
mae_ast.audio and read back from the written wav files. heareval itself runs in
tests/test_heareval.py."""
import csv
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from conftest import REPO, read_wav
from mae_ast import audio
from mae_ast.audio import write_mkv_opus

TOOL = REPO / "tools" / "make_hear_task.py"
spec = importlib.util.spec_from_file_location("make_hear_task", TOOL)
make_hear_task = importlib.util.module_from_spec(spec)
spec.loader.exec_module(make_hear_task)


def tool(*args, check=True):
    """The tool's main() in this process: no interpreter start-up, so the many cases stay
    quick. Returns what run_tool returns (returncode, stdout, stderr)."""
    import contextlib
    import io
    from types import SimpleNamespace

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            make_hear_task.main([str(a) for a in args])
            code = 0
        except SystemExit as e:
            code = e.code
    if check:
        assert code == 0, err.getvalue()[-3000:]
    return SimpleNamespace(returncode=code, stdout=out.getvalue(), stderr=err.getvalue())


def run_tool(*args, check=True):
    """The tool as a user runs it: its own process, exit code and stderr."""
    proc = subprocess.run([sys.executable, str(TOOL), *map(str, args)], capture_output=True, text=True,
                          timeout=300)
    if check:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def tone(seconds, freq, rate=22050, amp=0.3):
    t = np.arange(int(seconds * rate)) / rate
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


@pytest.fixture(scope="module")
def class_folders(tmp_path_factory, speech_wavs):
    """speech/ (espeak-ng: wav, flac and opus in mkv) and tone/ (flac at 22.05 kHz), four
    files each; a file directly in the folder (no class) and a broken file in tone/."""
    root = tmp_path_factory.mktemp("classes")
    (root / "speech").mkdir()
    (root / "tone").mkdir()
    for i, src in enumerate(speech_wavs[:4]):
        wav, rate = read_wav(src)
        if i == 0:
            write_mkv_opus(wav, rate, root / "speech" / "s0.mkv")
        else:
            sf.write(root / "speech" / (f"s{i}.flac" if i % 2 else f"s{i}.wav"), wav, rate)
    for i in range(4):
        sf.write(root / "tone" / f"t{i}.flac", tone(0.8 + 0.3 * i, 300 + 150 * i), 22050)
    sf.write(root / "loose.wav", tone(1.0, 500), 22050)
    (root / "tone" / "broken.flac").write_bytes(b"fLaC not really")
    return root


def load_task(folder):
    folder = Path(folder)
    meta = json.loads((folder / "task_metadata.json").read_text())
    with open(folder / "labelvocabulary.csv", newline="") as f:
        vocabulary = list(csv.reader(f))
    splits = {split: json.loads((folder / f"{split}.json").read_text()) for split in meta["splits"]}
    return meta, vocabulary, splits


# ---- good input --------------------------------------------------------------------------------
def test_class_folders_make_a_scene_task(class_folders, tmp_path):
    out = tmp_path / "tasks" / "speech_or_tone"
    proc = run_tool(out, "--audio", class_folders, "--sample-rates", "16000,44100",
                    "--valid-percent", "0.25", "--test-percent", "0.25")
    # the file without a class folder and the broken one are counted, named, left out
    assert "left out 1 audio files directly in" in proc.stderr
    assert "broken.flac" in proc.stderr and "left out 1 of 9 audio files" in proc.stderr
    meta, vocabulary, splits = load_task(out)
    assert meta["task_name"] == "speech_or_tone"
    assert (meta["embedding_type"], meta["prediction_type"]) == ("scene", "multiclass")
    assert meta["split_mode"] == "trainvaltest" and meta["splits"] == ["train", "valid", "test"]
    assert meta["evaluation"] == ["top1_acc"]
    assert vocabulary == [["idx", "label"], ["0", "speech"], ["1", "tone"]]
    # every clip in exactly one split, each split holds both classes (8 clips: 4 + 2 + 2)
    names = [name for labels in splits.values() for name in labels]
    assert sorted(names) == sorted(["speech__s0.wav", "speech__s1.wav", "speech__s2.wav", "speech__s3.wav",
                                    "tone__t0.wav", "tone__t1.wav", "tone__t2.wav", "tone__t3.wav"])
    assert [len(splits[s]) for s in ("train", "valid", "test")] == [4, 2, 2]
    for labels in splits.values():
        assert sorted(v[0] for v in labels.values()) == ["speech"] * (len(labels) // 2) + ["tone"] * (len(labels) // 2)
        assert all(v == [k.split("__")[0]] for k, v in labels.items())
    # every file at both rates, mono, trimmed or padded to the longest source
    longest = max(audio.probe(str(p))[1] / audio.probe(str(p))[0]
                  for p in class_folders.glob("*/*") if p.name != "broken.flac")
    assert meta["sample_duration"] == pytest.approx(longest, abs=0.011)
    for rate in (16000, 44100):
        for split, labels in splits.items():
            for name in labels:
                info = sf.info(out / str(rate) / split / name)
                assert (info.samplerate, info.channels) == (rate, 1)
                assert info.frames == round(meta["sample_duration"] * rate)
    # the audio is the decoded source (opus in mkv included), then silence
    split = next(s for s, labels in splits.items() if "speech__s0.wav" in labels)
    written, _ = sf.read(out / "16000" / split / "speech__s0.wav", dtype="float32")
    source = audio.read(str(class_folders / "speech" / "s0.mkv"), 16000).numpy()
    np.testing.assert_allclose(written[:len(source)], source, atol=1.5 / 32768)
    assert not written[len(source):].any()
    assert not (tmp_path / "tasks" / "speech_or_tone.partial").exists()
    check = run_tool("--check", out)
    assert "looks good" in check.stdout


def test_the_seed_draws_the_splits(class_folders, tmp_path):
    def splits_of(seed, name):
        tool(tmp_path / name, "--audio", class_folders, "--seed", seed, "--valid-percent", "0.25",
                 "--test-percent", "0.25")
        return load_task(tmp_path / name)[2]

    first = splits_of(0, "a")
    assert splits_of(0, "b") == first
    assert any(splits_of(s, f"c{s}") != first for s in (1, 2, 3))


def test_folds(class_folders, tmp_path):
    out = tmp_path / "folds"
    tool(out, "--audio", class_folders, "--folds", "4")
    meta, _, splits = load_task(out)
    assert meta["split_mode"] == "new_split_kfold" and meta["nfolds"] == 4
    assert meta["splits"] == ["fold00", "fold01", "fold02", "fold03"]
    # 8 clips, 4 folds: two each, one of each class
    for labels in splits.values():
        assert sorted(v[0] for v in labels.values()) == ["speech", "tone"]
    assert sum(len(v) for v in splits.values()) == 8


@pytest.fixture(scope="module")
def recordings(tmp_path_factory):
    """Four 3 s recordings: a 1 kHz beep and a noise burst at known times over a quiet floor."""
    root = tmp_path_factory.mktemp("recordings")
    rng = np.random.default_rng(0)
    rows = [["file", "label", "start", "end"]]
    for i in range(4):
        rate = 16000 if i % 2 else 22050
        wav = rng.normal(0, 0.002, 3 * rate).astype(np.float32)
        beep = (0.2 + 0.1 * i, 0.9 + 0.1 * i)
        a, b = int(beep[0] * rate), int(beep[1] * rate)
        wav[a:b] += 0.3 * np.sin(2 * np.pi * 1000 * np.arange(b - a) / rate).astype(np.float32)
        a, b = int(1.8 * rate), int(2.6 * rate)
        wav[a:b] += rng.normal(0, 0.2, b - a).astype(np.float32)
        sf.write(root / f"rec{i}.wav", wav, rate)
        rows += [[f"rec{i}.wav", "beep", f"{beep[0]:.2f}", f"{beep[1]:.2f}"], [f"rec{i}.wav", "noise", "1.8", "2.6"]]
    with open(root / "events.csv", "w", newline="") as f:
        csv.writer(f).writerows(rows)
    return root


def test_event_csv_makes_an_event_task(recordings, tmp_path):
    out = tmp_path / "events"
    tool(out, "--labels", recordings / "events.csv", "--duration", "2.0", "--valid-percent", "0.25",
             "--test-percent", "0.25")
    meta, vocabulary, splits = load_task(out)
    assert (meta["embedding_type"], meta["prediction_type"]) == ("event", "multilabel")
    assert meta["evaluation"] == ["event_onset_200ms_fms", "segment_1s_er"]
    assert meta["sample_duration"] == 2.0
    assert vocabulary == [["idx", "label"], ["0", "beep"], ["1", "noise"]]
    events = {name: ev for labels in splits.values() for name, ev in labels.items()}
    assert sorted(events) == [f"rec{i}.wav" for i in range(4)]
    # milliseconds, sorted by start; the noise (1.8-2.6 s) is cut at the 2 s duration
    assert events["rec1.wav"] == [{"label": "beep", "start": 300.0, "end": 1000.0},
                                  {"label": "noise", "start": 1800.0, "end": 2000.0}]
    split = next(s for s, labels in splits.items() if "rec1.wav" in labels)
    written, rate = sf.read(out / "16000" / split / "rec1.wav", dtype="float32")
    source, _ = sf.read(recordings / "rec1.wav", dtype="float32")  # already 16 kHz
    assert rate == 16000 and len(written) == 32000
    np.testing.assert_allclose(written, source[:32000], atol=1.5 / 32768)


def test_scene_csv_with_several_labels_per_file_is_multilabel(recordings, tmp_path):
    (tmp_path / "labels.csv").write_text("file,label\n" + "".join(
        f"{recordings}/rec{i}.wav,beep\n" + (f"{recordings}/rec{i}.wav,noise\n" if i % 2 else "")
        for i in range(4)))
    out = tmp_path / "multi"
    tool(out, "--labels", tmp_path / "labels.csv", "--valid-percent", "0.25", "--test-percent", "0.25")
    meta, _, splits = load_task(out)
    assert (meta["embedding_type"], meta["prediction_type"]) == ("scene", "multilabel")
    assert meta["evaluation"] == ["mAP", "d_prime", "aucroc"]
    labels = {name: v for split in splits.values() for name, v in split.items()}
    assert labels == {"rec0.wav": ["beep"], "rec1.wav": ["beep", "noise"], "rec2.wav": ["beep"],
                      "rec3.wav": ["beep", "noise"]}


def test_mixed_event_scenes(class_folders, tmp_path):
    out = tmp_path / "mixed"
    tool(out, "--audio", class_folders, "--mix-events", "10", "--duration", "4", "--events-per-scene", "2",
             "--event-seconds", "1.0", "--valid-percent", "0.25", "--test-percent", "0.25",
             "--sample-rates", "16000")
    meta, vocabulary, splits = load_task(out)
    assert (meta["embedding_type"], meta["sample_duration"]) == ("event", 4.0)
    assert vocabulary == [["idx", "label"], ["0", "speech"], ["1", "tone"]]
    assert sum(len(s) for s in splits.values()) == 10 and all(splits.values())
    for split, scenes in splits.items():
        for name, events in scenes.items():
            wav, _ = sf.read(out / "16000" / split / name, dtype="float32")
            assert len(events) == 2
            silent = np.ones(len(wav), bool)
            for event in events:
                a, b = round(event["start"] * 16), round(event["end"] * 16)
                assert 0 <= a < b <= len(wav) and b - a <= 16000
                silent[a:b] = False
                assert np.abs(wav[a:b]).max() > 0.01  # the clip is where its event says
            assert not wav[silent].any()  # and nothing else is anywhere
            assert events[0]["end"] <= events[1]["start"]


def test_demo_corpus(tmp_path, speech_wavs):
    """A corpus laid out as tools/demo.sh writes it (category/source/chunk.flac + index.tsv,
    written by the demo's own write_index): four speech chunks, and four music chunks cut from
    two recordings; language is empty for music."""
    from mae_ast.demo.corpus import write_index

    corpus = tmp_path / "corpus"
    chunks = []
    for i in range(8):
        category, language = ("speech", "en" if i % 2 else "de") if i < 4 else ("music", "")
        rel = f"{category}/src{i % 2}/chunk{i}.flac"
        (corpus / rel).parent.mkdir(parents=True, exist_ok=True)
        wav, rate = read_wav(speech_wavs[i]) if category == "speech" else (tone(2.0, 220 * i), 22050)
        sf.write(corpus / rel, wav, rate)
        recording = f"/usr/share/speech{i}.ogg" if i < 4 else f"/usr/share/track{i // 6}.ogg"
        chunks.append(dict(path=rel, category=category, source=f"src{i % 2}", package="p", language=language,
                           file=recording, start=0.0 if i < 4 else 2.0 * (i % 2), seconds=len(wav) / rate))
    write_index(corpus, chunks)
    tool(tmp_path / "tasks" / "category", "--demo-corpus", corpus, "--folds", "3")
    meta, vocabulary, splits = load_task(tmp_path / "tasks" / "category")
    assert vocabulary == [["idx", "label"], ["0", "music"], ["1", "speech"]]
    assert sum(len(s) for s in splits.values()) == 8
    # the chunks of one recording stay in one fold: 6 recordings, 2 per fold
    fold_of = {name: fold for fold, labels in splits.items() for name in labels}
    assert fold_of["music__src0__chunk4.wav"] == fold_of["music__src1__chunk5.wav"]
    assert fold_of["music__src0__chunk6.wav"] == fold_of["music__src1__chunk7.wav"]
    assert fold_of["music__src0__chunk4.wav"] != fold_of["music__src0__chunk6.wav"]
    proc = tool(tmp_path / "tasks" / "language", "--demo-corpus", corpus, "--label-column", "language",
                    "--folds", "3")
    assert "left out 4 of 8 corpus chunks without a language" in proc.stderr
    meta, vocabulary, splits = load_task(tmp_path / "tasks" / "language")
    assert vocabulary == [["idx", "label"], ["0", "de"], ["1", "en"]]
    assert {name: v for s in splits.values() for name, v in s.items()} == {
        "speech__src0__chunk0.wav": ["de"], "speech__src1__chunk1.wav": ["en"],
        "speech__src0__chunk2.wav": ["de"], "speech__src1__chunk3.wav": ["en"]}
    # at most 2 chunks of each label; mixed into 6 event scenes
    tool(tmp_path / "tasks" / "few", "--demo-corpus", corpus, "--max-per-label", "2", "--folds", "3")
    labels = [v[0] for s in load_task(tmp_path / "tasks" / "few")[2].values() for v in s.values()]
    assert sorted(labels) == ["music", "music", "speech", "speech"]
    tool(tmp_path / "tasks" / "events", "--demo-corpus", corpus, "--mix-events", "6", "--duration", "4",
             "--folds", "3")
    meta, vocabulary, splits = load_task(tmp_path / "tasks" / "events")
    assert meta["embedding_type"] == "event" and sum(len(s) for s in splits.values()) == 6
    assert {e["label"] for s in splits.values() for events in s.values() for e in events} == {"music", "speech"}


# ---- bad input ---------------------------------------------------------------------------------
def write_csv(path, text):
    path.write_text(text)
    return path


@pytest.mark.parametrize("rows, expected", [
    ("file,label,start,end\nrec0.wav,beep,0.1,0.5\nmissing.wav,beep,0.1,0.5\n", "events.csv:3: no such file: "),
    ("file,label,start,end\nrec0.wav,beep,0.1,0.5\nrec1.wav,,0.1,0.5\n", "events.csv:3: the label is empty"),
    ("file,label,start,end\nrec0.wav,beep,0.5,0.5\n", "events.csv:2: end 0.5 s is not after start 0.5 s"),
    ("file,label,start,end\nrec0.wav,beep,soon,0.5\n", "events.csv:2: start 'soon' is not a number"),
    ("file,label,start,end\nrec0.wav,beep,-1,0.5\n", "events.csv:2: start '-1' must be a number of seconds"),
    ("file,label,start,end\nrec0.wav,beep,0.1\n", "events.csv:2: expected 4 fields"),
    ("file,label,start,end\nrec0.wav,beep,0.1,0.5\n\nrec0.wav,beep,0.1,0.5\n", "events.csv:4: the same row as line 2"),
    ("file,label,start,end\nrec0.wav,NA,0.1,0.5\n", "events.csv:2: label 'NA' is read as 'missing'"),
    ("file,label,start,end\nrec0.wav,\"be\neep\",0.1,0.5\n", "events.csv:2: label 'be\\neep' holds a line break"),
    ("path,class\nrec0.wav,beep\n", "events.csv:1: expected the header 'file,label'"),
    ("file,label\n", "events.csv:2: no rows after the header"),
    ("file,label\nrec0.wav,\"beep\n", "events.csv:2: the row does not parse as CSV"),
])
def test_bad_label_rows_are_named_with_file_and_line(recordings, tmp_path, rows, expected):
    labels = write_csv(tmp_path / "events.csv", rows)
    out = tmp_path / "tasks" / "t"
    proc = tool(out, "--labels", labels, "--audio-root", recordings, check=False)
    assert proc.returncode == 2, proc.stderr
    assert expected in proc.stderr, proc.stderr
    assert not out.exists() and not (tmp_path / "tasks" / "t.partial").exists()


def test_every_bad_row_is_named_at_once(recordings, tmp_path):
    labels = write_csv(tmp_path / "labels.csv", "file,label\n" + "".join(f"gone{i}.wav,x\n" for i in range(25)))
    proc = run_tool(tmp_path / "t", "--labels", labels, "--audio-root", recordings, check=False)
    assert proc.returncode == 2
    assert "labels.csv:2: no such file" in proc.stderr and "labels.csv:21: no such file" in proc.stderr
    assert "labels.csv:22:" not in proc.stderr and "... and 5 more" in proc.stderr
    assert "make_hear_task.py: error: 25 bad rows in" in proc.stderr


def test_a_named_file_that_cannot_be_decoded_stops_the_tool(recordings, tmp_path):
    (tmp_path / "noise.wav").write_bytes(b"RIFF....WAVEfmt nonsense")
    labels = write_csv(tmp_path / "labels.csv",
                       f"file,label\n{recordings}/rec0.wav,a\n{recordings}/rec1.wav,b\nnoise.wav,a\n")
    proc = tool(tmp_path / "t", "--labels", labels, check=False)
    assert proc.returncode == 2
    assert "labels.csv:4: cannot decode " in proc.stderr and "noise.wav" in proc.stderr


def test_labels_pandas_would_read_back_otherwise_are_refused(recordings, tmp_path):
    rows = "".join(f"rec{i}.wav,{label}\n" for i, label in enumerate(["01", "2", "3", "01"]))
    labels = write_csv(tmp_path / "labels.csv", "file,label\n" + rows)
    proc = tool(tmp_path / "t", "--labels", labels, "--audio-root", recordings, check=False)
    assert proc.returncode == 2 and "'01' would come back as '1'" in proc.stderr
    # plain integers are fine
    labels = write_csv(tmp_path / "labels.csv", "file,label\n" + rows.replace("01", "1"))
    tool(tmp_path / "t", "--labels", labels, "--audio-root", recordings)


def test_too_few_clips_and_bad_flags(recordings, tmp_path):
    labels = write_csv(tmp_path / "labels.csv", "file,label\nrec0.wav,a\nrec1.wav,b\n")
    proc = tool(tmp_path / "t", "--labels", labels, "--audio-root", recordings, check=False)
    assert proc.returncode == 2 and "2 recordings: too few for train, valid and test" in proc.stderr
    proc = tool(tmp_path / "t", "--labels", labels, "--audio-root", recordings, "--folds", "2", check=False)
    assert proc.returncode == 2 and "--folds must be 3 or more" in proc.stderr
    proc = tool(tmp_path / "t", "--audio", recordings, "--audio-root", recordings, check=False)
    assert proc.returncode == 2 and "--audio-root does not apply here" in proc.stderr
    proc = tool(tmp_path / "t", "--demo-corpus", recordings, check=False)
    assert proc.returncode == 2 and "index.tsv: not found" in proc.stderr


def test_an_existing_folder_is_replaced_only_when_asked_and_only_a_task(class_folders, tmp_path):
    out = tmp_path / "task"
    tool(out, "--audio", class_folders, "--valid-percent", "0.25", "--test-percent", "0.25")
    proc = tool(out, "--audio", class_folders, check=False)
    assert proc.returncode == 2 and "exists; give --overwrite" in proc.stderr
    tool(out, "--audio", class_folders, "--folds", "3", "--overwrite")
    assert load_task(out)[0]["splits"] == ["fold00", "fold01", "fold02"]
    assert not (out / "train.json").exists()  # nothing of the old task is left
    mine = tmp_path / "precious"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    proc = tool(mine, "--audio", class_folders, "--overwrite", check=False)
    assert proc.returncode == 2 and "is not a task folder" in proc.stderr
    assert (mine / "notes.txt").read_text() == "keep me"


def test_check_names_what_heareval_would_refuse(class_folders, tmp_path):
    out = tmp_path / "task"
    tool(out, "--audio", class_folders, "--valid-percent", "0.25", "--test-percent", "0.25")
    check = make_hear_task.check_task
    assert check(str(out))["embedding_type"] == "scene"
    valid = json.loads((out / "valid.json").read_text())
    first = sorted(valid)[0]

    (out / "16000" / "valid" / first).rename(tmp_path / "moved.wav")
    with pytest.raises(make_hear_task.TaskError, match=f"16000/valid/{first}: not found"):
        check(str(out))
    (tmp_path / "moved.wav").rename(out / "16000" / "valid" / first)

    (out / "valid.json").write_text(json.dumps(dict(valid, **{first: ["bird"]})))
    with pytest.raises(make_hear_task.TaskError, match="label 'bird' is not in labelvocabulary.csv"):
        check(str(out))
    (out / "valid.json").write_text(json.dumps(dict(valid, **{first: ["speech", "tone"]})))
    with pytest.raises(make_hear_task.TaskError, match="a multiclass task has one label per file"):
        check(str(out))
    (out / "valid.json").write_text(json.dumps(valid))

    wav, rate = sf.read(out / "16000" / "valid" / first)
    sf.write(out / "16000" / "valid" / first, wav[:-1], rate)
    with pytest.raises(make_hear_task.TaskError, match="samples; expected mono, 16000 Hz"):
        check(str(out))
    proc = tool("--check", out, check=False)
    assert proc.returncode == 2 and f"valid/{first}" in proc.stderr


# ---- mae_ast.hear_task, called directly ---------------------------------------------------------
def test_parse_row_and_clips_from_csv_direct(recordings, tmp_path):
    from mae_ast.hear_task import Event, TaskError, clips_from_csv, parse_row
    from mae_ast.labels import InputProblems

    root = str(recordings)
    path, label, event = parse_row([" rec0.wav ", " beep ", "0.25", "1"], ["file", "label", "start", "end"], root)
    assert (path, label, event) == (str(recordings / "rec0.wav"), "beep", Event("beep", 0.25, 1.0))
    assert parse_row(["rec0.wav", "beep"], ["file", "label"], root)[2] is None
    with pytest.raises(TaskError, match="the file is empty"):
        parse_row([" ", "beep"], ["file", "label"], root)
    with pytest.raises(TaskError, match=r"no such file: .* \(a folder\)"):
        parse_row([str(tmp_path), "beep"], ["file", "label"], root)
    csv_path = write_csv(tmp_path / "s.csv", f"file,label\n{recordings}/rec0.wav,beep\n{recordings}/rec0.wav,noise\n"
                                             f"{recordings}/rec1.wav,beep\n")
    clips = clips_from_csv(str(csv_path), None)
    assert [(c.name, c.labels, c.where) for c in clips] == [("rec0", ["beep", "noise"], f"{csv_path}:2"),
                                                            ("rec1", ["beep"], f"{csv_path}:4")]
    bad = write_csv(tmp_path / "b.csv", "".join(["file,label\n"] + [f"gone{i}.wav,x\n" for i in range(3)]))
    with pytest.raises(InputProblems) as err:
        clips_from_csv(str(bad), root)
    assert str(err.value) == f"3 bad rows in {bad} (each is named above); nothing written"
    assert [p.split(": ")[0] for p in err.value.problems] == [f"{bad}:{line}" for line in (2, 3, 4)]


def test_small_pieces():
    from mae_ast.hear_task import label_problem, scene_counts, unique_names, vocabulary_problem

    assert unique_names(["a/b.wav", "a/b.flac", "a__b.wav", ".hidden.wav", "x"]) == \
        ["a__b", "a__b_2", "a__b_3", "hidden", "x"]
    assert scene_counts(10, [5, 3, 2]) == [5, 3, 2] and scene_counts(3, [100, 1, 1]) == [1, 1, 1]
    assert scene_counts(7, [1, 1, 1]) == [3, 2, 2] and sum(scene_counts(11, [7, 3, 9])) == 11
    assert label_problem("dog") is None and label_problem("") == "the label is empty"
    assert "white space" in label_problem(" dog") and "line break" in label_problem("a\rb")
    assert vocabulary_problem(["1", "2", "10"]) is None and vocabulary_problem(["dog", "01"]) is None
    assert "'01' would come back as '1'" in vocabulary_problem(["01", "2"])
    assert "'2' would come back as '2.0'" in vocabulary_problem(["2", "2.5"])


def test_build_direct_with_options_and_log(class_folders, tmp_path):
    from mae_ast.hear_task import TaskOptions, build, check_task

    notes = []
    built = build(TaskOptions(out=str(tmp_path / "t"), name="t", audio=str(class_folders), folds=3,
                              duration=0.5, seed=3), notes.append)
    assert built.folder == str(tmp_path / "t.partial") and built.duration == 0.5
    meta = check_task(built.folder)
    assert meta["splits"] == ["fold00", "fold01", "fold02"] and meta["nfolds"] == 3 and meta["task_name"] == "t"
    assert meta["sample_duration"] == 0.5 and meta["seed"] == 3 and meta["split_mode"] == "new_split_kfold"
    assert built.clips == sum(len(json.loads((tmp_path / "t.partial" / f"{s}.json").read_text()))
                              for s in meta["splits"])
    assert any("directly in" in note for note in notes)  # the loose file the fixture puts in the root
