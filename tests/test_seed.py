"""``common.seed`` decides crops and masks: the same seed repeats a run, another seed changes it."""
import pytest

from conftest import fairseq_train, tiny_model_overrides
from mae_ast.fairseq_log import read_log_file
from mae_ast.fairseq_plugin.dataset import MAEASTDataset
from mae_ast.manifest import Manifest


def first_losses(run_dir, count=3):
    losses = [r.number("loss") for r in read_log_file(run_dir / "hydra_train.log") if r.kind == "train_inner"]
    assert len(losses) >= count, losses
    return losses[:count]


@pytest.mark.slow
def test_same_seed_same_losses_other_seed_other_losses(corpus, tmp_path):
    common = [*tiny_model_overrides(True), "optimization.max_update=3", "checkpoint.no_save=true",
              "task.mask_type=chunk_mask", "task.max_sample_size=24000", "dataset.disable_validation=true"]
    runs = {}
    for name, seed in (("a", 5), ("b", 5), ("c", 6)):
        fairseq_train(corpus["manifests"], tmp_path / name, *common, f"common.seed={seed}")
        runs[name] = first_losses(tmp_path / name)
    assert runs["a"] == runs["b"]
    assert runs["a"] != runs["c"]


def crops(manifest, seed, epoch):
    ds = MAEASTDataset(manifest, max_sample_size=8000, random_crop=True, seed=seed)
    ds.set_epoch(epoch)
    return [ds[i]["source"] for i in range(len(ds))]


def test_crops_follow_seed_and_epoch(corpus):
    """The dataset's crops: the same for the same (seed, epoch), different for another seed or
    epoch (each clip is longer than the 0.5 s crop, so a crop could start anywhere)."""
    import torch

    manifest = Manifest.load(str(corpus["manifests"] / "train.tsv"))
    base = crops(manifest, seed=1, epoch=1)
    same = crops(manifest, seed=1, epoch=1)
    assert all(torch.equal(a, b) for a, b in zip(base, same))
    for other in (crops(manifest, seed=2, epoch=1), crops(manifest, seed=1, epoch=2)):
        differ = sum(not torch.equal(a, b) for a, b in zip(base, other))
        assert differ >= len(base) - 1, differ


def test_task_takes_common_seed(corpus):
    """The task's crop seed is common.seed, resolved as fairseq resolves its config."""
    from omegaconf import OmegaConf

    from fairseq import tasks
    from fairseq.dataclass.configs import FairseqConfig
    from mae_ast.fairseq_plugin.task import MAEASTPretrainingConfig

    cfg = OmegaConf.structured(FairseqConfig)
    cfg.task = OmegaConf.structured(MAEASTPretrainingConfig(data=str(corpus["manifests"])))
    cfg.task._name = "mae_ast_pretraining"
    cfg.common.seed = 7
    task = tasks.setup_task(cfg.task)
    task.load_dataset("train")
    assert task.datasets["train"].seed == 7
