#!/usr/bin/env python
"""Write fairseq manifests (train.tsv, valid.tsv) for every audio file under a folder.

    python tools/make_manifest.py AUDIO_DIR --dest DIR [--ext flac,wav,ogg,mkv,mp4,webm,mp3]
        [--valid-percent 0.01] [--seed 42] [--jobs N] [--min-seconds 0.2]

Each file is opened and decoded (soundfile reads headers and the last block, PyAV decodes
the whole stream, since container durations are estimates), so broken files are found now,
not days into training. Files that cannot be read, or are too short, are left out and
listed with the reason; the summary counts them.
"""
import argparse
import os
import sys
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from mae_ast import audio  # noqa: E402

DEFAULT_EXTS = "flac,wav,ogg,mkv,mp4,webm,mp3"
SAMPLE_RATE = 16000


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("root", help="folder to search for audio, recursively")
    p.add_argument("--dest", required=True, help="output folder for train.tsv and valid.tsv")
    p.add_argument("--ext", default=DEFAULT_EXTS, help=f"comma-separated extensions (default {DEFAULT_EXTS})")
    p.add_argument("--valid-percent", type=float, default=0.01,
                   help="share of files for valid.tsv, 0..1 (default 0.01; 0 writes an empty valid.tsv)")
    p.add_argument("--seed", type=int, default=42, help="seed of the train/valid split")
    p.add_argument("--jobs", type=int, default=1, help="files read in parallel (default 1)")
    p.add_argument("--min-seconds", type=float, default=0.2,
                   help="leave out clips shorter than this (default 0.2 s: one 16-frame patch)")
    args = p.parse_args(argv)
    if not 0 <= args.valid_percent <= 1:
        p.error("--valid-percent is a share between 0 and 1")
    return args


def find_audio(root, exts):
    found = []
    for folder, _, files in os.walk(root, followlinks=True):
        for name in files:
            if os.path.splitext(name)[1].lower().lstrip(".") in exts:
                found.append(os.path.relpath(os.path.join(folder, name), root))
    return sorted(found)


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
    sys.stderr.write(f"\r[make_manifest] {done}/{total} files, {rate:.0f} files/s")
    sys.stderr.flush()


def main(argv=None):
    args = parse_args(argv)
    root = os.path.realpath(args.root)
    if not os.path.isdir(root):
        sys.exit(f"make_manifest: {args.root} is not a folder")
    exts = {e.strip().lower().lstrip(".") for e in args.ext.split(",") if e.strip()}
    files = find_audio(root, exts)
    if not files:
        sys.exit(f"make_manifest: no files with extensions {sorted(exts)} under {root}")
    min_samples = int(args.min_seconds * SAMPLE_RATE)
    jobs = [(root, rel, min_samples) for rel in files]
    start, results = time.time(), []
    if args.jobs > 1:
        with ProcessPoolExecutor(args.jobs) as pool:
            for r in pool.map(measure, jobs, chunksize=16):
                results.append(r)
                if len(results) % 50 == 0:
                    progress(len(results), len(jobs), start)
    else:
        for job in jobs:
            results.append(measure(job))
            if len(results) % 50 == 0:
                progress(len(results), len(jobs), start)
    progress(len(results), len(jobs), start)
    sys.stderr.write("\n")

    good = [(rel, n) for rel, n, why in results if why is None]
    bad = [(rel, why) for rel, _, why in results if why is not None]
    for rel, why in bad:
        print(f"left out: {os.path.join(root, rel)}: {why}", file=sys.stderr)

    rng = np.random.default_rng(args.seed)
    is_valid = rng.random(len(good)) < args.valid_percent
    os.makedirs(args.dest, exist_ok=True)
    counts = {}
    for split, select in (("train", ~is_valid), ("valid", is_valid)):
        rows = [g for g, v in zip(good, select) if v]
        with open(os.path.join(args.dest, f"{split}.tsv"), "w", encoding="utf-8") as f:
            f.write(root + "\n")
            f.writelines(f"{rel}\t{n}\n" for rel, n in rows)
        counts[split] = (len(rows), sum(n for _, n in rows) / SAMPLE_RATE / 3600)

    reasons = Counter(why.split(" (")[0].split(":")[0] for _, why in bad)
    print(f"[make_manifest] {len(files)} files found under {root}")
    for split, (n, hours) in counts.items():
        print(f"[make_manifest] {split}.tsv: {n} files, {hours:.2f} h")
    print(f"[make_manifest] left out: {len(bad)}" + (
        " (" + ", ".join(f"{k}: {v}" for k, v in reasons.most_common()) + ")" if bad else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
