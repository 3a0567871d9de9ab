"""The demo's report: what the pre-training run learned, in ``report.json`` and ``index.html``.

Loss curves from fairseq's json log, reconstructions of validation clips, the linear probe
(``probe``) and a summary of the corpus. Reused while the checkpoint is unchanged.
"""
import json
import math
import os
import shutil
from collections import defaultdict
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from mae_ast import fairseq_log
from mae_ast.core.features import SAMPLE_RATE
from mae_ast.manifest import Manifest

from . import html
from .console import log
from .probe import run_probe
from .train import LOSSES, checkpoint_path

CURVE_KINDS = ("train_inner", "valid")
LOSS_TITLES = {"loss": "total loss (10 x recon + InfoNCE)", "loss_recon": "reconstruction (MSE on masked patches)",
               "loss_info_nce": "InfoNCE (nats)"}
RECONSTRUCTIONS = 4
RECONSTRUCTION_SECONDS = 8.0
LONG_CLIP_SECONDS = 4.0  # reconstructions prefer clips at least this long


def read_curves(run_dir: Path) -> Dict[str, List[dict]]:
    """{kind: [{num_updates, loss, loss_recon, loss_info_nce, wall}]} for train_inner and valid,
    from ``hydra_train.log``, one record per update (a resumed run's later record wins)."""
    keys = ("num_updates", *LOSSES)
    records = [r for r in fairseq_log.read_log_file(run_dir / "hydra_train.log")
               if all(r.number(key) is not None for key in keys)]
    curves = {}
    for kind in CURVE_KINDS:
        curves[kind] = [dict({key: r.number(key) for key in keys}, wall=_wall(r))
                        for r in fairseq_log.last_per_update(records, kind)]
    return curves


def _wall(record: fairseq_log.LogRecord) -> float:
    wall = record.number("wall")
    return math.nan if wall is None else wall


def plot_curves(curves: Dict[str, List[dict]], path: Path) -> None:
    """The three losses side by side, train and validation, against updates."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for ax, (key, title) in zip(axes, LOSS_TITLES.items()):
        for kind, style in (("train_inner", "-"), ("valid", "o-")):
            points = [(record["num_updates"], record[key]) for record in curves[kind]]
            if points:
                ax.plot(*zip(*points), style, label=kind.replace("_inner", ""), ms=4)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("update")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def pick_validation_clips(manifests: Path, index: Sequence[dict], count: int = RECONSTRUCTIONS):
    """Up to ``count`` validation clips as (path, name in the manifest, category), at least 4 s
    long where possible, one category after another."""
    valid = Manifest.load(str(manifests / "valid.tsv"))
    category = {row["path"]: row.get("category", "") for row in index}
    clips = sorted(range(len(valid)), key=lambda i: (valid.sizes[i] < LONG_CLIP_SECONDS * SAMPLE_RATE, valid.names[i]))
    by_category = defaultdict(list)
    for i in clips:
        by_category[category.get(valid.names[i], "")].append(i)
    chosen = []
    while len(chosen) < count and any(by_category.values()):
        for key in sorted(by_category):  # round robin over the categories
            if by_category[key] and len(chosen) < count:
                chosen.append(by_category[key].pop(0))
    return [(valid.audio_path(i), valid.names[i], category.get(valid.names[i], "")) for i in chosen]


def write_reconstructions(model, clips, out: Path) -> List[dict]:
    """One figure per clip (spectrogram, what the encoder saw, reconstruction), the three as
    audio (wav files named in ``audio``), and its numbers."""
    from mae_ast import analysis

    written = []
    for i, (path, name, category) in enumerate(clips):
        wav = analysis.read_audio(str(path), max_seconds=RECONSTRUCTION_SECONDS)
        reconstruction = analysis.reconstruct(model, wav, seed=i)
        figure = f"reconstruction_{i}.png"
        analysis.plot_reconstruction(reconstruction, str(out / figure), f"{name} ({category})" if category else name)
        audio = analysis.write_reconstruction_audio(model, reconstruction, str(out / f"reconstruction_{i}"), seed=i)
        written.append({"clip": name, "category": category, "figure": figure, "mse": reconstruction["mse"],
                        "masked_share": float(reconstruction["mask"].mean()),
                        "audio": {part: Path(file).name for part, file in audio.items()}})
    return written


def corpus_summary(index: Sequence[dict]) -> List[dict]:
    """Chunks, minutes and languages per (category, source)."""
    by_source = defaultdict(lambda: [0, 0.0, set()])
    for row in index:
        entry = by_source[(row.get("category", ""), row.get("source", ""))]
        entry[0] += 1
        entry[1] += row["seconds"]
        entry[2].add(row.get("language", ""))
    return [{"category": category, "source": source, "chunks": chunks, "minutes": round(seconds / 60, 1),
             "languages": sorted(language for language in languages if language)}
            for (category, source), (chunks, seconds, languages) in sorted(by_source.items())]


def model_summary(model) -> dict:
    cfg = model.cfg
    return {"encoder_layers": cfg.encoder_layers, "encoder_embed_dim": cfg.encoder_embed_dim,
            "decoder_layers": cfg.decoder_layers, "patch": f"{cfg.ast_kernel_size_time}x{cfg.ast_kernel_size_chan}",
            "mask_type": model.mask_type, "mask_prob": cfg.random_mask_prob,
            "parameters": sum(p.numel() for p in model.parameters())}


def _losses(record: dict) -> dict:
    return {key: record.get(key) for key in LOSSES}


def _checkpoint_stamp(checkpoint: Path) -> str:
    """Changes whenever training writes the checkpoint again."""
    stat = checkpoint.stat()
    return f"{stat.st_mtime_ns}:{stat.st_size}"


def _reusable_report(out: Path, stamp: str, finetuning: Optional[dict]):
    """The earlier report.json when it was written for this very checkpoint and these
    fine-tuning results, else None."""
    if not ((out / "report.json").exists() and (out / "index.html").exists()):
        return None
    old = json.loads((out / "report.json").read_text())
    same = old.get("checkpoint_stamp") == stamp and old.get("finetuning") == json.loads(json.dumps(finetuning))
    # a report written before reconstructions came with audio is written again, with players
    complete = all("audio" in r for r in old.get("reconstructions", []))
    return old if same and complete else None


def write_report(run_dir: Path, manifests: Path, corpus: Path, index: Sequence[dict], out: Path, gpu: bool,
                 timings: Dict[str, float], command_line: Sequence[str], finetuning: Optional[dict] = None) -> dict:
    """Write report.json, index.html and the figures into ``out``; returns the summary."""
    checkpoint = checkpoint_path(run_dir)
    out.mkdir(parents=True, exist_ok=True)
    stamp = _checkpoint_stamp(checkpoint)
    old = _reusable_report(out, stamp, finetuning)
    if old is not None:
        log(f"report: reusing {out} (checkpoint unchanged)")
        return old
    import torch

    from mae_ast import analysis

    # small per-clip forward passes: more threads than free cores makes them 10-40x slower on a
    # busy 2-core machine (OpenMP threads wait for each other)
    torch.set_num_threads(max(1, min(4, (os.cpu_count() or 2) // 2)))
    device = "cuda" if gpu else "cpu"
    curves = read_curves(run_dir)
    plot_curves(curves, out / "loss_curves.png")
    log("report: loss curves written")

    model = analysis.load(str(checkpoint), device=device)
    reconstructions = write_reconstructions(model, pick_validation_clips(manifests, index), out)
    log(f"report: {len(reconstructions)} reconstruction figures and their audio written")

    probe = run_probe(checkpoint, corpus, index, device=device)
    last_train = curves["train_inner"][-1] if curves["train_inner"] else {}
    last_valid = curves["valid"][-1] if curves["valid"] else {}
    summary = {
        "checkpoint": str(checkpoint), "checkpoint_stamp": stamp, "device": "GPU" if gpu else "CPU",
        "model": model_summary(model),
        # the checkpoint's count: a run ends with a validation, train_inner records come every 10 updates
        "updates": int(max(last_train.get("num_updates", 0), last_valid.get("num_updates", 0))),
        "train": _losses(last_train), "valid": _losses(last_valid),
        "first_valid": _losses(curves["valid"][0]) if curves["valid"] else {},
        "corpus": corpus_summary(index), "reconstructions": reconstructions, "probe": probe,
        "finetuning": finetuning, "timings_s": timings,
    }
    if finetuning:
        confusion = Path(finetuning["runs"]["pretrained"]["confusion_png"])
        shutil.copyfile(confusion, out / "finetune_confusion.png")
    (out / "report.json").write_text(json.dumps(summary, indent=1))
    (out / "index.html").write_text(html.render(summary, command_line))
    return summary
