"""Shared fixtures: real speech from espeak-ng, written as real audio files."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import soundfile as sf
import torch

from mae_ast.audio import write_mkv_opus  # noqa: F401  (the tests' opus-in-mkv writer)

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent

SENTENCES = [
    "The quick brown fox jumps over the lazy dog near the river bank.",
    "Masked autoencoders learn useful audio representations from spectrograms.",
    "Please call Stella and ask her to bring these things with her from the store.",
    "Six spoons of fresh snow peas, five thick slabs of blue cheese.",
    "We also need a small plastic snake and a big toy frog for the kids.",
    "She can scoop these things into three red bags, and we will go meet her.",
    "Wednesday at the train station the weather was cold and windy.",
    "Numbers one two three four five six seven eight nine ten.",
]
VOICES = ["en", "en-us", "en+f3", "en+m3", "de", "fr", "es", "en-gb"]

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


def speak(text: str, path: Path, voice: str = "en", speed: int = 160) -> Path:
    """espeak-ng speech as a 22.05 kHz wav file."""
    subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-w", str(path), text],
                   check=True, capture_output=True)
    return path


def read_wav(path):
    wav, rate = sf.read(str(path), dtype="float32")
    return wav, rate


@pytest.fixture(scope="session")
def speech_wavs(tmp_path_factory):
    """Eight spoken sentences, several voices, 22.05 kHz mono wav (espeak-ng's own rate)."""
    folder = tmp_path_factory.mktemp("speech")
    return [speak(t, folder / f"utt{i}.wav", VOICES[i % len(VOICES)]) for i, t in enumerate(SENTENCES)]


@pytest.fixture(scope="session")
def corpus(tmp_path_factory, speech_wavs):
    """A small pre-training corpus: the spoken sentences as 16 kHz flac (in sub-folders) plus
    22.05 kHz wav and opus-in-mkv copies; manifests made by tools/make_manifest.py."""
    import torchaudio.functional as AF

    root = tmp_path_factory.mktemp("corpus")
    audio = root / "audio"
    for i, src in enumerate(speech_wavs):
        wav, rate = read_wav(src)
        sub = audio / f"spk{i % 3}"
        sub.mkdir(parents=True, exist_ok=True)
        wav16 = AF.resample(torch.from_numpy(wav), rate, 16000).numpy()
        sf.write(sub / f"utt{i}.flac", wav16, 16000)
        if i % 4 == 0:
            sf.write(sub / f"utt{i}_22k.wav", wav, rate)
        if i % 4 == 1:
            write_mkv_opus(wav, rate, sub / f"utt{i}.mkv")
    manifests = root / "manifests"
    subprocess.run([sys.executable, str(REPO / "tools" / "make_manifest.py"), str(audio),
                    "--dest", str(manifests), "--valid-percent", "0.2", "--seed", "3"],
                   check=True, capture_output=True)
    return {"audio": audio, "manifests": manifests}


def tiny_model_overrides(patch: bool = True):
    """Hydra overrides for a model small enough to train in seconds on CPU."""
    kernel = ["16", "16"] if patch else ["2", "128"]
    return [
        "model.encoder_layers=2", "model.decoder_layers=1", "model.encoder_embed_dim=32",
        "model.decoder_embed_dim=32", "model.encoder_ffn_embed_dim=64",
        "model.encoder_attention_heads=2", "model.max_token_length=4000",
        f"model.ast_kernel_size_time={kernel[0]}", f"model.ast_kernel_size_chan={kernel[1]}",
        f"model.ast_kernel_stride_time={kernel[0]}", f"model.ast_kernel_stride_chan={kernel[1]}",
    ]


def fairseq_train(manifests, run_dir, *overrides, timeout=600, check=True):
    """Run the real fairseq-hydra-train on CPU with the shipped config; returns the process."""
    cmd = [
        str(VENV_BIN / "fairseq-hydra-train"), "--config-dir", str(REPO / "config" / "pretrain"),
        "--config-name", "mae_ast", f"common.user_dir={REPO / 'mae_ast'}", f"task.data={manifests}",
        f"hydra.run.dir={run_dir}", "common.cpu=true", "common.fp16=false",
        "dataset.num_workers=0", "common.log_interval=1", "common.log_format=json",
        "dataset.max_tokens=800000", "task.min_sample_size=8000",
        *overrides,
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1", HYDRA_FULL_ERROR="1")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    if check and proc.returncode != 0:
        raise AssertionError(f"fairseq-hydra-train failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc
