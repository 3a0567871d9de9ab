"""Fine-tuning augmentations, as SSAST / AST use them.

* SpecAugment: one frequency mask and one time mask per clip, each of a width drawn uniformly
  from [0, max width), on the normalised log-mel (the masked bins become 0, the mean).
* mixup on waveforms: with probability ``prob`` a clip is mixed with another clip of the batch,
  ``lam * a + (1 - lam) * b`` with lam ~ Beta(10, 10), and so are their targets.
"""
from typing import Optional, Tuple

import torch


class SpecAugment:
    """``augment`` for :func:`mae_ast.core.extractor.extract`: feats (B, frames, mels) with the
    clips' (B,) frame counts -> masked feats. Time masks fall inside each clip's own frames."""

    def __init__(self, freq_mask: int, time_mask: int, generator: Optional[torch.Generator] = None):
        self.freq_mask, self.time_mask, self.generator = freq_mask, time_mask, generator

    def __call__(self, feats: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
        batch, width, mels = feats.shape
        keep = torch.ones_like(feats, dtype=torch.bool)
        if self.freq_mask > 0:
            keep &= ~self._band(batch, torch.full((batch,), mels), self.freq_mask, mels)[:, None, :]
        if self.time_mask > 0:
            keep &= ~self._band(batch, frames.cpu().clamp(max=width), self.time_mask, width)[:, :, None]
        return feats * keep.to(feats.device)

    def _band(self, batch: int, extent: torch.Tensor, max_width: int, size: int) -> torch.Tensor:
        """(batch, size) bool: per row a band of width U[0, max_width) (at most the row's extent)
        starting uniformly within the extent."""
        u = torch.rand(batch, 2, generator=self.generator)
        width = (u[:, 0] * max_width).long().minimum(extent)
        start = (u[:, 1] * (extent - width + 1)).long()
        pos = torch.arange(size)[None]
        return (pos >= start[:, None]) & (pos < (start + width)[:, None])


def mixup(wavs: torch.Tensor, lengths: torch.Tensor, targets: torch.Tensor, prob: float,
          generator: Optional[torch.Generator] = None, alpha: float = 10.0
          ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mix clips of a batch: (B, N) waveforms, (B,) lengths, (B, C) targets -> the same, mixed.
    Each clip, with probability ``prob``, is mixed with another clip of the batch (its length
    becomes the longer of the two); a batch of one is left as it is."""
    batch = wavs.size(0)
    if prob <= 0 or batch < 2:
        return wavs, lengths, targets
    mixed = torch.rand(batch, generator=generator) < prob
    other = (torch.arange(batch) + torch.randint(1, batch, (batch,), generator=generator)) % batch
    beta = torch.distributions.Beta(alpha, alpha)
    lam = torch.where(mixed, _sample(beta, batch, generator), torch.ones(batch))
    wavs = lam[:, None] * wavs + (1 - lam[:, None]) * wavs[other]
    targets = lam[:, None] * targets + (1 - lam[:, None]) * targets[other]
    lengths = torch.where(mixed, torch.maximum(lengths, lengths[other]), lengths)
    return wavs, lengths, targets


def _sample(beta: torch.distributions.Beta, n: int, generator: Optional[torch.Generator]) -> torch.Tensor:
    """n draws of Beta(a, a) from ``generator`` (torch's Beta sampler takes none). For a whole
    number a, Beta(a, a) is the a-th smallest of 2a - 1 uniform draws."""
    a = int(beta.concentration1)
    if a != beta.concentration1 or a != beta.concentration0:
        raise ValueError("mixup's Beta(alpha, alpha) needs a whole alpha")
    u = torch.rand(n, 2 * a - 1, generator=generator)
    return u.sort(1).values[:, a - 1]
