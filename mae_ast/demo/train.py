"""The demo's manifests and pre-training run.

``make_manifests`` runs ``tools/make_manifest.py``; ``train`` runs ``fairseq-hydra-train`` with
the shipped paper config and overrides for a model that learns something in minutes (a small
one on a CPU, a wider one in fp16 on a GPU), echoes fairseq's loss records as progress lines,
and stops after a total training time (a rerun with more minutes resumes ``checkpoint_last.pt``).
"""
import os
import subprocess
import sys
from pathlib import Path
from typing import List, Sequence

from mae_ast import fairseq_log
from mae_ast.core.features import SAMPLE_RATE

from .console import fail, log
from .corpus import MIN_SECONDS

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent  # fairseq-hydra-train sits beside this python
VALID_SHARE = 0.05
LOSSES = ("loss", "loss_recon", "loss_info_nce")  # what our criterion logs: 10 x recon + InfoNCE
# the demo's pretext task, the paper's patch model's (tools/compare_recipes.py passes others)
PAPER_PATCH = ("task.mask_type=chunk_mask",)


def checkpoint_path(run_dir: Path) -> Path:
    return run_dir / "checkpoints" / "checkpoint_last.pt"


def make_manifests(audio: Path, manifests: Path, jobs: int) -> None:
    """train.tsv and valid.tsv of the audio folder; reused while the folder is the same."""
    stamp = manifests / ".complete"
    key = str(audio.resolve())
    if stamp.exists() and stamp.read_text() == key:
        log(f"manifests: reusing {manifests}")
        return
    log(f"manifests: tools/make_manifest.py {audio} --dest {manifests}")
    command = [sys.executable, str(REPO / "tools" / "make_manifest.py"), str(audio), "--dest", str(manifests),
               "--valid-percent", str(VALID_SHARE), "--jobs", str(jobs), "--min-seconds", str(MIN_SECONDS)]
    proc = subprocess.run(command, capture_output=True, text=True)
    if proc.returncode != 0:
        fail(f"make_manifest.py failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    summary = [line for line in proc.stdout.splitlines() + proc.stderr.splitlines() if line.strip()]
    log("manifests: " + (summary[-1] if summary else "done"))
    stamp.write_text(key)


def model_overrides(gpu: bool) -> List[str]:
    """Model size, batch and schedule: what trains well in minutes on the device at hand."""
    if gpu:  # one GPU: a 6-layer 384-wide encoder, ~200 s of audio per batch, fp16
        return ["common.fp16=true", "dataset.num_workers=6", "dataset.max_tokens=3200000",
                "task.max_sample_size=160000", "model.encoder_layers=6", "model.decoder_layers=2",
                "model.encoder_embed_dim=384", "model.decoder_embed_dim=384", "model.encoder_ffn_embed_dim=1536",
                "model.encoder_attention_heads=6", "optimization.lr=[0.0005]", "lr_scheduler.warmup_updates=300",
                "checkpoint.save_interval_updates=250", "dataset.validate_interval_updates=250"]
    # a CPU: a 4-layer 192-wide encoder, ~20 s of audio per batch
    return ["common.cpu=true", "common.fp16=false", "dataset.num_workers=1", "dataset.max_tokens=320000",
            "task.max_sample_size=96000", "model.encoder_layers=4", "model.decoder_layers=1",
            "model.encoder_embed_dim=192", "model.decoder_embed_dim=192", "model.encoder_ffn_embed_dim=768",
            "model.encoder_attention_heads=4", "optimization.lr=[0.0005]", "lr_scheduler.warmup_updates=100",
            "checkpoint.save_interval_updates=100", "dataset.validate_interval_updates=100"]


def train_command(manifests: Path, run_dir: Path, minutes: float, gpu: bool,
                  recipe: Sequence[str] = PAPER_PATCH) -> List[str]:
    """``recipe``: the overrides that choose the pretext task (masking, targets, decoder
    attention; ``+recipe=NAME``); the model size and batch stay the device's."""
    overrides = [
        f"common.user_dir={REPO / 'mae_ast'}", f"task.data={manifests}", f"hydra.run.dir={run_dir}",
        "common.log_interval=10", f"task.min_sample_size={int(MIN_SECONDS * SAMPLE_RATE)}",
        "model.encoder_layerdrop=0", "model.max_token_length=4000", *recipe,
        # the time limit ends the run, not the update count; fairseq counts it over resumes
        "optimization.max_update=100000", f"optimization.stop_time_hours={minutes / 60:.4f}",
        "checkpoint.keep_interval_updates=1", *model_overrides(gpu),
    ]
    return [str(VENV_BIN / "fairseq-hydra-train"), "--config-dir", str(REPO / "config" / "pretrain"),
            "--config-name", "mae_ast", *overrides]


def train(manifests: Path, run_dir: Path, minutes: float, gpu: bool, recipe: Sequence[str] = PAPER_PATCH) -> None:
    """Train until ``minutes`` of training in total; reused when that much is done already."""
    done = run_dir / ".trained_minutes"
    if done.exists() and float(done.read_text()) >= minutes and checkpoint_path(run_dir).exists():
        log(f"training: reusing {run_dir} (already trained {float(done.read_text()):g} min; "
            f"pass a larger --minutes to continue)")
        return
    resumed = checkpoint_path(run_dir).exists()
    log(f"training: {'resuming' if resumed else 'starting'} on {'GPU' if gpu else 'CPU'} until {minutes:g} min "
        f"of training in total; log: {run_dir / 'hydra_train.log'}")
    env = dict(os.environ, OMP_NUM_THREADS=str(os.cpu_count() or 1))
    proc = subprocess.Popen(train_command(manifests, run_dir, minutes, gpu, recipe), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env)
    tail = []  # the last lines, shown when the run fails
    for line in proc.stdout:
        tail = (tail + [line])[-40:]
        record = fairseq_log.parse_line(line)
        if record is not None and record.kind != "train":  # an epoch's summary: averages of what was shown
            _log_progress(record)
    if proc.wait() != 0:
        fail(f"training failed; see {run_dir / 'hydra_train.log'}\n" + "".join(tail[-15:]))
    done.write_text(str(minutes))


def _log_progress(record: fairseq_log.LogRecord) -> None:
    values = record.values
    log(f"training: {record.kind:11s} update {values.get('num_updates', '?'):>5} loss {values.get('loss', '?')} "
        f"(recon {values.get('loss_recon', '?')}, InfoNCE {values.get('loss_info_nce', '?')})")
