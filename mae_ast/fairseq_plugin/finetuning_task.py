"""fairseq task ``mae_ast_finetuning``: labelled manifests in, LabelledAudioDataset out.

A data folder holds ``{split}.tsv`` (mae_ast.manifest), ``{split}.lbl`` (a clip's labels per
line, comma-separated) and ``labels.csv`` (mae_ast.labels), as ``tools/make_manifest.py
--labels`` writes them. At set-up the task reads the label set and the training labels and
decides what depends on the data: the number of classes and their names (for the model), and
whether the data is multi-label (any training clip with more than one label). It writes these
into the run's config, which fairseq saves in every checkpoint, so that a fine-tuned checkpoint
says what it is (``mae_ast.core.checkpoint.load_classifier`` reads them).

Training adds, per batch: SpecAugment on the log-mel (through the extractor's ``augment`` hook),
mixup of waveforms and targets, random crops, and optionally AudioSet-style weighted sampling.
Validation crops each clip from its start to ``max_sample_size`` (the published sets' clips
are shorter than their recipe's window, so there it sees whole clips; for longer clips this
keeps validation as cheap as training and ``tools/evaluate.py`` scores whole clips in windows).
"""
import logging
import os
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import torch
from fairseq.dataclass import FairseqDataclass
from fairseq.tasks import register_task
from hydra.utils import to_absolute_path
from omegaconf import II, MISSING, open_dict

from ..core.augment import SpecAugment
from ..core.features import SAMPLE_RATE, num_frames, samples_for_frames
from ..labels import LabelSet, load_labels
from ..manifest import Manifest
from .finetuning_dataset import LabelledAudioDataset
from .task import AudioTask

logger = logging.getLogger(__name__)


@dataclass
class MAEASTFinetuningConfig(FairseqDataclass):
    data: str = field(default=MISSING, metadata={"help": "folder with {split}.tsv, {split}.lbl and labels.csv"})
    labels: str = field(
        default="labels.csv",
        metadata={"help": "the label set (index,name): a path, relative to task.data unless absolute"})
    multi_label: Optional[bool] = field(
        default=None, metadata={"help": "several labels per clip (sigmoid scores, mAP); null: true when any training "
                                        "clip has more than one label. Written back resolved into the checkpoint"})
    sample_rate: int = field(
        default=SAMPLE_RATE, metadata={"help": "audio is read at this rate (MAE-AST models read 16 kHz)"})
    feature_dim: int = field(default=128, metadata={"help": "mel bins (as in pre-training)"})
    max_sample_size: Optional[int] = field(
        default=samples_for_frames(1024),
        metadata={"help": "the window in samples: training crops longer clips at random, validation from the "
                          "start; shorter clips are kept whole (default: 1024 frames, 10.24 s). Inference on "
                          "longer audio averages windows of this length"})
    min_sample_size: Optional[int] = field(
        default=None, metadata={"help": "leave out clips shorter than this (samples; never below 16 frames, 0.175 s)"})
    freq_mask: int = field(
        default=0, metadata={"help": "SpecAugment in training: widest frequency mask, in mel bins (0: none)"})
    time_mask: Optional[int] = field(
        default=None, metadata={"help": "SpecAugment in training: widest time mask, in frames (a recipe's published "
                                        "width); null or 0: time_mask_share decides. Never over half a clip"})
    time_mask_share: float = field(
        default=0.0, metadata={"help": "SpecAugment in training, when time_mask is null: widest time mask as a share "
                                       "of each clip's own frames, at most 0.5 (0.2: 19 frames on a 1 s clip, 192 on "
                                       "a 10 s one, SSAST's AudioSet width); 0: no time mask"})
    mixup: float = field(
        default=0.0, metadata={"help": "share of training clips mixed with another clip of the batch (waveforms and "
                                       "targets, weight ~ Beta(10, 10))"})
    weighted_sampling: bool = field(
        default=False, metadata={"help": "draw training clips with replacement, weighted by the sum of 1 / frequency "
                                         "of their labels (AudioSet style), anew each epoch"})
    seed: int = field(
        default=II("common.seed"), metadata={"help": "crops, mixup, SpecAugment and sampling follow (seed, epoch, clips)"})
    train_subset: str = field(
        default=II("dataset.train_subset"),
        metadata={"help": "the training split (dataset.train_subset): its labels decide multi_label"})
    max_bad_audio_fraction: float = field(
        default=0.05, metadata={"help": "stop when more than this share of audio reads fail (after 10 failures)"})


def record_in_run_config(cfg, section: str, **values) -> None:
    """Write values decided at set-up into ``cfg`` and into the same ``section`` of the run's
    whole config. fairseq hands tasks, models and criteria a merged copy of their section whose
    parent is the run's config; the trainer saves that parent in checkpoints."""
    with open_dict(cfg):
        for key, value in values.items():
            cfg[key] = value
    root = cfg._get_parent()
    if root is not None and section in root and root[section] is not None:
        with open_dict(root[section]):
            for key, value in values.items():
                root[section][key] = value


@register_task("mae_ast_finetuning", dataclass=MAEASTFinetuningConfig)
class MAEASTFinetuningTask(AudioTask):
    cfg: MAEASTFinetuningConfig

    def __init__(self, cfg: MAEASTFinetuningConfig, label_set: LabelSet):
        super().__init__(cfg)
        if cfg.sample_rate != SAMPLE_RATE:
            raise ValueError(f"task.sample_rate={cfg.sample_rate}: MAE-AST models read {SAMPLE_RATE} Hz audio")
        self.label_set = label_set
        self.multi_label = bool(cfg.multi_label)

    @classmethod
    def setup_task(cls, cfg: MAEASTFinetuningConfig, **kwargs):
        # fairseq-hydra-train runs in hydra.run.dir: a relative path means where it was started
        record_in_run_config(cfg, "task", data=to_absolute_path(cfg.data))
        label_set = LabelSet.load(os.path.join(cfg.data, cfg.labels))
        if cfg.multi_label is None:
            train_labels = load_labels(*cls._label_files(cfg, cfg.train_subset), label_set)
            multi = any(len(clip) > 1 for clip in train_labels)
            found = "some clips have several labels: multi-label" if multi else "one label per clip: single-label"
            logger.info(f"{cfg.train_subset}: {found} (task.multi_label chooses)")
            record_in_run_config(cfg, "task", multi_label=multi)
        record_in_run_config(cfg, "model", num_classes=len(label_set), label_names=list(label_set.names))
        logger.info(f"{label_set.path}: {len(label_set)} classes")
        return cls(cfg, label_set)

    @staticmethod
    def _label_files(cfg, split: str):
        """(.lbl path, its Manifest) of a split."""
        return (os.path.join(cfg.data, f"{split}.lbl"),
                Manifest.load(os.path.join(cfg.data, f"{split}.tsv"), AudioTask.min_keep(cfg)))

    def load_dataset(self, split: str, epoch=1, **kwargs):
        lbl_path, manifest = self._label_files(self.cfg, split)
        if len(manifest) == 0:
            raise ValueError(f"{manifest.path}: no usable clips ({manifest.skipped_short} shorter than "
                             f"{self.min_keep(self.cfg)} samples)")
        labels = load_labels(lbl_path, manifest, self.label_set)
        training = split == self.cfg.train_subset
        self.datasets[split] = LabelledAudioDataset(
            manifest, labels, len(self.label_set), self.cfg.max_sample_size, training=training,
            mixup_prob=self.cfg.mixup if training else 0.0,
            weighted_sampling=self.cfg.weighted_sampling and training,
            max_bad_audio_fraction=self.cfg.max_bad_audio_fraction, seed=self.cfg.seed)
        if training:
            self.log_augmentation(self.datasets[split])

    def spec_augment(self, generator: Optional[torch.Generator] = None) -> Optional[SpecAugment]:
        """The training SpecAugment of task.freq_mask / time_mask / time_mask_share (None: off)."""
        aug = SpecAugment(self.cfg.freq_mask, self.cfg.time_mask, generator, time_share=self.cfg.time_mask_share)
        return aug if aug.freq_mask > 0 or aug.masks_time else None

    def log_augmentation(self, dataset: LabelledAudioDataset) -> None:
        """Say, in frames and seconds, which SpecAugment widths the training clips get."""
        aug = self.spec_augment()
        if aug is None:
            logger.info("SpecAugment: off (task.freq_mask=0, no time mask)")
            return
        # each clip as training reads it: cropped to the window
        samples = dataset.num_tokens_vec(np.arange(len(dataset)))
        frames = num_frames(torch.as_tensor(samples, dtype=torch.long)).clamp_min(1).tolist()
        logger.info(aug.describe(frames, self.cfg.feature_dim))

    def build_model(self, cfg, from_checkpoint=False):
        if from_checkpoint and cfg.get("pretrained_checkpoint"):
            # the weights come from the fine-tuned checkpoint: the pre-training file is not read
            with open_dict(cfg):
                cfg.pretrained_checkpoint = None
        return super().build_model(cfg, from_checkpoint)

    def train_step(self, sample, model, criterion, optimizer, update_num, ignore_grad=False):
        if sample and "augment_seed" in sample:
            augment = self.spec_augment(torch.Generator().manual_seed(sample["augment_seed"]))
            if augment is not None:
                sample["net_input"]["augment"] = augment
        return super().train_step(sample, model, criterion, optimizer, update_num, ignore_grad)
