"""Fine-tuning with the real fairseq-hydra-train on CPU: tiny models on labelled audio the test
writes (espeak-ng speech, tones and noise; single-label class folders and a multi-label CSV,
both through tools/make_manifest.py --labels), with the recipes' commands.

Runs (each a module fixture, shared by the tests):
* single: +recipe=esc50 on class folders, encoder from our pre-training checkpoint;
* resumed: the same command stopped after 3 epochs and started again to 6;
* multi: +recipe=audioset20k on multi-label data from random initialisation, weighted sampling;
* probe: +recipe=speechcommands from an original-layout checkpoint with a frozen encoder;
* layer decay: the base config, one update, model.layer_decay=0.5;
* refused: a 2x128 frame checkpoint into the 16x16 patch config."""
import dataclasses
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf
import torch

from conftest import REPO, VENV_BIN, read_wav
from mae_ast.core import MAEAST, MAEASTConfig, checkpoint
from mae_ast.fairseq_log import read_records

pytestmark = pytest.mark.slow

SR = 16000
TINY = dict(encoder_layers=2, encoder_embed_dim=32, encoder_ffn_embed_dim=64, encoder_attention_heads=2,
            max_token_length=4000, enc_sine_pos=True)
PATCH, FRAME = (16, 16), (2, 128)


def tiny_overrides(kernel=PATCH):
    kt, kc = kernel
    return [f"model.{k}={str(v).lower()}" for k, v in TINY.items()] + [
        f"model.ast_kernel_size_time={kt}", f"model.ast_kernel_size_chan={kc}",
        f"model.ast_kernel_stride_time={kt}", f"model.ast_kernel_stride_chan={kc}"]


def finetune(data, run_dir, *overrides, check=True, cwd=None):
    """fairseq-hydra-train with config/finetune/mae_ast_finetune.yaml on CPU (a tiny model),
    started in ``cwd`` (default: here)."""
    cmd = [str(VENV_BIN / "fairseq-hydra-train"), "--config-dir", str(REPO / "config" / "finetune"),
           "--config-name", "mae_ast_finetune", f"common.user_dir={REPO / 'mae_ast'}", f"task.data={data}",
           f"hydra.run.dir={run_dir}", "common.cpu=true", "dataset.num_workers=0", "common.log_interval=1",
           *tiny_overrides(), *overrides]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, cwd=cwd)
    if check and proc.returncode != 0:
        raise AssertionError(f"fairseq-hydra-train failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc


def records(proc, kind):
    return [r for r in read_records(proc.stdout) if r.kind == kind]


# ---- data and checkpoints ---------------------------------------------------------------------
def one_second_clips(speech_wavs):
    import torchaudio.functional as AF

    rng = np.random.default_rng(0)
    t = np.arange(SR) / SR
    speech = []
    for path in speech_wavs:
        wav, rate = read_wav(path)
        wav = AF.resample(torch.from_numpy(wav), rate, SR).numpy()
        speech += [wav[i:i + SR] for i in range(0, len(wav) - SR, SR)][:2]
    tones = [0.3 * np.sin(2 * np.pi * rng.uniform(300, 3000) * t + rng.uniform(0, 6)) for _ in range(12)]
    noise = [rng.uniform(0.02, 0.2) * rng.standard_normal(SR) for _ in range(12)]
    return {"speech": speech[:12], "tone": tones, "noise": noise}


def make_manifest(audio, dest, *args):
    subprocess.run([sys.executable, str(REPO / "tools" / "make_manifest.py"), str(audio), "--dest", str(dest),
                    "--seed", "1", *args], check=True, capture_output=True, text=True)
    return dest


@pytest.fixture(scope="module")
def data(tmp_path_factory, speech_wavs):
    """single/: class folders speech, tone, noise (12 one-second clips each); multi/: clips
    mixing two of them, labelled with both, beside clips of one (a CSV with quoted cells)."""
    root = tmp_path_factory.mktemp("labelled")
    clips = one_second_clips(speech_wavs)
    for label, waves in clips.items():
        (root / "folders" / label).mkdir(parents=True)
        for i, wav in enumerate(waves):
            sf.write(root / "folders" / label / f"{label}{i}.flac", wav.astype(np.float32), SR)
    rows, mixes = ["file,labels"], root / "mixes"
    mixes.mkdir()
    names = list(clips)
    for i in range(36):
        a, b = names[i % 3], names[(i + 1 + (i // 12) % 2) % 3]
        wav = clips[a][i % 12] + (clips[b][(i * 5) % 12] if i % 2 else 0)
        sf.write(mixes / f"mix{i}.flac", (0.7 * wav).astype(np.float32), SR)
        rows.append(f'mix{i}.flac,"{a},{b}"' if i % 2 else f"mix{i}.flac,{a}")
    (root / "mixes.csv").write_text("\n".join(rows) + "\n")
    return {"single": make_manifest(root / "folders", root / "single", "--labels", "folders", "--valid-percent", "0.25"),
            "multi": make_manifest(mixes, root / "multi", "--labels", str(root / "mixes.csv"), "--path-column", "file",
                                   "--label-column", "labels", "--valid-percent", "0.25")}


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """Pre-training checkpoints of tiny models: ours (patch and frame, mae_ast.core.checkpoint)
    and the original release's layout (s3prl's copy of the original model and its state dict)."""
    from s3prl.upstream.mae_ast.mae_ast import MAE_AST

    root = tmp_path_factory.mktemp("pretrained")
    out = {}
    for name, (kt, kc) in {"patch": PATCH, "frame": FRAME}.items():
        torch.manual_seed(1)
        cfg = MAEASTConfig(**TINY, decoder_layers=1, decoder_embed_dim=32, dec_sine_pos=True, ast_kernel_size_time=kt,
                           ast_kernel_size_chan=kc, ast_kernel_stride_time=kt, ast_kernel_stride_chan=kc)
        checkpoint.save(root / f"{name}.pt", MAEAST(cfg, mask_type="chunk_mask"))
        out[name] = root / f"{name}.pt"
    cfg = {"model": dataclasses.asdict(MAEASTConfig(**TINY, decoder_layers=1, decoder_embed_dim=32)),
           "task": {"sample_rate": SR, "feature_dim": 128, "feature_type": "fbank", "mask_type": "chunk_mask"}}
    torch.manual_seed(2)
    original = MAE_AST(SimpleNamespace(**cfg["model"]), SimpleNamespace(**cfg["task"]))
    torch.save({"cfg": cfg, "model": original.state_dict(), "args": None}, root / "original.pt")
    out["original"] = root / "original.pt"
    return out


def encoder_weights(path):
    """The encoder side of a checkpoint, named as in a classifier's backbone."""
    state = torch.load(path, weights_only=True)["model"]
    if "head.1.weight" in state:
        return {k[len("backbone."):]: v for k, v in state.items() if k.startswith("backbone.")}
    return {k: v for k, v in state.items() if not k.startswith(checkpoint.DECODER_SIDE)}


# ---- runs -------------------------------------------------------------------------------------
# a tiny model learns at a higher lr; one-second clips have 98 frames, less than the recipes'
# widest time masks (96, 192)
FAST = ["optimization.lr=[0.002]", "dataset.batch_size=8", "task.time_mask=20"]


@pytest.fixture(scope="module")
def single(data, pretrained, tmp_path_factory):
    run = tmp_path_factory.mktemp("single")
    esc50 = ["+recipe=esc50", f"model.pretrained_checkpoint={pretrained['patch']}", *FAST]
    return run, finetune(data["single"], run, *esc50, "optimization.max_epoch=6"), esc50


@pytest.fixture(scope="module")
def resumed(data, single, tmp_path_factory):
    run = tmp_path_factory.mktemp("resumed")
    first = finetune(data["single"], run, *single[2], "optimization.max_epoch=3")
    return first, finetune(data["single"], run, *single[2], "optimization.max_epoch=6")


@pytest.fixture(scope="module")
def multi(data, tmp_path_factory):
    run = tmp_path_factory.mktemp("multi")
    return run, finetune(data["multi"], run, "+recipe=audioset20k", "task.weighted_sampling=true", *FAST,
                         "optimization.max_epoch=8")


@pytest.fixture(scope="module")
def probe(data, pretrained, tmp_path_factory):
    """(Started elsewhere, with task.data and the checkpoint given relative to where it starts.)"""
    run, start = tmp_path_factory.mktemp("probe"), tmp_path_factory.getbasetemp()
    return run, finetune(os.path.relpath(data["single"], start), run, "+recipe=speechcommands",
                         f"model.pretrained_checkpoint={os.path.relpath(pretrained['original'], start)}",
                         "model.freeze_encoder=true", *FAST, "optimization.max_epoch=2",
                         "checkpoint.no_epoch_checkpoints=false", "checkpoint.keep_last_epochs=-1", cwd=start)


# ---- tests ------------------------------------------------------------------------------------
def test_single_label_loss_falls_and_accuracy_is_logged(single):
    run, proc, _ = single
    assert "encoder initialised from" in proc.stdout and "single-label" in proc.stdout
    epochs = records(proc, "train")
    assert len(epochs) == 6
    assert epochs[-1].number("loss") < 0.7 * epochs[0].number("loss"), [e.number("loss") for e in epochs]
    valid = records(proc, "valid")
    for key in ("accuracy", "mAP", "roc_auc"):
        assert all(0 <= r.number(key) <= 1 for r in valid), key
    assert valid[-1].number("accuracy") >= 0.7, [r.number("accuracy") for r in valid]


def valid_clips(data_dir):
    """The validation split's waveforms and (n, classes) multi-hot targets, read back from the
    manifest and labels (mae_ast.labels)."""
    from mae_ast.labels import LabelSet, load_labels
    from mae_ast.manifest import Manifest

    manifest = Manifest.load(str(Path(data_dir) / "valid.tsv"))
    label_set = LabelSet.load(str(Path(data_dir) / "labels.csv"))
    targets = torch.zeros(len(manifest), len(label_set))
    for i, clip in enumerate(load_labels(str(Path(data_dir) / "valid.lbl"), manifest, label_set)):
        targets[i, clip] = 1
    wavs = [torch.from_numpy(sf.read(manifest.audio_path(i), dtype="float32")[0]) for i in range(len(manifest))]
    return wavs, targets


def test_best_checkpoint_follows_the_metric(single, multi, data):
    """checkpoint_best.pt is the epoch with the best valid accuracy (single) or mAP (multi), and
    that figure is what scikit-learn computes from the checkpoint's predictions on the whole
    validation set."""
    from sklearn.metrics import accuracy_score, average_precision_score

    for (run, proc, *_), metric, split in ((single, "accuracy", "single"), (multi, "mAP", "multi")):
        figures = [r.number(metric) for r in records(proc, "valid")]
        best = torch.load(run / "checkpoints" / "checkpoint_best.pt", weights_only=True)
        assert best["extra_state"]["best"] == pytest.approx(max(figures), abs=1e-4), metric
        assert records(proc, "valid")[-1].number(f"best_{metric}") == pytest.approx(max(figures), abs=1e-4)
        model, info = checkpoint.load_classifier(str(run / "checkpoints" / "checkpoint_best.pt"))
        wavs, targets = valid_clips(data[split])
        scores = model.predict(wavs, info.window_samples, info.sigmoid).numpy()
        if metric == "accuracy":
            expected = accuracy_score(targets.argmax(1), scores.argmax(1))
        else:
            expected = np.mean([average_precision_score(targets[:, c], scores[:, c])
                                for c in range(targets.size(1)) if targets[:, c].any()])
        assert best["extra_state"]["best"] == pytest.approx(expected, abs=2e-4), metric


def test_checkpoint_loads_with_load_classifier_and_predicts_probabilities(single, multi, data):
    wavs, _ = valid_clips(data["single"])
    wavs.append(torch.cat(wavs[:3]))  # a clip longer than the window: windows, averaged
    model, info = checkpoint.load_classifier(str(single[0] / "checkpoints" / "checkpoint_last.pt"))
    assert info.label_names == ["noise", "speech", "tone"] and info.window_samples == 82160
    assert not info.multi_label and not info.sigmoid  # single-label data, cross-entropy (esc50 recipe)
    probs = model.predict(wavs, info.window_samples, info.sigmoid)
    assert probs.shape == (len(wavs), 3)
    torch.testing.assert_close(probs.sum(1), torch.ones(len(wavs)))
    model, info = checkpoint.load_classifier(str(multi[0] / "checkpoints" / "checkpoint_last.pt"))
    assert info.multi_label and info.sigmoid and info.cfg["task"]["multi_label"] is True
    probs = model.predict(wavs, info.window_samples, info.sigmoid)
    assert bool(((probs > 0) & (probs < 1)).all()) and not torch.allclose(probs.sum(1), torch.ones(len(wavs)))


def test_multi_label_from_random_init_learns_and_reports_map(multi):
    run, proc = multi
    assert "random initialisation" in proc.stdout and "multi-label" in proc.stdout
    valid = records(proc, "valid")  # (training losses of mixed-up clips are noisy)
    assert valid[-1].number("loss") < 0.8 * valid[0].number("loss"), [r.number("loss") for r in valid]
    assert all("accuracy" not in r.values for r in valid), "no accuracy for multi-label data"
    assert valid[-1].number("mAP") > 0.6 and valid[-1].number("roc_auc") > 0.6, valid[-1].values


def test_resume_continues_from_the_checkpoint(single, resumed):
    first, second = resumed
    assert "No existing checkpoint found" in first.stdout
    done = int(records(first, "train")[-1].number("num_updates"))
    assert f"Loaded checkpoint checkpoints/checkpoint_last.pt (epoch 4 @ {done} updates)" in second.stdout
    straight = {int(r.number("num_updates")): r for r in records(single[1], "train_inner")}
    again = {int(r.number("num_updates")): r for r in records(second, "train_inner")}
    assert sorted(again) == list(range(done + 1, 2 * done + 1)), "the update count continues"
    for update in again:  # the same losses: weights, optimizer and data order from the checkpoint
        assert again[update].number("loss") == pytest.approx(straight[update].number("loss"), abs=2e-4), update


def test_frozen_encoder_keeps_the_original_layout_weights_and_trains_the_head(probe, pretrained):
    """A linear probe with the fine-tuning command: the encoder (BatchNorm statistics included:
    a frozen encoder runs in eval mode) stays the original-layout checkpoint's, the head learns."""
    run, proc = probe
    assert "encoder initialised from" in proc.stdout
    original = encoder_weights(pretrained["original"])
    heads = []
    for epoch in (1, 2):
        state = torch.load(run / "checkpoints" / f"checkpoint{epoch}.pt", weights_only=True)
        encoder = encoder_weights(run / "checkpoints" / f"checkpoint{epoch}.pt")
        assert set(encoder) == set(original)
        for name, value in original.items():
            assert torch.equal(encoder[name], value), name
        heads.append(state["model"]["head.1.weight"])
    _, info = checkpoint.load_classifier(str(run / "checkpoints" / "checkpoint_last.pt"))
    assert info.sigmoid and not info.multi_label  # the speech commands recipe: BCE on single-label data
    assert not torch.equal(heads[0], heads[1]), "the head trains"


def test_layer_decay_gives_lower_layers_smaller_steps(data, pretrained, tmp_path):
    """After one Adam update every element moves by about the lr of its group (m / sqrt(v) is
    +-1 on the first step), so the change of each layer's weights reads its lr."""
    lr = 1e-3
    proc = finetune(data["single"], tmp_path, f"model.pretrained_checkpoint={pretrained['patch']}", "model.layer_decay=0.5",
                    f"optimization.lr=[{lr}]", "optimization.max_update=1", "dataset.batch_size=8")
    lrs = sorted({float(v) for r in records(proc, "train_inner") for k, v in r.values.items() if k.startswith("lr_")})
    assert lrs == pytest.approx([lr / 8, lr / 4, lr / 2, lr]), lrs
    before, after = encoder_weights(pretrained["patch"]), encoder_weights(tmp_path / "checkpoints" / "checkpoint_last.pt")
    # (not the key projections: softmax ignores part of their gradient, which is then ~0)
    depth = {"post_extract_proj.weight": 0, "encoder.layers.0.fc1.weight": 1, "encoder.layers.0.self_attn.v_proj.weight": 1,
             "encoder.layers.1.fc2.weight": 2, "encoder.layers.1.final_layer_norm.weight": 2}
    for name, d in depth.items():
        step = (after[name] - before[name]).abs().median().item()
        assert step == pytest.approx(lr * 0.5 ** (3 - d), rel=0.05), (name, step)


def test_frame_checkpoint_into_patch_model_is_refused_saying_what_differs(data, pretrained, tmp_path):
    proc = finetune(data["single"], tmp_path, f"model.pretrained_checkpoint={pretrained['frame']}", check=False)
    assert proc.returncode != 0
    message = proc.stdout + proc.stderr
    assert f"{pretrained['frame']}: checkpoint does not match the model (a 2x128 checkpoint into a 16x16 model" in message
    assert "model.ast_kernel_size_time: checkpoint 2, model 16" in message
    assert "model.ast_kernel_size_time: checkpoint 2, model 16" in (tmp_path / "hydra_train.log").read_text()


def test_labels_out_of_step_with_the_manifest_stop_with_file_and_line(data, tmp_path):
    for case in ("unknown", "count"):
        folder = tmp_path / case
        folder.mkdir()
        for name in ("train.tsv", "train.lbl", "valid.tsv", "valid.lbl", "labels.csv"):
            (folder / name).write_text((Path(data["single"]) / name).read_text())
        if case == "unknown":
            lines = (folder / "train.lbl").read_text().split("\n")
            lines[4] = "dog"
            (folder / "train.lbl").write_text("\n".join(lines))
            expected = f"{folder}/train.lbl:5: unknown label 'dog'"
        else:
            (folder / "valid.lbl").write_text((folder / "valid.lbl").read_text() + "tone\n")
            expected = f"{folder}/valid.lbl:"
        proc = finetune(folder, tmp_path / f"run_{case}", check=False)
        assert proc.returncode != 0 and expected in proc.stdout + proc.stderr, (proc.stdout + proc.stderr)[-2000:]
    assert "label lines, but" in proc.stdout + proc.stderr


def test_restoring_a_checkpoint_of_another_label_set_is_refused_saying_why(single, data, tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    for name in ("train.tsv", "train.lbl", "valid.tsv", "valid.lbl"):
        (folder / name).write_text((Path(data["single"]) / name).read_text())
    (folder / "labels.csv").write_text("index,name\n0,noise\n1,speech\n2,tone\n3,whistle\n")
    proc = finetune(folder, tmp_path / "run", f"checkpoint.restore_file={single[0] / 'checkpoints' / 'checkpoint_last.pt'}",
                    check=False)
    message = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "shape of head.1.weight: checkpoint (3, 32), model (4, 32)" in message
    assert "was labels.csv changed?" in message
