#!/usr/bin/env python
"""Build a HEAR 2021 task folder, as hear-preprocess emits them, for hear-eval-kit's runners.

    python tools/make_hear_task.py OUT (--audio DIR | --labels FILE.csv | --demo-corpus DIR)
        [--mix-events N] [--duration S] [--sample-rates 16000,44100]
        [--folds K | --valid-percent 0.1 --test-percent 0.1] [--seed 0] [--max-per-label N]
    python tools/make_hear_task.py --check OUT

OUT is one task folder; put it in a folder of tasks (heareval's --tasks-dir takes every folder
in it as a task). It holds:
  task_metadata.json   task_name, embedding_type (scene|event), prediction_type (multiclass|
                       multilabel), split_mode, splits, sample_duration (s), evaluation, ...
  labelvocabulary.csv  'idx,label', the labels sorted
  {split}.json         scene: {"a.wav": ["dog"]}; event: {"a.wav": [{"label": "dog",
                       "start": ms, "end": ms}, ...]}
  {rate}/{split}/*.wav mono 16-bit wav at each --sample-rates rate (default 16000; hearbaseline
                       reads 44100), every file trimmed or zero-padded to --duration
Splits: train/valid/test (--valid-percent and --test-percent are shares, 0.1 = 10 %) or
--folds K (fold00..; heareval tests on each fold in turn), drawn at random with --seed, each
label spread evenly over the splits; the chunks of one demo corpus recording stay together.

Where the labels come from:
  --audio DIR          class sub-folders: DIR/dog/a.wav is a 'dog' (scene task); files directly
                       in DIR have no class and are counted and left out
  --labels FILE.csv    a header row, then scene rows 'file,label' (a file on several rows has
                       several labels: a multilabel task) or event rows 'file,label,start,end'
                       (seconds); files relative to --audio-root (default: the CSV's folder)
  --demo-corpus DIR    the demo's corpus (tools/demo.sh; DIR/index.tsv): the label is the
                       --label-column of its index: category (speech/music/effects, default),
                       source or language (speech only)
--mix-events N turns labelled clips into an event task: N scenes of --duration seconds (default
10), each with --events-per-scene clips of the sources (label drawn first, all alike), cut to at
most --event-seconds, placed at random without overlap on silence; each placed clip is an event
with its clip's label. The sources are split first: no recording is heard in two splits.

Audio of any format mae_ast.audio decodes is read and written as wav. A CSV row that names a
missing file, has an empty label, bad times or does not parse stops the tool, named as
CSV:LINE, before anything is written; so does a file the CSV names that cannot be decoded.
Found files (--audio, --demo-corpus) that cannot be decoded are named, counted and left out.
The task is built in OUT.partial, checked as --check checks a task, and only then moved to OUT;
an existing OUT is replaced only with --overwrite (and only if it is a task folder).
"""
import argparse
import csv
import json
import math
import os
import random
import re
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from mae_ast import cli

PREFIX = "[make_hear_task]"
SPLITS = ("train", "valid", "test")
# the scores hear-preprocess configures for tasks of each kind (speech_commands, fsd50k,
# dcase2016_task2); all are heareval's own score names
EVALUATION = {("scene", "multiclass"): ["top1_acc"],
              ("scene", "multilabel"): ["mAP", "d_prime", "aucroc"],
              ("event", "multilabel"): ["event_onset_200ms_fms", "segment_1s_er"]}
# heareval reads labelvocabulary.csv with pandas, which turns these cells into NaN
PANDAS_NA = {"", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND",
             "1.#QNAN", "<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null"}
MAX_PROBLEMS_SHOWN = 20
DEFAULT_MIX_SECONDS = 10.0


class TaskError(ValueError):
    """Bad input or a bad task folder; the message names the file (and line)."""


@dataclass
class Part:
    """A piece of a source file placed in a task clip: ``seconds`` of ``path`` from
    ``offset`` (None: to its end), starting at ``at`` seconds in the clip."""
    path: str
    offset: float = 0.0
    seconds: Optional[float] = None
    at: float = 0.0


@dataclass
class Event:
    label: str
    start: float  # seconds
    end: float


@dataclass
class Clip:
    """One audio file of the task: its labels (scene) or events, where it was named (for
    messages) and what it is made of."""
    name: str  # unique, no extension
    where: str  # 'labels.csv:7' or the file's path
    parts: List[Part]
    labels: List[str] = field(default_factory=list)
    events: Optional[List[Event]] = None
    seconds: float = 0.0  # length of the source (filled in by probing)
    recording: str = ""  # clips of one recording go to one split (default: each its own)

    @property
    def stratum(self) -> Tuple[str, ...]:
        return tuple(sorted(self.labels)) if self.events is None else ()


# ---- sources -----------------------------------------------------------------------------------
def unique_names(rel_paths: Sequence[str]) -> List[str]:
    """File names for the task: the relative path without extension, folders joined by '__'
    (heareval writes one file per clip name, so no '/'), made unique with _2, _3, ..."""
    names, seen = [], set()
    for rel in rel_paths:
        base = os.path.splitext(rel)[0].replace(os.sep, "__").lstrip(".") or "clip"
        name, k = base, 1
        while name in seen:
            k += 1
            name = f"{base}_{k}"
        seen.add(name)
        names.append(name)
    return names


def label_problem(name: str) -> Optional[str]:
    """Why ``name`` cannot be a label that heareval reads back unchanged from
    labelvocabulary.csv (with pandas) and the split files, or None when it can."""
    if not name:
        return "the label is empty"
    if name != name.strip():
        return f"label {name!r} starts or ends with white space"
    if "\n" in name or "\r" in name:
        return f"label {name!r} holds a line break"
    if name in PANDAS_NA:
        return f"label {name!r} is read as 'missing' by heareval (pandas)"
    return None


def clips_from_folder(root: str) -> List[Clip]:
    """Class sub-folders: the top folder below ``root`` is the label."""
    from mae_ast.audio import AUDIO_EXTENSIONS

    if not os.path.isdir(root):
        raise TaskError(f"{root}: not a folder")
    found, classless = [], 0
    for folder, dirs, files in os.walk(root, followlinks=True):
        dirs.sort()
        for f in sorted(files):
            if os.path.splitext(f)[1].lower() not in AUDIO_EXTENSIONS:
                continue
            rel = os.path.relpath(os.path.join(folder, f), root)
            if os.sep not in rel:
                classless += 1
                continue
            found.append(rel)
    if classless:
        log(f"left out {classless} audio files directly in {root} (not in a class sub-folder)")
    bad = sorted({rel.split(os.sep)[0] for rel in found if label_problem(rel.split(os.sep)[0])})
    if bad:
        raise TaskError(f"{os.path.join(root, bad[0])}: class folder cannot be a label: {label_problem(bad[0])}")
    return [Clip(name, os.path.join(root, rel), [Part(os.path.join(root, rel))], labels=[rel.split(os.sep)[0]])
            for rel, name in zip(found, unique_names(found))]


def clips_from_demo_corpus(folder: str, column: str) -> List[Clip]:
    """The demo corpus's index.tsv; rows whose ``column`` is empty (language of music) are
    counted and left out."""
    from mae_ast.demo.corpus import read_index

    if not os.path.isfile(os.path.join(folder, "index.tsv")):
        raise TaskError(f"{os.path.join(folder, 'index.tsv')}: not found: is {folder} a demo corpus "
                        "(demo_runs/NAME/corpus, made by tools/demo.sh)?")
    rows = read_index(Path(folder))
    kept = [row for row in rows if row.get(column, "").strip()]
    if len(kept) < len(rows):
        log(f"left out {len(rows) - len(kept)} of {len(rows)} corpus chunks without a {column}")
    for row in kept:
        problem = label_problem(row[column])
        if problem:
            raise TaskError(f"{os.path.join(folder, 'index.tsv')}: {row['path']}: {problem}")
    rels = [row["path"] for row in kept]
    # a recording's chunks stay in one split: a music track heard in train is not tested on
    return [Clip(name, os.path.join(folder, rel), [Part(os.path.join(folder, rel))], labels=[row[column]],
                 recording=row.get("file", ""))
            for rel, name, row in zip(rels, unique_names(rels), kept)]


def parse_seconds(text: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise TaskError(f"{what} {text!r} is not a number (seconds)") from None
    if not math.isfinite(value) or value < 0:
        raise TaskError(f"{what} {text!r} must be a number of seconds, 0 or more")
    return value


def read_label_rows(csv_path: str):
    """(columns, [(line, cells)]) of the label CSV; the header is 'file,label' or
    'file,label,start,end'."""
    from mae_ast.labels import LabelError, read_csv_rows, read_utf8

    try:
        rows = read_csv_rows(csv_path, read_utf8(csv_path, "label CSV", hint=""))
    except LabelError as e:
        raise TaskError(str(e)) from None
    if not rows:
        raise TaskError(f"{csv_path}:1: empty file; expected the header 'file,label' or 'file,label,start,end'")
    line, header = rows[0]
    columns = [cell.strip().lower() for cell in header]
    if columns not in (["file", "label"], ["file", "label", "start", "end"]):
        raise TaskError(f"{csv_path}:{line}: expected the header 'file,label' (scene task) or "
                        f"'file,label,start,end' (event task, seconds), got {','.join(header)!r}")
    if len(rows) == 1:
        raise TaskError(f"{csv_path}:{line + 1}: no rows after the header")
    return columns, rows[1:]


def clips_from_csv(csv_path: str, audio_root: Optional[str]) -> List[Clip]:
    """One clip per file the CSV names; every bad row is named as CSV:LINE, then the tool
    stops before decoding anything."""
    root = audio_root if audio_root is not None else os.path.dirname(os.path.abspath(csv_path))
    columns, rows = read_label_rows(csv_path)
    events = len(columns) == 4
    by_path: Dict[str, Clip] = {}
    seen_rows: Dict[tuple, int] = {}
    problems = []
    for line, cells in rows:
        where = f"{csv_path}:{line}"
        try:
            if len(cells) != len(columns):
                raise TaskError(f"expected {len(columns)} fields ({','.join(columns)}), got {len(cells)}: {cells!r}")
            given, label = cells[0].strip(), cells[1].strip()
            if not given:
                raise TaskError("the file is empty")
            path = os.path.normpath(given if os.path.isabs(given) else os.path.join(root, given))
            if not os.path.isfile(path):
                raise TaskError(f"no such file: {path}" + (" (a folder)" if os.path.isdir(path) else ""))
            problem = label_problem(label)
            if problem:
                raise TaskError(problem)
            event = None
            if events:
                start = parse_seconds(cells[2].strip(), "start")
                end = parse_seconds(cells[3].strip(), "end")
                if end <= start:
                    raise TaskError(f"end {end:g} s is not after start {start:g} s")
                event = Event(label, start, end)
            key = (path, label) if event is None else (path, label, event.start, event.end)
            if key in seen_rows:
                raise TaskError(f"the same row as line {seen_rows[key]}")
            seen_rows[key] = line
        except TaskError as e:
            problems.append(f"{where}: {e}")
            continue
        clip = by_path.get(path)
        if clip is None:
            clip = by_path[path] = Clip("", where, [Part(path)], events=[] if events else None)
        if events:
            clip.events.append(event)
        else:
            clip.labels.append(label)
    if problems:
        raise_problems(problems, f"bad rows in {csv_path}")
    for clip, name in zip(by_path.values(), unique_names([name_below(root, path) for path in by_path])):
        clip.name = name
    return list(by_path.values())


def name_below(root: str, path: str) -> str:
    """``path`` relative to ``root`` when it lies below it, else its file name."""
    rel = os.path.relpath(path, root)
    return os.path.basename(path) if rel.startswith(os.pardir) else rel


def raise_problems(problems: List[str], what: str):
    """Name each problem on stderr (the first MAX_PROBLEMS_SHOWN), then stop."""
    for problem in problems[:MAX_PROBLEMS_SHOWN]:
        print(problem, file=sys.stderr)
    if len(problems) > MAX_PROBLEMS_SHOWN:
        print(f"... and {len(problems) - MAX_PROBLEMS_SHOWN} more", file=sys.stderr)
    raise TaskError(f"{len(problems)} {what} (each is named above); nothing written")


# ---- probing, mixing, splitting ----------------------------------------------------------------
def probe_clips(clips: List[Clip], strict: bool) -> List[Clip]:
    """Fill in each source's length. A file that cannot be decoded stops the tool when the user
    named it (``strict``: a CSV row), else it is named, counted and left out."""
    from mae_ast import audio

    kept, unreadable = [], []
    for clip in clips:
        path = clip.parts[0].path
        try:
            rate, frames = audio.probe(path)
            if frames == 0:
                raise audio.AudioReadError(path, "no samples")
        except audio.AudioReadError as e:
            unreadable.append(f"{clip.where}: cannot decode {e}" if strict else str(e))
            if not strict:
                log(f"left out {e}")
            continue
        clip.seconds = frames / rate
        kept.append(clip)
    if unreadable and strict:
        raise_problems(unreadable, "audio files the CSV names cannot be read")
    if unreadable:
        log(f"left out {len(unreadable)} of {len(clips)} audio files that cannot be read (named above)")
    return kept


def limit_per_label(clips: List[Clip], most: int, rng: random.Random) -> List[Clip]:
    """At most ``most`` clips of each label set, drawn at random (keeps big corpora quick)."""
    by_stratum: Dict[tuple, List[Clip]] = {}
    for clip in clips:
        by_stratum.setdefault(clip.stratum, []).append(clip)
    kept = []
    for stratum in sorted(by_stratum):
        group = by_stratum[stratum]
        kept += rng.sample(group, most) if len(group) > most else group
    return sorted(kept, key=lambda c: c.name)


def spread_order(units: List[List[Clip]], rng: random.Random) -> List[List[Clip]]:
    """The units (clips of one recording) shuffled, then dealt label by label in turn, so that
    any run of the list holds the labels in about their overall proportions: the splits cut
    from it are balanced."""
    by_stratum: Dict[tuple, List[List[Clip]]] = {}
    for unit in units:
        by_stratum.setdefault(unit[0].stratum, []).append(unit)
    strata = [by_stratum[s] for s in sorted(by_stratum)]
    for stratum in strata:
        rng.shuffle(stratum)
    rng.shuffle(strata)
    # deal in proportion: each unit gets a position (i + 0.5) / len(stratum) in [0, 1)
    keyed = [((i + 0.5) / len(stratum), k, unit) for k, stratum in enumerate(strata) for i, unit in enumerate(stratum)]
    return [unit for _, _, unit in sorted(keyed, key=lambda key: (key[0], key[1]))]


def assign_splits(clips: List[Clip], folds: Optional[int], valid_share: float, test_share: float,
                  rng: random.Random, what: str = "recordings") -> Dict[str, List[Clip]]:
    """Splits of whole recordings (``Clip.recording``: the chunks of one demo corpus file stay
    together, as hear-preprocess keeps a split key together), balanced by label."""
    by_recording: Dict[str, List[Clip]] = {}
    for clip in sorted(clips, key=lambda c: c.name):
        by_recording.setdefault(clip.recording or clip.name, []).append(clip)
    ordered = spread_order([by_recording[r] for r in sorted(by_recording)], rng)
    n = len(ordered)

    def flat(units):
        return [clip for unit in units for clip in unit]

    if folds:
        if n < folds:
            raise TaskError(f"{n} {what}: too few for {folds} folds")
        # contiguous runs of the spread order, so that each fold gets every label in proportion
        bounds = [round(k * n / folds) for k in range(folds + 1)]
        return {f"fold{k:02d}": flat(ordered[bounds[k]:bounds[k + 1]]) for k in range(folds)}
    n_valid = max(1, round(n * valid_share))
    n_test = max(1, round(n * test_share))
    if n - n_valid - n_test < 1:
        raise TaskError(f"{n} {what}: too few for train, valid and test (valid {n_valid}, test {n_test}); "
                        "give more audio or smaller --valid-percent/--test-percent")
    return {"train": flat(ordered[n_valid + n_test:]), "valid": flat(ordered[:n_valid]),
            "test": flat(ordered[n_valid:n_valid + n_test])}


def mix_scenes(pool: List[Clip], count: int, per_scene: int, event_seconds: float, duration: float,
               rng: random.Random, first_index: int) -> List[Clip]:
    """``count`` event clips of ``duration`` s, each with ``per_scene`` pieces of clips of the
    pool (at most ``event_seconds`` long, from a random offset) in random order, with random
    gaps of silence between them; each piece is an event labelled with its clip's label. Each
    piece's label is drawn first, all labels alike, so that a label with many clips does not
    crowd out the others."""
    by_label: Dict[str, List[Clip]] = {}
    for clip in pool:
        by_label.setdefault(clip.labels[0], []).append(clip)
    labels = sorted(by_label)
    scenes = []
    for k in range(count):
        chosen = [rng.choice(by_label[rng.choice(labels)]) for _ in range(per_scene)]
        # on a 10 ms grid, so that an event starts and ends on a sample at 16 and 44.1 kHz alike
        lengths = [math.floor(min(event_seconds, c.seconds) * 100) / 100 for c in chosen]
        chosen, lengths = [c for c, n in zip(chosen, lengths) if n > 0], [n for n in lengths if n > 0]
        if not chosen:
            raise TaskError("the source clips are too short to mix (under 10 ms)")
        while sum(lengths) > duration and len(chosen) > 1:
            chosen, lengths = chosen[:-1], lengths[:-1]
        lengths = [min(length, duration) for length in lengths]
        cuts = sorted(rng.uniform(0, duration - sum(lengths)) for _ in chosen)
        parts, events, placed = [], [], 0.0
        for clip, length, cut in zip(chosen, lengths, cuts):
            at = round(math.floor(cut * 100) / 100 + placed, 2)
            offset = rng.uniform(0, clip.seconds - length)
            parts.append(Part(clip.parts[0].path, offset, length, at))
            events.append(Event(clip.labels[0], at, round(at + length, 2)))
            placed += length
        scenes.append(Clip(f"scene{first_index + k:05d}", f"scene {first_index + k} (mixed)", parts,
                           events=events, seconds=duration))
    return scenes


def mixed_event_splits(clips: List[Clip], args, rng: random.Random) -> Dict[str, List[Clip]]:
    """Split the source clips first, then mix each split's scenes from its own sources only, so
    that no recording is heard in two splits."""
    multi = [c for c in clips if len(c.labels) != 1]
    if multi:
        raise TaskError(f"{multi[0].where}: --mix-events needs one label per source clip, it has {multi[0].labels}")
    sources = assign_splits(clips, args.folds, args.valid_percent, args.test_percent, rng, "source recordings")
    if args.mix_events < len(sources):
        raise TaskError(f"--mix-events {args.mix_events}: too few scenes for {len(sources)} splits")
    counts = scene_counts(args.mix_events, [len(group) for group in sources.values()])
    splits, index = {}, 0
    for (name, group), count in zip(sources.items(), counts):
        splits[name] = mix_scenes(group, count, args.events_per_scene, args.event_seconds, args.duration,
                                  rng, index)
        index += count
    return splits


def scene_counts(total: int, sizes: List[int]) -> List[int]:
    """``total`` split in proportion to ``sizes``, at least 1 each, summing to ``total``
    (largest remainders get the rounding)."""
    exact = [total * size / sum(sizes) for size in sizes]
    counts = [max(1, math.floor(x)) for x in exact]
    by_remainder = sorted(range(len(sizes)), key=lambda i: counts[i] - exact[i])
    for i in by_remainder[:max(0, total - sum(counts))]:
        counts[i] += 1
    while sum(counts) > total:  # the minimum of 1 took too many: take back from the largest
        counts[counts.index(max(counts))] -= 1
    return counts


# ---- writing -----------------------------------------------------------------------------------
def render(clip: Clip, rate: int, duration: float):
    """The clip's audio at ``rate``: its parts read and placed, trimmed or zero-padded to
    ``duration``."""
    import torch

    from mae_ast import audio

    total = round(duration * rate)
    out = torch.zeros(total)
    for part in clip.parts:
        start = round(part.at * rate)
        if start >= total:
            continue
        num = total - start if part.seconds is None else min(total - start, round(part.seconds * rate))
        wav = audio.read(part.path, rate, start=round(part.offset * rate), num=num)
        out[start:start + len(wav)] = wav
    return out.clamp(-1.0, 1.0).numpy()


def trim_events(clips: List[Clip], duration: float) -> List[Clip]:
    """As hear-preprocess: events that start at or after ``duration`` are dropped, events that
    run past it end there; clips left without events are counted and left out."""
    dropped = trimmed = 0
    kept = []
    for clip in clips:
        inside = [e for e in clip.events if e.start < duration]
        dropped += len(clip.events) - len(inside)
        trimmed += sum(e.end > duration for e in inside)
        clip.events = sorted((Event(e.label, e.start, min(e.end, duration)) for e in inside),
                             key=lambda e: (e.start, e.end, e.label))
        if clip.events:
            kept.append(clip)
        else:
            log(f"left out {clip.where}: every event starts after --duration {duration:g} s")
    if dropped or trimmed:
        log(f"events past --duration {duration:g} s: {dropped} dropped, {trimmed} cut at the end")
    return kept


def split_labels(clips: List[Clip]) -> dict:
    if clips and clips[0].events is not None:
        return {f"{c.name}.wav": [{"label": e.label, "start": round(e.start * 1000, 3),
                                   "end": round(e.end * 1000, 3)} for e in c.events]
                for c in sorted(clips, key=lambda c: c.name)}
    return {f"{c.name}.wav": sorted(c.labels) for c in sorted(clips, key=lambda c: c.name)}


def vocabulary_problem(labels: List[str]) -> Optional[str]:
    """Why heareval would read labelvocabulary.csv back with other labels than the split files
    hold: when every label looks like a number, pandas reads the column as numbers, and heareval
    compares their str() with the labels ('01' comes back as '1', '2' as '2.0' beside '2.5')."""
    try:
        numbers = [float(label) for label in labels]
    except ValueError:
        return None  # a column with a name in it stays text
    if all(re.fullmatch(r"[+-]?[0-9]+", label) for label in labels):
        read_back = [str(int(label)) for label in labels]
    else:
        read_back = [str(number) for number in numbers]
    odd = [label for label, back in zip(labels, read_back) if back != label]
    if not odd:
        return None
    return (f"every label is a number, so heareval (pandas) reads them back as numbers, and "
            f"{odd[0]!r} would come back as {read_back[labels.index(odd[0])]!r}: write the labels as "
            "plain integers or give them names")


def write_task(folder: str, splits: Dict[str, List[Clip]], embedding_type: str, prediction_type: str,
               args, source: str) -> None:
    labels = sorted({lab for clips in splits.values() for c in clips
                     for lab in (c.labels if c.events is None else [e.label for e in c.events])})
    problem = vocabulary_problem(labels)
    if problem:
        raise TaskError(f"{source}: {problem}")
    split_mode = "new_split_kfold" if args.folds else "trainvaltest"
    metadata = {
        "task_name": args.name, "version": "mae_ast-1", "embedding_type": embedding_type,
        "prediction_type": prediction_type, "split_mode": split_mode, "splits": list(splits),
        "sample_duration": args.duration, "evaluation": EVALUATION[(embedding_type, prediction_type)],
        "mode": "full", "sample_rates": args.sample_rates, "source": source, "seed": args.seed,
        "made_by": "mae_ast tools/make_hear_task.py",
    }
    if args.folds:
        metadata["nfolds"] = args.folds
    with open(os.path.join(folder, "task_metadata.json"), "w") as f:
        json.dump(metadata, f, indent=1)
    with open(os.path.join(folder, "labelvocabulary.csv"), "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["idx", "label"])
        writer.writerows(enumerate(labels))
    import soundfile as sf

    for split, clips in splits.items():
        with open(os.path.join(folder, f"{split}.json"), "w", encoding="utf-8") as f:
            json.dump(split_labels(clips), f, indent=1, ensure_ascii=False)
        for rate in args.sample_rates:
            os.makedirs(os.path.join(folder, str(rate), split))
        for clip in clips:
            for rate in args.sample_rates:
                try:
                    wav = render(clip, rate, args.duration)
                except Exception as e:  # AudioReadError and decoder surprises past the probe
                    raise TaskError(f"{clip.where}: cannot decode: {e}") from None
                sf.write(os.path.join(folder, str(rate), split, f"{clip.name}.wav"), wav, rate, subtype="PCM_16")


# ---- checking a task folder (what heareval's runners read) --------------------------------------
def check_task(folder: str) -> dict:
    """Read a task folder as heareval's runners do and return its metadata; a TaskError names
    the first file that they would refuse or misread."""
    import soundfile as sf

    def load_json(name):
        path = os.path.join(folder, name)
        try:
            with open(path, encoding="utf-8") as f:
                return json.load(f)
        except FileNotFoundError:
            raise TaskError(f"{path}: not found") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise TaskError(f"{path}: not JSON ({e})") from None

    meta_path = os.path.join(folder, "task_metadata.json")
    meta = load_json("task_metadata.json")
    for key in ("task_name", "embedding_type", "prediction_type", "split_mode", "splits", "sample_duration",
                "evaluation"):
        if key not in meta:
            raise TaskError(f"{meta_path}: no {key!r}")
    if (meta["embedding_type"], meta["prediction_type"]) not in EVALUATION:
        raise TaskError(f"{meta_path}: embedding_type {meta['embedding_type']!r} with prediction_type "
                        f"{meta['prediction_type']!r} is not a kind of task heareval scores")
    if meta["split_mode"] == "trainvaltest" and sorted(meta["splits"]) != sorted(SPLITS):
        raise TaskError(f"{meta_path}: split_mode trainvaltest needs the splits train, valid, test, "
                        f"not {meta['splits']}")
    if meta["split_mode"] in ("new_split_kfold", "presplit_kfold") and len(meta["splits"]) < 3:
        raise TaskError(f"{meta_path}: k-fold needs 3 folds or more (one to test, one to validate, "
                        f"the rest to train), not {meta['splits']}")
    if meta["split_mode"] not in ("trainvaltest", "new_split_kfold", "presplit_kfold"):
        raise TaskError(f"{meta_path}: unknown split_mode {meta['split_mode']!r}")
    duration = meta["sample_duration"]
    vocab_path = os.path.join(folder, "labelvocabulary.csv")
    try:
        with open(vocab_path, newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))
    except FileNotFoundError:
        raise TaskError(f"{vocab_path}: not found") from None
    if not rows or rows[0] != ["idx", "label"]:
        raise TaskError(f"{vocab_path}:1: expected the header 'idx,label'")
    vocabulary = set()
    for line, row in enumerate(rows[1:], start=2):
        if len(row) != 2 or row[0] != str(line - 2):
            raise TaskError(f"{vocab_path}:{line}: expected '{line - 2},LABEL', got {','.join(row)!r}")
        if label_problem(row[1]):
            raise TaskError(f"{vocab_path}:{line}: {label_problem(row[1])}")
        vocabulary.add(row[1])
    problem = vocabulary_problem(sorted(vocabulary))
    if problem:
        raise TaskError(f"{vocab_path}: {problem}")
    rates = sorted(int(d) for d in os.listdir(folder) if d.isdigit() and os.path.isdir(os.path.join(folder, d)))
    if not rates:
        raise TaskError(f"{folder}: no audio folder (16000/, 44100/, ...)")
    for split in meta["splits"]:
        labels = load_json(f"{split}.json")
        json_path = os.path.join(folder, f"{split}.json")
        if not labels:
            raise TaskError(f"{json_path}: no files")
        for name, value in labels.items():
            check_labels(json_path, name, value, meta, vocabulary)
        for rate in rates:
            audio_dir = os.path.join(folder, str(rate), split)
            present = set(os.listdir(audio_dir)) if os.path.isdir(audio_dir) else set()
            missing = sorted(set(labels) - present)
            if missing:
                raise TaskError(f"{os.path.join(audio_dir, missing[0])}: not found ({len(missing)} files of "
                                f"{json_path} are missing)")
            for name in labels:
                try:
                    info = sf.info(os.path.join(audio_dir, name))
                except Exception as e:  # soundfile's LibsndfileError, RuntimeError, ...
                    raise TaskError(f"{os.path.join(audio_dir, name)}: not a wav file heareval can read "
                                    f"({e})") from None
                expected = round(duration * rate) if duration is not None else info.frames
                if info.samplerate != rate or info.channels != 1 or info.frames != expected:
                    raise TaskError(f"{os.path.join(audio_dir, name)}: {info.channels} channel(s), "
                                    f"{info.samplerate} Hz, {info.frames} samples; expected mono, {rate} Hz, "
                                    f"{expected} samples ({duration} s)")
    return meta


def check_labels(json_path: str, name: str, value, meta: dict, vocabulary: set) -> None:
    where = f"{json_path}: {name}"
    if meta["embedding_type"] == "scene":
        if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
            raise TaskError(f"{where}: expected a list of labels, got {value!r}")
        if meta["prediction_type"] == "multiclass" and len(value) != 1:
            raise TaskError(f"{where}: a multiclass task has one label per file, got {value!r}")
        labels = value
    else:
        if not isinstance(value, list):
            raise TaskError(f"{where}: expected a list of events, got {value!r}")
        for event in value:
            if (not isinstance(event, dict) or set(event) != {"label", "start", "end"}
                    or not all(isinstance(event[k], (int, float)) for k in ("start", "end"))):
                raise TaskError(f"{where}: expected events {{label, start, end (ms)}}, got {event!r}")
            if not 0 <= event["start"] < event["end"]:
                raise TaskError(f"{where}: event {event!r} does not start before it ends")
        labels = [event["label"] for event in value]
    unknown = [label for label in labels if label not in vocabulary]
    if unknown:
        raise TaskError(f"{where}: label {unknown[0]!r} is not in labelvocabulary.csv")


# ---- command line ------------------------------------------------------------------------------
def log(message: str) -> None:
    print(f"{PREFIX} {message}", file=sys.stderr, flush=True)


def sample_rate_list(text: str) -> List[int]:
    try:
        rates = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated sample rates in Hz, got {text!r}") from None
    if not rates or min(rates) < 1000:
        raise argparse.ArgumentTypeError(f"expected sample rates of 1000 Hz or more, got {text!r}")
    return rates


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, epilog=cli.EXIT_CODES_HELP,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out", help="the task folder to write (inside a folder of tasks)")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--audio", metavar="DIR", help="class sub-folders of audio: a scene task")
    source.add_argument("--labels", metavar="FILE.csv", help="'file,label' or 'file,label,start,end' rows")
    source.add_argument("--demo-corpus", metavar="DIR", help="the demo corpus (DIR/index.tsv)")
    source.add_argument("--check", action="store_true", help="only check the task folder OUT")
    p.add_argument("--audio-root", metavar="DIR", help="--labels: the files' folder (default: the CSV's)")
    p.add_argument("--label-column", default="category", choices=("category", "source", "language"),
                   help="--demo-corpus: which column of index.tsv is the label (default category)")
    p.add_argument("--mix-events", type=int, metavar="N",
                   help="make an event task of N scenes mixed from the labelled clips")
    p.add_argument("--events-per-scene", type=int, default=3, help="--mix-events: clips per scene (default 3)")
    p.add_argument("--event-seconds", type=float, default=2.0,
                   help="--mix-events: longest piece of a clip (default 2 s)")
    p.add_argument("--duration", type=float, metavar="S",
                   help="every file is trimmed or padded to S seconds (default: the longest source; "
                        f"{DEFAULT_MIX_SECONDS:g} with --mix-events)")
    p.add_argument("--sample-rates", type=sample_rate_list, default=[16000], metavar="R,..",
                   help="write the audio at these rates (default 16000; 16000,44100 for hearbaseline too)")
    p.add_argument("--folds", type=int, metavar="K", help="K folds (3 or more) instead of train/valid/test")
    p.add_argument("--valid-percent", type=float, default=0.1, help="share of clips for valid (default 0.1)")
    p.add_argument("--test-percent", type=float, default=0.1, help="share of clips for test (default 0.1)")
    p.add_argument("--max-per-label", type=int, metavar="N", help="at most N clips of each label, drawn at random")
    p.add_argument("--seed", type=int, default=0, help="seed of the splits, draws and mixing (default 0)")
    p.add_argument("--name", help="task_name (default: the folder's name)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing task folder OUT")
    args = p.parse_args(argv)
    if args.folds is not None and args.folds < 3:
        p.error("--folds must be 3 or more (heareval tests on one fold, validates on the next, trains on the rest)")
    if not (0 <= args.valid_percent < 1 and 0 <= args.test_percent < 1):
        p.error("--valid-percent and --test-percent are shares between 0 and 1")
    if args.duration is not None and args.duration <= 0:
        p.error("--duration must be positive")
    if args.mix_events is not None and (args.mix_events < 1 or args.events_per_scene < 1 or args.event_seconds <= 0):
        p.error("--mix-events, --events-per-scene and --event-seconds must be positive")
    if args.max_per_label is not None and args.max_per_label < 1:
        p.error("--max-per-label must be 1 or more")
    for flag, value, needs in (("--audio-root", args.audio_root, args.labels),
                               ("--mix-events", args.mix_events, not args.check)):
        if value is not None and not needs:
            p.error(f"{flag} does not apply here")
    args.name = args.name or os.path.basename(os.path.normpath(args.out))
    return args


def build(args) -> Tuple[str, int]:
    """Build the task in OUT.partial and check it; returns (the partial folder, clips written)."""
    rng = random.Random(args.seed)
    if args.labels:
        clips = probe_clips(clips_from_csv(args.labels, args.audio_root), strict=True)
        source = args.labels
    elif args.audio:
        clips = probe_clips(clips_from_folder(args.audio), strict=False)
        source = args.audio
    else:
        clips = probe_clips(clips_from_demo_corpus(args.demo_corpus, args.label_column), strict=False)
        source = f"{args.demo_corpus} ({args.label_column})"
    if not clips:
        raise TaskError(f"{source}: no audio that could be read")
    is_event = clips[0].events is not None
    if args.max_per_label:
        if is_event:
            raise TaskError("--max-per-label applies to scene labels, not to an event CSV")
        clips = limit_per_label(clips, args.max_per_label, rng)
    if args.mix_events:
        if is_event:
            raise TaskError("--mix-events mixes scene-labelled clips; the CSV already has events")
        args.duration = args.duration or DEFAULT_MIX_SECONDS
        splits = mixed_event_splits(clips, args, rng)
        embedding_type, prediction_type = "event", "multilabel"
    else:
        args.duration = args.duration or math.ceil(max(c.seconds for c in clips) * 100) / 100
        if is_event:
            clips = trim_events(clips, args.duration)
            embedding_type, prediction_type = "event", "multilabel"
        else:
            embedding_type = "scene"
            prediction_type = "multiclass" if all(len(c.labels) == 1 for c in clips) else "multilabel"
        splits = assign_splits(clips, args.folds, args.valid_percent, args.test_percent, rng)
    partial = os.path.normpath(args.out) + ".partial"
    if os.path.exists(partial):
        shutil.rmtree(partial)
    os.makedirs(partial)
    try:
        write_task(partial, splits, embedding_type, prediction_type, args, source)
        check_task(partial)
    except BaseException:  # no half-written task is left for heareval to pick up
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return partial, sum(len(c) for c in splits.values())


def main(argv=None):
    args = parse_args(argv)
    if args.check:
        try:
            meta = check_task(args.out)
        except TaskError as e:
            cli.fail(str(e))
        print(f"{args.out}: a {meta['embedding_type']} task ({meta['prediction_type']}), splits "
              f"{', '.join(meta['splits'])}: looks good")
        return
    out = os.path.normpath(args.out)
    if os.path.isfile(out) or (os.path.isdir(out) and os.listdir(out)):
        if not args.overwrite:
            cli.fail(f"{out} exists; give --overwrite to replace it")
        if not os.path.isfile(os.path.join(out, "task_metadata.json")):
            cli.fail(f"{out} is not a task folder (no task_metadata.json); not replacing it")
    cli.make_folder(os.path.dirname(os.path.abspath(out)))
    try:
        partial, count = build(args)
    except TaskError as e:
        cli.fail(str(e))
    if os.path.exists(out):
        shutil.rmtree(out)
    os.rename(partial, out)
    log(f"wrote {out}: {count} files of {args.duration:g} s at "
        f"{', '.join(map(str, args.sample_rates))} Hz")


if __name__ == "__main__":
    main()
