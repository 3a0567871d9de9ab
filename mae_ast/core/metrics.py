"""Classification metrics over a whole evaluation set, in torch (equal to scikit-learn's
``accuracy_score``, ``average_precision_score`` and ``roc_auc_score`` per class; tests check).

    scores:  (n, C) float, higher = more likely (logits or probabilities: only the order counts)
    targets: (n, C) float in [0, 1]; a class is positive where its target is > 0.5

Averages are macro over the classes that can be scored: average precision needs a positive
clip of the class, ROC-AUC a positive and a negative one (AudioSet evaluation sets miss some
classes; sklearn's macro average would raise or return nan there).
"""
from typing import Dict, Sequence

import torch


def multi_hot(labels: Sequence[Sequence[int]], num_classes: int) -> torch.Tensor:
    """Targets as these metrics take them: (n, num_classes) float, 1 where a clip has the label."""
    out = torch.zeros(len(labels), num_classes)
    for i, clip_labels in enumerate(labels):
        out[i, list(clip_labels)] = 1.0
    return out


def accuracy(scores: torch.Tensor, targets: torch.Tensor) -> float:
    """Share of clips whose highest score is on their (largest) target class."""
    return float((scores.argmax(1) == targets.argmax(1)).float().mean())


def _ranked(scores: torch.Tensor, positives: torch.Tensor):
    """Per class, scores sorted high to low with their positive flags, and where each run of
    tied scores ends (sklearn counts tied scores as one threshold)."""
    order = scores.argsort(dim=0, descending=True, stable=True)
    s = scores.gather(0, order)
    pos = positives.gather(0, order).double()
    last_of_tie = torch.ones_like(s, dtype=torch.bool)
    last_of_tie[:-1] = s[1:] != s[:-1]
    return s, pos, last_of_tie


def average_precision(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """(C,) average precision per class: sum over thresholds of (recall step) x precision;
    nan for a class without positives."""
    _, pos, last = _ranked(scores.double(), targets > 0.5)
    tp = pos.cumsum(0)
    seen = torch.arange(1, len(pos) + 1, dtype=torch.float64)[:, None].expand_as(tp)
    n_pos = tp[-1]
    ap = []
    for c in range(pos.size(1)):
        at = last[:, c]  # thresholds: the end of each tie run
        tp_c, seen_c = tp[at, c], seen[at, c]
        recall_step = torch.diff(tp_c, prepend=tp_c.new_zeros(1)) / n_pos[c]
        ap.append((recall_step * tp_c / seen_c).sum())
    ap = torch.stack(ap)
    return torch.where(n_pos > 0, ap, torch.full_like(ap, float("nan")))


def roc_auc(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """(C,) area under the ROC curve per class (ties count one half: the Mann-Whitney U
    statistic); nan for a class without positives or without negatives."""
    positives = targets > 0.5
    ranks = _average_ranks(scores.double())  # 1 = lowest
    n_pos = positives.sum(0).double()
    n_neg = positives.size(0) - n_pos
    rank_sum = (ranks * positives).sum(0)
    auc = (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
    return torch.where((n_pos > 0) & (n_neg > 0), auc, torch.full_like(auc, float("nan")))


def _average_ranks(x: torch.Tensor) -> torch.Tensor:
    """Ranks 1..n along dim 0, tied values sharing the mean of their ranks."""
    order = x.argsort(dim=0, stable=True)
    s = x.gather(0, order)
    ranks = torch.empty_like(x)
    for c in range(x.size(1)):
        _, inverse, counts = torch.unique_consecutive(s[:, c], return_inverse=True, return_counts=True)
        ends = counts.cumsum(0).double()
        mean_rank = ends - (counts.double() - 1) / 2
        ranks[order[:, c], c] = mean_rank[inverse]
    return ranks


def _macro(per_class: torch.Tensor) -> float:
    valid = ~per_class.isnan()
    return float(per_class[valid].mean()) if bool(valid.any()) else float("nan")


def summary(scores: torch.Tensor, targets: torch.Tensor, multi_label: bool) -> Dict[str, float]:
    """The figures a run reports: accuracy for single-label sets, mAP and macro ROC-AUC for
    multi-label ones (and mAP beside accuracy for single-label ones, for comparison)."""
    out = {"mAP": _macro(average_precision(scores, targets))}
    if multi_label:
        out["roc_auc"] = _macro(roc_auc(scores, targets))
    else:
        out["accuracy"] = accuracy(scores, targets)
    return out
