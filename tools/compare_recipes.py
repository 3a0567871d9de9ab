#!/usr/bin/env python
"""Compare pre-training recipes at equal compute on a folder of audio (the demo's corpus by default).

    python tools/compare_recipes.py --recipes paper_patch,paper_frame,audiomae,mwmae,eat_masking \
        --minutes 10 [--audio DIR] --out runs/compare

Each recipe pre-trains the demo's model for the device (the same encoder and decoder size, batch
and threads for all, one recipe at a time) on the same manifests for --minutes of training time;
its checkpoints at --points evenly spaced times are scored by the demo's linear probe, and with
--finetune-minutes its last one by a short fine-tuning on the demo's labelled task. Writes
OUT/compare.md (the table: probe accuracy per recipe at each point, updates, seconds per update,
clips and masked tokens seen), OUT/accuracy.png (accuracy against minutes, one line per recipe)
and OUT/index.html. A rerun reuses the recipes finished with the same settings.

Recipes: paper_patch (the paper's patch model, the demo's), paper_frame (the paper's frame model),
audiomae, mwmae, eat_masking (config/pretrain/recipe/*.yaml; docs/recipes.md).
"""
# This file is only the command line: the work is mae_ast.demo.compare's.
import argparse
import sys
from pathlib import Path

from mae_ast.cli import EXIT_CODES_HELP
from mae_ast.demo.compare import RECIPES, CompareOptions, check_recipes, run
from mae_ast.demo.pipeline import add_corpus_arguments, check_corpus_arguments

REPO = Path(__file__).resolve().parents[1]


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, epilog=EXIT_CODES_HELP,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipes", default=",".join(RECIPES), help=f"comma-separated, of {', '.join(RECIPES)} (default: all)")
    p.add_argument("--minutes", type=float, default=10, help="training minutes per recipe (default 10)")
    p.add_argument("--points", type=int, default=4, help="checkpoints scored along each run, evenly spaced (default 4)")
    p.add_argument("--finetune-minutes", type=float, default=0,
                   help="fine-tune each recipe's last checkpoint on the demo's labelled task this long (default 0: no)")
    p.add_argument("--out", type=Path, default=REPO / "runs" / "compare", help="work folder (default runs/compare)")
    add_corpus_arguments(p)  # the demo's: --hours-of-audio, --audio (sub-folders: the probe's classes), ...
    args = p.parse_args(argv)
    args.recipes = [name for name in args.recipes.split(",") if name]
    problem = check_recipes(args.recipes)
    if problem:
        p.error(f"--recipes: {problem}")
    if not args.minutes > 0:
        p.error(f"--minutes {args.minutes}: the training time must be positive")
    if args.points < 1:
        p.error(f"--points {args.points}: at least 1")
    if not args.finetune_minutes >= 0:
        p.error(f"--finetune-minutes {args.finetune_minutes}: zero (none) or more")
    check_corpus_arguments(p, args)
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    run(CompareOptions(out=args.out, recipes=args.recipes, minutes=args.minutes, points=args.points,
                       finetune_minutes=args.finetune_minutes, hours_of_audio=args.hours_of_audio,
                       packages=args.packages, audio=args.audio,
                       jobs=args.jobs, cpu=args.cpu, command_line=sys.argv[1:] if argv is None else list(argv)))


if __name__ == "__main__":
    main()
