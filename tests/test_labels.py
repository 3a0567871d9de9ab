"""Labelled manifests: tools/make_manifest.py --labels run as users run it (a subprocess) on real
audio files the tests write, the commands of docs/finetuning.md and of --help, and
mae_ast.labels reading the result back (and refusing bad label files with file and line)."""
import importlib.util
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from conftest import REPO
from mae_ast.labels import LabelError, LabelSet, load_labels, parse_label_list
from mae_ast.manifest import Manifest
from test_manifest import left_out_lines, make_manifest, read_tsv

TOOL = REPO / "tools" / "make_manifest.py"
DOC = REPO / "docs" / "finetuning.md"


def real(path):
    """The path as the tool names it (it resolves links in the audio folder's path)."""
    return Path(os.path.realpath(path))


def write_clip(path, seconds=0.4, rate=16000, freq=440.0):
    """A tone with a little noise, written by soundfile in the format of the extension."""
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * rate)) / rate
    noise = np.random.default_rng(int(freq)).standard_normal(len(t))
    sf.write(path, (0.3 * np.sin(2 * np.pi * freq * t) + 0.01 * noise).astype(np.float32), rate)
    return path


def write_broken(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("not audio, only named like it\n" * 10)
    return path


def outputs(dest, splits=("train", "valid")):
    """{split: {relative path: [label names]}} read back the way training reads it: LabelSet.load,
    Manifest.load and load_labels."""
    label_set = LabelSet.load(str(dest / "labels.csv"))
    result = {}
    for split in splits:
        manifest = Manifest.load(str(dest / f"{split}.tsv"))
        indices = load_labels(str(dest / f"{split}.lbl"), manifest, label_set)
        result[split] = {name: [label_set.names[i] for i in idx] for name, idx in zip(manifest.names, indices)}
    return label_set, result


def merged(splits):
    return {rel: labels for split in splits.values() for rel, labels in split.items()}


# ---- the commands of docs/finetuning.md and of --help -----------------------------------------
ESC50_HEADER = "filename,fold,target,category,esc10,src_file,take"
ESC50_CLASSES = {0: "dog", 10: "rain", 11: "sea_waves"}


def esc50_rows():
    """(filename, fold, category): each class in each of the 5 folds, ESC-50's file naming."""
    return [(f"{fold}-{100 + 7 * fold + target}-A-{target}.wav", str(fold), category)
            for fold in range(1, 6) for target, category in ESC50_CLASSES.items()]


def doc_audioset_csv():
    """The CSV docs/finetuning.md shows (the ```text block with the header file,labels,set)."""
    block = re.search(r"```text\n(file,labels,set\n.*?)```", DOC.read_text(), re.S)
    assert block, "docs/finetuning.md lost its AudioSet CSV example"
    return block.group(1)


SPC_WORDS = ("yes", "no", "right")
SPC_SPEAKERS = ("0a7c2a8d", "bb05582b", "c50f55b8", "e9bc5cc6")
SPC_VALID = ["yes/0a7c2a8d_nohash_0.wav", "no/bb05582b_nohash_0.wav", "right/c50f55b8_nohash_0.wav"]
SPC_TEST = ["yes/e9bc5cc6_nohash_0.wav", "no/0a7c2a8d_nohash_0.wav", "right/e9bc5cc6_nohash_0.wav",
            "right/bb05582b_nohash_0.wav"]


def write_speech_commands(root):
    """A Speech Commands v2 stand-in: word folders of 0.3 s clips, _background_noise_/ (with its
    README.md), LICENSE and README.md at the root, and the two split lists (one with a blank line
    inside and CRLF line ends, one with blank lines at the end). Returns {relative path: split}."""
    split_of = {}
    for w, word in enumerate(SPC_WORDS):
        for k, speaker in enumerate(SPC_SPEAKERS):
            rel = f"{word}/{speaker}_nohash_0.wav"
            write_clip(root / rel, seconds=0.3, freq=300 + 100 * w + 20 * k)
            split_of[rel] = "valid" if rel in SPC_VALID else "test" if rel in SPC_TEST else "train"
    for i in range(2):
        write_clip(root / "_background_noise_" / f"noise{i}.wav", seconds=0.5, freq=900 + 10 * i)
    (root / "_background_noise_" / "README.md").write_text("noise, not a word\n")
    (root / "LICENSE").write_text("CC BY 4.0\n")
    (root / "README.md").write_text("Speech Commands\n")
    (root / "validation_list.txt").write_text("\n".join(SPC_VALID) + "\n\n\n")
    (root / "testing_list.txt").write_bytes(
        "\r\n".join(SPC_TEST[:2] + [""] + SPC_TEST[2:]).encode() + b"\r\n")
    return split_of


@pytest.fixture(scope="module")
def doc_layout(tmp_path_factory):
    """A folder holding what the docs' commands name (clips/, ESC-50/, audioset/ and audioset.csv,
    speech_commands_v0.02/), and what each dest must hold: {dest: {relative path: (labels, split
    or None)}}."""
    cwd = real(tmp_path_factory.mktemp("doc_layout"))
    expected = {"manifests/clips": {}, "manifests/esc50": {}, "manifests/audioset": {}, "manifests/spc2": {}}
    for i, rel in enumerate(["dog/a.wav", "dog/2023/b.flac", "dog/c.wav", "rain/d.flac", "rain/e.wav",
                             "sea waves/f.wav"]):
        write_clip(cwd / "clips" / rel, freq=300 + 50 * i)
        expected["manifests/clips"][rel] = ([rel.split("/")[0]], None)
    write_clip(cwd / "clips" / "unsorted.wav")  # no class folder: no label
    meta = [ESC50_HEADER]
    for i, (filename, fold, category) in enumerate(esc50_rows()):
        write_clip(cwd / "ESC-50" / "audio" / filename, seconds=0.3, rate=44100, freq=200 + 30 * i)
        target = next(t for t, c in ESC50_CLASSES.items() if c == category)
        meta.append(f"{filename},{fold},{target},{category},False,{filename[2:-6]},A")
        split = {"1": "valid", "5": "test"}.get(fold, "train")
        expected["manifests/esc50"][filename] = ([category], split)
    (cwd / "ESC-50" / "meta").mkdir()
    (cwd / "ESC-50" / "meta" / "esc50.csv").write_text("\n".join(meta) + "\n")
    csv_text = doc_audioset_csv()
    (cwd / "audioset.csv").write_text(csv_text)
    for i, line in enumerate(csv_text.splitlines()[1:]):
        rel, rest = line.split(",", 1)
        labels, set_name = rest.rsplit(",", 1)
        write_clip(cwd / "audioset" / rel, freq=500 + 40 * i)
        expected["manifests/audioset"][rel] = (labels.strip('"').split(","), "test" if set_name == "eval" else None)
    for rel, split in write_speech_commands(cwd / "speech_commands_v0.02").items():
        expected["manifests/spc2"][rel] = ([rel.split("/")[0]], split)
    return cwd, expected


def doc_commands():
    """The commands of the doc's "## Labelled manifests" section (the other sections run other tools)."""
    section = re.search(r"^## Labelled manifests\n(.*?)(?=^## |\Z)", DOC.read_text(), re.S | re.M)
    assert section, "docs/finetuning.md lost its '## Labelled manifests' section"
    text = section.group(1).replace("\\\n", " ")
    blocks = re.findall(r"```bash\n(.*?)```", text, re.S)
    return [shlex.split(line) for block in blocks for line in block.splitlines() if line.strip()]


def help_commands():
    text = subprocess.run([sys.executable, str(TOOL), "--help"], capture_output=True, text=True,
                          timeout=120, check=True).stdout
    examples = text.split("examples:", 1)[1].split("\n\n", 1)[0].replace("\\\n", " ")
    return [shlex.split(line) for line in examples.splitlines() if line.strip().startswith("make_manifest.py")]


def test_docs_and_help_show_the_same_labelled_commands():
    docs = doc_commands()
    assert [c[:2] for c in docs] == [["python", "tools/make_manifest.py"]] * 4
    labelled_help = [c for c in help_commands() if "--labels" in c]
    assert labelled_help == [["make_manifest.py", *c[2:]] for c in docs]
    assert {c[c.index("--labels") + 1] for c in docs} == {"folders", "ESC-50/meta/esc50.csv", "audioset.csv"}


@pytest.fixture(scope="module")
def doc_runs(doc_layout):
    """Each command of docs/finetuning.md, run as written in the doc layout: {dest: (command, process)}."""
    cwd, _ = doc_layout
    runs = {}
    for command in doc_commands():
        proc = subprocess.run([sys.executable, str(TOOL), *command[2:]], cwd=cwd, capture_output=True,
                              text=True, timeout=300)
        assert proc.returncode == 0, (command, proc.stdout, proc.stderr)
        runs[command[command.index("--dest") + 1]] = command, proc
    return runs


def test_the_docs_commands_write_what_they_say(doc_layout, doc_runs):
    cwd, expected = doc_layout
    assert sorted(doc_runs) == sorted(expected)
    for dest, (command, proc) in doc_runs.items():
        splits = ("train", "valid", "test") if {"--test-folds", "--test-list"} & set(command) else ("train", "valid")
        label_set, written = outputs(cwd / dest, splits)
        want = expected[dest]
        assert merged(written) == {rel: labels for rel, (labels, _) in want.items()}, dest
        assert label_set.names == sorted({n for labels, _ in want.values() for n in labels})
        for rel, (_, split) in want.items():
            if split:  # the fold decides it
                assert rel in written[split], (dest, rel, split)
            else:
                assert rel in written["train"] or rel in written["valid"]
        assert f"labels.csv: {len(label_set)} labels" in proc.stdout
    # the file outside any class folder is named and counted, not written
    clips = doc_runs["manifests/clips"][1]
    assert f"no label: {cwd / 'clips' / 'unsorted.wav'}: not in a class folder" in clips.stderr
    assert "no label: 1 files, not written" in clips.stdout


def test_esc50_folds_put_whole_folds_in_each_split(doc_layout, doc_runs):
    cwd, _ = doc_layout
    _, written = outputs(cwd / "manifests/esc50", ("train", "valid", "test"))
    folds = {split: sorted({rel.split("-")[0] for rel in rels}) for split, rels in written.items()}
    assert folds == {"train": ["2", "3", "4"], "valid": ["1"], "test": ["5"]}
    assert all(len(rels) == len(ESC50_CLASSES) * len(folds[s]) for s, rels in written.items())
    stdout = doc_runs["manifests/esc50"][1].stdout
    assert re.search(r"test\.tsv: 3 files, [\d.]+ h, 3 labels", stdout), stdout


# ---- Speech Commands: split lists, excluded folders -------------------------------------------
def spc_split(split):
    return {rel: [rel.split("/")[0]] for rel in (SPC_VALID if split == "valid" else SPC_TEST if split == "test"
                                                 else sorted(set(spc_all()) - set(SPC_VALID) - set(SPC_TEST)))}


def spc_all():
    return [f"{word}/{speaker}_nohash_0.wav" for word in SPC_WORDS for speaker in SPC_SPEAKERS]


def test_speech_commands_lists_decide_the_split(doc_layout, doc_runs):
    """The README's command: the lists decide valid and test exactly, _background_noise_ is
    excluded (counted as such, not as unlabelled), the rest is train."""
    cwd, _ = doc_layout
    label_set, written = outputs(cwd / "manifests/spc2", ("train", "valid", "test"))
    assert written == {split: spc_split(split) for split in ("train", "valid", "test")}
    assert label_set.names == ["no", "right", "yes"]
    proc = doc_runs["manifests/spc2"][1]
    root = cwd / "speech_commands_v0.02"
    assert f"12 files found under {root}\n" in proc.stdout
    assert "excluded: 2 files (_background_noise_/: 2; --exclude-folders)" in proc.stdout
    assert ("split lists: valid.tsv <- speech_commands_v0.02/validation_list.txt (3 files named), "
            "test.tsv <- speech_commands_v0.02/testing_list.txt (4 files named); every other file goes to "
            "train.tsv") in proc.stdout
    assert re.search(r"train\.tsv: 5 files, [\d.]+ h, 3 labels", proc.stdout), proc.stdout
    assert "no label" not in proc.stdout + proc.stderr and "_background_noise_" not in proc.stderr
    # the excluded folder's README.md is not counted among the other files; the root's are
    assert "4 other files ignored (extensions: .txt 2, (none) 1, .md 1)" in proc.stdout, proc.stdout
    assert "left out: 0" in proc.stdout


def write_lists(folder, valid=None, test=None):
    """Split list files in ``folder``; returns the flags naming them."""
    flags = []
    for flag, name, lines in (("--valid-list", "validation_list.txt", valid),
                              ("--test-list", "testing_list.txt", test)):
        if lines is not None:
            (folder / name).write_text("".join(line + "\n" for line in lines))
            flags += [flag, folder / name]
    return flags


BAD_LIST_LINES = [  # (line of the valid list, words of the message or None for a good or blank line)
    ("yes/0a7c2a8d_nohash_0.wav", None),
    ("", None),
    ("yes/ffffffff_nohash_0.wav", "no such file: {root}/yes/ffffffff_nohash_0.wav"),
    ("_background_noise_/noise0.wav", "'_background_noise_/noise0.wav' is in _background_noise_/, "
                                      "which --exclude-folders leaves out"),
    ("yes", "'yes' is a folder, not an audio file"),
    ("../outside.wav", "'../outside.wav' is outside the audio folder"),
    ("README.md", "'README.md' is not an audio file of --ext (.md)"),
    ("   ", None),
    (" yes/0a7c2a8d_nohash_0.wav ", "'yes/0a7c2a8d_nohash_0.wav' is already named on line 1"),
]


def test_each_bad_list_line_is_named_with_list_and_line(tmp_path, doc_layout):
    cwd, _ = doc_layout
    root = cwd / "speech_commands_v0.02"
    flags = write_lists(tmp_path, valid=[line for line, _ in BAD_LIST_LINES], test=["no/0a7c2a8d_nohash_0.wav"])
    proc = make_manifest(root, tmp_path / "m", "--labels", "folders", "--exclude-folders", "_background_noise_",
                         *flags, check=False)
    assert proc.returncode == 2, proc.stderr
    valid_list = tmp_path / "validation_list.txt"
    lines = proc.stderr.splitlines()
    bad = [(n, words) for n, (_, words) in enumerate(BAD_LIST_LINES, start=1) if words]
    for n, words in bad:
        named = [line for line in lines if line.startswith(f"{valid_list}:{n}: ")]
        assert len(named) == 1 and words.format(root=root) in named[0], (n, words, proc.stderr)
    assert len(lines) == len(bad) + 1 and not any(str(tmp_path / "testing_list.txt") in line for line in lines)
    assert lines[-1] == f"make_manifest.py: error: {len(bad)} lines of {valid_list} cannot be used " \
                        "(each is named above); no manifest written"
    assert not list((tmp_path / "m").iterdir()) and "files/s" not in proc.stderr  # stopped before decoding


def test_a_file_in_both_lists_is_refused_naming_both_lines(tmp_path, doc_layout):
    cwd, _ = doc_layout
    flags = write_lists(tmp_path, valid=["no/bb05582b_nohash_0.wav", "yes/0a7c2a8d_nohash_0.wav"],
                        test=["right/e9bc5cc6_nohash_0.wav", "", "./yes/0a7c2a8d_nohash_0.wav"])
    proc = make_manifest(cwd / "speech_commands_v0.02", tmp_path / "m", "--labels", "folders",
                         "--exclude-folders", "_background_noise_", *flags, check=False)
    assert proc.returncode == 2, proc.stderr
    test_list, valid_list = tmp_path / "testing_list.txt", tmp_path / "validation_list.txt"
    assert proc.stderr == (f"{test_list}:3: './yes/0a7c2a8d_nohash_0.wav' is also named in {valid_list}:2; "
                           "a file goes to one split\n"
                           f"make_manifest.py: error: 1 lines of {test_list} cannot be used (each is named above); "
                           "no manifest written\n")
    assert not list((tmp_path / "m").iterdir())


def test_a_list_of_blank_lines_and_a_missing_list_are_refused(tmp_path, doc_layout):
    cwd, _ = doc_layout
    root = cwd / "speech_commands_v0.02"
    flags = write_lists(tmp_path, test=["", "  "])
    proc = make_manifest(root, tmp_path / "m", *flags, check=False)
    assert proc.returncode == 2
    assert f"{tmp_path / 'testing_list.txt'}: names no file (every line is blank)" in proc.stderr
    proc = make_manifest(root, tmp_path / "m", "--valid-list", tmp_path / "nope.txt", check=False)
    assert proc.returncode == 2
    assert proc.stderr == f"make_manifest.py: error: --valid-list {tmp_path / 'nope.txt'}: no such file\n"


def test_an_excluded_folder_that_does_not_exist_is_refused(tmp_path, doc_layout):
    cwd, _ = doc_layout
    root = cwd / "speech_commands_v0.02"
    proc = make_manifest(root, tmp_path / "m", "--labels", "folders", "--exclude-folders", "_background_noise",
                         check=False)
    assert proc.returncode == 2
    assert proc.stderr == (f"make_manifest.py: error: --exclude-folders: no folder named '_background_noise' in "
                           f"{root} (its folders: '_background_noise_', 'no', 'right', 'yes')\n")


def test_test_list_alone_without_labels_draws_valid_at_random(tmp_path, doc_layout):
    """Pre-training manifests may follow a list too; --valid-percent then draws valid.tsv from the rest."""
    cwd, _ = doc_layout
    root = cwd / "speech_commands_v0.02"
    flags = write_lists(tmp_path, test=SPC_TEST)
    proc = make_manifest(root, tmp_path / "m", "--exclude-folders", "_background_noise_", "--valid-percent", 0.5,
                         *flags)
    rows = {split: [rel for rel, _ in read_tsv(tmp_path / "m" / f"{split}.tsv")[1]] for split in ("train", "valid",
                                                                                                  "test")}
    assert sorted(rows["test"]) == sorted(SPC_TEST)
    assert sorted(rows["train"] + rows["valid"]) == sorted(set(spc_all()) - set(SPC_TEST))
    assert rows["train"] and rows["valid"]
    assert not list((tmp_path / "m").glob("*.lbl")) and not (tmp_path / "m" / "labels.csv").exists()
    assert "excluded: 2 files" in proc.stdout


def test_split_lists_with_a_csv_without_folds(tmp_path, csv_audio):
    (tmp_path / "meta.csv").write_text("file,label\na.wav,cat\nb.wav,dog\nc.flac,cat\nd.wav,dog\n"
                                       "sub/e.wav,bird\ng.wav,cat\n")
    flags = write_lists(tmp_path, valid=["b.wav", "sub/e.wav"], test=["c.flac"])
    proc = make_manifest(csv_audio, tmp_path / "m", *csv_args(tmp_path / "meta.csv"), *flags)
    label_set, written = outputs(tmp_path / "m", ("train", "valid", "test"))
    assert written == {"train": {"a.wav": ["cat"], "d.wav": ["dog"], "g.wav": ["cat"]},
                       "valid": {"b.wav": ["dog"], "sub/e.wav": ["bird"]}, "test": {"c.flac": ["cat"]}}
    assert label_set.names == ["bird", "cat", "dog"]
    assert "excluded" not in proc.stdout
    # a CSV row naming a file of an excluded folder is named like any bad row
    proc = make_manifest(csv_audio, tmp_path / "m2", *csv_args(tmp_path / "meta.csv"), *flags,
                         "--exclude-folders", "sub", check=False)
    assert proc.returncode == 2
    assert f"{tmp_path / 'meta.csv'}:6: 'sub/e.wav' is in sub/, which --exclude-folders leaves out" in proc.stderr


# ---- class folders ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def folders_run(tmp_path_factory):
    """Class folders with a broken and a too-short file inside them, and files outside."""
    root = real(tmp_path_factory.mktemp("classes"))
    good = {"bird/a.wav": "bird", "bird/deep/er/b.flac": "bird", "car/c.wav": "car", "car/d.ogg": "car",
            "car/e.wav": "car", "  wind  /f.wav": "wind", "zebra crossing/g.flac": "zebra crossing"}
    for i, rel in enumerate(good):
        write_clip(root / rel, freq=250 + 60 * i)
    write_broken(root / "bird" / "broken.wav")
    write_clip(root / "car" / "short.wav", seconds=0.05)
    write_clip(root / "loose.wav")
    write_clip(root / "loose2.flac")
    (root / "car" / "notes.txt").write_text("not audio")
    out = tmp_path_factory.mktemp("folders_out")
    one = make_manifest(root, out / "jobs1", "--labels", "folders", "--valid-percent", 0.3, "--seed", 3)
    two = make_manifest(root, out / "jobs2", "--labels", "folders", "--valid-percent", 0.3, "--seed", 3,
                        "--jobs", 2)
    return root, good, out, one, two


def test_folders_label_each_file_by_its_top_folder(folders_run):
    root, good, out, proc, _ = folders_run
    label_set, written = outputs(out / "jobs1")
    assert merged(written) == {rel: [name] for rel, name in good.items()}
    # sorted, deterministic; a label only in valid.tsv is there too; white space stripped
    assert label_set.names == ["bird", "car", "wind", "zebra crossing"]
    assert (out / "jobs1" / "labels.csv").read_text() == "index,name\n0,bird\n1,car\n2,wind\n3,zebra crossing\n"
    assert written["valid"] and written["train"]


def test_folders_broken_and_unlabelled_files_are_named_and_lbl_stays_aligned(folders_run):
    root, good, out, proc, _ = folders_run
    lines = left_out_lines(proc.stderr)
    assert len(lines) == 2 and any("broken.wav" in line for line in lines)
    assert any("short.wav: too short" in line for line in lines), lines
    for name in ("loose.wav", "loose2.flac"):
        assert f"no label: {root / name}: not in a class folder" in proc.stderr
    assert "no label: 2 files, not written (not in a class folder" in proc.stdout
    assert "11 files found" in proc.stdout and re.search(r"left out: 2\b", proc.stdout)
    for split in ("train", "valid"):  # line for line: .lbl line k is the .tsv line k+1's
        _, rows = read_tsv(out / "jobs1" / f"{split}.tsv")
        lbl = (out / "jobs1" / f"{split}.lbl").read_text().splitlines()
        assert lbl == [good[rel] for rel, _ in rows]


def test_folders_jobs_2_writes_the_same_files(folders_run):
    _, _, out, one, two = folders_run
    for name in ("train.tsv", "train.lbl", "valid.tsv", "valid.lbl", "labels.csv"):
        assert (out / "jobs2" / name).read_bytes() == (out / "jobs1" / name).read_bytes(), name
    assert two.stdout == one.stdout


def test_folder_name_with_a_comma_is_refused(tmp_path):
    write_clip(tmp_path / "audio" / "cats,dogs" / "a.wav")
    write_clip(tmp_path / "audio" / "birds" / "b.wav")
    proc = make_manifest(tmp_path / "audio", tmp_path / "m", "--labels", "folders", check=False)
    assert proc.returncode == 2, proc.stderr
    assert f"{tmp_path / 'audio' / 'cats,dogs'}: class folder cannot be a label: label 'cats,dogs' holds a comma" \
        in proc.stderr
    assert not (tmp_path / "m" / "train.tsv").exists() and not (tmp_path / "m" / "labels.csv").exists()


def test_no_labelled_file_at_all_fails(tmp_path):
    write_clip(tmp_path / "audio" / "a.wav")
    proc = make_manifest(tmp_path / "audio", tmp_path / "m", "--labels", "folders", check=False)
    assert proc.returncode == 1
    assert "error: none of the 1 audio files" in proc.stderr and "no label:" in proc.stderr
    assert not (tmp_path / "m" / "train.tsv").exists()


# ---- CSV with string folds, multi-label cells -------------------------------------------------
@pytest.fixture(scope="module")
def csv_audio(tmp_path_factory):
    root = real(tmp_path_factory.mktemp("csv_audio"))
    for i, rel in enumerate(["a.wav", "b.wav", "c.flac", "d.wav", "sub/e.wav", "sub/deeper/f.flac", "g.wav",
                             "unlisted.wav", "sub/unlisted2.flac"]):
        write_clip(root / rel, freq=320 + 45 * i)
    write_broken(root / "broken.wav")
    (root / "notes.txt").write_text("not audio")
    return root


STRING_FOLDS_CSV = """\
path , split,label
a.wav,fold A,cat
b.wav,fold B,dog
c.flac,holdout,cat
d.wav,fold A ,dog
sub/e.wav,fold B,bird
broken.wav,fold A,cat
sub/deeper/f.flac,holdout,owl
g.wav,fold A,cat
"""


def test_csv_with_string_folds(tmp_path, csv_audio):
    (tmp_path / "meta.csv").write_text(STRING_FOLDS_CSV)
    proc = make_manifest(csv_audio, tmp_path / "m", "--labels", tmp_path / "meta.csv", "--path-column", "path",
                         "--label-column", "label", "--fold-column", "split", "--valid-folds", "fold B",
                         "--test-folds", "holdout")
    label_set, written = outputs(tmp_path / "m", ("train", "valid", "test"))
    assert written == {"train": {"a.wav": ["cat"], "d.wav": ["dog"], "g.wav": ["cat"]},
                       "valid": {"b.wav": ["dog"], "sub/e.wav": ["bird"]},
                       "test": {"c.flac": ["cat"], "sub/deeper/f.flac": ["owl"]}}
    assert label_set.names == ["bird", "cat", "dog", "owl"]  # owl: only in test.tsv
    assert "note: 2 labels have no clip in train.tsv: bird, owl" in proc.stdout
    # a named file that does not decode is left out as usual; the .lbl goes with it
    assert any(line.startswith(f"left out: {csv_audio / 'broken.wav'}: ") for line in left_out_lines(proc.stderr))
    for rel in ("unlisted.wav", "sub/unlisted2.flac"):
        assert f"no label: {csv_audio / rel}: no row of {tmp_path / 'meta.csv'} names it" in proc.stderr
    assert "no label: 2 files, not written" in proc.stdout


def test_csv_test_folds_with_a_random_valid_split(tmp_path, csv_audio):
    (tmp_path / "meta.csv").write_text(STRING_FOLDS_CSV)
    args = ["--labels", tmp_path / "meta.csv", "--path-column", "path", "--label-column", "label",
            "--fold-column", "split", "--test-folds", "holdout", "--valid-percent", 0.5]
    make_manifest(csv_audio, tmp_path / "m", *args)
    _, written = outputs(tmp_path / "m", ("train", "valid", "test"))
    assert sorted(written["test"]) == ["c.flac", "sub/deeper/f.flac"]
    assert sorted({**written["train"], **written["valid"]}) == ["a.wav", "b.wav", "d.wav", "g.wav", "sub/e.wav"]
    assert written["valid"] and written["train"]
    make_manifest(csv_audio, tmp_path / "again", *args)
    for name in ("train.tsv", "valid.lbl", "test.lbl", "labels.csv"):
        assert (tmp_path / "again" / name).read_text() == (tmp_path / "m" / name).read_text()


def test_audioset_style_multi_label_cells(tmp_path, csv_audio):
    (tmp_path / "as.csv").write_text(
        'file,positive_labels,set\n'
        'a.wav,"/m/09x0r,/m/05zppz",balanced\n'
        'b.wav," /m/09x0r , /m/0jbk ",balanced\n'   # white space around names is stripped
        'c.flac,/m/07q6cd_,balanced\n'
        'sub/e.wav,"/m/068hy,/m/0bt9lr,/m/0jbk",eval\n'
        'sub/deeper/f.flac,"/m/zz_only_eval,/m/09x0r",eval\n')
    make_manifest(csv_audio, tmp_path / "m", "--labels", tmp_path / "as.csv", "--path-column", "file",
                  "--label-column", "positive_labels", "--fold-column", "set", "--test-folds", "eval",
                  "--valid-percent", 0)
    label_set, written = outputs(tmp_path / "m", ("train", "valid", "test"))
    assert written["train"] == {"a.wav": ["/m/09x0r", "/m/05zppz"], "b.wav": ["/m/09x0r", "/m/0jbk"],
                                "c.flac": ["/m/07q6cd_"]}
    assert written["test"] == {"sub/e.wav": ["/m/068hy", "/m/0bt9lr", "/m/0jbk"],
                               "sub/deeper/f.flac": ["/m/zz_only_eval", "/m/09x0r"]}
    assert written["valid"] == {}
    assert label_set.names == sorted(["/m/09x0r", "/m/05zppz", "/m/0jbk", "/m/07q6cd_", "/m/068hy", "/m/0bt9lr",
                                      "/m/zz_only_eval"])
    assert (tmp_path / "m" / "train.lbl").read_text() == "/m/09x0r,/m/05zppz\n/m/09x0r,/m/0jbk\n/m/07q6cd_\n"


# ---- bad CSV rows: named with file and line, nothing written ----------------------------------
BAD_ROWS = [  # (row, words of the message); the header is line 1, these lines 3..
    ("nowhere.wav,1,cat", "no such file: {root}/nowhere.wav"),
    ("b.wav,1,", "column 'label': no label"),
    ('c.flac,1,"cat,,dog"', "column 'label': empty label name in 'cat,,dog'"),
    ('d.wav,1,"cat,cat"', "label 'cat' given twice"),
    ("a.wav,2,dog", "'a.wav' is already named on line 2"),
    ("g.wav,,cat", "column 'fold': the fold is empty"),
    ("sub/e.wav,1,cat,extra", "4 cells, the header has 3"),
    ("../outside.wav,1,cat", "is outside the audio folder"),
    ("sub,1,cat", "'sub' is a folder, not an audio file"),
    ("notes.txt,1,cat", "'notes.txt' is not an audio file of --ext (.txt)"),
]


def csv_args(csv_path, *extra):
    return ["--labels", csv_path, "--path-column", "file", "--label-column", "label", *extra]


def test_each_bad_csv_row_is_named_with_file_and_line(tmp_path, csv_audio):
    csv_path = tmp_path / "bad.csv"
    csv_path.write_text("file,fold,label\na.wav,1,cat\n" + "".join(row + "\n" for row, _ in BAD_ROWS))
    proc = make_manifest(csv_audio, tmp_path / "m", *csv_args(csv_path, "--fold-column", "fold",
                                                              "--valid-folds", "1"), check=False)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.splitlines()
    for line_number, (_, words) in enumerate(BAD_ROWS, start=3):
        named = [line for line in lines if line.startswith(f"{csv_path}:{line_number}: ")]
        assert len(named) == 1 and words.format(root=csv_audio) in named[0], (line_number, words, proc.stderr)
    assert lines[-1] == f"make_manifest.py: error: {len(BAD_ROWS)} rows of {csv_path} cannot be used " \
                        "(each is named above); no manifest written"
    assert not (tmp_path / "m" / "train.tsv").exists() and "files/s" not in proc.stderr  # stopped before decoding


def test_skip_missing_leaves_out_rows_of_absent_files_naming_each(tmp_path, csv_audio):
    """AudioSet downloads lack some clips: --skip-missing names each such row and counts them;
    every other bad row still stops the tool."""
    csv_path = tmp_path / "as.csv"
    csv_path.write_text("file,label\na.wav,cat\ngone.wav,dog\nb.wav,dog\nsub/gone.flac,cat\n")
    proc = make_manifest(csv_audio, tmp_path / "m", *csv_args(csv_path, "--skip-missing", "--valid-percent", 0))
    assert f"missing, left out (--skip-missing): {csv_path}:3: no such file: {csv_audio / 'gone.wav'}" in proc.stderr
    assert f"{csv_path}:5: no such file: {csv_audio / 'sub' / 'gone.flac'}" in proc.stderr
    assert f"missing: 2 rows of {csv_path} name files that do not exist" in proc.stdout
    _, written = outputs(tmp_path / "m")
    assert written["train"] == {"a.wav": ["cat"], "b.wav": ["dog"]}
    # without the flag the same CSV stops the tool
    assert make_manifest(csv_audio, tmp_path / "n", *csv_args(csv_path), check=False).returncode == 2
    # a bad row of another kind is not skipped
    csv_path.write_text("file,label\na.wav,cat\ngone.wav,dog\nb.wav,\n")
    proc = make_manifest(csv_audio, tmp_path / "o", *csv_args(csv_path, "--skip-missing"), check=False)
    assert proc.returncode == 2 and f"{csv_path}:4: column 'label'" in proc.stderr


@pytest.mark.parametrize("text,line,words", [
    ('file,label\na.wav,cat\nb.wav,"cat\nc.flac,dog\nd.wav,dog\n', 3, "unexpected end of data"),  # never closed
    ('file,label\na.wav,cat\nb.wav,"cat"x\n', 3, "',' expected after '\"'"),
    ('file,label\n"a.wav,cat\nb.wav,"dog"\n', 2, "expected after"),
])
def test_a_row_that_does_not_parse_is_named(tmp_path, csv_audio, text, line, words):
    csv_path = tmp_path / "bad.csv"
    csv_path.write_text(text)
    proc = make_manifest(csv_audio, tmp_path / "m", *csv_args(csv_path), check=False)
    assert proc.returncode == 2
    assert proc.stderr.startswith(f"make_manifest.py: error: {csv_path}:{line}: the row does not parse as CSV ("), \
        proc.stderr
    assert words in proc.stderr and "unbalanced quote" in proc.stderr
    assert not (tmp_path / "m" / "train.tsv").exists()


def test_rows_after_a_quoted_line_break_keep_their_line_numbers(tmp_path, csv_audio):
    """A quoted cell may hold a line break (a note column); errors name the line a row starts on."""
    csv_path = tmp_path / "notes.csv"
    csv_path.write_text('file,label,note\na.wav,cat,"recorded\nat night"\nnowhere.wav,dog,x\n'
                        'gone.wav,cat,"two\nlines"\nb.wav,"cat\ndog",x\n')
    proc = make_manifest(csv_audio, tmp_path / "m", *csv_args(csv_path), check=False)
    assert proc.returncode == 2
    assert f"{csv_path}:4: no such file: {csv_audio / 'nowhere.wav'}" in proc.stderr, proc.stderr
    assert f"{csv_path}:5: no such file: {csv_audio / 'gone.wav'}" in proc.stderr
    assert f"{csv_path}:7: column 'label': label 'cat\\ndog' holds a line break" in proc.stderr
    assert "3 rows of" in proc.stderr  # a.wav's row is fine


def test_csv_that_is_not_utf8_is_named_with_its_line(tmp_path, csv_audio):
    csv_path = tmp_path / "latin1.csv"
    csv_path.write_bytes("file,label\na.wav,cat\nb.wav,caf\u00e9\n".encode("latin-1"))
    proc = make_manifest(csv_audio, tmp_path / "m", *csv_args(csv_path), check=False)
    assert proc.returncode == 2
    assert proc.stderr.startswith(f"make_manifest.py: error: {csv_path}:3: not UTF-8 text"), proc.stderr


def test_missing_column_and_unknown_fold_are_refused(tmp_path, csv_audio):
    (tmp_path / "meta.csv").write_text(STRING_FOLDS_CSV)
    proc = make_manifest(csv_audio, tmp_path / "m", "--labels", tmp_path / "meta.csv", "--path-column", "filename",
                         "--label-column", "label", check=False)
    assert proc.returncode == 2
    assert proc.stderr == (f"make_manifest.py: error: {tmp_path / 'meta.csv'}:1: no column named 'filename' "
                           "(--path-column); the header's columns are 'path', 'split', 'label'\n")
    proc = make_manifest(csv_audio, tmp_path / "m", "--labels", tmp_path / "meta.csv", "--path-column", "path",
                         "--label-column", "label", "--fold-column", "split", "--valid-folds", "fold C", check=False)
    assert proc.returncode == 2
    assert f"--valid-folds: no row of {tmp_path / 'meta.csv'} has fold 'fold C' " \
           "(the fold values of its rows: 'fold A', 'fold B', 'holdout')" in proc.stderr


def load_tool():
    spec = importlib.util.spec_from_file_location("make_manifest_tool", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("args,words", [
    (["--path-column", "f"], "--path-column needs --labels FILE.csv"),
    (["--labels", "folders", "--fold-column", "fold"], "--fold-column needs --labels FILE.csv"),
    (["--labels", "x.csv", "--path-column", "f"], "--labels x.csv needs --label-column"),
    (["--labels", "x.csv", "--path-column", "f", "--label-column", "l", "--fold-column", "k"],
     "--fold-column needs --valid-folds, --test-folds or both"),
    (["--labels", "x.csv", "--path-column", "f", "--label-column", "l", "--valid-folds", "1"],
     "--valid-folds and --test-folds need --fold-column"),
    (["--labels", "x.csv", "--path-column", "f", "--label-column", "l", "--fold-column", "k",
      "--valid-folds", "1", "--valid-percent", "0.1"], "give --valid-folds or --valid-percent, not both"),
    (["--labels", "x.csv", "--path-column", "f", "--label-column", "l", "--fold-column", "k",
      "--valid-folds", "1,2", "--test-folds", "2"], "fold '2' is in both --valid-folds and --test-folds"),
    (["--labels", "folders", "--valid-list", "v.txt", "--valid-percent", "0.1"],
     "give --valid-list or --valid-percent, not both (each chooses valid.tsv)"),
    (["--labels", "x.csv", "--path-column", "f", "--label-column", "l", "--fold-column", "k",
      "--test-folds", "5", "--test-list", "t.txt"], "give --test-list or --fold-column, not both (each decides"),
    (["--labels", "x.csv", "--path-column", "f", "--label-column", "l", "--fold-column", "k",
      "--valid-folds", "1", "--valid-list", "v.txt", "--test-list", "t.txt"],
     "give --valid-list or --fold-column, not both"),
    (["--labels", "folders", "--valid-list", "v.txt", "--valid-folds", "1"],
     "--valid-folds and --test-folds need --fold-column"),
    (["--valid-list", "lists.txt", "--test-list", "./lists.txt"],
     "--valid-list and --test-list are the same file (lists.txt)"),
    (["--labels", "folders", "--exclude-folders", "yes/_noise"],
     "--exclude-folders takes names of folders directly in the audio folder, not paths: 'yes/_noise'"),
    (["--exclude-folders", " , "], "--exclude-folders needs one or more folder names"),
])
def test_label_flags_that_contradict_are_refused(capsys, args, words):
    tool = load_tool()
    with pytest.raises(SystemExit) as exit_:
        tool.parse_args(["audio", "--dest", "m", *args])
    assert exit_.value.code == 2
    assert f"error: {words}" in capsys.readouterr().err


@pytest.mark.parametrize("args,valid_percent,excluded", [
    (["--labels", "folders", "--test-list", "t.txt", "--valid-percent", "0.2"], 0.2, []),
    (["--labels", "folders", "--test-list", "t.txt"], 0.01, []),
    (["--labels", "x.csv", "--path-column", "f", "--label-column", "l", "--valid-list", "v.txt"], 0.0, []),
    (["--valid-list", "v.txt", "--test-list", "t.txt", "--exclude-folders", " _a_ ,b,"], 0.0, ["_a_", "b"]),
])
def test_split_list_flags_that_agree_are_accepted(args, valid_percent, excluded):
    parsed = load_tool().parse_args(["audio", "--dest", "m", *args])
    assert parsed.valid_percent == valid_percent  # a valid list draws nothing at random by default
    assert parsed.exclude_folders == excluded


# ---- mae_ast.labels: the loader at training start ---------------------------------------------
def test_label_set_round_trip(tmp_path):
    names = ["/m/09x0r", 'say "hi"', '"quoted" first', "caf\u00e9 au lait", "x;y", "tab\tinside", "0"]
    label_set = LabelSet(str(tmp_path / "labels.csv"), names)
    label_set.write(label_set.path)
    again = LabelSet.load(label_set.path)
    assert again == label_set and again.names == names and len(again) == 7
    assert again.index('say "hi"') == 1 and again.index("0") == 6
    with pytest.raises(LabelError, match=re.escape(f"unknown label 'nope': it is not in {label_set.path}")):
        again.index("nope")


@pytest.mark.parametrize("names,words", [
    (["a,b"], "holds a comma"), (["a\nb"], "line break"), ([" a"], "white space"), ([""], "empty"),
    (["a", "b", "a"], "label 'a' is both index 0 and 2"),
])
def test_label_set_refuses_names_it_could_not_read_back(tmp_path, names, words):
    with pytest.raises(LabelError, match=re.escape(words)):
        LabelSet(str(tmp_path / "labels.csv"), names)


@pytest.mark.parametrize("text,line,words", [
    ("", 1, "empty file"),
    ("id,label\n0,a\n", 1, "expected the header 'index,name'"),
    ("index,name\n", 2, "no labels after the header"),
    ("index,name\n0,a\n2,b\n", 3, "index '2', expected 1"),
    ("index,name\n0,a\n1,b\n2,a\n", 4, "label 'a' is already on line 2"),
    ("index,name\n0,a\n1,b,c\n", 3, "expected 'index,name', got 3 fields"),
    ('index,name\n0,a\n1,"b,c"\n', 3, "holds a comma"),
    ('index,name\n0,a\n1,"b\n2,c\n', 3, "does not parse as CSV"),
    ("index,name\n0,\n", 2, "the label is empty"),
])
def test_label_set_load_errors_name_file_and_line(tmp_path, text, line, words):
    path = tmp_path / "labels.csv"
    path.write_text(text)
    with pytest.raises(LabelError) as err:
        LabelSet.load(str(path))
    assert str(err.value).startswith(f"{path}:{line}: ") and words in str(err.value), str(err.value)


def test_label_set_missing_file(tmp_path):
    with pytest.raises(LabelError, match=re.escape(f"{tmp_path / 'labels.csv'}: label set not found")):
        LabelSet.load(str(tmp_path / "labels.csv"))


@pytest.fixture
def small_manifest(tmp_path):
    """A .tsv with a clip too short for min_size=1000 on line 3, its labels and label set."""
    tsv = tmp_path / "train.tsv"
    tsv.write_text("/data\na.flac\t16000\nshort.flac\t100\nsub/b.wav\t32000\nc.mkv\t20000\n")
    label_set = LabelSet(str(tmp_path / "labels.csv"), ["bird", "car", "dog"])
    label_set.write(label_set.path)
    return tsv, label_set


def test_load_labels_picks_the_lines_of_the_clips_the_manifest_kept(small_manifest):
    tsv, label_set = small_manifest
    lbl = tsv.with_suffix(".lbl")
    lbl.write_text("dog\n???\n bird , car \r\ncar\n")  # line 2's clip is too short: never read
    manifest = Manifest.load(str(tsv), min_size=1000)
    assert manifest.names == ["a.flac", "sub/b.wav", "c.mkv"]
    assert load_labels(str(lbl), manifest, label_set) == [[2], [0, 1], [1]]
    lbl.write_text("dog\n???\nbird\ncar")  # no newline after the last line: it still counts
    assert load_labels(str(lbl), manifest, label_set) == [[2], [0], [1]]
    label_set.write(label_set.path)
    assert open(label_set.path, "rb").read() == b"index,name\n0,bird\n1,car\n2,dog\n"  # plain \n lines


@pytest.mark.parametrize("text,line,words", [
    ("dog\nbird\ncar\n", 4, "3 label lines, but {tsv} has 4 entry lines"),
    ("dog\nbird\ncar\ndog\nbird\n", 5, "5 label lines, but {tsv} has 4 entry lines"),
    ("dog\nbird\nbird,cow\ncar\n", 3, "unknown label 'cow': it is not in {labels} (3 labels) "
                                      "(labels of {tsv} line 4)"),
    ("dog\nbird\n\ncar\n", 3, "no label (the line or cell is empty)"),
    ("dog\nbird\nbird,,car\ncar\n", 3, "empty label name"),
])
def test_load_labels_errors_name_file_and_line(small_manifest, text, line, words):
    tsv, label_set = small_manifest
    lbl = tsv.with_suffix(".lbl")
    lbl.write_text(text)
    with pytest.raises(LabelError) as err:
        load_labels(str(lbl), Manifest.load(str(tsv), min_size=1000), label_set)
    msg = str(err.value)
    assert msg.startswith(f"{lbl}:{line}: "), msg
    assert words.format(tsv=tsv, labels=label_set.path) in msg, msg
    if "label lines" in words:
        assert msg.endswith("(the .lbl needs one line per .tsv line after the root); make both again with "
                            "tools/make_manifest.py --labels ..."), msg


def test_load_labels_missing_file(small_manifest):
    tsv, label_set = small_manifest
    with pytest.raises(LabelError, match="label file not found .make it with tools/make_manifest.py --labels"):
        load_labels(str(tsv.with_suffix(".lbl")), Manifest.load(str(tsv)), label_set)


def test_parse_label_list():
    assert parse_label_list(" /m/a , /m/b ") == ["/m/a", "/m/b"]
    for bad in ("", "  ", "a,", ",a", "a,,b", "a,a"):
        with pytest.raises(LabelError):
            parse_label_list(bad)


# ---- mae_ast.label_sources and the shared input checks, called directly ------------------------
def test_input_problems_show_twenty_then_how_many_more():
    from mae_ast.labels import InputProblems

    many = InputProblems([f"f.csv:{i}: bad" for i in range(25)], "rows of f.csv cannot be used", "no manifest written")
    assert str(many) == "25 rows of f.csv cannot be used (each is named above); no manifest written"
    assert many.shown() == [f"f.csv:{i}: bad" for i in range(20)] + ["... and 5 more"]
    few = InputProblems(["a", "b"], "bad rows", "nothing written")
    assert few.shown() == ["a", "b"] and str(few) == "2 bad rows (each is named above); nothing written"
    assert InputProblems(["x"] * 20, "w", "c").shown() == ["x"] * 20  # exactly the limit: no "more" line
    assert InputProblems(["x"] * 21, "w", "c").shown() == ["x"] * 20 + ["... and 1 more"]


def test_read_label_csv_names_an_empty_file(tmp_path):
    from mae_ast.labels import read_label_csv

    (tmp_path / "e.csv").write_text("\n\n")
    with pytest.raises(LabelError, match=re.escape(f"{tmp_path / 'e.csv'}:1: empty file; expected a header")):
        read_label_csv(str(tmp_path / "e.csv"), "a header")
    (tmp_path / "ok.csv").write_text("file,label\n\na.wav,dog\n")
    assert read_label_csv(str(tmp_path / "ok.csv"), "x") == [(1, ["file", "label"]), (3, ["a.wav", "dog"])]
    (tmp_path / "latin1.csv").write_bytes("file,label\na.wav,caf\xe9\n".encode("latin-1"))
    with pytest.raises(LabelError) as err:
        read_label_csv(str(tmp_path / "latin1.csv"), "x")
    assert str(err.value) == f"{tmp_path / 'latin1.csv'}:2: not UTF-8 text (invalid continuation byte at byte 20)"
    with pytest.raises(LabelError) as err:
        read_label_csv(str(tmp_path / "none.csv"), "x")
    assert str(err.value) == f"{tmp_path / 'none.csv'}: label CSV not found"  # no hint: it is the user's file
    (tmp_path / "quote.csv").write_text('file,label\n"a.wav,dog\n')
    with pytest.raises(LabelError, match=re.escape(f"{tmp_path / 'quote.csv'}:")):
        read_label_csv(str(tmp_path / "quote.csv"), "x")


@pytest.fixture
def tree(tmp_path):
    """An audio root of empty files (label sources never decode): dog/, cat/, noise/, a loose file."""
    root = tmp_path / "root"
    for rel in ("dog/a.wav", "dog/sub/b.flac", "cat/c.wav", "noise/n.wav", "loose.wav", "dog/notes.txt"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"")
    files = [os.path.join(*rel.split("/")) for rel in ("cat/c.wav", "dog/a.wav", "dog/sub/b.flac", "loose.wav")]
    return str(root), files


def test_relative_to_root_and_file_problem(tree):
    from mae_ast.label_sources import file_problem, relative_to_root

    root, files = tree
    assert relative_to_root(root, "dog/./a.wav") == os.path.join("dog", "a.wav")
    assert relative_to_root(root, os.path.join(root, "cat", "c.wav")) == os.path.join("cat", "c.wav")
    assert relative_to_root(root, "../x.wav") is None and relative_to_root(root, "..") is None
    assert relative_to_root(root, "..x.wav") == "..x.wav"  # a name starting with dots is inside
    found = set(files)

    def problem(given, exclude=()):
        return file_problem(root, given, relative_to_root(root, given) if given else None, found, exclude)

    assert problem("dog/a.wav") is None
    assert problem("") == "the path is empty"
    assert problem("../x.wav") == f"'../x.wav' is outside the audio folder {root}"
    assert problem("noise/n.wav", ("noise",)) == "'noise/n.wav' is in noise/, which --exclude-folders leaves out"
    assert problem("noise", ("noise",)) == "'noise' is a folder, not an audio file"
    assert problem("dog/notes.txt") == "'dog/notes.txt' is not an audio file of --ext (.txt)"
    assert problem("dog/gone.wav") == f"no such file: {os.path.join(root, 'dog', 'gone.wav')}"


def test_labels_from_folders_direct(tree):
    from mae_ast.label_sources import labels_from_folders, read_labels

    root, files = tree
    labels = read_labels("folders", root, files)
    assert labels.names == {os.path.join("cat", "c.wav"): ["cat"], os.path.join("dog", "a.wav"): ["dog"],
                            os.path.join("dog", "sub", "b.flac"): ["dog"]}
    assert labels.unlabelled == ["loose.wav"] and labels.why_unlabelled == "not in a class folder"
    assert labels.source == "class folders" and labels.folds == {} and labels.missing == []
    from mae_ast.labels import InputProblems
    with pytest.raises(InputProblems) as err:
        labels_from_folders(root, ["a,b/x.wav", "a,b/y.wav", " ok/z.wav", "c\nd/w.wav"])
    assert str(err.value).startswith("2 class folders cannot be labels")  # one problem a folder, not a file
    assert [p.split(": class folder cannot be a label: ")[0] for p in err.value.problems] == \
        [os.path.join(root, "a,b"), repr(os.path.join(root, "c\nd"))]  # sorted, unprintable names as repr


def csv_spec(path, **kw):
    from mae_ast.label_sources import LabelCsv

    return LabelCsv(str(path), "file", "label", **kw)


def test_labels_from_csv_direct(tree, tmp_path):
    from mae_ast.label_sources import labels_from_csv

    root, files = tree
    csv_path = tmp_path / "l.csv"
    csv_path.write_text("file,label,fold\ndog/a.wav,\"dog, pet\",1\ncat/c.wav,cat, 2 \n")
    labels = labels_from_csv(csv_spec(csv_path, fold_column="fold", test_folds=["2"]), root, files)
    assert labels.names == {os.path.join("dog", "a.wav"): ["dog", "pet"], os.path.join("cat", "c.wav"): ["cat"]}
    assert labels.folds == {os.path.join("dog", "a.wav"): "1", os.path.join("cat", "c.wav"): "2"}
    assert labels.unlabelled == [os.path.join("dog", "sub", "b.flac"), "loose.wav"]
    assert labels.why_unlabelled == f"no row of {csv_path} names it"
    with pytest.raises(LabelError, match=re.escape("--test-folds: no row of") + ".*has fold '3' "
                       + re.escape("(the fold values of its rows: '1', '2')")):
        labels_from_csv(csv_spec(csv_path, fold_column="fold", test_folds=["3"]), root, files)
    with pytest.raises(LabelError, match="no column named 'Fold' .--fold-column.; the header's columns are "
                                         "'file', 'label', 'fold'"):
        labels_from_csv(csv_spec(csv_path, fold_column="Fold"), root, files)
    csv_path.write_text("file,label,label\na.wav,x,y\n")
    with pytest.raises(LabelError, match="2 columns named 'label'"):
        labels_from_csv(csv_spec(csv_path), root, files)


def test_labels_from_csv_skip_missing_tells_the_log(tree, tmp_path):
    from mae_ast.label_sources import labels_from_csv
    from mae_ast.labels import InputProblems

    root, files = tree
    csv_path = tmp_path / "l.csv"
    csv_path.write_text("file,label\ndog/a.wav,dog\ngone.wav,x\ncat/c.wav,cat\ndog/a.wav,dog\n")
    notes = []
    with pytest.raises(InputProblems) as err:
        labels_from_csv(csv_spec(csv_path, skip_missing=True), root, files, log=notes.append)
    assert notes == [f"missing, left out (--skip-missing): {csv_path}:3: no such file: {os.path.join(root, 'gone.wav')}"]
    assert err.value.problems == [f"{csv_path}:5: 'dog/a.wav' is already named on line 2"]
    csv_path.write_text("file,label\ndog/a.wav,dog\ngone.wav,x\n")
    labels = labels_from_csv(csv_spec(csv_path, skip_missing=True), root, files)
    assert labels.missing == [f"{csv_path}:3"] and list(labels.names) == [os.path.join("dog", "a.wav")]
    with pytest.raises(InputProblems):  # without the flag the missing file is a bad row
        labels_from_csv(csv_spec(csv_path), root, files)


@pytest.mark.parametrize("row,why", [
    (["dog/a.wav", "dog"], "2 cells, the header has 3"),
    (["dog/a.wav", "", "1"], "column 'label': no label (the line or cell is empty)"),
    (["dog/a.wav", "dog", " "], "column 'fold': the fold is empty"),
    (["", "dog", "1"], "the path is empty"),
    (["dog/a.wav", "dog", "1"], None),
])
def test_row_problem(tree, row, why):
    from mae_ast.label_sources import CsvLayout, row_problem

    root, files = tree
    layout = CsvLayout(["file", "label", "fold"], 0, 1, 2)
    assert row_problem(root, row, layout, set(files), {})[0] == why
    assert row_problem(root, ["dog/a.wav", "dog", "1"], layout, set(files), {os.path.join("dog", "a.wav"): 7}) == \
        ("'dog/a.wav' is already named on line 7", os.path.join("dog", "a.wav"))
    no_fold = CsvLayout(["file", "label", "fold"], 0, 1, None)
    assert row_problem(root, ["dog/a.wav", "dog", ""], no_fold, set(files), {})[0] is None


def test_read_split_lists_direct(tree, tmp_path):
    from mae_ast.label_sources import fixed_splits, read_split_lists
    from mae_ast.labels import InputProblems

    root, files = tree
    (tmp_path / "v.txt").write_text("dog/a.wav\n\n  cat/c.wav  \n")
    (tmp_path / "t.txt").write_text("loose.wav\n")
    lists = {"valid": str(tmp_path / "v.txt"), "test": str(tmp_path / "t.txt")}
    listed = read_split_lists(lists, root, files)
    assert listed.split_of == {os.path.join("dog", "a.wav"): "valid", os.path.join("cat", "c.wav"): "valid",
                               "loose.wav": "test"}
    assert listed.lists == lists and fixed_splits(listed=listed) == listed.split_of
    (tmp_path / "t.txt").write_text("dog/a.wav\n\n")
    (tmp_path / "v.txt").write_text("\n \n")
    with pytest.raises(InputProblems) as err:
        read_split_lists(lists, root, files)
    assert err.value.problems == [f"{tmp_path / 'v.txt'}: names no file (every line is blank)"]
    (tmp_path / "v.txt").write_text("dog/a.wav\ndog/a.wav\n")
    with pytest.raises(InputProblems) as err:
        read_split_lists(lists, root, files)
    assert err.value.problems == [f"{tmp_path / 'v.txt'}:2: 'dog/a.wav' is already named on line 1",
                                  f"{tmp_path / 't.txt'}:1: 'dog/a.wav' is also named in {tmp_path / 'v.txt'}:1; "
                                  "a file goes to one split"]
    assert str(err.value).startswith(f"2 lines of {tmp_path / 'v.txt'} and {tmp_path / 't.txt'} cannot be used")


def test_fixed_splits_by_fold():
    from mae_ast.label_sources import Labels, fixed_splits

    labels = Labels("x.csv", folds={"a": "1", "b": "2", "c": "3"})
    assert fixed_splits(labels, None, ["1"], ["2"]) == {"a": "valid", "b": "test"}
    assert fixed_splits(labels, None, [], ["3"]) == {"c": "test"}
    assert fixed_splits(Labels("folders"), None, ["1"], []) == {} and fixed_splits() == {}


def test_label_set_and_summary(tmp_path):
    from mae_ast.label_sources import Labels, summarize_labels, write_label_set

    labels = Labels("x.csv", names={"a": ["dog"], "b": ["cat", "dog"], "c": ["owl"], "gone": ["bat"]})
    good = [("a", 10), ("b", 20), ("c", 30)]
    label_set = write_label_set(str(tmp_path), good, labels)
    assert LabelSet.load(str(tmp_path / "labels.csv")).names == ["cat", "dog", "owl"] == label_set.names
    summary = summarize_labels(labels, label_set, good, ["train", "valid", "train"], ("train", "valid"))
    assert summary.per_split == {"train": {"dog", "owl"}, "valid": {"cat", "dog"}}
    assert summary.lost == ["bat"] and summary.by_fold is False
