"""Continuing pre-training on one's own audio from a released checkpoint (README's command):
``checkpoint.restore_file=CKPT checkpoint.reset_optimizer=true ...`` with our exported
checkpoints and with the original release's layout, neither of which holds training state."""
import dataclasses
from types import SimpleNamespace

import pytest
import torch

from conftest import fairseq_train, tiny_model_overrides
from mae_ast.core import MAEAST, checkpoint
from mae_ast.fairseq_log import read_records

CONTINUE = ["checkpoint.reset_optimizer=true", "checkpoint.reset_dataloader=true",
            "checkpoint.reset_lr_scheduler=true", "checkpoint.reset_meters=true"]


def tiny_cfg():
    from mae_ast.core import MAEASTConfig

    return MAEASTConfig(encoder_layers=2, decoder_layers=1, encoder_embed_dim=32, decoder_embed_dim=32,
                        encoder_ffn_embed_dim=64, encoder_attention_heads=2, max_token_length=4000,
                        enc_sine_pos=True, dec_sine_pos=True, encoder_layerdrop=0.05, dropout_input=0.1)


def released_checkpoints(folder):
    """An exported checkpoint of ours and one in the original release's layout (s3prl's copy of
    the original model, its own state dict, an ``args`` entry), the same weights in both."""
    from s3prl.upstream.mae_ast.mae_ast import MAE_AST

    torch.manual_seed(11)
    cfg = tiny_cfg()
    ours = MAEAST(cfg, mask_type="chunk_mask")
    exported = folder / "exported.pt"
    checkpoint.save(exported, ours, max_sample_size=48000)
    task = {"sample_rate": 16000, "feature_dim": 128, "feature_type": "fbank", "feature_rate": 100,
            "mask_type": "chunk_mask", "max_sample_size": 48000}
    original_model = MAE_AST(SimpleNamespace(**dataclasses.asdict(cfg)), SimpleNamespace(**task))
    original_model.load_state_dict(ours.state_dict())
    original = folder / "original.pt"
    torch.save({"cfg": {"model": {"_name": "mae_ast", **dataclasses.asdict(cfg)},
                        "task": {"_name": "mae_ast_pretraining", **task}},
                "model": original_model.state_dict(), "args": None}, original)
    return {"exported": exported, "original": original}, ours.state_dict()


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["exported", "original"])
def test_continue_pretraining_from_a_released_checkpoint(layout, corpus, tmp_path):
    ckpts, weights = released_checkpoints(tmp_path)
    run = tmp_path / "continued"
    proc = fairseq_train(corpus["manifests"], run, *tiny_model_overrides(True), "task.mask_type=chunk_mask",
                         "model.enc_sine_pos=true", "model.dec_sine_pos=true",
                         "optimization.max_update=3", "lr_scheduler.warmup_updates=100",
                         f"checkpoint.restore_file={ckpts[layout]}", *CONTINUE)
    assert f"Loaded checkpoint {ckpts[layout]}" in proc.stdout + proc.stderr
    updates = [int(r["num_updates"]) for kind, r in read_records(proc.stdout) if kind == "train_inner"]
    assert updates == [1, 2, 3]  # a new run: the count starts afresh
    # it started from the released weights: after 3 small steps (lr warming up) they are near them
    trained = torch.load(run / "checkpoints" / "checkpoint_last.pt", weights_only=False)["model"]
    # (the input BatchNorm's running statistics move towards the new data at once: left out)
    diffs = {k: float((trained[k] - v).abs().max()) for k, v in weights.items()
             if v.is_floating_point() and not k.startswith("batch_norm.")}
    near = max(diffs.values())
    assert near < 0.01, sorted(diffs.items(), key=lambda kv: -kv[1])[:3]
    fresh = MAEAST(tiny_cfg()).state_dict()
    far = float((fresh["post_extract_proj.weight"] - weights["post_extract_proj.weight"]).abs().max())
    assert far > 10 * near
