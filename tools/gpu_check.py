#!/usr/bin/env python
"""Every path that only a GPU takes, run once each, one summary line each (PASS/FAIL + figure).

Run it through ``bash tools/gpu_check.sh`` (which sets up the environment and says so when the
machine has no GPU). The paths:

* ``pretrain-fp16``, ``pretrain-bf16``: ``fairseq-hydra-train`` pre-training with
  ``common.fp16=true`` / ``common.bf16=true``, 50 updates of a 4 x 256 patch model on a corpus
  written here (harmonic tones with moving pitch, noise bursts, chirps); loss finite and falling;
* ``finetune-amp``: fine-tuning with ``common.amp=true`` from the fp16 run's checkpoint;
* ``s3prl-upstream``, ``hear``: the s3prl upstream and the HEAR module on the GPU, equal to CPU;
* ``classify``: ``tools/classify.py --device cuda`` on the fine-tuned model, equal to CPU;
* ``bench``: ``tools/bench.py --device cuda --quick``.

Environment: ``GPU_CHECK_DEVICE=cpu`` runs the pipeline on a CPU (the fp16 run and amp are
CUDA-only and skipped, the models are tiny, bench runs ``--tiny``): a check of this script, not
of a GPU. ``GPU_CHECK_OUT`` (default ``/tmp/gpu_check_out``) receives ``gpu_check.log`` (every
command and its output) and ``summary.txt``. ``GPU_CHECK_BUDGET_S`` (default 480 on a GPU):
the whole check's time; each command is stopped when it is spent. ``bench.py`` speaks its clips
with espeak-ng: without it the bench path fails, saying so. Exit status: 0 when every path passed.
"""
import importlib.util
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
SR = 16000
UPDATES = 50


class Check:
    """The run's shared state: device, work folder, log, results."""

    def __init__(self, device: str, work: Path, out: Path, budget_s: float):
        self.device, self.work, self.out = device, work, out
        self.gpu = device == "cuda"
        # the whole check must end in time (8 minutes on a GPU): each command gets what is left
        self.deadline = time.time() + budget_s
        self.log = open(out / "gpu_check.log", "w")
        self.results = []
        self.pretrained = None  # the fp16 (or bf16) run's checkpoint, for the later paths
        self.classifier = None

    def note(self, text: str) -> None:
        self.log.write(text.rstrip("\n") + "\n")
        self.log.flush()

    def command(self, cmd, timeout: int, env=None):
        """Run ``cmd``, its output into the log; returns (returncode, stdout + stderr). It is
        stopped after ``timeout`` seconds, or sooner when the check's time is spent."""
        self.note(f"\n$ {' '.join(map(str, cmd))}")
        started = time.time()
        timeout = max(1, min(timeout, int(self.deadline - started)))
        try:
            proc = subprocess.run(list(map(str, cmd)), capture_output=True, text=True, timeout=timeout,
                                  cwd=str(REPO), env=dict(os.environ, **(env or {})))
            code, text = proc.returncode, proc.stdout + proc.stderr
        except subprocess.TimeoutExpired as e:
            code = 124
            text = (e.stdout or b"").decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
            text += f"\n(gpu_check: stopped after {timeout} s)"
        self.note(text)
        self.note(f"(exit {code}, {time.time() - started:.0f} s)")
        return code, text

    def record(self, name: str, passed, figure: str) -> None:
        status = {True: "PASS", False: "FAIL", None: "SKIP"}[passed]
        line = f"{status} {name:<16} {figure}"
        self.results.append((passed, line))
        self.note(f"== {line}")
        print(line, flush=True)


def failure_reason(text: str) -> str:
    """The last line that says what went wrong, for the summary."""
    lines = [l.strip() for l in text.splitlines() if l.strip()]
    for line in reversed(lines):
        if re.search(r"Error|error:|Exception|Traceback|stopped after", line):
            return line[:200]
    return (lines[-1][:200] if lines else "no output")


# ---- data -----------------------------------------------------------------------------------
def sounds(kind: str, seconds: float, rng: np.random.Generator) -> np.ndarray:
    """Audio with structure a masked autoencoder can learn: harmonic tones whose pitch moves,
    noise bursts, chirps."""
    t = np.arange(int(seconds * SR)) / SR
    if kind == "tone":
        f0 = rng.uniform(120, 400) * (1 + 0.1 * np.sin(2 * np.pi * rng.uniform(0.2, 2) * t))
        phase = 2 * np.pi * np.cumsum(f0) / SR
        wav = sum(np.sin(k * phase) / k for k in range(1, 6))
    elif kind == "noise":
        envelope = (np.sin(2 * np.pi * rng.uniform(0.5, 3) * t) > 0).astype(float)
        wav = rng.standard_normal(len(t)) * envelope
    else:
        f = rng.uniform(200, 600)
        wav = np.sin(2 * np.pi * (f * t + rng.uniform(200, 1500) * t ** 2))
    return (0.3 * wav / (np.abs(wav).max() + 1e-9)).astype(np.float32)


def write_corpus(check: Check) -> dict:
    """Unlabelled clips for pre-training, class folders for fine-tuning; their manifests."""
    import soundfile as sf

    rng = np.random.default_rng(0)
    kinds = ("tone", "noise", "chirp")
    audio = check.work / "audio"
    for i in range(60):
        (audio / kinds[i % 3]).mkdir(parents=True, exist_ok=True)
        sf.write(audio / kinds[i % 3] / f"clip{i}.flac", sounds(kinds[i % 3], rng.uniform(3, 6), rng), SR)
    clips = check.work / "clips"
    for kind in kinds:
        (clips / kind).mkdir(parents=True)
        for i in range(16):
            sf.write(clips / kind / f"{kind}{i}.flac", sounds(kind, 1.0, rng), SR)
    manifests = {"pretrain": check.work / "manifests", "finetune": check.work / "labelled"}
    for args in ([audio, "--dest", manifests["pretrain"], "--valid-percent", "0.1"],
                 [clips, "--dest", manifests["finetune"], "--labels", "folders", "--valid-percent", "0.25"]):
        code, text = check.command([sys.executable, REPO / "tools" / "make_manifest.py", *args, "--seed", "1"], 300)
        if code != 0:
            raise RuntimeError(f"make_manifest.py failed: {failure_reason(text)}")
    return manifests


# ---- fairseq runs ----------------------------------------------------------------------------
def fairseq_command():
    script = Path(sys.executable).parent / "fairseq-hydra-train"
    return [script] if script.exists() else [sys.executable, "-m", "fairseq_cli.hydra_train"]


def model_overrides(gpu: bool, prefix: str = "model."):
    """A 4 x 256 patch model on a GPU; the tests' tiny one on a CPU."""
    size = (dict(encoder_layers=4, encoder_embed_dim=256, encoder_ffn_embed_dim=1024, encoder_attention_heads=4)
            if gpu else dict(encoder_layers=2, encoder_embed_dim=32, encoder_ffn_embed_dim=64, encoder_attention_heads=2))
    size.update(max_token_length=4000, enc_sine_pos="true")
    return [f"{prefix}{k}={v}" for k, v in size.items()]


def losses_of(run: Path, kind: str = "train_inner"):
    from mae_ast import fairseq_log

    records = fairseq_log.last_per_update(fairseq_log.read_log_file(run / "hydra_train.log"), kind)
    return records, [r.number("loss") for r in records]


def falling(losses) -> bool:
    """The mean of the last three logged losses is below the mean of the first three."""
    return len(losses) >= 4 and np.mean(losses[-3:]) < np.mean(losses[:3])


def pretrain(check: Check, manifests: dict, precision: str) -> None:
    name = f"pretrain-{precision}"
    if precision == "fp16" and not check.gpu:
        return check.record(name, None, "common.fp16 needs CUDA in fairseq 0.12")
    run = check.work / name
    width = 256 if check.gpu else 32
    cmd = fairseq_command() + [
        "--config-dir", REPO / "config" / "pretrain", "--config-name", "mae_ast",
        f"common.user_dir={REPO / 'mae_ast'}", f"task.data={manifests['pretrain']}", f"hydra.run.dir={run}",
        f"common.fp16={str(precision == 'fp16').lower()}", f"common.bf16={str(precision == 'bf16').lower()}",
        f"common.cpu={str(not check.gpu).lower()}", "common.log_format=json", "common.log_interval=5",
        "dataset.num_workers=2", f"dataset.max_tokens={1600000 if check.gpu else 400000}",
        "task.min_sample_size=32000", "task.max_sample_size=96000", "task.mask_type=chunk_mask",
        "model.decoder_layers=2" if check.gpu else "model.decoder_layers=1", f"model.decoder_embed_dim={width}",
        "model.dec_sine_pos=true", "model.encoder_layerdrop=0", *model_overrides(check.gpu),
        f"optimization.max_update={UPDATES}", "optimization.lr=[0.0005]", "lr_scheduler.warmup_updates=10",
        "dataset.disable_validation=true", f"checkpoint.save_interval_updates={UPDATES}",
        "checkpoint.no_epoch_checkpoints=true",
    ]
    started = time.time()
    code, text = check.command(cmd, 240, env={"HYDRA_FULL_ERROR": "1"})
    records, losses = losses_of(run)
    updates = int(records[-1].number("num_updates")) if records else 0
    ckpt = run / "checkpoints" / "checkpoint_last.pt"
    figure = (f"loss {losses[0]:.3f} -> {losses[-1]:.3f} over {updates} updates, {time.time() - started:.0f} s"
              if losses else "no loss logged")
    if code != 0:
        return check.record(name, False, f"exit {code}: {failure_reason(text)}")
    scale = records[-1].number("loss_scale") if records else None
    if precision == "fp16":
        figure += f", loss scale {scale:g}" if scale is not None else ", no loss_scale logged (not fp16?)"
    ok = (updates >= UPDATES and ckpt.exists() and all(math.isfinite(x) for x in losses) and falling(losses)
          and (precision != "fp16" or scale is not None))
    if ok and check.pretrained is None:
        check.pretrained = ckpt
    check.record(name, ok, figure)


def finetune(check: Check, manifests: dict) -> None:
    name = "finetune-amp" if check.gpu else "finetune-fp32"
    if check.pretrained is None:
        return check.record(name, False, "no pre-training checkpoint (the pre-training paths failed)")
    run = check.work / "finetune"
    cmd = fairseq_command() + [
        "--config-dir", REPO / "config" / "finetune", "--config-name", "mae_ast_finetune",
        f"common.user_dir={REPO / 'mae_ast'}", f"task.data={manifests['finetune']}", f"hydra.run.dir={run}",
        f"common.amp={str(check.gpu).lower()}", f"common.cpu={str(not check.gpu).lower()}",
        "common.log_interval=2", "dataset.num_workers=2", "dataset.batch_size=8",
        f"task.max_sample_size={SR}", "task.time_mask=20", "optimization.lr=[0.001]",
        "optimization.max_epoch=6", f"model.pretrained_checkpoint={check.pretrained}", *model_overrides(check.gpu),
    ]
    started = time.time()
    code, text = check.command(cmd, 240, env={"HYDRA_FULL_ERROR": "1"})
    if code != 0:
        return check.record(name, False, f"exit {code}: {failure_reason(text)}")
    _, losses = losses_of(run)
    valid, _ = losses_of(run, "valid")
    accuracy = valid[-1].number("accuracy") if valid else None
    best = run / "checkpoints" / "checkpoint_best.pt"
    scale = "amp" if "amp" in text.lower() else "amp not mentioned in the log"
    ok = bool(losses) and all(math.isfinite(x) for x in losses) and best.exists() and accuracy is not None
    if ok:
        check.classifier = best
    figure = (f"loss {losses[0]:.3f} -> {losses[-1]:.3f}, valid accuracy {accuracy}, "
              f"{time.time() - started:.0f} s" if losses else "no loss logged")
    check.record(name, ok, figure + ("" if not check.gpu else f" ({scale})"))


# ---- inference on the device ----------------------------------------------------------------
def waves(seconds=(1.0, 2.7, 4.2)):
    rng = np.random.default_rng(5)
    import torch

    return [torch.from_numpy(sounds(k, s, rng)) for k, s in zip(("tone", "chirp", "noise"), seconds)]


def max_difference(a, b) -> float:
    import torch

    if isinstance(a, dict):
        return max(max_difference(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return max(max_difference(x, y) for x, y in zip(a, b))
    return float((a.float().cpu() - b.float().cpu()).abs().max()) if isinstance(a, torch.Tensor) else 0.0


def upstream(check: Check) -> None:
    import torch
    from s3prl_upstream.hubconf import mae_ast

    started = time.time()
    cpu = mae_ast(str(check.pretrained)).eval()
    dev = mae_ast(str(check.pretrained)).to(check.device).eval()
    wavs = waves()
    with torch.no_grad():
        ref = cpu(wavs)
        out = dev([w.to(check.device) for w in wavs])
    on_device = all(h.device.type == check.device for h in out["hidden_states"])
    diff = max_difference(ref, out)
    check.record("s3prl-upstream", on_device and diff < 1e-3,
                 f"{len(out['hidden_states'])} layers on {out['last_hidden_state'].device}, max |{check.device} - cpu| "
                 f"{diff:.1e}, {time.time() - started:.1f} s")


def hear_module(check: Check) -> None:
    import torch
    import mae_ast.hear as hear

    started = time.time()
    cpu, dev = hear.load_model(str(check.pretrained)), hear.load_model(str(check.pretrained)).to(check.device)
    audio = torch.stack([w[: 2 * SR] for w in waves((2.0, 2.7, 4.2))])
    emb_cpu, stamps_cpu = hear.get_timestamp_embeddings(audio, cpu)
    emb, stamps = hear.get_timestamp_embeddings(audio.to(check.device), dev)
    scene = hear.get_scene_embeddings(audio.to(check.device), dev)
    diff = max(max_difference(emb_cpu, emb), max_difference(hear.get_scene_embeddings(audio, cpu), scene))
    ok = emb.device.type == check.device and torch.equal(stamps.cpu(), stamps_cpu) and diff < 1e-3
    check.record("hear", ok, f"embeddings {tuple(emb.shape)} on {emb.device}, max |{check.device} - cpu| {diff:.1e}, "
                             f"{time.time() - started:.1f} s")


def classify(check: Check) -> None:
    if check.classifier is None:
        return check.record("classify", False, "no fine-tuned checkpoint (the fine-tuning path failed)")
    import soundfile as sf

    files = []
    for i, w in enumerate(waves()):
        files.append(check.work / f"classify{i}.flac")
        sf.write(files[-1], w.numpy(), SR)
    outputs = {}
    for device in ("cpu", check.device):
        code, text = check.command([sys.executable, REPO / "tools" / "classify.py", check.classifier, *files,
                                    "--device", device, "--top-k", "3"], 300)
        if code != 0:
            return check.record("classify", False, f"--device {device}: exit {code}: {failure_reason(text)}")
        outputs[device] = [l.split() for l in text.splitlines() if re.match(r"^\s+[0-9.]+\s+\S", l)]
    cpu, dev = outputs["cpu"], outputs[check.device]
    same_labels = [r[1] for r in cpu] == [r[1] for r in dev] and len(dev) == 3 * len(files)
    diff = max((abs(float(a[0]) - float(b[0])) for a, b in zip(cpu, dev)), default=float("nan"))
    check.record("classify", same_labels and diff <= 2e-3,
                 f"{len(files)} files, top-3 labels as on the cpu: {same_labels}, max score difference {diff:.3f}")


def bench(check: Check) -> None:
    flags = ["--device", check.device, "--quick"] + ([] if check.gpu else ["--tiny", "--threads", "2"])
    if importlib.util.find_spec("av") is None:  # the data section writes mkv/opus clips with PyAV
        flags += ["--sections", "step,upstream,finetune"]
    started = time.time()
    code, text = check.command([sys.executable, REPO / "tools" / "bench.py", *flags], 360)
    if code != 0:
        return check.record("bench", False, f"exit {code}: {failure_reason(text)}")
    rows = [l for l in text.splitlines() if l.startswith("|") and "---" not in l]
    # bench prints its summary lines after the tables and again at the end: once each here
    speed = list(dict.fromkeys(l for l in text.splitlines() if re.match(r"^(patch|frame), [0-9.]+ s clips:", l)))
    figure = "; ".join(l.split(" (ours at")[0] for l in speed) if speed else f"{len(rows)} table rows"
    check.record("bench", bool(rows), f"{figure} ({time.time() - started:.0f} s)")


# ---- the run --------------------------------------------------------------------------------
def guarded(check: Check, name: str, step, *args) -> None:
    """Run one path; an exception is that path's failure, not the end of the check."""
    try:
        step(check, *args)
    except Exception as e:  # noqa: BLE001 - every failure is reported in the summary
        check.note(traceback.format_exc())
        check.record(name, False, f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:200])


def main() -> int:
    device = os.environ.get("GPU_CHECK_DEVICE", "cuda")
    out = Path(os.environ.get("GPU_CHECK_OUT", Path(tempfile.gettempdir()) / "gpu_check_out")).resolve()
    out.mkdir(parents=True, exist_ok=True)
    import torch

    if device == "cuda" and not torch.cuda.is_available():
        print(f"FAIL setup           torch {torch.__version__} at {sys.executable} sees no GPU")
        return 1
    work = Path(tempfile.mkdtemp(prefix="gpu_check_"))
    budget = float(os.environ.get("GPU_CHECK_BUDGET_S", 480 if device == "cuda" else 1500))
    check = Check(device, work, out, budget)
    where = torch.cuda.get_device_name() if device == "cuda" else "CPU (GPU_CHECK_DEVICE=cpu: a check of the script)"
    print(f"gpu_check: {where}; torch {torch.__version__}; python {sys.version.split()[0]}; log {out / 'gpu_check.log'}",
          flush=True)
    started = time.time()
    try:
        manifests = write_corpus(check)
    except Exception as e:  # noqa: BLE001
        check.note(traceback.format_exc())
        check.record("corpus", False, f"{type(e).__name__}: {e}"[:200])
        manifests = None
    for precision in ("fp16", "bf16"):
        if manifests:
            guarded(check, f"pretrain-{precision}", pretrain, manifests, precision)
        else:
            check.record(f"pretrain-{precision}", False, "not run: no corpus")
    if manifests:
        guarded(check, "finetune-amp", finetune, manifests)
    else:
        check.record("finetune-amp" if check.gpu else "finetune-fp32", False, "not run: no corpus")
    if check.pretrained is None:
        check.pretrained = tiny_checkpoint(check)
    guarded(check, "s3prl-upstream", upstream)
    guarded(check, "hear", hear_module)
    guarded(check, "classify", classify)
    if shutil.which("espeak-ng") is None:  # bench.py speaks its clips
        check.record("bench", False, "not run: bench.py needs espeak-ng (apt-get install espeak-ng)")
    else:
        guarded(check, "bench", bench)
    failed = [line for passed, line in check.results if passed is False]
    summary = [line for _, line in check.results]
    summary.append(f"gpu_check: {len(summary) - len(failed)} of {len(summary)} paths passed or skipped, "
                   f"{time.time() - started:.0f} s")
    (out / "summary.txt").write_text("\n".join(summary) + "\n")
    print("\n" + "\n".join(summary), flush=True)
    shutil.rmtree(work, ignore_errors=True)
    return 1 if failed else 0


def tiny_checkpoint(check: Check) -> Path:
    """When pre-training failed, the inference paths still run on a model built here."""
    from mae_ast.core import MAEAST, MAEASTConfig, checkpoint

    path = check.work / "built.pt"
    cfg = MAEASTConfig(encoder_layers=2, decoder_layers=1, encoder_embed_dim=32, decoder_embed_dim=32,
                       encoder_ffn_embed_dim=64, encoder_attention_heads=2, max_token_length=4000, enc_sine_pos=True)
    checkpoint.save(str(path), MAEAST(cfg, mask_type="chunk_mask"), max_sample_size=96000)
    check.note(f"(pre-training gave no checkpoint: the inference paths use {path}, built here)")
    return path


if __name__ == "__main__":
    sys.exit(main())
