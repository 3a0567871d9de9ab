"""Hub folders (mae_ast.core.hub; tools/export_checkpoint.py --format hub): config.json +
model.safetensors + README.md, read by every loader without pickle.

Round trips of tiny checkpoints trained on espeak-ng speech (patch and frame, our layout), of an
original-layout one (s3prl's copy of the original model) and of a classifier trained here: the
folder gives the same weights, features, reconstructions and predictions as the pickle in the
core loaders, ``MAEAST.from_pretrained``, the s3prl upstream, the HEAR module, the analysis and
fine-tuning initialisation, and the tools (extract_features, visualize, classify, evaluate).
``torch.load`` is never reached for a folder; a folder whose weights do not fit its config is
refused, saying what differs."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from conftest import REPO
from mae_ast import analysis, classification
from mae_ast.core import MAEAST, checkpoint, fbank, hub
from mae_ast.core.checkpoint import CheckpointError
from mae_ast.core.extractor import extract
from test_classify_tools import CLASSES, labelled, sound, trained  # noqa: F401  (fixtures)
from test_hear import original_layout_checkpoint, speech, tiny_config, train_and_save  # noqa: F401

sys.path.insert(0, str(REPO))

import mae_ast.hear as hear  # noqa: E402
from s3prl_upstream.expert import UpstreamExpert  # noqa: E402
from s3prl_upstream.hubconf import mae_ast as s3prl_entry  # noqa: E402

SR = 16000
PRETRAINED = ["patch", "frame", "original"]


def run(tool, *args):
    return subprocess.run([sys.executable, str(REPO / "tools" / tool), *map(str, args)],
                          capture_output=True, text=True, timeout=300)


def export_hub(source, folder, *flags):
    proc = run("export_checkpoint.py", source, folder, "--format", "hub", *flags)
    assert proc.returncode == 0, proc.stderr
    return str(folder)


@pytest.fixture(scope="module")
def pickles(tmp_path_factory, speech_wavs, original_layout_checkpoint, trained):  # noqa: F811
    """Pickled checkpoints: patch and frame models with both position tables (a few real
    training steps), the original release's layout, a fine-tuned classifier."""
    root = tmp_path_factory.mktemp("hub_pickles")
    return {"patch": train_and_save(tiny_config("patch"), speech_wavs, root / "patch.pt", "chunk_mask"),
            "frame": train_and_save(tiny_config("frame"), speech_wavs, root / "frame.pt", "random_mask"),
            "original": original_layout_checkpoint, "classifier": str(trained)}


@pytest.fixture(scope="module")
def folders(pickles, tmp_path_factory):
    root = tmp_path_factory.mktemp("hub_folders")
    return {kind: export_hub(path, root / kind) for kind, path in pickles.items()}


def clips(speech_wavs):
    """Real speech of different lengths (one shorter than a patch model's token)."""
    return [speech(speech_wavs, s, i) for i, s in enumerate((2.3, 0.9, 0.12))]


def assert_same_tensors(a, b):
    if isinstance(a, dict):
        assert sorted(a) == sorted(b)
        for k in a:
            assert_same_tensors(a[k], b[k])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            assert_same_tensors(x, y)
    elif isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)
    else:
        assert a == b


# ---- the folder -------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", PRETRAINED + ["classifier"])
def test_folder_holds_the_checkpoint_without_position_tables(kind, pickles, folders):
    folder = Path(folders[kind])
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    pickled = checkpoint.load(pickles[kind])
    with safe_open(str(folder / "model.safetensors"), framework="pt") as f:
        stored = set(f.keys())
    tables = {k for k in pickled["model"] if k.endswith("sine_pos_embed.pe")}
    assert tables and not tables & stored  # every table left out ...
    assert stored | tables == set(pickled["model"])  # ... and nothing else
    table_bytes = sum(pickled["model"][k].numel() * 4 for k in tables)
    saved = Path(pickles[kind]).stat().st_size - (folder / "model.safetensors").stat().st_size
    assert table_bytes <= saved < table_bytes + 64 * 1024  # smaller by the tables, give or take headers
    config = json.loads((folder / "config.json").read_text())
    assert sorted(config["recomputed_buffers"]) == sorted(tables)
    assert config["features"]["num_mel_bins"] == 128 and config["features"]["sample_rate"] == SR
    # the loaders get back exactly the pickle's cfg sections and weights
    loaded = checkpoint.load(str(folder))
    assert_same_tensors(loaded["model"], pickled["model"])
    for section in ("model", "task"):
        assert loaded["cfg"][section] == dict(pickled["cfg"][section])


def test_model_card(folders, pickles):
    card = (Path(folders["patch"]) / "README.md").read_text()
    assert card.startswith("---\n") and "# MAE-AST patch model (16x16 tokens), pre-trained" in card
    assert "| encoder | 3 layers, 32 wide, 2 heads, FFN 64, post-LN, gelu |" in card
    assert "| masking | `chunk_mask`, 75% of the tokens masked |" in card
    assert "MAEAST.from_pretrained" in card and "snapshot_download" in card
    card = (Path(folders["classifier"]) / "README.md").read_text()
    assert "fine-tuned classifier" in card and "`chirp`, `noise`, `tone`" in card
    assert "| labels | 3, single-label |" in card and "| window | 1 s" in card
    config = json.loads((Path(folders["classifier"]) / "config.json").read_text())
    assert config["label_names"] == CLASSES and config["multi_label"] is False


def test_results_reach_the_card(pickles, tmp_path):
    metrics = tmp_path / "metrics.json"
    metrics.write_text(json.dumps({"checkpoint": "x", "clips": 12, "accuracy": 0.9166, "mAP": 0.97,
                                   "per_class": {"tone": {"AP": 1.0}}}))
    folder = export_hub(pickles["classifier"], tmp_path / "hub", "--results", metrics)
    card = (Path(folder) / "README.md").read_text()
    assert "| accuracy | 0.9166 |" in card and "| mAP | 0.97 |" in card and "From `metrics.json`." in card
    (tmp_path / "nothing.json").write_text(json.dumps({"clips": 3}))
    proc = run("export_checkpoint.py", pickles["patch"], tmp_path / "h2", "--format", "hub",
               "--results", tmp_path / "nothing.json")
    assert proc.returncode == 2 and "no figures in it" in proc.stderr


def test_default_export_is_still_one_checkpoint_file(pickles, folders, tmp_path):
    proc = run("export_checkpoint.py", pickles["patch"], tmp_path / "slim.pt")
    assert proc.returncode == 0, proc.stderr
    slim = torch.load(tmp_path / "slim.pt", map_location="cpu", weights_only=True)
    assert sorted(slim) == ["cfg", "model"] and "enc_sine_pos_embed.pe" in slim["model"]
    # a folder goes back to a file (for s3prl's stock upstream) with the same weights
    proc = run("export_checkpoint.py", folders["patch"], tmp_path / "back.pt")
    assert proc.returncode == 0, proc.stderr
    back = torch.load(tmp_path / "back.pt", map_location="cpu", weights_only=True)
    assert_same_tensors(back["model"], slim["model"])
    proc = run("export_checkpoint.py", pickles["patch"], tmp_path / "slim.pt", "--format", "hub")
    assert proc.returncode == 2 and "is a file; --format hub writes a folder" in proc.stderr
    proc = run("export_checkpoint.py", pickles["patch"], tmp_path / "x.pt", "--results", tmp_path / "slim.pt")
    assert proc.returncode == 2 and "--results is for --format hub" in proc.stderr


def test_a_table_that_is_not_ours_stays_in_the_weights(pickles, tmp_path):
    state = checkpoint.load(pickles["patch"])
    state["model"]["enc_sine_pos_embed.pe"] = state["model"]["enc_sine_pos_embed.pe"] * 0.5
    config = hub.write_folder(state, str(tmp_path / "hub"))
    assert list(config["recomputed_buffers"]) == ["dec_sine_pos_embed.pe"]
    assert_same_tensors(checkpoint.load(str(tmp_path / "hub"))["model"], state["model"])


def test_save_pretrained_and_from_pretrained(speech_wavs, tmp_path):
    torch.manual_seed(3)
    model = MAEAST(tiny_config("frame"), mask_type="random_mask").eval()
    hub.save_pretrained(model, str(tmp_path / "hub"), sample_rate=SR)
    again = MAEAST.from_pretrained(str(tmp_path / "hub"))
    assert not again.training and again.cfg == model.cfg and again.cfg_task["mask_type"] == "random_mask"
    assert_same_tensors(again.state_dict(), model.state_dict())


# ---- every loader gives the pickle's numbers --------------------------------------------------
@pytest.mark.parametrize("kind", PRETRAINED)
def test_features_equal_in_every_loader(kind, pickles, folders, speech_wavs):
    wavs = clips(speech_wavs)
    pickle_path, folder = pickles[kind], folders[kind]
    with torch.no_grad():
        # the core's extraction
        a = checkpoint.load_model(pickle_path, decoder=False)[0].eval()
        b = checkpoint.load_model(folder, decoder=False)[0].eval()
        ea, eb = extract(a, wavs), extract(b, wavs)
        assert_same_tensors(list(ea.hidden_states) + [ea.output], list(eb.hidden_states) + [eb.output])
        # the whole pre-training model: the same mask drawn, the same reconstructions
        a, b = MAEAST.from_pretrained(pickle_path), MAEAST.from_pretrained(folder)
        source = fbank(torch.stack([w[: int(0.9 * SR)] for w in wavs[:2]]))
        torch.manual_seed(1)
        out_a = a(source)
        torch.manual_seed(1)
        out_b = b(source)
        for key in ("logit_m_list_recon", "logit_m_list_class", "target_m_list"):
            assert_same_tensors(out_a[key], out_b[key])
        # the s3prl upstream, through its hub entry as run_downstream.py -k calls it
        ua, ub = UpstreamExpert(pickle_path).eval(), s3prl_entry(folder).eval()
        assert ua.get_downsample_rates() == ub.get_downsample_rates()
        assert_same_tensors(ua(wavs), ub(wavs))
        # the HEAR module
        ha, hb = hear.load_model(pickle_path), hear.load_model(folder)
        batch = torch.stack([w[: int(0.9 * SR)] for w in wavs[:2]])
        assert_same_tensors(hear.get_timestamp_embeddings(batch, ha), hear.get_timestamp_embeddings(batch, hb))
        assert_same_tensors(hear.get_scene_embeddings(batch, ha), hear.get_scene_embeddings(batch, hb))
        # the analysis (tools/visualize.py, the demo's report)
        ra = analysis.reconstruct(analysis.load(pickle_path), wavs[0], seed=2)
        rb = analysis.reconstruct(analysis.load(folder), wavs[0], seed=2)
        for key in ("input", "reconstruction", "mask"):
            np.testing.assert_array_equal(ra[key], rb[key])
    # fine-tuning's model.pretrained_checkpoint: the encoder initialised alike
    from mae_ast.core.classifier import MAEASTClassifier

    cfg = checkpoint.model_config(checkpoint.load(folder)["cfg"]["model"])
    heads = []
    for path in (pickle_path, folder):
        classifier = MAEASTClassifier(cfg, 3)
        checkpoint.load_encoder_weights(classifier.backbone, path)
        heads.append(classifier.backbone.state_dict())
    assert_same_tensors(heads[0], heads[1])


def test_classifier_predictions_equal(pickles, folders):
    rng = np.random.default_rng(4)
    wavs = [torch.tensor(sound(k, s, rng), dtype=torch.float32) for k, s in (("tone", 2.5), ("noise", 0.4))]
    (ma, ia), (mb, ib) = (classification.load_for_inference(p) for p in (pickles["classifier"], folders["classifier"]))
    assert (ia.label_names, ia.multi_label, ia.sigmoid, ia.window_samples) == \
        (ib.label_names, ib.multi_label, ib.sigmoid, ib.window_samples)
    with torch.no_grad():
        assert_same_tensors(ma.predict(wavs, ia.window_samples, ia.sigmoid),
                            mb.predict(wavs, ib.window_samples, ib.sigmoid))


def test_tools_read_folders(pickles, folders, labelled, tmp_path, speech_wavs):  # noqa: F811
    data, audio_dir = labelled
    # classify.py and evaluate.py: the same output from the folder
    files = sorted(audio_dir.iterdir())[:4]
    a, b = run("classify.py", pickles["classifier"], *files), run("classify.py", folders["classifier"], *files)
    assert a.returncode == 0 and b.returncode == 0, a.stderr + b.stderr
    assert a.stdout == b.stdout and a.stdout.strip()
    for name, path in (("pickle", pickles["classifier"]), ("folder", folders["classifier"])):
        proc = run("evaluate.py", path, data, "--out", tmp_path / name)
        assert proc.returncode == 0, proc.stderr
    metrics = [json.loads((tmp_path / n / "metrics.json").read_text()) for n in ("pickle", "folder")]
    assert [{k: v for k, v in m.items() if k != "checkpoint"} for m in metrics][0] == \
        {k: v for k, v in metrics[1].items() if k != "checkpoint"}
    assert (tmp_path / "pickle" / "predictions.csv").read_text() == (tmp_path / "folder" / "predictions.csv").read_text()
    # extract_features.py: the same arrays
    speech_dir = tmp_path / "speech"
    speech_dir.mkdir()
    for i, w in enumerate(clips(speech_wavs)):
        sf.write(speech_dir / f"utt{i}.flac", w.numpy(), SR)
    for name, path in (("pickle", pickles["frame"]), ("folder", folders["frame"])):
        proc = run("extract_features.py", path, speech_dir, "--out", tmp_path / f"feat_{name}")
        assert proc.returncode == 0, proc.stderr
    for i in range(3):
        np.testing.assert_array_equal(np.load(tmp_path / "feat_pickle" / f"utt{i}.npy"),
                                      np.load(tmp_path / "feat_folder" / f"utt{i}.npy"))
    # visualize.py draws from a folder
    proc = run("visualize.py", folders["patch"], speech_dir / "utt0.flac", "--out", tmp_path / "fig")
    assert proc.returncode == 0, proc.stderr
    assert any(p.suffix == ".png" for p in (tmp_path / "fig").rglob("*"))


# ---- no pickle ----------------------------------------------------------------------------------
def test_torch_load_is_never_called_on_a_folder(pickles, folders, monkeypatch):
    calls = []

    def refuse(*args, **kwargs):  # recorded too: a loader could catch the error and go on
        calls.append(args[:1])
        raise AssertionError(f"torch.load called with {args[:1]}")

    import torch.serialization

    monkeypatch.setattr(torch, "load", refuse)
    monkeypatch.setattr(torch.serialization, "load", refuse)
    for kind in PRETRAINED:
        checkpoint.load(folders[kind])
        checkpoint.load_model(folders[kind], decoder=False)
        MAEAST.from_pretrained(folders[kind])
        hear.load_model(folders[kind])
        UpstreamExpert(folders[kind])
        analysis.load(folders[kind])
    checkpoint.load_classifier(folders["classifier"])
    classification.load_for_inference(folders["classifier"])
    assert calls == []
    with pytest.raises(CheckpointError, match="torch.load called"):  # the guard does catch a pickle
        checkpoint.load(pickles["patch"])


# ---- refusals ---------------------------------------------------------------------------------
def edited_copy(folder, tmp_path, edit=None, name="edited"):
    copy = tmp_path / name
    shutil.copytree(folder, copy)
    if edit:
        config = json.loads((copy / "config.json").read_text())
        edit(config)
        (copy / "config.json").write_text(json.dumps(config))
    return str(copy)


def test_a_folder_whose_weights_do_not_fit_its_config_is_refused(folders, tmp_path):
    def more_layers(c):
        c["model"]["encoder_layers"] = 4

    with pytest.raises(CheckpointError) as e:
        checkpoint.load(edited_copy(folders["patch"], tmp_path, more_layers, "layers"))
    assert "model.safetensors does not match the model config.json describes" in str(e.value)
    assert "encoder layers: model.safetensors 3, model config.json describes 4" in str(e.value)

    def wider(c):
        c["model"]["encoder_embed_dim"] = c["model"]["decoder_embed_dim"] = 48

    with pytest.raises(CheckpointError, match=r"shape of post_extract_proj.weight: model.safetensors \(32, 256\), "
                                              r"model config.json describes \(48, 256\)"):
        hear.load_model(edited_copy(folders["frame"], tmp_path, wider, "wider"))

    def extra_label(c):
        c["label_names"] = c["label_names"] + ["bell"]

    with pytest.raises(CheckpointError, match="label_names lists 4 labels, the classifier has 3 outputs"):
        checkpoint.load_classifier(edited_copy(folders["classifier"], tmp_path, extra_label, "labels"))

    def pretraining_cfg(c):
        c["model"]["_name"] = "mae_ast"

    with pytest.raises(CheckpointError, match="not in model config.json describes: backbone.batch_norm"):
        checkpoint.load(edited_copy(folders["classifier"], tmp_path, pretraining_cfg, "kind"))


def test_broken_folders_are_named(folders, pickles, tmp_path):
    missing_weights = Path(edited_copy(folders["patch"], tmp_path, name="no_weights"))
    (missing_weights / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="model.safetensors is missing"):
        checkpoint.load(str(missing_weights))
    with pytest.raises(CheckpointError, match="a folder without config.json"):
        checkpoint.load(str(tmp_path))
    garbage = Path(edited_copy(folders["patch"], tmp_path, name="garbage"))
    (garbage / "model.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        checkpoint.load(str(garbage))
    newer = edited_copy(folders["patch"], tmp_path, lambda c: c.update(format_version=99), "newer")
    with pytest.raises(CheckpointError, match="format_version 99 is newer"):
        checkpoint.load(newer)
    # a weight dropped from the file: named
    dropped = Path(edited_copy(folders["patch"], tmp_path, name="dropped"))
    weights = load_file(str(dropped / "model.safetensors"))
    del weights["batch_norm.running_var"]
    save_file(weights, str(dropped / "model.safetensors"))
    with pytest.raises(CheckpointError, match="missing in model.safetensors: batch_norm.running_var"):
        checkpoint.load(str(dropped))
    # the tools say it in their one-line error
    proc = run("extract_features.py", str(dropped), tmp_path, "--out", tmp_path / "feat")
    assert proc.returncode == 2 and "batch_norm.running_var" in proc.stderr
    # and a classifier folder is not a pre-training model
    with pytest.raises(CheckpointError, match="a fine-tuned classifier, not a pre-training checkpoint"):
        hear.load_model(folders["classifier"])
