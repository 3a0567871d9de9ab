"""tools/compare_recipes.py: recipes pre-trained for equal training time on one corpus, scored at
points along the way; the table, plot and page; a rerun reuses finished recipes."""
import json
import os
import subprocess
import sys

import pytest

from conftest import REPO
from mae_ast import fairseq_log
from mae_ast.demo.compare import MWMAE_WINDOWS, pick_windows, recipe_overrides, seen

PACKAGES = "fillets-ng-data-nl,sonic-pi-samples"


def compare(out, *args):
    cmd = [sys.executable, str(REPO / "tools" / "compare_recipes.py"), "--hours-of-audio", "0.05", "--packages",
           PACKAGES, "--out", str(out), "--cpu", "--jobs", "2", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=900,
                          env=dict(os.environ, PYTHONWARNINGS="ignore"))


def test_mwmae_windows_for_fewer_heads_run_from_the_smallest_to_global():
    assert pick_windows(8) == list(MWMAE_WINDOWS)
    assert pick_windows(4) == [2, 10, 125, 0]
    assert pick_windows(2) == [2, 0]
    assert recipe_overrides("mwmae", gpu=False)[-1] == "model.decoder_head_windows=[2,10,125,0]"  # the CPU model's 4 heads


def test_seen_sums_per_update_means_over_the_updates_reached():
    lines = [f'[2026][fairseq_cli.train][INFO] - [train_inner][INFO] - {{"num_updates": "{u}", "bsz": "{b}", "wpb": "{w}"}}'
             for u, b, w in ((10, 2, 100), (20, 4, 300), (30, 8, 500))]
    records = fairseq_log.read_records("\n".join(lines).replace("[2026][fairseq_cli.train][INFO] - ", "[2026]"))
    assert records, "the lines parse as train_inner records"
    assert seen(records, 20) == (10 * 2 + 10 * 4, 10 * 100 + 10 * 300)
    assert seen(records, 30) == (10 * 2 + 10 * 4 + 10 * 8, 10 * 100 + 10 * 300 + 10 * 500)
    assert seen(records, 23) == (10 * 2 + 13 * 4, 10 * 100 + 13 * 300)  # past the last record: its means
    assert seen(records, 9) == (None, None)


def test_unknown_recipe_is_refused_naming_the_choices(tmp_path):
    proc = compare(tmp_path, "--recipes", "paper_patch,bert")
    assert proc.returncode == 2 and "unknown recipe bert; choose from paper_patch" in proc.stderr


@pytest.mark.slow
def test_compare_writes_table_plot_and_page_and_reuses_finished_recipes(tmp_path):
    out = tmp_path / "compare"
    proc = compare(out, "--recipes", "paper_patch,eat_masking", "--minutes", "0.1", "--points", "2")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads((out / "compare.json").read_text())
    assert [r["name"] for r in summary["recipes"]] == ["paper_patch", "eat_masking"]
    for r in summary["recipes"]:
        assert [p["minutes"] for p in r["points"]] == [0.05, 0.1]
        for p in r["points"]:
            # equal compute: fairseq stops once the training time reaches the point
            assert p["train_seconds"] >= p["minutes"] * 60 and p["updates"] >= 1
            assert 0 <= p["probe"]["category"] <= 1
            # a train_inner record every 10 updates: before the first, nothing to count from
            assert p["clips_seen"] >= p["updates"] if p["updates"] >= 10 else p["clips_seen"] is None
        assert r["points"][1]["updates"] >= r["points"][0]["updates"]
        assert (out / "recipes" / r["name"] / "points" / "point2.pt").is_file()
    eat = summary["recipes"][1]
    assert "+recipe=eat_masking" in eat["overrides"]
    run_log = (out / "recipes" / "eat_masking" / "run" / "hydra_train.log").read_text()
    assert "'masks_per_clip': 16" in run_log and "'mask_type': inverse_block" in run_log
    assert "'max_tokens': 320000" in run_log  # the demo's batch for every recipe, not EAT's
    table = (out / "compare.md").read_text().splitlines()
    assert table[0].startswith("| recipe | minutes | updates | s / update") and "probe category" in table[0]
    assert len(table) == 2 + 4  # header, rule, two recipes x two points
    assert (out / "accuracy.png").read_bytes()[:4] == b"\x89PNG"
    page = (out / "index.html").read_text()
    assert "<img src='accuracy.png'>" in page and "eat_masking" in page and "log-mel" in page

    before = {p: p.stat().st_mtime_ns for p in (out / "recipes").rglob("*") if p.is_file()}
    again = compare(out, "--recipes", "paper_patch,eat_masking", "--minutes", "0.1", "--points", "2")
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-2000:]
    assert "paper_patch: reusing" in again.stdout and "eat_masking: reusing" in again.stdout
    assert before == {p: p.stat().st_mtime_ns for p in (out / "recipes").rglob("*") if p.is_file()}
