"""model.freeze_encoder_updates: the head trains alone for the first updates (no gradient reaches
the encoder), then the whole classifier trains; the encoder stays in training mode throughout."""
from types import SimpleNamespace

import torch
from omegaconf import OmegaConf

from mae_ast.fairseq_plugin.classifier_model import MAEASTClassifierConfig, MAEASTClassifierModel


def test_encoder_gets_gradients_only_after_the_head_warm_up():
    cfg = OmegaConf.structured(MAEASTClassifierConfig(
        num_classes=3, encoder_layers=1, encoder_embed_dim=32, encoder_ffn_embed_dim=64, encoder_attention_heads=2,
        max_token_length=4000, freeze_encoder_updates=2))
    model = MAEASTClassifierModel.build_model(cfg, SimpleNamespace(cfg=SimpleNamespace(feature_dim=128))).train()
    wavs, labels = 0.1 * torch.randn(4, 16000, generator=torch.Generator().manual_seed(0)), torch.tensor([0, 1, 2, 0])
    encoder = model.backbone.encoder.layers[0].fc1.weight
    for update, encoder_learns in ((0, False), (1, False), (2, True), (5, True)):
        model.zero_grad(set_to_none=True)
        model.set_num_updates(update)
        torch.nn.functional.cross_entropy(model(wavs), labels).backward()
        assert model.head[1].weight.grad is not None and model.head[1].weight.grad.abs().sum() > 0
        assert (encoder.grad is not None) == encoder_learns, update
        assert model.backbone.training and not model.freeze_encoder  # dropout and normalisation as in training
    model.eval()
    model.set_num_updates(0)
    assert model(wavs).shape == (4, 3)  # evaluation is never 'warming up'
