"""The plain-torch core: masking, model, loss, and interchange with the original model."""
import dataclasses
import random
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch

from mae_ast.core import MAEAST, MAEASTConfig, MaskPlan, compute_mask, mae_ast_loss

PATCH = dict(ast_kernel_size_time=16, ast_kernel_size_chan=16, ast_kernel_stride_time=16, ast_kernel_stride_chan=16)
FRAME = dict(ast_kernel_size_time=2, ast_kernel_size_chan=128, ast_kernel_stride_time=2, ast_kernel_stride_chan=128)


def tiny_cfg(kernel=PATCH, **kw):
    base = dict(encoder_layers=2, decoder_layers=1, encoder_embed_dim=32, decoder_embed_dim=32,
                encoder_ffn_embed_dim=64, encoder_attention_heads=4, enc_sine_pos=True,
                dec_sine_pos=True, max_token_length=3000)
    return MAEASTConfig(**{**base, **kernel, **kw})


# ---- masking -----------------------------------------------------------------------------------
@pytest.mark.parametrize("mask_type", ["random_mask", "random_mask_batched", "chunk_mask"])
def test_exact_masked_share_and_shapes(mask_type):
    grid, batch = (40, 8), 6
    plan = compute_mask(mask_type, None, 0.75, grid, batch_size=batch)
    tokens = grid[0] * grid[1]
    keep = int(0.25 * tokens)
    assert plan.kept_idx.shape == (batch, keep) and plan.masked_idx.shape == (batch, tokens - keep)
    both = torch.cat([plan.kept_idx, plan.masked_idx], 1).sort(1).values
    assert torch.equal(both, torch.arange(tokens).expand(batch, -1)), "kept and masked must partition"
    differs = [not torch.equal(plan.kept_idx[0].sort().values, plan.kept_idx[i].sort().values) for i in range(1, batch)]
    assert all(differs) if mask_type != "random_mask_batched" else not any(differs)


@pytest.mark.parametrize("prob, lo, hi", [(1.45, 0.72, 0.80), (0.74, 0.48, 0.56)])
def test_retain_spans_share_follows_paper(prob, lo, hi):
    torch.manual_seed(0)
    plan = compute_mask("retain_spans", None, prob, (500, 1), mask_length=10, batch_size=64)
    masked = plan.masked_tokens(500)
    assert lo < masked.float().mean().item() < hi
    # masked tokens come in runs of at least the span length (except at the end)
    runs = torch.diff(masked[0].int()).ne(0).sum()
    assert runs < 0.2 * 500
    assert masked.float().mean(1).std() > 0, "each example draws its own spans"


def test_chunk_masks_are_chunky():
    """Masked tokens of chunk masks cluster: neighbours are masked far more often than at random."""
    torch.manual_seed(0)
    grid = (60, 8)

    def neighbour_agreement(mask_type):
        m = compute_mask(mask_type, None, 0.5, grid, batch_size=32).masked_tokens(480).view(32, *grid)
        return (m[:, 1:, :] == m[:, :-1, :]).float().mean().item()

    assert neighbour_agreement("chunk_mask") > neighbour_agreement("random_mask") + 0.15


@pytest.mark.parametrize("mask_type", ["random_mask", "chunk_mask", "retain_spans", "random_mask_batched"])
def test_padding_is_never_kept_or_masked(mask_type):
    grid = (30, 8) if mask_type == "chunk_mask" else (240, 1)
    padding = torch.zeros(4, 240, dtype=torch.bool)
    padding[1, 100:] = True
    padding[2, 8:] = True
    plan = compute_mask(mask_type, padding, 0.75, grid)
    kept = torch.zeros_like(padding).scatter(1, plan.kept_idx, plan.kept_valid)
    masked = plan.masked_tokens(240)
    assert not (kept & padding).any() and not (masked & padding).any()
    assert torch.equal(kept | masked, ~padding), "every valid token is kept or masked"
    assert kept.sum(1).min() >= 1
    if mask_type != "retain_spans":
        assert kept[1].sum() == int(0.25 * 100)


# ---- model -------------------------------------------------------------------------------------
@pytest.mark.parametrize("kernel", [PATCH, FRAME], ids=["patch", "frame"])
def test_forward_backward(kernel):
    torch.manual_seed(0)
    model = MAEAST(tiny_cfg(kernel), mask_type="chunk_mask" if kernel is PATCH else "random_mask")
    source = torch.randn(3, 203, 128)  # 203 frames: a partial patch at the end is dropped
    out = model(source)
    n_time = 203 // kernel["ast_kernel_size_time"]
    tokens = n_time * model.n_freq
    masked = tokens - int(0.25 * tokens)
    patch = kernel["ast_kernel_size_time"] * kernel["ast_kernel_size_chan"]
    assert out["logit_m_list_recon"].shape == (3, masked, patch)
    assert out["target_m_list"].shape == (3, masked, patch)
    loss = mae_ast_loss(out["logit_m_list_recon"], out["logit_m_list_class"], out["target_m_list"])["loss"]
    loss.backward()
    trained = [n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0]
    untouched = {n for n, p in model.named_parameters()} - set(trained)
    # the original's encoder_mask_emb and feature LayerNorm never reach the loss
    assert untouched == {"encoder_mask_emb", "layer_norm.weight", "layer_norm.bias"}
    feats = model(source, mask=False)
    assert len(feats["hidden_states"]) == 2 and feats["x"].shape == (3, tokens, 32)


def test_batch_padding_does_not_change_an_example():
    torch.manual_seed(0)
    model = MAEAST(tiny_cfg()).eval()
    short = torch.randn(1, 100, 128)
    alone = model(short, mask=False)["x"]
    batch = torch.randn(2, 180, 128) * 5  # padding content must not matter
    batch[0, :100] = short[0]
    padding = torch.zeros(2, 180, dtype=torch.bool)
    padding[0, 100:] = True
    together = model(batch, padding, mask=False)
    valid = (~together["padding_mask"][0]).sum()
    assert valid == alone.size(1) == (100 // 16) * 8
    torch.testing.assert_close(together["x"][0, :valid], alone[0], atol=1e-5, rtol=1e-5)


def test_training_batch_norm_ignores_padding():
    model = MAEAST(tiny_cfg()).train()
    x = torch.randn(2, 64, 128)
    padding = torch.zeros(2, 64, dtype=torch.bool)
    padding[1, 32:] = True
    a = model.normalise(x, padding)
    x2 = x.clone()
    x2[1, 32:] = 1e3
    b = model.normalise(x2, padding)
    torch.testing.assert_close(a[0], b[0])
    torch.testing.assert_close(a[1, :, :32], b[1, :, :32])


# ---- loss --------------------------------------------------------------------------------------
def test_loss_against_hand_computation():
    torch.manual_seed(0)
    recon, logits, target = torch.randn(2, 3, 4), torch.randn(2, 3, 4), torch.randn(2, 3, 4)
    out = mae_ast_loss(recon, logits, target, reconstruction_weight=10, classification_weight=1)
    mse = sum((recon[b, i, k] - target[b, i, k]) ** 2 for b in range(2) for i in range(3) for k in range(4)) / 24
    nce = 0.0
    for b in range(2):
        for i in range(3):
            scores = [sum(logits[b, i, k] * target[b, j, k] for k in range(4)) for j in range(3)]
            nce -= scores[i] - torch.logsumexp(torch.stack(scores), 0)
    nce = nce / 6
    torch.testing.assert_close(out["loss_recon"], mse)
    torch.testing.assert_close(out["loss_info_nce"], nce)
    torch.testing.assert_close(out["loss"], 10 * mse + nce)


def test_loss_ignores_invalid_slots():
    recon, logits, target = torch.randn(1, 4, 3), torch.randn(1, 4, 3), torch.randn(1, 4, 3)
    valid = torch.tensor([[True, True, False, False]])
    out = mae_ast_loss(recon, logits, target, valid)
    ref = mae_ast_loss(recon[:, :2], logits[:, :2], target[:, :2])
    for key in ("loss", "loss_recon", "loss_info_nce"):
        torch.testing.assert_close(out[key], ref[key])


# ---- interchange with the original model (the copy inside s3prl) --------------------------------
def stock_model(cfg, mask_type="random_mask_batched"):
    from s3prl.upstream.mae_ast.mae_ast import MAE_AST

    task = SimpleNamespace(feature_dim=128, mask_type=mask_type, feature_type="fbank")
    return MAE_AST(SimpleNamespace(**dataclasses.asdict(cfg)), task)


@pytest.mark.parametrize("kernel", [PATCH, FRAME], ids=["patch", "frame"])
def test_state_dicts_interchange_and_outputs_match(kernel):
    torch.manual_seed(0)
    cfg = tiny_cfg(kernel)
    stock, ours = stock_model(cfg).eval(), MAEAST(cfg).eval()
    ours.load_state_dict(stock.state_dict(), strict=True)
    stock.load_state_dict(ours.state_dict(), strict=True)
    source = torch.randn(2, 160, 128)
    with torch.no_grad():
        ref = stock(source, padding_mask=torch.zeros(2, 160, dtype=torch.bool), mask=False, features_only=True)
        got = ours(source, mask=False)
    assert len(ref["hidden_states"]) == len(got["hidden_states"])
    for a, b in zip(ref["hidden_states"], got["hidden_states"]):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_pretraining_forward_and_loss_match_original():
    """Same weights, same (batched) mask: the original's masked outputs, targets and loss."""
    torch.manual_seed(0)
    cfg = tiny_cfg(dropout=0.0, attention_dropout=0.0)
    stock, ours = stock_model(cfg), MAEAST(cfg)
    ours.load_state_dict(stock.state_dict())
    stock.eval(), ours.eval()
    source = torch.randn(2, 96, 128)
    tokens, keep = 6 * 8, int(0.25 * 48)
    random.seed(5)
    order = list(range(tokens))
    random.shuffle(order)  # what the original draws for random_mask_batched
    random.seed(5)
    with torch.no_grad():
        ref = stock(source, padding_mask=torch.zeros(2, 96, dtype=torch.bool), mask=True)
        kept = torch.tensor(order[:keep]).expand(2, -1)
        masked = torch.tensor(sorted(order[keep:])).expand(2, -1)  # the original's order
        got = ours(source, mask=True, mask_plan=MaskPlan(kept, masked))
    for key in ("logit_m_list_recon", "logit_m_list_class", "target_m_list"):
        torch.testing.assert_close(got[key], ref[key], atol=1e-5, rtol=1e-5)
    # the original criterion's formula
    all_dots = ref["logit_m_list_class"] @ ref["target_m_list"].transpose(-1, -2)
    nce = -torch.diagonal(all_dots.log_softmax(-1), dim1=-2, dim2=-1).mean()
    mse = torch.nn.functional.mse_loss(ref["logit_m_list_recon"], ref["target_m_list"])
    losses = mae_ast_loss(got["logit_m_list_recon"], got["logit_m_list_class"], got["target_m_list"])
    torch.testing.assert_close(losses["loss"], 10 * mse + nce, atol=1e-4, rtol=1e-5)


def test_core_imports_without_fairseq_or_s3prl():
    code = ("import sys; sys.modules['fairseq'] = None; sys.modules['s3prl'] = None\n"
            "import mae_ast, mae_ast.core, torch\n"
            "m = mae_ast.core.MAEAST(mae_ast.core.MAEASTConfig(encoder_layers=1, decoder_layers=1))\n"
            "print(m(torch.randn(1, 64, 128), mask=False)['x'].shape)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "torch.Size([1, 32, 768])" in out.stdout


def test_compatibility_fields(caplog):
    """The original's fields: values we do not implement are refused naming the field; values
    that change nothing are accepted with a warning; the defaults say nothing."""
    import logging

    with caplog.at_level(logging.WARNING):
        MAEAST(tiny_cfg())
    assert not caplog.records
    for name, value in (("mask_selection", "normal"), ("no_mask_overlap", True), ("enc_conv_pos", True)):
        with pytest.raises(ValueError, match=f"model.{name}="):
            MAEAST(tiny_cfg(**{name: value}))
    with caplog.at_level(logging.WARNING):
        MAEAST(tiny_cfg(feature_grad_mult=0.1, conv_pos=64))
    messages = " ".join(r.getMessage() for r in caplog.records)
    assert "model.feature_grad_mult=0.1 changes nothing" in messages and "model.conv_pos=64" in messages


# ---- fine-tuning's model.pretrained_checkpoint ------------------------------------------------
def _pretraining_checkpoint(path, cfg, task=None, name="mae_ast"):
    torch.manual_seed(1)
    model = MAEAST(cfg)
    torch.save({"cfg": {"model": {**dataclasses.asdict(cfg), "_name": name},
                        "task": {"feature_dim": 128} if task is None else task},
                "model": model.state_dict()}, path)
    return model


def test_encoder_weights_load_and_settings_shapes_cannot_tell_are_refused(tmp_path):
    from mae_ast.core.checkpoint import CheckpointError, load_encoder_weights
    from mae_ast.core.classifier import MAEASTClassifier

    good = str(tmp_path / "good.pt")
    pretrained = _pretraining_checkpoint(good, tiny_cfg(PATCH), task={})  # no feature_dim: 128
    classifier = MAEASTClassifier(tiny_cfg(PATCH), 3)
    assert load_encoder_weights(classifier.backbone, good) == {}
    for key, value in classifier.backbone.state_dict().items():
        assert torch.equal(value, pretrained.state_dict()[key]), key

    heads = str(tmp_path / "heads.pt")  # 2 heads of 16 or 4 of 8: the same shapes
    _pretraining_checkpoint(heads, tiny_cfg(PATCH, encoder_attention_heads=2))
    with pytest.raises(CheckpointError) as e:
        load_encoder_weights(MAEASTClassifier(tiny_cfg(PATCH), 3).backbone, heads)
    assert str(e.value) == (f"{heads}: checkpoint does not match the model:\n"
                            "  - model.encoder_attention_heads: checkpoint 2, model 4")

    frame = str(tmp_path / "frame.pt")
    _pretraining_checkpoint(frame, tiny_cfg(FRAME))
    with pytest.raises(CheckpointError) as e:
        load_encoder_weights(MAEASTClassifier(tiny_cfg(PATCH), 3).backbone, frame)
    assert str(e.value).startswith(f"{frame}: checkpoint does not match the model (a 2x128 checkpoint into a "
                                   "16x16 model: patch vs frame?):\n  - model.ast_kernel_size_time: checkpoint 2, "
                                   "model 16\n  - model.ast_kernel_size_chan: checkpoint 128, model 16\n")

    mels = str(tmp_path / "mels.pt")
    _pretraining_checkpoint(mels, tiny_cfg(PATCH), task={"feature_dim": 80})
    with pytest.raises(CheckpointError) as e:
        load_encoder_weights(MAEASTClassifier(tiny_cfg(PATCH), 3).backbone, mels)
    assert str(e.value) == f"{mels}: task.feature_dim: checkpoint 80, model 128"

    fine_tuned = str(tmp_path / "classifier.pt")
    _pretraining_checkpoint(fine_tuned, tiny_cfg(PATCH), name="mae_ast_classifier")
    with pytest.raises(CheckpointError, match="a fine-tuned classifier, not a pre-training checkpoint"):
        load_encoder_weights(MAEASTClassifier(tiny_cfg(PATCH), 3).backbone, fine_tuned)
