"""The method's claims (shared/SPEC.md: tokens, masking, encoder, decoder, heads, fine-tuning
head; the docstrings of mae_ast/core), each checked so that the test fails if the code did
otherwise: what is true of the kept tokens is checked false of the masked ones, and the other
way round. Masks themselves: tests/test_masking.py; the loss: tests/test_core.py."""
from pathlib import Path

import pytest
import torch
import yaml

from mae_ast.core import MAEAST, MAEASTConfig, compute_mask
from mae_ast.core.classifier import MAEASTClassifier
from mae_ast.core.transformer import gather_tokens

REPO = Path(__file__).resolve().parents[1]


def tiny(**kw):
    base = dict(encoder_layers=2, decoder_layers=1, encoder_embed_dim=32, decoder_embed_dim=32,
                encoder_ffn_embed_dim=64, encoder_attention_heads=4, enc_sine_pos=True, dec_sine_pos=True,
                max_token_length=3000, dropout=0.0, attention_dropout=0.0)
    torch.manual_seed(0)
    model = MAEAST(MAEASTConfig(**{**base, **kw}), mask_type="chunk_mask").eval()
    with torch.no_grad():
        model.batch_norm.running_mean.fill_(-3.0)
        model.batch_norm.running_var.fill_(4.0)
    return model


def test_the_paper_configuration():
    """config/pretrain/mae_ast.yaml is the paper's (SPEC: encoder, decoder, masking, loss, training)."""
    cfg = yaml.safe_load((REPO / "config/pretrain/mae_ast.yaml").read_text())
    m, opt = cfg["model"], cfg["optimization"]
    assert (m["encoder_layers"], m["decoder_layers"], m["encoder_embed_dim"], m["decoder_embed_dim"],
            m["encoder_ffn_embed_dim"], m["encoder_attention_heads"]) == (12, 2, 768, 768, 3072, 12)
    assert (m["layer_norm_first"], m["dropout"], m["encoder_layerdrop"], m["random_mask_prob"]) == (False, 0.1, 0.05, 0.75)
    assert m["enc_sine_pos"] and m["dec_sine_pos"]
    assert (cfg["criterion"]["reconstruction_weight"], cfg["criterion"]["classification_weight"]) == (10, 1)
    assert (opt["lr"], opt["clip_norm"], opt["max_update"]) == ([0.0001], 10.0, 400000)
    assert cfg["optimizer"]["adam_betas"] == "(0.9,0.98)" and float(cfg["optimizer"]["adam_eps"]) == 1e-6
    assert cfg["optimizer"]["weight_decay"] == 0.01 and cfg["lr_scheduler"]["warmup_updates"] == 32000
    assert cfg["dataset"]["max_tokens"] == 8388608
    assert (cfg["task"]["feature_dim"], cfg["task"]["sample_rate"], cfg["task"]["feature_rate"]) == (128, 16000, 100)


def test_normalisation_is_batch_norm_times_half():
    model = tiny()
    x = torch.randn(2, 64, 128) * 3 - 5
    expected = (x - (-3.0)) / (4.0 + model.batch_norm.eps) ** 0.5 * 0.5  # eval: running statistics
    torch.testing.assert_close(model.normalise(x, None).squeeze(1), expected)
    model.train()  # pre-training: the batch's own statistics
    torch.testing.assert_close(model.normalise(x, None).squeeze(1), (x - x.mean()) / x.var(unbiased=False).add(1e-5).sqrt() * 0.5,
                               atol=1e-5, rtol=1e-5)


def test_tokens_are_time_major_patches():
    """token t * n_freq + f holds frames [t kt, (t+1) kt) x bins [f kc, (f+1) kc), flattened row-major."""
    model = tiny()
    frames, bins = torch.meshgrid(torch.arange(48.0), torch.arange(128.0), indexing="ij")
    spec = (frames * 1000 + bins).view(1, 1, 48, 128)
    tokens = model.patchify(spec)[0]
    assert tokens.shape == (3 * 8, 256)
    for t, f in ((0, 0), (0, 7), (1, 0), (2, 5)):
        expected = spec[0, 0, 16 * t:16 * t + 16, 16 * f:16 * f + 16].reshape(-1)
        torch.testing.assert_close(tokens[t * 8 + f], expected)


def masked_forward(model, source, plan):
    return model(source, mask=True, mask_plan=plan, features_only=True)["x"]


def test_the_encoder_sees_the_kept_tokens_only():
    model = tiny()
    source = torch.randn(1, 96, 128)
    plan = compute_mask("chunk_mask", None, 0.75, (6, 8), generator=torch.Generator().manual_seed(0))
    base = masked_forward(model, source, plan)
    t, f = divmod(int(plan.masked_idx[0, 0]), 8)
    changed = source.clone()
    changed[0, 16 * t:16 * t + 16, 16 * f:16 * f + 16] += 5.0  # a masked patch
    torch.testing.assert_close(masked_forward(model, changed, plan), base)
    t, f = divmod(int(plan.kept_idx[0, 0]), 8)
    changed = source.clone()
    changed[0, 16 * t:16 * t + 16, 16 * f:16 * f + 16] += 5.0  # a kept patch
    assert not torch.allclose(masked_forward(model, changed, plan), base)


def test_the_decoder_gets_encoder_outputs_in_place_and_the_mask_embedding_elsewhere():
    model = tiny()
    source = torch.randn(1, 96, 128)
    plan = compute_mask("chunk_mask", None, 0.75, (6, 8), generator=torch.Generator().manual_seed(1))
    seen = {}
    model.decoder.register_forward_pre_hook(lambda mod, args: seen.setdefault("input", args[0]))
    out = model(source, mask=True, mask_plan=plan)
    encoded = masked_forward(model, source, plan)
    pos = model.dec_sine_pos_embed(48)
    decoder_in = seen["input"] - pos  # sinusoidal positions are added again before the decoder
    torch.testing.assert_close(gather_tokens(decoder_in, plan.kept_idx), encoded)
    masked_in = gather_tokens(decoder_in, plan.masked_idx)
    torch.testing.assert_close(masked_in, model.decoder_mask_emb.expand_as(masked_in))
    assert out["logit_m_list_recon"].shape[1] == plan.masked_idx.shape[1], "heads on masked tokens only"


def test_targets_are_the_masked_normalised_patches():
    model = tiny()
    source = torch.randn(1, 96, 128)
    plan = compute_mask("chunk_mask", None, 0.75, (6, 8), generator=torch.Generator().manual_seed(2))
    out = model(source, mask=True, mask_plan=plan)
    patches = model.patchify(model.normalise(source, None))
    torch.testing.assert_close(out["target_m_list"], gather_tokens(patches, plan.masked_idx))


@pytest.mark.parametrize("kernel", [(16, 16), (2, 128)], ids=["patch", "frame"])
def test_the_fine_tuning_head_is_mean_layernorm_linear(kernel):
    """SSAST / MAE-AST fine-tuning: every token kept, mean over the clip's output tokens,
    LayerNorm, linear."""
    torch.manual_seed(0)
    cfg = MAEASTConfig(encoder_layers=2, encoder_embed_dim=32, decoder_embed_dim=32, encoder_ffn_embed_dim=64,
                       encoder_attention_heads=4, enc_sine_pos=True, max_token_length=3000,
                       ast_kernel_size_time=kernel[0], ast_kernel_size_chan=kernel[1],
                       ast_kernel_stride_time=kernel[0], ast_kernel_stride_chan=kernel[1])
    model = MAEASTClassifier(cfg, 3).eval()
    wav = torch.randn(24000) * 0.1
    from mae_ast.core.features import fbank
    tokens = model.backbone(fbank(wav.unsqueeze(0), 16000, 128), mask=False)["x"]  # (1, T, D)
    expected = model.head(tokens.mean(1))
    torch.testing.assert_close(model([wav]), expected, atol=1e-5, rtol=1e-5)
