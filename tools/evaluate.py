#!/usr/bin/env python
"""Evaluate a fine-tuned MAE-AST classifier on a labelled split.

    python tools/evaluate.py CHECKPOINT DATA_DIR [--split test] [--out DIR] [--device cpu|cuda]

DATA_DIR holds the labelled manifests that tools/make_manifest.py --labels writes
(``{split}.tsv``, ``{split}.lbl``, ``labels.csv``). Every clip is classified whole (clips longer
than the fine-tuning length in windows, scores averaged), as tools/classify.py does. Prints:

* single-label sets: accuracy, then per class its clips, recall (accuracy on its clips) and
  precision; also mAP over classes, for comparison;
* multi-label sets: mAP and macro ROC-AUC, then per class its positives, AP and ROC-AUC.

Writes to --out (default ``eval_<split>``): ``predictions.csv`` (file, true labels, predicted
label, then one probability column per class), ``metrics.json`` (the figures above), and for
single-label sets ``confusion.png`` and ``confusion.csv`` (rows true, columns predicted).
A clip that cannot be decoded is named on stderr, counted in metrics.json and left out of the
figures.
"""
import argparse
import csv
import json
import os
import sys

from mae_ast import cli


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, epilog=cli.EXIT_CODES_HELP + (
        "  (1 here: no clip of the split could be read)\n"),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", help="a fine-tuned checkpoint (checkpoint_best.pt of a mae_ast_finetune run) or its hub folder")
    p.add_argument("data", help="folder with {split}.tsv, {split}.lbl and labels.csv")
    p.add_argument("--split", default="test", help="split to evaluate (default test)")
    p.add_argument("--out", help="folder for predictions and figures (default eval_<split>)")
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    p.add_argument("--batch-size", type=int, default=16, help="windows classified at once (default 16)")
    p.add_argument("--precision", choices=("fp32", "bf16"), default="fp32", help="encoder precision (default fp32)")
    args = p.parse_args(argv)
    out = args.out or f"eval_{args.split}"

    import torch

    from mae_ast.classification import confusion_matrix, load_for_inference, plot_confusion, score_files
    from mae_ast.core import metrics
    from mae_ast.core.checkpoint import CheckpointError
    from mae_ast.labels import LabelError, LabelSet, load_labels
    from mae_ast.manifest import Manifest, ManifestError

    try:
        model, info = load_for_inference(args.checkpoint, args.device)
        manifest = Manifest.load(os.path.join(args.data, f"{args.split}.tsv"))
        labels_csv = os.path.join(args.data, "labels.csv")
        label_set = LabelSet.load(labels_csv)
        clip_labels = load_labels(os.path.join(args.data, f"{args.split}.lbl"), manifest, label_set)
    except (CheckpointError, ManifestError, LabelError) as e:
        cli.fail(str(e))
    # the data's label indices -> the model's, by name (labels.csv may order them otherwise)
    model_index = {name: i for i, name in enumerate(info.label_names)}
    unknown = [n for n in label_set.names if n not in model_index]
    if unknown:
        cli.fail(f"{labels_csv}: labels the model was not fine-tuned on: {', '.join(unknown[:10])}"
                 f"{' ...' if len(unknown) > 10 else ''}")
    if len(manifest) == 0:
        cli.fail(f"{manifest.path}: no clips")
    cli.make_folder(out)

    paths = [manifest.audio_path(i) for i in range(len(manifest))]
    scores = score_files(model, info, paths, args.batch_size, args.precision)
    for i, why in scores.failed:
        print(f"skipped ({manifest.path}:{manifest.line_numbers[i]}) {why}", file=sys.stderr)
    ok = scores.ok
    if not ok.any():
        cli.fail(f"none of the {len(paths)} clips of {manifest.path} could be read (each is named above)",
                 code=cli.EXIT_NOTHING_DONE)
    n_classes = len(info.label_names)
    targets = metrics.multi_hot([[model_index[label_set.names[k]] for k in clip] for clip in clip_labels], n_classes)
    probs_t, targets_t = torch.from_numpy(scores.probs[ok]), targets[torch.from_numpy(ok)]
    multi_label = info.multi_label
    figures = metrics.summary(probs_t, targets_t, multi_label)
    report = {"checkpoint": args.checkpoint, "split": args.split, "clips": int(ok.sum()),
              "unreadable": len(scores.failed), **figures}
    names = info.label_names
    if multi_label:
        ap, auc = metrics.average_precision(probs_t, targets_t), metrics.roc_auc(probs_t, targets_t)
        print(f"{args.split}: {ok.sum()} clips, mAP {figures['mAP']:.4f}, ROC-AUC {figures['roc_auc']:.4f}")
        print(f"{'class':<30} {'positives':>9} {'AP':>7} {'ROC-AUC':>7}")
        per_class = {}
        for c, name in enumerate(names):
            per_class[name] = {"positives": int(targets_t[:, c].sum()), "AP": _num(ap[c]), "roc_auc": _num(auc[c])}
            print(f"{name:<30} {per_class[name]['positives']:>9} {_fmt(ap[c]):>7} {_fmt(auc[c]):>7}")
    else:
        true, predicted = targets_t.argmax(1).numpy(), probs_t.argmax(1).numpy()
        cm = confusion_matrix(true, predicted, n_classes)
        print(f"{args.split}: {ok.sum()} clips, accuracy {figures['accuracy']:.4f} (mAP {figures['mAP']:.4f})")
        print(f"{'class':<30} {'clips':>6} {'recall':>7} {'precision':>9}")
        per_class = {}
        for c, name in enumerate(names):
            clips, hits, called = int(cm[c].sum()), int(cm[c, c]), int(cm[:, c].sum())
            per_class[name] = {"clips": clips, "recall": hits / clips if clips else None,
                               "precision": hits / called if called else None}
            print(f"{name:<30} {clips:>6} {_fmt(per_class[name]['recall']):>7} "
                  f"{_fmt(per_class[name]['precision']):>9}")
        plot_confusion(cm, names, os.path.join(out, "confusion.png"),
                       f"{args.split}: accuracy {figures['accuracy']:.3f} ({ok.sum()} clips)")
        with open(os.path.join(out, "confusion.csv"), "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["true \\ predicted", *names])
            w.writerows([name, *row] for name, row in zip(names, cm.tolist()))
    report["per_class"] = per_class
    _write_predictions(os.path.join(out, "predictions.csv"), manifest, clip_labels, label_set,
                       scores.probs, names)
    with open(os.path.join(out, "metrics.json"), "w") as f:
        json.dump(report, f, indent=1)
    print(f"wrote {out}/")
    return cli.EXIT_OK


def _num(x):
    x = float(x)
    return None if x != x else x


def _fmt(x) -> str:
    x = None if x is None else float(x)
    return "-" if x is None or x != x else f"{x:.3f}"


def _write_predictions(path, manifest, clip_labels, label_set, probs, names):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["file", "labels", "predicted", *names])
        for i, row in enumerate(probs):
            true = ",".join(label_set.names[k] for k in clip_labels[i])
            if row[0] != row[0]:  # unreadable: nan row
                w.writerow([manifest.names[i], true, "", *[""] * len(names)])
            else:
                w.writerow([manifest.names[i], true, names[int(row.argmax())], *[f"{v:.5f}" for v in row]])


if __name__ == "__main__":
    sys.exit(main())
