"""The pre-training recipes (config/pretrain/recipe/*.yaml, +recipe=NAME): every key they set is
an option of the task, model or criterion (a misspelt key would stop fairseq at start), each cites
its source and what it leaves out, and each starts in a real fairseq run whose loss falls."""
import dataclasses

import pytest
from omegaconf import OmegaConf

from conftest import REPO, fairseq_train, tiny_model_overrides
from mae_ast.fairseq_log import read_records
from mae_ast.fairseq_plugin.criterion import MAEASTCriterionConfig
from mae_ast.fairseq_plugin.model import MAEASTModelConfig
from mae_ast.fairseq_plugin.task import MAEASTPretrainingConfig

RECIPE_DIR = REPO / "config" / "pretrain" / "recipe"
RECIPES = {
    # name: what it must set (the issue's and the papers' settings), a source it must cite
    "audiomae": ({"task.mask_type": "random_mask", "model.random_mask_prob": 0.8, "criterion.norm_targets": True,
                  "model.decoder_attention": "local", "model.decoder_window": [4, 4]}, "facebookresearch/AudioMAE"),
    "mwmae": ({"task.mask_type": "random_mask", "model.random_mask_prob": 0.8, "model.decoder_layers": 4,
               "model.decoder_attention": "multi_window"}, "2306.00561"),
    "eat_masking": ({"task.mask_type": "inverse_block", "model.random_mask_prob": 0.8, "model.mask_block_size": 5,
                     "task.masks_per_clip": 16}, "cwx-worst-one/EAT"),
}
SECTIONS = {"task": MAEASTPretrainingConfig, "model": MAEASTModelConfig, "criterion": MAEASTCriterionConfig}


def test_mwmae_gives_every_head_of_the_shipped_config_a_window():
    base = OmegaConf.load(REPO / "config" / "pretrain" / "mae_ast.yaml")
    windows = OmegaConf.load(RECIPE_DIR / "mwmae.yaml").model.decoder_head_windows
    assert len(windows) == base.model.encoder_attention_heads  # the decoder shares the encoder's heads
    assert set(windows) == {2, 5, 10, 25, 50, 125, 0}  # MW-MAE's sizes, 0 = global


def flat(cfg, prefix=""):
    for key, value in cfg.items():
        if isinstance(value, dict):
            yield from flat(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


@pytest.mark.parametrize("name", list(RECIPES))
def test_recipe_sets_its_sources_settings_with_real_option_names(name):
    text = (RECIPE_DIR / f"{name}.yaml").read_text()
    settings = dict(flat(OmegaConf.to_container(OmegaConf.load(RECIPE_DIR / f"{name}.yaml"))))
    expected, source = RECIPES[name]
    for key, value in expected.items():
        assert settings.get(key) == value, (key, settings.get(key))
    assert source in text and "Left out" in text and "@package _global_" in text
    for key in settings:
        section, option = key.split(".", 1)
        if section in SECTIONS:
            names = {f.name for f in dataclasses.fields(SECTIONS[section])}
            assert option in names, f"{name}.yaml sets {key}, which is not an option of the {section}"


@pytest.mark.slow
@pytest.mark.parametrize("name", list(RECIPES))
def test_recipe_starts_in_fairseq_and_its_loss_falls(corpus, tmp_path, name):
    # tiny sizes on the command line win over the recipe's; two heads take two of MW-MAE's windows
    heads = ["model.decoder_head_windows=[5,0]"] if name == "mwmae" else []
    proc = fairseq_train(corpus["manifests"], tmp_path / name, f"+recipe={name}", *tiny_model_overrides(True),
                         *heads, "model.decoder_layers=1", "optimization.max_update=40",
                         "lr_scheduler.warmup_updates=5", "optimization.lr=[0.001]", "checkpoint.no_save=true",
                         "dataset.disable_validation=true", "dataset.max_tokens=400000")
    assert f"'+recipe={name}'" in proc.stdout or "recipe" in proc.stdout
    inner = [r for kind, r in read_records(proc.stdout) if kind == "train_inner"]
    assert len(inner) == 40
    settings, _ = RECIPES[name]
    if settings.get("criterion.norm_targets"):
        assert "loss_recon_norm" in inner[0] and "loss_recon" not in inner[0]
    losses = [float(r["loss"]) for r in inner]
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < 0.8 * first, (first, last)
