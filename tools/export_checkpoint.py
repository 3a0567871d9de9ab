#!/usr/bin/env python
"""Slim a training checkpoint down to what fine-tuning needs, or write it as a hub folder.

    python tools/export_checkpoint.py IN OUT                 # a slim checkpoint file (default)
    python tools/export_checkpoint.py IN OUT_DIR --format hub [--results metrics.json]

``--format pt`` (default) keeps ``cfg`` (``model`` and ``task`` sections, plain dicts; a
classifier's loss) and the ``model`` weights; drops optimizer state, logging meters and the
rest. The result loads with ``torch.load`` under ``weights_only=True`` and into s3prl's stock
``mae_ast`` upstream, which builds the model from ``cfg`` and loads the weights strictly. Our
training checkpoints already load there as they are; exporting makes them about a third of
the size.

``--format hub`` writes a folder in the layout of huggingface_hub's ``PyTorchModelHubMixin``:
``config.json`` (the ``cfg`` sections, feature settings, a classifier's label names and
``multi_label``), ``model.safetensors`` (the weights, without the two sinusoidal position
tables, which are recomputed on load) and a ``README.md`` model card (architecture, masking,
updates, the training manifest's hours and files when it is still there, figures given with
``--results``: evaluate.py's metrics.json, the demo's report.json, or any JSON of figures).
Every loader takes the folder where it takes a checkpoint, and none unpickles anything.
IN may itself be a hub folder (e.g. to write it back as a file for s3prl's stock upstream).
"""
import argparse
import json
import os
import sys

import torch

from mae_ast import cli
from mae_ast.core import checkpoint

# figures worth a line in the model card, from any JSON given with --results
FIGURE_KEYS = ("accuracy", "balanced_accuracy", "mAP", "roc_auc", "best_valid_accuracy")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, epilog=cli.EXIT_CODES_HELP,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("input", help="fairseq training checkpoint (checkpoint_last.pt, ...), an exported one, "
                                 "or a hub folder")
    p.add_argument("output", help="where to write the slim checkpoint (--format pt) or the folder (--format hub)")
    p.add_argument("--format", choices=("pt", "hub"), default="pt",
                   help="pt: one slim checkpoint file (default); hub: config.json + model.safetensors + README.md")
    p.add_argument("--results", help="(hub) a JSON file of figures for the model card: tools/evaluate.py's "
                                     "metrics.json, the demo's report.json, ...")
    args = p.parse_args(argv)
    try:
        state = checkpoint.load(args.input)
    except checkpoint.CheckpointError as e:
        cli.fail(str(e))
    if args.format == "hub":
        return export_hub(state, args)
    if args.results:
        cli.fail("--results is for --format hub (a model card); a checkpoint file has no place for figures")
    slim = checkpoint.export(state)
    cli.make_folder(os.path.dirname(os.path.abspath(args.output)))
    try:
        torch.save(slim, args.output)
    except OSError as e:
        cli.fail(f"cannot write {args.output}: {e.strerror or e}")
    print(f"export_checkpoint: {args.output}: {len(slim['model'])} tensors, "
          f"{megabytes(args.output):.1f} MB (from {megabytes(args.input):.1f} MB)")
    return cli.EXIT_OK


def export_hub(state: dict, args) -> int:
    from mae_ast.core import hub

    if os.path.isfile(args.output):
        cli.fail(f"{args.output} is a file; --format hub writes a folder")
    training = training_of(state, args.input)
    if args.results:
        training.setdefault("results", {}).update(read_figures(args.results))
        training["results_source"] = os.path.basename(args.results)
    cli.make_folder(args.output)
    slim = checkpoint.export(state)
    try:
        config = hub.write_folder(slim, args.output, training)
    except OSError as e:
        cli.fail(f"cannot write {args.output}: {e.strerror or e}")
    left_out = sum(state["model"][name].numel() * state["model"][name].element_size()
                   for name in config["recomputed_buffers"])
    print(f"export_checkpoint: {args.output}: {hub.CONFIG_FILE}, {hub.WEIGHTS_FILE} "
          f"({megabytes(os.path.join(args.output, hub.WEIGHTS_FILE)):.1f} MB), {hub.CARD_FILE}; "
          f"{megabytes(args.output):.1f} MB in all (from {megabytes(args.input):.1f} MB; "
          f"position tables recomputed on load: {left_out / 2**20:.1f} MB left out)")
    return cli.EXIT_OK


def training_of(state: dict, source: str) -> dict:
    """What the checkpoint tells of its run (updates, epoch, best figure), what its training
    manifest still on disk tells (files, hours); a hub folder keeps what it had."""
    from mae_ast.core import hub

    if os.path.isdir(source):
        return dict(hub.read_config(source).get("training") or {})
    facts = hub.training_facts(state)
    manifest = manifest_size(state["cfg"])
    if manifest:
        facts["manifest"] = manifest
    return facts


def manifest_size(cfg: dict):
    """{files, hours, name} of the run's training manifest, or None when it is not readable."""
    from mae_ast.manifest import Manifest, ManifestError

    data = dict(cfg["task"]).get("data")
    subset = dict(cfg.get("dataset") or {}).get("train_subset") or "train"
    if not data:
        return None
    path = os.path.join(str(data), f"{subset}.tsv")
    try:
        manifest = Manifest.load(path)
    except (OSError, ManifestError):
        return None
    rate = int(dict(cfg["task"]).get("sample_rate", 16000))
    return {"files": len(manifest), "hours": round(float(sum(manifest.sizes)) / rate / 3600, 3), "name": subset}


def read_figures(path: str) -> dict:
    """Every number under a figure's name (FIGURE_KEYS) in the JSON, named by its path in it."""
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, ValueError) as e:
        cli.fail(f"--results {path}: not a readable JSON file ({e})")
    figures = {}

    def walk(node, prefix):
        if isinstance(node, dict):
            for key, value in node.items():
                name = f"{prefix}.{key}" if prefix else str(key)
                if key in FIGURE_KEYS and isinstance(value, (int, float)) and not isinstance(value, bool):
                    figures[name] = float(value)
                else:
                    walk(value, name)

    walk(data, "")
    if not figures:
        cli.fail(f"--results {path}: no figures in it (looked for {', '.join(FIGURE_KEYS)})")
    return figures


def megabytes(path: str) -> float:
    if os.path.isdir(path):
        return sum(os.path.getsize(os.path.join(path, f)) for f in os.listdir(path)) / 2**20
    return os.path.getsize(path) / 2**20


if __name__ == "__main__":
    sys.exit(main())
