"""Hub folders: an MAE-AST checkpoint as ``config.json`` + ``model.safetensors`` + ``README.md``.

This is the layout ``huggingface_hub``'s ``PyTorchModelHubMixin.save_pretrained`` writes (a
JSON config, the weights as safetensors, a model card) and the hub client uploads as it is
(docs/evaluation.md, "Sharing a model"). Reading it involves no pickle: JSON and safetensors
only, so a folder from anyone is safe to load.

``config.json`` holds the checkpoint's ``cfg`` sections (``model``, ``task``, and
``criterion`` when present) unchanged, so every loader rebuilds exactly the model it rebuilds
from the pickled checkpoint; beside them, for people and other tools: the feature settings,
for classifiers the label names and ``multi_label`` (these two are the ones the loaders read:
edit them there), and what training is known (updates, the manifest's size, figures).

The two sinusoidal position tables (``max_token_length`` x width each, kept in checkpoints for
the original layout) are most of a checkpoint's bytes and a fixed function of the config: they
are left out of ``model.safetensors`` and recomputed on load, at the config's size.
"""
import json
import os
from typing import Dict, Optional

import torch

from . import checkpoint
from .checkpoint import CheckpointError
from .transformer import sinusoidal_table

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
CARD_FILE = "README.md"
FORMAT_VERSION = 1
# the buffers that are a function of the config alone (mae_ast.core.model.SinusoidalPositions)
RECOMPUTABLE_SUFFIXES = ("enc_sine_pos_embed.pe", "dec_sine_pos_embed.pe")


def is_hub_folder(path: str) -> bool:
    return os.path.isdir(path)


# ---- writing ---------------------------------------------------------------------------------
def split_recomputable(weights: Dict[str, torch.Tensor]):
    """(the weights without the position tables that :func:`sinusoidal_table` gives back
    exactly, {name: dtype} of those left out). A table that differs (some other release's
    formula) stays in the weights, so a folder always loads to the same numbers."""
    kept, recomputed = {}, {}
    for name, tensor in weights.items():
        if name.endswith(RECOMPUTABLE_SUFFIXES) and tensor.dim() == 3 and tensor.size(0) == 1:
            table = sinusoidal_table(tensor.size(1), tensor.size(2)).to(tensor.dtype)
            if torch.equal(table, tensor):
                recomputed[name] = str(tensor.dtype).replace("torch.", "")
                continue
        kept[name] = tensor
    return kept, recomputed


def feature_settings(cfg_task: dict) -> dict:
    """What the model's input is, in the terms of ``torchaudio.compliance.kaldi.fbank``
    (mae_ast.core.features): for readers of config.json; the loaders read ``task``."""
    return {"type": "kaldi_fbank", "sample_rate": int(cfg_task.get("sample_rate", 16000)),
            "num_mel_bins": int(cfg_task.get("feature_dim", 128)), "frame_length_ms": 25.0,
            "frame_shift_ms": 10.0, "use_energy": False, "frames_per_second": int(cfg_task.get("feature_rate", 100)),
            "normalisation": "non-affine BatchNorm2d over all bins (running statistics in the weights), times 0.5"}


def build_config(cfg: dict, recomputed: Dict[str, str], training: Optional[dict] = None) -> dict:
    cfg_model, cfg_task = _plain(dict(cfg["model"])), _plain(dict(cfg["task"]))
    config = {"model_type": cfg_model.get("_name", "mae_ast"), "format_version": FORMAT_VERSION,
              "model": cfg_model, "task": cfg_task}
    if cfg.get("criterion"):
        config["criterion"] = _plain(dict(cfg["criterion"]))
    config["features"] = feature_settings(cfg_task)
    if config["model_type"] == checkpoint.CLASSIFIER_NAME:
        config["label_names"] = list(cfg_model.get("label_names") or
                                     [str(i) for i in range(int(cfg_model["num_classes"]))])
        config["multi_label"] = bool(cfg_task.get("multi_label", False))
    config["recomputed_buffers"] = {name: {"function": "sinusoidal_table", "dtype": dtype}
                                    for name, dtype in recomputed.items()}
    config["training"] = _plain(training or {})
    return config


def write_folder(state: dict, folder: str, training: Optional[dict] = None) -> dict:
    """Write ``state`` (``cfg`` with ``model`` and ``task``, ``model`` weights: what
    :func:`checkpoint.load` returns) as a hub folder; ``training``: known facts for the card
    (see :func:`training_facts`). Returns the config written."""
    from safetensors.torch import save_file
    from .model_card import render

    weights, recomputed = split_recomputable(state["model"])
    config = build_config(state["cfg"], recomputed, training)
    os.makedirs(folder, exist_ok=True)
    # clones: safetensors refuses tensors that share memory, which a state dict may hold
    save_file({k: v.detach().clone().contiguous() for k, v in weights.items()},
              os.path.join(folder, WEIGHTS_FILE), metadata={"format": "pt"})
    with open(os.path.join(folder, CONFIG_FILE), "w") as f:
        json.dump(config, f, indent=2)
        f.write("\n")
    with open(os.path.join(folder, CARD_FILE), "w") as f:
        f.write(render(config, weights))
    return config


def save_pretrained(model: torch.nn.Module, folder: str, training: Optional[dict] = None, **task) -> dict:
    """Write a model built or trained without fairseq (an MAEAST, or an MAEASTClassifier with
    ``label_names``, ``multi_label`` and ``window_samples`` in ``task``) as a hub folder."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "model.pt")
        if hasattr(model, "backbone"):
            checkpoint.save_classifier(path, model, task.pop("label_names"), task.pop("multi_label"),
                                       task.pop("window_samples"), task.pop("loss", None))
        else:
            checkpoint.save(path, model, **task)
        state = checkpoint.load(path)
    return write_folder(state, folder, training)


def training_facts(state: dict) -> dict:
    """What a fairseq training checkpoint says about its run: updates, epoch, and for a run
    that tracked one, its best validation figure. Empty for exported checkpoints."""
    facts = {}
    history = state.get("optimizer_history") or []
    if history and isinstance(history[-1], dict) and history[-1].get("num_updates") is not None:
        facts["updates"] = int(history[-1]["num_updates"])
    extra = state.get("extra_state") or {}
    epoch = (extra.get("train_iterator") or {}).get("epoch")
    if epoch is not None:
        facts["epoch"] = int(epoch)
    metric = dict(state["cfg"].get("checkpoint") or {}).get("best_checkpoint_metric")
    best = extra.get("best")
    if metric and isinstance(best, (int, float)) and best == best:
        facts.setdefault("results", {})[f"best validation {metric}"] = float(best)
    return facts


# ---- reading ---------------------------------------------------------------------------------
def read_config(folder: str) -> dict:
    path = os.path.join(folder, CONFIG_FILE)
    if not os.path.isfile(path):
        raise CheckpointError(f"{folder}: a folder without {CONFIG_FILE}: not an exported MAE-AST model "
                              f"(python tools/export_checkpoint.py CKPT {folder} --format hub writes one)")
    try:
        with open(path) as f:
            config = json.load(f)
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{path}: not readable JSON ({e})") from None
    if not isinstance(config, dict) or not isinstance(config.get("model"), dict) \
            or not isinstance(config.get("task"), dict):
        raise CheckpointError(f"{path}: needs the 'model' and 'task' sections of an MAE-AST config")
    if int(config.get("format_version", FORMAT_VERSION)) > FORMAT_VERSION:
        raise CheckpointError(f"{path}: format_version {config['format_version']} is newer than this "
                              f"code reads ({FORMAT_VERSION}); update mae_ast")
    return config


def read_folder(folder: str) -> dict:
    """A hub folder as :func:`checkpoint.load` returns a checkpoint (``cfg``, ``model``), the
    position tables recomputed, with no pickle. Raises CheckpointError, saying what differs,
    when the weights do not fit the config."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    config = read_config(folder)
    cfg = {"model": dict(config["model"]), "task": dict(config["task"])}
    if config.get("criterion"):
        cfg["criterion"] = dict(config["criterion"])
    if "label_names" in config:  # the loaders read these two here: config.json's top level wins
        cfg["model"]["label_names"] = list(config["label_names"])
    if "multi_label" in config:
        cfg["task"]["multi_label"] = bool(config["multi_label"])
    path = os.path.join(folder, WEIGHTS_FILE)
    if not os.path.isfile(path):
        raise CheckpointError(f"{folder}: {WEIGHTS_FILE} is missing")
    try:
        weights = load_file(path)
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path}: not a readable safetensors file ({e})") from None
    try:
        skeleton = checkpoint.build_model(cfg, device="meta")
    except (ValueError, TypeError, KeyError) as e:
        raise CheckpointError(f"{folder}/{CONFIG_FILE}: cannot build the model it describes ({e})") from None
    expected = skeleton.state_dict()
    for name, spec in dict(config.get("recomputed_buffers") or {}).items():
        if name in expected and name not in weights:
            _, length, dim = expected[name].shape  # the config's size: max_token_length x width
            weights[name] = sinusoidal_table(length, dim).to(getattr(torch, spec.get("dtype", "float32")))
    try:
        checkpoint.check_compatible(skeleton, weights, source=WEIGHTS_FILE, target=f"model {CONFIG_FILE} describes")
        _check_labels(cfg, weights)
    except CheckpointError as e:
        raise CheckpointError(f"{folder}: {e}") from None
    return {"cfg": cfg, "model": weights}


def _check_labels(cfg: dict, weights: Dict[str, torch.Tensor]) -> None:
    """A classifier's label names must name its outputs, one each: an edited list that does
    not would put wrong names on the scores."""
    if cfg["model"].get("_name") != checkpoint.CLASSIFIER_NAME or not cfg["model"].get("label_names"):
        return
    names, outputs = cfg["model"]["label_names"], int(cfg["model"]["num_classes"])
    if len(names) != outputs:
        raise CheckpointError(f"{CONFIG_FILE}: label_names lists {len(names)} labels, the classifier has "
                              f"{outputs} outputs (model.num_classes, the head in {WEIGHTS_FILE})")


def _plain(value):
    """JSON-ready copy: tuples become lists, anything JSON cannot hold becomes its string."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)
