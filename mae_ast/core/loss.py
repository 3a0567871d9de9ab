"""MAE-AST pre-training loss: MSE reconstruction + InfoNCE classification on masked tokens."""
from typing import Dict, Optional

import torch


def mae_ast_loss(recon: torch.Tensor, logits: torch.Tensor, target: torch.Tensor,
                 valid: Optional[torch.Tensor] = None, reconstruction_weight: float = 10.0,
                 classification_weight: float = 1.0, norm_targets: bool = False) -> Dict[str, torch.Tensor]:
    """All inputs (B, M, P) over the M masked tokens of each example; ``valid`` (B, M) marks
    real slots (examples of a padded batch mask different numbers of tokens).

    - reconstruction: mean squared error over every value of every valid masked patch; with
      ``norm_targets`` (MAE's and Audio-MAE's ``norm_pix_loss``) against each target patch
      minus its mean over its standard deviation (unbiased, +1e-6 under the root, as MAE), and
      logged as ``loss_recon_norm`` instead of ``loss_recon``: the two are on different scales;
    - InfoNCE (always against the patches as they are: normalising would take away each
      patch's level, one of the cues that tell it from the others): per example, each masked token's classification output is scored by dot
      product against every masked target patch of the same example; the token's own patch
      is the positive. Mean over valid tokens.

    Without padding both equal the original implementation's values exactly.
    """
    recon, logits, target = recon.float(), logits.float(), target.float()
    if valid is None:
        valid = torch.ones(target.shape[:2], dtype=torch.bool, device=target.device)
    n_valid = valid.sum().clamp_min(1)
    out = {}
    total = recon.new_zeros(())
    if reconstruction_weight > 0:
        key = "loss_recon_norm" if norm_targets else "loss_recon"
        err = (recon - (normalise_patches(target) if norm_targets else target)).pow(2).mean(-1)
        out[key] = (err * valid).sum() / n_valid
        total = total + reconstruction_weight * out[key]
    if classification_weight > 0:
        scores = logits @ target.transpose(1, 2)  # (B, M, M): token i vs patch j
        scores = scores.masked_fill(~valid.unsqueeze(1), float("-inf"))
        log_prob = scores.log_softmax(-1).diagonal(dim1=1, dim2=2)
        out["loss_info_nce"] = -(log_prob.masked_fill(~valid, 0.0)).sum() / n_valid
        total = total + classification_weight * out["loss_info_nce"]
    if not out:
        raise ValueError("reconstruction_weight and classification_weight are both 0: nothing to learn")
    out["loss"] = total
    return out


def normalise_patches(patches: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Each patch (last dimension) minus its mean, over its standard deviation (MAE's norm_pix_loss)."""
    mean = patches.mean(-1, keepdim=True)
    var = patches.var(-1, keepdim=True)
    return (patches - mean) / (var + eps).sqrt()
