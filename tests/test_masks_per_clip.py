"""task.masks_per_clip (EAT's clones): K masks of each clip from one fbank and one normalisation,
the encoder and decoder on K x B sequences, the loss their mean; per-patch normalised targets
(criterion.norm_targets) against a hand computation."""
import pytest
import torch

import mae_ast.fairseq_plugin.dataset as dataset_module
from conftest import fairseq_train, tiny_model_overrides
from mae_ast.core import mae_ast_loss
from mae_ast.core.masking import MaskPlan
from mae_ast.fairseq_log import read_records
from mae_ast.fairseq_plugin.criterion import MAEASTCriterion
from mae_ast.fairseq_plugin.model import MAEASTModel, MAEASTModelConfig
from mae_ast.fairseq_plugin.task import MAEASTPretrainingConfig, MAEASTPretrainingTask

K = 4


def tiny_cfg(**extra):
    # no dropout: two forwards of one plan must give one loss
    return MAEASTModelConfig(
        encoder_layers=1, decoder_layers=1, encoder_embed_dim=32, decoder_embed_dim=32, encoder_ffn_embed_dim=64,
        encoder_attention_heads=2, max_token_length=4000, dropout=0.0, attention_dropout=0.0, dropout_input=0.0,
        enc_sine_pos=True, dec_sine_pos=True, **extra)


def task_and_model(manifests, mask_type="chunk_mask", masks_per_clip=K):
    task = MAEASTPretrainingTask.setup_task(MAEASTPretrainingConfig(
        data=str(manifests), mask_type=mask_type, masks_per_clip=masks_per_clip, max_sample_size=48000, seed=1))
    task.load_dataset("train")
    torch.manual_seed(0)
    return task, MAEASTModel.build_model(tiny_cfg(), task).train()


def counting(monkeypatch, owner, name):
    """Count the real calls of ``owner.name`` (the function still runs)."""
    calls = []
    real = getattr(owner, name)

    def wrapper(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, wrapper)
    return calls


def rows(plan: MaskPlan, start: int, stop: int) -> MaskPlan:
    return MaskPlan(*(None if t is None else t[start:stop]
                      for t in (plan.kept_idx, plan.masked_idx, plan.kept_valid, plan.masked_valid)))


def test_k_masks_of_each_clip_from_one_fbank_and_one_normalisation(corpus, monkeypatch):
    task, model = task_and_model(corpus["manifests"])
    data = task.datasets["train"]
    fbank_calls = counting(monkeypatch, dataset_module, "fbank")
    sample = data.collater([data[i] for i in range(3)])
    normalise_calls = counting(monkeypatch, model, "normalise")
    out = model(**sample["net_input"])
    assert len(fbank_calls) == 1 and len(normalise_calls) == 1
    source = sample["net_input"]["source"]
    clips, tokens = source.size(0), model.patchify(source.unsqueeze(1)).size(1)
    masked = out["mask_plan"].masked_tokens(tokens).view(K, clips, tokens)
    assert out["logit_m_list_recon"].size(0) == K * clips
    for b in range(clips):
        assert len({tuple(masked[k, b].tolist()) for k in range(K)}) == K, f"clip {b}: the K masks differ"
    # row k * B + b is clip b: its targets are clip b's normalised patches at its masked tokens
    with torch.no_grad():
        patches = model.patchify(model.normalise(source, sample["net_input"]["padding_mask"]))
    for k in range(K):
        for b in range(clips):
            row = k * clips + b
            torch.testing.assert_close(out["target_m_list"][row], patches[b][out["mask_plan"].masked_idx[row]])
    # the criterion trains on the same road
    before = len(normalise_calls)
    loss, sample_size, log = MAEASTCriterion(task)(model, sample)
    assert len(fbank_calls) == 1 and len(normalise_calls) == before + 1 and log["nsentences"] == clips
    assert torch.isfinite(loss)


def test_batched_masks_differ_between_copies_and_are_shared_within_one(corpus):
    task, model = task_and_model(corpus["manifests"], mask_type="random_mask_batched")
    data = task.datasets["train"]
    sample = data.collater([data[i] for i in range(3)])
    out = model(**sample["net_input"])
    tokens = out["padding_mask"].size(1) if out["padding_mask"] is not None else None
    tokens = tokens or int(out["mask_plan"].kept_idx.size(1) + out["mask_plan"].masked_idx.size(1))
    masked = out["mask_plan"].masked_tokens(tokens).view(K, 3, tokens)
    assert all(torch.equal(masked[k, 0], masked[k, b]) for k in range(K) for b in range(3)), "one mask per copy"
    assert len({tuple(masked[k, 0].tolist()) for k in range(K)}) == K, "the copies differ"


def test_loss_is_the_mean_of_the_k_single_mask_losses(corpus):
    task, model = task_and_model(corpus["manifests"])
    data = task.datasets["train"]
    sample = data.collater([data[i] for i in range(3)])
    net_input = sample["net_input"]
    clips = net_input["source"].size(0)

    def loss(out):
        return mae_ast_loss(out["logit_m_list_recon"], out["logit_m_list_class"], out["target_m_list"],
                            out["target_valid"])["loss"]

    together = model(**net_input)
    plan = together["mask_plan"]
    singles = [loss(model(**net_input, masks_per_clip=1, mask_plan=rows(plan, k * clips, (k + 1) * clips)))
               for k in range(K)]
    torch.testing.assert_close(loss(together), torch.stack(singles).mean(), rtol=1e-5, atol=1e-6)
    assert len({round(s.item(), 5) for s in singles}) > 1, "the K masks pose K different problems"


def test_masks_per_clip_below_one_is_refused(corpus):
    with pytest.raises(ValueError, match="task.masks_per_clip=0"):
        MAEASTPretrainingTask.setup_task(MAEASTPretrainingConfig(data=str(corpus["manifests"]), masks_per_clip=0))


def test_norm_targets_against_a_hand_computation():
    g = torch.Generator().manual_seed(0)
    recon, logits = torch.randn(2, 3, 4, generator=g), torch.randn(2, 3, 4, generator=g)
    target = torch.randn(2, 3, 4, generator=g) * 3 + 5
    valid = torch.tensor([[True, True, False], [True, True, True]])
    out = mae_ast_loss(recon, logits, target, valid, reconstruction_weight=10, classification_weight=1,
                       norm_targets=True)
    expected, n = 0.0, 0
    for b in range(2):
        for m in range(3):
            if valid[b, m]:
                t = target[b, m].tolist()
                mean = sum(t) / 4
                std = (sum((x - mean) ** 2 for x in t) / 3 + 1e-6) ** 0.5  # unbiased, as MAE
                expected += sum((r - (x - mean) / std) ** 2 for r, x in zip(recon[b, m].tolist(), t)) / 4
                n += 1
    assert "loss_recon" not in out
    assert out["loss_recon_norm"].item() == pytest.approx(expected / n, rel=1e-5)
    # InfoNCE scores the patches as they are: the same as without norm_targets
    plain = mae_ast_loss(recon, logits, target, valid, reconstruction_weight=10, classification_weight=1)
    torch.testing.assert_close(out["loss_info_nce"], plain["loss_info_nce"])
    torch.testing.assert_close(out["loss"], 10 * out["loss_recon_norm"] + out["loss_info_nce"])


@pytest.mark.slow
def test_fairseq_run_with_four_masks_per_clip_learns(corpus, tmp_path):
    proc = fairseq_train(corpus["manifests"], tmp_path / "k4", *tiny_model_overrides(True),
                         "task.mask_type=chunk_mask", f"task.masks_per_clip={K}", "criterion.norm_targets=true",
                         "optimization.max_update=40", "lr_scheduler.warmup_updates=5", "optimization.lr=[0.001]",
                         "checkpoint.no_save=true", "dataset.disable_validation=true")
    inner = [r for kind, r in read_records(proc.stdout) if kind == "train_inner"]
    assert len(inner) == 40 and "loss_recon_norm" in inner[0]
    losses = [float(r["loss"]) for r in inner]
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < 0.8 * first, (first, last)
