"""The demo's linear probe: how much the pretrained encoder's features know about the audio.

Clips (2 s windows of corpus chunks) are labelled by category and by source; features are the
mean over time of every encoder layer's output (and of the mean of all layers), for the
checkpoint, for the same architecture at random initialisation and for plain log-mel.
A logistic regression (``mae_ast.analysis.linear_probe``) is trained and tested on splits by
source file, so that chunks of one recording never sit on both sides.
"""
import random
import time
from collections import defaultdict
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from .console import log

PROBE_SECONDS = 2.0
PROBE_SPLITS = 3  # train/test splits by file; the report gives the mean accuracy
CLIPS_PER_CLASS = 200
MIN_FILES_PER_CLASS = 3  # fewer cannot be split into training and test files
FEATURES = ("logmel", "pretrained", "random")


def split_by_file(rows: Sequence[dict], test_share: float = 0.3, seed: int = 0):
    """Train/test split of labelled clips by source file, stratified by label."""
    rng = random.Random(seed)
    files_of = defaultdict(set)
    for row in rows:
        files_of[row["label"]].add(row["group"])
    test_files = set()
    for label, files in sorted(files_of.items()):
        files = sorted(files)
        rng.shuffle(files)
        if len(files) >= 2:
            test_files.update(files[: max(1, round(test_share * len(files)))])
    return [r for r in rows if r["group"] not in test_files], [r for r in rows if r["group"] in test_files]


def probe_tasks(index: Sequence[dict], per_class: int = CLIPS_PER_CLASS, seed: int = 0,
                min_seconds: float = PROBE_SECONDS) -> Dict[str, List[dict]]:
    """Labelled clips for the probes: {task: rows with label and group (source file)}. Only
    chunks of at least ``min_seconds``: every probe clip is a window of that length, so that
    clip duration (which differs a lot between sources) cannot give the class away."""
    rng = random.Random(seed)
    index = [row for row in index if row["seconds"] >= min_seconds]
    tasks = {}
    for task in ("category", "source"):
        by_label = _rows_by_label(index, task)
        n_categories = len({row["label"] for row in tasks.get("category", [])})
        if len(by_label) < 2 or (task == "source" and len(by_label) <= n_categories):
            continue  # one class, or no more sources than categories: the category task again
        rows = []
        for label, items in sorted(by_label.items()):
            items = sorted(items, key=lambda row: row["path"])
            rng.shuffle(items)
            rows += [dict(row, label=label, group=row["file"]) for row in items[:per_class]]
        tasks[task] = rows
    return tasks


def _rows_by_label(index: Sequence[dict], key: str) -> Dict[str, List[dict]]:
    """The rows by their value of ``key``, for the values that come from enough files."""
    by_label = defaultdict(list)
    for row in index:
        if row.get(key):
            by_label[row[key]].append(row)
    return {label: rows for label, rows in by_label.items()
            if len({row["file"] for row in rows}) >= MIN_FILES_PER_CLASS}


def run_probe(checkpoint: Path, corpus: Path, index: Sequence[dict], window: float = PROBE_SECONDS,
              device: str = "cpu", baselines: bool = True, every_layer: bool = True) -> Optional[dict]:
    """{task: classes, clip and file counts, and accuracies per feature and layer}, or None
    when the index has no classes to probe. ``baselines=False``: the checkpoint's features
    only, without the random-init and log-mel rows (half the time; they do not change along a run);
    ``every_layer=False``: only the mean of all layers (one probe per feature instead of one per layer)."""
    from mae_ast import analysis

    tasks = probe_tasks(index)
    if not tasks:
        return None
    model = analysis.load(str(checkpoint), decoder=False, device=device)
    clips = sorted({row["path"] for rows in tasks.values() for row in rows})
    seconds = {row["path"]: row["seconds"] for row in index}
    features = embed_clips(model, corpus, [(clip, seconds[clip]) for clip in clips], window, baselines)
    n_layers = len(model.encoder.layers)
    return {task: _probe_task(rows, features, n_layers, every_layer) for task, rows in tasks.items()}


def embed_clips(model, corpus: Path, clips: Sequence[tuple], window: float,
                baselines: bool = True) -> Dict[str, dict]:
    """{feature: {clip: (rows, dim) array}} for clips given as (path in the corpus, seconds):
    the window from each clip's middle, mean-pooled over time. ``pretrained`` and ``random``
    have a row per encoder layer plus one for the mean of all layers; ``logmel`` has one row."""
    import numpy as np
    import torch

    from mae_ast import analysis

    baseline = analysis.random_init_like(model) if baselines else None
    features = {name: {} for name in (FEATURES if baselines else ("pretrained",))}
    start = time.time()
    for i, (clip, seconds) in enumerate(clips):
        middle = max(0.0, (seconds - window) / 2)
        wav = analysis.read_audio(str(corpus / clip), max_seconds=window, start_seconds=middle)
        if baselines:
            features["logmel"][clip] = analysis.logmel(wav).mean(0).numpy()[None]
        for kind, encoder in (("pretrained", model), ("random", baseline))[:2 if baselines else 1]:
            layers = torch.stack([h.mean(0) for h in analysis.embed_layers(encoder, wav)]).numpy()
            features[kind][clip] = np.concatenate([layers, layers.mean(0, keepdims=True)])
        if (i + 1) % 200 == 0:
            log(f"report: embedded {i + 1}/{len(clips)} probe clips")
    log(f"report: embedded {len(clips)} probe clips in {time.time() - start:.0f} s")
    return features


def _probe_task(rows: Sequence[dict], features: dict, n_layers: int, every_layer: bool = True) -> dict:
    """One task's classes, split sizes (of the first split) and accuracies of every feature row."""
    splits = [split_by_file(rows, seed=seed) for seed in range(PROBE_SPLITS)]
    train, test = splits[0]
    result = {"classes": sorted({row["label"] for row in rows}), "splits": PROBE_SPLITS,
              "train_clips": len(train), "test_clips": len(test),
              "train_files": len({row["group"] for row in train}), "test_files": len({row["group"] for row in test})}
    if "logmel" in features:
        result["logmel"] = _mean_accuracy(features["logmel"], 0, splits)
    for kind in [kind for kind in ("pretrained", "random") if kind in features]:
        result[kind] = {f"layer{layer + 1}": _mean_accuracy(features[kind], layer, splits)
                        for layer in (range(n_layers) if every_layer else ())}
        result[kind]["all"] = _mean_accuracy(features[kind], n_layers, splits)  # the mean of all layers
    return result


def _mean_accuracy(features: dict, layer: int, splits) -> Dict[str, float]:
    """Accuracy and balanced accuracy of one feature row, averaged over the train/test splits."""
    import numpy as np

    from mae_ast import analysis

    def stack(rows):
        return np.stack([features[row["path"]][layer] for row in rows])

    runs = [analysis.linear_probe(stack(train), [r["label"] for r in train], stack(test), [r["label"] for r in test],
                                  groups_train=[r["group"] for r in train]) for train, test in splits]
    return {key: float(np.mean([run[key] for run in runs])) for key in ("accuracy", "balanced_accuracy")}
