#!/usr/bin/env python
"""Benchmark: our s3prl upstream (s3prl_upstream/expert.py) against s3prl's stock ``mae_ast``
upstream, on the same checkpoint and the same batch, on CPU.

    .venv/bin/python tools/bench_upstream.py                     # paper-size random patch model
    .venv/bin/python tools/bench_upstream.py --frame             # paper-size random frame model
    .venv/bin/python tools/bench_upstream.py --ckpt checkpoint_last.pt
    .venv/bin/python tools/bench_upstream.py --tiny --batch 4 --max-s 3 --repeats 1   # checks the tool runs (seconds)

``--tiny`` swaps the paper-size random model for a tiny one (2 + 1 layers, 32 dim; as the
tests'): the figures then mean nothing for speed.

``tools/bench.py`` runs the same measurement (``measure``) in its full table.

The batch is 16 waveforms of 1 to 10 s (fixed seed). Both forwards run under
``torch.inference_mode`` with the same number of threads; the best of ``--repeats`` runs is
reported, and the outputs are compared on each example's valid frames.
"""
import argparse
import tempfile
import time
from pathlib import Path

import torch

from mae_ast.core.features import SAMPLE_RATE


TINY = dict(encoder_layers=2, decoder_layers=1, encoder_embed_dim=32, decoder_embed_dim=32,
            encoder_ffn_embed_dim=64, encoder_attention_heads=2)  # --tiny: the tests' tiny model


def paper_checkpoint(path: Path, frame: bool, tiny: bool = False) -> Path:
    from mae_ast.core import MAEAST, MAEASTConfig, checkpoint

    k = (2, 128) if frame else (16, 16)
    cfg = MAEASTConfig(ast_kernel_size_time=k[0], ast_kernel_size_chan=k[1],
                       ast_kernel_stride_time=k[0], ast_kernel_stride_chan=k[1],
                       enc_sine_pos=True, dec_sine_pos=True, encoder_layerdrop=0.05, **(TINY if tiny else {}))
    torch.manual_seed(0)
    checkpoint.save(path, MAEAST(cfg, mask_type="random_mask" if frame else "chunk_mask"), deltas=False)
    return path


def timed(fn):
    """Wall-clock and CPU seconds (CPU time of all threads: steadier on a shared machine)."""
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return (time.perf_counter() - wall, time.process_time() - cpu), out


def measure(frame: bool = False, ckpt: str = None, wavs=None, batch: int = 16, min_s: float = 1.0,
            max_s: float = 10.0, repeats: int = 3, device: str = "cpu", tiny: bool = False) -> dict:
    """Time stock vs our upstream (fp32 and bf16) on one batch; best of ``repeats``
    interleaved runs. Returns wall and CPU seconds per upstream and the bf16 difference.
    ``wavs``: a list of 1-D 16 kHz waveforms (default: ``batch`` noise clips of min_s..max_s).
    ``tiny``: without ``ckpt``, a tiny random model instead of the paper-size one."""
    from s3prl.upstream.mae_ast.expert import UpstreamExpert as StockExpert
    from s3prl_upstream.expert import UpstreamExpert as OurExpert

    with tempfile.TemporaryDirectory() as tmp:
        ckpt = ckpt or str(paper_checkpoint(Path(tmp) / "paper.pt", frame, tiny))
        stock, ours = StockExpert(ckpt).eval().to(device), OurExpert(ckpt).eval().to(device)
        ours_bf16 = OurExpert(ckpt, precision="bf16").eval().to(device)

    if wavs is None:
        gen = torch.Generator().manual_seed(0)
        lengths = (torch.rand(batch, generator=gen) * (max_s - min_s) + min_s) * SAMPLE_RATE
        wavs = [torch.randn(int(n), generator=gen) * 0.1 for n in lengths]
    wavs = [w.to(device) for w in wavs]
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)

    def run(up):
        out = up(wavs)
        sync()
        return out

    with torch.inference_mode():
        for up in (ours, ours_bf16, stock):
            up(wavs[:2])  # warm-up
        runs = {"stock": stock, "ours": ours, "ours_bf16": ours_bf16}
        best = {name: (float("inf"),) * 2 for name in runs}
        outs = {}
        for _ in range(repeats):  # interleaved, so that load from elsewhere hits all alike
            for name, up in runs.items():
                t, outs[name] = timed(lambda: run(up))
                best[name] = tuple(min(a, b) for a, b in zip(best[name], t))
    same = [tuple(a.shape) == tuple(b.shape)
            for a, b in zip(outs["stock"]["hidden_states"], outs["ours"]["hidden_states"])]
    diff = max((a.float() - b).abs().max().item() / b.abs().max().item()
               for a, b in zip(outs["ours_bf16"]["hidden_states"], outs["ours"]["hidden_states"]))
    seconds = sum(len(w) for w in wavs) / SAMPLE_RATE
    return {"best": best, "bf16_rel_diff": diff, "audio_s": seconds, "n": len(wavs),
            "same_shapes": all(same) and len(same) == len(outs["stock"]["hidden_states"]),
            "layers": len(outs["ours"]["hidden_states"]), "shape": tuple(outs["ours"]["hidden_states"][0].shape),
            "model": ours.model}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ckpt", help="checkpoint to use (default: a random paper-size model)")
    ap.add_argument("--frame", action="store_true", help="random frame model (2x128) instead of patch (16x16)")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--min-s", type=float, default=1.0)
    ap.add_argument("--max-s", type=float, default=10.0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--tiny", action="store_true",
                    help="a tiny random model (2 + 1 layers, 32 dim) instead of the paper-size one: checks "
                         "that the tool runs, in seconds; the figures mean nothing")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    r = measure(args.frame, args.ckpt, None, args.batch, args.min_s, args.max_s, args.repeats, args.device, args.tiny)
    m = r["model"]
    print(f"batch: {r['n']} waveforms ({r['audio_s']:.0f} s in all); threads: {torch.get_num_threads()}; "
          f"model: {m.kernel[0]}x{m.kernel[1]} patches, {m.cfg.encoder_layers} layers, dim {m.cfg.encoder_embed_dim}")
    (ws, cs), (wo, co), (wb, cb) = r["best"]["stock"], r["best"]["ours"], r["best"]["ours_bf16"]
    print(f"best of {args.repeats}:           wall s   CPU s")
    print(f"stock upstream:          {ws:7.3f} {cs:7.3f}")
    print(f"our upstream (fp32):     {wo:7.3f} {co:7.3f}   speed-up {ws / wo:.2f}x wall, {cs / co:.2f}x CPU")
    print(f"our upstream (bf16):     {wb:7.3f} {cb:7.3f}   speed-up {ws / wb:.2f}x wall, {cs / cb:.2f}x CPU")
    print(f"bf16 vs fp32: max |difference| / max |value| = {r['bf16_rel_diff']:.1e}")
    print(f"hidden states: {r['layers']} x {r['shape']}, same shapes as stock: {r['same_shapes']}")


if __name__ == "__main__":
    main()
