"""tools/classify.py and tools/evaluate.py on a tiny classifier trained here (tones vs noise vs
chirps, plain torch), with real audio files written in several formats."""
import csv
import json
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch
from sklearn.metrics import average_precision_score

from conftest import REPO
from mae_ast.core import checkpoint
from mae_ast.core.classifier import MAEASTClassifier
from mae_ast.core.config import MAEASTConfig
from mae_ast.labels import LabelSet
from test_tools import tiny_checkpoint

SR = 16000
CLASSES = ["chirp", "noise", "tone"]


def sound(kind: str, seconds: float, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    if kind == "tone":
        return 0.5 * np.sin(2 * np.pi * rng.uniform(300, 600) * t)
    if kind == "noise":
        return 0.3 * rng.standard_normal(len(t))
    f0 = rng.uniform(200, 400)
    return 0.5 * np.sin(2 * np.pi * (f0 * t + 1500 * t ** 2))


def tiny_cfg():
    return MAEASTConfig(encoder_layers=1, encoder_embed_dim=32, decoder_embed_dim=32, encoder_ffn_embed_dim=64,
                        encoder_attention_heads=2, max_token_length=4000, enc_sine_pos=True,
                        dropout=0.0, attention_dropout=0.0)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A classifier that tells the three sounds apart, saved as a fine-tuned checkpoint."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    model = MAEASTClassifier(tiny_cfg(), len(CLASSES))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(80):
        labels = rng.integers(0, 3, 12)
        wavs = torch.tensor(np.stack([sound(CLASSES[k], 1.0, rng) for k in labels]), dtype=torch.float32)
        loss = torch.nn.functional.cross_entropy(model(wavs), torch.tensor(labels))
        opt.zero_grad()
        loss.backward()
        opt.step()
    path = tmp_path_factory.mktemp("classifier") / "classifier.pt"
    checkpoint.save_classifier(path, model.eval(), CLASSES, multi_label=False, window_samples=SR)
    return path


@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    """A test split of 12 clips (0.5 to 2.5 s, flac and wav), its .lbl and labels.csv."""
    root = tmp_path_factory.mktemp("labelled")
    audio = root / "audio"
    audio.mkdir()
    rng = np.random.default_rng(1)
    names, labels = [], []
    for i in range(12):
        kind = CLASSES[i % 3]
        name = f"{kind}_{i}.{'flac' if i % 2 else 'wav'}"
        wav = sound(kind, 0.5 + 2 * rng.random(), rng)
        sf.write(audio / name, wav, SR)
        names.append((name, len(wav)))
        labels.append(kind)
    data = root / "data"
    data.mkdir()
    (data / "test.tsv").write_text(f"{audio}\n" + "".join(f"{n}\t{s}\n" for n, s in names))
    (data / "test.lbl").write_text("".join(f"{k}\n" for k in labels))
    LabelSet(str(data / "labels.csv"), sorted(CLASSES)).write(str(data / "labels.csv"))
    return data, audio


def run(tool, *args):
    return subprocess.run([sys.executable, str(REPO / "tools" / tool), *map(str, args)],
                          capture_output=True, text=True, timeout=300)


def test_classify_prints_top_labels_of_files_of_any_length(trained, tmp_path):
    rng = np.random.default_rng(5)
    sf.write(tmp_path / "tone.ogg", sound("tone", 0.3, rng), SR)  # shorter than one window
    sf.write(tmp_path / "noise.flac", sound("noise", 3.7, rng), SR)  # several windows
    (tmp_path / "broken.wav").write_bytes(b"RIFF....not audio")
    proc = run("classify.py", trained, tmp_path / "tone.ogg", tmp_path / "noise.flac", tmp_path / "broken.wav",
               "--top-k", "2")
    assert proc.returncode == 0, proc.stderr
    assert "broken.wav" in proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].endswith("tone.ogg") and lines[3].endswith("noise.flac") and len(lines) == 6
    scores = [float(line.split()[0]) for line in lines[1:3]]
    assert scores[0] >= scores[1] and lines[1].split()[1] == "tone"
    assert lines[4].split()[1] == "noise"
    # the printed scores are the model's window-averaged softmax
    model, info = checkpoint.load_classifier(str(trained))
    from mae_ast import audio
    expected = model.predict([audio.read(str(tmp_path / "noise.flac"))], info.window_samples, info.sigmoid)[0]
    assert abs(float(lines[4].split()[0]) - float(expected.max())) < 1e-3


def test_classify_refuses_a_pretraining_checkpoint_and_unreadable_input(trained, tmp_path):
    pre = tiny_checkpoint(tmp_path / "pre.pt")
    proc = run("classify.py", pre, tmp_path / "x.wav")
    assert proc.returncode == 2 and "not a classifier" in proc.stderr
    (tmp_path / "bad.flac").write_bytes(b"nope")
    proc = run("classify.py", trained, tmp_path / "bad.flac")
    assert proc.returncode == 1 and "bad.flac" in proc.stderr


def test_evaluate_single_label(trained, labelled, tmp_path):
    data, audio_dir = labelled
    out = tmp_path / "eval"
    proc = run("evaluate.py", trained, data, "--split", "test", "--out", out)
    assert proc.returncode == 0, proc.stderr
    report = json.loads((out / "metrics.json").read_text())
    with open(out / "predictions.csv") as f:
        rows = list(csv.reader(f))
    assert rows[0][:3] == ["file", "labels", "predicted"] and len(rows) == 13
    correct = sum(r[1] == r[2] for r in rows[1:])
    assert report["clips"] == 12 and report["accuracy"] == pytest.approx(correct / 12)
    assert report["accuracy"] >= 0.75  # the classifier learned the sounds
    assert f"accuracy {report['accuracy']:.4f}" in proc.stdout
    cm = np.array([r[1:] for r in csv.reader(open(out / "confusion.csv"))][1:], dtype=int)
    assert cm.sum() == 12 and np.trace(cm) == correct
    assert (out / "confusion.png").read_bytes()[:4] == b"\x89PNG"


def test_evaluate_multi_label_map_equals_sklearn(labelled, tmp_path):
    data, audio_dir = labelled
    torch.manual_seed(3)
    model = MAEASTClassifier(tiny_cfg(), len(CLASSES)).eval()
    ckpt = tmp_path / "multi.pt"
    checkpoint.save_classifier(ckpt, model, CLASSES, multi_label=True, window_samples=SR)
    # some clips carry two labels
    lines = (data / "test.lbl").read_text().splitlines()
    multi = data.parent / "multi"
    multi.mkdir()
    (multi / "test.tsv").write_text((data / "test.tsv").read_text())
    (multi / "labels.csv").write_text((data / "labels.csv").read_text())
    second = {"chirp": "noise", "noise": "tone", "tone": "chirp"}
    (multi / "test.lbl").write_text("".join(f"{lab},{second[lab]}\n" if i % 4 == 0 else f"{lab}\n"
                                            for i, lab in enumerate(lines)))
    proc = run("evaluate.py", ckpt, multi, "--out", tmp_path / "eval")
    assert proc.returncode == 0, proc.stderr
    report = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    rows = list(csv.reader(open(tmp_path / "eval" / "predictions.csv")))
    names = rows[0][3:]
    probs = np.array([r[3:] for r in rows[1:]], dtype=float)
    targets = np.array([[n in r[1].split(",") for n in names] for r in rows[1:]], dtype=float)
    expected = np.mean([average_precision_score(targets[:, c], probs[:, c]) for c in range(len(names))])
    assert report["mAP"] == pytest.approx(expected, abs=1e-4)
    assert "roc_auc" in report and "ROC-AUC" in proc.stdout


def test_evaluate_names_a_label_the_model_does_not_know(trained, labelled, tmp_path):
    data, _ = labelled
    other = tmp_path / "other"
    other.mkdir()
    (other / "test.tsv").write_text((data / "test.tsv").read_text())
    (other / "test.lbl").write_text((data / "test.lbl").read_text().replace("tone", "bell"))
    LabelSet(str(other / "labels.csv"), ["bell", "chirp", "noise"]).write(str(other / "labels.csv"))
    proc = run("evaluate.py", trained, other, "--out", tmp_path / "eval")
    assert proc.returncode == 2 and "labels.csv" in proc.stderr and "bell" in proc.stderr
