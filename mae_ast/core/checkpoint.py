"""Reading, checking and exporting MAE-AST checkpoints (fairseq layout: ``cfg`` with ``model``
and ``task`` sections, ``model`` state dict), without fairseq.

Checkpoints of the original release need no translation: the model keeps its parameter names
and shapes (``mae_ast.core.model``), so they load strictly as they are, and ours load into
s3prl's stock upstream. Should a layout ever change, translate it in one function here, called
by :func:`load` and by the fairseq model's ``load_state_dict`` (fairseq's own restore path)."""
import dataclasses
import os
from typing import Dict, Optional

import torch

from .config import MAEASTConfig
from .features import SAMPLE_RATE


class CheckpointError(ValueError):
    """A file that is not an MAE-AST checkpoint, or one that does not fit the model."""


def load(path: str) -> dict:
    """Load a checkpoint with ``weights_only=True`` (torch's safe loader), our training
    checkpoints included (they hold only tensors and plain values: the criterion logs
    floats, never objects); or a hub folder (``mae_ast.core.hub``: JSON and safetensors, no
    pickle at all), as the same ``cfg`` and ``model``. Raises CheckpointError naming the file
    or folder when it is not one."""
    if os.path.isdir(path):
        from .hub import read_folder  # here: hub builds models with this module

        return read_folder(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(f"{path}: not a readable torch checkpoint ({type(e).__name__}: "
                              f"{str(e).splitlines()[0] if str(e) else ''})") from None
    if not isinstance(state, dict) or "model" not in state or "cfg" not in state:
        keys = sorted(state)[:8] if isinstance(state, dict) else type(state).__name__
        raise CheckpointError(f"{path}: not an MAE-AST checkpoint (needs 'cfg' and 'model', found {keys})")
    cfg = state["cfg"]
    if not isinstance(cfg, dict) or "model" not in cfg or "task" not in cfg:
        raise CheckpointError(f"{path}: its 'cfg' lacks the 'model' and 'task' sections")
    return state


def model_config(cfg_model: dict) -> MAEASTConfig:
    """MAEASTConfig from a checkpoint's ``cfg["model"]`` (unknown keys are ignored)."""
    names = MAEASTConfig.__dataclass_fields__
    return MAEASTConfig(**{k: v for k, v in dict(cfg_model).items() if k in names})


def check_compatible(model: torch.nn.Module, state_dict: Dict[str, torch.Tensor],
                     source: str = "checkpoint", target: str = "model") -> None:
    """Raise CheckpointError describing what differs between ``state_dict`` and ``model``;
    ``source`` and ``target`` name the two in the message (a hub folder's weights file and
    its config, say)."""
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    shapes = [(k, tuple(state_dict[k].shape), tuple(v.shape)) for k, v in own.items()
              if k in state_dict and tuple(state_dict[k].shape) != tuple(v.shape)]
    if not (missing or unexpected or shapes):
        return
    lines = []
    patch = _patch_dim(state_dict)
    if patch is not None and patch != _patch_dim(own):
        kt, kc = getattr(model, "kernel", ("?", "?"))
        lines.append(f"the {source} was trained on patches of {patch} values, the {target} uses "
                     f"{kt}x{kc} = {_patch_dim(own)} (patch vs frame model? check model.ast_kernel_size_*)")
    layers_ckpt, layers_model = _layers(state_dict, "encoder"), _layers(own, "encoder")
    if layers_ckpt != layers_model:
        lines.append(f"encoder layers: {source} {layers_ckpt}, {target} {layers_model}")
    lines += [f"shape of {k}: {source} {a}, {target} {b}" for k, a, b in shapes[:6]]
    if missing:
        lines.append(f"missing in {source}: {', '.join(missing[:6])}{' ...' if len(missing) > 6 else ''}")
    if unexpected:
        lines.append(f"not in {target}: {', '.join(unexpected[:6])}{' ...' if len(unexpected) > 6 else ''}")
    raise CheckpointError(f"{source} does not match the {target}:\n  - " + "\n  - ".join(lines))


# settings that change what the weights mean without changing their shapes: a 16x16 patch
# and a 2x128 frame both hold 256 values
SEMANTIC_KEYS = ("ast_kernel_size_time", "ast_kernel_size_chan", "ast_kernel_stride_time",
                 "ast_kernel_stride_chan", "encoder_attention_heads", "layer_norm_first", "activation_fn")


def check_same_semantics(ckpt_model_cfg: dict, model_cfg) -> None:
    """Raise CheckpointError when the checkpoint's model settings differ from the model's in
    a way shapes cannot reveal (patch vs frame model, head count, LayerNorm placement)."""
    diffs = [f"model.{k}: checkpoint {ckpt_model_cfg[k]}, model {getattr(model_cfg, k)}"
             for k in SEMANTIC_KEYS
             if k in ckpt_model_cfg and hasattr(model_cfg, k) and ckpt_model_cfg[k] != getattr(model_cfg, k)]
    if diffs:
        hint = ""
        if any("kernel" in d for d in diffs):
            ckpt_kind = f"{ckpt_model_cfg['ast_kernel_size_time']}x{ckpt_model_cfg['ast_kernel_size_chan']}"
            model_kind = f"{model_cfg.ast_kernel_size_time}x{model_cfg.ast_kernel_size_chan}"
            hint = f" (a {ckpt_kind} checkpoint into a {model_kind} model: patch vs frame?)"
        raise CheckpointError("checkpoint does not match the model" + hint + ":\n  - " + "\n  - ".join(diffs))


def _patch_dim(sd):
    w = sd.get("post_extract_proj.weight")
    return None if w is None else int(w.shape[1])


def _layers(sd, prefix):
    return len({k.split(".")[2] for k in sd if k.startswith(prefix + ".layers.")})


def save(path: str, model: torch.nn.Module, state_dict: Optional[Dict[str, torch.Tensor]] = None,
         **task) -> None:
    """Write ``model`` (an MAEAST) in our training checkpoints' layout (``cfg.model`` with
    ``_name``, ``cfg.task``, ``model``), which :func:`load_model`, the s3prl upstream, the HEAR
    module and fairseq's restore read: for models built or trained without fairseq.
    ``state_dict`` (default: the model's own) writes other weights with the same names, e.g.
    the original implementation's; ``task`` adds or overrides ``cfg.task`` keys."""
    cfg_task = {"_name": "mae_ast_pretraining", "sample_rate": SAMPLE_RATE, "feature_type": "fbank",
                "feature_rate": 100, "feature_dim": model.feature_dim, "mask_type": model.mask_type, **task}
    torch.save({"cfg": {"model": {"_name": "mae_ast", **dataclasses.asdict(model.cfg)}, "task": cfg_task},
                "model": model.state_dict() if state_dict is None else state_dict}, path)


def export(state: dict) -> dict:
    """What s3prl's stock upstream needs and nothing else: ``cfg`` (plain dicts) and
    ``model`` (tensors); for a classifier also ``cfg.criterion`` (its loss says whether its
    scores are sigmoids). Optimizer state and logging meters are dropped."""
    cfg = {"model": dict(state["cfg"]["model"]), "task": dict(state["cfg"]["task"])}
    if dict(state["cfg"]["model"]).get("_name") == CLASSIFIER_NAME and state["cfg"].get("criterion"):
        cfg["criterion"] = {"loss": dict(state["cfg"]["criterion"]).get("loss", "ce")}
    return {"cfg": cfg, "model": {k: v for k, v in state["model"].items()}}


def build_model(cfg: dict, device=None) -> torch.nn.Module:
    """The model a checkpoint's ``cfg`` describes, freshly initialised, layerdrop off: an
    MAEAST, or an MAEASTClassifier for a fine-tuned one. ``device="meta"`` builds only the
    shapes (what checking a checkpoint's weights against its config needs)."""
    from .classifier import MAEASTClassifier  # here: classifier and model import the extractor
    from .model import MAEAST

    cfg_model, cfg_task = dict(cfg["model"]), dict(cfg["task"])
    encoder_cfg = model_config(cfg_model)
    encoder_cfg.encoder_layerdrop = 0.0
    feature_dim = int(cfg_task.get("feature_dim", 128))
    with torch.device(device or "cpu"):
        if cfg_model.get("_name") == CLASSIFIER_NAME:
            return MAEASTClassifier(encoder_cfg, int(cfg_model["num_classes"]), feature_dim)
        return MAEAST(encoder_cfg, feature_dim=feature_dim, mask_type=cfg_task.get("mask_type", "random_mask"))



def load_model(path: str, decoder: bool = True, sample_rate: Optional[int] = None):
    """(MAEAST with the checkpoint's weights, strictly loaded; ``cfg["task"]`` as a dict).

    Layerdrop is switched off (every layer runs at inference). With ``decoder=False`` the
    decoder and the pre-training heads are dropped (what feature extraction needs). With
    ``sample_rate``, a checkpoint trained at another rate is refused. The model is returned in
    training mode, as ``nn.Module``s are built; call ``.eval()`` for inference.
    """
    state = load(path)
    cfg_model, cfg_task = dict(state["cfg"]["model"]), dict(state["cfg"]["task"])
    if cfg_task.get("feature_type", "fbank") == "wav":
        raise CheckpointError(f"{path}: task.feature_type=wav is not an MAE-AST model")
    if sample_rate is not None and int(cfg_task.get("sample_rate", sample_rate)) != sample_rate:
        raise CheckpointError(f"{path}: task.sample_rate is not {sample_rate}")
    if cfg_model.get("_name") == CLASSIFIER_NAME:
        raise CheckpointError(f"{path}: a fine-tuned classifier, not a pre-training checkpoint "
                              f"(its predictions: tools/classify.py, tools/evaluate.py)")
    model = build_model({"model": cfg_model, "task": cfg_task})
    check_compatible(model, state["model"])
    model.load_state_dict(state["model"], strict=True)
    if not decoder:
        model.remove_decoder()
    return model, cfg_task


# what only pre-training uses: left out when a checkpoint's encoder initialises a classifier
DECODER_SIDE = ("decoder.", "decoder_mask_emb", "dec_sine_pos_embed.", "final_proj_", "post_enc_proj.")


def load_encoder_weights(backbone: torch.nn.Module, path: str) -> dict:
    """Initialise ``backbone`` (an MAEAST without decoder) from a pre-training checkpoint, ours
    or the original release's: the encoder side strictly, after checking that the checkpoint's
    settings mean what the backbone's do (a frame checkpoint into a patch model is refused,
    saying what differs). Returns the checkpoint's ``cfg["task"]``."""
    state = load(path)
    cfg_model, cfg_task = dict(state["cfg"]["model"]), dict(state["cfg"]["task"])
    if cfg_model.get("_name") == CLASSIFIER_NAME:
        raise CheckpointError(f"{path}: a fine-tuned classifier, not a pre-training checkpoint")
    try:
        check_same_semantics(cfg_model, backbone.cfg)
        if int(cfg_task.get("feature_dim", 128)) != backbone.feature_dim:
            raise CheckpointError(f"task.feature_dim: checkpoint {cfg_task.get('feature_dim')}, "
                                  f"model {backbone.feature_dim}")
        encoder = {k: v for k, v in state["model"].items() if not k.startswith(DECODER_SIDE)}
        check_compatible(backbone, encoder)
    except CheckpointError as e:
        raise CheckpointError(f"{path}: {e}") from None
    backbone.load_state_dict(encoder, strict=True)
    return cfg_task


CLASSIFIER_NAME = "mae_ast_classifier"


@dataclasses.dataclass
class ClassifierInfo:
    label_names: list  # class index -> name
    multi_label: bool  # fine-tuned on multi-label data (mAP), else single-label (accuracy)
    sigmoid: bool  # scores are per-class sigmoids (trained with binary cross-entropy), else a softmax
    window_samples: int  # the clip length it was fine-tuned on: longer input is cut into windows of it
    cfg: dict  # the checkpoint's whole cfg


def load_classifier(path: str):
    """(MAEASTClassifier with a fine-tuned checkpoint's weights, in eval mode; ClassifierInfo)."""
    state = load(path)
    cfg = state["cfg"]
    cfg_model, cfg_task = dict(cfg["model"]), dict(cfg["task"])
    if cfg_model.get("_name") != CLASSIFIER_NAME:
        raise CheckpointError(f"{path}: a pre-training checkpoint, not a classifier; fine-tune it first "
                              f"(fairseq-hydra-train --config-name mae_ast_finetune ..., docs/finetuning.md)")
    names = list(cfg_model.get("label_names") or [])
    model = build_model(cfg)
    check_compatible(model, state["model"])
    model.load_state_dict(state["model"], strict=True)
    loss = dict(cfg.get("criterion") or {}).get("loss", "ce")
    window = cfg_task.get("max_sample_size") or 10 * SAMPLE_RATE
    info = ClassifierInfo(names or [str(i) for i in range(model.head[-1].out_features)],
                          bool(cfg_task.get("multi_label", False)), loss == "bce", int(window), cfg)
    return model.eval(), info


def save_classifier(path: str, model: torch.nn.Module, label_names: list, multi_label: bool,
                    window_samples: int, loss: Optional[str] = None) -> None:
    """Write a classifier in the layout fine-tuning with fairseq writes (the keys
    :func:`load_classifier` reads): for classifiers built or trained without fairseq."""
    cfg_model = {"_name": CLASSIFIER_NAME, **dataclasses.asdict(model.backbone.cfg),
                 "num_classes": len(label_names), "label_names": list(label_names)}
    cfg_task = {"_name": "mae_ast_finetuning", "sample_rate": SAMPLE_RATE, "feature_dim": model.backbone.feature_dim,
                "max_sample_size": int(window_samples), "multi_label": bool(multi_label)}
    torch.save({"cfg": {"model": cfg_model, "task": cfg_task, "criterion": {"loss": loss or ("bce" if multi_label else "ce")}},
                "model": model.state_dict()}, path)
