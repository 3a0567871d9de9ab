"""Real fairseq-hydra-train runs of tiny models on CPU, checkpoints, resume, export."""
import subprocess
import sys

import pytest
import torch

from conftest import REPO, fairseq_train, tiny_model_overrides
from mae_ast.core import MAEAST, checkpoint
from mae_ast.fairseq_log import read_records


def train_log(proc):
    """fairseq's json log records in a finished run's stdout, as (kind, values) pairs
    (tests/test_long_runs.py uses it too)."""
    return read_records(proc.stdout)


RECIPES = {
    # the README's three published commands, plus the batched mask
    "patch_chunk": (True, ["task.mask_type=chunk_mask", "model.random_mask_prob=0.75"]),
    "frame_random": (False, ["task.mask_type=random_mask", "model.random_mask_prob=0.75"]),
    "frame_spans": (False, ["task.mask_type=retain_spans", "model.random_mask_prob=1.45"]),
    "patch_batched": (True, ["task.mask_type=random_mask_batched", "model.random_mask_prob=0.75"]),
}


@pytest.fixture(scope="module")
def runs(corpus, tmp_path_factory):
    """One short run per recipe (shared by the tests below)."""
    out = {}
    for name, (patch, extra) in RECIPES.items():
        run_dir = tmp_path_factory.mktemp(name)
        proc = fairseq_train(corpus["manifests"], run_dir, *tiny_model_overrides(patch), *extra,
                             "optimization.max_update=4", "checkpoint.save_interval_updates=2",
                             "dataset.validate_interval_updates=2")
        out[name] = (run_dir, proc)
    return out


@pytest.mark.slow
@pytest.mark.parametrize("name", list(RECIPES))
def test_recipe_trains_and_logs(runs, name):
    run_dir, proc = runs[name]
    log = train_log(proc)
    inner = [r for kind, r in log if kind == "train_inner"]
    assert len(inner) == 4
    for record in inner:
        for key in ("loss", "loss_recon", "loss_info_nce"):
            assert key in record and float(record[key]) == float(record[key])  # present, not NaN
        recon_w, nce_w = 10, 1
        total = recon_w * float(record["loss_recon"]) + nce_w * float(record["loss_info_nce"])
        assert abs(total - float(record["loss"])) < 1e-2 * max(1, total)
    assert any(kind == "valid" for kind, _ in log)
    assert (run_dir / "checkpoints" / "checkpoint_last.pt").is_file()
    assert any((run_dir / "tblog" / "train").iterdir()), "tensorboard events in the run folder"


@pytest.mark.slow
def test_checkpoint_loads_with_weights_only_and_into_stock_upstream(runs):
    """torch>=2.6 loads with weights_only=True by default: our checkpoints must pass, both
    for fairseq's own resume and for s3prl's stock mae_ast upstream (plain torch.load)."""
    from s3prl.upstream.mae_ast.expert import UpstreamExpert as StockExpert

    for name in ("patch_chunk", "frame_spans"):
        ckpt = runs[name][0] / "checkpoints" / "checkpoint_last.pt"
        state = torch.load(ckpt)  # the default weights_only=True
        stock = StockExpert(str(ckpt)).eval()
        ours = MAEAST(checkpoint.model_config(state["cfg"]["model"]), state["cfg"]["task"]["feature_dim"]).eval()
        ours.load_state_dict(state["model"], strict=True)
        wav = torch.randn(16000) * 0.1
        with torch.no_grad():
            ref = stock([wav])["hidden_states"][-1]
            feats = __import__("mae_ast.core", fromlist=["fbank"]).fbank(wav[None])
            got = ours(feats, mask=False)["x"]
        got = got.reshape(1, -1, ours.n_freq * got.size(-1))[:, : ref.size(1)]
        torch.testing.assert_close(got, ref, atol=1e-4, rtol=1e-4)


@pytest.mark.slow
def test_export_tool(runs, tmp_path):
    from s3prl.upstream.mae_ast.expert import UpstreamExpert as StockExpert

    src = runs["patch_chunk"][0] / "checkpoints" / "checkpoint_last.pt"
    out = tmp_path / "slim.pt"
    proc = subprocess.run([sys.executable, str(REPO / "tools" / "export_checkpoint.py"), str(src), str(out)],
                          capture_output=True, text=True, check=True)
    assert "tensors" in proc.stdout
    slim = torch.load(out, weights_only=True)
    assert set(slim) == {"cfg", "model"} and out.stat().st_size < src.stat().st_size
    StockExpert(str(out))  # strict load inside
    bad = tmp_path / "notes.pt"
    bad.write_text("not a checkpoint")
    proc = subprocess.run([sys.executable, str(REPO / "tools" / "export_checkpoint.py"), str(bad), str(out)],
                          capture_output=True, text=True)
    assert proc.returncode != 0 and "notes.pt" in proc.stderr and "not a readable torch checkpoint" in proc.stderr


def test_original_layout_checkpoint_loads_into_ours(tmp_path):
    """A checkpoint written by the original model (s3prl's copy) loads strictly into ours."""
    from test_core import stock_model, tiny_cfg

    cfg = tiny_cfg()
    stock = stock_model(cfg).eval()
    path = tmp_path / "original.pt"
    checkpoint.save(path, MAEAST(cfg, mask_type="chunk_mask"), state_dict=stock.state_dict())
    state = checkpoint.load(str(path))
    ours = MAEAST(checkpoint.model_config(state["cfg"]["model"])).eval()
    ours.load_state_dict(state["model"], strict=True)
    x = torch.randn(1, 64, 128)
    with torch.no_grad():
        ref = stock(x, padding_mask=torch.zeros(1, 64, dtype=torch.bool), mask=False, features_only=True)["x"]
        torch.testing.assert_close(ours(x, mask=False)["x"], ref, atol=1e-5, rtol=1e-5)


@pytest.mark.slow
def test_resume_continues_exactly(corpus, tmp_path):
    """Stopped after 3 updates and resumed to 6: same updates, learning rates and losses as one
    uninterrupted run (fairseq's resume plus deterministic crops and masks)."""
    common = [*tiny_model_overrides(True), "task.mask_type=chunk_mask", "checkpoint.save_interval_updates=3",
              "lr_scheduler.warmup_updates=4", "dataset.validate_interval_updates=100", "dataset.validate_interval=100"]
    straight = fairseq_train(corpus["manifests"], tmp_path / "straight", *common, "optimization.max_update=6")
    fairseq_train(corpus["manifests"], tmp_path / "resumed", *common, "optimization.max_update=3")
    resumed = fairseq_train(corpus["manifests"], tmp_path / "resumed", *common, "optimization.max_update=6")
    assert "Loaded checkpoint" in resumed.stdout and "@ 3 updates" in resumed.stdout

    def by_update(proc):
        return {int(r["num_updates"]): r for kind, r in train_log(proc) if kind == "train_inner"}

    a, b = by_update(straight), by_update(resumed)
    assert sorted(b) == [4, 5, 6]
    for step in (4, 5, 6):
        assert a[step]["lr"] == b[step]["lr"]
        assert abs(float(a[step]["loss"]) - float(b[step]["loss"])) < 1e-3, (step, a[step], b[step])


@pytest.mark.slow
def test_mismatched_checkpoint_is_refused_with_reason(runs, tmp_path, corpus):
    """Restoring a patch checkpoint into a frame model names the mismatch."""
    patch_ckpt = runs["patch_chunk"][0] / "checkpoints" / "checkpoint_last.pt"
    proc = fairseq_train(corpus["manifests"], tmp_path / "frame", *tiny_model_overrides(False),
                         "task.mask_type=random_mask", "optimization.max_update=1",
                         f"checkpoint.restore_file={patch_ckpt}", "checkpoint.reset_optimizer=true",
                         check=False)
    assert proc.returncode != 0
    message = proc.stdout + proc.stderr
    assert "checkpoint does not match the model (a 16x16 checkpoint into a 2x128 model" in message
    assert "model.ast_kernel_size_time: checkpoint 16, model 2" in message


def test_not_a_checkpoint_is_refused(tmp_path):
    path = tmp_path / "audio.pt"
    path.write_bytes(b"\x00" * 100)
    with pytest.raises(checkpoint.CheckpointError, match="audio.pt: not a readable torch checkpoint"):
        checkpoint.load(str(path))
    torch.save({"weights": torch.zeros(1)}, path)
    with pytest.raises(checkpoint.CheckpointError, match="not an MAE-AST checkpoint"):
        checkpoint.load(str(path))


@pytest.mark.slow
def test_resume_in_a_later_epoch_continues_exactly(corpus, tmp_path):
    """Stopped at the end of epoch 1 (4 updates of 2 clips) and resumed, a run gets the losses
    of an uninterrupted one in epochs 2 and 3: crops and order follow (seed, epoch, clips), not
    process state (an unseeded collater crop fails it)."""
    common = [*tiny_model_overrides(True), "task.mask_type=chunk_mask", "lr_scheduler.warmup_updates=4",
              "dataset.batch_size=2", "dataset.validate_interval=100", "checkpoint.save_interval=1"]
    straight = fairseq_train(corpus["manifests"], tmp_path / "straight", *common, "optimization.max_epoch=3")
    fairseq_train(corpus["manifests"], tmp_path / "resumed", *common, "optimization.max_epoch=1")
    resumed = fairseq_train(corpus["manifests"], tmp_path / "resumed", *common, "optimization.max_epoch=3")

    def by_update(proc):
        return {int(r["num_updates"]): r for kind, r in train_log(proc) if kind == "train_inner"}

    a, b = by_update(straight), by_update(resumed)
    assert b and min(b) > 1 and set(b) <= set(a), (sorted(a), sorted(b))
    for step in sorted(b):
        assert abs(float(a[step]["loss"]) - float(b[step]["loss"])) < 1e-3, (step, a[step], b[step])
