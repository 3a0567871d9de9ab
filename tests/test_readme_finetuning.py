"""README's fine-tuning section and its continue-pre-training command, and the recipe
walk-throughs of docs/finetuning.md, run as written: their bash blocks, verbatim, in a folder
laid out as they assume (tools/, config/, mae_ast/ of this repository; clips/, ESC-50-master/,
speech_commands_v0.02/, audioset/ and the checkpoints as tiny stand-ins made here). The only
addition is a shell function that appends CPU and tiny-model settings to every
fairseq-hydra-train the blocks call."""
import json
import re
import subprocess

import numpy as np
import pytest
import soundfile as sf

from conftest import REPO, VENV_BIN
from mae_ast.core import MAEAST, MAEASTConfig, checkpoint
from test_continue_pretraining import released_checkpoints
from test_finetune import SR, TINY, one_second_clips, tiny_overrides

pytestmark = pytest.mark.slow


def section_blocks(text, heading):
    """The bash blocks of the section ``heading`` (up to the next '## ' heading)."""
    section = text[text.index(f"\n{heading}\n"):]
    section = section[: section.index("\n## ", 1)] if "\n## " in section[1:] else section
    return re.findall(r"```bash\n(.*?)```", section, re.S)


def readme_blocks():
    """The continue-pre-training block, the README's fine-tuning block, and the recipe
    walk-throughs of docs/finetuning.md (ESC-50, Speech Commands, AudioSet-20K), which go on
    from the README's fine-tuning block's variables."""
    text = (REPO / "README.md").read_text()
    blocks = section_blocks(text, "## Fine-tuning")
    recipes = section_blocks((REPO / "docs" / "finetuning.md").read_text(), "## Recipes")
    restore = [b for b in re.findall(r"```bash\n(.*?)```", text, re.S) if "checkpoint.restore_file" in b]
    assert len(blocks) == 1 and len(recipes) == 3 and len(restore) == 1
    return restore[0], blocks + recipes


def write(path, wav):
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, wav.astype(np.float32), SR)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, speech_wavs):
    """The README's working folder with every input its commands name."""
    root = tmp_path_factory.mktemp("readme")
    for name in ("tools", "config", "mae_ast"):
        (root / name).symlink_to(REPO / name)
    clips = one_second_clips(speech_wavs)  # {speech, tone, noise: 12 one-second clips each}
    for label, waves in clips.items():
        for i, wav in enumerate(waves):
            write(root / "clips" / label / f"{label}{i}.flac", wav)
    write(root / "my_recording.flac", np.concatenate([clips["tone"][0], clips["noise"][0], clips["tone"][1]]))
    # ESC-50: audio/ and meta/esc50.csv with its columns, five folds
    rows = ["filename,fold,target,category,esc10,src_file,take"]
    for i in range(30):
        label = list(clips)[i % 3]
        name = f"{1 + i % 5}-{100 + i}-A-{i % 3}.wav"
        write(root / "ESC-50-master" / "audio" / name, clips[label][i // 3])
        rows.append(f"{name},{1 + i % 5},{i % 3},{label},False,{100 + i},A")
    (root / "ESC-50-master" / "meta").mkdir()
    (root / "ESC-50-master" / "meta" / "esc50.csv").write_text("\n".join(rows) + "\n")
    # Speech Commands v2: word folders, background noise, the two split lists
    spc = root / "speech_commands_v0.02"
    lists = {"validation": [], "testing": []}
    for label, waves in clips.items():
        for i, wav in enumerate(waves):
            name = f"{label}/{i:04x}_nohash_0.wav"
            write(spc / name, wav)
            if i % 4 == 1:
                lists["validation"].append(name)
            elif i % 4 == 2:
                lists["testing"].append(name)
    write(spc / "_background_noise_" / "white_noise.wav", clips["noise"][0])
    for split, names in lists.items():
        (spc / f"{split}_list.txt").write_text("\n".join(names) + "\n")
    # AudioSet: downloaded clips, several labels per clip, a set column
    rows = ["file,labels,set"]
    names = list(clips)
    for i in range(80):  # 60 training clips: --valid-percent 0.05 draws a few
        a, b = names[i % 3], names[(i + 1) % 3]
        wav = 0.6 * (clips[a][i % 12] + (clips[b][(i * 5) % 12] if i % 2 else 0))
        folder = "eval" if i % 4 == 0 else "balanced"
        write(root / "audioset" / folder / f"clip{i}.flac", wav)
        cell = f'"{a},{b}"' if i % 2 else a
        rows.append(f"{folder}/clip{i}.flac,{cell},{'eval' if folder == 'eval' else 'balanced_train'}")
    (root / "audioset.csv").write_text("\n".join(rows) + "\n")
    # checkpoints: a tiny pre-trained patch model where the README's pre-training puts it, and
    # a released one (the original release's layout) for continued pre-training
    cfg = MAEASTConfig(**TINY, decoder_layers=1, decoder_embed_dim=32, dec_sine_pos=True)
    (root / "runs" / "patch_chunk" / "checkpoints").mkdir(parents=True)
    checkpoint.save(root / "runs" / "patch_chunk" / "checkpoints" / "checkpoint_last.pt",
                    MAEAST(cfg, mask_type="chunk_mask"))
    released, _ = released_checkpoints(root)
    (root / "released").mkdir()
    released["original"].rename(root / "released" / "chunk_patch_75.pt")
    subprocess.run([str(VENV_BIN / "python"), "tools/make_manifest.py", "clips", "--dest", "manifests",
                    "--valid-percent", "0.2"], cwd=root, check=True, capture_output=True)
    return root


def shell_function(tiny_finetune, tiny_pretrain):
    """fairseq-hydra-train with CPU and tiny-model settings appended (they win over the config)."""
    return f"""
fairseq-hydra-train() {{
  case " $* " in
    *" mae_ast_finetune "*) command fairseq-hydra-train "$@" {tiny_finetune} ;;
    *) command fairseq-hydra-train "$@" {tiny_pretrain} ;;
  esac
}}
"""


def test_readme_finetuning_commands_run_as_written(workdir):
    from mae_ast.fairseq_log import read_log_file

    restore, blocks = readme_blocks()
    common = "common.cpu=true common.fp16=false dataset.num_workers=0 common.log_interval=1"
    tiny_finetune = " ".join([common, *tiny_overrides(), "dataset.batch_size=8", "optimization.max_epoch=2",
                              "task.time_mask=20", "'optimization.lr=[0.002]'"])
    from conftest import tiny_model_overrides
    tiny_pretrain = " ".join([common, *tiny_model_overrides(True), "model.enc_sine_pos=true",
                              "model.dec_sine_pos=true", "optimization.max_update=2",
                              "dataset.max_tokens=800000", "task.min_sample_size=8000"])
    script = "\n".join([
        "set -euo pipefail", f"export PATH={VENV_BIN}:$PATH OMP_NUM_THREADS=1",
        shell_function(tiny_finetune, tiny_pretrain),
        # what the README's pre-training block sets before the continue-pre-training command
        "data_dir=$PWD/manifests; user_dir=$PWD/mae_ast; config_dir=$PWD/config/pretrain",
        restore, *blocks])
    proc = subprocess.run(["bash", "-c", script], cwd=workdir, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    root = workdir

    # continued pre-training started from the released weights
    log = (root / "runs" / "continued" / "hydra_train.log").read_text()
    assert f"Loaded checkpoint {root}/released/chunk_patch_75.pt" in log

    # class folders: evaluate.py's figures and classify.py's top labels
    metrics = json.loads((root / "eval_clips" / "metrics.json").read_text())
    assert metrics["split"] == "valid" and metrics["clips"] > 0 and 0 <= metrics["accuracy"] <= 1
    assert (root / "eval_clips" / "confusion.png").exists()
    lines = [line for line in proc.stdout.splitlines() if re.fullmatch(r"  \d\.\d{3}  \S+", line)]
    assert len(lines) == 3 and {line.split()[1] for line in lines} <= {"noise", "speech", "tone"}

    # ESC-50: the held-out fold is the validation split; accuracy logged
    valid = [r for r in read_log_file(root / "runs" / "esc50_fold1" / "hydra_train.log") if r.kind == "valid"]
    assert valid and all(0 <= r.number("accuracy") <= 1 for r in valid)
    esc_valid = (root / "manifests" / "esc50_fold1" / "valid.tsv").read_text().splitlines()[1:]
    assert esc_valid and all(line.startswith("1-") for line in esc_valid)

    # Speech Commands: the dataset's own test list, single-label figures
    spc = json.loads((root / "eval_spc2" / "metrics.json").read_text())
    assert spc["split"] == "test" and spc["clips"] == 9 and "accuracy" in spc
    # docs/finetuning.md: its fine-tuning command is the README's, its Python example runs
    docs = (REPO / "docs" / "finetuning.md").read_text()
    docs_command = re.findall(r"```bash\n(.*?)```", docs[docs.index("\n## Fine-tuning\n"):], re.S)[0]
    assert all(line in blocks[0] for line in docs_command.splitlines())
    example = re.findall(r"```python\n(.*?)```", docs[docs.index("\n## Using the result\n"):], re.S)[0]
    run = subprocess.run([str(VENV_BIN / "python"), "-c", example], cwd=root, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    printed = eval(run.stdout)  # {label: probability}
    assert set(printed) == {"noise", "speech", "tone"} and abs(sum(printed.values()) - 1) < 1e-4

    # AudioSet: multi-label, mAP and ROC-AUC on the eval set
    audioset = json.loads((root / "eval_as20k" / "metrics.json").read_text())
    assert audioset["split"] == "test" and audioset["clips"] == 20
    assert 0 <= audioset["mAP"] <= 1 and 0 <= audioset["roc_auc"] <= 1 and "accuracy" not in audioset
