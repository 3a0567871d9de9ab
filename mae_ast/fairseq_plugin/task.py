"""fairseq task ``mae_ast_pretraining``: manifests in, MAEASTDataset out."""
import logging
import os
import sys
from dataclasses import dataclass, field
from typing import Optional

from fairseq.dataclass import ChoiceEnum, FairseqDataclass
from fairseq.tasks import FairseqTask, register_task
from omegaconf import II, MISSING

from ..core.config import check_compatibility
from ..core.features import samples_for_frames
from ..core.masking import MASK_TYPES
from ..manifest import Manifest
from .dataset import MIN_FRAMES, MAEASTDataset

logger = logging.getLogger(__name__)


@dataclass
class MAEASTPretrainingConfig(FairseqDataclass):
    data: str = field(default=MISSING, metadata={"help": "folder with {split}.tsv manifests"})
    sample_rate: int = field(default=16_000, metadata={"help": "audio is resampled to this rate"})
    max_keep_size: Optional[int] = field(default=None, metadata={"help": "leave out clips longer than this (samples)"})
    max_sample_size: Optional[int] = field(
        default=None, metadata={"help": "crop clips to at most this many samples (a random window is decoded)"})
    min_sample_size: Optional[int] = field(
        default=None, metadata={"help": "leave out clips shorter than this (samples); never below one 16-frame patch"})
    random_crop: bool = field(default=True, metadata={"help": "crop at a random offset (else from the start)"})
    pad_audio: bool = field(default=False, metadata={"help": "pad to the longest clip in the batch instead of cropping to the shortest"})
    feature_type: str = field(default="fbank", metadata={"help": "input features: only 'fbank' (Kaldi log-mel)"})
    feature_rate: int = field(default=100, metadata={"help": "feature frames per second (10 ms shift)"})
    feature_dim: int = field(default=128, metadata={"help": "mel bins"})
    mask_type: ChoiceEnum(list(MASK_TYPES)) = field(
        default="random_mask",
        metadata={"help": "random_mask: per example; random_mask_batched: shared by the batch; "
                          "chunk_mask: SSAST square chunks masked (patch models); retain_spans: wav2vec2 spans (frame models); "
                          "inverse_block: EAT's square blocks kept, the rest masked (not the paper's)"})
    masks_per_clip: int = field(
        default=1,
        metadata={"help": "K masked copies of each clip per step (EAT's clone_batch: 16): audio decoded, fbank "
                          "and normalisation computed once, the encoder and decoder run on K x B sequences, "
                          "the loss is their mean. dataset.max_tokens counts each clip once, so memory and "
                          "compute per step grow about K-fold (divide max_tokens by K to keep them)"})
    seed: int = field(default=II("common.seed"), metadata={"help": "crops follow (seed, epoch, clip): common.seed"})
    persistent_workers: bool = field(
        default=False,
        metadata={"help": "keep loader workers from one epoch to the next (fairseq reads it here). Off: "
                          "fairseq sets the epoch on the main process's dataset only, so a persistent "
                          "worker would repeat epoch 1's crops every epoch; restarting costs seconds"})
    max_bad_audio_fraction: float = field(
        default=0.05, metadata={"help": "stop when more than this share of audio reads fail (after 10 failures)"})

    # ---- compatibility: the original release's fields (see mae_ast.core.config) ----------
    normalize: bool = field(default=False, metadata={"help": "(compatibility) waveform normalisation: not supported"})
    deltas: bool = field(default=False, metadata={"help": "(compatibility) delta features: not supported"})
    enable_padding: bool = field(default=False, metadata={"help": "(compatibility) unused; see pad_audio"})
    mask_spans: bool = field(default=False, metadata={"help": "(compatibility) unused; see mask_type"})


TASK_UNSUPPORTED = {"normalize": (False, "waveform normalisation, which MAE-AST's fbank input does not use"),
                    "deltas": (False, "delta features, which MAE-AST does not use")}
TASK_NO_EFFECT = {"enable_padding": (False, "task.pad_audio decides padding"),
                  "mask_spans": (False, "task.mask_type decides the masking")}


class AudioTask(FairseqTask):
    """What the pre-training and fine-tuning tasks share: audio in, no dictionaries, and no
    length filter (too long clips are cropped, too short ones left out when the manifest loads)."""

    @staticmethod
    def min_keep(cfg) -> int:
        """Shortest clip kept (samples): task.min_sample_size, never below one 16-frame patch."""
        return max(cfg.min_sample_size or 0, samples_for_frames(MIN_FRAMES, cfg.sample_rate))

    @property
    def source_dictionary(self):
        return None

    @property
    def target_dictionary(self):
        return None

    def max_positions(self):
        return (sys.maxsize, sys.maxsize)

    def filter_indices_by_size(self, indices, *args, **kwargs):
        return indices


@register_task("mae_ast_pretraining", dataclass=MAEASTPretrainingConfig)
class MAEASTPretrainingTask(AudioTask):
    cfg: MAEASTPretrainingConfig

    def __init__(self, cfg: MAEASTPretrainingConfig):
        super().__init__(cfg)
        if cfg.feature_type != "fbank":
            raise ValueError(f"MAE-AST reads Kaldi log-mel features: set task.feature_type=fbank, not {cfg.feature_type}")
        check_compatibility(cfg, "task", TASK_UNSUPPORTED, TASK_NO_EFFECT)
        if cfg.masks_per_clip < 1:
            raise ValueError(f"task.masks_per_clip={cfg.masks_per_clip}: at least 1 (one mask per clip, the paper's)")

    @classmethod
    def setup_task(cls, cfg: MAEASTPretrainingConfig, **kwargs):
        return cls(cfg)

    def load_dataset(self, split: str, epoch=1, **kwargs):
        manifest = Manifest.load(os.path.join(self.cfg.data, f"{split}.tsv"), self.min_keep(self.cfg),
                                 self.cfg.max_keep_size)
        if len(manifest) == 0:
            message = (f"{manifest.path}: no usable clips ({manifest.skipped_short} too short, "
                       f"{manifest.skipped_long} too long)")
            # fairseq's trainer loads the training split with a data_selector; validation
            # splits (fairseq-train's valid_subset, fairseq-validate) come without one
            if "data_selector" not in kwargs:
                message += ("; it is a validation split: to train without validation set "
                            "dataset.disable_validation=true, or give it clips "
                            "(tools/make_manifest.py --valid-percent 0.01)")
            raise ValueError(message)
        self.datasets[split] = MAEASTDataset(
            manifest, self.cfg.sample_rate, self.cfg.feature_dim, self.cfg.max_sample_size,
            self.cfg.pad_audio, self.cfg.random_crop, shuffle=True,
            max_bad_audio_fraction=self.cfg.max_bad_audio_fraction, seed=self.cfg.seed)
