#!/usr/bin/env python
"""Slim a training checkpoint down to what fine-tuning needs.

    python tools/export_checkpoint.py IN OUT

Keeps ``cfg`` (``model`` and ``task`` sections, plain dicts) and the ``model`` weights; drops
optimizer state, logging meters and the rest. The result loads with ``torch.load`` under
``weights_only=True`` and into s3prl's stock ``mae_ast`` upstream, which builds the model from
``cfg`` and loads the weights strictly. Our training checkpoints already load there as they
are; exporting makes them about a third of the size.
"""
import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from mae_ast.core import checkpoint  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("input", help="fairseq training checkpoint (checkpoint_last.pt, ...)")
    p.add_argument("output", help="where to write the slim checkpoint")
    args = p.parse_args(argv)
    try:
        state = checkpoint.load(args.input)
    except checkpoint.CheckpointError as e:
        sys.exit(f"export_checkpoint: {e}")
    slim = checkpoint.export(state)
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    torch.save(slim, args.output)
    mb = lambda path: os.path.getsize(path) / 2**20  # noqa: E731
    print(f"export_checkpoint: {args.output}: {len(slim['model'])} tensors, "
          f"{mb(args.output):.1f} MB (from {mb(args.input):.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
