#!/usr/bin/env python
"""MAE-AST speed, side by side in one run: our implementation against the original model (the
copy inside s3prl), the machine's own matmul peak, the data loader and the s3prl upstream.

    .venv/bin/python tools/bench.py                    # CPU, patch and frame models (~5-10 min on 2 cores)
    .venv/bin/python tools/bench.py --quick            # smoke test (~1-2 min)
    .venv/bin/python tools/bench.py --device cuda      # on a GPU: adds fp16, peak in bf16/fp16
    .venv/bin/python tools/bench.py --quick --tiny     # every section, tiny model (seconds): checks the tool runs

``--tiny`` swaps the paper-size model for a tiny one (2 + 1 layers, 32 dim; as the tests'),
in the step and upstream sections, and times the matmul peak on a small matrix briefly: the
figures mean nothing for speed, the tables come out as with the paper's model.

Sections:

* step: one pre-training step (forward, loss, backward) of the paper-size model (12 + 2
  layers, 768 dim; patch 16x16 with chunk masking, frame 2x128 with random masking; 75 %
  masked; dropouts as the paper, LayerDrop off so every step does the same work) on the same
  batch of real speech (espeak-ng, ``--clip-s`` seconds each: 1, 3 and 10 s by default, each
  length timed on its own). The original runs its own
  masking code, we run ours; both keep the same number of tokens. Precisions:
  ``fp32``; ``bf16-autocast`` (``torch.autocast``, fp32 weights: our ``model.autocast_dtype``);
  ``bf16-pure`` (weights and activations in bf16, what fairseq's ``common.bf16=true`` does;
  fp32 master weights live in the optimizer, outside the step); on GPU also ``fp16-autocast``
  and ``fp16-pure`` (``common.fp16=true``). Median of ``--steps`` steps after warm-up, the
  configurations interleaved so that load from elsewhere hits them alike.
* MFU: the step's model FLOPs, counted analytically (every matmul of projections, attention
  and FFN, encoder on the kept tokens, decoder on all tokens, heads and InfoNCE on the masked
  ones; backward = 2 x forward), divided by the step time and by the peak FLOP/s of a large
  matmul at the same precision, measured in the same run (alone for 3 s, then interleaved with
  the steps so that it sees the same load; the fastest run counts).
* data: clips per second of one loader worker (1 thread): decode a window of a clip and
  compute its fbank, for flac and for opus in mkv (AudioSet's format; 48 kHz, resampled).
* upstream: s3prl feature extraction, ours (fp32, bf16) vs s3prl's stock ``mae_ast``
  (``tools/bench_upstream.py``'s measurement) on 16 speech clips of 1 to 10 s.
* finetune: one fine-tuning step (waveforms -> fbank -> SpecAugment -> encoder with every
  token -> mean -> head -> cross-entropy -> backward) of the paper-size classifier, dropouts
  0.1 as in fine-tuning, on the batch of the longest ``--clip-s``: with the CPU kernels
  (``mae_ast.core.cpu_kernels``: what training on a CPU runs) vs the same step on torch's plain
  paths (``MAE_AST_CPU_KERNELS=0``, what a GPU runs), fp32 and bf16 autocast, interleaved.
  Then the same step with a small encoder (4 x 256) on 16 clips of 1 s and on the longest batch,
  fp32 beside bf16 (``bf16 vs fp32``: fp32 seconds over bf16 seconds): the short-clip shapes.
* decoder: the pre-training step of the step section (ours only) with each decoder attention
  (``model.decoder_attention``): global (the paper's), local (Audio-MAE: 4x4-token windows,
  every other layer shifted in time) and multi_window (MW-MAE's windows 2..125 and global heads,
  over 12 heads), same weights, fp32 and bf16-pure, at every ``--clip-s``, interleaved; each
  option's time over global's.
* masks: the pre-training step (ours, fp32) with ``task.masks_per_clip`` K = 1, 4, 16 on the
  batch of the shortest ``--clip-s``: step time, time per clip and per masked sequence (K x B
  sequences a step), interleaved.
"""
import argparse
import copy
import dataclasses
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import torch

from mae_ast.core.features import SAMPLE_RATE

TEXT = ("Masked autoencoders learn useful audio representations from spectrograms. "
        "The quick brown fox jumps over the lazy dog near the river bank, and six spoons of "
        "fresh snow peas wait on the table. Please call Stella and ask her to bring these things "
        "with her from the store: five thick slabs of blue cheese, and maybe a snack for her "
        "brother Bob. Wednesday at the train station the weather was cold and windy. ")
VOICES = ["en", "en-us", "en+f3", "de", "fr", "es", "en-gb", "en+m3"]
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
KERNELS = {"patch": ((16, 16), "chunk_mask"), "frame": ((2, 128), "random_mask")}


# ---- real audio ------------------------------------------------------------------------------
def speech_clips(folder: Path, n: int, seconds: float):
    """``n`` clips of espeak-ng speech, 16 kHz mono float32, ``seconds`` long each."""
    import soundfile as sf
    import torchaudio.functional as AF

    clips = []
    for i in range(n):
        wav_path = folder / f"speech{i}.wav"
        subprocess.run(["espeak-ng", "-v", VOICES[i % len(VOICES)], "-s", str(150 + 10 * i), "-w",
                        str(wav_path), TEXT * 3], check=True, capture_output=True)
        wav, rate = sf.read(str(wav_path), dtype="float32")
        wav = AF.resample(torch.from_numpy(wav), rate, SAMPLE_RATE)
        want = int(seconds * SAMPLE_RATE)
        wav = wav.repeat(math.ceil(want / len(wav)))[:want]
        clips.append(wav)
    return clips


TINY = dict(encoder_layers=2, decoder_layers=1, encoder_embed_dim=32, decoder_embed_dim=32,
            encoder_ffn_embed_dim=64, encoder_attention_heads=2)  # --tiny: the tests' tiny model


def paper_cfg(kind: str, tiny: bool = False):
    from mae_ast.core import MAEASTConfig

    (kt, kc), _ = KERNELS[kind]
    # the paper's configuration (config/pretrain/mae_ast.yaml), LayerDrop off: equal work per step
    return MAEASTConfig(ast_kernel_size_time=kt, ast_kernel_size_chan=kc, ast_kernel_stride_time=kt,
                        ast_kernel_stride_chan=kc, enc_sine_pos=True, dec_sine_pos=True,
                        dropout_input=0.1, max_token_length=48000, **(TINY if tiny else {}))


def build_models(kind: str, device, tiny: bool = False):
    from s3prl.upstream.mae_ast.mae_ast import MAE_AST

    from mae_ast.core import MAEAST

    cfg = paper_cfg(kind, tiny)
    mask_type = KERNELS[kind][1]
    torch.manual_seed(0)
    ours = MAEAST(cfg, mask_type=mask_type)
    task = SimpleNamespace(feature_dim=128, mask_type=mask_type, feature_type="fbank")
    orig = MAE_AST(SimpleNamespace(**dataclasses.asdict(cfg)), task)
    orig.load_state_dict(ours.state_dict(), strict=True)
    return ours.to(device).train(), orig.to(device).train()


def original_loss(out, reconstruction_weight=10.0, classification_weight=1.0):
    """The original criterion's formula (MSE + InfoNCE over each example's masked tokens)."""
    recon, logits, target = (out[k].float() for k in ("logit_m_list_recon", "logit_m_list_class", "target_m_list"))
    dots = logits @ target.transpose(-1, -2)
    nce = -torch.diagonal(dots.log_softmax(-1), dim1=-2, dim2=-1).mean()
    return reconstruction_weight * torch.nn.functional.mse_loss(recon, target) + classification_weight * nce


def make_step(impl: str, model, source, precision: str, device, masks_per_clip: int = 1):
    """A closure running one step; ``precision`` is fp32, {bf16,fp16}-autocast or {bf16,fp16}-pure;
    ``masks_per_clip`` K: ours draws K masks per clip (task.masks_per_clip)."""
    from mae_ast.core import mae_ast_loss

    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision.split("-")[0])
    autocast = precision.endswith("autocast")
    if precision.endswith("pure"):
        model = copy.deepcopy(model).to(dtype)
        source = source.to(dtype)
    padding = torch.zeros(source.shape[:2], dtype=torch.bool, device=device)

    def step():
        for p in model.parameters():
            p.grad = None
        with torch.autocast(device.type, dtype=dtype or torch.bfloat16, enabled=autocast):
            if impl == "orig":
                out = model(source, padding_mask=padding, mask=True)
            else:
                out = model(source, masks_per_clip=masks_per_clip)
                step.sequences = out["target_m_list"].size(0)  # masked sequences the step ran
        if impl == "orig":
            loss = original_loss(out)
        else:
            loss = mae_ast_loss(out["logit_m_list_recon"], out["logit_m_list_class"], out["target_m_list"],
                                out["target_valid"])["loss"]
        loss.backward()
        return loss

    return step


def step_flops(cfg, batch: int, frames: int, feature_dim: int = 128) -> float:
    """Model FLOPs of one training step (forward x 3), matmuls only."""
    kt, kc = cfg.ast_kernel_size_time, cfg.ast_kernel_size_chan
    tokens = (frames // kt) * (feature_dim // kc)
    kept = max(1, int((1 - cfg.random_mask_prob) * tokens))
    masked = tokens - kept
    d, f, patch = cfg.encoder_embed_dim, cfg.encoder_ffn_embed_dim, kt * kc

    def layers(n_layers, n_tokens, dim):
        linear = 2 * batch * n_tokens * (4 * dim * dim + 2 * dim * f)
        attention = 2 * 2 * batch * n_tokens * n_tokens * dim  # q k^T and weights @ v
        return n_layers * (linear + attention)

    fwd = (2 * batch * tokens * patch * d  # patch embedding
           + layers(cfg.encoder_layers, kept, d)
           + layers(cfg.decoder_layers, tokens, cfg.decoder_embed_dim)
           + 2 * 2 * batch * masked * cfg.decoder_embed_dim * patch  # two heads
           + 2 * batch * masked * masked * patch)  # InfoNCE scores
    return 3.0 * fwd


def matmul_peak(dtype, device, n: int, seconds: float = 3.0) -> float:
    """FLOP/s of an n x n x n matmul at ``dtype``: the best of repeated runs."""
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    (a @ b), sync()
    best, start = float("inf"), time.perf_counter()
    while time.perf_counter() - start < seconds:
        t = time.perf_counter()
        a @ b
        sync()
        best = min(best, time.perf_counter() - t)
    return 2.0 * n ** 3 / best


# ---- measurement ------------------------------------------------------------------------------
def time_interleaved(steps: dict, n_steps: int, warmup: int, device):
    """Median and fastest wall seconds per configuration; failures are reported, not raised."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    times = {name: [] for name in steps}
    failed = {}
    for i in range(warmup + n_steps):
        for name, fn in steps.items():
            if name in failed:
                continue
            try:
                wall = time.perf_counter()
                loss = fn()
                sync()
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"loss {loss.item()}")
                wall = time.perf_counter() - wall
            except Exception as e:  # noqa: BLE001 - the original fails under autocast
                failed[name] = f"{type(e).__name__}: {str(e).splitlines()[0][:70]}"
                continue
            if i >= warmup:
                times[name].append(wall)
    return {n: (statistics.median(t), min(t)) for n, t in times.items() if t}, failed


def bench_steps(kind, source, args, device, peaks, summary, seconds):
    ours, orig = build_models(kind, device, args.tiny)
    precisions = ["fp32", "bf16-autocast", "bf16-pure"]
    if device.type == "cuda":
        precisions += ["fp16-autocast", "fp16-pure"]
    steps = {}
    for p in precisions:
        steps[("orig", p)] = make_step("orig", orig, source, p, device)
        steps[("ours", p)] = make_step("ours", ours, source, p, device)
    n = peaks["size"]
    for dtype in [d for d in ("fp32", "bf16", "fp16") if d in peaks]:
        # the peak matmul runs interleaved with the steps too, so that it sees the same load
        a, b = (torch.randn(n, n, device=device).to(DTYPES[dtype]) for _ in range(2))
        steps[("peak", dtype)] = lambda a=a, b=b: (a @ b)[0, 0].float()
    times, failed = time_interleaved(steps, args.steps, args.warmup, device)
    for dtype in [d for d in ("fp32", "bf16", "fp16") if ("peak", d) in times]:
        peaks[dtype] = max(peaks[dtype], 2.0 * n ** 3 / times[("peak", dtype)][1])
    flops = step_flops(ours.cfg, source.size(0), source.size(1))

    print(f"\n### step: {kind} model ({KERNELS[kind][1]}), batch {source.size(0)} x {seconds:g} s ({source.size(1)} frames), "
          f"{flops / 1e9:.0f} GFLOP per step; seconds: median (fastest) of {args.steps}; matmul peak "
          + ", ".join(f"{d} {peaks[d] / 1e9:.0f}" for d in ("fp32", "bf16", "fp16") if d in peaks) + " GFLOP/s")
    print("| precision | original s | ours s | speed-up, median (fastest) | ours MFU, median (fastest) |")
    print("|---|---|---|---|---|")
    for p in precisions:
        o, u = times.get(("orig", p)), times.get(("ours", p))
        peak = peaks.get(p.split("-")[0])
        cell = lambda t, impl: f"{t[0]:.2f} ({t[1]:.2f})" if t else f"fails: {failed.get((impl, p), '?')}"  # noqa: E731
        o32 = times.get(("orig", "fp32"))
        ratio = (f"{o[0] / u[0]:.2f}x ({o[1] / u[1]:.2f}x)" if o and u
                 else f"{o32[0] / u[0]:.2f}x vs original fp32" if o32 and u else "-")
        mfu = (f"{100 * flops / u[0] / peak:.0f} % ({100 * flops / u[1] / peak:.0f} %) of {p.split('-')[0]} peak"
               if u and peak else "-")
        print(f"| {p} | {cell(o, 'orig')} | {cell(u, 'ours')} | {ratio} | {mfu} |")

    def best(impl, exclude=()):
        ok = {p: times[(impl, p)] for p in precisions if (impl, p) in times and p not in exclude}
        return min(ok.items(), key=lambda kv: kv[1][0]) if ok else (None, None)

    # The original was written for fp16 (its config's common.fp16) and fails under bf16 autocast;
    # pure bf16 (fairseq's common.bf16 casting the whole model) runs, so it is reported too.
    (bo_p, bo), (bu_p, bu) = best("orig", exclude=("bf16-pure",)), best("ours")
    bf_p, bf = "bf16-pure", times.get(("orig", "bf16-pure"))
    o32, u32 = times.get(("orig", "fp32")), times.get(("ours", "fp32"))
    if bo and bu:
        print(f"| best precision | {bo[0]:.2f} ({bo_p}) | {bu[0]:.2f} ({bu_p}) | {bo[0] / bu[0]:.2f}x ({bo[1] / bu[1]:.2f}x) | |")
    if bf and bu:
        print(f"| best, original forced into {bf_p} | {bf[0]:.2f} | {bu[0]:.2f} ({bu_p}) | "
              f"{bf[0] / bu[0]:.2f}x ({bf[1] / bu[1]:.2f}x) | |")
    if o32 and u32 and bu:
        line = (f"{kind}, {seconds:g} s clips: fp32 ours {o32[0] / u32[0]:.2f}x the original; best vs best "
                f"{bo[0] / bu[0]:.2f}x (ours at {bu_p} vs the original at {bo_p}, the fastest "
                f"precision it was written for); original's MFU in fp32 {100 * flops / o32[0] / peaks['fp32']:.0f} %")
        if bf:
            needed = flops / (bf[0] / 3) / peaks[bu_p.split("-")[0]]
            line += (f"; vs the original forced into {bf_p} {bf[0] / bu[0]:.2f}x, where 3x would take "
                     f"{bf[0] / 3:.2f} s a step, {100 * needed:.0f} % of the {bu_p.split('-')[0]} matmul peak")
        print(line)
        summary.append(line)
    del ours, orig, steps


def bench_data(clips, folder: Path, n_clips: int, seconds: float):
    """Clips/s of one worker (1 thread): decode a window + fbank, flac and opus-in-mkv."""
    import soundfile as sf

    from mae_ast import audio
    from mae_ast.core.features import fbank

    paths = {"flac": [], "opus-in-mkv": []}
    for i, wav in enumerate(clips):
        p = folder / f"clip{i}.flac"
        sf.write(str(p), wav.numpy(), SAMPLE_RATE)
        paths["flac"].append(str(p))
        m = folder / f"clip{i}.mkv"
        audio.write_mkv_opus(wav.numpy(), SAMPLE_RATE, m)
        paths["opus-in-mkv"].append(str(m))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # what a loader worker gets
    rates = {}
    try:
        for fmt, ps in paths.items():
            def one(i):
                wav = audio.read(ps[i % len(ps)], SAMPLE_RATE, 0, int(seconds * SAMPLE_RATE))
                return fbank(wav.unsqueeze(0))
            one(0)
            start = time.perf_counter()
            for i in range(n_clips):
                one(i)
            rates[fmt] = n_clips / (time.perf_counter() - start)
    finally:
        torch.set_num_threads(threads)
    print(f"\n### data: one loader worker (1 thread), decode {seconds:.0f} s + fbank, {n_clips} clips")
    print("| format | clips/s | audio s per s |")
    print("|---|---|---|")
    for fmt, r in rates.items():
        print(f"| {fmt} | {r:.1f} | {r * seconds:.0f} |")
    return rates


def upstream_batch(clips, n=16, min_s=1.0, max_s=10.0, rate=SAMPLE_RATE):
    """The s3prl issue's batch: ``n`` real-speech waveforms from ``min_s`` to ``max_s`` seconds,
    evenly spread, cut at different places of the speech clips. Unequal lengths matter: the
    stock upstream pads every clip to the longest, ours runs only the valid tokens."""
    speech = torch.cat(clips)
    speech = speech.repeat(-(-int(2 * max_s * rate) // len(speech)))  # long enough for any cut
    lengths = torch.linspace(min_s, max_s, n).mul(rate).long().tolist()
    step = (len(speech) - lengths[-1]) // n
    return [speech[i * step: i * step + length] for i, length in enumerate(lengths)]


def bench_upstream(clips, args, device):
    import bench_upstream as bu

    clips = upstream_batch(clips)
    print("\n### s3prl upstream: feature extraction, stock vs ours "
          f"({len(clips)} clips of 1-10 s of speech, {sum(map(len, clips)) / SAMPLE_RATE:.0f} s in all, "
          f"best of {args.upstream_repeats})")
    print("| model | stock s | ours fp32 s | speed-up | ours bf16 s | speed-up | bf16 rel. diff |")
    print("|---|---|---|---|---|---|---|")
    for kind in args.models:
        r = bu.measure(frame=kind == "frame", wavs=clips, repeats=args.upstream_repeats, device=device.type,
                       tiny=args.tiny)
        (ws, _), (wo, _), (wb, _) = r["best"]["stock"], r["best"]["ours"], r["best"]["ours_bf16"]
        print(f"| {kind} | {ws:.2f} | {wo:.2f} | {ws / wo:.2f}x | {wb:.2f} | {ws / wb:.2f}x | {r['bf16_rel_diff']:.1e} |")


def make_finetune_step(model, wavs, labels, precision: str, kernels: bool, device):
    """A closure running one fine-tuning step with the CPU kernels on or off."""
    from mae_ast.core import cpu_kernels
    from mae_ast.core.augment import SpecAugment

    augment = SpecAugment(freq_mask=24, time_mask=96)

    def step():
        for p in model.parameters():
            p.grad = None
        with cpu_kernels.enabled(kernels):
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16-autocast"):
                logits = model(wavs, augment=augment)
            loss = torch.nn.functional.cross_entropy(logits.float(), labels)
            loss.backward()
        return loss

    return step


def bench_finetune(kind, wavs, args, device):
    from mae_ast.core.classifier import MAEASTClassifier

    cfg = paper_cfg(kind, args.tiny)
    cfg.dropout_input = 0.0  # pre-training only (masking)
    torch.manual_seed(0)
    model = MAEASTClassifier(cfg, num_classes=50).to(device).train()
    labels = torch.arange(wavs.size(0), device=device) % 50
    precisions = ["fp32", "bf16-autocast"]
    steps = {(impl, p): make_finetune_step(model, wavs, labels, p, impl == "kernels", device)
             for p in precisions for impl in ("kernels", "plain")}
    times, failed = time_interleaved(steps, args.steps, args.warmup, device)
    print(f"\n### finetune: {kind} classifier, batch {wavs.size(0)} x {wavs.size(1) / SAMPLE_RATE:g} s, "
          f"every token, dropout 0.1, SpecAugment; seconds: median (fastest) of {args.steps}")
    print("| precision | plain paths s | CPU kernels s | speed-up, median (fastest) |")
    print("|---|---|---|---|")
    for p in precisions:
        plain, ours = times.get(("plain", p)), times.get(("kernels", p))
        cell = lambda t, impl: f"{t[0]:.2f} ({t[1]:.2f})" if t else f"fails: {failed.get((impl, p), '?')}"  # noqa: E731
        ratio = f"{plain[0] / ours[0]:.2f}x ({plain[1] / ours[1]:.2f}x)" if plain and ours else "-"
        print(f"| {p} | {cell(plain, 'plain')} | {cell(ours, 'kernels')} | {ratio} |")
    if device.type != "cpu":
        print("(on a GPU the CPU kernels do not apply: both columns run the plain paths)")
    if kind == args.models[0]:
        bench_finetune_short(wavs, args, device)


SMALL = dict(encoder_layers=4, encoder_embed_dim=256, encoder_ffn_embed_dim=1024, encoder_attention_heads=4)


def one_second_pieces(wavs, n: int = 16):
    """n clips of 1 s cut from the batch's clips (repeated when they hold fewer seconds)."""
    pieces = [w[i:i + SAMPLE_RATE] for w in wavs for i in range(0, w.numel() - SAMPLE_RATE + 1, SAMPLE_RATE)]
    return torch.stack([pieces[i % len(pieces)] for i in range(n)])


def bench_finetune_short(wavs, args, device):
    """A small encoder (4 x 256; --tiny: the tiny one) on 16 clips of 1 s and on the batch of the
    longest --clip-s: the short-clip shapes the paper-size row does not cover (issue 22: bf16
    autocast was reported 10x slower than fp32 there). fp32 and bf16 autocast, CPU kernels and
    plain paths, interleaved."""
    from mae_ast.core.classifier import MAEASTClassifier

    cfg = paper_cfg("patch", args.tiny)
    if not args.tiny:
        cfg = dataclasses.replace(cfg, **SMALL)
    cfg.dropout_input = 0.0
    torch.manual_seed(0)
    model = MAEASTClassifier(cfg, num_classes=20).to(device).train()
    batches = {"16 x 1 s": one_second_pieces(wavs).to(device), f"{wavs.size(0)} x {wavs.size(1) / SAMPLE_RATE:g} s": wavs}
    precisions = ["fp32", "bf16-autocast"]
    steps = {}
    for name, batch in batches.items():
        labels = torch.arange(batch.size(0), device=device) % 20
        for p in precisions:
            for impl in ("kernels", "plain"):
                steps[(name, impl, p)] = make_finetune_step(model, batch, labels, p, impl == "kernels", device)
    times, failed = time_interleaved(steps, args.steps, args.warmup, device)
    size = "tiny" if args.tiny else "4 x 256"
    print(f"\n### finetune, short clips: {size} patch classifier, every token, dropout 0.1, SpecAugment; "
          f"seconds: median (fastest) of {args.steps}")
    print("| clips, precision | plain paths s | CPU kernels s | bf16 vs fp32 (CPU kernels) |")
    print("|---|---|---|---|")
    cell = lambda key: f"{times[key][0]:.3f} ({times[key][1]:.3f})" if key in times else f"fails: {failed.get(key, '?')}"  # noqa: E731
    for name in batches:
        for p in precisions:
            fp32, ours = times.get((name, "kernels", "fp32")), times.get((name, "kernels", p))
            ratio = f"{fp32[0] / ours[0]:.2f}x" if fp32 and ours else "-"
            print(f"| {name}, {p} | {cell((name, 'plain', p))} | {cell((name, 'kernels', p))} | {ratio} |")


# ---- decoder attention options -----------------------------------------------------------------
def decoder_options(heads: int) -> dict:
    """model.decoder_attention settings timed by the decoder section. multi_window: MW-MAE's
    window sizes (2, 5, 10, 25, 50, 125 tokens, two global heads) spread over ``heads`` heads."""
    mw = [2, 5, 10, 25, 50, 125, 2, 5, 10, 25][: max(1, heads - 2)]
    return {"global": {},
            "local": dict(decoder_attention="local", decoder_window=[4, 4], decoder_window_shift="time"),
            "multi_window": dict(decoder_attention="multi_window",
                                 decoder_head_windows=mw + [0] * (heads - len(mw)))}


def bench_decoder(kind, source, args, device, seconds, summary):
    from mae_ast.core import MAEAST

    cfg = paper_cfg(kind, args.tiny)
    options = decoder_options(cfg.encoder_attention_heads)
    precisions = ["fp32", "bf16-pure"]
    torch.manual_seed(0)
    weights = MAEAST(cfg, mask_type=KERNELS[kind][1]).state_dict()
    steps = {}
    for name, settings in options.items():
        model = MAEAST(dataclasses.replace(cfg, **settings), mask_type=KERNELS[kind][1])
        model.load_state_dict(weights, strict=True)  # windows add no parameters: one set of weights
        model = model.to(device).train()
        for p in precisions:
            steps[(name, p)] = make_step("ours", model, source, p, device)
    times, failed = time_interleaved(steps, args.steps, args.warmup, device)
    print(f"\n### decoder: {kind} model ({KERNELS[kind][1]}), batch {source.size(0)} x {seconds:g} s, "
          f"{cfg.decoder_layers} decoder layers, {cfg.encoder_attention_heads} heads; pre-training step seconds: "
          f"median (fastest) of {args.steps}, and over global's median")
    print("| decoder attention | " + " | ".join(f"{p} s | vs global" for p in precisions) + " |")
    print("|---|" + "---|---|" * len(precisions))
    for name, settings in options.items():
        cells = []
        for p in precisions:
            t, g = times.get((name, p)), times.get(("global", p))
            cells.append(f"{t[0]:.2f} ({t[1]:.2f})" if t else f"fails: {failed.get((name, p), '?')}")
            cells.append(f"{t[0] / g[0]:.2f}x" if t and g else "-")
        label = f"{name} {settings.get('decoder_window') or settings.get('decoder_head_windows') or ''}".strip()
        print(f"| {label} | " + " | ".join(cells) + " |")
    ratios = [f"{name} {times[(name, p)][0] / times[('global', p)][0]:.2f}x global's time in {p}"
              for name in options if name != "global" for p in precisions
              if (name, p) in times and ("global", p) in times]
    summary.append(f"decoder, {kind}, {seconds:g} s clips: " + "; ".join(ratios))


# ---- several masks per clip ---------------------------------------------------------------------
MASKS_PER_CLIP = (1, 4, 16)


def bench_masks_per_clip(kind, source, args, device, seconds, summary):
    """task.masks_per_clip K at a fixed batch of clips: step time, and time per clip and per masked
    sequence (K per clip). The clips' log-mel is computed before the step (as the loader does), so
    what K shares here is the normalisation and patch projection; decoding and fbank are shared too
    in training, once per clip whatever K."""
    from mae_ast.core import MAEAST

    cfg = paper_cfg(kind, args.tiny)
    torch.manual_seed(0)
    model = MAEAST(cfg, mask_type=KERNELS[kind][1]).to(device).train()
    steps = {k: make_step("ours", model, source, "fp32", device, masks_per_clip=k) for k in MASKS_PER_CLIP}
    times, failed = time_interleaved(steps, args.steps, args.warmup, device)
    sequences = {k: getattr(steps[k], "sequences", k * source.size(0)) for k in MASKS_PER_CLIP}  # as run
    clips = source.size(0)
    print(f"\n### masks per clip: {kind} model ({KERNELS[kind][1]}), {clips} clips x {seconds:g} s, fp32; "
          f"seconds: median (fastest) of {args.steps}")
    print("| task.masks_per_clip | sequences | step s | s per clip | s per masked sequence | per sequence vs K=1 |")
    print("|---|---|---|---|---|---|")
    base = times.get(1)
    for k in MASKS_PER_CLIP:
        t = times.get(k)
        if not t:
            print(f"| {k} | {sequences[k]} | fails: {failed.get(k, '?')} | | | |")
            continue
        ratio = f"{(t[0] / sequences[k]) / (base[0] / sequences[1]):.2f}x" if base else "-"
        print(f"| {k} | {sequences[k]} | {t[0]:.2f} ({t[1]:.2f}) | {t[0] / clips:.3f} | {t[0] / sequences[k]:.3f} | {ratio} |")
    if base:
        summary.append(f"masks per clip, {kind}, {seconds:g} s clips: " + "; ".join(
            f"K={k} {times[k][0] / clips:.3f} s per clip, {times[k][0] / k / base[0]:.2f}x K=1's time per sequence"
            for k in MASKS_PER_CLIP if k in times))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="where the models run")
    ap.add_argument("--models", default="patch,frame", help="comma-separated: patch, frame")
    ap.add_argument("--steps", type=int, default=5, help="timed steps per configuration (median)")
    ap.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    ap.add_argument("--batch", type=int, default=4, help="clips per training batch")
    ap.add_argument("--clip-s", default="1,3,10",
                    help="seconds per clip of the training batch, comma-separated: each length is timed (default 1,3,10)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    ap.add_argument("--sections", default="step,data,upstream,finetune,decoder,masks",
                    help="comma-separated: step, data, upstream, finetune, decoder, masks")
    ap.add_argument("--data-clips", type=int, default=20, help="clips decoded per format")
    ap.add_argument("--upstream-repeats", type=int, default=3)
    ap.add_argument("--quick", action="store_true",
                    help="smoke test: 2 steps after 1 warm-up, 3 s clips, fewer data clips, 1 upstream repeat")
    ap.add_argument("--tiny", action="store_true",
                    help="a tiny model (2 + 1 layers, 32 dim) instead of the paper's, and a brief small "
                         "matmul peak: checks that every section runs, in seconds; the figures mean nothing")
    args = ap.parse_args()
    if args.quick:
        args.steps, args.warmup, args.clip_s, args.data_clips, args.upstream_repeats = 2, 1, "3", 4, 1
    args.models = [m for m in args.models.split(",") if m]
    try:
        args.clip_s = sorted(float(x) for x in str(args.clip_s).split(",") if x.strip())
    except ValueError:
        ap.error(f"--clip-s {args.clip_s}: comma-separated seconds, e.g. 1,3,10")
    if not args.clip_s or min(args.clip_s) < 0.5:
        ap.error("--clip-s: every clip must be at least 0.5 s")
    sections = set(args.sections.split(","))
    torch.set_num_threads(args.threads or os.cpu_count() or 1)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda: no GPU visible to torch")
    name = torch.cuda.get_device_name() if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"# MAE-AST bench: {name}; torch {torch.__version__}; load average {os.getloadavg()[0]:.2f}")

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        clips = speech_clips(tmp, args.batch, max(args.clip_s))
        summary = []
        if sections & {"step", "decoder", "masks"}:
            from mae_ast.core.features import fbank

            sources = [fbank(torch.stack([c[: int(s * SAMPLE_RATE)] for c in clips])).to(device) for s in args.clip_s]
        if "step" in sections:
            source = sources[-1]
            n = 256 if args.tiny else 2048 if device.type == "cpu" else 8192
            peak_s = 0.3 if args.tiny else 3.0
            peaks = {"fp32": matmul_peak(torch.float32, device, n, peak_s),
                     "bf16": matmul_peak(torch.bfloat16, device, n, peak_s)}
            if device.type == "cuda":
                peaks["fp16"] = matmul_peak(torch.float16, device, n, peak_s)
            peaks["size"] = n
            if device.type == "cpu":
                # the precision the original was written for; far too slow on a CPU to time a step
                fp16 = matmul_peak(torch.float16, device, 256, seconds=0.2 if args.tiny else 1.0)
                minutes = step_flops(paper_cfg("patch", args.tiny), source.size(0), source.size(1)) / fp16 / 60
                print(f"fp16 matmul on this CPU: {fp16 / 1e9:.2f} GFLOP/s (256^3), so the original's fp16 "
                      f"(common.fp16=true) is not timed here: one step would take about {minutes:.0f} min")
            for seconds, source in zip(args.clip_s, sources):
                for kind in args.models:
                    bench_steps(kind, source, args, device, peaks, summary, seconds)
            print("\nmatmul peak, {0}x{0}x{0}, fastest of {1:g} s alone and of the runs interleaved with the "
                  "steps: ".format(n, peak_s) + ", ".join(f"{k} {v / 1e9:.0f} GFLOP/s" for k, v in peaks.items() if k != "size"))
        if "data" in sections:
            bench_data(clips, tmp, args.data_clips, max(args.clip_s))
        if "upstream" in sections:
            bench_upstream(clips, args, device)
        if "finetune" in sections:
            wavs = torch.stack([c[: int(max(args.clip_s) * SAMPLE_RATE)] for c in clips]).to(device)
            for kind in args.models:
                bench_finetune(kind, wavs, args, device)
        if "decoder" in sections:
            for seconds, source in zip(args.clip_s, sources):
                for kind in args.models:
                    bench_decoder(kind, source, args, device, seconds, summary)
        if "masks" in sections:  # the shortest clips: K x B sequences of 10 s are minutes a step on a CPU
            for kind in args.models:
                bench_masks_per_clip(kind, sources[0], args, device, args.clip_s[0], summary)
        if summary:
            print("\n" + "\n".join(summary))
    print(f"\nload average at the end: {os.getloadavg()[0]:.2f} (other processes slow every row alike)")


if __name__ == "__main__":
    main()
