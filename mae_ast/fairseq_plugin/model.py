"""fairseq model ``mae_ast``: the plain-torch MAEAST registered with fairseq.

The fairseq model *is* the core module (subclass, not wrapper), so parameter names stay
those of the original release."""
import functools
import logging
from dataclasses import dataclass, field

import torch

from fairseq import checkpoint_utils
from fairseq.dataclass import ChoiceEnum, FairseqDataclass
from fairseq.models import BaseFairseqModel, register_model

from ..core.checkpoint import CheckpointError, check_compatible, check_same_semantics
from ..core.config import MAEASTConfig
from ..core.model import MAEAST


logger = logging.getLogger(__name__)


AUTOCAST_DTYPES = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class MAEASTModelConfig(FairseqDataclass, MAEASTConfig):
    autocast_dtype: ChoiceEnum(list(AUTOCAST_DTYPES)) = field(
        default="none",
        metadata={"help": "run the model's forward under torch.autocast in this dtype (bf16 on CPU or "
                          "GPU, fp16 on GPU) with fp32 weights; the loss stays fp32. Alternatives: "
                          "common.bf16=true (bf16 weights and activations, fp32 master weights: fastest "
                          "on CPU) and common.fp16=true or common.amp=true (GPU)"})


@register_model("mae_ast", dataclass=MAEASTModelConfig)
class MAEASTModel(MAEAST, BaseFairseqModel):
    masks_per_clip = 1  # task.masks_per_clip; a model built outside a task draws one mask per clip

    @classmethod
    def build_model(cls, cfg: MAEASTModelConfig, task):
        model = cls(cfg, task.cfg.feature_dim, task.cfg.mask_type)
        # a task setting (like mask_type), not the model's: checkpoints stay the same model
        model.masks_per_clip = getattr(task.cfg, "masks_per_clip", 1)
        return model

    def forward(self, *args, **kwargs):
        kwargs.setdefault("masks_per_clip", self.masks_per_clip)
        dtype = AUTOCAST_DTYPES[str(getattr(self.cfg, "autocast_dtype", "none"))]
        if dtype is None:
            return super().forward(*args, **kwargs)
        device = self.post_extract_proj.weight.device.type
        with torch.autocast(device, dtype=dtype):
            return super().forward(*args, **kwargs)

    def load_state_dict(self, state_dict, strict=True, model_cfg=None, args=None):
        check_restore(self, self.cfg, state_dict)
        return super().load_state_dict(state_dict, strict=strict, model_cfg=model_cfg, args=args)


def check_restore(model: torch.nn.Module, settings, state_dict, explain=lambda message: message) -> None:
    """What fairseq's restore path must check before loading ``state_dict`` into ``model``:
    the checkpoint's own model settings (attached by ``_remember_model_cfg``) mean what
    ``settings`` mean, and the weights fit. The CheckpointError (its message passed through
    ``explain``) is logged first: fairseq's trainer replaces it with a generic one."""
    try:
        ckpt_cfg = getattr(state_dict, "mae_ast_model_cfg", None)
        if ckpt_cfg is not None:
            check_same_semantics(ckpt_cfg, settings)
        check_compatible(model, state_dict)
    except CheckpointError as e:
        error = CheckpointError(explain(str(e)))
        logger.error(str(error))
        raise error from None


def _remember_model_cfg(load):
    """fairseq hands ``load_state_dict`` the *current* config only; attach the checkpoint's
    own model config to its state dict so that a patch checkpoint restored into a frame model
    (same weight shapes) is refused instead of silently loaded."""

    @functools.wraps(load)
    def wrapper(*args, **kwargs):
        state = load(*args, **kwargs)
        cfg = state.get("cfg") if isinstance(state, dict) else None
        model_cfg = cfg.get("model") if hasattr(cfg, "get") else None
        if model_cfg is not None and model_cfg.get("_name") in ("mae_ast", "mae_ast_classifier") and "model" in state:
            state["model"].mae_ast_model_cfg = dict(model_cfg)
        return state

    wrapper.mae_ast_wrapped = True
    return wrapper


def _accept_released_checkpoints(upgrade):
    """Released checkpoints (``tools/export_checkpoint.py``'s, ``core.checkpoint.save``'s, and
    weights-only ones in the original release's layout) hold the weights and config but no
    training state, which fairseq's restore path reads unconditionally (KeyError 'best_loss',
    'extra_state'). Give them the state of a run that has not started, so that
    ``checkpoint.restore_file=RELEASED checkpoint.reset_optimizer=true ...`` continues
    pre-training from them (or fine-tuning's own checkpoints resume) as from any checkpoint."""

    @functools.wraps(upgrade)
    def wrapper(state):
        if isinstance(state, dict) and "model" in state and "optimizer_history" not in state and "best_loss" not in state:
            state["optimizer_history"] = [{"criterion_name": "", "optimizer_name": "", "num_updates": 0,
                                           "lr_scheduler_state": {"best": None}}]
            state.setdefault("extra_state", {"train_iterator": {"epoch": 1, "iterations_in_epoch": 0}})
        return upgrade(state)

    wrapper.mae_ast_wrapped = True
    return wrapper


if not getattr(checkpoint_utils.load_checkpoint_to_cpu, "mae_ast_wrapped", False):
    checkpoint_utils.load_checkpoint_to_cpu = _remember_model_cfg(checkpoint_utils.load_checkpoint_to_cpu)
if not getattr(checkpoint_utils._upgrade_state_dict, "mae_ast_wrapped", False):
    checkpoint_utils._upgrade_state_dict = _accept_released_checkpoints(checkpoint_utils._upgrade_state_dict)
