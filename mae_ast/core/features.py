"""Kaldi-style log-mel filterbank, batched, in plain torch.

Computes exactly what ``torchaudio.compliance.kaldi.fbank(wav, sample_frequency=16000,
use_energy=False, num_mel_bins=128)`` returns for one (1, N) waveform (Kaldi defaults:
25 ms Povey window, 10 ms shift, DC removal, pre-emphasis 0.97, power spectrum, no
dither, ``snip_edges``), but for a whole padded batch at once. Frames never look past
their own window, so the valid frames of a padded example equal those of the example
alone.
"""
import math
from functools import lru_cache

import torch

SAMPLE_RATE = 16000  # Hz: what every MAE-AST model reads
WINDOW_SECONDS = 0.025  # one fbank frame's window
HOP_SECONDS = 0.010  # between fbank frames: 100 frames per second
PREEMPHASIS = 0.97
LOW_FREQ_HZ = 20.0


def num_frames(num_samples, sample_rate: int = SAMPLE_RATE):
    """Frames Kaldi produces for ``num_samples`` (``snip_edges=True``); works on ints and tensors."""
    win, hop = _window_and_hop(sample_rate)
    if isinstance(num_samples, torch.Tensor):
        return torch.where(num_samples < win, 0, (num_samples - win) // hop + 1)
    return 0 if num_samples < win else (num_samples - win) // hop + 1


def samples_for_frames(frames: int, sample_rate: int = SAMPLE_RATE) -> int:
    """Fewest samples that give ``frames`` frames: the inverse of ``num_frames``."""
    win, hop = _window_and_hop(sample_rate)
    return win + (frames - 1) * hop


def _window_and_hop(sample_rate: int):
    return int(sample_rate * WINDOW_SECONDS), int(sample_rate * HOP_SECONDS)


def hop_samples(sample_rate: int = SAMPLE_RATE) -> int:
    """Samples between the starts of two fbank frames (160 at 16 kHz)."""
    return _window_and_hop(sample_rate)[1]


def _mel(freq):
    return 1127.0 * torch.log1p(freq / 700.0)


@lru_cache(maxsize=8)
def _mel_matrix(sample_rate: int, n_fft: int, n_mels: int) -> torch.Tensor:
    """(n_fft // 2 + 1, n_mels) triangular filters on the mel scale, Kaldi's layout
    (the Nyquist bin gets weight zero)."""
    nyquist = sample_rate / 2
    mel_lo, mel_hi = _mel(torch.tensor(LOW_FREQ_HZ, dtype=torch.float64)), _mel(
        torch.tensor(nyquist, dtype=torch.float64)
    )
    step = (mel_hi - mel_lo) / (n_mels + 1)
    edges = mel_lo + step * torch.arange(n_mels + 2, dtype=torch.float64)
    left, center, right = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    bin_mel = _mel(torch.arange(n_fft // 2, dtype=torch.float64) * sample_rate / n_fft)[None]
    up = (bin_mel - left) / (center - left)
    down = (right - bin_mel) / (right - center)
    weights = torch.clamp(torch.minimum(up, down), min=0.0)  # (n_mels, n_fft // 2)
    weights = torch.nn.functional.pad(weights, (0, 1))  # Nyquist bin
    return weights.t().float().contiguous()


@lru_cache(maxsize=8)
def _povey_window(win: int) -> torch.Tensor:
    return torch.hann_window(win, periodic=False, dtype=torch.float64).pow(0.85).float()


def fbank(wavs: torch.Tensor, sample_rate: int = SAMPLE_RATE, n_mels: int = 128) -> torch.Tensor:
    """Log-mel filterbank of a batch of waveforms.

    Args:
        wavs: (B, N) float waveforms in [-1, 1] (padded examples may carry anything past
            their end: those frames are simply to be ignored by the caller).
    Returns:
        (B, num_frames(N), n_mels) float32.
    """
    if wavs.dim() == 1:
        wavs = wavs.unsqueeze(0)
    win, hop = _window_and_hop(sample_rate)
    if wavs.size(-1) < win:
        return wavs.new_zeros(wavs.size(0), 0, n_mels, dtype=torch.float32)
    n_fft = 1 << math.ceil(math.log2(win))
    frames = wavs.float().unfold(-1, win, hop)  # (B, F, win), a view
    frames = frames - frames.mean(dim=-1, keepdim=True)
    # pre-emphasis with Kaldi's edge rule: the sample before the first is the first
    previous = torch.cat([frames[..., :1], frames[..., :-1]], dim=-1)
    frames = frames - PREEMPHASIS * previous
    frames = frames * _povey_window(win).to(frames.device)
    power = torch.fft.rfft(frames, n=n_fft).abs().pow(2)
    mel = power @ _mel_matrix(sample_rate, n_fft, n_mels).to(frames.device)
    return mel.clamp_min(torch.finfo(torch.float32).eps).log()

