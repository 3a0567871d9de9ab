"""A fairseq ``common.user_dir`` for tests: our plugin plus a task that writes every rank's
parameters to $RANK_PROBE_DIR when training starts and when validation begins (fairseq itself
saves checkpoints on rank 0 only)."""
import os

import torch
import torch.distributed as dist
from fairseq.tasks import register_task

import mae_ast.fairseq_plugin  # noqa: F401  registers mae_ast_pretraining and the model
from mae_ast.fairseq_plugin.task import MAEASTPretrainingConfig, MAEASTPretrainingTask


def _save_parameters(model, tag):
    rank = dist.get_rank() if dist.is_initialized() else 0
    params = {name: p.detach().clone() for name, p in model.named_parameters()}
    torch.save(params, os.path.join(os.environ["RANK_PROBE_DIR"], f"{tag}_rank{rank}.pt"))


@register_task("mae_ast_rank_probe", dataclass=MAEASTPretrainingConfig)
class RankProbeTask(MAEASTPretrainingTask):
    def begin_epoch(self, epoch, model):
        super().begin_epoch(epoch, model)
        if epoch == 1:
            _save_parameters(model, "start")

    def begin_valid_epoch(self, epoch, model):
        super().begin_valid_epoch(epoch, model)
        _save_parameters(model, "valid")
