"""Hub folders of real fairseq checkpoints, through the real tools: a pre-training
checkpoint_last.pt (tiny, from fairseq-hydra-train) exported with --format hub (its card holds
the run's updates and the training manifest's files and hours), fine-tuning with
``model.pretrained_checkpoint=FOLDER`` (the same run as from the pickle), the fine-tuned
classifier as a folder (its best validation figure in the card, the same predictions), and
s3prl's ``run_downstream.py -u mae_ast -k FOLDER``."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import REPO, fairseq_train, tiny_model_overrides
from mae_ast.core import checkpoint
from mae_ast.manifest import Manifest
from test_finetune import data, finetune  # noqa: F401  (the labelled data fixture)
from test_s3prl_upstream import keyword_set, s3prl_site  # noqa: F401  (fixtures)

pytestmark = pytest.mark.slow


def export_hub(source, folder, *flags):
    proc = subprocess.run([sys.executable, str(REPO / "tools" / "export_checkpoint.py"), str(source), str(folder),
                           "--format", "hub", *map(str, flags)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return folder


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory, corpus):
    """A real training checkpoint (2 updates of a tiny patch model) and its hub folder."""
    run = tmp_path_factory.mktemp("hub_pretrain")
    fairseq_train(corpus["manifests"], run, *tiny_model_overrides(True), "optimization.max_update=2",
                  "checkpoint.save_interval_updates=2", "task.mask_type=chunk_mask")
    ckpt = run / "checkpoints" / "checkpoint_last.pt"
    return ckpt, export_hub(ckpt, run / "hub")


def test_card_tells_the_run_and_its_manifest(pretrained, corpus):
    ckpt, folder = pretrained
    config = json.loads((folder / "config.json").read_text())
    manifest = Manifest.load(str(corpus["manifests"] / "train.tsv"))
    hours = round(sum(manifest.sizes) / 16000 / 3600, 3)
    assert config["training"]["updates"] == 2 and config["training"]["epoch"] >= 1
    assert config["training"]["manifest"] == {"files": len(manifest), "hours": hours, "name": "train"}
    card = (folder / "README.md").read_text()
    assert "| updates | 2 |" in card
    assert f"| training manifest | {len(manifest)} files, {hours:.1f} hours (`train.tsv`) |" in card
    # the folder is the checkpoint's model, without the optimizer state and the tables
    state, loaded = checkpoint.load(str(ckpt)), checkpoint.load(str(folder))
    assert sorted(loaded["model"]) == sorted(state["model"])
    assert all(torch.equal(loaded["model"][k], state["model"][k]) for k in state["model"])
    assert os.path.getsize(ckpt) > 2 * (folder / "model.safetensors").stat().st_size


@pytest.fixture(scope="module")
def finetuned(pretrained, data, tmp_path_factory):  # noqa: F811
    """The same fine-tuning run (2 epochs) from the pickle and from the folder."""
    runs = {}
    for name, source in zip(("pickle", "folder"), pretrained):
        run = tmp_path_factory.mktemp(f"hub_finetune_{name}")
        finetune(data["single"], run, f"model.pretrained_checkpoint={source}", "optimization.max_epoch=2",
                 "optimization.lr=[0.002]", "dataset.batch_size=8", "task.time_mask=20")
        runs[name] = run
    return runs


def test_finetuning_from_a_folder_is_the_run_from_the_pickle(finetuned, pretrained):
    log = (finetuned["folder"] / "hydra_train.log").read_text()
    assert f"encoder initialised from {pretrained[1]}" in log
    a, b = (torch.load(finetuned[n] / "checkpoints" / "checkpoint_last.pt", weights_only=True)["model"]
            for n in ("pickle", "folder"))
    assert sorted(a) == sorted(b) and all(torch.equal(a[k], b[k]) for k in a)


def test_a_finetuned_classifier_as_a_folder(finetuned, data, tmp_path):  # noqa: F811
    best = finetuned["folder"] / "checkpoints" / "checkpoint_best.pt"
    folder = export_hub(best, tmp_path / "hub")
    config = json.loads((folder / "config.json").read_text())
    state = torch.load(best, weights_only=True)
    assert config["label_names"] == list(state["cfg"]["model"]["label_names"])
    figure = config["training"]["results"]["best validation accuracy"]
    assert figure == pytest.approx(state["extra_state"]["best"])
    assert f"| best validation accuracy | {figure:.4g} |" in (folder / "README.md").read_text()
    files = sorted(Path(Manifest.load(str(data["single"] / "valid.tsv")).root).rglob("*.flac"))[:5]
    outputs = [subprocess.run([sys.executable, str(REPO / "tools" / "classify.py"), str(path), *map(str, files)],
                              capture_output=True, text=True, timeout=300) for path in (best, folder)]
    assert all(p.returncode == 0 for p in outputs), outputs[1].stderr
    assert outputs[0].stdout == outputs[1].stdout


def test_run_downstream_reads_a_folder(pretrained, keyword_set, s3prl_site, tmp_path):  # noqa: F811
    expdir = tmp_path / "exp"
    overrides = ",,".join([
        f"config.downstream_expert.datarc.speech_commands_root={keyword_set['train']}",
        f"config.downstream_expert.datarc.speech_commands_test_root={keyword_set['test']}",
        "config.downstream_expert.datarc.num_workers=0", "config.downstream_expert.datarc.batch_size=8",
        "config.runner.total_steps=2", "config.runner.eval_step=2", "config.runner.log_step=2",
        "config.runner.save_step=2",
    ])
    cmd = [sys.executable, str(s3prl_site / "s3prl" / "run_downstream.py"), "-m", "train", "-u", "mae_ast",
           "-k", str(pretrained[1]), "-d", "speech_commands",
           "-c", str(REPO / "s3prl_upstream" / "config" / "speech_commands" / "config.yaml"),
           "-p", str(expdir), "--device", "cpu", "-o", overrides]
    env = dict(os.environ, PYTHONPATH=str(s3prl_site), OMP_NUM_THREADS="2")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=str(tmp_path), timeout=300)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-5000:]
    assert "downsample rate is 2560" in log
    assert "test at step 2" in (expdir / "log.log").read_text()
