"""Fine-tuning augmentations, as SSAST / AST use them.

* SpecAugment: one frequency mask and one time mask per clip, each of a width drawn uniformly
  from [0, widest), on the normalised log-mel (the masked bins become 0, the mean).
  The widest time mask is either a number of frames (SSAST's recipes: 96 on ESC-50's 5 s clips,
  192 on AudioSet's 10 s ones) or a share of each clip's own frames (``time_share``: 0.2 gives
  192 frames on a 10 s clip and 19 on a 1 s one), and never more than half of the clip. Without
  that cap, AudioSet's 192 frames on a 1 s clip (98 frames) blanked about half of all training
  clips entirely, labels kept. The frequency mask is capped at half the mel bins likewise.
* mixup on waveforms: with probability ``prob`` a clip is mixed with another clip of the batch,
  ``lam * a + (1 - lam) * b`` with lam ~ Beta(10, 10), and so are their targets.
"""
from typing import Optional, Sequence, Tuple

import torch

from .features import HOP_SECONDS

# the widest mask never exceeds this share of a clip's frames (or of the mel bins): at least half
# of every clip is always seen. SSAST's published widths all fit under it on their data sets
# (ESC-50 96 of 500 frames, Speech Commands 48 of 98, AudioSet 192 of 1000; 48 of 128 mel bins)
MAX_SHARE = 0.5


class SpecAugment:
    """``augment`` for :func:`mae_ast.core.extractor.extract`: feats (B, frames, mels) with the
    clips' (B,) frame counts -> masked feats. Time masks fall inside each clip's own frames.

    ``time_mask`` (frames) or, when it is 0 or None, ``time_share`` (of each clip's frames)
    bounds the time mask's width; either way a clip's mask is narrower than :data:`MAX_SHARE`
    of its frames, so no width that covers a whole clip is ever drawn."""

    def __init__(self, freq_mask: int, time_mask: Optional[int] = None, generator: Optional[torch.Generator] = None,
                 time_share: float = 0.0):
        if not 0.0 <= time_share <= MAX_SHARE:
            raise ValueError(f"time_share={time_share}: a share of each clip in [0, {MAX_SHARE}]")
        if freq_mask < 0 or (time_mask or 0) < 0:
            raise ValueError(f"mask widths must be >= 0, got freq {freq_mask}, time {time_mask}")
        self.freq_mask, self.time_mask, self.time_share = freq_mask, time_mask or 0, time_share
        self.generator = generator

    @property
    def masks_time(self) -> bool:
        return self.time_mask > 0 or self.time_share > 0

    def time_bound(self, frames: torch.Tensor) -> torch.Tensor:
        """(B,) float: each clip's widest time mask (exclusive) for its (B,) frame counts."""
        frames = frames.to(torch.float64)
        wanted = torch.full_like(frames, float(self.time_mask)) if self.time_mask > 0 else self.time_share * frames
        return torch.minimum(wanted, MAX_SHARE * frames)

    def freq_bound(self, mels: int) -> float:
        return min(float(self.freq_mask), MAX_SHARE * mels)

    def __call__(self, feats: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
        batch, width, mels = feats.shape
        keep = torch.ones_like(feats, dtype=torch.bool)
        if self.freq_mask > 0:
            bound = torch.full((batch,), self.freq_bound(mels), dtype=torch.float64)
            keep &= ~self._band(torch.full((batch,), mels), bound, mels)[:, None, :]
        if self.masks_time:
            extent = frames.cpu().clamp(max=width)
            keep &= ~self._band(extent, self.time_bound(extent), width)[:, :, None]
        return feats * keep.to(feats.device)

    def _band(self, extent: torch.Tensor, bound: torch.Tensor, size: int) -> torch.Tensor:
        """(batch, size) bool: per row a band of width floor(U[0, 1) * bound), so narrower
        than the row's bound, starting uniformly within the row's extent."""
        u = torch.rand(extent.numel(), 2, generator=self.generator, dtype=torch.float64)
        width = (u[:, 0] * bound).long().minimum(extent)
        start = (u[:, 1] * (extent - width + 1)).long()
        pos = torch.arange(size)[None]
        return (pos >= start[:, None]) & (pos < (start + width)[:, None])

    def describe(self, clip_frames: Sequence[int], mels: int) -> str:
        """The widths this augmentation draws, in frames and seconds, on clips of these frame
        counts (the training clips, cropped to the window): a line for the run's log."""
        if self.freq_mask > 0:
            freq = f"frequency masks narrower than {self.freq_bound(mels):g} of {mels} mel bins"
        else:
            freq = "no frequency mask"
        if not self.masks_time:
            return f"SpecAugment (training): {freq}; no time mask"
        frames = sorted(int(f) for f in clip_frames)
        rule = (f"time masks narrower than {self.time_mask} frames ({self.time_mask * HOP_SECONDS:g} s)" if self.time_mask > 0
                else f"time masks narrower than {self.time_share:g} of each clip")
        shown = []
        for name, f in (("shortest", frames[0]), ("median", frames[(len(frames) - 1) // 2]), ("longest", frames[-1])):
            w = _widest(float(self.time_bound(torch.tensor([f]))[0]))
            shown.append(f"{w} frames ({w * HOP_SECONDS:.2f} s) on the {name} clip ({f} frames, {f * HOP_SECONDS:.2f} s)")
        capped = sum(1 for f in frames if self.time_mask > 0 and MAX_SHARE * f < self.time_mask)
        cap = (f"; {capped} of {len(frames)} clips are shorter than twice that: their masks stay under half "
               "the clip" if capped else "")
        return f"SpecAugment (training): {freq}; {rule}, never over half a clip: up to " + ", ".join(shown) + cap


def _widest(bound: float) -> int:
    """The widest width floor(u * bound), u in [0, 1), can take."""
    bound = float(bound)
    return max(0, int(bound) - 1 if bound.is_integer() else int(bound))


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
