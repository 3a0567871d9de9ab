"""The demo report's ``index.html``: the summary that ``report.write_report`` builds, as one
static page (figures are the PNG files beside it; no scripts, no external resources)."""
from html import escape
from typing import List, Sequence

from .console import format_number
from .probe import PROBE_SPLITS
from .train import LOSSES

STYLE = """
body { font-family: sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em }
table { border-collapse: collapse; margin: .5em 0 }
td, th { border: 1px solid #ccc; padding: 3px 8px; text-align: right }
th { background: #eee }
img { max-width: 100% }
.clip { display: grid; grid-template-columns: 1fr 250px; align-items: center }
.clip p { grid-column: 1 / 3 }
.players { display: flex; flex-direction: column; justify-content: space-around; align-self: stretch;
           padding: 2em 0 }
.players audio { width: 240px }
code { background: #f4f4f4 }
"""

PROBE_EXPLANATION = (
    "<h2>Linear probe</h2><p>Logistic regression on clip features (mean over time of a 2 s "
    "window from the middle of each corpus chunk of at least 2 s, so that clip length, which "
    "differs a lot between sources, gives nothing away), train/test split by source file, so chunks of one "
    "file never sit on both sides; the L2 weight is chosen on a held-out fifth of the training "
    "files. <b>Pretrained</b>: our checkpoint's encoder; <b>random init</b>: the same "
    "architecture freshly initialised (same input normalisation); <b>log-mel</b>: the 128 "
    "mean log-mel energies. Accuracy on the test files (balanced accuracy in brackets), the mean "
    f"over {PROBE_SPLITS} random splits by file.</p>")


def render(summary: dict, command_line: Sequence[str]) -> str:
    """The whole page. ``command_line``: the arguments the demo was run with."""
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>MAE-AST demo report</title>"
        f"<style>{STYLE}</style></head><body>",
        "<h1>MAE-AST demo report</h1>",
        _model_paragraph(summary),
        *_corpus_section(summary["corpus"]),
        *_loss_section(summary),
        *_reconstruction_section(summary["reconstructions"]),
        *(_probe_section(summary["probe"]) if summary["probe"] else []),
        *(_finetuning_section(summary["finetuning"]) if summary.get("finetuning") else []),
        *_run_section(summary["timings_s"], command_line),
        "</body></html>",
    ]
    return "\n".join(parts)


def table(header: Sequence, rows: Sequence[Sequence]) -> str:
    head = "".join(f"<th>{escape(str(cell))}</th>" for cell in header)
    body = "".join("<tr>" + "".join(f"<td>{escape(format_number(cell))}</td>" for cell in row) + "</tr>"
                   for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _model_paragraph(s: dict) -> str:
    model = s["model"]
    return (f"<p>Checkpoint <code>{escape(s['checkpoint'])}</code>: a {model['encoder_layers']}-layer, "
            f"{model['encoder_embed_dim']}-wide encoder ({model['parameters'] / 1e6:.1f} M parameters with the "
            f"decoder), {model['patch']} patches, {model['mask_type']} masking of "
            f"{model['mask_prob']:.0%}, trained for {s['updates']} updates on the {s['device']}.</p>")


def _corpus_section(corpus: List[dict]) -> List[str]:
    rows = [[r["category"], r["source"], r["chunks"], r["minutes"], " ".join(r["languages"])] for r in corpus]
    return ["<h2>Corpus</h2>", table(["category", "source", "chunks", "minutes", "languages"], rows)]


def _loss_section(s: dict) -> List[str]:
    rows = [[label, *[s[key].get(loss, "") for loss in LOSSES]]
            for label, key in (("first validation", "first_valid"), ("last validation", "valid"),
                               ("last train", "train"))]
    return ["<h2>Loss curves</h2><p>Train (every 10 updates) and validation; the total is "
            "10 x reconstruction + InfoNCE, as in the paper.</p><img src='loss_curves.png'>",
            table(["", *LOSSES], rows)]


def _reconstruction_section(reconstructions: List[dict]) -> List[str]:
    parts = ["<h2>Reconstructions of validation clips</h2><p>Top: the clip's log-mel spectrogram, normalised "
             "as the model sees it. Middle: the patches the encoder was given (masked ones in blue). Bottom: the "
             "decoder's prediction pasted into the masked patches. Beside each panel, its spectrogram as sound "
             "(masked patches silent in the middle one): log-mel turned back into audio by Griffin-Lim, an "
             "approximation that sounds phasey even for the unmasked input, so compare the three with each other.</p>"]
    for r in reconstructions:
        parts.append(f"<h3>{escape(r['clip'])}</h3><div class='clip'><p>masked MSE {r['mse']:.3f}</p>"
                     f"<img src='{r['figure']}'>{_players(r.get('audio', {}))}</div>")
    return parts


PLAYER_LABELS = {"input": "input", "masked": "what the encoder saw", "reconstruction": "reconstruction"}


def _players(audio: dict) -> str:
    """One labelled <audio> player per wav file, top to bottom as the figure's panels."""
    players = "".join(f"<label>{PLAYER_LABELS[part]}<br><audio controls preload='none' "
                      f"src='{escape(audio[part])}'></audio></label>" for part in PLAYER_LABELS if part in audio)
    return f"<div class='players'>{players}</div>" if players else ""


def _probe_section(probe: dict) -> List[str]:
    parts = [PROBE_EXPLANATION]
    for task, result in probe.items():
        parts += _probe_task(task, result)
    return parts


def _accuracy(result: dict) -> str:
    return f"{result['accuracy']:.3f} ({result['balanced_accuracy']:.3f})"


def _probe_task(task: str, res: dict) -> List[str]:
    layers = sorted((key for key in res["pretrained"] if key != "all"), key=lambda key: int(key[len("layer"):]))
    last = layers[-1]
    rows = [["pretrained MAE-AST, mean of all layers", _accuracy(res["pretrained"]["all"])],
            ["random init, mean of all layers", _accuracy(res["random"]["all"])],
            ["pretrained MAE-AST, last layer", _accuracy(res["pretrained"][last])],
            ["random init, last layer", _accuracy(res["random"][last])],
            ["log-mel mean", _accuracy(res["logmel"])]]
    every_layer = [[layer, _accuracy(res["pretrained"][layer]), _accuracy(res["random"][layer])] for layer in layers]
    return [f"<h3>{escape(task)}: {len(res['classes'])} classes</h3><p>"
            f"{res['train_clips']} training clips from {res['train_files']} files, {res['test_clips']} "
            f"test clips from {res['test_files']} files; classes: {escape(', '.join(res['classes']))}</p>",
            table(["features", "test accuracy"], rows),
            "<details><summary>every layer</summary>"
            + table(["layer", "pretrained", "random init"], every_layer) + "</details>"]


def _finetuning_section(ft: dict) -> List[str]:
    runs = ft["runs"]
    rows = [[run["title"], run["accuracy"], run["mAP"], run.get("best_valid_accuracy"), run["updates"]]
            for run in runs.values()]
    pretrained = runs["pretrained"]["per_class"]
    per_class = [[name, pretrained[name]["clips"], *[runs[r]["per_class"][name]["recall"] for r in runs]]
                 for name in ft["classes"]]
    first = next(iter(runs.values()))
    return [f"<h2>Fine-tuning</h2><p>The encoder as a classifier of the corpus's {escape(ft['task'])}s "
            f"({len(ft['classes'])} classes): <code>fairseq-hydra-train --config-name mae_ast_finetune</code>, "
            f"{ft['minutes_per_run']:g} min per run on {ft['clip_seconds']:g} s crops, labelled manifests by "
            "<code>tools/make_manifest.py --labels</code> with recordings split into train, validation and test "
            "(chunks of one recording never on two sides). The checkpoint with the best validation accuracy of "
            f"each run is scored on the {first['clips']} test clips by <code>tools/evaluate.py</code> (whole "
            "clips; longer ones in windows of the crop length, scores averaged).</p>",
            table(["run", "test accuracy", "test mAP", "best validation accuracy", "updates"], rows),
            "<details><summary>recall per class</summary>"
            + table(["class", "test clips", *runs], per_class) + "</details>",
            "<p>Confusion matrix of the model fine-tuned from the pretrained checkpoint, test clips "
            "(rows: true class):</p><img src='finetune_confusion.png'>"]


def _run_section(timings: dict, command_line: Sequence[str]) -> List[str]:
    return ["<h2>Run</h2>" + table(["step", "seconds"], [[step, round(s)] for step, s in timings.items()]),
            f"<p>Command: <code>bash tools/demo.sh {escape(' '.join(command_line))}</code>. "
            "Figures for other clips: <code>python tools/visualize.py CHECKPOINT AUDIO... --out DIR</code>; "
            "features: <code>python tools/extract_features.py CHECKPOINT AUDIO_DIR --out DIR</code>.</p>"]
