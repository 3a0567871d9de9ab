"""HEAR 2021 task folders, as hear-preprocess emits them, for hear-eval-kit's runners: built
from class sub-folders, a label CSV (scene or event rows) or the demo corpus, and checked as
heareval reads them. ``tools/make_hear_task.py`` is the command line; its --help describes the
folder's files.

Bad input raises TaskError naming the file (and line); a CSV with several bad rows raises
InputProblems listing each. What is left out on the way (files that cannot be decoded, events
past the duration) is reported through the ``log`` callable the caller passes.
"""
import csv
import json
import math
import os
import random
import re
import shutil
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple

from mae_ast.labels import InputProblems, LabelError, read_label_csv

Log = Callable[[str], None]


def ignore(message: str) -> None:
    """The default ``log``: a library caller that wants no report."""


SPLITS = ("train", "valid", "test")
# the scores hear-preprocess configures for tasks of each kind (speech_commands, fsd50k,
# dcase2016_task2); all are heareval's own score names
EVALUATION = {("scene", "multiclass"): ["top1_acc"],
              ("scene", "multilabel"): ["mAP", "d_prime", "aucroc"],
              ("event", "multilabel"): ["event_onset_200ms_fms", "segment_1s_er"]}
# heareval reads labelvocabulary.csv with pandas, which turns these cells into NaN
PANDAS_NA = {"", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND",
             "1.#QNAN", "<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null"}
DEFAULT_MIX_SECONDS = 10.0


class TaskError(ValueError):
    """Bad input or a bad task folder; the message names the file (and line)."""


@dataclass
class TaskOptions:
    """What to build (tools/make_hear_task.py's flags; its --help says what each does). One
    source is given: ``audio`` (class folders), ``labels`` (a CSV) or ``demo_corpus``."""
    out: str
    name: str
    audio: Optional[str] = None
    labels: Optional[str] = None
    demo_corpus: Optional[str] = None
    audio_root: Optional[str] = None  # labels: the files' folder (default: the CSV's)
    label_column: str = "category"  # demo_corpus: category, source or language
    mix_events: Optional[int] = None  # scenes to mix from the clips: an event task
    events_per_scene: int = 3
    event_seconds: float = 2.0
    duration: Optional[float] = None  # seconds; None: the longest source (DEFAULT_MIX_SECONDS mixed)
    sample_rates: List[int] = field(default_factory=lambda: [16000])
    folds: Optional[int] = None  # k folds instead of train/valid/test
    valid_percent: float = 0.1
    test_percent: float = 0.1
    max_per_label: Optional[int] = None
    seed: int = 0


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


def clips_from_folder(root: str, log: Log = ignore) -> List[Clip]:
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


def clips_from_demo_corpus(folder: str, column: str, log: Log = ignore) -> List[Clip]:
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
    try:
        rows = read_label_csv(csv_path, "the header 'file,label' or 'file,label,start,end'")
    except LabelError as e:
        raise TaskError(str(e)) from None
    line, header = rows[0]
    columns = [cell.strip().lower() for cell in header]
    if columns not in (["file", "label"], ["file", "label", "start", "end"]):
        raise TaskError(f"{csv_path}:{line}: expected the header 'file,label' (scene task) or "
                        f"'file,label,start,end' (event task, seconds), got {','.join(header)!r}")
    if len(rows) == 1:
        raise TaskError(f"{csv_path}:{line + 1}: no rows after the header")
    return columns, rows[1:]


def parse_row(cells: List[str], columns: List[str], root: str) -> Tuple[str, str, Optional[Event]]:
    """(the file's path, the label, the event or None for a scene row) of one CSV row; a
    TaskError says what is wrong with it (the caller adds CSV:LINE)."""
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
    if len(columns) == 2:
        return path, label, None
    start = parse_seconds(cells[2].strip(), "start")
    end = parse_seconds(cells[3].strip(), "end")
    if end <= start:
        raise TaskError(f"end {end:g} s is not after start {start:g} s")
    return path, label, Event(label, start, end)


def clips_from_csv(csv_path: str, audio_root: Optional[str]) -> List[Clip]:
    """One clip per file the CSV names; every bad row is named as CSV:LINE (InputProblems)
    before anything is decoded."""
    root = audio_root if audio_root is not None else os.path.dirname(os.path.abspath(csv_path))
    columns, rows = read_label_rows(csv_path)
    events = len(columns) == 4
    by_path: Dict[str, Clip] = {}
    seen_rows: Dict[tuple, int] = {}
    problems = []
    for line, cells in rows:
        where = f"{csv_path}:{line}"
        try:
            path, label, event = parse_row(cells, columns, root)
            key = (path, label) if event is None else (path, label, event.start, event.end)
            if key in seen_rows:
                raise TaskError(f"the same row as line {seen_rows[key]}")
        except TaskError as e:
            problems.append(f"{where}: {e}")
            continue
        seen_rows[key] = line
        clip = by_path.setdefault(path, Clip("", where, [Part(path)], events=[] if events else None))
        if events:
            clip.events.append(event)
        else:
            clip.labels.append(label)
    if problems:
        raise InputProblems(problems, f"bad rows in {csv_path}", "nothing written")
    for clip, name in zip(by_path.values(), unique_names([name_below(root, path) for path in by_path])):
        clip.name = name
    return list(by_path.values())


def name_below(root: str, path: str) -> str:
    """``path`` relative to ``root`` when it lies below it, else its file name."""
    rel = os.path.relpath(path, root)
    return os.path.basename(path) if rel.startswith(os.pardir) else rel


# ---- probing, mixing, splitting ----------------------------------------------------------------
def probe_clips(clips: List[Clip], strict: bool, log: Log = ignore) -> List[Clip]:
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
        raise InputProblems(unreadable, "audio files the CSV names cannot be read", "nothing written")
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


def mixed_event_splits(clips: List[Clip], options: TaskOptions, rng: random.Random) -> Dict[str, List[Clip]]:
    """Split the source clips first, then mix each split's scenes from its own sources only, so
    that no recording is heard in two splits."""
    multi = [c for c in clips if len(c.labels) != 1]
    if multi:
        raise TaskError(f"{multi[0].where}: --mix-events needs one label per source clip, it has {multi[0].labels}")
    sources = assign_splits(clips, options.folds, options.valid_percent, options.test_percent, rng,
                            "source recordings")
    if options.mix_events < len(sources):
        raise TaskError(f"--mix-events {options.mix_events}: too few scenes for {len(sources)} splits")
    counts = scene_counts(options.mix_events, [len(group) for group in sources.values()])
    splits, index = {}, 0
    for (name, group), count in zip(sources.items(), counts):
        splits[name] = mix_scenes(group, count, options.events_per_scene, options.event_seconds,
                                  options.duration, rng, index)
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


def trim_events(clips: List[Clip], duration: float, log: Log = ignore) -> List[Clip]:
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


def task_labels(splits: Dict[str, List[Clip]]) -> List[str]:
    """Every label of every split, sorted: labelvocabulary.csv's rows."""
    return sorted({label for clips in splits.values() for c in clips
                   for label in (c.labels if c.events is None else [e.label for e in c.events])})


def task_metadata(splits: Dict[str, List[Clip]], embedding_type: str, prediction_type: str,
                  options: TaskOptions, source: str) -> dict:
    """task_metadata.json: the keys heareval reads, and where the task came from."""
    metadata = {
        "task_name": options.name, "version": "mae_ast-1", "embedding_type": embedding_type,
        "prediction_type": prediction_type, "split_mode": "new_split_kfold" if options.folds else "trainvaltest",
        "splits": list(splits), "sample_duration": options.duration,
        "evaluation": EVALUATION[(embedding_type, prediction_type)], "mode": "full",
        "sample_rates": options.sample_rates, "source": source, "seed": options.seed,
        "made_by": "mae_ast tools/make_hear_task.py",
    }
    if options.folds:
        metadata["nfolds"] = options.folds
    return metadata


def write_task(folder: str, splits: Dict[str, List[Clip]], embedding_type: str, prediction_type: str,
               options: TaskOptions, source: str) -> None:
    labels = task_labels(splits)
    problem = vocabulary_problem(labels)
    if problem:
        raise TaskError(f"{source}: {problem}")
    with open(os.path.join(folder, "task_metadata.json"), "w") as f:
        json.dump(task_metadata(splits, embedding_type, prediction_type, options, source), f, indent=1)
    with open(os.path.join(folder, "labelvocabulary.csv"), "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["idx", "label"])
        writer.writerows(enumerate(labels))
    for split, clips in splits.items():
        with open(os.path.join(folder, f"{split}.json"), "w", encoding="utf-8") as f:
            json.dump(split_labels(clips), f, indent=1, ensure_ascii=False)
        write_audio(folder, split, clips, options.sample_rates, options.duration)


def write_audio(folder: str, split: str, clips: List[Clip], rates: List[int], duration: float) -> None:
    """{rate}/{split}/{clip}.wav: mono 16-bit, ``duration`` seconds, at each rate."""
    import soundfile as sf

    for rate in rates:
        os.makedirs(os.path.join(folder, str(rate), split))
    for clip in clips:
        for rate in rates:
            try:
                wav = render(clip, rate, duration)
            except Exception as e:  # AudioReadError and decoder surprises past the probe
                raise TaskError(f"{clip.where}: cannot decode: {e}") from None
            sf.write(os.path.join(folder, str(rate), split, f"{clip.name}.wav"), wav, rate, subtype="PCM_16")


# ---- checking a task folder (what heareval's runners read) --------------------------------------
def check_task(folder: str) -> dict:
    """Read a task folder as heareval's runners do and return its metadata; a TaskError names
    the first file that they would refuse or misread."""
    meta = load_json(folder, "task_metadata.json")
    check_metadata(meta, os.path.join(folder, "task_metadata.json"))
    vocabulary = read_vocabulary(os.path.join(folder, "labelvocabulary.csv"))
    rates = sorted(int(d) for d in os.listdir(folder) if d.isdigit() and os.path.isdir(os.path.join(folder, d)))
    if not rates:
        raise TaskError(f"{folder}: no audio folder (16000/, 44100/, ...)")
    for split in meta["splits"]:
        labels = load_json(folder, f"{split}.json")
        json_path = os.path.join(folder, f"{split}.json")
        if not labels:
            raise TaskError(f"{json_path}: no files")
        for name, value in labels.items():
            check_labels(json_path, name, value, meta, vocabulary)
        for rate in rates:
            check_split_audio(os.path.join(folder, str(rate), split), json_path, labels, rate,
                              meta["sample_duration"])
    return meta


def load_json(folder: str, name: str):
    path = os.path.join(folder, name)
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise TaskError(f"{path}: not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise TaskError(f"{path}: not JSON ({e})") from None


def check_metadata(meta: dict, meta_path: str) -> None:
    """The keys heareval reads, a kind of task it scores, and splits its split mode can use."""
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


def read_vocabulary(vocab_path: str) -> set:
    """The labels of labelvocabulary.csv, checked as heareval (pandas) would read them back."""
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
    return vocabulary


def check_split_audio(audio_dir: str, json_path: str, labels: dict, rate: int, duration: Optional[float]) -> None:
    """Each file ``labels`` (a split's json) names is in ``audio_dir``, a mono wav of ``duration``
    seconds at ``rate``."""
    import soundfile as sf

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



# ---- building ------------------------------------------------------------------------------------
class Built(NamedTuple):
    folder: str  # OUT.partial, checked; the caller moves it to OUT
    clips: int  # files written per sample rate
    duration: float  # seconds of every file


def read_clips(options: TaskOptions, log: Log = ignore) -> Tuple[List[Clip], str]:
    """(the clips of the source the options name, with their lengths; the source, for messages)."""
    if options.labels:
        clips = probe_clips(clips_from_csv(options.labels, options.audio_root), strict=True, log=log)
        source = options.labels
    elif options.audio:
        clips = probe_clips(clips_from_folder(options.audio, log), strict=False, log=log)
        source = options.audio
    else:
        clips = probe_clips(clips_from_demo_corpus(options.demo_corpus, options.label_column, log),
                            strict=False, log=log)
        source = f"{options.demo_corpus} ({options.label_column})"
    if not clips:
        raise TaskError(f"{source}: no audio that could be read")
    return clips, source


def task_splits(clips: List[Clip], options: TaskOptions, rng: random.Random, log: Log = ignore):
    """(splits, embedding_type, prediction_type) of the task; ``options.duration`` is set."""
    is_event = clips[0].events is not None
    if options.mix_events:
        if is_event:
            raise TaskError("--mix-events mixes scene-labelled clips; the CSV already has events")
        return mixed_event_splits(clips, options, rng), "event", "multilabel"
    if is_event:
        clips = trim_events(clips, options.duration, log)
        kinds = "event", "multilabel"
    else:
        kinds = "scene", "multiclass" if all(len(c.labels) == 1 for c in clips) else "multilabel"
    return (assign_splits(clips, options.folds, options.valid_percent, options.test_percent, rng), *kinds)


def build(options: TaskOptions, log: Log = ignore) -> Built:
    """Build the task in OUT.partial and check it (the caller moves it to OUT)."""
    rng = random.Random(options.seed)
    clips, source = read_clips(options, log)
    if options.max_per_label:
        if clips[0].events is not None:
            raise TaskError("--max-per-label applies to scene labels, not to an event CSV")
        clips = limit_per_label(clips, options.max_per_label, rng)
    longest = math.ceil(max(c.seconds for c in clips) * 100) / 100
    options = replace(options, duration=options.duration or (DEFAULT_MIX_SECONDS if options.mix_events else longest))
    splits, embedding_type, prediction_type = task_splits(clips, options, rng, log)
    partial = os.path.normpath(options.out) + ".partial"
    if os.path.exists(partial):
        shutil.rmtree(partial)
    os.makedirs(partial)
    try:
        write_task(partial, splits, embedding_type, prediction_type, options, source)
        check_task(partial)
    except BaseException:  # no half-written task is left for heareval to pick up
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return Built(partial, sum(len(c) for c in splits.values()), options.duration)
