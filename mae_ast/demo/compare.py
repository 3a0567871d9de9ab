"""Pre-training recipes side by side at equal compute: the engine of ``tools/compare_recipes.py``.

Every recipe pre-trains the demo's model for its device (same encoder and decoder size, same
batch of clips, same threads, one recipe at a time) on the same manifests for the same training
time; only the pretext task differs (masking, targets, decoder attention, masks per clip). The
run is stopped at ``points`` evenly spaced times and resumed (fairseq counts the training time
over resumes), and the checkpoint at each point is scored by the demo's linear probe (and,
optionally, the last one by a short fine-tuning). Corpus, manifests, training, probe and
fine-tuning are the demo's own (``pipeline``, ``train``, ``probe``, ``finetune``).

Layout of ``out``: ``corpus/`` and ``manifests/`` (as the demo's), ``recipes/NAME/`` (``run/``
the training run, ``points/`` a checkpoint and its probe per point, ``finetune/``,
``result.json``), and the comparison: ``compare.json``, ``compare.md``, ``accuracy.png``,
``index.html``. A recipe whose ``result.json`` was written with the same settings is reused;
an interrupted one resumes from its last point.
"""
import hashlib
import json
import os
import shutil
from dataclasses import dataclass, field
from html import escape
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from mae_ast import fairseq_log

from . import html
from .console import log
from .corpus import with_manifest_lengths
from .finetune import can_finetune, run_finetuning
from .pipeline import DemoOptions, prepare_corpus
from .probe import run_probe
from .train import PAPER_PATCH, checkpoint_path, make_manifests, model_overrides, train

FRAME_KERNEL = ("model.ast_kernel_size_time=2", "model.ast_kernel_size_chan=128",
                "model.ast_kernel_stride_time=2", "model.ast_kernel_stride_chan=128")
# MW-MAE's eight decoder heads' windows (tokens, 0 = global); a decoder with fewer heads takes
# that many of them, evenly spaced (the demo's CPU model has 4 heads: 2, 10, 125, global)
MWMAE_WINDOWS = (2, 5, 10, 25, 50, 125, 0, 0)


@dataclass(frozen=True)
class Recipe:
    title: str
    overrides: Tuple[str, ...]  # on top of the demo's training command (config/pretrain/mae_ast.yaml)


RECIPES: Dict[str, Recipe] = {
    "paper_patch": Recipe("MAE-AST patch 16x16, chunk masking 75 % (the paper's; the demo's)", PAPER_PATCH),
    "paper_frame": Recipe("MAE-AST frame 2x128, random masking 75 % (the paper's)",
                          ("task.mask_type=random_mask", "model.random_mask_prob=0.75", *FRAME_KERNEL)),
    "audiomae": Recipe("Audio-MAE: random 80 %, per-patch normalised targets, local-window decoder",
                       ("+recipe=audiomae",)),
    "mwmae": Recipe("MW-MAE: random 80 %, multi-window decoder heads", ("+recipe=mwmae",)),
    "eat_masking": Recipe("EAT's masking: inverse blocks 80 %, 16 masks per clip", ("+recipe=eat_masking",)),
}


@dataclass
class CompareOptions:
    """What tools/compare_recipes.py's flags ask for."""

    out: Path
    recipes: Sequence[str]
    minutes: float  # training time per recipe
    points: int = 4  # checkpoints scored along each run, evenly spaced in time
    finetune_minutes: float = 0.0  # a fine-tuning run of each recipe's last checkpoint (0: none)
    hours_of_audio: float = 1.5
    packages: Sequence[str] = ()
    audio: Optional[Path] = None
    jobs: int = 1
    cpu: bool = False
    command_line: List[str] = field(default_factory=list)


def recipe_overrides(name: str, gpu: bool) -> List[str]:
    """The recipe's overrides for the device's model: MW-MAE's windows cut to its head count."""
    overrides = list(RECIPES[name].overrides)
    if name == "mwmae":
        heads = int(next(o for o in model_overrides(gpu) if o.startswith("model.encoder_attention_heads="))
                    .split("=")[1])
        overrides.append(f"model.decoder_head_windows=[{','.join(map(str, pick_windows(heads)))}]")
    return overrides


def pick_windows(heads: int) -> List[int]:
    """``heads`` of MW-MAE's eight window sizes, evenly spaced from the smallest to a global one."""
    last = len(MWMAE_WINDOWS) - 1
    return [MWMAE_WINDOWS[round(i * last / max(heads - 1, 1))] for i in range(heads)]


def run(options: CompareOptions) -> dict:
    """Every recipe (trained, or reused), then the table, plot and page; returns compare.json's content."""
    import torch

    gpu = torch.cuda.is_available() and not options.cpu
    out = options.out.resolve()
    demo_options = DemoOptions(out=out, minutes=options.minutes, hours_of_audio=options.hours_of_audio,
                               packages=options.packages, audio=options.audio, jobs=options.jobs, cpu=options.cpu)
    audio, index = prepare_corpus(demo_options, out)
    manifests = out / "manifests"
    make_manifests(audio, manifests, options.jobs)
    if options.audio:
        index = with_manifest_lengths(index, manifests)
    results = [run_recipe(name, options, gpu, audio, index, manifests) for name in options.recipes]
    summary = {"device": "GPU" if gpu else "CPU", "threads": os.cpu_count(), "minutes": options.minutes,
               "points": options.points, "model": model_overrides(gpu), "recipes": results,
               "command_line": list(options.command_line)}
    (out / "compare.json").write_text(json.dumps(summary, indent=1))
    (out / "compare.md").write_text(markdown_table(results) + "\n")
    plot_accuracy(results, out / "accuracy.png")
    (out / "index.html").write_text(render(summary))
    log(f"comparison: {out / 'compare.md'}, {out / 'accuracy.png'}, {out / 'index.html'}")
    return summary


def _settings_key(name: str, options: CompareOptions, gpu: bool, manifests: Path) -> str:
    """What a recipe's results depend on: a rerun with the same key reuses them."""
    train_list = (manifests / "train.tsv").read_bytes()
    return json.dumps({"recipe": recipe_overrides(name, gpu), "model": model_overrides(gpu), "gpu": gpu,
                       "minutes": options.minutes, "points": options.points,
                       "finetune_minutes": options.finetune_minutes,
                       "manifest": hashlib.sha1(train_list).hexdigest()}, sort_keys=True)


def run_recipe(name: str, options: CompareOptions, gpu: bool, audio: Path, index, manifests: Path) -> dict:
    """Train one recipe point by point, score each point; reused when its settings are the same."""
    folder = options.out.resolve() / "recipes" / name
    key = _settings_key(name, options, gpu, manifests)
    result_file, key_file = folder / "result.json", folder / "settings.json"
    if result_file.exists() and key_file.exists() and key_file.read_text() == key:
        log(f"{name}: reusing {folder}")
        return json.loads(result_file.read_text())
    if key_file.exists() and key_file.read_text() != key:
        log(f"{name}: settings changed, starting afresh")
        shutil.rmtree(folder)
    (folder / "points").mkdir(parents=True, exist_ok=True)
    key_file.write_text(key)
    overrides = recipe_overrides(name, gpu)
    points = []
    for i in range(1, options.points + 1):
        minutes = options.minutes * i / options.points
        log(f"{name}: training to {minutes:g} of {options.minutes:g} min")
        train(manifests, folder / "run", minutes, gpu, overrides)
        point = folder / "points" / f"point{i}.pt"
        if not point.exists():
            keep_point(checkpoint_path(folder / "run"), point)
        points.append(score_point(point, minutes, folder / "run", audio, index, gpu, baselines=i == options.points))
        log(f"{name}: {minutes:g} min, {points[-1]['updates']} updates, probe " + ", ".join(
            f"{task} {accuracy:.3f}" for task, accuracy in points[-1]["probe"].items()))
    finetuning = None
    if options.finetune_minutes > 0 and can_finetune(index):
        finetuning = run_finetuning(audio, index, folder / "points" / f"point{options.points}.pt",
                                    folder / "finetune", options.finetune_minutes, gpu, options.jobs,
                                    runs=("pretrained",), extra=[o for o in overrides if o.startswith("model.ast_kernel")],
                                    labelled=options.out.resolve() / "finetune")
    result = {"name": name, "title": RECIPES[name].title, "overrides": overrides, "points": points,
              "finetuning": finetuning}
    result_file.write_text(json.dumps(result, indent=1))
    return result


def keep_point(checkpoint: Path, point: Path) -> None:
    """A copy of the checkpoint without the optimizer state (a third of the size; enough to probe,
    fine-tune and read the training time from)."""
    import torch

    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    state.pop("last_optimizer_state", None)
    torch.save(state, point)


def score_point(point: Path, minutes: float, run_dir: Path, audio: Path, index, gpu: bool, baselines: bool) -> dict:
    """Updates, training seconds, clips and masked tokens seen up to the point, and its probe."""
    import torch

    state = torch.load(point, map_location="cpu", weights_only=True)
    updates = int(state["optimizer_history"][-1]["num_updates"])
    seconds = float(state["extra_state"].get("previous_training_time", float("nan")))
    cache = point.with_suffix(".probe.json")
    if cache.exists():
        probe = json.loads(cache.read_text())
    else:
        # the mean of all layers only: one probe per point instead of one per layer
        probe = run_probe(point, audio, index, device="cuda" if gpu else "cpu", baselines=baselines,
                          every_layer=False)
        cache.write_text(json.dumps(probe))
    clips, tokens = seen(fairseq_log.read_log_file(run_dir / "hydra_train.log"), updates)
    return {"minutes": minutes, "updates": updates, "train_seconds": seconds,
            "seconds_per_update": seconds / updates if updates else None, "clips_seen": clips,
            "tokens_seen": tokens,
            # the probe's headline: the mean of all layers' features, test accuracy
            "probe": {task: r["pretrained"]["all"]["accuracy"] for task, r in (probe or {}).items()},
            "probe_detail": probe}


def seen(records, updates: int) -> Tuple[Optional[int], Optional[int]]:
    """Clips and masked tokens (the loss's tokens: all K copies' with masks_per_clip) trained on in
    the first ``updates`` updates, from the train_inner records' per-update means (one record
    every 10 updates); the updates after the last record count at its means. (None, None)
    before the first record."""
    clips = tokens = 0.0
    last, means = 0, None
    for record in fairseq_log.last_per_update(records, "train_inner"):
        update = int(record.number("num_updates"))
        if update > updates:
            break
        means = (record.number("bsz") or 0.0, record.number("wpb") or 0.0)
        clips += (update - last) * means[0]
        tokens += (update - last) * means[1]
        last = update
    if means is None:
        return None, None
    return int(round(clips + (updates - last) * means[0])), int(round(tokens + (updates - last) * means[1]))


# ---- the comparison's outputs ------------------------------------------------------------------
TABLE_HEADER = ["recipe", "minutes", "updates", "s / update", "clips seen", "masked tokens seen"]


def _tasks(results: Sequence[dict]) -> List[str]:
    return sorted({task for r in results for p in r["points"] for task in p["probe"]})


def table_rows(results: Sequence[dict]) -> Tuple[List[str], List[list]]:
    tasks = _tasks(results)
    rows = [[r["name"], p["minutes"], p["updates"], p["seconds_per_update"], p["clips_seen"], p["tokens_seen"],
             *[p["probe"].get(task) for task in tasks]] for r in results for p in r["points"]]
    return TABLE_HEADER + [f"probe {task}" for task in tasks], rows


def _cell(x) -> str:
    if isinstance(x, float):
        return f"{x:.3f}" if abs(x) < 100 else f"{x:.0f}"
    return "" if x is None else str(x)


def markdown_table(results: Sequence[dict]) -> str:
    header, rows = table_rows(results)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(x) for x in row) + " |" for row in rows]
    return "\n".join(lines)


def plot_accuracy(results: Sequence[dict], path: Path) -> None:
    """Probe accuracy against training minutes, one line per recipe, one panel per probe task
    (dotted: the log-mel baseline, from any recipe's last point)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = _tasks(results) or ["(no probe)"]
    fig, axes = plt.subplots(1, len(tasks), figsize=(6 * len(tasks), 4), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        for r in results:
            points = [(p["minutes"], p["probe"][task]) for p in r["points"] if task in p["probe"]]
            if points:
                ax.plot(*zip(*points), "o-", label=r["name"], ms=4)
        logmel = [p["probe_detail"][task]["logmel"]["accuracy"] for r in results for p in r["points"]
                  if (p.get("probe_detail") or {}).get(task, {}).get("logmel")]
        if logmel:
            ax.axhline(logmel[0], ls=":", color="grey", label="log-mel mean")
        ax.set_title(f"linear probe: {task}", fontsize=10)
        ax.set_xlabel("training minutes")
        ax.set_ylabel("test accuracy (mean of all layers)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def render(summary: dict) -> str:
    """index.html: settings, the table, the plot, each recipe's overrides and final probe detail."""
    results = summary["recipes"]
    header, rows = table_rows(results)
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>MAE-AST recipes compared</title>"
             f"<style>{html.STYLE}</style></head><body>", "<h1>Pre-training recipes at equal compute</h1>",
             f"<p>Each recipe pre-trained the same model on the {summary['device']} "
             f"(<code>{escape(' '.join(summary['model']))}</code>) with {summary['threads']} threads, one recipe at "
             f"a time, for {summary['minutes']:g} min of training time, scored at {summary['points']} points by the "
             "demo's linear probe (logistic regression on the mean of all encoder layers' outputs over 2 s windows, "
             "split by source file; test accuracy, mean of 3 splits). Masked tokens seen count every masked copy "
             "of a clip.</p>",
             html.table(header, [["" if x is None else x for x in row] for row in rows]),
             "<img src='accuracy.png'>", "<h2>Recipes</h2>"]
    for r in results:
        parts.append(f"<h3>{escape(r['name'])}</h3><p>{escape(r['title'])}: <code>"
                     f"{escape(' '.join(r['overrides']))}</code></p>")
        last = r["points"][-1].get("probe_detail") or {}
        rows = [[task, d["pretrained"]["all"]["accuracy"], d.get("random", {}).get("all", {}).get("accuracy"),
                 d.get("logmel", {}).get("accuracy")] for task, d in last.items()]
        if rows:
            parts.append(html.table(["probe task (last point)", "pretrained", "random init", "log-mel"], rows))
        if r.get("finetuning"):
            run = r["finetuning"]["runs"]["pretrained"]
            parts.append(html.table(["fine-tuning", "test accuracy", "test mAP", "updates"],
                                    [[f"{r['finetuning']['task']}, {r['finetuning']['minutes_per_run']:g} min",
                                      run["accuracy"], run["mAP"], run["updates"]]]))
    parts.append(f"<p>Command: <code>python tools/compare_recipes.py {escape(' '.join(summary['command_line']))}"
                 "</code></p></body></html>")
    return "\n".join(parts)


def check_recipes(names: Sequence[str]) -> Optional[str]:
    """The error message for unknown recipe names, or None."""
    unknown = [name for name in names if name not in RECIPES]
    if unknown:
        return f"unknown recipe {', '.join(unknown)}; choose from {', '.join(RECIPES)}"
    if not names:
        return "no recipe given"
    return None

