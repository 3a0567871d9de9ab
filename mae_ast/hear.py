"""HEAR 2021 API for MAE-AST checkpoints (hear-eval-kit, ``hear-validator``).

    import mae_ast.hear as hear
    model = hear.load_model("checkpoint_last.pt")             # any MAE-AST checkpoint
    emb, ts = hear.get_timestamp_embeddings(audio, model)     # (n, T, D), (n, T) in ms
    scene = hear.get_scene_embeddings(audio, model)           # (n, D)

``audio`` is a (n_sounds, n_samples) float tensor at 16 kHz in [-1, 1], on any device; the work
runs where the model is (``model.to("cuda")``) and the results come back on the audio's device.
Reads our checkpoints (patch and frame models) and the original release's, strictly, and hub
folders (``tools/export_checkpoint.py --format hub``, no pickle); needs neither fairseq nor s3prl.

What the embeddings are
-----------------------
* An embedding is a token time step: the tokens of ``ast_kernel_size_time`` fbank frames,
  the frequency patches side by side (8 x 768 = 6144 dims for the paper's 16x16 patch models,
  as the s3prl upstream gives them). The model's own grid ("native") has one every token
  stride: 160 ms for 16x16 patch models, 20 ms for 2x128 frame models.
* ``hop_ms`` (default None: the coarsest valid hop of at most 50 ms, HEAR's suggestion, i.e.
  40 ms for 16x16 patch models and the native 20 ms for frame models): the timestamp spacing.
  A hop finer than the token stride (it must divide it in whole 10 ms fbank frames: 10, 20,
  40, 80 or 160 ms for 16x16 patches) encodes stride / hop copies of each clip, copy j
  without its first j hops of audio, and interleaves their tokens
  (:func:`mae_ast.core.extractor.extract_at_hop`): 4 copies, 4x the encoder work, at 40 ms.
  Then the end of the clip is covered: the clip is zero-padded by less than one hop so that
  the last embedding's audio reaches the clip's end. ``"native"`` (or the stride in ms) is
  the model's grid with no copies and no padding: the last embedding's audio ends less than a
  token stride before the clip's end.
* The timestamp of embedding m is the centre of the audio it saw (its fbank frames, a frame's
  25 ms window centred 12.5 ms after its start): ``(m * hop + (kernel - 1) / 2 * 10) ms +
  12.5 ms``, i.e. 87.5, 127.5, 167.5, ... ms at 40 ms for patch models, 87.5, 247.5, ... ms
  natively, and 17.5, 37.5, ... ms for frame models.
* ``layers`` (default ``"last"``): which encoder layers make the embedding. ``"last"`` is the
  encoder output; it is what the paper evaluates with a frozen encoder on keyword spotting and
  emotion (s3prl's ``-s last_hidden_state``); it needs no tuning and keeps the embedding at
  one layer's width. ``"all"`` or a list of 1-based layer numbers (negative from the end,
  -1 = last) selects several, which are averaged (``combine="mean"``, same width) or
  concatenated (``combine="concat"``).
* Scene embedding: the mean over time of the native-grid embeddings (what
  ``hop_ms="native"`` gives; all tokens count the same, so a clip's embedding does not depend
  on what else is in the batch). Not the shifted copies: they would cost stride / hop times
  the work for the mean of nearly the same tokens, and not the zero-padded tail token.
* Clips shorter than one token (0.175 s for patch models, 0.035 s for frame models, an empty
  clip included) are zero-padded at the end up to it, as the s3prl upstream does: they get
  one timestamp.
* Long clips are cut into chunks of at most ``chunk_seconds`` (aligned to tokens, each chunk
  encoded on its own, timestamps stay global). Default: the longest crop the model saw in
  pre-training (``task.max_sample_size``, 250000 samples = 15.6 s in the paper's config), and
  never more tokens than the sinusoidal position table holds (``model.max_token_length``),
  so no clip is too long and the encoder never attends over spans it was not trained on.

Options reach ``load_model`` as keyword arguments, from heareval as
``--model-options '{"layers": "all", "hop_ms": 40}'``.
"""
from typing import List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn

from mae_ast.core import MAEAST, checkpoint
from mae_ast.core.extractor import (chunk_steps_for, extract, extract_at_hop, hop_choices_ms, hop_frames_for,
                                    num_steps, steps_at_hop)
from mae_ast.core.features import HOP_SECONDS, SAMPLE_RATE, WINDOW_SECONDS
from mae_ast.core.model import inference_precision

LayerSpec = Union[str, int, Sequence[int]]
HopSpec = Union[None, str, int, float]
HEAR_MAX_HOP_MS = 50  # HEAR's suggested largest timestamp spacing (50 ms tolerance in transcription)


class MAEASTHear(nn.Module):
    """The encoder of an MAE-AST checkpoint behind the HEAR 2021 attributes.

    Attributes: ``sample_rate`` (16000), ``scene_embedding_size``, ``timestamp_embedding_size``,
    ``hop_ms`` (timestamp spacing), ``native_hop_ms`` (the token stride), ``copies`` (shifted
    copies encoded per clip: native / hop), ``first_timestamp_ms``, ``layers`` (1-based layer
    numbers used), ``chunk_steps`` (most token time steps encoded at once; None: no limit).
    """

    sample_rate = SAMPLE_RATE

    def __init__(self, model: MAEAST, layers: Tuple[int, ...], combine: str,
                 chunk_steps: Optional[int], precision: str, hop_ms: HopSpec = None):
        super().__init__()
        self.model = model.eval()
        self.layers, self.combine, self.chunk_steps, self.precision = layers, combine, chunk_steps, precision
        kt, st = model.kernel[0], model.stride[0]
        width = model.n_freq * model.cfg.encoder_embed_dim * (len(layers) if combine == "concat" else 1)
        self.scene_embedding_size = self.timestamp_embedding_size = int(width)
        self.hop_frames = resolve_hop(model, hop_ms)
        self.copies = st // self.hop_frames
        self.hop_ms = round(self.hop_frames * HOP_SECONDS * 1000, 6)
        self.native_hop_ms = round(st * HOP_SECONDS * 1000, 6)
        self.first_timestamp_ms = ((kt - 1) / 2 * HOP_SECONDS + WINDOW_SECONDS / 2) * 1000

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def num_steps(self, num_samples: int, native: bool = False) -> int:
        """Timestamps a clip of ``num_samples`` gets (``native``: on the token grid)."""
        if native or self.copies == 1:
            return num_steps(self.model, num_samples)
        return steps_at_hop(self.model, num_samples, self.hop_frames)

    def timestamps(self, steps: int, device=None) -> torch.Tensor:
        """(steps,) float32 milliseconds: the centre of the audio each embedding saw."""
        t = torch.arange(steps, device=device, dtype=torch.float64)
        return (self.first_timestamp_ms + t * self.hop_ms).float()

    @torch.no_grad()
    def forward(self, audio: torch.Tensor, native: bool = False) -> torch.Tensor:
        """(B, N) waveforms -> (B, steps, timestamp_embedding_size) float32 on the model's
        device: one every ``hop_ms`` (``native``: on the token grid, as scene embeddings use)."""
        if audio.size(0) == 0:
            steps = self.num_steps(audio.size(1), native)
            return audio.new_zeros(0, steps, self.timestamp_embedding_size, device=self.device)
        options = dict(layers=self.layers, chunk_steps=self.chunk_steps, precision=self.precision)
        if native or self.copies == 1:
            out = extract(self.model, audio, **options)
        else:
            out = extract_at_hop(self.model, audio, self.hop_frames, **options)
        # the last layer is the encoder output: for pre-LN models, with the final LayerNorm
        n_layers = len(self.model.encoder.layers)
        picked = [out.output if i == n_layers else h for i, h in zip(self.layers, out.hidden_states)]
        if len(picked) == 1:
            return picked[0]
        return torch.cat(picked, dim=-1) if self.combine == "concat" else torch.stack(picked).mean(0)


def load_model(model_file_path: str = "", *, layers: LayerSpec = "last", combine: str = "mean",
               chunk_seconds: Optional[float] = None, precision: Optional[str] = None,
               hop_ms: HopSpec = None) -> MAEASTHear:
    """Load an MAE-AST checkpoint (ours or the original release's) for the HEAR API.

    Args:
        model_file_path: the checkpoint (a fairseq training checkpoint or an exported one),
            or a hub folder (``tools/export_checkpoint.py --format hub``; read without pickle).
        layers: ``"last"`` (default: the encoder output), ``"all"``, a layer number, or a list
            of them (1-based; negative counts from the end).
        combine: ``"mean"`` (default) or ``"concat"``, for several layers.
        chunk_seconds: longest span encoded at once; None: ``task.max_sample_size`` of the
            checkpoint. Always capped by the position table (``model.max_token_length``).
        precision: ``"fp32"`` (default, or ``$MAE_AST_PRECISION``) or ``"bf16"`` (autocast:
            about 2x faster on CPUs with AVX512-BF16 and on GPUs, ~1e-2 relative difference).
        hop_ms: timestamp spacing in ms. None (default): the coarsest valid hop of at most
            50 ms (40 ms for 16x16 patch models: 4 shifted copies; the native 20 ms for frame
            models). A divisor of the token stride in whole 10 ms frames, or ``"native"`` (the
            token grid, no copies). Scene embeddings always use the native grid.
    Returns:
        An ``nn.Module`` in eval mode on the CPU; move it with ``.to(device)``.
    """
    if not model_file_path:
        raise ValueError("mae_ast.hear.load_model needs a checkpoint: load_model('checkpoint.pt') "
                         "(hear-validator mae_ast.hear --model checkpoint.pt)")
    precision = inference_precision(precision)
    if combine not in ("mean", "concat"):
        raise ValueError(f"combine must be mean or concat, not {combine!r}")
    model, cfg_task = checkpoint.load_model(model_file_path, decoder=False, sample_rate=SAMPLE_RATE)
    chosen = resolve_layers(layers, len(model.encoder.layers))
    steps = chunk_steps_for(model, cfg_task, chunk_seconds)
    return MAEASTHear(model, chosen, combine, steps, precision, hop_ms)


def get_timestamp_embeddings(audio, model: MAEASTHear):
    """HEAR timestamp embeddings.

    Args:
        audio: (n_sounds, n_samples) float tensor at 16 kHz. (Also accepted: a list of 1-D
            clips of different lengths; then both results are lists, one entry per clip.)
    Returns:
        embeddings (n_sounds, n_timestamps, timestamp_embedding_size) float32 and timestamps
        (n_sounds, n_timestamps) float32 in ms (``model.hop_ms`` apart, each the centre of the
        audio its embedding saw), both on the audio's device.
    """
    if isinstance(audio, (list, tuple)):
        pairs = [get_timestamp_embeddings(clip.reshape(1, -1), model) for clip in audio]
        return [e[0] for e, _ in pairs], [t[0] for _, t in pairs]
    audio = _check_audio(audio)
    emb = model(audio)
    stamps = model.timestamps(emb.size(1), emb.device).expand(emb.size(0), -1)
    return emb.to(audio.device), stamps.to(audio.device)


def get_scene_embeddings(audio, model: MAEASTHear) -> torch.Tensor:
    """HEAR scene embeddings: the mean over time of the native-grid embeddings (the timestamp
    embeddings of ``hop_ms="native"``; shifted copies would cost more for the same mean).

    Args:
        audio: (n_sounds, n_samples) float tensor at 16 kHz, or a list of 1-D clips of
            different lengths (clips of equal length are encoded together, none is padded).
    Returns:
        (n_sounds, scene_embedding_size) float32 on the audio's device.
    """
    if isinstance(audio, (list, tuple)):
        return _scene_of_clips(list(audio), model)
    audio = _check_audio(audio)
    return model(audio, native=True).mean(dim=1).to(audio.device)


# ---- helpers --------------------------------------------------------------------------------
def resolve_layers(layers: LayerSpec, n_layers: int) -> Tuple[int, ...]:
    """1-based layer numbers from ``"last"``, ``"all"``, an int or a list of ints."""
    if layers == "last":
        return (n_layers,)
    if layers == "all":
        return tuple(range(1, n_layers + 1))
    error = ValueError(f"layers={layers!r}: use 'last', 'all' or layer numbers; the encoder has "
                       f"layers 1..{n_layers} (or -1..-{n_layers})")
    try:
        if isinstance(layers, str):  # "3" or "1,2,-1", e.g. from a shell variable
            layers = [int(x) for x in layers.split(",")]
        numbers = [int(layers)] if isinstance(layers, int) else [int(i) for i in layers]
    except (TypeError, ValueError):
        raise error from None
    resolved = tuple(n_layers + 1 + i if i < 0 else i for i in numbers)
    if not resolved or any(not 1 <= i <= n_layers for i in resolved):
        raise error
    return resolved


def resolve_hop(model: MAEAST, hop_ms: HopSpec) -> int:
    """fbank frames between timestamps from ``hop_ms``: None (the coarsest valid hop of at
    most ``HEAR_MAX_HOP_MS``; 10 ms always is one), ``"native"`` or a number of ms in
    :func:`hop_choices_ms`."""
    choices = hop_choices_ms(model)
    default = max(ms for ms in choices if ms <= HEAR_MAX_HOP_MS)
    if hop_ms is None:
        hop_ms = default
    elif hop_ms == "native":
        hop_ms = choices[-1]
    try:
        return hop_frames_for(model, hop_ms)
    except ValueError as error:
        raise ValueError(f'{error}, or "native"; None: the default, {default} ms') from None


def _check_audio(audio) -> torch.Tensor:
    if not isinstance(audio, torch.Tensor):
        audio = torch.as_tensor(audio)
    if audio.dim() != 2:
        raise ValueError(f"audio must be (n_sounds, n_samples), got shape {tuple(audio.shape)}")
    return audio


def _scene_of_clips(clips: List[torch.Tensor], model: MAEASTHear) -> torch.Tensor:
    """Scene embeddings of clips of different lengths: equal lengths share one batch."""
    if not clips:
        return torch.zeros(0, model.scene_embedding_size)
    clips = [torch.as_tensor(c).reshape(-1) for c in clips]
    out = [None] * len(clips)
    for length in sorted({c.numel() for c in clips}):
        idx = [i for i, c in enumerate(clips) if c.numel() == length]
        scenes = get_scene_embeddings(torch.stack([clips[i] for i in idx]), model)
        for k, i in enumerate(idx):
            out[i] = scenes[k]
    return torch.stack(out)
