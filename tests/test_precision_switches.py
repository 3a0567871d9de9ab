"""Every precision switch takes effect: the matmuls run in the dtype asked for (a forward hook on
an encoder layer's ``fc1`` records its output dtype), not only outputs that stay close.

Switches: ``MAE_AST_PRECISION=bf16`` and ``precision="bf16"`` for the s3prl upstream and
``mae_ast.hear``; ``model.autocast_dtype=bf16`` / ``fp16`` of the fairseq model; and fairseq's
``common.bf16=true`` in a real run, where the weights themselves become bf16."""
import dataclasses
import math
import sys

import numpy as np
import pytest
import torch

from conftest import REPO, fairseq_train, read_wav, tiny_model_overrides
from mae_ast import fairseq_log
from mae_ast.core import MAEAST, MAEASTConfig, checkpoint, mae_ast_loss

sys.path.insert(0, str(REPO))

SR = 16000


def tiny_cfg(**kw):
    base = dict(encoder_layers=2, decoder_layers=1, encoder_embed_dim=32, decoder_embed_dim=32,
                encoder_ffn_embed_dim=64, encoder_attention_heads=2, max_token_length=4000,
                ast_kernel_size_time=16, ast_kernel_size_chan=16, ast_kernel_stride_time=16,
                ast_kernel_stride_chan=16, dropout=0.0, attention_dropout=0.0)
    return MAEASTConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    torch.manual_seed(0)
    model = MAEAST(tiny_cfg(), 128, "chunk_mask")
    with torch.no_grad():  # input statistics of log-mel, as after training
        model.batch_norm.running_mean.fill_(-8.0)
        model.batch_norm.running_var.fill_(16.0)
    path = tmp_path_factory.mktemp("precision") / "tiny.pt"
    checkpoint.save(str(path), model, sample_rate=SR, max_sample_size=48000)
    return str(path)


@pytest.fixture(scope="module")
def wavs(speech_wavs):
    import torchaudio.functional as AF

    out = []
    for path, seconds in zip(speech_wavs[:2], (1.0, 1.7)):
        wav, rate = read_wav(path)
        out.append(AF.resample(torch.from_numpy(wav), rate, SR)[: int(seconds * SR)])
    return out


def fc1_dtypes(encoder, run):
    """The output dtypes of the first encoder layer's ``fc1`` while ``run()`` runs, and its result."""
    seen = []
    hook = encoder.layers[0].fc1.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    try:
        with torch.no_grad():
            result = run()
    finally:
        hook.remove()
    assert seen, "the encoder did not run"
    return set(seen), result


# ---- the s3prl upstream ------------------------------------------------------------------------------
def upstream(ckpt, **kw):
    from s3prl_upstream.expert import UpstreamExpert

    return UpstreamExpert(ckpt, **kw).eval()


@pytest.mark.parametrize("how", ["env", "argument"])
def test_upstream_bf16_switch_runs_the_encoder_in_bf16(tiny_ckpt, wavs, monkeypatch, how):
    monkeypatch.delenv("MAE_AST_PRECISION", raising=False)
    ref = upstream(tiny_ckpt)
    dtypes, a = fc1_dtypes(ref.model.encoder, lambda: ref(wavs))
    assert dtypes == {torch.float32}
    if how == "env":
        monkeypatch.setenv("MAE_AST_PRECISION", "bf16")
        low = upstream(tiny_ckpt)
    else:
        low = upstream(tiny_ckpt, precision="bf16")
    dtypes, b = fc1_dtypes(low.model.encoder, lambda: low(wavs))
    assert dtypes == {torch.bfloat16}
    for x, y in zip(a["hidden_states"], b["hidden_states"]):
        assert y.dtype == torch.float32 and x.shape == y.shape
        assert 0 < (y - x).norm() < 0.05 * x.norm()  # bf16 rounding, nothing else


def test_upstream_precision_argument_beats_the_environment(tiny_ckpt, wavs, monkeypatch):
    monkeypatch.setenv("MAE_AST_PRECISION", "bf16")
    up = upstream(tiny_ckpt, precision="fp32")
    assert fc1_dtypes(up.model.encoder, lambda: up(wavs))[0] == {torch.float32}


# ---- the HEAR module ---------------------------------------------------------------------------------
@pytest.mark.parametrize("how", ["env", "argument"])
def test_hear_bf16_switch_runs_the_encoder_in_bf16(tiny_ckpt, wavs, monkeypatch, how):
    from mae_ast import hear

    monkeypatch.delenv("MAE_AST_PRECISION", raising=False)
    audio = torch.stack([wavs[0], wavs[1][: len(wavs[0])]])
    ref = hear.load_model(tiny_ckpt)
    dtypes, a = fc1_dtypes(ref.model.encoder, lambda: hear.get_scene_embeddings(audio, ref))
    assert dtypes == {torch.float32}
    if how == "env":
        monkeypatch.setenv("MAE_AST_PRECISION", "bf16")
        low = hear.load_model(tiny_ckpt)
    else:
        low = hear.load_model(tiny_ckpt, precision="bf16")
    dtypes, b = fc1_dtypes(low.model.encoder, lambda: hear.get_scene_embeddings(audio, low))
    assert dtypes == {torch.bfloat16}
    assert b.dtype == torch.float32 and 0 < (b - a).norm() < 0.05 * a.norm()


# ---- the fairseq model's autocast_dtype ----------------------------------------------------------------
@pytest.mark.parametrize("dtype_name, dtype", [("bf16", torch.bfloat16), ("fp16", torch.float16)])
def test_fairseq_model_autocast_dtype_runs_the_matmuls_in_that_dtype(dtype_name, dtype):
    from mae_ast.fairseq_plugin.model import MAEASTModel, MAEASTModelConfig

    if dtype == torch.float16 and not torch.amp.autocast_mode.is_autocast_available("cpu"):
        pytest.skip("this torch has no CPU autocast")
    with torch.autocast("cpu", dtype=dtype):  # skip where CPU autocast ignores this dtype
        if torch.nn.Linear(4, 4)(torch.randn(2, 4)).dtype != dtype:
            pytest.skip(f"torch {torch.__version__} has no CPU autocast in {dtype}")
    torch.manual_seed(0)
    base = dataclasses.asdict(tiny_cfg())
    plain = MAEASTModel(MAEASTModelConfig(**base), 128, "random_mask").eval()
    fast = MAEASTModel(MAEASTModelConfig(**base, autocast_dtype=dtype_name), 128, "random_mask").eval()
    fast.load_state_dict(plain.state_dict())
    source = torch.randn(2, 160, 128) * 3 - 8
    plan = plain(source)["mask_plan"]

    def losses(model):
        seen = []
        hooks = [layer.fc1.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
                 for layer in (model.encoder.layers[0], model.decoder.layers[0])]
        out = model(source, mask_plan=plan)
        for h in hooks:
            h.remove()
        keys = ("logit_m_list_recon", "logit_m_list_class", "target_m_list")
        return set(seen), mae_ast_loss(*(out[k] for k in keys))["loss"]

    dtypes, ref = losses(plain)
    assert dtypes == {torch.float32}
    dtypes, loss = losses(fast)
    assert dtypes == {dtype}, "encoder and decoder both run under autocast"
    assert fast.post_extract_proj.weight.dtype == torch.float32, "the weights stay fp32"
    assert loss.dtype == torch.float32 and math.isfinite(loss.item())
    assert 0 < abs(loss - ref) < 0.03 * ref


# ---- fairseq's common.bf16 ----------------------------------------------------------------------------
def bf16_exact_share(state_dict):
    """Share of the nonzero floating values that bf16 holds exactly (low 16 bits of the fp32
    pattern zero). fairseq writes checkpoints in fp32 (``utils.move_to_cpu`` casts bf16 up), so
    weights that were bf16 show as fp32 values with empty low halves."""
    values = torch.cat([v.detach().float().flatten() for v in state_dict.values() if v.is_floating_point()])
    values = values[values != 0]
    return float(((values.view(torch.int32) & 0xFFFF) == 0).double().mean())


@pytest.mark.slow
def test_fairseq_common_bf16_trains_bf16_weights(corpus, tmp_path):
    """common.bf16=true in a real tiny run: the model's weights (and buffers) are bf16 while it
    trains, so every value of the checkpoint it writes is a bf16 number; a run without it
    writes fp32 weights that bf16 does not hold (after two Adam updates)."""
    share = {}
    for name, extra in [("bf16", ["common.bf16=true"]), ("fp32", [])]:
        run = tmp_path / name
        fairseq_train(corpus["manifests"], run, *tiny_model_overrides(), "optimization.max_update=2",
                      "dataset.disable_validation=true", "checkpoint.save_interval_updates=2", *extra)
        records = fairseq_log.last_per_update(fairseq_log.read_log_file(run / "hydra_train.log"), "train_inner")
        assert len(records) == 2 and all(np.isfinite(r.number("loss")) for r in records), name
        state = torch.load(run / "checkpoints" / "checkpoint_last.pt", map_location="cpu", weights_only=False)
        assert state["cfg"]["common"]["bf16"] == (name == "bf16")
        share[name] = bf16_exact_share(state["model"])
    assert share["bf16"] == 1.0, share
    assert share["fp32"] < 0.1, share
