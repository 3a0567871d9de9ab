"""Short-clip classification data with held-out 'speakers' and 'instruments', built here (no
download): the data behind docs/finetuning.md's short-clip table, and quick checks of it.

* keywords: 20 words (Speech Commands' digits and commands) spoken by espeak-ng, one second
  each. Training, validation and test use disjoint voices: different accents and different voice
  variants, at speeds and pitches drawn per clip, so a test clip's voice was never heard in
  training.
* instruments: notes of 12 synthesised instrument families (bowed, plucked, struck, blown,
  bells, FM, ...) over three octaves, one second each. Each family has several 'soundfonts' (its
  synthesis parameters drawn anew: brightness, attack, decay, vibrato, noise, detuning, ...);
  training, validation and test use disjoint soundfonts, as notes of a soundfont never heard.

Build the sets (about a minute on one core) and fine-tune as docs/finetuning.md says:

    .venv/bin/python tests/test_finetune_short_clips.py --dest runs/short_clips
    # -> runs/short_clips/{keywords,instruments}/{train,valid,test}.{tsv,lbl}, labels.csv

The tests below check the split (no voice or soundfont on two sides) and the clips, on a few
clips of each set.
"""
import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

SR = 16000
WORDS = ["yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go",
         "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
# espeak-ng accents x voice variants; each split has its own of both
VOICES = {
    "train": (["en-us", "en-gb", "en-gb-x-rp"],
              ["m1", "m2", "m3", "m4", "f1", "f2", "f3", "adam", "david", "john", "linda", "robert"]),
    "valid": (["en-gb-x-gbcwmd"], ["m6", "f5", "paul", "steph"]),
    "test": (["en-gb-scotland", "en-029", "en-us-nyc", "en-gb-x-gbclan"],
             ["m5", "m7", "f4", "Andy", "Annie", "max", "edward", "belinda"]),
}
CLIPS_PER_WORD = {"train": 40, "valid": 8, "test": 16}
FAMILIES = ["bowed", "plucked", "piano", "organ", "flute", "clarinet", "brass", "marimba", "bell", "fm_epiano",
            "accordion", "choir"]
SOUNDFONTS = {"train": 4, "valid": 1, "test": 2}  # per family; disjoint draws
NOTES_PER_SOUNDFONT = {"train": 12, "valid": 10, "test": 10}
SPLIT_SEED = {"train": 1, "valid": 2, "test": 3}


# ---- keywords ----------------------------------------------------------------------------------
def speak(word: str, accent: str, variant: str, speed: int, pitch: int, tmp: Path) -> np.ndarray:
    """One word by espeak-ng, 16 kHz mono float32, silence trimmed at both ends."""
    wav = tmp / "w.wav"
    subprocess.run(["espeak-ng", "-v", f"{accent}+{variant}", "-s", str(speed), "-p", str(pitch), "-w", str(wav), word],
                   check=True, capture_output=True)
    out = tmp / "o.wav"
    subprocess.run(["sox", str(wav), "-r", str(SR), "-c", "1", "-b", "16", str(out), "silence", "1", "0.01", "0.5%",
                    "reverse", "silence", "1", "0.01", "0.5%", "reverse"], check=True, capture_output=True)
    audio, _ = sf.read(out, dtype="float32")
    return audio


def _centre(audio: np.ndarray, offset: int = 0) -> np.ndarray:
    clip = np.zeros(SR, np.float32)
    audio = audio[:SR]
    start = max(0, min(SR - len(audio), (SR - len(audio)) // 2 + offset))
    clip[start:start + len(audio)] = audio
    return clip


def keyword_plan(split: str, n_per_word: int):
    """(word, accent, variant, speed, pitch, offset, gain, noise) per clip of a split."""
    accents, variants = VOICES[split]
    rng = np.random.default_rng(SPLIT_SEED[split])
    plan = []
    for word in WORDS:
        for k in range(n_per_word):
            plan.append((word, accents[k % len(accents)], variants[rng.integers(len(variants))],
                         int(rng.integers(120, 200)), int(rng.integers(25, 75)), int(rng.integers(-1600, 1600)),
                         float(rng.uniform(0.3, 0.9)), float(rng.uniform(0.0, 0.01))))
    return plan


def build_keywords(dest: Path, scale: float = 1.0) -> None:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for split in ("train", "valid", "test"):
            rng = np.random.default_rng(10 + SPLIT_SEED[split])
            for i, (word, accent, variant, speed, pitch, offset, gain, noise) in enumerate(
                    keyword_plan(split, max(1, round(CLIPS_PER_WORD[split] * scale)))):
                audio = speak(word, accent, variant, speed, pitch, Path(tmp))
                peak = np.abs(audio).max() or 1.0
                clip = _centre(audio * (gain / peak), offset)  # placed off centre, within the second
                clip = clip + noise * rng.standard_normal(SR).astype(np.float32)
                name = f"{split}/{word}/{accent}_{variant}_{i}.flac"
                (dest / "audio" / split / word).mkdir(parents=True, exist_ok=True)
                sf.write(dest / "audio" / name, np.clip(clip, -1, 1), SR)
                rows.append((name, word, split, f"{accent}+{variant}"))
    _write_manifests(dest, rows)


# ---- instrument notes ------------------------------------------------------------------------------
def soundfont(family: str, rng: np.random.Generator) -> dict:
    """One 'soundfont' of a family: the family's synthesis with its free parameters drawn."""
    return {"family": family, "bright": rng.uniform(0.6, 1.6), "attack": rng.uniform(0.5, 2.0),
            "decay": rng.uniform(0.6, 1.6), "vibrato": rng.uniform(0.0, 1.0), "noise": rng.uniform(0.0, 1.0),
            "detune": rng.uniform(0.5, 1.5), "lowpass": rng.uniform(0.5, 1.0), "seed": int(rng.integers(1 << 30))}


def _harmonics(f0, t, amps, vib=0.0, vib_rate=5.0, stretch=0.0):
    phase = 2 * np.pi * f0 * (t + vib * np.sin(2 * np.pi * vib_rate * t) / (2 * np.pi * vib_rate))
    out = np.zeros_like(t)
    for n, a in enumerate(amps, start=1):
        if a == 0 or f0 * n * (1 + stretch * n * n) >= SR / 2 - 500:
            continue
        out += a * np.sin(phase * n * (1 + stretch * n * n))
    return out


def note(sf_: dict, midi: int, seconds: float = 0.8) -> np.ndarray:
    """A note of a soundfont, one second long (the note, then its release and silence)."""
    rng = np.random.default_rng(sf_["seed"] + midi)
    f0 = 440.0 * 2 ** ((midi - 69) / 12)
    t = np.arange(SR) / SR
    on = t < seconds
    b, at, dc, vb, nz, dt = (sf_[k] for k in ("bright", "attack", "decay", "vibrato", "noise", "detune"))
    fam = sf_["family"]
    n = np.arange(1, 40)

    def adsr(attack, release=0.08, sustain_decay=0.0):
        env = np.minimum(1.0, t / max(attack, 1e-4)) * np.exp(-sustain_decay * t)
        tail = np.exp(-np.maximum(t - seconds, 0) / release)
        return env * np.where(on, 1.0, tail)

    if fam == "bowed":
        x = _harmonics(f0, t, (1.0 / n) ** b, vib=0.006 * vb, vib_rate=5.5) * adsr(0.12 * at)
        x += 0.02 * nz * rng.standard_normal(SR) * adsr(0.12 * at)
    elif fam == "plucked":  # Karplus-Strong
        period = max(2, int(round(SR / f0)))
        buf = rng.uniform(-1, 1, period) * b
        x = np.zeros(SR)
        damp = 0.5 - 0.004 * dc
        for i in range(SR):
            x[i] = buf[i % period]
            buf[i % period] = damp * (buf[i % period] + buf[(i + 1) % period]) * (0.999 if i < seconds * SR else 0.99)
    elif fam == "piano":
        amps = (1.0 / n) ** (1.2 * b) * np.exp(-0.15 * n)
        x = _harmonics(f0, t, amps, stretch=0.0004 * dt) * adsr(0.004, sustain_decay=3.0 * dc)
        x += _harmonics(f0 * (1 + 0.001 * dt), t, amps) * 0.5 * adsr(0.004, sustain_decay=3.0 * dc)
    elif fam == "organ":
        amps = np.zeros(16)
        for h, a in zip([1, 2, 3, 4, 6, 8], rng.uniform(0.2, 1.0, 6) * np.array([1, 0.8, 0.6, 0.5, 0.3, 0.2]) ** b):
            amps[h - 1] = a
        x = _harmonics(f0, t, amps) * adsr(0.02)
    elif fam == "flute":
        x = _harmonics(f0, t, [1.0, 0.25 * b, 0.1 * b, 0.03], vib=0.008 * vb, vib_rate=5.0) * adsr(0.08 * at)
        x += 0.08 * nz * rng.standard_normal(SR) * adsr(0.05)
    elif fam == "clarinet":
        amps = np.where(n % 2 == 1, (1.0 / n) ** (0.8 * b), 0.02)
        x = _harmonics(f0, t, amps, vib=0.002 * vb) * adsr(0.05 * at)
    elif fam == "brass":
        env = adsr(0.06 * at)
        x = np.zeros(SR)
        for k in range(1, 25):  # brighter as it gets louder
            x += np.sin(2 * np.pi * f0 * k * t) * env ** (1 + 0.4 * k / b) / k ** 0.7
    elif fam == "marimba":
        x = sum(a * np.sin(2 * np.pi * f0 * r * t) * np.exp(-t * d * dc)
                for r, a, d in [(1, 1.0, 6), (3.93, 0.4 * b, 20), (9.2, 0.15 * b, 45)] if f0 * r < SR / 2)
        x = x * np.minimum(1, t / 0.002)
    elif fam == "bell":
        ratios = [0.56, 0.92, 1.19, 1.71, 2.0, 2.74, 3.0, 3.76, 4.07]
        x = sum(np.sin(2 * np.pi * f0 * r * (1 + 0.002 * dt * k) * t) * np.exp(-t * (1.5 + 1.2 * k) * dc) / (1 + 0.3 * k / b)
                for k, r in enumerate(ratios) if f0 * r < SR / 2)
        x = x * np.minimum(1, t / 0.002)
    elif fam == "fm_epiano":
        index = 3.0 * b * np.exp(-t * 6 * dc)
        x = np.sin(2 * np.pi * f0 * t + index * np.sin(2 * np.pi * f0 * t)) * adsr(0.003, sustain_decay=2.0 * dc)
    elif fam == "accordion":
        sq = lambda f: np.tanh(4 * b * np.sin(2 * np.pi * f * t))  # noqa: E731
        x = (sq(f0) + sq(f0 * (1 + 0.004 * dt))) * adsr(0.04 * at) * (1 + 0.1 * vb * np.sin(2 * np.pi * 6 * t))
    elif fam == "choir":  # a pulse train through vowel formants
        pulse = _harmonics(f0, t, np.ones(39), vib=0.01 * vb, vib_rate=5.0)
        spectrum = np.fft.rfft(pulse)
        freqs = np.fft.rfftfreq(SR, 1 / SR)
        vowel = [(700, 1200, 2600), (400, 2000, 2550), (550, 850, 2400)][int(sf_["seed"]) % 3]
        gain = sum(np.exp(-0.5 * ((freqs - f) / (80 + 40 * b)) ** 2) for f in vowel)
        x = np.fft.irfft(spectrum * gain, SR) * adsr(0.1 * at)
    else:
        raise ValueError(fam)
    # the soundfont's own colour: a one-pole lowpass and a little noise
    alpha = np.exp(-2 * np.pi * 8000 * sf_["lowpass"] / SR)
    from scipy.signal import lfilter

    x = lfilter([1 - alpha], [1, -alpha], x) + 0.002 * nz * rng.standard_normal(SR)
    return (0.5 * x / (np.abs(x).max() + 1e-9)).astype(np.float32)


def build_instruments(dest: Path, scale: float = 1.0) -> None:
    rows = []
    for split in ("train", "valid", "test"):
        rng = np.random.default_rng(100 + SPLIT_SEED[split])
        for family in FAMILIES:
            for s in range(SOUNDFONTS[split]):
                font = soundfont(family, rng)
                for k in range(max(1, round(NOTES_PER_SOUNDFONT[split] * scale))):
                    midi = int(rng.integers(48, 85))
                    gain = float(rng.uniform(0.3, 1.0))
                    audio = note(font, midi, seconds=float(rng.uniform(0.5, 0.9))) * gain
                    name = f"{split}/{family}/font{s}_{k}_m{midi}.flac"
                    (dest / "audio" / split / family).mkdir(parents=True, exist_ok=True)
                    sf.write(dest / "audio" / name, audio, SR)
                    rows.append((name, family, split, f"{family}-{split}-{s}"))
    _write_manifests(dest, rows)


# ---- manifests -------------------------------------------------------------------------------------
def _write_manifests(dest: Path, rows) -> None:
    """A CSV (path, label, fold, source) and tools/make_manifest.py --labels with the fold column."""
    import csv

    with open(dest / "labels_in.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "label", "fold", "source"])
        writer.writerows(rows)
    repo = Path(__file__).resolve().parents[1]
    subprocess.run([sys.executable, str(repo / "tools" / "make_manifest.py"), str(dest / "audio"), "--dest", str(dest),
                    "--labels", str(dest / "labels_in.csv"), "--path-column", "path", "--label-column", "label",
                    "--fold-column", "fold", "--valid-folds", "valid", "--test-folds", "test"],
                   check=True, capture_output=True, text=True)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dest", required=True, help="folder for keywords/ and instruments/")
    p.add_argument("--only", choices=("keywords", "instruments"), help="build one set only")
    p.add_argument("--scale", type=float, default=1.0, help="clips per word / notes per soundfont x this")
    args = p.parse_args(argv)
    for name, build in (("keywords", build_keywords), ("instruments", build_instruments)):
        if args.only in (None, name):
            out = Path(args.dest) / name
            shutil.rmtree(out, ignore_errors=True)
            out.mkdir(parents=True)
            build(out, args.scale)
            print(f"{out}: " + ", ".join(f"{s} {len((out / f'{s}.tsv').read_text().splitlines()) - 1}"
                                         for s in ("train", "valid", "test")))


# ---- checks ----------------------------------------------------------------------------------------
def test_voices_and_soundfonts_never_cross_splits():
    for kind in (0, 1):
        seen = [set(VOICES[s][kind]) for s in ("train", "valid", "test")]
        assert not (seen[0] & seen[1] or seen[0] & seen[2] or seen[1] & seen[2])
    fonts = {s: {tuple(sorted(soundfont(f, np.random.default_rng(100 + SPLIT_SEED[s])).items())) for f in FAMILIES}
             for s in SOUNDFONTS}
    assert not (fonts["train"] & fonts["test"])


@pytest.mark.skipif(shutil.which("espeak-ng") is None or shutil.which("sox") is None, reason="espeak-ng and sox")
def test_built_sets_are_one_second_labelled_and_split(tmp_path):
    main(["--dest", str(tmp_path), "--scale", "0.05"])
    for name, labels in (("keywords", WORDS), ("instruments", FAMILIES)):
        root = tmp_path / name
        assert (root / "labels.csv").read_text().splitlines()[1:] == [f"{i},{n}" for i, n in enumerate(sorted(labels))]
        for split in ("train", "valid", "test"):
            lines = (root / f"{split}.tsv").read_text().splitlines()[1:]
            assert lines and all(line.split("\t")[1] == str(SR) for line in lines)
            assert all(line.startswith(f"{split}/") for line in lines)
        audio, rate = sf.read(root / "audio" / lines[0].split("\t")[0])
        assert rate == SR and np.abs(audio).max() > 0.05


if __name__ == "__main__":
    main()
