"""The pre-training loss's edges: weights that switch a term off or scale it, one valid token,
and the refusal when nothing is left to learn (the formula itself: tests/test_core.py)."""
import pytest
import torch

from mae_ast.core import mae_ast_loss


def inputs(tokens=3):
    g = torch.Generator().manual_seed(0)
    return [torch.randn(2, tokens, 4, generator=g) for _ in range(3)]


def test_a_zero_weight_leaves_its_term_out():
    recon, logits, target = inputs()
    only_nce = mae_ast_loss(recon, logits, target, reconstruction_weight=0, classification_weight=1)
    only_mse = mae_ast_loss(recon, logits, target, reconstruction_weight=1, classification_weight=0)
    assert set(only_nce) == {"loss", "loss_info_nce"} and set(only_mse) == {"loss", "loss_recon"}
    torch.testing.assert_close(only_nce["loss"], only_nce["loss_info_nce"])
    torch.testing.assert_close(only_mse["loss"], only_mse["loss_recon"])


def test_weights_below_one_still_count():
    recon, logits, target = inputs()
    both = mae_ast_loss(recon, logits, target, reconstruction_weight=0.5, classification_weight=0.25)
    torch.testing.assert_close(both["loss"], 0.5 * both["loss_recon"] + 0.25 * both["loss_info_nce"])


def test_one_valid_token_is_its_own_mean():
    recon, logits, target = inputs(2)
    valid = torch.tensor([[True, False], [False, False]])
    out = mae_ast_loss(recon, logits, target, valid)
    torch.testing.assert_close(out["loss_recon"], (recon[0, 0] - target[0, 0]).pow(2).mean())
    torch.testing.assert_close(out["loss_info_nce"], torch.tensor(0.0))  # its own patch is the only one


def test_nothing_to_learn_is_refused_saying_why():
    with pytest.raises(ValueError, match="^reconstruction_weight and classification_weight are both 0: nothing to learn$"):
        mae_ast_loss(*inputs(), reconstruction_weight=0, classification_weight=0)
