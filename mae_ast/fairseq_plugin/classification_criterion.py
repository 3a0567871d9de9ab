"""fairseq criterion ``mae_ast_classification``: cross-entropy or binary cross-entropy on the
classifier's logits, with label smoothing, and the figures of a run.

Logged: ``loss`` (per clip, in nats); ``accuracy`` for single-label data (training and
validation); on validation ``mAP`` and ``roc_auc`` (macro), computed over the *whole*
validation set: every validation batch hands its scores and targets to one meter, which
computes the figures once at the end (``mae_ast.core.metrics``, equal to scikit-learn's).
So ``checkpoint.best_checkpoint_metric`` can be ``accuracy``, ``mAP`` or ``roc_auc``.

The scores travel in the logging outputs, which therefore cannot be summed across GPUs:
fairseq gathers them with ``all_gather_list``, whose buffer (``common.all_gather_list_size``
bytes) must hold a batch's scores and targets (about batch x classes x 8 bytes).
"""
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from fairseq.criterions import FairseqCriterion, register_criterion
from fairseq.dataclass import ChoiceEnum, FairseqDataclass
from fairseq.logging import metrics
from fairseq.logging.meters import Meter

from ..core.metrics import summary
from .finetuning_task import record_in_run_config

LOSSES = ["auto", "ce", "bce"]


@dataclass
class ClassificationCriterionConfig(FairseqDataclass):
    loss: ChoiceEnum(LOSSES) = field(
        default="auto", metadata={"help": "ce: softmax cross-entropy (one class per clip; takes the soft targets "
                                          "mixup makes); bce: binary cross-entropy per class (several labels per "
                                          "clip); auto: bce for multi-label data, else ce. Saved resolved"})
    label_smoothing: float = field(
        default=0.0, metadata={"help": "ce: targets * (1 - s) + s / classes; bce: each class's target * (1 - s) + s / 2"})


@register_criterion("mae_ast_classification", dataclass=ClassificationCriterionConfig)
class ClassificationCriterion(FairseqCriterion):
    def __init__(self, task, loss: str = "auto", label_smoothing: float = 0.0):
        super().__init__(task)
        self.loss = ("bce" if task.multi_label else "ce") if loss == "auto" else loss
        self.label_smoothing = label_smoothing
        self.multi_label = task.multi_label

    @classmethod
    def build_criterion(cls, cfg: ClassificationCriterionConfig, task):
        criterion = cls(task, str(cfg.loss), cfg.label_smoothing)
        record_in_run_config(cfg, "criterion", loss=criterion.loss)  # load_classifier reads it
        return criterion

    def forward(self, model, sample, reduce=True):
        logits = model(**sample["net_input"]).float()
        targets = sample["target"].float()
        loss = self.compute_loss(logits, targets)
        batch = targets.size(0)
        logging_output = {
            "loss": loss.detach(),
            "sample_size": batch,
            "nsentences": batch,
            "ntokens": batch,
            "bad_audio": sample.get("n_bad_audio", 0),
        }
        if not self.multi_label:
            logging_output["correct"] = int((logits.argmax(1) == targets.argmax(1)).sum())
        if not model.training:  # for the whole-set figures
            logging_output["scores"] = logits.detach().cpu()
            logging_output["targets"] = targets.detach().cpu()
        return loss, batch, logging_output

    def compute_loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Summed over the clips of the batch (fairseq divides by sample_size = clips)."""
        s = self.label_smoothing
        if self.loss == "bce":
            targets = targets * (1 - s) + s / 2
            # mean over classes, as SSAST's BCEWithLogitsLoss: the loss of a clip
            return F.binary_cross_entropy_with_logits(logits, targets, reduction="none").mean(1).sum()
        targets = targets / targets.sum(1, keepdim=True).clamp_min(1e-8)  # several labels share the mass
        targets = targets * (1 - s) + s / targets.size(1)
        return -(targets * logits.log_softmax(1)).sum()

    @staticmethod
    def reduce_metrics(logging_outputs) -> None:
        def total(key):
            return sum(float(log.get(key, 0)) for log in logging_outputs)

        clips = total("sample_size")
        metrics.log_scalar("loss", total("loss") / max(clips, 1), clips, round=4)
        metrics.log_scalar_sum("bad_audio", total("bad_audio"))
        if any("correct" in log for log in logging_outputs):
            metrics.log_scalar("accuracy", total("correct") / max(clips, 1), clips, round=4)
        scored = [log for log in logging_outputs if "scores" in log]
        if scored:
            # '_'-keys are not printed; the figures are derived from the meter when read
            metrics.log_custom(WholeSetScores, "_whole_set",
                               torch.cat([log["scores"] for log in scored]),
                               torch.cat([log["targets"] for log in scored]))
            for name in ("mAP", "roc_auc"):
                metrics.log_derived(name, lambda meters, name=name: meters["_whole_set"].figure(name))

    @staticmethod
    def logging_outputs_can_be_summed() -> bool:
        return False  # validation outputs carry scores (see the module docstring)


class WholeSetScores(Meter):
    """Collects the scores and targets of every validation batch; ``figure`` computes mAP
    or macro ROC-AUC over all of them. Validation logs into a fresh aggregator each time
    (fairseq's ``metrics.aggregate(new_root=True)``), so nothing is carried between
    validations or saved in checkpoints."""

    def __init__(self):
        self.reset()

    def reset(self):
        self.scores, self.targets, self._figures = [], [], None

    def update(self, scores: torch.Tensor, targets: torch.Tensor):
        self.scores.append(scores)
        self.targets.append(targets)
        self._figures = None

    def figure(self, name: str) -> float:
        if self._figures is None:
            self._figures = summary(torch.cat(self.scores), torch.cat(self.targets), multi_label=True)
        return round(self._figures[name], 4)

    def state_dict(self):
        return {}

    def load_state_dict(self, state_dict):
        self.reset()

    @property
    def smoothed_value(self) -> float:
        return 0.0
