"""A clip's class scores never depend on what else is in its batch: the fine-tuned classifier
alone and beside longer clips (padded), in training mode with dropout off and in eval mode,
through ``predict`` and through the road ``tools/evaluate.py`` and ``tools/classify.py`` share."""
import copy
import csv
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch

from conftest import REPO
from mae_ast.classification import score_files
from mae_ast.core import checkpoint
from mae_ast.core.checkpoint import load_classifier
from mae_ast.core.classifier import MAEASTClassifier
from mae_ast.core.config import MAEASTConfig

SR = 16000
NO_DROPOUT = dict(dropout=0.0, attention_dropout=0.0, activation_dropout=0.0, encoder_layerdrop=0.0)


def classifier(kernel=(16, 16)):
    torch.manual_seed(0)
    cfg = MAEASTConfig(encoder_layers=2, encoder_embed_dim=32, decoder_embed_dim=32, encoder_ffn_embed_dim=64,
                       encoder_attention_heads=4, enc_sine_pos=True, max_token_length=3000,
                       ast_kernel_size_time=kernel[0], ast_kernel_size_chan=kernel[1],
                       ast_kernel_stride_time=kernel[0], ast_kernel_stride_chan=kernel[1], **NO_DROPOUT)
    model = MAEASTClassifier(cfg, 5)
    with torch.no_grad():  # running statistics of real log-mels, not the initial 0 / 1
        model.backbone.batch_norm.running_mean.fill_(-6.0)
        model.backbone.batch_norm.running_var.fill_(9.0)
        model.head[-1].weight.mul_(4)  # confident, not saturated: a change shows in probabilities
    return model


def clips():
    g = torch.Generator().manual_seed(1)
    return torch.randn(11200, generator=g) * 0.1, [torch.randn(n, generator=g) * s for n, s in ((41000, 0.5), (30500, 0.02))]


@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("kernel", [(16, 16), (2, 128)], ids=["patch", "frame"])
def test_logits_alone_equal_logits_in_a_padded_batch(mode, kernel):
    """In training the encoder normalises with running statistics (updated after the batch),
    so even training-mode logits, dropout off, are the clip's own."""
    model = getattr(classifier(kernel), mode)()
    clip, others = clips()
    alone = copy.deepcopy(model)([clip])  # a fresh copy each: training updates the statistics
    listed = copy.deepcopy(model)([others[0], clip, others[1]])[1]
    padded = torch.full((3, 41000), 7.0)  # padding content must not matter either
    padded[0], padded[1, :11200], padded[2, :30500] = others[0], clip, others[1]
    batched = copy.deepcopy(model)(padded, torch.tensor([41000, 11200, 30500]))[1]
    torch.testing.assert_close(listed, alone[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(batched, alone[0], atol=1e-5, rtol=1e-5)


def test_training_still_tracks_the_fine_tuning_data():
    """The running statistics follow the data they are fine-tuned on (after the batch)."""
    model = classifier().train()
    before = model.backbone.batch_norm.running_mean.clone()
    model([torch.randn(16000) * 0.1])
    assert not torch.equal(model.backbone.batch_norm.running_mean, before)


def test_predict_is_independent_of_neighbours_and_batch_size():
    model = classifier().eval()
    clip, others = clips()
    alone = model.predict([clip], window_samples=SR, sigmoid=False)
    for batch_size in (1, 2, 5):
        among = model.predict([others[0], clip, others[1]], window_samples=SR, sigmoid=False, batch_size=batch_size)
        torch.testing.assert_close(among[1], alone[0], atol=1e-7, rtol=1e-5)
    assert alone.max() > 0.5, "a confident model: a difference would show"


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    root = tmp_path_factory.mktemp("batch")
    path = root / "classifier.pt"
    checkpoint.save_classifier(path, classifier().eval(), list("abcde"), multi_label=False, window_samples=SR)
    clip, others = clips()
    files = []
    for name, wav in (("long.wav", others[0]), ("clip.flac", clip), ("mid.wav", others[1])):
        sf.write(root / name, wav.clamp(-1, 1).numpy(), SR, subtype="FLOAT" if name.endswith("wav") else "PCM_24")
        files.append(root / name)
    return path, files


def test_score_files_gives_each_file_its_own_scores(saved):
    """The road both tools take (decode, window, batch, classify)."""
    path, files = saved
    model, info = load_classifier(str(path))
    alone = score_files(model, info, [str(files[1])], batch_size=1).probs[0]
    together = score_files(model, info, [str(f) for f in files], batch_size=3).probs[1]
    np.testing.assert_allclose(together, alone, atol=1e-7, rtol=1e-5)


@pytest.mark.slow
def test_evaluate_tool_scores_a_clip_alike_alone_and_in_a_batch(saved, tmp_path):
    path, files = saved
    rows = {}
    for name, listed, batch in (("alone", files[1:2], 1), ("together", files, 8)):
        data = tmp_path / name
        data.mkdir()
        (data / "test.tsv").write_text(f"{files[0].parent}\n" + "".join(f"{f.name}\t{sf.info(f).frames}\n" for f in listed))
        (data / "test.lbl").write_text("a\n" * len(listed))
        (data / "labels.csv").write_text("index,name\n" + "".join(f"{i},{c}\n" for i, c in enumerate("abcde")))
        subprocess.run([sys.executable, str(REPO / "tools/evaluate.py"), str(path), str(data), "--split", "test",
                        "--out", str(tmp_path / f"eval_{name}"), "--batch-size", str(batch)], check=True,
                       capture_output=True, cwd=REPO)
        with open(tmp_path / f"eval_{name}" / "predictions.csv") as f:
            rows[name] = next(r for r in csv.DictReader(f) if r["file"] == "clip.flac")
    assert rows["alone"] == rows["together"]
