"""The demo's four steps in order: corpus, manifests, pre-training, report; then a summary.

Every step keeps its result in the work folder and is reused on the next run when nothing it
depends on changed (corpus plan, audio folder, training minutes, checkpoint).
"""
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Sequence

from .console import elapsed, format_number, log
from .corpus import build_corpus, index_of_folder, read_index, with_manifest_lengths
from .finetune import can_finetune, run_finetuning
from .report import write_report
from .train import checkpoint_path, make_manifests, train


@dataclass
class DemoOptions:
    """What tools/demo.py's flags ask for."""

    out: Path  # work folder
    minutes: float  # training time in total, over reruns
    hours_of_audio: float  # size of the built-in corpus
    packages: Sequence[str]  # Debian packages of the built-in corpus
    audio: Optional[Path] = None  # the user's own audio instead of the built-in corpus
    finetune_minutes: float = 1.5  # each of the three fine-tuning runs (0: no fine-tuning stage)
    jobs: int = 1  # processes for the corpus and the manifests
    cpu: bool = False  # train on the CPU even when a GPU is there
    command_line: List[str] = field(default_factory=list)  # shown in the report


MAX_HOURS = 10.0  # about what the eight packages hold


def add_corpus_arguments(p) -> None:
    """The flags that choose the audio and where the work runs (tools/demo.py's and
    tools/compare_recipes.py's); ``check_corpus_arguments`` validates them."""
    from .packages import PACKAGES

    p.add_argument("--hours-of-audio", type=float, default=1.5,
                   help="size of the built-in corpus in hours (default 1.5; at most ~10)")
    p.add_argument("--audio", type=Path, help="your own audio folder instead of the built-in corpus")
    p.add_argument("--packages", default=",".join(PACKAGES),
                   help="Debian packages for the built-in corpus, comma-separated (default: all eight)")
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="processes for the corpus and manifests")
    p.add_argument("--cpu", action="store_true", help="train on the CPU even when a GPU is there")


def check_corpus_arguments(p, args) -> None:
    """Wrong flags fail here, before minutes of corpus building and training; ``args.packages``
    becomes a list."""
    from .packages import PACKAGES

    if not 0 < args.hours_of_audio <= MAX_HOURS:
        p.error(f"--hours-of-audio {args.hours_of_audio}: between 0 and {MAX_HOURS} (what the packages hold)")
    if args.jobs < 1:
        p.error(f"--jobs {args.jobs}: at least 1")
    if args.audio is not None and not args.audio.is_dir():
        p.error(f"--audio {args.audio} is not a folder")
    args.packages = [name for name in args.packages.split(",") if name]
    unknown = [name for name in args.packages if name not in PACKAGES]
    if unknown:
        p.error(f"--packages: unknown {', '.join(unknown)}; choose from {', '.join(PACKAGES)}")


class _Timer:
    """Seconds per step, for the report."""

    def __init__(self):
        self.seconds = {}
        self._start = time.time()

    def lap(self, step: str) -> None:
        now = time.time()
        self.seconds[step] = now - self._start
        self._start = now


def run(options: DemoOptions) -> dict:
    """Run (or reuse) every step; returns the report's summary."""
    import torch

    gpu = torch.cuda.is_available() and not options.cpu
    out = options.out.resolve()
    manifests = out / "manifests"
    timer = _Timer()
    audio, index = prepare_corpus(options, out)
    timer.lap("corpus")
    make_manifests(audio, manifests, options.jobs)
    if options.audio:
        index = with_manifest_lengths(index, manifests)
    timer.lap("manifests")
    train(manifests, out / "run", options.minutes, gpu)
    timer.lap("training")
    finetuning = None
    if options.finetune_minutes > 0 and can_finetune(index):
        finetuning = run_finetuning(audio, index, checkpoint_path(out / "run"), out / "finetune",
                                    options.finetune_minutes, gpu, options.jobs)
        timer.lap("fine-tuning")
    elif options.finetune_minutes > 0:
        log("fine-tuning: skipped (it needs two labels with three recordings each; --audio DIR: sub-folders)")
    summary = write_report(out / "run", manifests, audio, index, out / "report", gpu, timer.seconds,
                           options.command_line, finetuning)
    timer.lap("report")
    _log_summary(summary, out)
    return summary


def prepare_corpus(options: DemoOptions, out: Path):
    """The audio folder to train on and its index (the chunks' categories, sources, lengths)."""
    if options.audio:
        audio = options.audio.resolve()
        index = index_of_folder(audio)
        log(f"corpus: your audio in {audio} ({len(index)} files)")
        return audio, index
    audio = out / "corpus"
    build_corpus(audio, options.packages, options.hours_of_audio, options.jobs)
    return audio, read_index(audio)


def _log_summary(summary: dict, out: Path) -> None:
    valid = summary["valid"]
    log(f"done in {elapsed() / 60:.1f} min: {summary['updates']} updates; last validation loss "
        f"{format_number(valid.get('loss'))} (recon {format_number(valid.get('loss_recon'))}, "
        f"InfoNCE {format_number(valid.get('loss_info_nce'))})")
    for task, result in (summary.get("probe") or {}).items():
        log(f"probe '{task}' ({len(result['classes'])} classes) test accuracy (all layers): pretrained "
            f"{result['pretrained']['all']['accuracy']:.3f}, random init {result['random']['all']['accuracy']:.3f}, "
            f"log-mel {result['logmel']['accuracy']:.3f}")
    finetuning = summary.get("finetuning")
    if finetuning:
        log(f"fine-tuning by {finetuning['task']} ({len(finetuning['classes'])} classes), test accuracy: " + ", ".join(
            f"{name} {run['accuracy']:.3f}" for name, run in finetuning["runs"].items()))
    log(f"report: {out / 'report' / 'index.html'}")
    log(f"checkpoint: {checkpoint_path(out / 'run')}")
