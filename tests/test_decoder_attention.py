"""The decoder's attention options (model.decoder_attention: global, local, multi_window).

Each option's windowed attention is checked against a dense reference: an explicit masked
softmax whose mask is computed here from the documented rule (window boundaries listed
explicitly), not from the implementation's padding arithmetic. Also: which tokens a token
depends on (the Jacobian), clips alone vs in a padded batch, checkpoints' keys, and real
fairseq runs whose loss falls."""
import math
import re
from bisect import bisect_right

import pytest
import torch
import yaml

from conftest import REPO
from mae_ast.core import MAEAST, MAEASTConfig, checkpoint, cpu_kernels
from mae_ast.core.masking import MaskPlan, compute_mask
from mae_ast.core.transformer import SelfAttention, TransformerEncoder, window_layout

DIM, HEADS = 16, 4


# ---- the reference: which keys each query may attend, from the documented rule ---------------
def window_ids(n: int, w: int, s: int) -> torch.Tensor:
    """Window index of each of ``n`` positions: windows of ``w`` laid from position 0, their
    boundaries at s, s + w, s + 2w, ... (shift s > 0: the first window is s long) or at
    w, 2w, ... (s = 0); the last window ends at the axis' end, however long it is."""
    starts = [0] + list(range(s or w, n, w))
    return torch.tensor([bisect_right(starts, i) - 1 for i in range(n)])


def expected_masks(kind, grid, layer, window=(4, 4), shift="time", head_windows=()) -> torch.Tensor:
    """(HEADS, T, T) bool: True where query i may attend key j (padding aside)."""
    nt, nf = grid
    t, f = torch.arange(nt * nf) // nf, torch.arange(nt * nf) % nf
    same = lambda ids: ids[:, None] == ids[None, :]  # noqa: E731
    if kind == "global":
        return torch.ones(HEADS, nt * nf, nt * nf, dtype=torch.bool)
    if kind == "local":
        odd = layer % 2 == 1
        wt, wf = window
        st = wt // 2 if odd and shift in ("time", "both") else 0
        if wf >= nf:  # the whole frequency axis, unshifted
            wf, sf = nf, 0
        else:
            sf = wf // 2 if odd and shift == "both" else 0
        return (same(window_ids(nt, wt, st)[t]) & same(window_ids(nf, wf, sf)[f])).expand(HEADS, -1, -1)
    position = torch.arange(nt * nf)  # multi_window: the flattened time-major sequence
    return torch.stack([same(position // w) if w else torch.ones(nt * nf, nt * nf, dtype=torch.bool)
                        for w in head_windows])


def dense_reference(attn: SelfAttention, x, masks, valid=None) -> torch.Tensor:
    """softmax(q k^T / sqrt(d)) v with the keys outside ``masks`` (H, T, T) or in padding
    (valid (B, T) False) left out, then out_proj: (B, T, C)."""
    b, t, c = x.shape
    d = c // attn.heads
    q, k, v = (proj(x).view(b, t, attn.heads, d).transpose(1, 2) for proj in (attn.q_proj, attn.k_proj, attn.v_proj))
    allowed = masks[None] if valid is None else masks[None] & valid[:, None, None, :]
    weights = (q @ k.transpose(-1, -2) / math.sqrt(d)).masked_fill(~allowed, float("-inf")).softmax(-1)
    return attn.out_proj((weights @ v).transpose(1, 2).reshape(b, t, c))


def attention_layer(kind, n_freq, layer, seed=0, **options) -> SelfAttention:
    windows = window_layout(kind, 2, HEADS, n_freq, **options)[layer]
    torch.manual_seed(seed)
    return SelfAttention(DIM, HEADS, 0.0, windows).double().eval()


# (kind, grid, layer, options): divisible and not, shifted in time or both, frame grids (one
# frequency column), windows longer than the clip, head windows longer than the sequence and
# heads of one size that are not neighbours
CASES = {
    "local-audiomae-edge": ("local", (7, 8), 0, dict(window=(4, 4), shift_axes="time")),
    "local-audiomae-edge-shifted": ("local", (7, 8), 1, dict(window=(4, 4), shift_axes="time")),
    "local-both-shifted-edges": ("local", (5, 3), 1, dict(window=(2, 2), shift_axes="both")),
    "local-both-shifted-divisible": ("local", (6, 8), 1, dict(window=(4, 4), shift_axes="both")),
    "local-odd-window-shifted": ("local", (11, 8), 1, dict(window=(5, 3), shift_axes="both")),
    "local-unshifted": ("local", (7, 8), 1, dict(window=(4, 4), shift_axes="none")),
    "local-frame": ("local", (9, 1), 1, dict(window=(4, 4), shift_axes="both")),
    "local-window-longer-than-clip": ("local", (3, 8), 1, dict(window=(4, 4), shift_axes="time")),
    "multi-window": ("multi_window", (7, 3), 0, dict(head_windows=(2, 5, 0, 25))),
    "multi-window-scattered-heads": ("multi_window", (7, 3), 1, dict(head_windows=(3, 0, 3, 0))),
}


def case_masks(kind, grid, layer, options):
    opts = dict(options)
    if "shift_axes" in opts:
        opts["shift"] = opts.pop("shift_axes")
    return expected_masks(kind, grid, layer, **opts)


@pytest.mark.parametrize("name", list(CASES))
def test_windowed_attention_equals_the_dense_masked_reference(name):
    """Without padding, with padding (a clip shorter by whole time steps, as the model pads),
    and with ``query_idx`` (the decoder's last layer computes the masked tokens only)."""
    kind, grid, layer, options = CASES[name]
    attn = attention_layer(kind, grid[1], layer, **options)
    masks = case_masks(kind, grid, layer, options)
    t = grid[0] * grid[1]
    x = torch.randn(2, t, DIM, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(attn(x, None, grid=grid), dense_reference(attn, x, masks), rtol=1e-10, atol=1e-10)
        valid = torch.ones(2, t, dtype=torch.bool)
        valid[1, (grid[0] - 2) * grid[1]:] = False  # clip 1 is two time steps shorter
        got = attn(x, valid[:, None, None, :], grid=grid)
        ref = dense_reference(attn, x, masks, valid)
        torch.testing.assert_close(got[valid], ref[valid], rtol=1e-10, atol=1e-10)
        assert torch.isfinite(got).all(), "padding queries must not turn into NaN"
        query_idx = torch.stack([torch.randperm(int(v.sum()))[:5] for v in valid])
        got_q = attn(x, valid[:, None, None, :], query_idx=query_idx, grid=grid)
        torch.testing.assert_close(got_q, ref.gather(1, query_idx[..., None].expand(-1, -1, DIM)),
                                   rtol=1e-10, atol=1e-10)


def test_the_reference_mask_is_not_trivial():
    """The cases above would prove nothing if their masks let every token see every other."""
    for name, (kind, grid, layer, options) in CASES.items():
        masks = case_masks(kind, grid, layer, options)
        if name != "local-window-longer-than-clip" or layer:
            assert not masks.all(), name


def dependencies(attn, x, valid, grid) -> torch.Tensor:
    """(T, T) bool: output token i changes with input token j (the Jacobian of clip 0)."""
    attend = None if valid is None else valid[:, None, None, :]
    jac = torch.autograd.functional.jacobian(lambda y: attn(y[None], attend, grid=grid)[0], x)
    return jac.abs().sum((1, 3)) > 0


def test_a_token_attends_exactly_its_window():
    """Grid 5 x 6, windows 4 x 4 shifted by (2, 2) on the odd layer: what each token depends
    on is its window and nothing else (tokens outside it are not attended), in both layers,
    written out by hand for a few tokens, and for all against the reference mask."""
    grid = (5, 6)
    cell = lambda t, f: t * 6 + f  # noqa: E731
    x = torch.randn(30, DIM, dtype=torch.float64)
    hand = {
        0: {(0, 0): [(t, f) for t in range(4) for f in range(4)],
            (4, 5): [(4, 4), (4, 5)],
            (2, 4): [(t, f) for t in range(4) for f in (4, 5)]},
        1: {(0, 0): [(t, f) for t in range(2) for f in range(2)],
            (3, 3): [(t, f) for t in range(2, 5) for f in range(2, 6)],
            (1, 5): [(t, f) for t in range(2) for f in range(2, 6)]},
    }
    for layer in (0, 1):
        attn = attention_layer("local", 6, layer, window=(4, 4), shift_axes="both")
        deps = dependencies(attn, x, None, grid)
        assert torch.equal(deps, expected_masks("local", grid, layer, shift="both")[0])
        for (t, f), window in hand[layer].items():
            attended = {divmod(j, 6) for j in deps[cell(t, f)].nonzero().flatten().tolist()}
            assert attended == set(window), (layer, (t, f))


@pytest.mark.parametrize("kind,options", [("local", dict(window=(4, 4), shift_axes="time")),
                                          ("multi_window", dict(head_windows=(2, 5, 0, 4)))])
def test_padding_is_never_attended(kind, options):
    """A clip of 3 time steps padded to 5: no real token depends on a padding token, and each
    real token depends on exactly its window's real tokens."""
    grid = (5, 4)
    valid = (torch.arange(20) < 12)[None]
    x = torch.randn(20, DIM, dtype=torch.float64)
    for layer in (0, 1):
        attn = attention_layer(kind, 4, layer, **options)
        deps = dependencies(attn, x, valid, grid)[:12]
        masks = case_masks(kind, grid, layer, options)
        assert not deps[:, 12:].any()
        assert torch.equal(deps, masks.any(0)[:12] & valid)


OPTIONS = {
    "global": dict(),
    "local": dict(decoder_attention="local", decoder_window=[2, 2], decoder_window_shift="both"),
    "local-audiomae": dict(decoder_attention="local", decoder_window=[4, 4], decoder_window_shift="time"),
    "multi_window": dict(decoder_attention="multi_window", decoder_head_windows=[2, 5, 0, 3]),
}


def encoder_for(option, n_freq, layers=3) -> TransformerEncoder:
    cfg = MAEASTConfig(**OPTIONS[option])
    windows = window_layout(cfg.decoder_attention, layers, HEADS, n_freq, cfg.decoder_window,
                            cfg.decoder_window_shift, cfg.decoder_head_windows)
    torch.manual_seed(0)
    return TransformerEncoder(layers, DIM, 32, HEADS, dropout=0.0, attention_dropout=0.0,
                              windows=windows).double().eval()


@pytest.mark.parametrize("option", list(OPTIONS))
def test_a_clip_alone_equals_it_in_a_padded_batch(option):
    """Three clips of 7, 4 and 2 time steps (3 frequency patches) padded to 7: each clip's
    outputs equal its outputs alone, through the packed path (every output) and through the
    query path (the decoder's last layer), whatever the padding holds."""
    n_freq, steps = 3, [7, 4, 2]
    enc = encoder_for(option, n_freq)
    x = torch.randn(3, 7 * n_freq, DIM, dtype=torch.float64)
    padding = (torch.arange(7 * n_freq) // n_freq)[None] >= torch.tensor(steps)[:, None]
    x[padding] = 7.0
    query_idx = torch.stack([torch.randperm(s * n_freq)[:5] for s in steps])
    with torch.no_grad():
        packed, _ = enc(x, padding, grid=(7, n_freq))
        queried, _ = enc(x, padding, query_idx=query_idx, grid=(7, n_freq))
        for i, s in enumerate(steps):
            clip = x[i:i + 1, :s * n_freq]
            alone, _ = enc(clip, None, grid=(s, n_freq))
            alone_q, _ = enc(clip, None, query_idx=query_idx[i:i + 1], grid=(s, n_freq))
            torch.testing.assert_close(packed[i, :s * n_freq], alone[0], rtol=1e-10, atol=1e-10)
            torch.testing.assert_close(queried[i], alone_q[0], rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("option", list(OPTIONS))
def test_the_models_decoder_output_alone_equals_it_in_a_padded_batch(option):
    """Through MAEAST's own forward (eval): a 6-step clip beside a 9-step one, the same mask
    for the clip in both; its heads' outputs on its masked tokens are its own."""
    cfg = MAEASTConfig(encoder_layers=1, decoder_layers=3, encoder_embed_dim=DIM, decoder_embed_dim=DIM,
                       encoder_ffn_embed_dim=32, encoder_attention_heads=HEADS, enc_sine_pos=True,
                       dec_sine_pos=True, max_token_length=500, dropout=0.0, attention_dropout=0.0,
                       **OPTIONS[option])
    torch.manual_seed(0)
    model = MAEAST(cfg).eval()
    source = torch.randn(2, 144, 128)
    padding_mask = torch.arange(144)[None] >= torch.tensor([[144], [96]])
    plan = compute_mask("random_mask", model.token_padding(padding_mask, 72), 0.75, (9, 8),
                        generator=torch.Generator().manual_seed(0))
    kept, masked = plan.kept_idx[1][plan.kept_valid[1]], plan.masked_idx[1][plan.masked_valid[1]]
    alone_plan = MaskPlan(kept[None], masked[None])
    with torch.no_grad():
        batch = model(source, padding_mask, mask_plan=plan)["logit_m_list_recon"][1][plan.masked_valid[1]]
        alone = model(source[1:, :96], mask_plan=alone_plan)["logit_m_list_recon"][0]
    torch.testing.assert_close(batch, alone, rtol=1e-5, atol=1e-5)


def test_the_model_lays_the_decoders_windows_on_its_token_grid():
    """MAEAST.decode hands the decoder the (time, frequency) grid: with one local decoder layer
    (2 x 2 windows, unshifted), changing one kept token's encoder output changes the decoder's
    output at exactly that token's 2 x 2 block of the 6 x 8 patch grid."""
    cfg = MAEASTConfig(encoder_layers=1, decoder_layers=1, encoder_embed_dim=DIM, decoder_embed_dim=DIM,
                       encoder_ffn_embed_dim=32, encoder_attention_heads=HEADS, dec_sine_pos=True,
                       max_token_length=500, dropout=0.0, attention_dropout=0.0, decoder_attention="local",
                       decoder_window=[2, 2])
    torch.manual_seed(0)
    model = MAEAST(cfg).eval()
    plan = compute_mask("random_mask", None, 0.75, (6, 8), batch_size=1, generator=torch.Generator().manual_seed(0))
    encoded = torch.randn(1, plan.kept_idx.size(1), DIM)
    changed = encoded.clone()
    changed[0, 0] += torch.randn(DIM)  # not a constant: the decoder's input LayerNorm would remove it
    with torch.no_grad():
        moved = (model.decode(changed, plan, None, 48) - model.decode(encoded, plan, None, 48)).abs().sum(-1)[0] > 0
    t, f = divmod(int(plan.kept_idx[0, 0]), 8)
    block = {(t // 2 * 2 + i, f // 2 * 2 + j) for i in range(2) for j in range(2)}
    assert {divmod(i, 8) for i in moved.nonzero().flatten().tolist()} == block


def test_windowed_training_with_attention_dropout_on_both_paths():
    """Training with attention dropout goes through the CPU kernels or torch's plain path
    (a GPU's) on the windows too: both drop (outputs differ from dropout off), reproduce
    under a seed, and give finite gradients, also when a window holds padding only (clip 1
    has 2 of 6 time steps: its windows at steps 4-5 are padding)."""
    enc = encoder_for("local-audiomae", 8, layers=2).float()
    for layer in enc.layers:
        layer.self_attn.dropout = 0.3
    x = torch.randn(2, 6 * 8, DIM)
    padding = (torch.arange(48) >= 16)[None].expand(2, -1).clone()
    padding[0] = False
    query_idx = torch.stack([torch.arange(0, 16, 2)] * 2)
    with torch.no_grad():
        plain = enc.eval()(x, padding, query_idx=query_idx, grid=(6, 8))[0]
    enc.train()
    for on in (True, False):
        with cpu_kernels.enabled(on):
            runs = []
            for _ in range(2):
                torch.manual_seed(3)
                y = enc(x, padding, query_idx=query_idx, grid=(6, 8))[0]
                enc.zero_grad()
                y.square().sum().backward()
                grads = torch.cat([p.grad.flatten() for p in enc.parameters()])
                assert torch.isfinite(grads).all()
                runs.append((y.detach(), grads))
            assert torch.equal(runs[0][0], runs[1][0]) and torch.equal(runs[0][1], runs[1][1])
            assert not torch.allclose(runs[0][0], plain, atol=1e-3)


# ---- configuration and checkpoints -------------------------------------------------------------
def test_defaults_are_the_papers_global_attention_and_the_yaml_lists_them():
    cfg = MAEASTConfig()
    model = MAEAST(MAEASTConfig(encoder_layers=1, encoder_embed_dim=DIM, decoder_embed_dim=DIM,
                                encoder_ffn_embed_dim=32, encoder_attention_heads=HEADS))
    assert all(layer.self_attn.windows is None for layer in model.decoder.layers)
    assert all(layer.self_attn.windows is None for layer in model.encoder.layers)
    model_yaml = yaml.safe_load((REPO / "config/pretrain/mae_ast.yaml").read_text())["model"]
    for key in ("decoder_attention", "decoder_window", "decoder_window_shift", "decoder_head_windows"):
        assert model_yaml[key] == getattr(cfg, key), key
    assert cfg.decoder_attention == "global"


@pytest.mark.parametrize("options,message", [
    (dict(decoder_attention="windowed"), "model.decoder_attention='windowed'"),
    (dict(decoder_attention="multi_window", decoder_head_windows=[2, 0]), "one window size per head (4 heads)"),
    (dict(decoder_attention="multi_window"), "one window size per head"),
    (dict(decoder_attention="multi_window", decoder_head_windows=[2, 0, 0, -1]), "one window size per head"),
    (dict(decoder_attention="local", decoder_window=[4]), "model.decoder_window=[4]"),
    (dict(decoder_attention="local", decoder_window=[0, 4]), "model.decoder_window=[0, 4]"),
    (dict(decoder_attention="local", decoder_window_shift="freq"), "model.decoder_window_shift='freq'"),
])
def test_bad_settings_are_refused_naming_the_key(options, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        MAEAST(MAEASTConfig(encoder_layers=1, encoder_embed_dim=DIM, decoder_embed_dim=DIM,
                            encoder_ffn_embed_dim=32, encoder_attention_heads=HEADS, **options))


def test_checkpoints_of_every_option_have_the_same_keys_and_load_everywhere(tmp_path):
    """Windows add no parameters: a local or multi-window checkpoint has a global one's keys
    and shapes, loads with core.checkpoint.load_model (its decoder windowed again), into the
    stock s3prl upstream (SimpleNamespace(**cfg["model"]): extra keys are harmless) and as a
    classifier's encoder."""
    from s3prl.upstream.mae_ast.expert import UpstreamExpert as StockExpert

    from mae_ast.core.classifier import MAEASTClassifier

    base = dict(encoder_layers=2, decoder_layers=2, encoder_embed_dim=DIM, decoder_embed_dim=DIM,
                encoder_ffn_embed_dim=32, encoder_attention_heads=HEADS, enc_sine_pos=True, dec_sine_pos=True,
                max_token_length=1000)
    shapes = {}
    for option in OPTIONS:
        torch.manual_seed(0)
        model = MAEAST(MAEASTConfig(**base, **OPTIONS[option]))
        shapes[option] = {k: tuple(v.shape) for k, v in model.state_dict().items()}
        path = tmp_path / f"{option}.pt"
        checkpoint.save(str(path), model)
        loaded, _ = checkpoint.load_model(str(path))
        assert [layer.self_attn.windows for layer in loaded.decoder.layers] == \
            [layer.self_attn.windows for layer in model.decoder.layers]
        for k, v in model.state_dict().items():
            assert torch.equal(loaded.state_dict()[k], v), k
        stock = StockExpert(str(path)).eval()
        wav = torch.randn(16000) * 0.1
        with torch.no_grad():
            ref = stock([wav])["hidden_states"][-1]
        assert ref.shape[-1] == DIM * 8
        classifier = MAEASTClassifier(MAEASTConfig(**base), 3)
        checkpoint.load_encoder_weights(classifier.backbone, str(path))
    assert all(s == shapes["global"] for s in shapes.values())


# ---- real fairseq pre-training ------------------------------------------------------------------
RUNS = {
    "local": ["model.decoder_attention=local", "model.decoder_window=[2,4]", "model.decoder_window_shift=both"],
    "multi_window": ["model.decoder_attention=multi_window", "model.decoder_head_windows=[4,0]"],
}


@pytest.mark.slow
@pytest.mark.parametrize("option", list(RUNS))
def test_fairseq_pretraining_with_the_option_learns(corpus, tmp_path, option):
    """A tiny CPU run (2 decoder layers, so the shifted layer runs) with each option: its
    loss falls, and its checkpoint holds the option and loads in load_model."""
    from conftest import fairseq_train, tiny_model_overrides
    from mae_ast.fairseq_log import read_records

    steps = 40
    proc = fairseq_train(corpus["manifests"], tmp_path / option, *tiny_model_overrides(True), *RUNS[option],
                         "model.decoder_layers=2", "task.mask_type=chunk_mask", f"optimization.max_update={steps}",
                         "lr_scheduler.warmup_updates=10", "optimization.lr=[0.0005]",
                         "checkpoint.save_interval_updates=1000", "dataset.validate_interval_updates=1000")
    losses = torch.tensor([float(r["loss"]) for kind, r in read_records(proc.stdout) if kind == "train_inner"])
    assert len(losses) == steps
    assert losses[-10:].mean() < 0.8 * losses[:10].mean(), losses.tolist()
    ckpt = tmp_path / option / "checkpoints" / "checkpoint_last.pt"
    state = torch.load(ckpt)
    assert state["cfg"]["model"]["decoder_attention"] == option
    model, _ = checkpoint.load_model(str(ckpt))
    assert model.decoder.layers[0].self_attn.windows is not None
