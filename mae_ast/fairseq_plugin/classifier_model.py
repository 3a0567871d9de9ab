"""fairseq model ``mae_ast_classifier``: the plain-torch MAEASTClassifier registered with fairseq.

The fairseq model *is* the core module (subclass, not wrapper), so its checkpoints hold the
parameter names ``mae_ast.core.checkpoint.load_classifier`` reads (``backbone.`` + the
pre-training encoder's names, ``head.``).

Initialisation. With ``model.pretrained_checkpoint`` the encoder starts from a pre-training
checkpoint, ours or the original release's (``load_encoder_weights``: one whose settings mean
something else, e.g. a 2x128 frame checkpoint into a 16x16 patch model, is refused with what
differs). Without it the same model starts from random initialisation: the baseline.

Resuming. fairseq builds the model first (so the pre-training checkpoint is read again, and
must still be there and fit, exactly as at the start), then restores ``checkpoint_last.pt``
over every weight. To resume without the pre-training file, pass
``model.pretrained_checkpoint=null``: the weights then come from ``checkpoint_last.pt`` alone.
Loading a fine-tuned checkpoint with fairseq's ``load_model_ensemble`` never reads it.

Layer-wise learning-rate decay (``model.layer_decay`` < 1) tags every trainable parameter
with fairseq's ``optim_overrides`` lr scale, which only the ``composite`` optimizer with
``dynamic_groups: true`` reads; with any other optimizer the model refuses to build.
"""
import logging
from dataclasses import dataclass, field
from typing import List, Optional

import torch
from fairseq.dataclass import ChoiceEnum, FairseqDataclass
from fairseq.models import BaseFairseqModel, register_model
from hydra.utils import to_absolute_path

from ..core.checkpoint import CheckpointError, load_encoder_weights, model_config
from ..core.classifier import MAEASTClassifier, layer_lr_scales
from ..core.config import MAEASTConfig
from .model import check_restore

logger = logging.getLogger(__name__)

PRECISIONS = {"none": "fp32", "bf16": "bf16"}


@dataclass
class MAEASTClassifierConfig(FairseqDataclass, MAEASTConfig):
    pretrained_checkpoint: Optional[str] = field(
        default=None, metadata={"help": "pre-training checkpoint (ours or the original release's) whose encoder "
                                        "initialises the model; null: random initialisation"})
    freeze_encoder: bool = field(
        default=False, metadata={"help": "train the head only, the encoder fixed and in eval mode (a linear probe)"})
    head_dropout: float = field(default=0.0, metadata={"help": "dropout on the pooled embedding before the head"})
    layer_decay: float = field(
        default=1.0, metadata={"help": "layer-wise lr decay: encoder layer i learns at lr * layer_decay ** (depth "
                                       "of the head - its depth); < 1 needs the composite optimizer with dynamic groups, "
                                       "as config/finetune/mae_ast_finetune.yaml sets it"})
    freeze_encoder_updates: int = field(
        default=0, metadata={"help": "train the head alone (the encoder without gradients, as a linear probe) for the "
                                     "first this many updates, then the whole model: the random head's first "
                                     "gradients do not reach a pre-trained encoder"})
    num_classes: int = field(default=0, metadata={"help": "output classes: set from task's labels.csv"})
    label_names: Optional[List[str]] = field(
        default=None, metadata={"help": "class index -> name: set from the task's labels.csv, saved in checkpoints"})
    autocast_dtype: ChoiceEnum(list(PRECISIONS)) = field(
        default="none", metadata={"help": "bf16: run the encoder under torch.autocast in bf16 with fp32 weights (CPU "
                                          "or GPU); the log-mel front end and the loss stay fp32"})


@register_model("mae_ast_classifier", dataclass=MAEASTClassifierConfig)
class MAEASTClassifierModel(MAEASTClassifier, BaseFairseqModel):
    precision = "fp32"  # the extractor's precision: model.autocast_dtype

    @classmethod
    def build_model(cls, cfg: MAEASTClassifierConfig, task):
        if cfg.num_classes < 1:
            raise ValueError("model.num_classes is unset: the mae_ast_finetuning task sets it from labels.csv")
        check_weights_stay_fp32(cfg)
        encoder_cfg = model_config(cfg)  # the MAEASTConfig fields of the model config
        model = cls(encoder_cfg, cfg.num_classes, task.cfg.feature_dim, cfg.head_dropout, cfg.freeze_encoder)
        model.precision = PRECISIONS[str(cfg.autocast_dtype)]
        model.freeze_encoder_updates = cfg.freeze_encoder_updates
        if cfg.pretrained_checkpoint:
            # fairseq-hydra-train runs in hydra.run.dir: a relative path means where it was started
            path = to_absolute_path(cfg.pretrained_checkpoint)
            try:
                load_encoder_weights(model.backbone, path)
            except CheckpointError as e:
                logger.error(str(e))  # also in hydra_train.log, whatever fairseq does with the exception
                raise
            logger.info(f"encoder initialised from {path}")
        else:
            logger.info("no model.pretrained_checkpoint: the encoder starts from random initialisation "
                        "(a checkpoint restored afterwards replaces it)")
        if cfg.layer_decay != 1.0:
            check_optimizer_reads_lr_scales(cfg)
            scales = layer_lr_scales(model, cfg.layer_decay)
            for name, param in model.named_parameters():
                if name in scales:  # trainable: the composite optimizer groups parameters by this tag
                    param.optim_overrides = {"optimizer": {"lr_scale": scales[name]}}
        return model

    freeze_encoder_updates, num_updates = 0, 0

    def set_num_updates(self, num_updates):
        """fairseq's task calls this before each training step's forward."""
        super().set_num_updates(num_updates)
        self.num_updates = num_updates

    def forward(self, wavs: torch.Tensor, lengths: Optional[torch.Tensor] = None, augment=None, **unused):
        # the head's warm-up: no gradients into the encoder (its parameters get none, so Adam
        # leaves them and their moments as they are); dropout and normalisation stay in training mode
        warming_up = self.training and self.num_updates < self.freeze_encoder_updates
        frozen = self.freeze_encoder
        self.freeze_encoder = frozen or warming_up
        try:
            return super().forward(wavs, lengths, augment=augment, precision=self.precision)
        finally:
            self.freeze_encoder = frozen

    def load_state_dict(self, state_dict, strict=True, model_cfg=None, args=None):
        """fairseq's restore (checkpoint_last.pt when resuming): say what differs, e.g. a label
        set that gained a class since the checkpoint was written (the head's shape), or, when
        the checkpoint's model settings travel with its weights (``mae_ast_model_cfg``, see
        model.py), a patch checkpoint into a frame model."""
        check_restore(self, self.backbone.cfg, state_dict, explain=_label_set_hint)
        return super().load_state_dict(state_dict, strict=strict, model_cfg=model_cfg, args=args)


def _label_set_hint(message: str) -> str:
    if "head." not in message:
        return message
    return (f"{message}\n  (the label set differs from the checkpoint's: was labels.csv changed? "
            "fine-tune into a new hydra.run.dir, or restore the labels)")


def check_weights_stay_fp32(cfg) -> None:
    """Refuse common.fp16 / common.bf16: they cast the weights, BatchNorm's statistics included,
    to half precision, while the extractor's log-mel front end runs in fp32."""
    root = cfg._get_parent()
    common = root.get("common") if root is not None else None
    chosen = [key for key in ("fp16", "bf16", "memory_efficient_fp16", "memory_efficient_bf16")
              if common is not None and common.get(key)]
    if chosen:
        raise ValueError(f"common.{chosen[0]}=true casts the classifier's weights to half precision, which its fp32 "
                         "log-mel front end does not take; use model.autocast_dtype=bf16 (CPU or GPU) or "
                         "common.amp=true (GPU) instead")


def check_optimizer_reads_lr_scales(cfg) -> None:
    """Refuse layer decay that the optimizer would ignore: only fairseq's ``composite``
    optimizer with ``dynamic_groups: true`` turns the per-parameter lr scales into groups."""
    root = cfg._get_parent()
    optimizer = root.get("optimizer") if root is not None else None
    if optimizer is None:
        return  # built outside a training run (no optimizer to configure)
    if optimizer.get("_name") != "composite" or not optimizer.get("dynamic_groups", False):
        raise ValueError(
            f"model.layer_decay={cfg.layer_decay} needs the composite optimizer with dynamic groups, which reads the "
            f"per-layer lr scales; optimizer._name is {optimizer.get('_name')!r}"
            f"{'' if optimizer.get('_name') != 'composite' else ' without dynamic_groups: true'}. Use the optimizer "
            "section of config/finetune/mae_ast_finetune.yaml, or model.layer_decay=1")
