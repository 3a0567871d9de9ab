#!/usr/bin/env python
"""Features of every audio file under a folder, from a pre-trained MAE-AST checkpoint.

    python tools/extract_features.py CHECKPOINT AUDIO_DIR --out DIR [--layer N]
        [--ext flac,wav,ogg,mp3,mkv,mp4,webm,opus] [--chunk-seconds S] [--device cpu]

For AUDIO_DIR/a/b.flac it writes, keeping the folder layout:
  DIR/a/b.npy       frame-level features, float32 (frames, dim): one frame per token time step
                    (ast_kernel_stride_time x 10 ms: 160 ms for 16x16 patch models, 20 ms for
                    2x128 frame models); patch models concatenate the frequency patches of a
                    step (dim = 8 x encoder_embed_dim for 128 mel bins), as the s3prl upstream
  DIR/a/b.mean.npy  the clip-level mean over frames, float32 (dim,)
and DIR/features.tsv listing relative path, frames and dim for every file.
--layer N picks the output of encoder layer N (1..number of layers; default -1, the last).
Long files are encoded in chunks of --chunk-seconds (default: the crop length of pre-training,
task.max_sample_size) and the frames concatenated; files shorter than one token are zero-padded.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
EXTS = "flac,wav,ogg,mp3,mkv,mp4,webm,opus"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", help="checkpoint_last.pt (or an exported one)")
    p.add_argument("audio_dir", help="folder searched recursively for audio")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--layer", type=int, default=-1, help="encoder layer, 1..N, or -1 for the last (default)")
    p.add_argument("--ext", default=EXTS, help=f"comma-separated extensions (default {EXTS})")
    p.add_argument("--chunk-seconds", type=float, help="encode long files in chunks of this length")
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    args = p.parse_args(argv)

    import numpy as np

    from mae_ast import analysis
    from mae_ast.audio import AudioReadError
    from mae_ast.core.checkpoint import CheckpointError

    try:
        model = analysis.load(args.checkpoint, device=args.device, decoder=False)
    except CheckpointError as e:
        sys.exit(f"error: {e}")
    n_layers = len(model.encoder.layers)
    if not (1 <= args.layer <= n_layers or -n_layers <= args.layer <= -1):
        p.error(f"--layer {args.layer}: the encoder has layers 1..{n_layers} (or -1 for the last)")
    exts = {"." + e.strip().lower().lstrip(".") for e in args.ext.split(",") if e.strip()}
    files = sorted(os.path.relpath(os.path.join(d, f), args.audio_dir)
                   for d, _, names in os.walk(args.audio_dir, followlinks=True) for f in names
                   if os.path.splitext(f)[1].lower() in exts)
    if not files:
        sys.exit(f"error: no audio files ({', '.join(sorted(exts))}) under {args.audio_dir}")
    os.makedirs(args.out, exist_ok=True)
    rows, failed = [], 0
    for i, rel in enumerate(files):
        try:
            wav = analysis.read_audio(os.path.join(args.audio_dir, rel))
        except AudioReadError as e:
            print(f"skipped {e}", file=sys.stderr)
            failed += 1
            continue
        feats = analysis.embed(model, wav, args.layer, args.chunk_seconds).numpy().astype(np.float32)
        base = os.path.join(args.out, os.path.splitext(rel)[0])
        os.makedirs(os.path.dirname(base) or ".", exist_ok=True)
        np.save(base + ".npy", feats)
        np.save(base + ".mean.npy", feats.mean(0))
        rows.append(f"{os.path.splitext(rel)[0]}.npy\t{feats.shape[0]}\t{feats.shape[1]}")
        if (i + 1) % 100 == 0:
            print(f"{i + 1}/{len(files)} files", flush=True)
    with open(os.path.join(args.out, "features.tsv"), "w") as f:
        f.write("path\tframes\tdim\n" + "".join(r + "\n" for r in rows))
    layer = args.layer if args.layer > 0 else n_layers + 1 + args.layer
    print(f"{len(rows)} files -> {args.out} (layer {layer} of {n_layers}, dim {rows[0].split(chr(9))[2] if rows else '?'})"
          + (f"; {failed} unreadable" if failed else ""))
    return 1 if failed and not rows else 0


if __name__ == "__main__":
    sys.exit(main())
