"""Log-mel back to audio: an approximate inverse of :func:`.features.fbank`, to listen to
spectrograms and reconstructions.

Kaldi's fbank throws away the phase, merges 257 FFT bins into 128 mel bands and removes each
frame's DC, so no exact inverse exists. This undoes each step as closely as the lost
information allows, at the fbank's own settings:

1. ``exp`` of the natural-log mel energies (Kaldi logs the *power* spectrum);
2. mel -> linear power with torchaudio's ``InverseMelScale`` (least squares), given Kaldi's own
   filters (triangles on Kaldi's ``1127 ln(1 + f / 700)`` mel scale from 20 Hz to Nyquist,
   which differ from torchaudio's), then refined by non-negative multiplicative updates, since
   the least-squares answer has negative energies that ``relu`` only zeroes;
3. phase by torchaudio's ``GriffinLim`` with the fbank's frame: 25 ms Povey window (Hann^0.85),
   10 ms hop, 512-point FFT;
4. Kaldi's pre-emphasis (0.97) undone on the waveform, and the frames placed where Kaldi's
   ``snip_edges`` puts them (frame t covers samples 160 t .. 160 t + 400).

The result sounds like the spectrogram (phasey, as Griffin-Lim is); its own fbank is close to
the input's (``tests/test_visualize.py`` states how close).
"""
import math
import warnings
from typing import Optional

import torch
import torchaudio

from .features import PREEMPHASIS, SAMPLE_RATE, _mel_matrix, _povey_window, _window_and_hop

GRIFFIN_LIM_ITERATIONS = 64
NNLS_ITERATIONS = 100
# exp() of a wild reconstruction must stay finite in float32 through the squared FFT sums
MAX_LOG_ENERGY = 40.0
# pad the spectrogram with copies of its edge frames so Griffin-Lim's own (centred) edges fall
# outside the samples kept: Kaldi's first frame starts at sample 0, torch's is centred there
EDGE_FRAMES = 2


def _n_fft(sample_rate: int) -> int:
    win, _ = _window_and_hop(sample_rate)
    return 1 << math.ceil(math.log2(win))


def mel_to_power(logmel: torch.Tensor, sample_rate: int = SAMPLE_RATE,
                 nnls_iterations: int = NNLS_ITERATIONS) -> torch.Tensor:
    """(frames, n_mels) Kaldi log-mel -> (n_fft // 2 + 1, frames) power spectrum whose
    Kaldi mel energies are as close as a non-negative spectrum gets."""
    n_mels = logmel.size(-1)
    n_fft = _n_fft(sample_rate)
    filters = _mel_matrix(sample_rate, n_fft, n_mels)  # (freq, n_mels)
    mel = logmel.detach().float().cpu().clamp_max(MAX_LOG_ENERGY).exp().t()  # (n_mels, frames)
    with warnings.catch_warnings():  # its own filters (replaced below) have empty ones too
        warnings.simplefilter("ignore", UserWarning)
        # gelsd (SVD, CPU only) copes with Kaldi's empty low filters: a rank-deficient system
        inverse = torchaudio.transforms.InverseMelScale(n_fft // 2 + 1, n_mels, sample_rate, driver="gelsd")
    inverse.fb = filters
    power = inverse(mel)
    # multiplicative updates for min ||filters^T power - mel|| with power >= 0 (Lee & Seung)
    target = filters @ mel
    for _ in range(nnls_iterations):
        power = power.clamp_min(1e-12) * target / (filters @ (filters.t() @ power)).clamp_min(1e-30)
    return power


def griffin_lim(power: torch.Tensor, sample_rate: int = SAMPLE_RATE, n_iter: int = GRIFFIN_LIM_ITERATIONS,
                seed: int = 0, hop: Optional[int] = None) -> torch.Tensor:
    """(freq, frames) power spectrum of Kaldi frames, on the CPU -> 1-D waveform of the frames' length
    (``features.samples_for_frames``), pre-emphasis undone. ``hop`` overrides the fbank's
    (only the tests use it, to see a wrong inversion fail)."""
    win, fbank_hop = _window_and_hop(sample_rate)
    hop = hop or fbank_hop
    frames = power.size(1)
    padded = torch.cat([power[:, :1].expand(-1, EDGE_FRAMES), power,
                        power[:, -1:].expand(-1, EDGE_FRAMES)], dim=1)
    window = _povey_window(win)
    transform = torchaudio.transforms.GriffinLim(
        n_fft=_n_fft(sample_rate), win_length=win, hop_length=hop, power=2.0, n_iter=n_iter, momentum=0.99,
        window_fn=lambda n: window)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # Griffin-Lim starts from random phases: the same ones each time
        emphasised = transform(padded)
    start = EDGE_FRAMES * hop - win // 2  # the padded frame 2's centre is Kaldi frame 0's centre
    emphasised = emphasised[start:start + win + hop * (frames - 1)]
    return torchaudio.functional.deemphasis(emphasised[None], PREEMPHASIS)[0]


@torch.no_grad()
def logmel_to_audio(logmel: torch.Tensor, sample_rate: int = SAMPLE_RATE, n_iter: int = GRIFFIN_LIM_ITERATIONS,
                    seed: int = 0) -> torch.Tensor:
    """(frames, n_mels) Kaldi log-mel (``features.fbank``'s units, not the model's normalised
    ones) -> 1-D float waveform at ``sample_rate``, at the level of the audio it came from."""
    return griffin_lim(mel_to_power(logmel, sample_rate), sample_rate, n_iter, seed)
