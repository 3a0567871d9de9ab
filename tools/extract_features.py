#!/usr/bin/env python
"""Features of every audio file under a folder, from a pre-trained MAE-AST checkpoint.

    python tools/extract_features.py CHECKPOINT AUDIO_DIR --out DIR [--layer N]
        [--ext flac,wav,...] [--chunk-seconds S] [--window-seconds W] [--device cpu]

For AUDIO_DIR/a/b.flac it writes, keeping the folder layout:
  DIR/a/b.npy       frame-level features, float32 (frames, dim): one frame per token time step
                    (ast_kernel_stride_time x 10 ms: 160 ms for 16x16 patch models, 20 ms for
                    2x128 frame models); patch models concatenate the frequency patches of a
                    step (dim = 8 x encoder_embed_dim for 128 mel bins), as the s3prl upstream
  DIR/a/b.mean.npy  the clip-level mean over frames, float32 (dim,)
and DIR/features.tsv listing relative path, frames and dim for every file.

--layer N picks the output of encoder layer N (1..number of layers; default -1, the last).
Long files are encoded in chunks of --chunk-seconds (default: the crop length of pre-training,
task.max_sample_size), each on its own, and the frames concatenated; files shorter than one
token are zero-padded. Files are decoded and encoded --window-seconds at a time (default 300,
rounded to whole chunks) and the frames written straight to the .npy file, so memory stays
bounded by the window however long the file is; the result equals encoding the file at once.
Default extensions: every common audio format (mae_ast.audio.AUDIO_EXTENSIONS).
"""
import argparse
import os
import sys

import numpy as np
import torch

from mae_ast import analysis, audio
from mae_ast.cli import EXIT_CODES_HELP, EXIT_NOTHING_DONE, fail, make_folder
from mae_ast.core.checkpoint import CheckpointError
from mae_ast.core.extractor import chunk_steps_for, extract, num_steps, windows
from mae_ast.core.features import SAMPLE_RATE


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, epilog=EXIT_CODES_HELP,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", help="checkpoint_last.pt, an exported one, or a hub folder")
    p.add_argument("audio_dir", help="folder searched recursively for audio")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--layer", type=int, default=-1, help="encoder layer, 1..N, or -1 for the last (default)")
    p.add_argument("--ext", default=",".join(e.lstrip(".") for e in audio.AUDIO_EXTENSIONS),
                   help="comma-separated extensions (default: every common audio format)")
    p.add_argument("--chunk-seconds", type=float, help="encode long files in chunks of this length")
    p.add_argument("--window-seconds", type=float, default=300.0,
                   help="audio decoded and encoded at once (default 300; bounds the memory)")
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    args = p.parse_args(argv)
    if args.window_seconds <= 0 or (args.chunk_seconds is not None and args.chunk_seconds <= 0):
        p.error("--window-seconds and --chunk-seconds must be positive")
    return p, args


def find_audio(root: str, exts) -> list:
    return sorted(os.path.relpath(os.path.join(d, f), root)
                  for d, _, names in os.walk(root, followlinks=True) for f in names
                  if os.path.splitext(f)[1].lower() in exts)


@torch.no_grad()
def extract_file(model, path: str, out_base: str, layer: int, chunk_steps, window_steps: int):
    """Writes ``out_base``.npy (frames, dim) window by window and ``out_base``.mean.npy;
    returns (frames, dim). Raises AudioReadError for a file that cannot be decoded."""
    total = audio.num_samples(path, SAMPLE_RATE)
    frames, written, mean = num_steps(model, total), 0, None
    target = None
    for start, length in windows(model, total, window_steps):
        wav = audio.read(path, SAMPLE_RATE, start, length) if length else torch.zeros(0)
        feats = extract(model, [wav], layers=(layer,), chunk_steps=chunk_steps).hidden_states[0][0]
        feats = feats[: frames - written].cpu().numpy()  # (the last window may decode a sample more)
        if target is None:
            target = np.lib.format.open_memmap(out_base + ".npy", mode="w+", dtype=np.float32,
                                               shape=(frames, feats.shape[1]))
        target[written:written + len(feats)] = feats
        mean = feats.sum(0, dtype=np.float64) + (0 if mean is None else mean)
        written += len(feats)
    target.flush()
    del target
    if written < frames:  # the file decoded shorter than its header said: keep what is real
        np.save(out_base + ".part.npy", np.load(out_base + ".npy", mmap_mode="r")[:written])
        os.replace(out_base + ".part.npy", out_base + ".npy")
    np.save(out_base + ".mean.npy", (mean / written).astype(np.float32))
    return written, int(mean.shape[0])


def main(argv=None):
    parser, args = parse_args(argv)
    if not os.path.isdir(args.audio_dir):
        fail(f"{args.audio_dir} is not a folder")
    try:
        model = analysis.load(args.checkpoint, device=args.device, decoder=False)
    except CheckpointError as e:
        fail(str(e))
    n_layers = len(model.encoder.layers)
    if not (1 <= args.layer <= n_layers or -n_layers <= args.layer <= -1):
        parser.error(f"--layer {args.layer}: the encoder has layers 1..{n_layers} (or -1 for the last)")
    layer = args.layer if args.layer > 0 else n_layers + 1 + args.layer
    exts = {"." + e.strip().lower().lstrip(".") for e in args.ext.split(",") if e.strip()}
    files = find_audio(args.audio_dir, exts)
    if not files:
        fail(f"no audio files ({', '.join(sorted(exts))}) under {args.audio_dir}")
    make_folder(args.out)
    chunk = chunk_steps_for(model, model.cfg_task, args.chunk_seconds)
    window = num_steps(model, int(args.window_seconds * SAMPLE_RATE))
    if chunk:  # whole chunks per window, so that windows cut where chunks do
        window = max(1, window // chunk) * chunk
    rows, failed = [], 0
    for i, rel in enumerate(files):
        base = os.path.join(args.out, os.path.splitext(rel)[0])
        os.makedirs(os.path.dirname(base) or ".", exist_ok=True)
        try:
            frames, dim = extract_file(model, os.path.join(args.audio_dir, rel), base, layer, chunk, window)
        except audio.AudioReadError as e:
            print(f"skipped {e}", file=sys.stderr)
            failed += 1
            continue
        rows.append((f"{os.path.splitext(rel)[0]}.npy", frames, dim))
        if (i + 1) % 100 == 0:
            print(f"{i + 1}/{len(files)} files", flush=True)
    with open(os.path.join(args.out, "features.tsv"), "w") as f:
        f.write("path\tframes\tdim\n" + "".join(f"{p}\t{n}\t{d}\n" for p, n, d in rows))
    print(f"{len(rows)} files -> {args.out} (layer {layer} of {n_layers}, dim {rows[0][2] if rows else '?'})"
          + (f"; {failed} unreadable" if failed else ""))
    return EXIT_NOTHING_DONE if failed and not rows else 0


if __name__ == "__main__":
    sys.exit(main())
