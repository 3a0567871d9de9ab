"""The fast paths give the plain paths' results: the decoder's last layer on masked tokens
only, CPU attention math and dropout, bf16 training. No timing here
(tools/bench.py measures speed)."""
import dataclasses
import random

import pytest
import torch
import torch.nn.functional as F

from mae_ast.core import MAEAST, MaskPlan, mae_ast_loss
from mae_ast.fairseq_log import read_log_file
from mae_ast.core import cpu_kernels
from mae_ast.core.cpu_kernels import dropout_attention, drop_mask
from mae_ast.core.transformer import SelfAttention, TransformerEncoder, add_dropout, dropout, gather_tokens
from test_core import FRAME, PATCH, stock_model, tiny_cfg


def plain_attention(attn, x, attend):
    """Reference: q/k/v projections and SDPA, written out."""
    b, t, c = x.shape
    h = attn.heads
    q, k, v = (proj(x).view(b, t, h, c // h).transpose(1, 2) for proj in (attn.q_proj, attn.k_proj, attn.v_proj))
    y = F.scaled_dot_product_attention(q, k, v, attn_mask=attend)
    return attn.out_proj(y.transpose(1, 2).reshape(b, t, c))


@pytest.mark.parametrize("padded", [False, True])
def test_attention_and_query_subset_match_plain(padded):
    torch.manual_seed(0)
    enc = TransformerEncoder(2, 32, 64, 4, dropout=0.0, attention_dropout=0.0).eval()
    x = torch.randn(3, 20, 32)
    padding = None
    if padded:
        padding = torch.zeros(3, 20, dtype=torch.bool)
        padding[1, 12:] = True
    attend = None if padding is None else (~padding)[:, None, None, :]
    layer = enc.layers[0]
    torch.testing.assert_close(layer.self_attn(x, attend), plain_attention(layer.self_attn, x, attend))
    full, hidden = enc(x, padding)
    idx = torch.stack([torch.randperm(12)[:7] for _ in range(3)])
    part, part_hidden = enc(x, padding, query_idx=idx)
    torch.testing.assert_close(part, gather_tokens(full, idx), atol=1e-6, rtol=1e-5)
    valid = slice(None) if padding is None else ~padding  # padded positions mean nothing
    torch.testing.assert_close(part_hidden[0][valid], hidden[0][valid])
    assert part.shape == (3, 7, 32)


def test_query_subset_with_pre_ln_and_layerdrop():
    torch.manual_seed(0)
    enc = TransformerEncoder(3, 32, 64, 4, dropout=0.0, attention_dropout=0.0, layer_norm_first=True,
                             layerdrop=0.5)
    x, idx = torch.randn(2, 10, 32), torch.randint(0, 10, (2, 4))
    for seed in range(6):  # some draws drop the last layer(s), some every layer
        enc.train()
        torch.manual_seed(seed)
        full = enc(x)[0]
        torch.manual_seed(seed)
        part = enc(x, query_idx=idx)[0]
        torch.testing.assert_close(part, gather_tokens(full, idx), atol=1e-6, rtol=1e-5)


def testdropout_attention_matches_sdpa():
    torch.manual_seed(0)
    q, k, v = torch.randn(3, 2, 4, 9, 8).unbind(0)
    attend = torch.rand(2, 1, 1, 9) > 0.3
    attend[..., 0] = True
    torch.testing.assert_close(dropout_attention(q, k, v, attend, 0.0),
                               F.scaled_dot_product_attention(q, k, v, attn_mask=attend))


def test_attention_and_residual_dropout_equal_plain_dropout_with_the_same_mask():
    torch.manual_seed(0)
    q, k, v = torch.randn(3, 2, 4, 9, 8).unbind(0)
    torch.manual_seed(1)
    got = dropout_attention(q, k, v, None, 0.2)
    torch.manual_seed(1)
    drop = drop_mask((2, 4, 9, 9), 0.2, "cpu")
    weights = (q @ k.transpose(-1, -2) / 8 ** 0.5).softmax(-1)
    torch.testing.assert_close(got, weights.masked_fill(drop, 0) / 0.8 @ v)
    residual, x = torch.randn(2, 5, 8), torch.randn(2, 5, 8)
    torch.manual_seed(2)
    got = add_dropout(residual, x, 0.3, True)
    torch.manual_seed(2)
    torch.testing.assert_close(got, residual + x.masked_fill(drop_mask((2, 5, 8), 0.3, "cpu"), 0) / 0.7)
    assert torch.equal(add_dropout(residual, x, 0.3, False), residual + x)
    # bf16 multiplies by 0/1 weights instead of masked_fill: the same mask from the same draws
    torch.manual_seed(2)
    got = add_dropout(residual.bfloat16(), x.bfloat16(), 0.3, True)
    torch.manual_seed(2)
    ref = residual.bfloat16() + x.bfloat16().masked_fill(drop_mask((2, 5, 8), 0.3, "cpu"), 0) / 0.7
    torch.testing.assert_close(got, ref)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_chunked_dropout_attention_gradients_equal_autograd(monkeypatch, dtype):
    """Several chunks of heads (the last one shorter), padding, fewer queries than keys:
    outputs and q/k/v gradients equal autograd's on the plain math with the same mask."""
    monkeypatch.setattr(cpu_kernels, "ATTENTION_CHUNK", 3 * 7 * 11)  # 3 of 2 x 4 heads per chunk
    torch.manual_seed(0)
    q = torch.randn(2, 4, 7, 8, dtype=dtype, requires_grad=True)
    k, v = (torch.randn(2, 4, 11, 8, dtype=dtype, requires_grad=True) for _ in range(2))
    attend = torch.ones(2, 1, 1, 11, dtype=torch.bool)
    attend[1, ..., 8:] = False
    grad = torch.randn(2, 4, 7, 8, dtype=dtype)
    torch.manual_seed(1)
    got = dropout_attention(q, k, v, attend, 0.2)
    got_grads = torch.autograd.grad(got, (q, k, v), grad)
    torch.manual_seed(1)
    drop = drop_mask((2, 4, 7, 11), 0.2, "cpu")
    scores = (q @ k.transpose(-1, -2) / 8 ** 0.5).masked_fill(~attend, float("-inf"))
    ref = scores.softmax(-1).masked_fill(drop, 0) / 0.8 @ v
    ref_grads = torch.autograd.grad(ref, (q, k, v), grad)
    tol = {} if dtype == torch.float32 else dict(atol=2e-2, rtol=2e-2)
    torch.testing.assert_close(got, ref, **tol)
    for g, r in zip(got_grads, ref_grads):
        torch.testing.assert_close(g, r, **tol)
    assert got_grads[1][1, :, 8:].abs().max() == 0, "padded keys get no gradient"


def test_cpu_dropout_distribution_gradient_and_seed():
    x = torch.randn(200, 500, requires_grad=True)
    torch.manual_seed(3)
    y = dropout(x, 0.1, True)
    dropped = y == 0
    assert abs(dropped.float().mean().item() - 0.1) < 0.005
    torch.testing.assert_close(y[~dropped], x[~dropped] / 0.9)
    y.sum().backward()
    torch.testing.assert_close(x.grad, (~dropped).float() / 0.9)
    torch.manual_seed(3)
    assert torch.equal(dropout(x, 0.1, True), y), "torch.manual_seed makes dropout reproducible"
    assert dropout(x, 0.1, False) is x and dropout(x, 0.0, True) is x
    assert drop_mask((7, 3), 0.5, "cpu").shape == (7, 3)  # sizes not a multiple of 4


@pytest.mark.parametrize("kernel", [PATCH, FRAME], ids=["patch", "frame"])
def test_training_step_gradients_match_original(kernel):
    """Training mode (dropout off so both are deterministic), same weights and mask: the loss
    and every parameter's gradient equal the original model's."""
    torch.manual_seed(0)
    cfg = tiny_cfg(kernel, dropout=0.0, attention_dropout=0.0)
    stock, ours = stock_model(cfg).train(), MAEAST(cfg).train()
    ours.load_state_dict(stock.state_dict())
    source = torch.randn(2, 96, 128)
    tokens = ours.grid((96 // kernel["ast_kernel_size_time"]) * ours.n_freq)
    tokens = tokens[0] * tokens[1]
    keep = int(0.25 * tokens)
    random.seed(5)
    order = list(range(tokens))
    random.shuffle(order)
    random.seed(5)
    ref = stock(source, padding_mask=torch.zeros(2, 96, dtype=torch.bool), mask=True)
    dots = ref["logit_m_list_class"] @ ref["target_m_list"].transpose(-1, -2)
    ref_loss = (10 * F.mse_loss(ref["logit_m_list_recon"], ref["target_m_list"])
                - torch.diagonal(dots.log_softmax(-1), dim1=-2, dim2=-1).mean())
    ref_loss.backward()
    plan = MaskPlan(torch.tensor(order[:keep]).expand(2, -1), torch.tensor(sorted(order[keep:])).expand(2, -1))
    out = ours(source, mask=True, mask_plan=plan)
    loss = mae_ast_loss(out["logit_m_list_recon"], out["logit_m_list_class"], out["target_m_list"])["loss"]
    loss.backward()
    torch.testing.assert_close(loss, ref_loss, atol=1e-5, rtol=1e-5)
    theirs = dict(stock.named_parameters())
    for name, p in ours.named_parameters():
        # parameters that never reach the loss have no gradient here and zero or none there
        mine = p.grad if p.grad is not None else torch.zeros_like(p)
        ref = theirs[name].grad if theirs[name].grad is not None else torch.zeros_like(p)
        torch.testing.assert_close(mine, ref, atol=1e-5, rtol=1e-4, msg=name)


def test_only_masked_decode_matches_full_decode():
    torch.manual_seed(0)
    model = MAEAST(tiny_cfg(), mask_type="chunk_mask").eval()
    source = torch.randn(2, 160, 128)
    out = model(source)
    plan = out["mask_plan"]
    enc = model(source, mask_plan=plan, features_only=True)["x"]
    full = model.decode(enc, plan, None, 10 * 8)
    torch.testing.assert_close(model.final_proj_reconstruction(gather_tokens(full, plan.masked_idx)),
                               out["logit_m_list_recon"], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("mode", ["autocast", "pure"])
def test_bf16_step_close_to_fp32(mode):
    torch.manual_seed(0)
    model = MAEAST(tiny_cfg(dropout=0.0, attention_dropout=0.0), mask_type="random_mask")
    source = torch.randn(2, 160, 128)
    plan = model(source)["mask_plan"]

    def loss_and_grad(m, src, autocast):
        m.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            out = m(src, mask_plan=plan)
        loss = mae_ast_loss(out["logit_m_list_recon"], out["logit_m_list_class"], out["target_m_list"])["loss"]
        loss.backward()
        return loss.float(), m.post_extract_proj.weight.grad.float()

    ref_loss, ref_grad = loss_and_grad(model, source, False)
    if mode == "pure":  # what fairseq's common.bf16=true runs
        loss, grad = loss_and_grad(model.to(torch.bfloat16), source.bfloat16(), False)
    else:
        loss, grad = loss_and_grad(model, source, True)
    assert abs(loss - ref_loss) < 0.03 * ref_loss
    assert (grad - ref_grad).norm() < 0.1 * ref_grad.norm()


def test_fairseq_autocast_dtype_config():
    pytest.importorskip("fairseq")
    from mae_ast.fairseq_plugin.model import MAEASTModel, MAEASTModelConfig

    torch.manual_seed(0)
    base = dataclasses.asdict(tiny_cfg(dropout=0.0, attention_dropout=0.0))
    plain = MAEASTModel(MAEASTModelConfig(**base), 128, "random_mask")
    fast = MAEASTModel(MAEASTModelConfig(**base, autocast_dtype="bf16"), 128, "random_mask")
    fast.load_state_dict(plain.state_dict())
    source = torch.randn(2, 160, 128)
    plan = plain(source)["mask_plan"]
    a, b = plain(source, mask_plan=plan), fast(source, mask_plan=plan)
    assert a["logit_m_list_recon"].dtype == torch.float32 and b["logit_m_list_recon"].dtype == torch.bfloat16
    torch.testing.assert_close(b["logit_m_list_recon"].float(), a["logit_m_list_recon"], atol=0.05, rtol=0.05)
    assert fast.post_extract_proj.weight.dtype == torch.float32


def _train_losses(run_dir):
    return [r.number("loss") for r in read_log_file(run_dir / "hydra_train.log") if r.kind == "train_inner"]


@pytest.mark.slow
def test_fairseq_bf16_training_follows_fp32(corpus, tmp_path):
    """A short tiny CPU run with fairseq's common.bf16=true (bf16 weights and activations,
    fp32 master weights) and one with model.autocast_dtype=bf16: their smoothed loss curves
    stay within 2 % of fp32's (200 steps: within 0.25 %, docs/performance.md)."""
    from conftest import fairseq_train, tiny_model_overrides

    steps = 60
    common = [*tiny_model_overrides(True), f"optimization.max_update={steps}", "task.mask_type=chunk_mask",
              "lr_scheduler.warmup_updates=10", "optimization.lr=[0.0005]", "checkpoint.no_save=true"]
    curves = {}
    for name, extra in [("fp32", []), ("bf16", ["common.bf16=true"]), ("autocast", ["model.autocast_dtype=bf16"])]:
        fairseq_train(corpus["manifests"], tmp_path / name, *common, *extra)
        curves[name] = torch.tensor(_train_losses(tmp_path / name))
        assert len(curves[name]) == steps, name
    smooth = lambda c: F.avg_pool1d(c.view(1, 1, -1), 10, 1).flatten()  # noqa: E731
    ref = smooth(curves["fp32"])
    assert ref[-1] < 0.8 * ref[0], "the run must learn for the comparison to mean something"
    for name in ("bf16", "autocast"):
        rel = (smooth(curves[name]) - ref).abs() / ref
        assert rel.max() < 0.02, (name, rel.max().item())


def test_private_softmax_ops_keep_their_meaning():
    """cpu_kernels writes softmax and its gradient with ``torch.ops.aten._softmax.out`` and
    ``_softmax_backward_data.out`` (private; checked on torch 2.8.0): same values as the
    public softmax and its autograd gradient, written into the given buffer."""
    torch.manual_seed(0)
    for dtype in (torch.float32, torch.bfloat16):
        x = torch.randn(3, 5, 7, dtype=dtype, requires_grad=True)
        grad = torch.randn(3, 5, 7, dtype=dtype)
        ref = x.softmax(-1)
        (ref_grad,) = torch.autograd.grad(ref, x, grad)
        out = torch.empty(3, 5, 7, dtype=dtype)
        got = torch.ops.aten._softmax.out(x.detach(), -1, False, out=out)
        assert got.data_ptr() == out.data_ptr()
        torch.testing.assert_close(out, ref.detach())
        grad_in = torch.empty_like(out)
        torch.ops.aten._softmax_backward_data.out(grad, out, -1, dtype, grad_input=grad_in)
        torch.testing.assert_close(grad_in, ref_grad)


def _dropout_step(model, source, plan, seed):
    model.zero_grad()
    torch.manual_seed(seed)
    out = model(source, mask_plan=plan)
    loss = mae_ast_loss(out["logit_m_list_recon"], out["logit_m_list_class"], out["target_m_list"])["loss"]
    loss.backward()
    return loss.item(), torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])


def test_training_with_dropout_on_both_paths():
    """The switch: with the CPU kernels off, training takes torch's plain path (F.dropout, SDPA
    with dropout_p: what a GPU runs). Both paths drop (the loss moves away from the loss without
    dropout), are reproducible under torch.manual_seed, and draw different masks (so the switch
    switched); without dropout they agree exactly."""
    torch.manual_seed(0)
    model = MAEAST(tiny_cfg(dropout=0.1, attention_dropout=0.1), mask_type="random_mask").train()
    source = torch.randn(2, 160, 128)
    plan = model(source)["mask_plan"]
    results = {}
    for on in (True, False):
        with cpu_kernels.enabled(on):
            first, grads = _dropout_step(model, source, plan, seed=1)
            again, grads_again = _dropout_step(model, source, plan, seed=1)
            assert first == again and torch.equal(grads, grads_again)
            assert torch.isfinite(grads).all()
            results[on] = first
    for module in model.modules():  # every dropout off
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
        elif isinstance(module, SelfAttention):
            module.dropout = 0.0
    without = {}
    for on in (True, False):
        with cpu_kernels.enabled(on):
            without[on] = _dropout_step(model, source, plan, seed=1)[0]
    assert without[True] == without[False]
    assert results[True] != results[False], "the two paths draw different masks"
    for on in (True, False):
        assert abs(results[on] - without[on]) > 1e-4, "dropout had no effect"


@pytest.mark.slow
def test_fairseq_training_on_the_plain_gpu_path(corpus, tmp_path, monkeypatch):
    """The code a GPU runs (F.dropout, SDPA with dropout_p), end to end on a CPU:
    MAE_AST_CPU_KERNELS=0 reaches fairseq-hydra-train's process (its dropout masks differ, so
    the losses do), and it learns as the CPU kernels do: the smoothed curves stay within 3 %.
    (fairseq's common.fp16 needs CUDA in fairseq 0.12, FP16Optimizer; common.bf16 runs the
    same optimizer code on a CPU: test_fairseq_bf16_training_follows_fp32.)"""
    from conftest import fairseq_train, tiny_model_overrides

    steps = 40
    common = [*tiny_model_overrides(True), f"optimization.max_update={steps}", "task.mask_type=chunk_mask",
              "lr_scheduler.warmup_updates=10", "optimization.lr=[0.0005]", "checkpoint.no_save=true"]
    curves = {}
    for name, switch in (("kernels", "1"), ("plain", "0")):
        monkeypatch.setenv("MAE_AST_CPU_KERNELS", switch)
        fairseq_train(corpus["manifests"], tmp_path / name, *common)
        curves[name] = torch.tensor(_train_losses(tmp_path / name))
        assert len(curves[name]) == steps and torch.isfinite(curves[name]).all(), name
    assert not torch.equal(curves["kernels"], curves["plain"]), "the switch did not reach the run"
    smooth = lambda c: F.avg_pool1d(c.view(1, 1, -1), 10, 1).flatten()  # noqa: E731
    ref, plain = smooth(curves["kernels"]), smooth(curves["plain"])
    assert plain[-1] < 0.8 * plain[0], "the plain path learns"
    assert ((plain - ref).abs() / ref).max() < 0.03
