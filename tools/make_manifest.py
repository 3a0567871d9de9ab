#!/usr/bin/env python
"""Write fairseq manifests (train.tsv, valid.tsv) for every audio file under a folder.

    python tools/make_manifest.py AUDIO_DIR --dest DIR [--ext flac,wav,...]
        [--valid-percent 0.01] [--seed 42] [--jobs N] [--min-seconds 0.2]

Each file is opened and decoded (soundfile reads headers and the last block, PyAV decodes
the whole stream, since container durations are estimates), so broken files are found now,
not days into training. Files that cannot be read, are too short, or whose names a manifest
line cannot hold (a tab, newline or carriage return, or bytes that are not UTF-8) are left
out and listed with the reason; the summary counts them, and counts the files skipped for
their extension.

With --valid-percent 0 (or too few files to draw one), valid.tsv is written with its header
only; train then with dataset.disable_validation=true.
"""
import argparse
import os
import sys
import textwrap
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor

import numpy as np

from mae_ast import audio, cli
from mae_ast.core.features import SAMPLE_RATE
from mae_ast.manifest import unwritable_name_reason, unwritable_root_reason

DEFAULT_EXTS = ",".join(ext.lstrip(".") for ext in audio.AUDIO_EXTENSIONS)
PREFIX = "[make_manifest]"

EPILOG = "default extensions (every common format soundfile or PyAV/ffmpeg decodes):\n" + textwrap.fill(
    " ".join(audio.AUDIO_EXTENSIONS), width=88, initial_indent="  ", subsequent_indent="  ") + (
    "\n\n" + cli.EXIT_CODES_HELP + "  (1 here: audio files were found, but every one was left out)\n")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("root", help="folder to search for audio, recursively")
    p.add_argument("--dest", required=True, help="output folder for train.tsv and valid.tsv")
    p.add_argument("--ext", default=DEFAULT_EXTS,
                   help="comma-separated extensions, any case, dot optional (default: the list below)")
    p.add_argument("--valid-percent", type=float, default=0.01,
                   help="share of files for valid.tsv, 0..1 (default 0.01; 0 writes valid.tsv with "
                        "its header only: train then with dataset.disable_validation=true)")
    p.add_argument("--seed", type=int, default=42, help="seed of the train/valid split")
    p.add_argument("--jobs", type=int, default=1, help="files read in parallel (default 1)")
    p.add_argument("--min-seconds", type=float, default=0.2,
                   help="leave out clips shorter than this (default 0.2 s: one 16-frame patch)")
    args = p.parse_args(argv)
    if not 0 <= args.valid_percent <= 1:
        p.error("--valid-percent is a share between 0 and 1")
    if args.jobs < 1:
        p.error("--jobs must be 1 or more")
    return args


def extension(name):
    return os.path.splitext(name)[1].lower()


def find_files(root, exts):
    """(sorted relative paths with one of ``exts``, Counter of the other files' extensions)."""
    found, others = [], Counter()
    for folder, _, files in os.walk(root, followlinks=True):
        for name in files:
            if extension(name) in exts:
                found.append(os.path.relpath(os.path.join(folder, name), root))
            else:
                others[extension(name) or "(none)"] += 1
    return sorted(found), others


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


def write_splits(dest, root, good, valid_percent, seed):
    """Write train.tsv and valid.tsv; returns {split: (files, hours)}."""
    rng = np.random.default_rng(seed)
    is_valid = rng.random(len(good)) < valid_percent
    counts = {}
    for split, select in (("train", ~is_valid), ("valid", is_valid)):
        rows = [g for g, v in zip(good, select) if v]
        with open(os.path.join(dest, f"{split}.tsv"), "w", encoding="utf-8") as f:
            f.write(root + "\n")
            f.writelines(f"{rel}\t{n}\n" for rel, n in rows)
        counts[split] = (len(rows), sum(n for _, n in rows) / SAMPLE_RATE / 3600)
    return counts


def describe_extensions(counts):
    return ", ".join(f"{ext} {n}" for ext, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def report(root, found, counts, bad, others):
    print(f"{PREFIX} {found} files found under {root}")
    for split, (n, hours) in counts.items():
        print(f"{PREFIX} {split}.tsv: {n} files, {hours:.2f} h")
    if counts["valid"][0] == 0:
        print(f"{PREFIX} note: valid.tsv is empty (header only); training refuses an empty validation "
              "split, so train with dataset.disable_validation=true or raise --valid-percent")
    reasons = Counter(why.split(" (")[0].split(":")[0] for _, why in bad)
    print(f"{PREFIX} left out: {len(bad)}" + (
        " (" + ", ".join(f"{k}: {v}" for k, v in reasons.most_common()) + ")" if bad else ""))
    if others:
        print(f"{PREFIX} {sum(others.values())} other files ignored "
              f"(extensions: {describe_extensions(others)}); --ext chooses what is read")


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
    cli.make_folder(args.dest)  # now, not after a scan that can take hours
    files, others = find_files(root, exts)
    if not files:
        cli.fail(f"no files with extensions {' '.join(sorted(exts))} under {root}"
                 + (f" (other files: {describe_extensions(others)}; see --ext)" if others else ""))

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

    counts = write_splits(args.dest, root, good, args.valid_percent, args.seed)
    report(root, len(files), counts, bad, others)
    return cli.EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
