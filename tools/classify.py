#!/usr/bin/env python
"""Label audio files with a fine-tuned MAE-AST classifier.

    python tools/classify.py CHECKPOINT AUDIO... [--top-k 5] [--device cpu|cuda] [--batch-size 16]

For each file (any format ffmpeg or libsndfile reads, any rate and length, mixed to mono 16 kHz)
prints its name, then its top-k labels with their scores, best first:

    dog_bark.flac
      0.912  dog
      0.031  rooster

Scores are probabilities: softmax for a model fine-tuned with cross-entropy, per-class sigmoid
for one fine-tuned with binary cross-entropy (multi-label sets, and recipes that use it). A
file longer than the clips the model was fine-tuned on is cut into windows of that length,
and the windows' scores are averaged (weighted by length). Files that cannot be decoded are
named on stderr and skipped.
"""
import argparse
import sys

from mae_ast import cli


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, epilog=cli.EXIT_CODES_HELP + (
        "  (1 here: none of the audio files could be read)\n"),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", help="a fine-tuned checkpoint (checkpoint_best.pt of a mae_ast_finetune run) or its hub folder")
    p.add_argument("audio", nargs="+", help="audio files")
    p.add_argument("--top-k", type=int, default=5, help="labels to print per file (default 5)")
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    p.add_argument("--batch-size", type=int, default=16, help="windows classified at once (default 16)")
    p.add_argument("--precision", choices=("fp32", "bf16"), default="fp32", help="encoder precision (default fp32)")
    args = p.parse_args(argv)
    if args.top_k < 1:
        cli.fail("--top-k must be at least 1")

    from mae_ast.classification import load_for_inference, score_files, top_k
    from mae_ast.core.checkpoint import CheckpointError

    try:
        model, info = load_for_inference(args.checkpoint, args.device)
    except CheckpointError as e:
        cli.fail(str(e))
    scores = score_files(model, info, args.audio, args.batch_size, args.precision)
    failed = dict(scores.failed)
    for i, path in enumerate(args.audio):
        if i in failed:
            print(f"skipped {failed[i]}", file=sys.stderr)
            continue
        print(path)
        for name, score in top_k(scores.probs[i], info.label_names, args.top_k):
            print(f"  {score:.3f}  {name}")
    if len(failed) == len(args.audio):
        cli.fail(f"none of the {len(failed)} audio files could be read (each is named above)",
                 code=cli.EXIT_NOTHING_DONE)
    return cli.EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
