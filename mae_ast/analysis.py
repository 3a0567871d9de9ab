"""Looking inside a pre-trained MAE-AST checkpoint, in plain torch (no fairseq, no s3prl).

Used by ``tools/visualize.py``, ``tools/extract_features.py`` and the report of
``tools/demo.py``:

* ``load(path)``: the model (decoder included, eval mode) from a checkpoint;
  ``random_init_like(model)``: the same architecture with fresh weights (for baselines).
* ``reconstruct(model, wav)``: draw a mask, run the model, and return the spectrogram, what the
  encoder saw, and the reconstruction, as (frames, mel bins) arrays; ``plot_reconstruction``
  draws them.
* ``embed(model, wav, layer)``: frame-level features (steps, dim), the same frames as the s3prl
  upstream's ``hidden_states`` (patch models concatenate the frequency patches of one time step).
* ``linear_probe(...)``: multinomial logistic regression in torch, for quick downstream checks.
"""
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .core import checkpoint
from .core.extractor import chunk_steps_for, extract, num_steps
from .core.features import SAMPLE_RATE, fbank
from .core.masking import compute_mask
from .core.model import MAEAST


def load(path: str, device="cpu", decoder: bool = True) -> MAEAST:
    """The checkpoint's model in eval mode; ``model.cfg_task`` holds the checkpoint's task config."""
    model, cfg_task = checkpoint.load_model(path, decoder=decoder, sample_rate=SAMPLE_RATE)
    model.cfg_task = cfg_task
    return model.to(device).eval()


def random_init_like(model: MAEAST, seed: int = 0) -> MAEAST:
    """Same architecture, freshly initialised as at the start of pre-training. The input
    normalisation (BatchNorm running mean/var of the log-mel, statistics of the data rather
    than learned weights) is copied from ``model``, so the baseline sees the same inputs."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        fresh = MAEAST(model.cfg, feature_dim=model.feature_dim, mask_type=model.mask_type)
    fresh.batch_norm.load_state_dict(model.batch_norm.state_dict())
    fresh.cfg_task = getattr(model, "cfg_task", {})
    return fresh.to(next(model.parameters()).device).eval()


def read_audio(path: str, max_seconds: Optional[float] = None, start_seconds: float = 0.0) -> torch.Tensor:
    """Mono float32 16 kHz waveform (any format ``mae_ast.audio`` reads)."""
    from .audio import read

    num = None if max_seconds is None else int(max_seconds * SAMPLE_RATE)
    return read(path, SAMPLE_RATE, int(start_seconds * SAMPLE_RATE), num)


def logmel(wav: torch.Tensor, feature_dim: int = 128) -> torch.Tensor:
    """(frames, feature_dim) Kaldi log-mel of a 1-D waveform."""
    return fbank(wav.float().reshape(1, -1), SAMPLE_RATE, feature_dim)[0]


def _features(model: MAEAST, wav: torch.Tensor) -> torch.Tensor:
    wav = wav.float().reshape(-1)
    if wav.numel() < model.min_samples(SAMPLE_RATE):
        wav = F.pad(wav, (0, model.min_samples(SAMPLE_RATE) - wav.numel()))
    device = next(model.parameters()).device
    return fbank(wav.to(device)[None], SAMPLE_RATE, model.feature_dim)  # (1, frames, dim)


def _max_frames(model: MAEAST, chunk_seconds: Optional[float]) -> int:
    """Most fbank frames encoded at once: whole tokens, within max_token_length."""
    steps = model.cfg.max_token_length // model.n_freq
    if chunk_seconds:
        steps = min(steps, num_steps(model, int(chunk_seconds * SAMPLE_RATE)))
    return (steps - 1) * model.stride[0] + model.kernel[0]


def _fold(tokens: torch.Tensor, model: MAEAST, n_time: int) -> torch.Tensor:
    """(T, kt * kc) patches, time-major -> (frames, bins) image (the inverse of ``patchify``)."""
    kt, kc = model.kernel
    st, sc = model.stride
    size = ((n_time - 1) * st + kt, (model.n_freq - 1) * sc + kc)
    return F.fold(tokens.t()[None].float(), size, kernel_size=model.kernel, stride=model.stride)[0, 0]


@torch.no_grad()
def reconstruct(model: MAEAST, wav: torch.Tensor, seed: int = 0, mask_type: Optional[str] = None,
                mask_prob: Optional[float] = None, max_seconds: float = 10.0) -> Dict[str, np.ndarray]:
    """Mask a clip as in pre-training and reconstruct it.

    Returns (frames, bins) float arrays, all in the model's normalised log-mel units (what the
    reconstruction head predicts): ``input``, ``masked`` (NaN where the encoder saw nothing),
    ``reconstruction`` (the prediction on masked patches, the input elsewhere) and
    ``prediction`` (NaN where kept); ``mask`` (bool, True where masked), and ``mse`` (on the
    masked patches; the model's loss_recon before its weight)."""
    if model.decoder is None:
        raise ValueError("reconstruction needs the decoder: load the model with decoder=True")
    model.eval()
    feats = _features(model, wav)[:, :_max_frames(model, max_seconds)]
    x = model.patchify(model.normalise(feats, None))  # (1, T, patch)
    n_tokens = x.size(1)
    grid = model.grid(n_tokens)
    gen = torch.Generator(device=x.device).manual_seed(seed)
    plan = compute_mask(mask_type or model.mask_type, None, model.cfg.random_mask_prob if mask_prob is None else mask_prob,
                        grid, model.cfg.mask_length, generator=gen, batch_size=1, device=x.device)
    out = model(feats, None, mask=True, mask_plan=plan)
    pred = out["logit_m_list_recon"][0].float()
    masked_idx = plan.masked_idx[0]
    patches = x[0].float()
    recon = patches.clone()
    recon[masked_idx] = pred
    is_masked = torch.zeros(n_tokens, 1, device=x.device)
    is_masked[masked_idx] = 1.0
    mask_img = _fold(is_masked.expand(-1, patches.size(1)), model, grid[0]) > 0.5
    inp = _fold(patches, model, grid[0])
    rec = _fold(recon, model, grid[0])
    nan = torch.tensor(float("nan"), device=inp.device)
    return {
        "input": inp.cpu().numpy(),
        "masked": torch.where(mask_img, nan, inp).cpu().numpy(),
        "reconstruction": rec.cpu().numpy(),
        "prediction": torch.where(mask_img, rec, nan).cpu().numpy(),
        "mask": mask_img.cpu().numpy(),
        "mse": float(F.mse_loss(pred, patches[masked_idx])),
    }


def plot_reconstruction(rec: Dict[str, np.ndarray], path: str, title: str = "") -> None:
    """Three panels, time on the x axis: input, what the encoder saw, reconstruction."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    frames = rec["input"].shape[0]
    fig, axes = plt.subplots(3, 1, figsize=(min(14, 4 + frames / 80), 7.5), sharex=True, constrained_layout=True)
    vmin, vmax = np.nanpercentile(rec["input"], [1, 99.5])
    cmap = matplotlib.colormaps["magma"].copy()
    cmap.set_bad("#9bb7d4")
    panels = [("input (normalised log-mel)", rec["input"]),
              (f"what the encoder saw ({rec['mask'].mean():.0%} of the patches masked, blue)", rec["masked"]),
              (f"reconstruction (masked patches predicted; MSE {rec['mse']:.3f})", rec["reconstruction"])]
    for ax, (name, img) in zip(axes, panels):
        im = ax.imshow(np.ma.masked_invalid(img.T), origin="lower", aspect="auto", cmap=cmap,
                       vmin=vmin, vmax=vmax, interpolation="nearest",
                       extent=(0, frames / 100, 0, img.shape[1]))
        ax.set_title(name, fontsize=10)
        ax.set_ylabel("mel bin")
    axes[-1].set_xlabel("time (s)")
    fig.colorbar(im, ax=axes, shrink=0.5, pad=0.01, aspect=30)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.savefig(path, dpi=90)
    plt.close(fig)


@torch.no_grad()
def embed_layers(model: MAEAST, wav: torch.Tensor, chunk_seconds: Optional[float] = None) -> List[torch.Tensor]:
    """Every encoder layer's output for one clip, [layer 1, ..., layer N], each (steps, dim),
    on the CPU: the frames of ``mae_ast.core.extractor.extract``. Long clips are encoded in
    chunks of at most ``chunk_seconds`` (default: ``task.max_sample_size``)."""
    steps = chunk_steps_for(model, getattr(model, "cfg_task", {}), chunk_seconds)
    return [h[0].cpu() for h in extract(model, [wav.float().reshape(-1)], chunk_steps=steps).hidden_states]


def embed(model: MAEAST, wav: torch.Tensor, layer: int = -1, chunk_seconds: Optional[float] = None) -> torch.Tensor:
    """One layer's frame-level features (steps, dim); ``layer`` 1..N, or -1 for the last."""
    n = len(model.encoder.layers)
    index = layer - 1 if layer > 0 else n + layer
    if not 0 <= index < n:
        raise ValueError(f"layer {layer} does not exist: the encoder has layers 1..{n} (or -1 for the last)")
    return embed_layers(model, wav, chunk_seconds)[index]


def linear_probe(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray,
                 groups_train: Optional[Sequence] = None, l2_grid=(1e-3, 1e-2, 1e-1),
                 seed: int = 0) -> Dict[str, float]:
    """Multinomial logistic regression on standardised features (full-batch L-BFGS).

    The L2 weight is chosen on a held-out fifth of the training set (split by ``groups_train``
    when given, so clips of one source file stay together), then the probe is refitted on the
    whole training set. Returns test accuracy, macro-averaged recall and the chosen weight."""
    x_train, x_test = torch.as_tensor(np.asarray(x_train), dtype=torch.float32), torch.as_tensor(np.asarray(x_test), dtype=torch.float32)
    classes = np.unique(y_train)
    lookup = {c: i for i, c in enumerate(classes)}
    ytr = torch.tensor([lookup[c] for c in y_train])
    yte = torch.tensor([lookup.get(c, -1) for c in y_test])

    def fit(x, y, l2):
        mean, std = x.mean(0), x.std(0).clamp_min(1e-6)
        xs = (x - mean) / std
        w = torch.zeros(x.size(1), len(classes), requires_grad=True)
        b = torch.zeros(len(classes), requires_grad=True)
        opt = torch.optim.LBFGS([w, b], lr=1, max_iter=50, history_size=10, line_search_fn="strong_wolfe")

        def closure():
            opt.zero_grad()
            loss = F.cross_entropy(xs @ w + b, y) + l2 * (w * w).sum()
            loss.backward()
            return loss

        opt.step(closure)
        return lambda z: (((z - mean) / std) @ w + b).argmax(1).detach()

    rng = np.random.default_rng(seed)
    keys = np.asarray(groups_train if groups_train is not None else np.arange(len(y_train)))
    unique = np.unique(keys)
    held = set(rng.permutation(unique)[: max(1, len(unique) // 5)].tolist())
    is_held = torch.tensor([k in held for k in keys.tolist()])
    best, best_acc = l2_grid[0], -1.0
    if is_held.any() and (~is_held).any():
        for l2 in l2_grid:
            predict = fit(x_train[~is_held], ytr[~is_held], l2)
            acc = float((predict(x_train[is_held]) == ytr[is_held]).double().mean())
            if acc > best_acc:
                best, best_acc = l2, acc
    pred = fit(x_train, ytr, best)(x_test)
    recalls = [float((pred[yte == c] == c).double().mean()) for c in range(len(classes)) if (yte == c).any()]
    return {"accuracy": float((pred == yte).double().mean()), "balanced_accuracy": float(np.mean(recalls)),
            "l2": best}
