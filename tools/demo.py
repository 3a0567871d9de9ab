#!/usr/bin/env python
"""Pretrain a small MAE-AST on real recordings that Debian ships, and write a report.

    bash tools/demo.sh [--minutes 7] [--hours-of-audio 1.5] [--audio DIR] [--out demo_runs/default]

Steps (each is reused when the command runs again):
  1. corpus: speech (game dialogue in Czech and Dutch, spoken descriptions, letters and words in
     ~20 languages), music (Wesnoth, Hedgewars) and sound effects (Tux Paint, Hedgewars, Sonic Pi)
     from Debian packages, cut into 16 kHz mono flac chunks of at most 10 s, a balanced mix of the
     three categories, near-silent chunks dropped -> OUT/corpus (index.tsv lists every chunk)
  2. manifests (tools/make_manifest.py)                                  -> OUT/manifests
  3. pre-training with fairseq-hydra-train for --minutes (total: a rerun with a larger value
     continues from checkpoint_last.pt): a 4-layer patch model on CPU, a 6-layer wider one with
     bigger batches on a GPU                                               -> OUT/run
  4. fine-tuning for --finetune-minutes per run: the pretrained encoder as a classifier of the
     corpus's sources, against the same model from random init and a linear probe of the frozen
     encoder, scored on held-out recordings (tools/evaluate.py)          -> OUT/finetune
  5. report: loss curves, reconstructions of validation clips, a linear probe of the pretrained
     encoder against the same encoder at random init and plain log-mel, the fine-tuning table and
     confusion matrix                                                    -> OUT/report/index.html

The packages are installed with apt-get when running as root; otherwise the command prints
the apt-get line to run. --audio DIR trains on your own audio instead (no probe then, unless
DIR holds sub-folders, which then serve as the probe's and fine-tuning's classes).
"""
# This file is only the command line: the steps live in the package mae_ast.demo.
import argparse
import sys
from pathlib import Path

from mae_ast.cli import EXIT_CODES_HELP
from mae_ast.demo.pipeline import DemoOptions, add_corpus_arguments, check_corpus_arguments, run

REPO = Path(__file__).resolve().parents[1]


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, epilog=EXIT_CODES_HELP,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=7, help="training time in minutes, in total over reruns (default 7)")
    p.add_argument("--finetune-minutes", type=float, default=1.5,
                   help="minutes of each of the three fine-tuning runs (default 1.5; 0 skips fine-tuning)")
    p.add_argument("--out", type=Path, default=REPO / "demo_runs" / "default", help="work folder (default demo_runs/default)")
    add_corpus_arguments(p)
    args = p.parse_args(argv)
    # wrong flags fail here, before minutes of corpus building and training
    if not args.minutes > 0:
        p.error(f"--minutes {args.minutes}: the training time must be positive")
    if not args.finetune_minutes >= 0:
        p.error(f"--finetune-minutes {args.finetune_minutes}: zero (no fine-tuning) or more")
    check_corpus_arguments(p, args)
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    run(DemoOptions(out=args.out, minutes=args.minutes, finetune_minutes=args.finetune_minutes,
                    hours_of_audio=args.hours_of_audio,
                    packages=args.packages, audio=args.audio,
                    jobs=args.jobs, cpu=args.cpu, command_line=sys.argv[1:] if argv is None else list(argv)))


if __name__ == "__main__":
    main()
