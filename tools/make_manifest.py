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

from mae_ast import audio, cli
from mae_ast.core.features import SAMPLE_RATE
from mae_ast.label_sources import (LabelCsv, comma_list, fixed_splits, read_labels, read_split_lists,
                                   summarize_labels, write_label_set)
from mae_ast.labels import LABEL_SET_FILE, InputProblems, LabelError
from mae_ast.manifest import (ManifestError, assign_splits, audio_extensions, check_excluded_folders_exist,
                              checked_root, find_files, measure_all, printable, stale_outputs,
                              unwritable_name_reason, write_splits)

DEFAULT_EXTS = ",".join(ext.lstrip(".") for ext in audio.AUDIO_EXTENSIONS)
PREFIX = "[make_manifest]"

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
    args.valid_folds, args.test_folds = comma_list(args.valid_folds), comma_list(args.test_folds)
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
    names = comma_list(text)
    if not names:
        p.error("--exclude-folders needs one or more folder names")
    for name in names:
        if name in (os.curdir, os.pardir) or "/" in name or os.sep in name:
            p.error(f"--exclude-folders takes names of folders directly in the audio folder, not paths: {name!r}")
    return names


def progress_printer():
    """progress(done, total) for measure_all: a line on stderr that rewrites itself."""
    start = time.time()

    def progress(done, total):
        rate = done / max(time.time() - start, 1e-6)
        sys.stderr.write(f"\r{PREFIX} {done}/{total} files, {rate:.0f} files/s")
        sys.stderr.flush()
    return progress


def label_source(args):
    """What --labels names: 'folders' or a LabelCsv with the CSV flags."""
    if args.labels == "folders":
        return "folders"
    return LabelCsv(args.labels, args.path_column, args.label_column, args.fold_column, args.valid_folds,
                    args.test_folds, args.skip_missing)


def check_inputs(args):
    """The audio folder (its real path), once every named input is known to exist."""
    root = checked_root(args.root)
    if args.labels not in (None, "folders") and not os.path.isfile(args.labels):
        cli.fail(f"--labels {args.labels}: no such CSV file (or 'folders' for class sub-folders)")
    for flag, path in (("--valid-list", args.valid_list), ("--test-list", args.test_list)):
        if path and not os.path.isfile(path):
            cli.fail(f"{flag} {path}: no such file")
    check_excluded_folders_exist(root, args.exclude_folders)
    return root


def found_files(args, root):
    """(relative paths of the audio files, other files' extensions, excluded files per folder)."""
    exts = audio_extensions(args.ext)
    files, others, excluded = find_files(root, exts, args.exclude_folders)
    if not files:
        cli.fail(f"no files with extensions {' '.join(sorted(exts))} under {root}"
                 + (f" outside the folders of --exclude-folders ({sum(excluded.values())} in them)"
                    if excluded else "")
                 + (f" (other files: {describe_extensions(others)}; see --ext)" if others else ""))
    return files, others, excluded


def read_label_inputs(args, root, files):
    """(labels or None, split lists or None), read before decoding: a bad CSV row or list line
    must not cost a scan of hours."""
    labels = listed = None
    if args.labels:
        labels = read_labels(label_source(args), root, files, args.exclude_folders,
                             log=lambda note: print(note, file=sys.stderr))
    if args.valid_list or args.test_list:
        lists = {split: path for split, path in (("valid", args.valid_list), ("test", args.test_list)) if path}
        listed = read_split_lists(lists, root, files, args.exclude_folders)
    return labels, listed


def labelled_files(labels, root, files):
    """The files with a label; each file without one is named on stderr."""
    for rel in labels.unlabelled:
        print(f"no label: {printable(os.path.join(root, rel))}: {labels.why_unlabelled}", file=sys.stderr)
    kept = [rel for rel in files if rel in labels.names]
    if not kept:
        cli.fail(f"none of the {len(files)} audio files under {root} has a label from {labels.source} "
                 "(each is named above); no manifest written", code=cli.EXIT_NOTHING_DONE)
    return kept


def measured_files(args, root, files):
    """(kept (relative path, samples), left out (relative path, why)), each left out one named."""
    name_problems = [(rel, unwritable_name_reason(rel)) for rel in files]
    bad = [(rel, why) for rel, why in name_problems if why]
    writable = [rel for rel, why in name_problems if not why]
    results = measure_all(root, writable, int(args.min_seconds * SAMPLE_RATE), args.jobs, progress_printer())
    sys.stderr.write("\n")
    good = [(rel, n) for rel, n, why in results if why is None]
    bad += [(rel, why) for rel, _, why in results if why is not None]
    for rel, why in sorted(bad):
        print(f"left out: {printable(os.path.join(root, rel))}: {why}", file=sys.stderr)
    if not good:
        cli.fail(f"all {len(files)} audio files under {root} were left out (each is named above); "
                 "no manifest written", code=cli.EXIT_NOTHING_DONE)
    return good, bad


def make(args):
    root = check_inputs(args)
    cli.make_folder(args.dest)  # now, not after a scan that can take hours
    files, others, excluded = found_files(args, root)
    labels, listed = read_label_inputs(args, root, files)
    good, bad = measured_files(args, root, labelled_files(labels, root, files) if labels else files)
    splits = ("train", "valid", "test") if args.test_folds or args.test_list else ("train", "valid")
    split_of = assign_splits(good, fixed_splits(labels, listed, args.valid_folds, args.test_folds),
                             args.valid_percent, args.seed, draw_valid=not args.valid_folds)
    counts = write_splits(args.dest, root, good, split_of, splits, labels.names if labels else None)
    written = {f"{split}.tsv" for split in splits}
    summary = None
    if labels:
        summary = summarize_labels(labels, write_label_set(args.dest, good, labels), good, split_of, splits)
        written |= {f"{split}.lbl" for split in splits} | {LABEL_SET_FILE}
    for path in stale_outputs(args.dest, written):
        print(f"{PREFIX} note: {path} is from an earlier run and does not belong to these manifests; "
              "delete it", file=sys.stderr)
    report(root, len(files), counts, bad, others, summary, excluded if args.exclude_folders else None, listed)
    return cli.EXIT_OK


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


def main(argv=None):
    args = parse_args(argv)
    try:
        return make(args)
    except InputProblems as e:
        print("\n".join(e.shown()), file=sys.stderr)
        cli.fail(str(e))
    except (LabelError, ManifestError) as e:
        cli.fail(str(e))


if __name__ == "__main__":
    sys.exit(main())
