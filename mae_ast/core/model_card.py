"""The ``README.md`` model card of a hub folder (mae_ast.core.hub), written from its config.json:
what the model is, how it was pre-trained, what is known of its training and results, how to
load it. Facts that are not known are said to be unknown, never guessed."""
from typing import Dict

import torch

from .checkpoint import CLASSIFIER_NAME

PAPER = ("Baade, Peng, Harwath. MAE-AST: Masked Autoencoding Audio Spectrogram Transformer. "
         "Interspeech 2022. [arXiv 2203.16691](https://arxiv.org/abs/2203.16691)")
BIBTEX = """@inproceedings{baade2022maeast,
  title={{MAE-AST}: Masked Autoencoding Audio Spectrogram Transformer},
  author={Baade, Alan and Peng, Puyuan and Harwath, David},
  booktitle={Interspeech},
  year={2022}
}"""


def render(config: dict, weights: Dict[str, torch.Tensor]) -> str:
    classifier = config["model_type"] == CLASSIFIER_NAME
    sections = [_front_matter(classifier), f"# {_title(config)}\n", _summary(config, weights, classifier),
                _architecture(config), _pretraining(config), _results(config)]
    if classifier:
        sections.append(_labels(config))
    sections += [_how_to_load(classifier), "## Citation\n\n" + PAPER + "\n\n```bibtex\n" + BIBTEX + "\n```\n"]
    return "\n".join(s for s in sections if s)


def kind_of(cfg_model: dict) -> str:
    kt, kc = cfg_model.get("ast_kernel_size_time", 16), cfg_model.get("ast_kernel_size_chan", 16)
    return f"{'frame' if kc >= 128 else 'patch'} model ({kt}x{kc} tokens)"


def _front_matter(classifier: bool) -> str:
    task = "audio-classification" if classifier else "feature-extraction"
    return (f"---\ntags:\n- audio\n- self-supervised-learning\n- mae-ast\n- fairseq\n"
            f"pipeline_tag: {task}\n---\n")


def _title(config: dict) -> str:
    what = "fine-tuned classifier" if config["model_type"] == CLASSIFIER_NAME else "pre-trained"
    return f"MAE-AST {kind_of(config['model'])}, {what}"


def _summary(config: dict, weights, classifier: bool) -> str:
    params = sum(t.numel() for t in weights.values())
    job = (f"classifies audio into {len(config.get('label_names', []))} classes"
           if classifier else "turns audio into features (one vector per token time step per layer)")
    tables = len(config.get("recomputed_buffers") or {})
    recomputed = (f" {_count(tables, 'sinusoidal position table')} recomputed on load (`recomputed_buffers` "
                  "in `config.json`)." if tables else "")
    return (f"The MAE-AST encoder ({PAPER}) from this repository's implementation; it {job}. "
            f"`model.safetensors` holds {params:,} values ({params / 1e6:.1f} M);{recomputed}\n")


def _architecture(config: dict) -> str:
    m, t = config["model"], config["task"]
    kt, kc = m.get("ast_kernel_size_time", 16), m.get("ast_kernel_size_chan", 16)
    steps_per_s = t.get("feature_rate", 100) / m.get("ast_kernel_stride_time", kt)
    rows = [
        ("tokens", f"{kt} frames x {kc} mel bins, {steps_per_s:g} time steps per second"),
        ("input", f"Kaldi log-mel fbank, {t.get('feature_dim', 128)} bins, 25 ms window, 10 ms shift, "
                  f"{t.get('sample_rate', 16000)} Hz mono"),
        ("encoder", f"{_count(m.get('encoder_layers'), 'layer')}, {m.get('encoder_embed_dim')} wide, "
                    f"{m.get('encoder_attention_heads')} heads, FFN {m.get('encoder_ffn_embed_dim')}, "
                    f"{'pre' if m.get('layer_norm_first') else 'post'}-LN, {m.get('activation_fn', 'gelu')}"),
        ("positions", _positions(m, config["model_type"] != CLASSIFIER_NAME)),
    ]
    if config["model_type"] != CLASSIFIER_NAME:
        rows.append(("decoder", f"{_count(m.get('decoder_layers'), 'layer')}, {m.get('decoder_embed_dim')} wide "
                                "(pre-training only)"))
    else:
        rows.append(("head", "mean over the encoder's output tokens, LayerNorm, linear"))
    return "## Architecture\n\n| | |\n|---|---|\n" + "".join(f"| {k} | {v} |\n" for k, v in rows)


def _pretraining(config: dict) -> str:
    if config["model_type"] == CLASSIFIER_NAME:
        return _finetuning(config)
    m, t, known = config["model"], config["task"], config.get("training") or {}
    mask_type, prob = t.get("mask_type", "unknown"), m.get("random_mask_prob")
    ratio = (f"span probability {prob} (spans of {m.get('mask_length', 10)} tokens; 1.45 covers ~75 %)"
             if mask_type == "retain_spans" else f"{prob:.0%} of the tokens masked" if isinstance(prob, (int, float))
             else "unknown")
    rows = [("masking", f"`{mask_type}`, {ratio}"), ("updates", _known(known.get("updates"))),
            ("epochs", _known(known.get("epoch"))), ("training manifest", _manifest(known.get("manifest")))]
    return "## Pre-training\n\n| | |\n|---|---|\n" + "".join(f"| {k} | {v} |\n" for k, v in rows)


def _finetuning(config: dict) -> str:
    t, known = config["task"], config.get("training") or {}
    loss = (config.get("criterion") or {}).get("loss", "ce")
    window = t.get("max_sample_size")
    rows = [("labels", f"{len(config['label_names'])}, {'multi-label' if config['multi_label'] else 'single-label'}"),
            ("scores", "per-class sigmoids (binary cross-entropy)" if loss == "bce" else "softmax (cross-entropy)"),
            ("window", f"{window / t.get('sample_rate', 16000):g} s (longer audio: windows averaged)"
             if window else "unknown"),
            ("updates", _known(known.get("updates"))), ("training manifest", _manifest(known.get("manifest")))]
    return "## Fine-tuning\n\n| | |\n|---|---|\n" + "".join(f"| {k} | {v} |\n" for k, v in rows)


def _results(config: dict) -> str:
    results = (config.get("training") or {}).get("results") or {}
    source = (config.get("training") or {}).get("results_source")
    if not results:
        return ("## Results\n\nNo probe or fine-tuning figures were given when this folder was written "
                "(`tools/export_checkpoint.py ... --results metrics.json` adds them).\n")
    lines = "".join(f"| {name} | {value:.4g} |\n" if isinstance(value, float) else f"| {name} | {value} |\n"
                    for name, value in results.items())
    note = f"\nFrom `{source}`.\n" if source else ""
    return "## Results\n\n| figure | value |\n|---|---|\n" + lines + note


def _labels(config: dict) -> str:
    names = config["label_names"]
    shown = ", ".join(f"`{n}`" for n in names[:30]) + (f" ... ({len(names)} in all)" if len(names) > 30 else "")
    return f"## Labels\n\n{shown} (in `config.json`, `label_names`: class index order).\n"


def _how_to_load(classifier: bool) -> str:
    if classifier:
        code = ("python tools/classify.py FOLDER clip.wav other.flac --top-k 3\n"
                "python tools/evaluate.py FOLDER DATA_DIR --split test --out eval/")
        py = ("from mae_ast.core.checkpoint import load_classifier\n"
              "model, info = load_classifier(\"FOLDER\")  # info.label_names, info.multi_label")
    else:
        code = ("python tools/extract_features.py FOLDER audio/ --out features/\n"
                "python run_downstream.py -m train -u mae_ast -k FOLDER -d speech_commands ...   # inside s3prl")
        py = ("from mae_ast.core import MAEAST\n"
              "model = MAEAST.from_pretrained(\"FOLDER\")  # eval mode; decoder=False for the encoder alone\n"
              "import mae_ast.hear as hear\n"
              "embedder = hear.load_model(\"FOLDER\")  # the HEAR 2021 API")
    return ("## How to load\n\nWith the MAE-AST repository installed (`bash tools/setup.sh`), every loader "
            "takes this folder where it takes a checkpoint file; nothing is unpickled. From the hub, "
            "download it first:\n\n```python\nfrom huggingface_hub import snapshot_download\n"
            "folder = snapshot_download(\"OWNER/NAME\")\n```\n\n```bash\n" + code + "\n```\n\n```python\n"
            + py + "\n```\n\n`config.json` holds the fairseq `cfg` sections (`model`, `task`) the model "
            "is rebuilt from; `model.safetensors` the weights under the original release's names.\n")


def _positions(m: dict, has_decoder: bool) -> str:
    where = [name for name, on in (("the encoder", m.get("enc_sine_pos")),
                                   ("the decoder", has_decoder and m.get("dec_sine_pos"))) if on]
    return "sinusoidal, added before " + " and ".join(where) if where else "none"


def _count(n, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _known(value) -> str:
    return "unknown" if value is None else f"{value:,}" if isinstance(value, int) else str(value)


def _manifest(manifest) -> str:
    if not manifest:
        return "unknown"
    return f"{manifest['files']:,} files, {manifest['hours']:.1f} hours (`{manifest.get('name', 'train')}.tsv`)"
