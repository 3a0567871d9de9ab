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

from mae_ast import cli
from mae_ast.core import checkpoint


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, epilog=cli.EXIT_CODES_HELP,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("input", help="fairseq training checkpoint (checkpoint_last.pt, ...)")
    p.add_argument("output", help="where to write the slim checkpoint")
    args = p.parse_args(argv)
    try:
        state = checkpoint.load(args.input)
    except checkpoint.CheckpointError as e:
        cli.fail(str(e))
    slim = checkpoint.export(state)
    cli.make_folder(os.path.dirname(os.path.abspath(args.output)))
    try:
        torch.save(slim, args.output)
    except OSError as e:
        cli.fail(f"cannot write {args.output}: {e.strerror or e}")
    mb = lambda path: os.path.getsize(path) / 2**20  # noqa: E731
    print(f"export_checkpoint: {args.output}: {len(slim['model'])} tensors, "
          f"{mb(args.output):.1f} MB (from {mb(args.input):.1f} MB)")
    return cli.EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
