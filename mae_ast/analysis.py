"""Looking inside a pre-trained MAE-AST checkpoint, in plain torch (no fairseq, no s3prl).

Used by ``tools/visualize.py``, ``tools/extract_features.py`` and the report of
``tools/demo.py``:

* ``load(path)``: the model (decoder included, eval mode) from a checkpoint;
  ``random_init_like(model)``: the same architecture with fresh weights (for baselines).
* ``reconstruct(model, wav)``: draw a mask, run the model, and return the spectrogram, what the
  encoder saw, and the reconstruction, as (frames, mel bins) arrays; ``plot_reconstruction``
  draws them, ``reconstruction_audio`` / ``write_reconstruction_audio`` turn them into sound
  (an approximate inversion: ``mae_ast.core.inversion``).
* ``attention_maps(model, wav)``: the encoder's attention weights on a clip, per layer;
  ``plot_attention`` draws them per time step.
* ``embed(model, wav, layer)``: frame-level features (steps, dim), the same frames as the s3prl
  upstream's ``hidden_states`` (patch models concatenate the frequency patches of one time step).
* ``linear_probe(...)``: multinomial logistic regression in torch, for quick downstream checks.
"""
import math
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .core import checkpoint
from .core.extractor import chunk_steps_for, extract, num_steps
from .core.features import HOP_SECONDS, SAMPLE_RATE, fbank
from .core.inversion import logmel_to_audio
from .core.masking import compute_mask
from .core.model import MAEAST
from .core.transformer import SelfAttention


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
                        grid, model.cfg.mask_length, generator=gen, batch_size=1, device=x.device,
                        block_size=model.cfg.mask_block_size)
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


AUDIO_PARTS = ("input", "masked", "reconstruction")  # reconstruct()'s images that are heard


def denormalise(model: MAEAST, image) -> torch.Tensor:
    """Model units -> Kaldi log-mel: undoes ``model.normalise`` as it runs in eval mode
    (BatchNorm with the running statistics, times 0.5). On the CPU."""
    bn = model.batch_norm
    std = torch.sqrt(bn.running_var.float().cpu() + bn.eps)
    return torch.as_tensor(np.asarray(image), dtype=torch.float32) * 2.0 * std + bn.running_mean.float().cpu()


def reconstruction_audio(model: MAEAST, rec: Dict[str, np.ndarray], seed: int = 0) -> Dict[str, np.ndarray]:
    """``reconstruct``'s input, masked input and reconstruction as 16 kHz waveforms (log-mel
    inverted by Griffin-Lim: an approximation, see ``mae_ast.core.inversion``). Masked patches
    are made silent: filled with the clip's quietest log-mel level."""
    logmels = {part: denormalise(model, rec[part]) for part in AUDIO_PARTS}
    logmels["masked"] = torch.nan_to_num(logmels["masked"], nan=float(logmels["input"].min()))
    waves = {part: logmel_to_audio(logmel, SAMPLE_RATE, seed=seed) for part, logmel in logmels.items()}
    # one gain for all three, so their loudness compares; only ever down, so nothing clips
    peak = max(float(wave.abs().max()) for wave in waves.values())
    gain = min(1.0, 0.99 / peak) if peak > 0 else 1.0
    return {part: (wave * gain).numpy() for part, wave in waves.items()}


def write_reconstruction_audio(model: MAEAST, rec: Dict[str, np.ndarray], prefix: str, seed: int = 0) -> Dict[str, str]:
    """Writes ``{prefix}_input.wav``, ``{prefix}_masked.wav`` and ``{prefix}_reconstruction.wav``
    (16-bit PCM, 16 kHz) and returns {part: path}."""
    import soundfile as sf

    paths = {}
    for part, wave in reconstruction_audio(model, rec, seed).items():
        paths[part] = f"{prefix}_{part}.wav"
        sf.write(paths[part], wave, SAMPLE_RATE, subtype="PCM_16")
    return paths


def attention_probs(attn: SelfAttention, x: torch.Tensor) -> torch.Tensor:
    """The weights ``attn`` gives each key for input x (B, T, C) with nothing masked: (B, H, T, T)
    softmax(q k^T / sqrt(head dim)), what scaled_dot_product_attention computes inside."""
    b, t, c = x.shape

    def split_heads(y):  # (B, T, C) -> (B, H, T, C / H)
        return y.view(b, t, attn.heads, c // attn.heads).transpose(1, 2)

    q, k = split_heads(attn.q_proj(x)), split_heads(attn.k_proj(x))
    return torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(c // attn.heads), dim=-1)


@torch.no_grad()
def attention_maps(model: MAEAST, wav: torch.Tensor, max_seconds: float = 10.0) -> Dict:
    """Where the tokens of a clip attend in each encoder layer, for the whole clip (nothing
    masked: as in feature extraction). Returns ``layers``: (layers, T, T) weights averaged over
    heads, ``last_layer_heads``: (heads, T, T), ``grid``: (time steps, frequency patches) of the
    time-major tokens, and ``step_seconds`` between time steps. Rows sum to 1."""
    model.eval()
    feats = _features(model, wav)[:, :_max_frames(model, max_seconds)]
    inputs = []
    # catch each attention module's input on the way; the forward path itself stays as it is
    hooks = [layer.self_attn.register_forward_pre_hook(lambda module, args: inputs.append(args[0]))
             for layer in model.encoder.layers]
    try:
        model(feats, None, mask=False)
    finally:
        for hook in hooks:
            hook.remove()
    per_layer, heads = [], None
    for layer, x in zip(model.encoder.layers, inputs):
        heads = attention_probs(layer.self_attn, x.float())[0].cpu()  # (H, T, T)
        per_layer.append(heads.mean(0))
    tokens = per_layer[0].size(-1)
    steps = model.grid(tokens)[0]
    return {"layers": torch.stack(per_layer), "last_layer_heads": heads, "grid": model.grid(tokens),
            "step_seconds": model.stride[0] * HOP_SECONDS,
            "logmel": feats[0, :(steps - 1) * model.stride[0] + model.kernel[0]].cpu()}


def to_time_steps(weights: torch.Tensor, n_freq: int) -> torch.Tensor:
    """(..., T, T) token weights -> (..., steps, steps): how much each time step attends to each
    time step (summed over the key's frequency patches, averaged over the query's)."""
    steps = weights.size(-1) // n_freq
    return weights.reshape(*weights.shape[:-2], steps, n_freq, steps, n_freq).sum(-1).mean(-2)


def to_freq_bands(weights: torch.Tensor, n_freq: int) -> torch.Tensor:
    """(..., T, T) token weights -> (..., n_freq, n_freq): the same per frequency patch
    (summed over the key's time steps, averaged over the query's)."""
    steps = weights.size(-1) // n_freq
    return weights.reshape(*weights.shape[:-2], steps, n_freq, steps, n_freq).sum(-2).mean(-3)


def mean_distance(weights: torch.Tensor) -> float:
    """Average |query - key| of (steps, steps) row-stochastic weights, in steps."""
    idx = torch.arange(weights.size(-1), dtype=weights.dtype)
    return float((weights * (idx[:, None] - idx[None, :]).abs()).sum(-1).mean())


def plot_attention(maps: Dict, prefix: str, title: str = "") -> List[str]:
    """Draws ``attention_maps``: ``{prefix}_attention.png`` (per layer, heads averaged) and
    ``{prefix}_attention_heads.png`` (last layer, per head) as time x time maps; patch models
    also get ``{prefix}_attention_freq.png`` (per layer, frequency patch x frequency patch).
    Returns the paths."""
    steps, n_freq = maps["grid"]
    seconds = steps * maps["step_seconds"]
    layers, heads = to_time_steps(maps["layers"], n_freq), to_time_steps(maps["last_layer_heads"], n_freq)
    last = len(layers)
    unit = f"{maps['step_seconds'] * 1000:g} ms steps"
    figures = [(f"{prefix}_attention.png", layers, [f"layer {i + 1}" for i in range(last)],
                f"attention per encoder layer, mean over heads ({unit})"),
               (f"{prefix}_attention_heads.png", heads, [f"layer {last}, head {h + 1}" for h in range(len(heads))],
                f"attention of the last layer, per head ({unit})")]
    uniform = f"uniform attention: {mean_distance(torch.full((steps, steps), 1 / steps)) * maps['step_seconds']:.2f} s"
    for path, weights, names, heading in figures:
        # distance in seconds: how far, on average, a time step looks
        names = [f"{n}: {mean_distance(w) * maps['step_seconds']:.2f} s" for n, w in zip(names, weights)]
        _heatmaps(weights, names, path, f"{title}: {heading}; {uniform}" if title else f"{heading}; {uniform}",
                  extent=(0, seconds, seconds, 0), axis="time (s)", strip=maps.get("logmel"))
    paths = [path for path, *_ in figures]
    if n_freq > 1:
        path = f"{prefix}_attention_freq.png"
        _heatmaps(to_freq_bands(maps["layers"], n_freq), [f"layer {i + 1}" for i in range(last)], path,
                  (f"{title}: " if title else "") + "attention between frequency patches, mean over heads and time",
                  extent=(-0.5, n_freq - 0.5, -0.5, n_freq - 0.5), axis="frequency patch", origin="lower")
        paths.append(path)
    return paths


def _heatmaps(weights: torch.Tensor, names: Sequence[str], path: str, title: str, extent, axis: str,
              origin: str = "upper", strip: Optional[torch.Tensor] = None) -> None:
    """One panel per (rows: query, columns: key) weight matrix, in a grid, coloured by the weight
    over uniform attention's (1 / columns) on a log scale: white is uniform, red more, blue less.
    One scale for the figure, so panels compare: nearly uniform layers (early in training) show
    their faint structure, sharp ones saturate at 16x. ``strip``: a (frames, bins) log-mel
    drawn above each column, on the panels' x axis (what the attended time steps hold)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import LogNorm

    ratios = weights * weights.size(-1)
    spread = float(ratios.clamp_min(1e-6).log2().abs().flatten().quantile(0.99))
    span = 2 ** min(max(spread, 0.1), 4.0)
    norm = LogNorm(vmin=1 / span, vmax=span)
    cols = min(4, len(weights))
    rows = math.ceil(len(weights) / cols)
    top = 1 if strip is not None else 0
    fig, axes = plt.subplots(rows + top, cols, figsize=(3.2 * cols + 0.8, 3.2 * rows + 0.9 * top + 0.6),
                             squeeze=False, constrained_layout=True, height_ratios=[0.25] * top + [1] * rows)
    for ax in axes[top:].flat[len(weights):]:
        ax.axis("off")
    for ax in axes[0] if top else []:
        ax.imshow(strip.t().numpy(), origin="lower", aspect="auto", cmap="magma", interpolation="nearest",
                  extent=(extent[0], extent[1], 0, strip.size(1)))
        ax.set_title("log-mel of the clip", fontsize=8)
        ax.set_yticks([])
        ax.tick_params(labelsize=7)
    for ax, ratio, name in zip(axes[top:].flat, ratios, names):
        image = ax.imshow(ratio.clamp(1 / span, span).numpy(), cmap="RdBu_r", norm=norm, extent=extent,
                          origin=origin, interpolation="nearest", aspect="auto")
        ax.set_title(name, fontsize=9)
        ax.set_xlabel(f"attended {axis}", fontsize=8)
        ax.set_ylabel(f"attending {axis}", fontsize=8)
        ax.tick_params(labelsize=7)
    bar = fig.colorbar(image, ax=axes[top:], shrink=0.6, aspect=30)
    ticks = [1 / span, span ** -0.5, 1.0, span ** 0.5, span]
    bar.set_ticks(ticks, labels=[f"{t:.3g}x" for t in ticks])
    bar.ax.minorticks_off()
    bar.set_label("weight / uniform weight", fontsize=8)
    bar.ax.tick_params(labelsize=7)
    fig.suptitle(title, fontsize=10)
    fig.savefig(path, dpi=80)
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
