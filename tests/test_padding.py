"""Padded pre-training batches (``task.pad_audio=true``): an example's pre-training outputs and
loss do not depend on the padding around it, and a real fairseq run trains on padded batches."""
import math

import pytest
import torch

from conftest import fairseq_train, tiny_model_overrides
from mae_ast import fairseq_log
from mae_ast.core import MAEAST, MAEASTConfig, MaskPlan, compute_mask, mae_ast_loss
from mae_ast.core.features import num_frames
from mae_ast.core.masking import num_kept
from mae_ast.manifest import Manifest

KERNELS = {"patch": (16, 16), "frame": (2, 128)}
OUTPUTS = ("logit_m_list_recon", "logit_m_list_class", "target_m_list")


def tiny_model(kind: str, mask_type: str) -> MAEAST:
    kt, kc = KERNELS[kind]
    cfg = MAEASTConfig(encoder_layers=2, decoder_layers=2, encoder_embed_dim=32, decoder_embed_dim=32,
                       encoder_ffn_embed_dim=64, encoder_attention_heads=4, max_token_length=3000,
                       ast_kernel_size_time=kt, ast_kernel_size_chan=kc, ast_kernel_stride_time=kt,
                       ast_kernel_stride_chan=kc)
    torch.manual_seed(0)
    model = MAEAST(cfg, 128, mask_type)
    with torch.no_grad():  # input statistics of log-mel, as after training
        model.batch_norm.running_mean.fill_(-8.0)
        model.batch_norm.running_var.fill_(16.0)
    return model.eval()


def example_plan(plan: MaskPlan, b: int) -> MaskPlan:
    """Example ``b``'s kept and masked tokens of a padded batch's plan, as the plan of the
    example alone (its valid slots only, in the same order)."""
    kept = plan.kept_idx[b][plan.kept_valid[b]]
    masked = plan.masked_idx[b][plan.masked_valid[b]]
    return MaskPlan(kept.unsqueeze(0), masked.unsqueeze(0))


@pytest.mark.parametrize("kind, mask_type", [("patch", "random_mask"), ("patch", "chunk_mask"),
                                             ("frame", "retain_spans")])
def test_an_example_in_a_padded_batch_equals_it_alone(kind, mask_type):
    """Eval mode, one mask plan: each example's masked-token outputs, targets and loss in a
    padded batch (the short ones padded with loud noise) are those of the example alone."""
    model = tiny_model(kind, mask_type)
    gen = torch.Generator().manual_seed(1)
    lengths = [100, 180, 131]  # frames; the longest sets the batch width
    clips = [torch.randn(1, n, 128, generator=gen) * 3 - 8 for n in lengths]
    width = max(lengths)
    batch = torch.randn(len(lengths), width, 128, generator=gen) * 50  # padding content must not matter
    padding = torch.ones(len(lengths), width, dtype=torch.bool)
    for i, (clip, n) in enumerate(zip(clips, lengths)):
        batch[i, :n] = clip[0]
        padding[i, :n] = False

    num_tokens = model.time_steps(width) * model.n_freq
    token_padding = model.token_padding(padding, num_tokens)
    plan = compute_mask(mask_type, token_padding, model.cfg.random_mask_prob, model.grid(num_tokens),
                        model.cfg.mask_length, generator=torch.Generator().manual_seed(2))
    assert plan.kept_valid is not None and plan.masked_valid is not None
    # the examples keep and mask different numbers of tokens: the batch has invalid slots
    assert not plan.kept_valid.all() and not plan.masked_valid.all()

    with torch.no_grad():
        together = model(batch, padding, mask=True, mask_plan=plan)
        assert torch.equal(together["target_valid"], plan.masked_valid)
        for i, (clip, n) in enumerate(zip(clips, lengths)):
            alone_plan = example_plan(plan, i)
            tokens_alone = model.time_steps(n) * model.n_freq
            assert int(alone_plan.kept_idx.max()) < tokens_alone and int(alone_plan.masked_idx.max()) < tokens_alone
            assert alone_plan.kept_idx.size(1) + alone_plan.masked_idx.size(1) == tokens_alone
            alone = model(clip, None, mask=True, mask_plan=alone_plan)
            valid = plan.masked_valid[i]
            for key in OUTPUTS:
                torch.testing.assert_close(together[key][i][valid].unsqueeze(0), alone[key],
                                           atol=1e-5, rtol=1e-5, msg=lambda m: f"example {i}, {key}: {m}")
            in_batch = mae_ast_loss(*(together[k][i:i + 1] for k in OUTPUTS), plan.masked_valid[i:i + 1])
            by_itself = mae_ast_loss(*(alone[k] for k in OUTPUTS))
            for key in ("loss", "loss_recon", "loss_info_nce"):
                torch.testing.assert_close(in_batch[key], by_itself[key], atol=1e-5, rtol=1e-5,
                                           msg=lambda m: f"example {i}, {key}: {m}")


# ---- a real fairseq run on padded batches -------------------------------------------------------
@pytest.mark.slow
def test_fairseq_run_with_pad_audio_trains(corpus, tmp_path):
    """task.pad_audio=true in a real tiny run: the loss is logged and finite, a checkpoint is
    written, and the batches really were padded: the masked tokens the criterion counted
    (``wpb``, one batch per update here) are those of every clip at its full length, more
    than cropping to the shortest clip would give."""
    run_dir = tmp_path / "run"
    updates = 3
    proc = fairseq_train(corpus["manifests"], run_dir, *tiny_model_overrides(),
                         f"optimization.max_update={updates}", "task.pad_audio=true",
                         "task.max_sample_size=null", "task.random_crop=false",
                         "dataset.max_tokens=4000000", "dataset.disable_validation=true")
    records = fairseq_log.last_per_update(fairseq_log.read_log_file(run_dir / "hydra_train.log"), "train_inner")
    assert [int(r.number("num_updates")) for r in records] == list(range(1, updates + 1)), proc.stdout[-3000:]
    losses = [r.number("loss") for r in records]
    assert all(loss is not None and math.isfinite(loss) for loss in losses), losses
    assert (run_dir / "checkpoints" / "checkpoint_last.pt").is_file()

    manifest = Manifest.load(str(corpus["manifests"] / "train.tsv"), 8000)  # task.min_sample_size of fairseq_train
    steps = [(num_frames(int(n)) - 16) // 16 + 1 for n in manifest.sizes]
    tokens = [s * 8 for s in steps]  # 16x16 patches: 8 per time step
    padded = sum(t - num_kept(t, 0.75) for t in tokens)
    cropped = len(tokens) * (min(tokens) - num_kept(min(tokens), 0.75))
    assert padded > cropped
    for r in records:
        assert r.number("bsz") == len(tokens), r.values  # every clip in each batch
        assert r.number("wpb") == padded, (r.values, padded, cropped)
