"""Audio dataset for MAE-AST pre-training.

Each item decodes only the window it will use (at most ``max_sample_size`` samples, at a
random offset), so an hour-long file costs what a 15 s one does. The collater crops the
batch to its shortest clip (or pads to the longest with ``pad_audio``), as the original,
and computes log-mel features for the whole batch at once.

A file that fails to decode does not end the run: it is logged by name, another example
takes its place, and the batch carries the count so the training log shows it. Past
``max_bad_audio_fraction`` of reads (after ``MIN_FAILURES_BEFORE_STOP`` failures) the
loader stops with an error: then something is wrong with the data, not with a file.
"""
import logging
from typing import List, Optional

import numpy as np
import torch
from fairseq.data import FairseqDataset

from .. import audio
from ..core.features import SAMPLE_RATE, fbank, num_frames, samples_for_frames
from ..manifest import Manifest

logger = logging.getLogger(__name__)

MIN_FAILURES_BEFORE_STOP = 10
MAX_SUBSTITUTIONS = 20
MIN_FRAMES = 16  # a clip must give at least one 16x16 patch


class TooManyBadFiles(RuntimeError):
    pass


class MAEASTDataset(FairseqDataset):
    def __init__(self, manifest: Manifest, sample_rate: int = SAMPLE_RATE, feature_dim: int = 128,
                 max_sample_size: Optional[int] = None, pad_audio: bool = False,
                 random_crop: bool = True, shuffle: bool = True,
                 max_bad_audio_fraction: float = 0.05, seed: int = 1):
        self.manifest = manifest
        self.sizes = np.asarray(manifest.sizes, dtype=np.int64)
        self.sample_rate, self.feature_dim = sample_rate, feature_dim
        self.max_sample_size = max_sample_size or np.iinfo(np.int64).max
        self.pad_audio, self.random_crop, self.shuffle = pad_audio, random_crop, shuffle
        self.max_bad_audio_fraction = max_bad_audio_fraction
        self.seed, self.epoch = seed, 1
        self.reads = self.failures = 0  # per process (each loader worker counts its own)
        logger.info(
            f"{manifest.path}: {len(manifest)} clips, {self.sizes.sum() / sample_rate / 3600:.2f} h; "
            f"skipped {manifest.skipped_short} too short, {manifest.skipped_long} too long")

    def __len__(self):
        return len(self.sizes)

    def set_epoch(self, epoch):
        self.epoch = epoch

    # ---- items --------------------------------------------------------------------------------
    def _rng(self, index: int, attempt: int) -> np.random.Generator:
        # crops depend on (seed, epoch, index) only: resumed runs see the same data
        return np.random.default_rng((self.seed, self.epoch, index, attempt))

    def _read(self, index: int, rng: np.random.Generator) -> torch.Tensor:
        size = int(self.sizes[index])
        length = min(size, self.max_sample_size)
        start = int(rng.integers(0, size - length + 1)) if self.random_crop else 0
        return audio.read(self.manifest.audio_path(index), self.sample_rate, start, length)

    def __getitem__(self, index):
        bad = []
        candidate = index
        for attempt in range(MAX_SUBSTITUTIONS + 1):
            self.reads += 1
            rng = self._rng(index, attempt)
            try:
                wav = self._read(candidate, rng)
                if len(wav) < samples_for_frames(MIN_FRAMES, self.sample_rate):
                    raise audio.AudioReadError(self.manifest.audio_path(candidate), f"only {len(wav)} samples decoded")
                # "clip": whose audio this is (another clip's when this one could not be read)
                return {"id": index, "clip": candidate, "source": wav, "bad_audio": bad}
            except audio.AudioReadError as e:
                self.failures += 1
                bad.append(e.path)
                line = self.manifest.line_numbers[candidate]
                logger.warning(f"skipping unreadable audio ({self.manifest.path}:{line}): {e}")
                self._check_failure_rate()
                candidate = int(rng.integers(0, len(self)))
        raise TooManyBadFiles(f"{MAX_SUBSTITUTIONS + 1} reads in a row failed, last: {bad[-1]}")

    def _check_failure_rate(self):
        if (self.failures >= MIN_FAILURES_BEFORE_STOP
                and self.failures > self.max_bad_audio_fraction * self.reads):
            raise TooManyBadFiles(
                f"{self.failures} of {self.reads} audio reads failed in this loader, more than "
                f"task.max_bad_audio_fraction={self.max_bad_audio_fraction}: check the data behind "
                f"{self.manifest.path} (the warnings above name the files)")

    # ---- batches -------------------------------------------------------------------------------
    def collater(self, samples: List[dict]) -> dict:
        samples = [s for s in samples if s["source"] is not None]
        if not samples:
            return {}
        lengths = [len(s["source"]) for s in samples]
        target = min(max(lengths) if self.pad_audio else min(lengths), self.max_sample_size)
        wavs = torch.zeros(len(samples), target)
        rng = np.random.default_rng((self.seed, self.epoch, *[s["id"] for s in samples]))
        for i, s in enumerate(samples):
            wav = s["source"]
            if len(wav) > target:
                start = int(rng.integers(0, len(wav) - target + 1)) if self.random_crop else 0
                wav = wav[start:start + target]
            wavs[i, :len(wav)] = wav
        lengths = torch.tensor([min(n, target) for n in lengths])
        features = fbank(wavs, self.sample_rate, self.feature_dim)
        frames = num_frames(lengths, self.sample_rate)
        padding_mask = None
        if bool((frames < features.size(1)).any()):
            padding_mask = torch.arange(features.size(1)).unsqueeze(0) >= frames.unsqueeze(1)
        return {
            "id": torch.LongTensor([s["id"] for s in samples]),
            "net_input": {"source": features, "padding_mask": padding_mask},
            "n_bad_audio": sum(len(s["bad_audio"]) for s in samples),
        }

    # ---- sizes and order ---------------------------------------------------------------------
    def num_tokens(self, index):
        return self.size(index)

    def num_tokens_vec(self, indices):
        """Vectorised sizes: fairseq's fast batching path (millions of files in seconds)."""
        sizes = self.sizes[indices]
        return sizes if self.pad_audio else np.minimum(sizes, self.max_sample_size)

    def size(self, index):
        return self.sizes[index] if self.pad_audio else min(self.sizes[index], self.max_sample_size)

    def ordered_indices(self):
        """Random order, then stably by length (longest first), so batches hold similar lengths
        and the crop to the shortest clip wastes little. The order follows (seed, epoch) only:
        fairseq seeds numpy's global generator with the epoch its iterator was first built in,
        so a run resumed in a later epoch would otherwise see other batches."""
        rng = np.random.default_rng((self.seed, self.epoch))
        order = [rng.permutation(len(self))] if self.shuffle else [np.arange(len(self))]
        order.append(np.minimum(self.sizes, self.max_sample_size))
        return np.lexsort(order)[::-1]

