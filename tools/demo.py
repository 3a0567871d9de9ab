#!/usr/bin/env python
"""Pretrain a small MAE-AST on a built-in corpus and write a report.

    bash tools/demo.sh [--minutes 8] [--audio DIR] [--out demo_runs/default]

Without --audio, the corpus is real speech that espeak-ng synthesises in twelve languages and
several voices (a program nobody here wrote, shipped by Debian). The run is resumable: run
the command again and it reuses the corpus and continues from the last checkpoint.
"""
import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
LANGS = ["en", "de", "fr", "es", "it", "pt", "nl", "pl", "cs", "sv", "fi", "ru"]
TEXTS = [
    "one two three four five six seven eight nine ten",
    "the weather today is cold and windy with some rain in the evening",
    "please bring the red book and the blue pen to the meeting tomorrow",
    "music and speech have different patterns of energy in time and frequency",
    "a quick brown fox jumps over the lazy dog beside the quiet river",
    "learning from unlabelled audio needs no transcripts at all",
]


def log(msg):
    print(f"[demo] {msg}", flush=True)


def build_speech_corpus(folder: Path):
    """espeak-ng speech, 16 kHz wav, one folder per language."""
    done = folder / ".complete"
    if done.exists():
        return
    log(f"building the speech corpus in {folder}")
    for lang in LANGS:
        (folder / lang).mkdir(parents=True, exist_ok=True)
        for i, text in enumerate(TEXTS):
            for speed in (130, 175):
                for variant in ("", "+f2", "+m3"):
                    out = folder / lang / f"{i}_{speed}{variant.replace('+', '_')}.wav"
                    subprocess.run(["espeak-ng", "-v", lang + variant, "-s", str(speed), "-w", str(out), text],
                                   check=True, capture_output=True)
    done.touch()


def train(manifests: Path, run_dir: Path, minutes: float):
    overrides = [
        f"common.user_dir={REPO / 'mae_ast'}", f"task.data={manifests}", f"hydra.run.dir={run_dir}",
        "common.cpu=true", "common.fp16=false", "common.log_interval=10", "dataset.num_workers=1",
        "dataset.max_tokens=320000", "task.max_sample_size=96000", "task.min_sample_size=8000",
        "model.encoder_layers=4", "model.decoder_layers=1", "model.encoder_embed_dim=192",
        "model.decoder_embed_dim=192", "model.encoder_ffn_embed_dim=768", "model.encoder_attention_heads=4",
        "model.encoder_layerdrop=0", "model.max_token_length=4000", "task.mask_type=chunk_mask",
        "optimization.lr=[0.0005]", "lr_scheduler.warmup_updates=100", "optimization.max_update=100000",
        f"optimization.stop_time_hours={minutes / 60:.4f}", "checkpoint.save_interval_updates=100",
        "checkpoint.keep_interval_updates=1", "dataset.validate_interval_updates=100",
    ]
    cmd = [str(BIN / "fairseq-hydra-train"), "--config-dir", str(REPO / "config" / "pretrain"),
           "--config-name", "mae_ast", *overrides]
    log(f"pretraining for {minutes:g} min; log: {run_dir / 'hydra_train.log'}")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=dict(os.environ, OMP_NUM_THREADS=str(os.cpu_count() or 1)))
    for line in proc.stdout:
        m = re.search(r"\]\[(train_inner|valid)\]\[INFO\] - (\{.*\})", line)
        if m:
            r = json.loads(m.group(2))
            prefix = "valid_" if m.group(1) == "valid" else ""
            log(f"{m.group(1):11s} update {r.get(prefix + 'num_updates', '?'):>5} loss {r[prefix + 'loss']} "
                f"(recon {r[prefix + 'loss_recon']}, InfoNCE {r[prefix + 'loss_info_nce']})")
    if proc.wait() != 0:
        sys.exit(f"[demo] training failed; see {run_dir / 'hydra_train.log'}")


def report(run_dir: Path, out: Path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = {"train_inner": [], "valid": []}
    for line in (run_dir / "hydra_train.log").read_text().splitlines():
        m = re.search(r"\]\[(train_inner|valid)\]\[INFO\] - (\{.*\})", line)
        if m:
            curves[m.group(1)].append(json.loads(m.group(2)))
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key in zip(axes, ("loss_recon", "loss_info_nce")):
        for kind, prefix in (("train_inner", ""), ("valid", "valid_")):
            pts = [(int(r[prefix + "num_updates"]), float(r[prefix + key])) for r in curves[kind]]
            if pts:
                ax.plot(*zip(*pts), "o-" if kind == "valid" else "-", label=kind.replace("_inner", ""))
        ax.set_title(key), ax.set_xlabel("update"), ax.legend()
    fig.tight_layout()
    out.mkdir(parents=True, exist_ok=True)
    fig.savefig(out / "loss_curves.png", dpi=100)
    last = curves["valid"][-1] if curves["valid"] else {}
    (out / "index.html").write_text(
        "<html><body><h1>MAE-AST demo</h1><img src='loss_curves.png'>"
        f"<pre>{json.dumps(last, indent=1)}</pre></body></html>")
    return last


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=8, help="training time (default 8)")
    p.add_argument("--audio", type=Path, help="your own audio folder instead of the built-in corpus")
    p.add_argument("--out", type=Path, default=REPO / "demo_runs" / "default", help="work folder")
    args = p.parse_args()
    start = time.time()
    audio = args.audio or args.out / "corpus"
    if not args.audio:
        build_speech_corpus(audio)
    manifests = args.out / "manifests"
    if not (manifests / "train.tsv").exists():
        subprocess.run([sys.executable, str(REPO / "tools" / "make_manifest.py"), str(audio), "--dest",
                        str(manifests), "--valid-percent", "0.05", "--jobs", "2"], check=True)
    train(manifests, args.out / "run", args.minutes)
    last = report(args.out / "run", args.out / "report")
    log(f"done in {(time.time() - start) / 60:.1f} min; last validation loss {last.get('valid_loss', 'n/a')}")
    log(f"report: {args.out / 'report' / 'index.html'}; checkpoint: {args.out / 'run' / 'checkpoints' / 'checkpoint_last.pt'}")


if __name__ == "__main__":
    main()
