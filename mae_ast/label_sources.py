"""Where tools/make_manifest.py's labels and splits come from: class sub-folders, a label CSV
(with folds, ESC-50 style), and split lists (Speech Commands style).

All of it is read and checked before any audio is decoded, so that a bad row costs seconds,
not a scan of hours. A problem with a whole input (a missing column, a fold no row has) is a
LabelError; bad rows or lines are collected and raised together as InputProblems, each named
FILE:LINE. Paths are relative to the audio root, as ``mae_ast.manifest.find_files`` gives them.
"""
import os
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Set, Tuple

from mae_ast.labels import (LABEL_SET_FILE, InputProblems, LabelError, LabelSet, label_name_problem,
                            parse_label_list, read_label_csv, read_utf8)
from mae_ast.manifest import extension, printable

NO_MANIFEST = "no manifest written"


def ignore(message: str) -> None:
    """The default ``log``: a caller that wants no notes."""


def comma_list(text: Optional[str]) -> List[str]:
    """The stripped, non-empty items of a comma-separated flag value (folds, folder names)."""
    return [item.strip() for item in text.split(",") if item.strip()] if text is not None else []


@dataclass
class LabelCsv:
    """A label CSV and which of its columns to read (the --labels FILE.csv flags)."""
    path: str
    path_column: str
    label_column: str
    fold_column: Optional[str] = None
    valid_folds: Sequence[str] = ()
    test_folds: Sequence[str] = ()
    skip_missing: bool = False  # rows naming files that do not exist are left out, not refused


@dataclass
class Labels:
    """What the label source says about the audio files found."""
    source: str  # for messages: "class folders" or the CSV's path
    names: Dict[str, List[str]] = field(default_factory=dict)  # relative path -> label names
    folds: Dict[str, str] = field(default_factory=dict)  # relative path -> fold (CSV with folds)
    unlabelled: List[str] = field(default_factory=list)  # relative paths, with why below
    why_unlabelled: str = ""
    missing: List[str] = field(default_factory=list)  # CSV:LINE of rows naming absent files (skip_missing)


# ---- paths a CSV row or a list line names -----------------------------------------------------
def relative_to_root(root: str, given: str) -> Optional[str]:
    """``given`` (relative to ``root``, or absolute below it) as the relative path find_files
    gives, or None when it points outside ``root``."""
    path = os.path.normpath(given if os.path.isabs(given) else os.path.join(root, given))
    rel = os.path.relpath(path, root)
    return None if rel == os.pardir or rel.startswith(os.pardir + os.sep) else rel


def file_problem(root: str, given: str, rel: Optional[str], found: Set[str], exclude: Sequence[str] = ()):
    """Why a CSV path cell or a split list line does not name one of the audio files found, or None."""
    if not given:
        return "the path is empty"
    if rel is None:
        return f"{given!r} is outside the audio folder {root}"
    if rel in found:
        return None
    top = rel.split(os.sep)[0]
    if top in exclude and rel != top:
        return f"{given!r} is in {top}{os.sep}, which --exclude-folders leaves out"
    full = os.path.join(root, rel)
    if os.path.isdir(full):
        return f"{given!r} is a folder, not an audio file"
    if os.path.isfile(full):
        return f"{given!r} is not an audio file of --ext ({extension(rel) or 'no extension'})"
    return f"no such file: {full}"


# ---- class folders ------------------------------------------------------------------------------
def labels_from_folders(root: str, files: Sequence[str]) -> Labels:
    """The top sub-folder of each file is its label; files directly in ``root`` have none."""
    labels = Labels("class folders", why_unlabelled="not in a class folder")
    problems = {}
    for rel in files:
        parts = rel.split(os.sep)
        if len(parts) == 1:
            labels.unlabelled.append(rel)
            continue
        name = parts[0].strip()
        why = label_name_problem(name)
        if why:
            problems[parts[0]] = f"{printable(os.path.join(root, parts[0]))}: class folder cannot be a label: {why}"
            continue
        labels.names[rel] = [name]
    if problems:
        raise InputProblems([problems[k] for k in sorted(problems)], "class folders cannot be labels", NO_MANIFEST)
    return labels


# ---- a label CSV --------------------------------------------------------------------------------
def column_index(csv_path: str, line: int, header: List[str], name: str, flag: str) -> int:
    matches = [i for i, cell in enumerate(header) if cell.strip() == name]
    if len(matches) != 1:
        columns = ", ".join(repr(cell.strip()) for cell in header)
        how = "no column" if not matches else f"{len(matches)} columns"
        raise LabelError(f"{csv_path}:{line}: {how} named {name!r} ({flag}); the header's columns are {columns}")
    return matches[0]


@dataclass
class CsvLayout:
    """The header of a label CSV and the indices of the columns read (fold: None without folds)."""
    header: List[str]
    path: int
    label: int
    fold: Optional[int]


def csv_layout(spec: LabelCsv, line: int, header: List[str]) -> CsvLayout:
    def index(name, flag):
        return column_index(spec.path, line, header, name, flag)

    fold = index(spec.fold_column, "--fold-column") if spec.fold_column else None
    return CsvLayout(header, index(spec.path_column, "--path-column"), index(spec.label_column, "--label-column"),
                     fold)


def labels_from_csv(spec: LabelCsv, root: str, files: Sequence[str], exclude: Sequence[str] = (),
                    log: Callable[[str], None] = ignore) -> Labels:
    """Read the CSV's rows; every bad row is named as CSV:LINE (InputProblems). With
    ``spec.skip_missing`` a row naming a file that does not exist is left out instead, each
    one told to ``log``."""
    rows = read_label_csv(spec.path, "a header row naming the columns")
    header_line, header = rows[0]
    layout = csv_layout(spec, header_line, header)
    found = set(files)
    labels = Labels(spec.path, why_unlabelled=f"no row of {spec.path} names it")
    line_of, problems = {}, []
    for line, row in rows[1:]:
        why, rel = row_problem(root, row, layout, found, line_of, exclude)
        if why and spec.skip_missing and rel is not None and not os.path.lexists(os.path.join(root, rel)):
            # AudioSet-style downloads lack some clips: name each, count them, go on
            log(f"missing, left out (--skip-missing): {spec.path}:{line}: {why}")
            labels.missing.append(f"{spec.path}:{line}")
        elif why:
            problems.append(f"{spec.path}:{line}: {why}")
        else:
            line_of[rel] = line
            labels.names[rel] = parse_label_list(row[layout.label])
            if layout.fold is not None:
                labels.folds[rel] = row[layout.fold].strip()
    if problems:
        raise InputProblems(problems, f"rows of {spec.path} cannot be used", NO_MANIFEST)
    if layout.fold is not None:
        check_folds_exist(spec, set(labels.folds.values()))
    labels.unlabelled = [rel for rel in files if rel not in labels.names]
    return labels


def row_problem(root: str, row: List[str], layout: CsvLayout, found: Set[str], line_of: Dict[str, int],
                exclude: Sequence[str] = ()) -> Tuple[Optional[str], Optional[str]]:
    """(why the row cannot be used or None, the file's relative path)."""
    header = layout.header
    if len(row) != len(header):
        return f"{len(row)} cells, the header has {len(header)}", None
    given = row[layout.path].strip()
    rel = relative_to_root(root, given) if given else None
    why = file_problem(root, given, rel, found, exclude)
    if why:
        return why, rel
    if rel in line_of:
        return f"{given!r} is already named on line {line_of[rel]}", rel
    try:
        parse_label_list(row[layout.label])
    except LabelError as e:
        return f"column {header[layout.label].strip()!r}: {e}", rel
    if layout.fold is not None and not row[layout.fold].strip():
        return f"column {header[layout.fold].strip()!r}: the fold is empty", rel
    return None, rel


def check_folds_exist(spec: LabelCsv, folds: Set[str]) -> None:
    """A fold value no row has is a typo ('1' for 'fold1'), not an empty split."""
    for flag, wanted in (("--valid-folds", spec.valid_folds), ("--test-folds", spec.test_folds)):
        absent = [fold for fold in wanted if fold not in folds]
        if absent:
            present = ", ".join(repr(f) for f in sorted(folds))
            raise LabelError(f"{flag}: no row of {spec.path} has fold {absent[0]!r} "
                             f"(the fold values of its rows: {present})")


def read_labels(source, root: str, files: Sequence[str], exclude: Sequence[str] = (),
                log: Callable[[str], None] = ignore) -> Labels:
    """The labels of ``source``: "folders" or a LabelCsv."""
    if source == "folders":
        return labels_from_folders(root, files)
    return labels_from_csv(source, root, files, exclude, log)


# ---- split lists --------------------------------------------------------------------------------
@dataclass
class SplitLists:
    """What --valid-list and --test-list say: {relative path: 'valid' or 'test'}."""
    split_of: Dict[str, str] = field(default_factory=dict)
    lists: Dict[str, str] = field(default_factory=dict)  # split -> list file, for each list given


def read_split_lists(lists: Dict[str, str], root: str, files: Sequence[str], exclude: Sequence[str] = ()) -> SplitLists:
    """Read the split lists ({'valid' or 'test': list file}); every bad line is named as
    LIST:LINE (InputProblems)."""
    listed = SplitLists(lists=dict(lists))
    found, seen, problems, bad_lists = set(files), {}, [], []  # seen: rel -> (list file, line)
    for split, path in lists.items():
        bad = read_split_list(path, split, root, found, exclude, seen, listed)
        problems += bad
        bad_lists += [path] if bad else []
    if problems:
        raise InputProblems(problems, f"lines of {' and '.join(bad_lists)} cannot be used", NO_MANIFEST)
    return listed


def read_split_list(path: str, split: str, root: str, found: Set[str], exclude: Sequence[str],
                    seen: Dict[str, Tuple[str, int]], listed: SplitLists) -> List[str]:
    """Add the files one list names to ``listed`` and ``seen``; returns its bad lines."""
    text = read_utf8(path, f"--{split}-list file", hint="")
    problems, named = [], 0
    for line, entry in enumerate(text.split("\n"), start=1):
        entry = entry.strip()
        if not entry:
            continue
        named += 1
        rel = relative_to_root(root, entry)
        why = file_problem(root, entry, rel, found, exclude)
        if why is None and rel in seen:
            where, first = seen[rel]
            why = (f"{entry!r} is already named on line {first}" if where == path else
                   f"{entry!r} is also named in {where}:{first}; a file goes to one split")
        if why:
            problems.append(f"{path}:{line}: {why}")
            continue
        seen[rel] = path, line
        listed.split_of[rel] = split
    if not named:
        problems.append(f"{path}: names no file (every line is blank)")
    return problems


def fixed_splits(labels: Optional[Labels] = None, listed: Optional[SplitLists] = None,
                 valid_folds: Sequence[str] = (), test_folds: Sequence[str] = ()) -> Dict[str, str]:
    """{relative path: split} for the files whose split the split lists, or else the folds,
    decide; every other file goes to train (or is drawn for valid)."""
    if listed is not None:
        return dict(listed.split_of)
    if labels is None or not labels.folds:
        return {}
    fold_split = {**{f: "valid" for f in valid_folds}, **{f: "test" for f in test_folds}}
    return {rel: fold_split[fold] for rel, fold in labels.folds.items() if fold in fold_split}


# ---- the label set and what it covers -----------------------------------------------------------
def write_label_set(dest: str, good: Sequence[Tuple[str, int]], labels: Labels) -> LabelSet:
    """labels.csv: every label of the written clips, all splits, sorted."""
    label_set = LabelSet(os.path.join(dest, LABEL_SET_FILE),
                         sorted({name for rel, _ in good for name in labels.names[rel]}))
    label_set.write(label_set.path)
    return label_set


@dataclass
class LabelSummary:
    labels: Labels
    label_set: LabelSet
    per_split: Dict[str, set]  # split -> the labels its clips have
    by_fold: bool
    lost: List[str]  # labels whose every file was left out


def summarize_labels(labels: Labels, label_set: LabelSet, good: Sequence[Tuple[str, int]],
                     split_of: Sequence[str], splits: Sequence[str]) -> LabelSummary:
    per_split = {split: set() for split in splits}
    for (rel, _), split in zip(good, split_of):
        per_split[split].update(labels.names[rel])
    named = {name for names in labels.names.values() for name in names}
    return LabelSummary(labels, label_set, per_split, bool(labels.folds), sorted(named - set(label_set.names)))
