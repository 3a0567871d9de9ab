"""The demo's fine-tuning stage: the pretrained checkpoint as a classifier of the corpus's sources.

1. Labelled manifests with ``tools/make_manifest.py --labels``: every chunk labelled by its
   source (by its category when the corpus has no more sources than categories), split by
   recording (a fold column in a CSV), so chunks of one file never sit on both sides.
2. Three fine-tuning runs with ``fairseq-hydra-train --config-name mae_ast_finetune``, the same
   minutes each: from the pretrained checkpoint, from random initialisation (same
   architecture), and the linear probe (pretrained encoder frozen, head only).
3. ``tools/evaluate.py`` on the held-out recordings: accuracy, per-class figures, confusion matrix.
"""
import csv
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from mae_ast import fairseq_log

from .console import fail, log
from .train import REPO, VENV_BIN, model_overrides

RUNS = {  # name: (what the report calls it, overrides)
    "pretrained": ("fine-tuned from the pretrained checkpoint", []),
    "random": ("fine-tuned from random initialisation", []),
    "probe": ("linear probe (pretrained encoder frozen)", ["model.freeze_encoder=true"]),
}
CLIP_SECONDS = 2.0  # crop length in fine-tuning (the probe's window): short steps, more of them
TEST_SHARE, VALID_SHARE = 0.2, 0.1  # of the recordings of each label


def label_task(index: Sequence[dict]) -> str:
    """``source`` when the corpus has more sources than categories (a harder task), else ``category``."""
    sources = {row.get("source", "") for row in index}
    categories = {row.get("category", "") for row in index}
    return "source" if len(sources) > max(len(categories), 1) else "category"


def fold_of(file: str, label: str, files_of_label: Sequence[str]) -> str:
    """test / valid / train for a recording: a fixed share of each label's recordings (at least
    one for test when the label has three or more), chosen by a hash of the file name."""
    ranked = sorted(files_of_label, key=lambda f: hashlib.sha1(f.encode()).hexdigest())
    n = len(ranked)
    n_test = max(1, round(TEST_SHARE * n)) if n >= 3 else 0
    n_valid = max(1, round(VALID_SHARE * n)) if n >= 3 else 0
    position = ranked.index(file)
    return "test" if position < n_test else "valid" if position < n_test + n_valid else "train"


def files_by_label(index: Sequence[dict], task: str) -> Dict[str, List[str]]:
    """{label: its recordings}; chunks without a label (files at the top of --audio DIR) left out."""
    files_of: Dict[str, set] = {}
    for row in index:
        if row.get(task):
            files_of.setdefault(row[task], set()).add(row["file"])
    return {label: sorted(files) for label, files in files_of.items()}


def can_finetune(index: Sequence[dict]) -> bool:
    """At least two labels with three recordings each: one for test, one for validation."""
    return sum(len(files) >= 3 for files in files_by_label(index, label_task(index)).values()) >= 2


def write_label_csv(index: Sequence[dict], task: str, path: Path) -> None:
    files_of = files_by_label(index, task)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "label", "fold"])
        for row in index:
            if row.get(task):
                writer.writerow([row["path"], row[task], fold_of(row["file"], row[task], files_of[row[task]])])


def make_labelled_manifests(audio: Path, index: Sequence[dict], out: Path, jobs: int) -> str:
    """train/valid/test .tsv and .lbl and labels.csv in ``out/data``; returns the label task."""
    task = label_task(index)
    data = out / "data"
    stamp = data / ".complete"
    key = f"{audio.resolve()}:{task}:{len(index)}"
    if stamp.exists() and stamp.read_text() == key:
        log(f"fine-tuning: reusing the labelled manifests in {data}")
        return task
    out.mkdir(parents=True, exist_ok=True)
    labels = out / f"{task}_labels.csv"
    write_label_csv(index, task, labels)
    command = [sys.executable, str(REPO / "tools" / "make_manifest.py"), str(audio), "--dest", str(data),
               "--labels", str(labels), "--path-column", "path", "--label-column", "label",
               "--fold-column", "fold", "--valid-folds", "valid", "--test-folds", "test", "--jobs", str(jobs)]
    log(f"fine-tuning: labelled manifests by {task}: tools/make_manifest.py {audio} --labels {labels} ...")
    proc = subprocess.run(command, capture_output=True, text=True)
    if proc.returncode != 0:
        fail(f"make_manifest.py --labels failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    stamp.write_text(key)
    return task


def finetune_command(data: Path, run_dir: Path, checkpoint: Path, name: str, minutes: float,
                     gpu: bool, extra: Sequence[str] = ()) -> List[str]:
    """``extra``: overrides the pre-training run had beyond the device's size (a frame model's kernel)."""
    # the pre-training run's architecture and device (its model_overrides); fine-tuning refuses
    # common.fp16 (the fp32 front end) and runs the encoder under bf16 autocast on a GPU instead
    keep = ("model.encoder_", "common.")
    overrides = [o for o in model_overrides(gpu) if o.startswith(keep) and not o.startswith("common.fp16")]
    overrides += ["common.fp16=false"] + (["model.autocast_dtype=bf16"] if gpu else [])
    overrides += [
        f"common.user_dir={REPO / 'mae_ast'}", f"task.data={data}", f"hydra.run.dir={run_dir}",
        "common.log_interval=10", f"task.max_sample_size={int(CLIP_SECONDS * 16000)}",
        "model.max_token_length=4000", "model.encoder_layerdrop=0", "dataset.batch_size=16",
        "dataset.num_workers=1", "optimization.lr=[0.002]" if name == "probe" else "optimization.lr=[0.0005]",
        # SpecAugment as the base config sets it (a frequency band and a time band of at most a
        # fifth of each clip, logged at the start): the same defaults a user's class folders get
        "optimization.max_update=100000", "optimization.max_epoch=0",
        f"optimization.stop_time_hours={minutes / 60:.4f}",
        "checkpoint.best_checkpoint_metric=accuracy", "checkpoint.maximize_best_checkpoint_metric=true",
        "checkpoint.no_epoch_checkpoints=true", "dataset.validate_interval=1",
        *RUNS[name][1], *extra,
    ]
    if name != "random":
        overrides.append(f"model.pretrained_checkpoint={checkpoint}")
    return [str(VENV_BIN / "fairseq-hydra-train"), "--config-dir", str(REPO / "config" / "finetune"),
            "--config-name", "mae_ast_finetune", *overrides]


def finetune(data: Path, run_dir: Path, checkpoint: Path, name: str, minutes: float, gpu: bool,
             extra: Sequence[str] = ()) -> None:
    """One run, reused while the pretrained checkpoint and the minutes are the same; otherwise
    started afresh (a fine-tuning run of an older checkpoint is not continued)."""
    done = run_dir / ".trained_for"
    stat = checkpoint.stat()
    command = finetune_command(data, run_dir, checkpoint, name, minutes, gpu, extra)
    key = f"{' '.join(command)}\n{checkpoint} {stat.st_mtime_ns}:{stat.st_size}"
    if done.exists() and done.read_text() == key and (run_dir / "checkpoints" / "checkpoint_best.pt").exists():
        log(f"fine-tuning: reusing {run_dir}")
        return
    shutil.rmtree(run_dir, ignore_errors=True)
    log(f"fine-tuning: {RUNS[name][0]}, {minutes:g} min; log: {run_dir / 'hydra_train.log'}")
    env = dict(os.environ, OMP_NUM_THREADS=str(os.cpu_count() or 1))
    proc = subprocess.run(command, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        fail(f"fine-tuning ({name}) failed; see {run_dir / 'hydra_train.log'}\n{proc.stdout[-3000:]}{proc.stderr[-2000:]}")
    done.write_text(key)


def evaluate(run_dir: Path, data: Path, out: Path) -> dict:
    """tools/evaluate.py on the test split; its metrics.json, plus the run's update count."""
    command = [sys.executable, str(REPO / "tools" / "evaluate.py"),
               str(run_dir / "checkpoints" / "checkpoint_best.pt"), str(data), "--split", "test", "--out", str(out)]
    proc = subprocess.run(command, capture_output=True, text=True)
    if proc.returncode != 0:
        fail(f"evaluate.py failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    result = json.loads((out / "metrics.json").read_text())
    records = [r for r in fairseq_log.read_log_file(run_dir / "hydra_train.log") if r.number("num_updates") is not None]
    result["updates"] = int(max((r.number("num_updates") for r in records), default=0))
    valid = [r for r in records if r.kind == "valid" and r.number("accuracy") is not None]
    result["best_valid_accuracy"] = max((r.number("accuracy") for r in valid), default=None)
    result["confusion_png"] = str(out / "confusion.png")
    return result


def run_finetuning(audio: Path, index: Sequence[dict], checkpoint: Path, out: Path, minutes: float,
                   gpu: bool, jobs: int, runs: Sequence[str] = tuple(RUNS), extra: Sequence[str] = (),
                   labelled: Optional[Path] = None) -> dict:
    """The whole stage; returns the report's fine-tuning section. ``runs``: which of RUNS
    (``pretrained`` among them); ``labelled``: the folder whose ``data/`` holds the labelled
    manifests, to share them between stages (default ``out``)."""
    labelled = labelled or out
    task = make_labelled_manifests(audio, index, labelled, jobs)
    data = labelled / "data"
    results = {}
    runs = [name for name in RUNS if name in runs]
    for name in runs:
        run_dir = out / name
        finetune(data, run_dir, checkpoint, name, minutes, gpu, extra)
        results[name] = evaluate(run_dir, data, out / f"eval_{name}")
        log(f"fine-tuning: {RUNS[name][0]}: test accuracy {results[name]['accuracy']:.3f} "
            f"({results[name]['updates']} updates)")
    return {"task": task, "minutes_per_run": minutes, "clip_seconds": CLIP_SECONDS,
            "runs": {name: dict(results[name], title=RUNS[name][0]) for name in runs},
            "classes": sorted(results["pretrained"]["per_class"])}
