#!/usr/bin/env python
"""Write fairseq manifests (train.tsv, valid.tsv) for every audio file under a folder, and
with --labels the labels beside them for fine-tuning.

    python tools/make_manifest.py AUDIO_DIR --dest DIR [--ext flac,wav,...]
        [--valid-percent 0.01] [--seed 42] [--jobs N] [--min-seconds 0.2]
        [--labels folders | --labels FILE.csv --path-column COL --label-column COL
         [--fold-column COL --valid-folds F,.. --test-folds F,..]]
        [--valid-list FILE] [--test-list FILE] [--exclude-folders NAME,..]

Each file is opened and decoded (soundfile reads headers and the last block, PyAV decodes
the whole stream, since container durations are estimates), so broken files are found now,
not days into training. Files that cannot be read, are too short, or whose names a manifest
line cannot hold (a tab, newline or carriage return, or bytes that are not UTF-8) are left
out and listed with the reason; the summary counts them, and counts the files skipped for
their extension.

With --valid-percent 0 (or too few files to draw one), valid.tsv is written with its header
only; train then with dataset.disable_validation=true.

With --labels, each {split}.tsv gets a {split}.lbl (line k: the labels of the .tsv's entry
on line k+1, comma-separated) and DEST gets labels.csv ('index,name', the labels of every
split, sorted). The labels come from the class sub-folders (--labels folders: AUDIO_DIR/dog/
x.wav is a 'dog') or from a CSV file: its --path-column names a file relative to AUDIO_DIR
(sub-folders allowed), its --label-column one label or several in one quoted cell
("/m/09x0r,/m/05zppz"). White space around names and cells is stripped; a label cannot hold
a comma. A CSV row that names a missing file, has an empty label or does not parse stops the
tool before any decoding, each one named as CSV:LINE. Audio files no row names (or, with
folders, not in a class folder) are named and counted, and not written. With --fold-column
the split follows the CSV (ESC-50 style): rows whose fold is in --valid-folds go to
valid.tsv, in --test-folds to test.tsv, the rest to train.tsv; fold values are compared as
strings. Without --valid-folds, valid.tsv is drawn at random from the train rows with
--valid-percent.

With --valid-list / --test-list (Speech Commands style: text files naming one path relative to
AUDIO_DIR per line) the files a list names go to valid.tsv / test.tsv, every other file to
train.tsv. A line naming no audio file found, or a file named twice (in one list or in both),
stops the tool before any decoding, named as LIST:LINE. --exclude-folders skips the files of
the top-level folders it names (Speech Commands' _background_noise_); they are counted as
excluded, not as unlabelled.
"""
import argparse
import os
import sys
import textwrap
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Dict, List

import numpy as np

from mae_ast import audio, cli
from mae_ast.core.features import SAMPLE_RATE
from mae_ast.labels import LabelError, LabelSet, label_name_problem, parse_label_list, read_csv_rows, read_utf8
from mae_ast.manifest import unwritable_name_reason, unwritable_root_reason

DEFAULT_EXTS = ",".join(ext.lstrip(".") for ext in audio.AUDIO_EXTENSIONS)
PREFIX = "[make_manifest]"

# CSV rows shown when many are bad: enough to see the pattern, not a screen per million rows.
MAX_ROW_PROBLEMS_SHOWN = 20
LABEL_SET_FILE = "labels.csv"

# The same commands as docs/finetuning.md (tests/test_labels.py runs both).
EXAMPLES = """\
examples:
  unlabelled audio, for pre-training:
    make_manifest.py /data/audio --dest manifests/ --valid-percent 0.01 --jobs 8
  class folders (clips/dog/a.wav, clips/rain/b.flac, ...):
    make_manifest.py clips/ --dest manifests/clips --labels folders --valid-percent 0.1
  ESC-50 (meta/esc50.csv: filename,fold,target,category,esc10,src_file,take):
    make_manifest.py ESC-50/audio --dest manifests/esc50 --labels ESC-50/meta/esc50.csv \\
        --path-column filename --label-column category --fold-column fold --valid-folds 1 --test-folds 5
  AudioSet (audioset.csv, written by you: a row per clip, several labels in one quoted cell):
      file,labels,set
      balanced/--PJHxphWEs_30.flac,"/m/09x0r,/t/dd00088",balanced_train
      balanced/--ZhevVpy1s_50.flac,/m/012xff,balanced_train
      eval/--4gqARaEJE_0.flac,"/m/068hy,/m/07q6cd_,/m/0bt9lr,/m/0jbk",eval
    make_manifest.py audioset/ --dest manifests/audioset --labels audioset.csv \\
        --path-column file --label-column labels --fold-column set --test-folds eval --valid-percent 0.05
  Speech Commands v2 (word folders; validation_list.txt and testing_list.txt give the split):
    make_manifest.py speech_commands_v0.02 --dest manifests/spc2 --labels folders \\
        --exclude-folders _background_noise_ --valid-list speech_commands_v0.02/validation_list.txt \\
        --test-list speech_commands_v0.02/testing_list.txt
"""

EPILOG = EXAMPLES + "\ndefault extensions (every common format soundfile or PyAV/ffmpeg decodes):\n" + textwrap.fill(
    " ".join(audio.AUDIO_EXTENSIONS), width=88, initial_indent="  ", subsequent_indent="  ") + (
    "\n\n" + cli.EXIT_CODES_HELP + "  (1 here: audio files were found, but every one was left out or "
    "had no label)\n")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("root", help="folder to search for audio, recursively")
    p.add_argument("--dest", required=True, help="output folder for train.tsv and valid.tsv")
    p.add_argument("--ext", default=DEFAULT_EXTS,
                   help="comma-separated extensions, any case, dot optional (default: the list below)")
    p.add_argument("--valid-percent", type=float, default=None,
                   help="share of files for valid.tsv, 0..1 (default 0.01; 0 writes valid.tsv with "
                        "its header only: train then with dataset.disable_validation=true)")
    p.add_argument("--seed", type=int, default=42, help="seed of the train/valid split")
    p.add_argument("--jobs", type=int, default=1, help="files read in parallel (default 1)")
    p.add_argument("--min-seconds", type=float, default=0.2,
                   help="leave out clips shorter than this (default 0.2 s: one 16-frame patch)")
    labels = p.add_argument_group("labels (for fine-tuning: writes {split}.lbl and labels.csv)")
    labels.add_argument("--labels", metavar="folders|FILE.csv",
                        help="'folders': each file's label is its top sub-folder below the audio folder; "
                             "or a CSV file with a header row naming its columns")
    labels.add_argument("--path-column", metavar="COL",
                        help="CSV column with each file's path, relative to the audio folder")
    labels.add_argument("--label-column", metavar="COL",
                        help="CSV column with each file's label, or several comma-separated in one "
                             "quoted cell")
    labels.add_argument("--skip-missing", action="store_true",
                        help="leave out CSV rows naming files that do not exist (each named on stderr and "
                             "counted; AudioSet downloads lack some clips) instead of stopping")
    labels.add_argument("--fold-column", metavar="COL",
                        help="CSV column that decides the split, with --valid-folds/--test-folds")
    labels.add_argument("--valid-folds", metavar="F,..", help="comma-separated fold values for valid.tsv")
    labels.add_argument("--test-folds", metavar="F,..", help="comma-separated fold values for test.tsv")
    lists = p.add_argument_group("split lists (Speech Commands style; with or without --labels)")
    lists.add_argument("--valid-list", metavar="FILE",
                       help="text file naming the files of valid.tsv, one path relative to the audio "
                            "folder per line (Speech Commands' validation_list.txt)")
    lists.add_argument("--test-list", metavar="FILE",
                       help="the same for test.tsv (testing_list.txt); files no list names go to train.tsv")
    p.add_argument("--exclude-folders", metavar="NAME,..",
                   help="comma-separated top-level folders of the audio folder whose files are skipped "
                        "(counted as excluded), e.g. _background_noise_")
    args = p.parse_args(argv)
    check_label_args(p, args)
    check_split_list_args(p, args)
    args.exclude_folders = excluded_folder_names(p, args.exclude_folders)
    if args.valid_percent is None:
        args.valid_percent = 0.0 if args.valid_folds or args.valid_list else 0.01
    if not 0 <= args.valid_percent <= 1:
        p.error("--valid-percent is a share between 0 and 1")
    if args.jobs < 1:
        p.error("--jobs must be 1 or more")
    return args


def fold_list(text):
    return [fold.strip() for fold in text.split(",") if fold.strip()] if text is not None else []


def check_label_args(p, args):
    """Refuse flag combinations that would be ignored or contradict each other."""
    from_csv = args.labels is not None and args.labels != "folders"
    csv_flags = {"--path-column": args.path_column, "--label-column": args.label_column,
                 "--fold-column": args.fold_column, "--skip-missing": args.skip_missing or None}
    if not from_csv:
        given = [flag for flag, value in csv_flags.items() if value is not None]
        if given:
            p.error(f"{given[0]} needs --labels FILE.csv")
    else:
        missing = [flag for flag in ("--path-column", "--label-column") if csv_flags[flag] is None]
        if missing:
            p.error(f"--labels {args.labels} needs {' and '.join(missing)} (the CSV's column names)")
    args.valid_folds, args.test_folds = fold_list(args.valid_folds), fold_list(args.test_folds)
    if args.fold_column is None:
        if args.valid_folds or args.test_folds:
            p.error("--valid-folds and --test-folds need --fold-column")
        return
    if not args.valid_folds and not args.test_folds:
        p.error("--fold-column needs --valid-folds, --test-folds or both")
    if args.valid_folds and args.valid_percent is not None:
        p.error("give --valid-folds or --valid-percent, not both (each chooses valid.tsv)")
    both = sorted(set(args.valid_folds) & set(args.test_folds))
    if both:
        p.error(f"fold {both[0]!r} is in both --valid-folds and --test-folds")


def check_split_list_args(p, args):
    """--valid-list/--test-list decide the split: refuse the flags that decide it otherwise."""
    lists = [flag for flag, value in (("--valid-list", args.valid_list), ("--test-list", args.test_list)) if value]
    if not lists:
        return
    if args.fold_column is not None:
        p.error(f"give {lists[0]} or --fold-column, not both (each decides the split)")
    if args.valid_list and args.valid_percent is not None:
        p.error("give --valid-list or --valid-percent, not both (each chooses valid.tsv)")
    if len(lists) == 2 and os.path.realpath(args.valid_list) == os.path.realpath(args.test_list):
        p.error(f"--valid-list and --test-list are the same file ({args.valid_list})")


def excluded_folder_names(p, text):
    """The names of --exclude-folders: top-level folder names, not paths."""
    if text is None:
        return []
    names = fold_list(text)
    if not names:
        p.error("--exclude-folders needs one or more folder names")
    for name in names:
        if name in (os.curdir, os.pardir) or "/" in name or os.sep in name:
            p.error(f"--exclude-folders takes names of folders directly in the audio folder, not paths: {name!r}")
    return names


def check_excluded_folders_exist(root, names):
    """A name that is no folder of ``root`` is a typo, and would leave the folder in the set."""
    absent = [name for name in names if not os.path.isdir(os.path.join(root, name))]
    if absent:
        present = sorted(e.name for e in os.scandir(root) if e.is_dir())
        cli.fail(f"--exclude-folders: no folder named {absent[0]!r} in {root} "
                 f"(its folders: {', '.join(repr(n) for n in present) or 'none'})")


def extension(name):
    return os.path.splitext(name)[1].lower()


def find_files(root, exts, exclude=()):
    """(sorted relative paths with one of ``exts``, Counter of the other files' extensions,
    {name: files with one of ``exts``} for each top-level folder in ``exclude``, not searched
    otherwise: its other files are not counted at all)."""
    found, others = [], Counter()
    excluded = {name: 0 for name in exclude}
    for folder, dirs, files in os.walk(root, followlinks=True):
        if folder == root:
            dirs[:] = [d for d in dirs if d not in excluded]
        for name in files:
            if extension(name) in exts:
                found.append(os.path.relpath(os.path.join(folder, name), root))
            else:
                others[extension(name) or "(none)"] += 1
    for name in excluded:
        excluded[name] = sum(extension(f) in exts for _, _, files in os.walk(os.path.join(root, name), followlinks=True)
                             for f in files)
    return sorted(found), others, excluded


def measure(job):
    """(relative path, samples at 16 kHz or None, reason when left out)."""
    root, rel, min_samples = job
    try:
        samples = audio.num_samples(os.path.join(root, rel), SAMPLE_RATE)
    except audio.AudioReadError as e:
        return rel, None, e.reason
    except Exception as e:  # a decoder crash must not end a scan of millions of files
        return rel, None, f"{type(e).__name__}: {e}"
    if samples < min_samples:
        return rel, None, f"too short ({samples / SAMPLE_RATE:.3f} s)"
    return rel, samples, None


def progress(done, total, start):
    rate = done / max(time.time() - start, 1e-6)
    sys.stderr.write(f"\r{PREFIX} {done}/{total} files, {rate:.0f} files/s")
    sys.stderr.flush()


def measure_all(root, files, min_samples, jobs):
    """``measure`` every file, in parallel when ``jobs`` > 1, in the order of ``files``."""
    work = [(root, rel, min_samples) for rel in files]
    start, results = time.time(), []
    pool = ProcessPoolExecutor(jobs) if jobs > 1 else None
    try:
        measured = pool.map(measure, work, chunksize=16) if pool else map(measure, work)
        for result in measured:
            results.append(result)
            if len(results) % 50 == 0:
                progress(len(results), len(work), start)
    finally:
        if pool:
            pool.shutdown()
    progress(len(results), len(work), start)
    sys.stderr.write("\n")
    return results


def printable(path):
    """The path as it is, or its repr when it holds characters that would garble the listing."""
    return path if path.isprintable() else repr(path)


# ---- labels ----------------------------------------------------------------------------------
@dataclass
class Labels:
    """What the label source says about the audio files found."""
    source: str  # for messages: "class folders" or the CSV's path
    names: Dict[str, List[str]] = field(default_factory=dict)  # relative path -> label names
    folds: Dict[str, str] = field(default_factory=dict)  # relative path -> fold (CSV with folds)
    unlabelled: List[str] = field(default_factory=list)  # relative paths, with why below
    why_unlabelled: str = ""
    missing: List[str] = field(default_factory=list)  # CSV:LINE of rows naming absent files (--skip-missing)


def fail_with_problems(problems, what):
    """Name each problem on stderr (up to MAX_ROW_PROBLEMS_SHOWN), then stop."""
    for problem in problems[:MAX_ROW_PROBLEMS_SHOWN]:
        print(problem, file=sys.stderr)
    if len(problems) > MAX_ROW_PROBLEMS_SHOWN:
        print(f"... and {len(problems) - MAX_ROW_PROBLEMS_SHOWN} more", file=sys.stderr)
    cli.fail(f"{len(problems)} {what} (each is named above); no manifest written")


def labels_from_folders(root, files):
    """The top sub-folder of each file is its label; files directly in ``root`` have none."""
    labels = Labels("class folders", why_unlabelled="not in a class folder")
    problems = {}
    for rel in files:
        parts = rel.split(os.sep)
        if len(parts) == 1:
            labels.unlabelled.append(rel)
            continue
        name = parts[0].strip()
        why = label_name_problem(name)
        if why:
            problems[parts[0]] = f"{printable(os.path.join(root, parts[0]))}: class folder cannot be a label: {why}"
            continue
        labels.names[rel] = [name]
    if problems:
        fail_with_problems([problems[k] for k in sorted(problems)], "class folders cannot be labels")
    return labels


def column_index(csv_path, line, header, name, flag):
    matches = [i for i, cell in enumerate(header) if cell.strip() == name]
    if len(matches) != 1:
        columns = ", ".join(repr(cell.strip()) for cell in header)
        how = "no column" if not matches else f"{len(matches)} columns"
        cli.fail(f"{csv_path}:{line}: {how} named {name!r} ({flag}); the header's columns are {columns}")
    return matches[0]


def relative_to_root(root, given):
    """``given`` (relative to ``root``, or absolute below it) as the relative path find_files
    gives, or None when it points outside ``root``."""
    path = os.path.normpath(given if os.path.isabs(given) else os.path.join(root, given))
    rel = os.path.relpath(path, root)
    return None if rel == os.pardir or rel.startswith(os.pardir + os.sep) else rel


def file_problem(root, given, rel, found, exclude=()):
    """Why a CSV path cell or a split list line does not name one of the audio files found, or None."""
    if not given:
        return "the path is empty"
    if rel is None:
        return f"{given!r} is outside the audio folder {root}"
    if rel in found:
        return None
    top = rel.split(os.sep)[0]
    if top in exclude and rel != top:
        return f"{given!r} is in {top}{os.sep}, which --exclude-folders leaves out"
    full = os.path.join(root, rel)
    if os.path.isdir(full):
        return f"{given!r} is a folder, not an audio file"
    if os.path.isfile(full):
        return f"{given!r} is not an audio file of --ext ({extension(rel) or 'no extension'})"
    return f"no such file: {full}"


def labels_from_csv(csv_path, root, files, args):
    """Read the CSV's rows; every bad row stops the tool, named as CSV:LINE."""
    try:
        rows = read_csv_rows(csv_path, read_utf8(csv_path, "label CSV", hint=""))
    except LabelError as e:
        cli.fail(str(e))
    if not rows:
        cli.fail(f"{csv_path}:1: empty file; expected a header row naming the columns")
    header_line, header = rows[0]
    path_col = column_index(csv_path, header_line, header, args.path_column, "--path-column")
    label_col = column_index(csv_path, header_line, header, args.label_column, "--label-column")
    fold_col = (column_index(csv_path, header_line, header, args.fold_column, "--fold-column")
                if args.fold_column else None)
    found = set(files)
    labels = Labels(csv_path, why_unlabelled=f"no row of {csv_path} names it")
    line_of, problems = {}, []
    for line, row in rows[1:]:
        why, rel = row_problem(root, row, header, path_col, label_col, fold_col, found, line_of,
                               args.exclude_folders)
        if why and args.skip_missing and rel is not None and not os.path.lexists(os.path.join(root, rel)):
            # AudioSet-style downloads lack some clips: name each, count them, go on
            print(f"missing, left out (--skip-missing): {csv_path}:{line}: {why}", file=sys.stderr)
            labels.missing.append(f"{csv_path}:{line}")
            continue
        if why:
            problems.append(f"{csv_path}:{line}: {why}")
            continue
        line_of[rel] = line
        labels.names[rel] = parse_label_list(row[label_col])
        if fold_col is not None:
            labels.folds[rel] = row[fold_col].strip()
    if problems:
        fail_with_problems(problems, f"rows of {csv_path} cannot be used")
    if fold_col is not None:
        check_folds_exist(csv_path, args, set(labels.folds.values()))
    labels.unlabelled = [rel for rel in files if rel not in labels.names]
    return labels


def row_problem(root, row, header, path_col, label_col, fold_col, found, line_of, exclude=()):
    """(why the row cannot be used or None, the file's relative path)."""
    if len(row) != len(header):
        return f"{len(row)} cells, the header has {len(header)}", None
    given = row[path_col].strip()
    rel = relative_to_root(root, given) if given else None
    why = file_problem(root, given, rel, found, exclude)
    if why:
        return why, rel
    if rel in line_of:
        return f"{given!r} is already named on line {line_of[rel]}", rel
    try:
        parse_label_list(row[label_col])
    except LabelError as e:
        return f"column {header[label_col].strip()!r}: {e}", rel
    if fold_col is not None and not row[fold_col].strip():
        return f"column {header[fold_col].strip()!r}: the fold is empty", rel
    return None, rel


def check_folds_exist(csv_path, args, folds):
    """A fold value no row has is a typo ('1' for 'fold1'), not an empty split."""
    for flag, wanted in (("--valid-folds", args.valid_folds), ("--test-folds", args.test_folds)):
        absent = [fold for fold in wanted if fold not in folds]
        if absent:
            present = ", ".join(repr(f) for f in sorted(folds))
            cli.fail(f"{flag}: no row of {csv_path} has fold {absent[0]!r} "
                     f"(the fold values of its rows: {present})")


def read_labels(args, root, files):
    if args.labels == "folders":
        return labels_from_folders(root, files)
    return labels_from_csv(args.labels, root, files, args)


# ---- splits -----------------------------------------------------------------------------------
@dataclass
class SplitLists:
    """What --valid-list and --test-list say: {relative path: 'valid' or 'test'}."""
    split_of: Dict[str, str] = field(default_factory=dict)
    lists: Dict[str, str] = field(default_factory=dict)  # split -> list file, for each list given


def read_split_lists(args, root, files):
    """Read --valid-list and --test-list; every bad line stops the tool, named as LIST:LINE."""
    given = {split: path for split, path in (("valid", args.valid_list), ("test", args.test_list)) if path}
    lists = SplitLists(lists=given)
    found, seen, problems, bad_lists = set(files), {}, [], []  # seen: rel -> (list file, line)
    for split, path in given.items():
        try:
            text = read_utf8(path, f"--{split}-list file", hint="")
        except LabelError as e:
            cli.fail(str(e))
        named = 0
        for line, entry in enumerate(text.split("\n"), start=1):
            entry = entry.strip()
            if not entry:
                continue
            named += 1
            rel = relative_to_root(root, entry)
            why = file_problem(root, entry, rel, found, args.exclude_folders)
            if why is None and rel in seen:
                where, first = seen[rel]
                why = (f"{entry!r} is already named on line {first}" if where == path else
                       f"{entry!r} is also named in {where}:{first}; a file goes to one split")
            if why:
                problems.append(f"{path}:{line}: {why}")
                bad_lists += [path] if path not in bad_lists else []
                continue
            seen[rel] = path, line
            lists.split_of[rel] = split
        if not named:
            problems.append(f"{path}: names no file (every line is blank)")
            bad_lists += [path] if path not in bad_lists else []
    if problems:
        fail_with_problems(problems, f"lines of {' and '.join(bad_lists)} cannot be used")
    return lists


def assign_splits(good, valid_percent, seed, labels=None, valid_folds=(), test_folds=(), listed=None):
    """The split of each entry of ``good``: by the split lists (``listed``, a SplitLists) or by
    fold where given, the rest at random (valid with probability ``valid_percent``), always the
    same for the same input."""
    if listed is not None:
        split_of = [listed.split_of.get(rel, "train") for rel, _ in good]
    elif labels is not None and labels.folds:
        fold_split = {**{f: "valid" for f in valid_folds}, **{f: "test" for f in test_folds}}
        split_of = [fold_split.get(labels.folds[rel], "train") for rel, _ in good]
    else:
        split_of = ["train"] * len(good)
    if not valid_folds:
        at_random = [i for i, split in enumerate(split_of) if split == "train"]
        rng = np.random.default_rng(seed)
        for i, is_valid in zip(at_random, rng.random(len(at_random)) < valid_percent):
            if is_valid:
                split_of[i] = "valid"
    return split_of


def write_splits(dest, root, good, split_of, splits, labels=None):
    """Write {split}.tsv (and {split}.lbl with labels); returns {split: (files, hours)}."""
    counts = {}
    for split in splits:
        rows = [g for g, s in zip(good, split_of) if s == split]
        with open(os.path.join(dest, f"{split}.tsv"), "w", encoding="utf-8") as f:
            f.write(root + "\n")
            f.writelines(f"{rel}\t{n}\n" for rel, n in rows)
        if labels is not None:
            with open(os.path.join(dest, f"{split}.lbl"), "w", encoding="utf-8") as f:
                f.writelines(",".join(labels.names[rel]) + "\n" for rel, _ in rows)
        counts[split] = (len(rows), sum(n for _, n in rows) / SAMPLE_RATE / 3600)
    return counts


def write_label_set(dest, good, labels):
    """labels.csv: every label of the written clips, all splits, sorted."""
    label_set = LabelSet(os.path.join(dest, LABEL_SET_FILE),
                         sorted({name for rel, _ in good for name in labels.names[rel]}))
    label_set.write(label_set.path)
    return label_set


def describe_extensions(counts):
    return ", ".join(f"{ext} {n}" for ext, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def report(root, found, counts, bad, others, labelled=None, excluded=None, listed=None):
    print(f"{PREFIX} {found} files found under {root}")
    if excluded is not None:
        print(f"{PREFIX} excluded: {sum(excluded.values())} files (" +
              ", ".join(f"{name}{os.sep}: {n}" for name, n in excluded.items()) + "; --exclude-folders)")
    if listed is not None:
        print(f"{PREFIX} split lists: " + ", ".join(
            f"{split}.tsv <- {path} ({sum(s == split for s in listed.split_of.values())} files named)"
            for split, path in listed.lists.items()) + "; every other file goes to train.tsv")
    for split, (n, hours) in counts.items():
        described = f", {len(labelled.per_split[split])} labels" if labelled else ""
        print(f"{PREFIX} {split}.tsv: {n} files, {hours:.2f} h{described}")
    if counts["valid"][0] == 0:
        if listed is not None and "valid" in listed.lists:
            how = f"check the files {listed.lists['valid']} names (all were left out or have no label)"
        elif labelled and labelled.by_fold:
            how = "give --valid-folds or --valid-percent"
        else:
            how = "raise --valid-percent"
        print(f"{PREFIX} note: valid.tsv is empty (header only); training refuses an empty validation "
              f"split, so train with dataset.disable_validation=true or {how}")
    reasons = Counter(why.split(" (")[0].split(":")[0] for _, why in bad)
    print(f"{PREFIX} left out: {len(bad)}" + (
        " (" + ", ".join(f"{k}: {v}" for k, v in reasons.most_common()) + ")" if bad else ""))
    if labelled:
        report_labels(labelled)
    if others:
        print(f"{PREFIX} {sum(others.values())} other files ignored "
              f"(extensions: {describe_extensions(others)}); --ext chooses what is read")


@dataclass
class LabelSummary:
    labels: Labels
    label_set: LabelSet
    per_split: Dict[str, set]  # split -> the labels its clips have
    by_fold: bool
    lost: List[str]  # labels whose every file was left out


def summarize_labels(labels, label_set, good, split_of, splits):
    per_split = {split: set() for split in splits}
    for (rel, _), split in zip(good, split_of):
        per_split[split].update(labels.names[rel])
    named = {name for names in labels.names.values() for name in names}
    return LabelSummary(labels, label_set, per_split, bool(labels.folds), sorted(named - set(label_set.names)))


def report_labels(s):
    print(f"{PREFIX} {LABEL_SET_FILE}: {len(s.label_set)} labels (from {s.labels.source})")
    if s.labels.missing:
        print(f"{PREFIX} missing: {len(s.labels.missing)} rows of {s.labels.source} name files that do not "
              f"exist, left out (--skip-missing; each is named above)")
    if s.labels.unlabelled:
        print(f"{PREFIX} no label: {len(s.labels.unlabelled)} files, not written "
              f"({s.labels.why_unlabelled}; each is named above)")
    untrained = [name for name in s.label_set.names if name not in s.per_split["train"]]
    if untrained:
        print(f"{PREFIX} note: {len(untrained)} labels have no clip in train.tsv: {shortlist(untrained)}")
    if s.lost:
        print(f"{PREFIX} note: {len(s.lost)} labels lost every file (left out above) and are not in "
              f"{LABEL_SET_FILE}: {shortlist(s.lost)}")


def shortlist(names, limit=10):
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names) - limit} more)" if len(names) > limit else "")


def warn_about_stale_outputs(dest, written):
    """Files this tool writes, left in ``dest`` by an earlier run: a train.lbl that does not
    belong to the new train.tsv would pair labels with the wrong clips."""
    ours = [f"{split}.{kind}" for split in ("train", "valid", "test") for kind in ("tsv", "lbl")]
    for name in ours + [LABEL_SET_FILE]:
        if name not in written and os.path.exists(os.path.join(dest, name)):
            print(f"{PREFIX} note: {os.path.join(dest, name)} is from an earlier run and does not "
                  "belong to these manifests; delete it", file=sys.stderr)


def checked_root(given):
    root = os.path.realpath(given)
    if not os.path.isdir(root):
        cli.fail(f"{given} is not a folder")
    why = unwritable_root_reason(root)
    if why:
        cli.fail(f"the folder {root!r} cannot be a manifest's first line: {why}; "
                 "move or link the audio to a plain path")
    return root


def main(argv=None):
    args = parse_args(argv)
    root = checked_root(args.root)
    exts = {"." + e.strip().lower().lstrip(".") for e in args.ext.split(",") if e.strip()}
    if args.labels not in (None, "folders") and not os.path.isfile(args.labels):
        cli.fail(f"--labels {args.labels}: no such CSV file (or 'folders' for class sub-folders)")
    for flag, path in (("--valid-list", args.valid_list), ("--test-list", args.test_list)):
        if path and not os.path.isfile(path):
            cli.fail(f"{flag} {path}: no such file")
    check_excluded_folders_exist(root, args.exclude_folders)
    cli.make_folder(args.dest)  # now, not after a scan that can take hours
    files, others, excluded = find_files(root, exts, args.exclude_folders)
    if not files:
        cli.fail(f"no files with extensions {' '.join(sorted(exts))} under {root}"
                 + (f" outside the folders of --exclude-folders ({sum(excluded.values())} in them)"
                    if excluded else "")
                 + (f" (other files: {describe_extensions(others)}; see --ext)" if others else ""))
    found = len(files)

    labels = listed = None
    if args.labels:  # before decoding: a bad CSV row must not cost a scan of hours
        labels = read_labels(args, root, files)
    if args.valid_list or args.test_list:  # the same: a bad list line stops the tool now
        listed = read_split_lists(args, root, files)
    if labels:
        for rel in labels.unlabelled:
            print(f"no label: {printable(os.path.join(root, rel))}: {labels.why_unlabelled}", file=sys.stderr)
        files = [rel for rel in files if rel in labels.names]
        if not files:
            cli.fail(f"none of the {found} audio files under {root} has a label from {labels.source} "
                     "(each is named above); no manifest written", code=cli.EXIT_NOTHING_DONE)

    name_problems = [(rel, unwritable_name_reason(rel)) for rel in files]
    bad = [(rel, why) for rel, why in name_problems if why]
    writable = [rel for rel, why in name_problems if not why]
    results = measure_all(root, writable, int(args.min_seconds * SAMPLE_RATE), args.jobs)
    good = [(rel, n) for rel, n, why in results if why is None]
    bad += [(rel, why) for rel, _, why in results if why is not None]
    for rel, why in sorted(bad):
        print(f"left out: {printable(os.path.join(root, rel))}: {why}", file=sys.stderr)
    if not good:
        cli.fail(f"all {len(files)} audio files under {root} were left out (each is named above); "
                 "no manifest written", code=cli.EXIT_NOTHING_DONE)

    splits = ("train", "valid", "test") if args.test_folds or args.test_list else ("train", "valid")
    split_of = assign_splits(good, args.valid_percent, args.seed, labels, args.valid_folds, args.test_folds,
                             listed)
    counts = write_splits(args.dest, root, good, split_of, splits, labels)
    written = {f"{split}.tsv" for split in splits}
    summary = None
    if labels:
        summary = summarize_labels(labels, write_label_set(args.dest, good, labels), good, split_of, splits)
        written |= {f"{split}.lbl" for split in splits} | {LABEL_SET_FILE}
    warn_about_stale_outputs(args.dest, written)
    report(root, found, counts, bad, others, summary, excluded if args.exclude_folders else None, listed)
    return cli.EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
