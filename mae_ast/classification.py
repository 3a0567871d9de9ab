"""Using a fine-tuned classifier on audio files: what ``tools/classify.py`` and
``tools/evaluate.py`` share.

Files of any format and length are decoded to 16 kHz mono, a block at a time (memory stays
bounded on a large evaluation set), and classified with :meth:`MAEASTClassifier.predict`
(long files in windows of the fine-tuning length, window scores averaged).
"""
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import List, Sequence, Tuple

import numpy as np
import torch

from . import audio
from .core.checkpoint import ClassifierInfo

BLOCK_FILES = 256  # files decoded and held at once


@dataclass
class Scores:
    probs: np.ndarray  # (n_files, n_classes); rows of unreadable files are nan
    failed: List[Tuple[int, str]] = field(default_factory=list)  # (file index, why)

    @property
    def ok(self) -> np.ndarray:
        return ~np.isnan(self.probs).any(1)


def _decode(path: str):
    try:
        return audio.read(path)
    except audio.AudioReadError as e:
        return e


def score_files(model, info: ClassifierInfo, paths: Sequence[str], batch_size: int = 16,
                precision: str = "fp32", jobs: int = 4) -> Scores:
    """Class probabilities of every file; a file that cannot be decoded gets a nan row and is
    listed in ``failed`` (with the decoder's reason), never dropped silently."""
    probs = np.full((len(paths), len(info.label_names)), np.nan, dtype=np.float32)
    failed = []
    with ThreadPoolExecutor(max(1, jobs)) as pool:
        for first in range(0, len(paths), BLOCK_FILES):
            block = list(range(first, min(first + BLOCK_FILES, len(paths))))
            wavs, kept = [], []
            for i, wav in zip(block, pool.map(_decode, [paths[i] for i in block])):
                if isinstance(wav, Exception):
                    failed.append((i, str(wav)))
                else:
                    wavs.append(wav)
                    kept.append(i)
            if wavs:
                probs[kept] = model.predict(wavs, info.window_samples, info.sigmoid,
                                            batch_size=batch_size, precision=precision).numpy()
    return Scores(probs, failed)


def top_k(probs: np.ndarray, names: Sequence[str], k: int) -> List[Tuple[str, float]]:
    """The ``k`` best (name, probability) pairs of one file, best first."""
    order = np.argsort(-probs, kind="stable")[:k]
    return [(names[i], float(probs[i])) for i in order]


def confusion_matrix(true: np.ndarray, predicted: np.ndarray, n_classes: int) -> np.ndarray:
    """(n_classes, n_classes) counts: row = true class, column = predicted class."""
    cm = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(cm, (true, predicted), 1)
    return cm


def plot_confusion(cm: np.ndarray, names: Sequence[str], path: str, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(names)
    size = min(4 + 0.3 * n, 30)
    fig, ax = plt.subplots(figsize=(size, size))
    rates = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    if n <= 60:  # beyond that the labels are unreadable anyway
        ax.set_xticks(range(n), names, rotation=90, fontsize=8)
        ax.set_yticks(range(n), names, fontsize=8)
    if n <= 25:
        for i in range(n):
            for j in range(n):
                if cm[i, j]:
                    ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=7,
                            color="white" if rates[i, j] > 0.5 else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def load_for_inference(path: str, device: str = "cpu"):
    """(classifier on ``device`` in eval mode, its ClassifierInfo)."""
    from .core.checkpoint import load_classifier

    model, info = load_classifier(path)
    return model.to(torch.device(device)), info
