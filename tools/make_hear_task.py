#!/usr/bin/env python
"""Build a HEAR 2021 task folder, as hear-preprocess emits them, for hear-eval-kit's runners.

    python tools/make_hear_task.py OUT (--audio DIR | --labels FILE.csv | --demo-corpus DIR)
        [--mix-events N] [--duration S] [--sample-rates 16000,44100]
        [--folds K | --valid-percent 0.1 --test-percent 0.1] [--seed 0] [--max-per-label N]
    python tools/make_hear_task.py --check OUT

OUT is one task folder; put it in a folder of tasks (heareval's --tasks-dir takes every folder
in it as a task). It holds:
  task_metadata.json   task_name, embedding_type (scene|event), prediction_type (multiclass|
                       multilabel), split_mode, splits, sample_duration (s), evaluation, ...
  labelvocabulary.csv  'idx,label', the labels sorted
  {split}.json         scene: {"a.wav": ["dog"]}; event: {"a.wav": [{"label": "dog",
                       "start": ms, "end": ms}, ...]}
  {rate}/{split}/*.wav mono 16-bit wav at each --sample-rates rate (default 16000; hearbaseline
                       reads 44100), every file trimmed or zero-padded to --duration
Splits: train/valid/test (--valid-percent and --test-percent are shares, 0.1 = 10 %) or
--folds K (fold00..; heareval tests on each fold in turn), drawn at random with --seed, each
label spread evenly over the splits; the chunks of one demo corpus recording stay together.

Where the labels come from:
  --audio DIR          class sub-folders: DIR/dog/a.wav is a 'dog' (scene task); files directly
                       in DIR have no class and are counted and left out
  --labels FILE.csv    a header row, then scene rows 'file,label' (a file on several rows has
                       several labels: a multilabel task) or event rows 'file,label,start,end'
                       (seconds); files relative to --audio-root (default: the CSV's folder)
  --demo-corpus DIR    the demo's corpus (tools/demo.sh; DIR/index.tsv): the label is the
                       --label-column of its index: category (speech/music/effects, default),
                       source or language (speech only)
--mix-events N turns labelled clips into an event task: N scenes of --duration seconds (default
10), each with --events-per-scene clips of the sources (label drawn first, all alike), cut to at
most --event-seconds, placed at random without overlap on silence; each placed clip is an event
with its clip's label. The sources are split first: no recording is heard in two splits.

Audio of any format mae_ast.audio decodes is read and written as wav. A CSV row that names a
missing file, has an empty label, bad times or does not parse stops the tool, named as
CSV:LINE, before anything is written; so does a file the CSV names that cannot be decoded.
Found files (--audio, --demo-corpus) that cannot be decoded are named, counted and left out.
The task is built in OUT.partial, checked as --check checks a task, and only then moved to OUT;
an existing OUT is replaced only with --overwrite (and only if it is a task folder).
"""
import argparse
import os
import shutil
import sys
from dataclasses import fields
from typing import List

from mae_ast import cli
from mae_ast.hear_task import DEFAULT_MIX_SECONDS, TaskError, TaskOptions, build, check_task
from mae_ast.labels import InputProblems

PREFIX = "[make_hear_task]"


def log(message: str) -> None:
    print(f"{PREFIX} {message}", file=sys.stderr, flush=True)


def sample_rate_list(text: str) -> List[int]:
    try:
        rates = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated sample rates in Hz, got {text!r}") from None
    if not rates or min(rates) < 1000:
        raise argparse.ArgumentTypeError(f"expected sample rates of 1000 Hz or more, got {text!r}")
    return rates


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, epilog=cli.EXIT_CODES_HELP,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out", help="the task folder to write (inside a folder of tasks)")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--audio", metavar="DIR", help="class sub-folders of audio: a scene task")
    source.add_argument("--labels", metavar="FILE.csv", help="'file,label' or 'file,label,start,end' rows")
    source.add_argument("--demo-corpus", metavar="DIR", help="the demo corpus (DIR/index.tsv)")
    source.add_argument("--check", action="store_true", help="only check the task folder OUT")
    p.add_argument("--audio-root", metavar="DIR", help="--labels: the files' folder (default: the CSV's)")
    p.add_argument("--label-column", default="category", choices=("category", "source", "language"),
                   help="--demo-corpus: which column of index.tsv is the label (default category)")
    p.add_argument("--mix-events", type=int, metavar="N",
                   help="make an event task of N scenes mixed from the labelled clips")
    p.add_argument("--events-per-scene", type=int, default=3, help="--mix-events: clips per scene (default 3)")
    p.add_argument("--event-seconds", type=float, default=2.0,
                   help="--mix-events: longest piece of a clip (default 2 s)")
    p.add_argument("--duration", type=float, metavar="S",
                   help="every file is trimmed or padded to S seconds (default: the longest source; "
                        f"{DEFAULT_MIX_SECONDS:g} with --mix-events)")
    p.add_argument("--sample-rates", type=sample_rate_list, default=[16000], metavar="R,..",
                   help="write the audio at these rates (default 16000; 16000,44100 for hearbaseline too)")
    p.add_argument("--folds", type=int, metavar="K", help="K folds (3 or more) instead of train/valid/test")
    p.add_argument("--valid-percent", type=float, default=0.1, help="share of clips for valid (default 0.1)")
    p.add_argument("--test-percent", type=float, default=0.1, help="share of clips for test (default 0.1)")
    p.add_argument("--max-per-label", type=int, metavar="N", help="at most N clips of each label, drawn at random")
    p.add_argument("--seed", type=int, default=0, help="seed of the splits, draws and mixing (default 0)")
    p.add_argument("--name", help="task_name (default: the folder's name)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing task folder OUT")
    args = p.parse_args(argv)
    if args.folds is not None and args.folds < 3:
        p.error("--folds must be 3 or more (heareval tests on one fold, validates on the next, trains on the rest)")
    if not (0 <= args.valid_percent < 1 and 0 <= args.test_percent < 1):
        p.error("--valid-percent and --test-percent are shares between 0 and 1")
    if args.duration is not None and args.duration <= 0:
        p.error("--duration must be positive")
    if args.mix_events is not None and (args.mix_events < 1 or args.events_per_scene < 1 or args.event_seconds <= 0):
        p.error("--mix-events, --events-per-scene and --event-seconds must be positive")
    if args.max_per_label is not None and args.max_per_label < 1:
        p.error("--max-per-label must be 1 or more")
    for flag, value, needs in (("--audio-root", args.audio_root, args.labels),
                               ("--mix-events", args.mix_events, not args.check)):
        if value is not None and not needs:
            p.error(f"{flag} does not apply here")
    args.name = args.name or os.path.basename(os.path.normpath(args.out))
    return args


def task_options(args) -> TaskOptions:
    return TaskOptions(**{f.name: getattr(args, f.name) for f in fields(TaskOptions)})


def check(out: str) -> None:
    try:
        meta = check_task(out)
    except TaskError as e:
        cli.fail(str(e))
    print(f"{out}: a {meta['embedding_type']} task ({meta['prediction_type']}), splits "
          f"{', '.join(meta['splits'])}: looks good")


def main(argv=None):
    args = parse_args(argv)
    if args.check:
        return check(args.out)
    out = os.path.normpath(args.out)
    if os.path.isfile(out) or (os.path.isdir(out) and os.listdir(out)):
        if not args.overwrite:
            cli.fail(f"{out} exists; give --overwrite to replace it")
        if not os.path.isfile(os.path.join(out, "task_metadata.json")):
            cli.fail(f"{out} is not a task folder (no task_metadata.json); not replacing it")
    cli.make_folder(os.path.dirname(os.path.abspath(out)))
    try:
        built = build(task_options(args), log)
    except InputProblems as e:
        print("\n".join(e.shown()), file=sys.stderr)
        cli.fail(str(e))
    except TaskError as e:
        cli.fail(str(e))
    if os.path.exists(out):
        shutil.rmtree(out)
    os.rename(built.folder, out)
    log(f"wrote {out}: {built.clips} files of {built.duration:g} s at "
        f"{', '.join(map(str, args.sample_rates))} Hz")


if __name__ == "__main__":
    main()
