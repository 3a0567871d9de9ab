"""The one road from waveform to features: every feature user (the s3prl upstream, the HEAR
module, ``analysis``, ``tools/extract_features.py``, fine-tuning) is an adapter over
:func:`extract`.

    out = extract(model, [wav_a, wav_b])        # 1-D 16 kHz waveforms of any lengths
    out.hidden_states[-1]                        # (B, steps, frame_dim), zeros past out.steps[i]

What it does, in order:
1. clips shorter than one token (``model.min_samples()``: 0.175 s for 16x16 patches) are
   zero-padded up to it, so every clip gets at least one frame;
2. one batched Kaldi fbank, the input normalisation and the patches (``MAEAST.patchify``);
3. long clips are cut into segments of at most ``chunk_steps`` token time steps, each encoded
   on its own with positions from 0 (as the model saw crops in pre-training); the segments of
   all clips form one batch;
4. the encoder runs on real tokens only (the core encoder packs sequences of different
   lengths), no masking;
5. tokens become frames: one frame per token time step (every ``ast_kernel_stride_time`` x
   10 ms), the frequency patches of a step side by side (8 x 768 = 6144 dims for the paper's
   16x16 patch models, 768 for 2x128 frame models).

A clip's features never depend on what else is in its batch (in eval mode: in training mode
BatchNorm uses batch statistics, as in pre-training).

:func:`extract_at_hop` gives a frame every few fbank frames instead of every token stride (40 ms
instead of 160 ms for 16x16 patches): it runs shifted copies of each clip through
:func:`extract` as one batch and interleaves their frames.
"""
import contextlib
from dataclasses import dataclass
from typing import Callable, Iterator, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F

from .features import HOP_SECONDS, SAMPLE_RATE, fbank, hop_samples, num_frames, samples_for_frames
from .model import MAEAST

PRECISIONS = ("fp32", "bf16")


@dataclass
class Extracted:
    hidden_states: List[torch.Tensor]  # the chosen layers' outputs, each (B, steps, frame_dim)
    # (empty when LayerDrop skipped a layer in training: no layer number would be right)
    output: torch.Tensor  # the encoder output (final LayerNorm for pre-LN models), same shape
    steps: torch.Tensor  # (B,) frames of each clip; frames past them are zeros


def extract(model: MAEAST, wavs: Union[Sequence[torch.Tensor], torch.Tensor],
            lengths: Optional[torch.Tensor] = None, layers: Optional[Sequence[int]] = None,
            chunk_steps: Optional[int] = None, precision: str = "fp32",
            augment: Optional[Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = None) -> Extracted:
    """Frame-level features of a batch of 16 kHz waveforms.

    Args:
        wavs: a list of 1-D waveforms, or a (B, N) batch (then ``lengths``, default all N).
        layers: 1-based encoder layers for ``hidden_states`` (default all); layers past the
            highest one asked for are not run (``output`` is then the highest one's output).
        chunk_steps: longest segment in token time steps (default: no limit but the
            sinusoidal position table, ``model.max_token_length``).
        precision: ``fp32`` or ``bf16`` (the encoder under ``torch.autocast``; outputs fp32).
        augment: ``augment(feats, frames)`` -> feats, applied to the normalised (B, frames, mels)
            log-mel with each clip's (B,) frame count, before patching (SpecAugment in
            fine-tuning).
    Returns:
        :class:`Extracted` on the model's device; gradients flow unless the caller disables them.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, not {precision!r}")
    n_layers = len(model.encoder.layers)
    layers = tuple(layers) if layers is not None else tuple(range(1, n_layers + 1))
    stop = max(layers)
    batch, lengths = _padded_batch(model, wavs, lengths)
    frames = num_frames(lengths, SAMPLE_RATE)
    steps = model.time_steps(frames)
    with torch.autocast(batch.device.type, enabled=False):  # the log-mel front end in fp32, always
        feats = fbank(batch, SAMPLE_RATE, model.feature_dim)  # (B, frames, mels)
        feats = model.normalise(feats, _padding(frames, feats.size(1))).squeeze(1)
        if augment is not None:
            feats = augment(feats, frames)
        patches = model.patchify(feats.unsqueeze(1))  # (B, T, kt * kc)
    # bf16 here, else whatever autocast the caller runs under (a fine-tuning model's autocast_dtype)
    with torch.autocast(batch.device.type, dtype=torch.bfloat16) if precision == "bf16" else contextlib.nullcontext():
        tokens = model.post_extract_proj(patches)
        segments = Segments(steps, tokens.size(1) // model.n_freq, model.n_freq,
                            max_segment_steps(model, chunk_steps))
        x = segments.split(tokens)
        if model.cfg.enc_sine_pos:
            x = x + model.enc_sine_pos_embed(x.size(1))
        x, hidden = model.encoder(x, segments.padding, last_layer=None if stop == n_layers else stop)

    def frames_of(h):  # (segments, tokens, D) -> (B, steps, n_freq * D), float32
        h = segments.join(h.float())
        return h.reshape(h.size(0), -1, model.n_freq * h.size(-1))

    # (with LayerDrop in training some layers did not run: then no layer is named)
    chosen = [frames_of(hidden[i - 1]) for i in layers] if len(hidden) == stop else []
    return Extracted(chosen, frames_of(x), steps)


# ---- finer time steps: shifted copies, interleaved --------------------------------------------
def hop_choices_ms(model: MAEAST) -> List[int]:
    """Frame spacings (ms) :func:`extract_at_hop` can give: whole fbank frames that divide the
    token stride (10, 20, 40, 80, 160 for 16x16 patches; 10, 20 for 2x128 frames)."""
    stride = model.stride[0]
    return [round(h * HOP_SECONDS * 1000) for h in range(1, stride + 1) if stride % h == 0]


def hop_frames_for(model: MAEAST, hop_ms: float) -> int:
    """fbank frames in ``hop_ms``; a ValueError naming the valid values if it is not one."""
    choices = hop_choices_ms(model)
    if isinstance(hop_ms, (int, float)) and not isinstance(hop_ms, bool) and hop_ms in choices:
        return round(hop_ms / (HOP_SECONDS * 1000))
    raise ValueError(f"hop_ms={hop_ms!r} is not a whole number of 10 ms fbank frames that divides this "
                     f"model's token stride of {choices[-1]} ms; valid values: {', '.join(map(str, choices))}")


def steps_at_hop(model: MAEAST, num_samples: int, hop_frames: int) -> int:
    """Frames :func:`extract_at_hop` gives a clip of ``num_samples``: the fewest frames, one
    every ``hop_frames``, whose last one's audio reaches the clip's end."""
    kt = model.kernel[0]
    n = max(int(num_samples), model.min_samples(SAMPLE_RATE))
    hop = hop_samples(SAMPLE_RATE)
    window = samples_for_frames(1, SAMPLE_RATE)
    frames_to_end = -(-(n - window) // hop) + 1  # fbank frames until one reaches the end
    return max(0, -(-(frames_to_end - kt) // hop_frames)) + 1


def covered_samples(model: MAEAST, num_samples: int, hop_frames: int) -> int:
    """Samples a clip is zero-padded to by :func:`extract_at_hop`: where its last frame's audio
    ends (less than ``hop_frames`` fbank frames past the clip's end)."""
    last = steps_at_hop(model, num_samples, hop_frames) - 1
    return samples_for_frames(last * hop_frames + model.kernel[0], SAMPLE_RATE)


def extract_at_hop(model: MAEAST, wavs: Union[Sequence[torch.Tensor], torch.Tensor], hop_frames: int,
                   lengths: Optional[torch.Tensor] = None, layers: Optional[Sequence[int]] = None,
                   chunk_steps: Optional[int] = None, precision: str = "fp32") -> Extracted:
    """:func:`extract` with one frame every ``hop_frames`` fbank frames instead of every token
    stride (a divisor of it, :func:`hop_frames_for`): finer timestamps for patch models.

    Frame m is the token that starts at fbank frame ``m * hop_frames``: copy j of a clip
    (j < stride / hop_frames) drops its first ``j * hop_frames`` frames of audio, all copies of
    all clips go through :func:`extract` as one batch, and frame m is token m // copies of copy
    m % copies. Dropping the start, rather than zero-padding it, keeps every token on real
    audio, as the model saw it in pre-training (crops start anywhere). The end of each clip is
    covered: it is zero-padded (by less than one hop, :func:`covered_samples`) so that the last
    frame's audio reaches the clip's end; only that frame sees padding. Each copy is encoded
    on its own (in segments of ``chunk_steps``), so a frame equals the token of its copy
    extracted alone, and copy 0 equals :func:`extract` of the clip whenever the last frame is
    not in it. Returns :class:`Extracted` with ``steps`` = :func:`steps_at_hop`.
    """
    copies = model.stride[0] // hop_frames
    if hop_frames < 1 or copies * hop_frames != model.stride[0]:
        raise ValueError(f"hop_frames={hop_frames} must divide the token stride of {model.stride[0]} frames")
    batch, lengths = _padded_batch(model, wavs, lengths)
    totals = [steps_at_hop(model, int(n), hop_frames) for n in lengths.tolist()]
    ends = [covered_samples(model, int(n), hop_frames) for n in lengths.tolist()]
    batch = F.pad(batch, (0, max(0, max(ends, default=0) - batch.size(1))))  # zeros past each clip's end
    shift = hop_frames * hop_samples(SAMPLE_RATE)
    pieces, owner = [], []  # copy j of clip b: its audio from j hops on, if it has a frame
    for b, (total, end) in enumerate(zip(totals, ends)):
        for j in range(min(copies, total)):
            pieces.append(batch[b, j * shift:end])
            owner.append((b, j))
    out = extract(model, pieces, layers=layers, chunk_steps=chunk_steps, precision=precision)
    clip = torch.tensor([b for b, _ in owner], device=batch.device)
    first = torch.tensor([j for _, j in owner], device=batch.device)

    def interleave(h):  # (pieces, T, D) -> (B, max steps, D): token t of copy j is frame t * copies + j
        piece, t = (torch.arange(h.size(1), device=h.device)[None] < out.steps[:, None]).nonzero(as_tuple=True)
        frames = h.new_zeros(len(totals), max(totals, default=0), h.size(-1))
        frames[clip[piece], t * copies + first[piece]] = h[piece, t]
        return frames

    steps = torch.tensor(totals, device=out.steps.device)
    return Extracted([interleave(h) for h in out.hidden_states], interleave(out.output), steps)


def _padded_batch(model: MAEAST, wavs, lengths) -> Tuple[torch.Tensor, torch.Tensor]:
    """(B, N) float32 on the model's device, at least ``min_samples`` long, and (B,) lengths
    with clips shorter than ``min_samples`` counted as ``min_samples`` (zero-padded)."""
    device = next(model.parameters()).device
    if isinstance(wavs, torch.Tensor):
        if wavs.dim() != 2:
            raise ValueError(f"a batch of waveforms is (B, N), got shape {tuple(wavs.shape)}")
        batch = wavs.to(device, torch.float32)
        if lengths is None:
            lengths = torch.full((batch.size(0),), batch.size(1))
        else:  # what lies past a clip's end is not its audio: zeros, as a clip alone is padded
            lengths = torch.as_tensor(lengths).to(device)
            batch = batch * (torch.arange(batch.size(1), device=device)[None] < lengths[:, None])
    else:
        lengths = torch.tensor([len(w) for w in wavs])
        batch = torch.nn.utils.rnn.pad_sequence([torch.as_tensor(w).to(device, torch.float32).reshape(-1)
                                                 for w in wavs], batch_first=True)
    shortest = model.min_samples(SAMPLE_RATE)
    if batch.size(1) < shortest:
        batch = F.pad(batch, (0, shortest - batch.size(1)))
    return batch, lengths.to(device).clamp_min(shortest)


def _padding(lengths: torch.Tensor, width: int) -> Optional[torch.Tensor]:
    """(B, width) bool, True past each length; None when nothing is padding."""
    if bool((lengths >= width).all()):
        return None
    return torch.arange(width, device=lengths.device)[None] >= lengths[:, None]


def max_segment_steps(model: MAEAST, chunk_steps: Optional[int] = None) -> Optional[int]:
    """Most token time steps encoded at once: ``chunk_steps``, never more than the sinusoidal
    position table holds (None: no limit)."""
    limits = [chunk_steps] if chunk_steps else []
    if model.cfg.enc_sine_pos:
        limits.append(model.cfg.max_token_length // model.n_freq)
    return max(1, min(limits)) if limits else None


def chunk_steps_for(model: MAEAST, cfg_task: dict, chunk_seconds: Optional[float] = None) -> Optional[int]:
    """Most token time steps to encode at once: ``chunk_seconds``, else the crop the model saw
    in pre-training (the checkpoint's ``task.max_sample_size``), within the position table
    (None: no limit)."""
    samples = chunk_seconds * SAMPLE_RATE if chunk_seconds is not None else cfg_task.get("max_sample_size")
    return max_segment_steps(model, num_steps(model, int(samples)) if samples else None)


def num_steps(model: MAEAST, num_samples: int) -> int:
    """Frames (token time steps) :func:`extract` gives a clip of ``num_samples``: at least one."""
    return model.time_steps(num_frames(max(int(num_samples), model.min_samples(SAMPLE_RATE)), SAMPLE_RATE))


class Segments:
    """Cuts each clip's tokens into segments of at most ``size`` time steps (the clips' real
    steps only) and puts the encoded segments back. steps: (B,) real steps per clip; width:
    steps in the (B, width * n_freq, C) token batch."""

    def __init__(self, steps: torch.Tensor, width: int, n_freq: int, size: Optional[int]):
        self.batch, self.n_freq, self.width = steps.numel(), n_freq, width
        self.size = width if size is None or size >= width else size
        if self.size == width:  # one segment per clip: the batch itself
            self.index = None
            self.padding = _token_padding(steps, width, n_freq)
            return
        clip = torch.repeat_interleave(torch.arange(steps.numel(), device=steps.device), steps)
        first = torch.cumsum(steps, 0) - steps  # index of each clip's first step among all steps
        step = torch.arange(clip.numel(), device=steps.device) - first[clip]
        per_clip = (steps + self.size - 1) // self.size
        segment = (torch.cumsum(per_clip, 0) - per_clip)[clip] + step // self.size
        self.count = int(per_clip.sum())
        self.index = (clip, step, segment, step % self.size)
        self.padding = _token_padding(torch.bincount(segment, minlength=self.count), self.size, n_freq)

    def split(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, width * n_freq, C) -> (segments, size * n_freq, C), zeros past each segment's end."""
        if self.index is None:
            return tokens
        clip, step, segment, position = self.index
        c = tokens.size(-1)
        out = tokens.new_zeros(self.count, self.size, self.n_freq, c)
        out[segment, position] = tokens.view(tokens.size(0), self.width, self.n_freq, c)[clip, step]
        return out.view(self.count, self.size * self.n_freq, c)

    def join(self, x: torch.Tensor) -> torch.Tensor:
        """The inverse of :meth:`split`: (B, width * n_freq, C), zeros past each clip's end."""
        if self.index is None:
            return x
        clip, step, segment, position = self.index
        c = x.size(-1)
        out = x.new_zeros(self.batch, self.width, self.n_freq, c)
        out[clip, step] = x.view(self.count, self.size, self.n_freq, c)[segment, position]
        return out.view(out.size(0), self.width * self.n_freq, c)


def _token_padding(steps: torch.Tensor, width: int, n_freq: int) -> Optional[torch.Tensor]:
    """(B, width * n_freq) bool, True on tokens past each sequence's steps; None if none."""
    padding = _padding(steps, width)
    return None if padding is None else padding.repeat_interleave(n_freq, dim=1)


def windows(model: MAEAST, num_samples: int, steps_per_window: int) -> Iterator[Tuple[int, int]]:
    """(first sample, samples) windows of a long clip whose features, extracted one window at a
    time with a ``chunk_steps`` that divides ``steps_per_window``, are the frames of the whole
    clip in order: memory stays bounded by the window, whatever the clip's length."""
    st, kt = model.stride[0], model.kernel[0]
    total = num_steps(model, num_samples)
    span = samples_for_frames((steps_per_window - 1) * st + kt, SAMPLE_RATE)
    for first_step in range(0, total, steps_per_window):
        start = first_step * st * hop_samples(SAMPLE_RATE)
        yield start, min(span, max(num_samples - start, 0))
