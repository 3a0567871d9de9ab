"""``mae_ast.analysis.linear_probe`` against scikit-learn's LogisticRegression on imbalanced
classes, and its held-out split by source file (``groups_train``)."""
import numpy as np
import pytest

from mae_ast import analysis

# scikit-learn comes with fairseq-fixed (a dependency of it); imported plainly, so that a venv
# without it fails here instead of skipping
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, balanced_accuracy_score

L2_GRID = (1e-3, 1e-2, 1e-1)


@pytest.fixture(scope="module")
def imbalanced():
    """Three overlapping Gaussian classes in 16 dims, 240 / 80 / 30 examples, shuffled; a
    third held out as the test set; standardised with the training set's statistics."""
    rng = np.random.default_rng(0)
    counts = (240, 80, 30)
    centers = rng.normal(size=(3, 16)) * 0.4
    x = np.concatenate([c + rng.normal(size=(n, 16)) for c, n in zip(centers, counts)])
    y = np.repeat(np.array(["speech", "music", "noise"]), counts)
    order = rng.permutation(len(y))
    x, y = x[order], y[order]
    test = np.arange(len(y)) % 3 == 0
    mean, std = x[~test].mean(0), x[~test].std(0)
    x = (x - mean) / std
    return x[~test], y[~test], x[test], y[test]


def sklearn_probe(x_train, y_train, x_test, y_test, l2):
    """The same objective in scikit-learn: linear_probe minimises mean cross-entropy +
    l2 * |W|^2 (bias free), LogisticRegression 0.5 |W|^2 + C * summed cross-entropy, so
    C = 1 / (2 n l2)."""
    clf = LogisticRegression(C=1.0 / (2 * len(y_train) * l2), max_iter=2000).fit(x_train, y_train)
    pred = clf.predict(x_test)
    return accuracy_score(y_test, pred), balanced_accuracy_score(y_test, pred)


@pytest.mark.parametrize("l2", L2_GRID)
def test_probe_matches_sklearn_on_imbalanced_classes(imbalanced, l2):
    x_train, y_train, x_test, y_test = imbalanced
    ours = analysis.linear_probe(x_train, y_train, x_test, y_test, l2_grid=(l2,))
    acc, balanced = sklearn_probe(x_train, y_train, x_test, y_test, l2)
    majority = max(np.mean(y_test == c) for c in np.unique(y_test))
    assert acc > majority + 0.05, "the data must be learnable for the comparison to mean something"
    assert ours["l2"] == l2
    assert abs(ours["accuracy"] - acc) <= 0.03, (ours, acc)
    assert abs(ours["balanced_accuracy"] - balanced) <= 0.03, (ours, balanced)


def test_the_chosen_weight_is_the_one_refitted(imbalanced):
    """The grid's chosen weight gives sklearn's figures at that weight (on these imbalanced
    classes the weight matters: strong L2 costs the rare classes their recall)."""
    x_train, y_train, x_test, y_test = imbalanced
    strong = sklearn_probe(x_train, y_train, x_test, y_test, 1e-1)
    assert strong[0] - strong[1] > 0.1, strong
    ours = analysis.linear_probe(x_train, y_train, x_test, y_test, l2_grid=L2_GRID)
    assert ours["l2"] in L2_GRID
    acc, balanced = sklearn_probe(x_train, y_train, x_test, y_test, ours["l2"])
    assert abs(ours["accuracy"] - acc) <= 0.03 and abs(ours["balanced_accuracy"] - balanced) <= 0.03, (ours, acc, balanced)


def test_held_out_fifth_keeps_each_source_file_whole():
    """The L2 weight is chosen on a held-out fifth of the training set; with ``groups_train``
    no source file may have clips on both sides. Seen through its effect on the choice:
    each file's clips are near copies of one another (the file's own random "identity" in
    24 dims, labels drawn per file, 75 % one class), so nothing carries over from one file
    to another. If a file's clips land on both sides (no grouping), a nearly unregularised
    probe recognises the held-out clips' copies and wins the choice; if files stay whole it
    cannot, and the strong weight (which predicts the majority class) wins."""
    rng = np.random.default_rng(1)
    files, per, dim = 60, 4, 24
    labels = rng.choice(3, size=files, p=[0.75, 0.15, 0.10])
    x = np.repeat(rng.normal(size=(files, dim)), per, 0) + 0.05 * rng.normal(size=(files * per, dim))
    y = np.repeat(labels, per)
    groups = np.repeat([f"source{i}.flac" for i in range(files)], per)
    x_test, y_test = rng.normal(size=(20, dim)), rng.choice(3, size=20)
    grid = (1e-4, 10.0)
    seeds = range(8)
    by_file = [analysis.linear_probe(x, y, x_test, y_test, groups_train=groups, l2_grid=grid, seed=s)["l2"]
               for s in seeds]
    by_clip = [analysis.linear_probe(x, y, x_test, y_test, l2_grid=grid, seed=s)["l2"] for s in seeds]
    assert by_clip.count(1e-4) >= 7, by_clip  # the copies leak: memorising wins
    assert by_file.count(10.0) >= 6, by_file  # whole files: nothing to recognise
