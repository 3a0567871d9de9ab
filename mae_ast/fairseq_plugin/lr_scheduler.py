"""fairseq lr scheduler ``epoch_step_decay``: SSAST's fine-tuning schedule, counted in epochs.

SSAST (Gong et al.; its trainer fine-tuned MAE-AST for the paper) warms up linearly over the
first updates, then multiplies the learning rate by ``decay`` every ``decay_every_epochs``
epochs from epoch ``decay_start_epoch`` on (torch's MultiStepLR stepped at the end of each
epoch). fairseq's own ``step`` scheduler counts updates, so a recipe would depend on the size
of the user's copy of the data set; this one counts epochs, as the published recipes do.

    lr(update u, epoch e) = lr * min(1, u / warmup_updates) * decay ** n(e)
    n(e) = how many of decay_start_epoch, decay_start_epoch + decay_every_epochs, ... are < e

So with ``decay_start_epoch=6`` epochs 1-6 train at lr and epoch 7 at lr * decay (SSAST's
ESC-50 recipe, ``--lrscheduler_start 6``).
"""
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import List

from fairseq.dataclass import FairseqDataclass
from fairseq.optim.lr_scheduler import FairseqLRScheduler, register_lr_scheduler
from omegaconf import II


@dataclass
class EpochStepDecayConfig(FairseqDataclass):
    warmup_updates: int = field(default=0, metadata={"help": "raise the lr linearly from 0 over this many updates"})
    decay_start_epoch: int = field(
        default=1_000_000, metadata={"help": "the epoch after which the lr is first multiplied by decay"})
    decay_every_epochs: int = field(default=1, metadata={"help": "then again after every this many epochs"})
    decay: float = field(default=1.0, metadata={"help": "the factor"})
    lr: List[float] = field(default=II("optimization.lr"), metadata={"help": "the peak learning rate"})


@register_lr_scheduler("epoch_step_decay", dataclass=EpochStepDecayConfig)
class EpochStepDecay(FairseqLRScheduler):
    def __init__(self, cfg: EpochStepDecayConfig, optimizer):
        super().__init__(cfg, optimizer)
        if cfg.decay_every_epochs < 1 or not 0 < cfg.decay <= 1:
            raise ValueError("lr_scheduler: decay_every_epochs must be >= 1 and decay in (0, 1]")
        self.peak = cfg.lr[0] if isinstance(cfg.lr, Collection) else cfg.lr
        self.epoch, self.updates = 1, 0
        self.optimizer.set_lr(self._lr())

    def decays_before(self, epoch: int) -> int:
        """How many decay steps epoch ``epoch`` (1-based) trains after."""
        if epoch <= self.cfg.decay_start_epoch:
            return 0
        return (epoch - 1 - self.cfg.decay_start_epoch) // self.cfg.decay_every_epochs + 1

    def _lr(self) -> float:
        warmup = min(1.0, self.updates / self.cfg.warmup_updates) if self.cfg.warmup_updates > 0 else 1.0
        return self.peak * warmup * self.cfg.decay ** self.decays_before(self.epoch)

    def step_begin_epoch(self, epoch):
        self.epoch = epoch
        self.optimizer.set_lr(self._lr())
        return self.optimizer.get_lr()

    def step(self, epoch, val_loss=None):
        super().step(epoch, val_loss)  # tracks the best validation loss
        return self.optimizer.get_lr()  # the next epoch's begin_epoch sets its lr

    def step_update(self, num_updates):
        self.updates = num_updates
        self.optimizer.set_lr(self._lr())
        return self.optimizer.get_lr()
