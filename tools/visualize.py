#!/usr/bin/env python
"""Reconstruction figures (and audio, attention maps) of a pre-trained MAE-AST checkpoint.

    python tools/visualize.py CHECKPOINT AUDIO... --out DIR [--seconds 10] [--seed 0]
        [--mask-type chunk_mask] [--mask-prob 0.75] [--audio] [--attention]

For each audio file (flac, wav, ogg, mp3, mkv, ... any rate, mixed to mono 16 kHz) writes
DIR/<name>.png with three panels: the log-mel spectrogram as the model normalises it, the
patches the encoder saw after masking (masked ones in blue), and the reconstruction (the
decoder's prediction in the masked patches). The mask is drawn as in pre-training (the
checkpoint's task.mask_type and model.random_mask_prob unless given). Prints one line per
file with the masked-patch MSE (the model's loss_recon). Files that cannot be read are named
on stderr and skipped.

--audio also writes DIR/<name>_input.wav, <name>_masked.wav (masked patches silent) and
<name>_reconstruction.wav: the three spectrograms turned back into sound by Griffin-Lim at the
fbank's settings. That is an approximation (phase and fine frequency detail are lost): compare
the three with each other rather than with the original file.

--attention also draws where the encoder's tokens attend, on the whole clip (nothing masked):
DIR/<name>_attention.png (per layer, mean over heads), <name>_attention_heads.png (last layer,
per head), as time x time maps; patch models also <name>_attention_freq.png.
"""
import argparse
import os
import sys

from mae_ast import cli
from mae_ast.core.masking import MASK_TYPES


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, epilog=cli.EXIT_CODES_HELP + (
        "  (1 here: no audio file could be read, so no figure was written)\n"),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", help="checkpoint_last.pt (or an exported one)")
    p.add_argument("audio", nargs="+", help="audio files")
    p.add_argument("--out", required=True, help="folder for the PNG figures (and wav files)")
    p.add_argument("--seconds", type=float, default=10.0, help="use at most this much of each file (default 10)")
    p.add_argument("--start", type=float, default=0.0, help="start this many seconds into each file")
    p.add_argument("--seed", type=int, default=0, help="seed of the mask")
    p.add_argument("--mask-type", choices=MASK_TYPES,
                   help="default: the checkpoint's task.mask_type")
    p.add_argument("--mask-prob", type=float, help="default: the checkpoint's model.random_mask_prob")
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    p.add_argument("--audio", action="store_true", dest="write_audio",
                   help="also write the input, masked input and reconstruction as wav (approximate inversion)")
    p.add_argument("--attention", action="store_true", help="also draw the encoder's attention maps")
    args = p.parse_args(argv)

    from mae_ast import analysis
    from mae_ast.audio import AudioReadError
    from mae_ast.core.checkpoint import CheckpointError

    try:
        model = analysis.load(args.checkpoint, device=args.device)
    except CheckpointError as e:
        cli.fail(str(e))
    cli.make_folder(args.out)
    used, failed = set(), 0
    for path in args.audio:
        stem = os.path.splitext(os.path.basename(path))[0]
        name, n = stem, 1
        while name in used:  # two files of the same name in different folders
            n += 1
            name = f"{stem}_{n}"
        used.add(name)
        try:
            wav = analysis.read_audio(path, max_seconds=args.seconds, start_seconds=args.start)
        except AudioReadError as e:
            print(f"skipped {e}", file=sys.stderr)
            failed += 1
            continue
        rec = analysis.reconstruct(model, wav, seed=args.seed, mask_type=args.mask_type,
                                   mask_prob=args.mask_prob, max_seconds=args.seconds)
        target = os.path.join(args.out, name + ".png")
        analysis.plot_reconstruction(rec, target, os.path.basename(path))
        print(f"{target}: {rec['input'].shape[0] / 100:.1f} s, {rec['mask'].mean():.0%} masked, "
              f"masked-patch MSE {rec['mse']:.4f}")
        prefix = os.path.join(args.out, name)
        if args.write_audio:
            written = analysis.write_reconstruction_audio(model, rec, prefix, seed=args.seed)
            print("  audio: " + ", ".join(written.values()))
        if args.attention:
            maps = analysis.attention_maps(model, wav, max_seconds=args.seconds)
            print("  attention: " + ", ".join(analysis.plot_attention(maps, prefix, os.path.basename(path))))
    if failed == len(args.audio):
        cli.fail(f"none of the {failed} audio files could be read (each is named above)",
                 code=cli.EXIT_NOTHING_DONE)
    return cli.EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
