"""fairseq criterion ``mae_ast``: the core loss, plus logging."""
from dataclasses import dataclass, field

from fairseq.criterions import FairseqCriterion, register_criterion
from fairseq.dataclass import FairseqDataclass
from fairseq.logging import metrics

from ..core.loss import mae_ast_loss


@dataclass
class MAEASTCriterionConfig(FairseqDataclass):
    reconstruction_weight: float = field(default=10.0, metadata={"help": "weight of the MSE reconstruction loss (0: off)"})
    classification_weight: float = field(default=1.0, metadata={"help": "weight of the InfoNCE classification loss (0: off)"})
    norm_targets: bool = field(
        default=False,
        metadata={"help": "reconstruct each masked patch normalised by its own mean and std (MAE/Audio-MAE "
                          "norm_pix_loss), logged as loss_recon_norm instead of loss_recon; InfoNCE keeps the "
                          "patches as they are"})


@register_criterion("mae_ast", dataclass=MAEASTCriterionConfig)
class MAEASTCriterion(FairseqCriterion):
    def __init__(self, task, reconstruction_weight: float = 10.0, classification_weight: float = 1.0,
                 norm_targets: bool = False):
        super().__init__(task)
        self.reconstruction_weight = reconstruction_weight
        self.classification_weight = classification_weight
        self.norm_targets = norm_targets

    def forward(self, model, sample, reduce=True):
        out = model(**sample["net_input"])
        losses = mae_ast_loss(
            out["logit_m_list_recon"], out["logit_m_list_class"], out["target_m_list"],
            out["target_valid"], self.reconstruction_weight, self.classification_weight, self.norm_targets)
        valid = out["target_valid"]
        ntokens = valid.sum() if valid is not None else out["target_m_list"].shape[0] * out["target_m_list"].shape[1]
        # sample_size 1: the loss is already a per-batch mean, as in the original (with
        # task.masks_per_clip K, the mean over the K x B masked sequences' tokens)
        logging_output = {
            "ntokens": ntokens,
            "nsentences": sample["id"].numel(),  # clips, counted once whatever K
            "sample_size": 1,
            "bad_audio": sample.get("n_bad_audio", 0),
            **{k: v.detach() for k, v in losses.items()},
        }
        return losses["loss"], 1, logging_output

    @staticmethod
    def reduce_metrics(logging_outputs) -> None:
        def total(key):
            return sum(float(log.get(key, 0)) for log in logging_outputs)

        batches = total("sample_size") or 1
        for key in ("loss", "loss_recon", "loss_recon_norm", "loss_info_nce"):
            if any(key in log for log in logging_outputs):
                metrics.log_scalar(key, total(key) / batches, batches, round=4)
        metrics.log_scalar_sum("bad_audio", total("bad_audio"))

    @staticmethod
    def logging_outputs_can_be_summed() -> bool:
        return True
