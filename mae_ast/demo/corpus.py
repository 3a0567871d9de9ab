"""The demo's corpus: Debian packages' recordings cut into 16 kHz mono flac chunks.

``build_corpus`` surveys the packages' audio files (durations cached), plans chunks of at most
``CHUNK_SECONDS`` for the hours asked, a third per category and an equal share per source
where there is enough, writes them in parallel (near-silent ones dropped) and lists them in
``index.tsv``. ``index_of_folder`` stands in for the index when the user brings their own audio.
"""
import hashlib
import json
import math
import os
import random
import re
import time
from collections import Counter, defaultdict
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Dict, List, NamedTuple, Sequence

from mae_ast.audio import AUDIO_EXTENSIONS
from mae_ast.core.features import SAMPLE_RATE
from mae_ast.manifest import Manifest

from . import packages as debian
from .console import log

CHUNK_SECONDS = 10.0
MIN_SECONDS = 0.5  # the training's task.min_sample_size: shorter chunks would never be used
SILENCE_DBFS = -45.0  # a chunk whose loud frames (95th percentile) stay below this is dropped
INDEX_COLUMNS = ("path", "category", "source", "package", "language", "file", "start", "seconds")


class AudioFile(NamedTuple):
    """One usable audio file of a package (a list in the survey cache's json)."""

    path: str
    package: str
    source: str
    category: str
    language: str
    seconds: float


# ---- survey -----------------------------------------------------------------------------------
def survey(packages: Sequence[str]) -> List[AudioFile]:
    """Every audio file of the packages that the corpus uses and that is long enough."""
    files, unreadable = [], []
    for package in packages:
        for path, kind in debian.audio_files(package):
            seconds = _duration(path)
            if seconds is None:
                unreadable.append(path)
            elif seconds >= MIN_SECONDS:
                files.append(AudioFile(path, package, *kind, seconds))
    if unreadable:
        log(f"corpus: left out {len(unreadable)} unreadable files: {', '.join(unreadable[:5])}"
            + (" ..." if len(unreadable) > 5 else ""))
    return files


def _duration(path: str):
    """Seconds of audio in the file, or None when it cannot be read."""
    import soundfile as sf

    from mae_ast import audio

    try:
        return sf.info(path).duration
    except Exception:  # a format libsndfile cannot read: mae_ast.audio falls back to PyAV
        try:
            rate, samples = audio.probe(path)
            return samples / rate
        except Exception:
            return None


def cached_survey(folder: Path, packages: Sequence[str]) -> List[AudioFile]:
    """``survey``, kept in ``folder/.survey.json`` until a package's version changes, so that a
    rerun with other hours plans again without opening every file again."""
    cache = folder / ".survey.json"
    installed = debian.versions(packages)
    if cache.exists():
        cached = json.loads(cache.read_text())
        if cached.get("versions") == installed:
            return [AudioFile(*row) for row in cached["files"]]
    files = survey(packages)
    folder.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps({"versions": installed, "files": files}))
    return files


# ---- planning ---------------------------------------------------------------------------------
def plan_chunks(files: Sequence[AudioFile], hours: float, seed: int = 0) -> List[dict]:
    """Choose chunks (<= 10 s windows of the files) for ``hours`` of audio: a third per category
    (a category short of material leaves its share to the others), and within a category an equal
    share per source (likewise). Chunks are drawn at random, so long tracks contribute windows
    from everywhere and many different files are used."""
    chunks = _shuffled_chunks_by_source(files, random.Random(seed))
    category_of = {f.source: f.category for f in files}
    available = {source: sum(c["seconds"] for c in cs) for source, cs in chunks.items()}
    per_category = _water_fill(hours * 3600, {
        category: sum(seconds for source, seconds in available.items() if category_of[source] == category)
        for category in debian.CATEGORIES if category in category_of.values()})
    chosen = []
    for category, seconds in per_category.items():
        sources = {source: s for source, s in available.items() if category_of[source] == category}
        for source, quota in _water_fill(seconds, sources).items():
            chosen += _first_chunks(chunks[source], quota)
    for chunk in chosen:
        chunk["path"] = _chunk_path(chunk)
    return sorted(chosen, key=lambda c: c["path"])


def _shuffled_chunks_by_source(files: Sequence[AudioFile], rng: random.Random) -> Dict[str, List[dict]]:
    """Every file cut into equal windows of at most CHUNK_SECONDS; per source, in random order."""
    chunks = defaultdict(list)
    for f in files:
        n = max(1, math.ceil(f.seconds / CHUNK_SECONDS))
        length = f.seconds / n
        for i in range(n):
            chunks[f.source].append(dict(file=f.path, package=f.package, source=f.source, category=f.category,
                                         language=f.language, start=round(i * length, 3), seconds=round(length, 3)))
    for source in sorted(chunks):  # sorted: the same plan for the same files and seed
        rng.shuffle(chunks[source])
    return chunks


def _water_fill(total: float, available: Dict[str, float]) -> Dict[str, float]:
    """Split ``total`` into equal shares, each capped by what its key has available; what a
    capped key cannot take goes to the others."""
    shares, left, open_ = {}, total, dict(available)
    while open_ and left > 1e-6:
        each = left / len(open_)
        capped = {key: value for key, value in open_.items() if value <= each}
        if not capped:
            shares.update({key: each for key in open_})
            return shares
        for key, value in capped.items():
            shares[key] = value
            left -= value
            del open_[key]
    shares.update({key: 0.0 for key in open_})
    return shares


def _first_chunks(chunks: List[dict], quota: float) -> List[dict]:
    """The leading chunks until their seconds reach ``quota`` (the last one may pass it)."""
    taken, seconds = [], 0.0
    for chunk in chunks:
        if seconds >= quota:
            break
        taken.append(chunk)
        seconds += chunk["seconds"]
    return taken


def _chunk_path(chunk: dict) -> str:
    """category/source/<file path below /usr/share/, made safe>_<start in ms>.flac"""
    stem = os.path.splitext(chunk["file"].split("/usr/share/", 1)[-1])[0]
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", stem)
    return f"{chunk['category']}/{chunk['source']}/{stem}_{int(chunk['start'] * 1000)}.flac"


# ---- writing ----------------------------------------------------------------------------------
def write_chunk(job):
    """Decode, resample, check loudness, write flac (in a worker process). ``job`` is
    (chunk, folder); returns (chunk path, kept, reason when dropped)."""
    import numpy as np
    import soundfile as sf
    import torch

    from mae_ast import audio

    torch.set_num_threads(1)  # one worker process per core already
    chunk, folder = job
    out = Path(folder) / chunk["path"]
    if out.exists():  # written before an interruption
        return chunk["path"], True, ""
    try:
        wav = audio.read(chunk["file"], SAMPLE_RATE, int(chunk["start"] * SAMPLE_RATE),
                         int(chunk["seconds"] * SAMPLE_RATE)).numpy()
    except Exception as e:
        return chunk["path"], False, f"unreadable ({e})"
    frames = wav[: len(wav) // 400 * 400].reshape(-1, 400)  # 25 ms frames
    if len(frames) == 0:
        return chunk["path"], False, "too short"
    rms_db = 10 * np.log10(np.mean(frames.astype(np.float64) ** 2, axis=1) + 1e-12)
    if np.percentile(rms_db, 95) < SILENCE_DBFS:
        return chunk["path"], False, "near-silent"
    peak = float(np.abs(wav).max())
    if peak > 1.0:  # resampling can overshoot; flac's PCM_16 would clip
        wav = wav / peak
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp.flac")  # renamed when complete: a killed run leaves no half chunk
    sf.write(str(tmp), wav, SAMPLE_RATE, subtype="PCM_16")
    os.replace(tmp, out)
    return chunk["path"], True, ""


def write_chunks(folder: Path, plan: List[dict], jobs: int):
    """Write the planned chunks (those of an earlier plan removed). Returns the kept chunks and
    a Counter of the reasons the others were dropped."""
    folder.mkdir(parents=True, exist_ok=True)
    wanted = {chunk["path"] for chunk in plan}
    for old in folder.rglob("*.flac"):
        if old.relative_to(folder).as_posix() not in wanted:
            old.unlink()
    kept, dropped = set(), Counter()
    with ProcessPoolExecutor(jobs) as pool:
        results = pool.map(write_chunk, [(chunk, str(folder)) for chunk in plan], chunksize=8)
        for i, (path, ok, reason) in enumerate(results):
            if ok:
                kept.add(path)
            else:
                dropped[reason.split(" (")[0]] += 1
            if (i + 1) % max(1, len(plan) // 10) == 0:
                log(f"corpus: {i + 1}/{len(plan)} chunks")
    return [chunk for chunk in plan if chunk["path"] in kept], dropped


def _hours(chunks: Sequence[dict]) -> float:
    return sum(chunk["seconds"] for chunk in chunks) / 3600


def build_corpus(folder: Path, packages: Sequence[str], hours: float, jobs: int) -> None:
    """Writes the chunks and ``index.tsv``; reused when the plan is unchanged, resumed (finished
    chunks kept) when it was interrupted."""
    debian.ensure_installed(packages)
    key = _corpus_key(packages, hours)
    stamp = folder / ".complete"
    if stamp.exists() and stamp.read_text().strip() == key and (folder / "index.tsv").exists():
        log(f"corpus: reusing {folder} ({len(read_index(folder))} chunks)")
        return
    start = time.time()
    files = cached_survey(folder, packages)
    plan = plan_chunks(files, hours)
    log(f"corpus: {len(files)} audio files in {len(packages)} packages; "
        f"writing {len(plan)} chunks ({_hours(plan):.2f} h) to {folder} with {jobs} processes")
    rows, dropped = write_chunks(folder, plan, jobs)
    write_index(folder, rows)
    stamp.write_text(key)
    log(f"corpus: {len(rows)} chunks, {_hours(rows):.2f} h, dropped {dict(dropped) or 'none'}, "
        f"in {time.time() - start:.0f} s")


def _corpus_key(packages: Sequence[str], hours: float) -> str:
    """What the corpus depends on: a corpus built with another key is planned again."""
    settings = [sorted(packages), hours, CHUNK_SECONDS, SILENCE_DBFS]
    return hashlib.sha256(json.dumps(settings).encode()).hexdigest()[:16]


# ---- index.tsv --------------------------------------------------------------------------------
def write_index(folder: Path, chunks: Sequence[dict]) -> None:
    lines = ["\t".join(INDEX_COLUMNS)]
    lines += ["\t".join(str(chunk[column]) for column in INDEX_COLUMNS) for chunk in chunks]
    (folder / "index.tsv").write_text("".join(line + "\n" for line in lines))


def read_index(folder: Path) -> List[dict]:
    """The rows of ``folder/index.tsv`` as dicts of strings, but ``seconds`` a float."""
    header, *lines = (folder / "index.tsv").read_text().splitlines()
    columns = header.split("\t")
    rows = [dict(zip(columns, line.split("\t"))) for line in lines]
    for row in rows:
        row["seconds"] = float(row["seconds"])
    return rows


def index_of_folder(audio: Path) -> List[dict]:
    """For --audio DIR: every file, its class = its top-level sub-folder (if any). Lengths are
    0 until ``with_manifest_lengths`` fills them in."""
    rows = []
    for p in sorted(audio.rglob("*")):
        if p.suffix.lower() in AUDIO_EXTENSIONS and p.is_file():  # what make_manifest takes
            rel = p.relative_to(audio)
            top = rel.parts[0] if len(rel.parts) > 1 else ""
            rows.append(dict(path=rel.as_posix(), category=top, source=top, file=str(p), seconds=0.0))
    return rows


def with_manifest_lengths(index: Sequence[dict], manifests: Path) -> List[dict]:
    """The rows that the manifests list, with their lengths in seconds from there (files that
    make_manifest.py left out stay out of the probe)."""
    seconds = {}
    for split in ("train", "valid"):
        manifest = Manifest.load(str(manifests / f"{split}.tsv"))
        seconds.update({name: size / SAMPLE_RATE for name, size in zip(manifest.names, manifest.sizes)})
    return [dict(row, seconds=seconds[row["path"]]) for row in index if row["path"] in seconds]
