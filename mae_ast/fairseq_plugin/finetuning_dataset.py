"""Labelled audio dataset for fine-tuning: the pre-training dataset's reading, plus labels.

Reading is :class:`MAEASTDataset`'s (a window of at most ``max_sample_size`` samples decoded
per clip, at a random offset in training and from the start in validation; unreadable files
logged by name, counted and replaced by another clip, which brings its own labels). What
changes is the batch: the collater gives waveforms, not log-mel features, because the
classifier computes its features on the one road (``mae_ast.core.extractor.extract``) where
SpecAugment hooks in, and targets.

    net_input: wavs (B, N) zero-padded, lengths (B,)
    target:    (B, C) float, multi-hot (mixup makes them soft)
    augment_seed: an int for the training step's SpecAugment (training split only)

Every random choice (crop, mixup partner and weight, SpecAugment seed, weighted sampling)
follows (seed, epoch, clip ids), so a resumed run sees the same data.
"""
from typing import List, Optional, Sequence

import numpy as np
import torch

from ..core.augment import mixup
from ..core.metrics import multi_hot
from ..manifest import Manifest
from .dataset import MAEASTDataset


def sampling_weights(labels: Sequence[Sequence[int]], num_classes: int) -> np.ndarray:
    """AudioSet-style clip weights: the sum over a clip's labels of 1 / (training clips with
    that label), so that every label is drawn about equally often. Normalised to sum to 1."""
    counts = np.zeros(num_classes)
    for clip_labels in labels:
        counts[list(clip_labels)] += 1
    inverse = np.divide(1.0, counts, out=np.zeros(num_classes), where=counts > 0)
    weights = np.array([inverse[list(clip_labels)].sum() for clip_labels in labels])
    return weights / weights.sum()


def seed_from(*values: int) -> int:
    """A 63-bit seed from whole numbers (numpy's SeedSequence mixes them well)."""
    return int(np.random.SeedSequence([int(v) for v in values]).generate_state(1, np.uint64)[0]) >> 1


class LabelledAudioDataset(MAEASTDataset):
    def __init__(self, manifest: Manifest, labels: List[List[int]], num_classes: int,
                 max_sample_size: Optional[int] = None, training: bool = True,
                 mixup_prob: float = 0.0, weighted_sampling: bool = False,
                 max_bad_audio_fraction: float = 0.05, seed: int = 1):
        if len(labels) != len(manifest):
            raise ValueError(f"{manifest.path}: {len(manifest)} clips but {len(labels)} label lists")
        # pad_audio=False: a clip's size for batching is its length cropped to max_sample_size
        # (the window _read decodes); this collater pads, it never crops to the shortest clip
        # training: random crops, mixup and SpecAugment seeds; else crops from the start
        super().__init__(manifest, max_sample_size=max_sample_size, pad_audio=False, random_crop=training,
                         shuffle=True, max_bad_audio_fraction=max_bad_audio_fraction, seed=seed)
        self.labels, self.num_classes = labels, num_classes
        self.mixup_prob = mixup_prob
        self.weights = sampling_weights(labels, num_classes) if weighted_sampling else None
        self.training = training

    # ---- items --------------------------------------------------------------------------------
    def __getitem__(self, index):
        item = super().__getitem__(index)
        item["labels"] = self.labels[item["clip"]]  # the labels of the audio it holds (a substitute's)
        return item

    # ---- batches -------------------------------------------------------------------------------
    def collater(self, samples: List[dict]) -> dict:
        samples = [s for s in samples if s["source"] is not None]
        if not samples:
            return {}
        ids = [s["id"] for s in samples]
        lengths = torch.tensor([len(s["source"]) for s in samples])
        wavs = torch.nn.utils.rnn.pad_sequence([s["source"] for s in samples], batch_first=True)
        target = multi_hot([s["labels"] for s in samples], self.num_classes)
        batch = {"id": torch.LongTensor(ids), "n_bad_audio": sum(len(s["bad_audio"]) for s in samples)}
        if self.training:
            generator = torch.Generator().manual_seed(seed_from(self.seed, self.epoch, *ids))
            wavs, lengths, target = mixup(wavs, lengths, target, self.mixup_prob, generator)
            batch["augment_seed"] = int(torch.randint(0, 2 ** 62, (1,), generator=generator))
        batch.update(net_input={"wavs": wavs, "lengths": lengths}, target=target)
        return batch

    # ---- order ---------------------------------------------------------------------------------
    @property
    def can_reuse_epoch_itr_across_epochs(self):
        # each epoch draws its own order (and with weighted sampling its own clips): fairseq
        # must ask ordered_indices again. As the draw follows (seed, epoch) only, a run resumed
        # in epoch k gets the batches an uninterrupted run had (fairseq would otherwise seed a
        # reused order with the epoch the iterator was first built in)
        return False

    def ordered_indices(self):
        """Each clip once in a random order, or, with weighted sampling, as many draws with
        replacement as there are clips, by weight; seeded by (seed, epoch). Then sorted by
        length, longest first (stable), so batches waste little padding; fairseq shuffles
        the batches."""
        rng = np.random.default_rng((self.seed, self.epoch))
        if self.weights is None:
            drawn = rng.permutation(len(self))
        else:
            drawn = rng.choice(len(self), size=len(self), replace=True, p=self.weights)
        return drawn[np.argsort(-self.num_tokens_vec(drawn), kind="stable")]
