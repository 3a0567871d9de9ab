"""Hydra plugin that lets ``torchrun ... fairseq-hydra-train ... common.cpu=true`` run on CPU.

fairseq 0.12 reads torchrun's environment in ``_infer_torch_distributed_launch_init`` and
computes ``device_id = rank % torch.cuda.device_count()``, a ZeroDivisionError on a machine
without GPUs, before any ``common.user_dir`` code is imported. Hydra imports every module
under the ``hydra_plugins`` namespace when ``fairseq-hydra-train`` starts, which is early
enough to wrap that function: with no GPU, the device id is 0 (CPU) and the rest is
fairseq's own logic. With GPUs nothing changes.

This module must not import ``mae_ast``: fairseq imports the user dir itself later, and an
earlier import from another path would make it refuse the user dir.
"""
import os
import sys

from hydra.core.config_search_path import ConfigSearchPath
from hydra.plugins.search_path_plugin import SearchPathPlugin

PRETRAIN_CONFIGS = os.path.join(os.path.dirname(__file__), "..", "..", "config", "pretrain")


def _cpu_safe(infer_launch_init):
    """Wrap fairseq's torchrun detection so that it needs no GPU."""
    import torch

    def infer(cfg):
        if torch.cuda.device_count() > 0:
            return infer_launch_init(cfg)
        cfg.distributed_init_method = "env://"
        cfg.distributed_world_size = int(os.environ["WORLD_SIZE"])
        cfg.distributed_rank = int(os.environ["RANK"])
        cfg.device_id = 0
        cfg.distributed_no_spawn = True  # torchrun made the processes

    infer.mae_ast_cpu_safe = True
    return infer


def patch_fairseq_torchrun_init():
    """Apply the wrapper once, and only when fairseq is the program being run."""
    utils = sys.modules.get("fairseq.distributed.utils")
    if utils is None or getattr(utils._infer_torch_distributed_launch_init, "mae_ast_cpu_safe", False):
        return
    utils._infer_torch_distributed_launch_init = _cpu_safe(utils._infer_torch_distributed_launch_init)


class MAEASTSearchPath(SearchPathPlugin):
    """Puts the shipped pre-training configs on Hydra's search path (``--config-name mae_ast``
    works without ``--config-dir`` in a source checkout) and applies the fairseq fix above."""

    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        patch_fairseq_torchrun_init()
        if os.path.isdir(PRETRAIN_CONFIGS):
            search_path.append("mae-ast", "file://" + os.path.abspath(PRETRAIN_CONFIGS))


patch_fairseq_torchrun_init()
