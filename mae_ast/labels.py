"""Labels beside a manifest: ``{split}.lbl`` and one ``labels.csv``.

``{split}.lbl`` has one line per entry line of ``{split}.tsv`` (the .tsv's first line is the
audio root, so .lbl line k belongs to .tsv line k+1). A line holds the clip's label names,
separated by commas (the convention of fairseq's audio classification and of EAT), e.g.
``dog`` or ``/m/09x0r,/m/05zppz``. White space around a name is stripped.

``labels.csv`` is the label set: a header ``index,name``, then one row per label with
indices 0..n-1 in order. Its rows are written with the csv module, so a name may hold a
quote; it cannot hold a comma (the .lbl separator) or a line break, and cannot start or end
with white space (it would be stripped on reading).

Every error names the file and the line. Plain Python: no fairseq, no torch.
"""
import csv
import io
import os
from dataclasses import dataclass, field
from typing import Dict, List, Optional

LABEL_SET_HEADER = ["index", "name"]
LABEL_SET_FILE = "labels.csv"  # beside the manifests, one for all splits


class LabelError(ValueError):
    pass


class InputProblems(ValueError):
    """Every bad row or line of an input, each named FILE:LINE: collected in one pass, so that
    a user fixes them all before the next run instead of one per run. ``str()`` sums them up;
    ``shown()`` is what a tool prints above that."""

    MAX_SHOWN = 20  # enough to see the pattern, not a screen per million rows

    def __init__(self, problems: List[str], what: str, consequence: str):
        self.problems = list(problems)
        super().__init__(f"{len(self.problems)} {what} (each is named above); {consequence}")

    def shown(self) -> List[str]:
        """The first MAX_SHOWN problems, then how many more there are."""
        hidden = len(self.problems) - self.MAX_SHOWN
        return self.problems[:self.MAX_SHOWN] + ([f"... and {hidden} more"] if hidden > 0 else [])


def label_name_problem(name: str) -> Optional[str]:
    """Why ``name`` cannot be a label that a .lbl line and labels.csv read back unchanged,
    or None when it can."""
    if not name:
        return "the label is empty"
    if "," in name:
        return f"label {name!r} holds a comma (a .lbl line separates labels with commas)"
    if "\n" in name or "\r" in name:
        return f"label {name!r} holds a line break (a .lbl line holds one clip's labels)"
    if name != name.strip():
        return f"label {name!r} starts or ends with white space (it is stripped on reading)"
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:  # a folder name os.walk handed over with lone surrogates
        return f"label {name!r} is not valid UTF-8 (label files are UTF-8 text)"
    return None


def parse_label_list(text: str) -> List[str]:
    """The label names of one .lbl line or one CSV label cell: comma-separated, each name
    stripped. Raises LabelError (without a location: the caller adds file and line) for an
    empty list, an empty name (``dog,,cat``, ``dog,``) or a name given twice."""
    if not text.strip():
        raise LabelError("no label (the line or cell is empty)")
    names = [part.strip() for part in text.split(",")]
    if "" in names:
        raise LabelError(f"empty label name in {text!r} (two commas in a row, or one at an end)")
    for name in names:
        problem = label_name_problem(name)
        if problem:
            raise LabelError(problem)
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise LabelError(f"label {repeated[0]!r} given twice in {text!r}")
    return names


MAKE_HINT = "make it with tools/make_manifest.py --labels ..."


def read_utf8(path: str, what: str, hint: str = MAKE_HINT) -> str:
    """The text of ``path`` with universal newlines (as Manifest.load reads), or a LabelError
    naming the file, and for bytes that are not UTF-8 the line they are on."""
    if not os.path.isfile(path):
        raise LabelError(f"{path}: {what} not found" + (f" ({hint})" if hint else ""))
    with open(path, "rb") as f:
        data = f.read()
    try:
        text = data.decode("utf-8-sig")  # a byte-order mark (spreadsheet export) is not a label
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        raise LabelError(f"{path}:{line}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    return text.replace("\r\n", "\n").replace("\r", "\n")


@dataclass
class LabelSet:
    path: str = field(compare=False)  # where it was read from or will be written; not its identity
    names: List[str]  # index i -> name
    _index: Dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        self.names = list(self.names)
        self._index = {}
        for i, name in enumerate(self.names):
            problem = label_name_problem(name)
            if problem:
                raise LabelError(f"{self.path}: label {i}: {problem}")
            if name in self._index:
                raise LabelError(f"{self.path}: label {name!r} is both index {self._index[name]} and {i}")
            self._index[name] = i

    @classmethod
    def load(cls, path: str) -> "LabelSet":
        """Read labels.csv; every problem is a LabelError naming the file and line."""
        rows = read_csv_rows(path, read_utf8(path, "label set"))
        if not rows:
            raise LabelError(f"{path}:1: empty file; expected the header 'index,name' and one row per label")
        line, header = rows[0]
        if [cell.strip() for cell in header] != LABEL_SET_HEADER:
            raise LabelError(f"{path}:{line}: expected the header 'index,name', got {','.join(header)!r}")
        names, first_line = [], {}
        for line, row in rows[1:]:
            if len(row) != 2:
                raise LabelError(f"{path}:{line}: expected 'index,name', got {len(row)} fields {row!r}")
            index_text, name = row[0].strip(), row[1].strip()
            if index_text != str(len(names)):
                raise LabelError(f"{path}:{line}: index {index_text!r}, expected {len(names)} "
                                 "(indices run 0, 1, 2, ... in order)")
            problem = label_name_problem(name)
            if problem:
                raise LabelError(f"{path}:{line}: {problem}")
            if name in first_line:
                raise LabelError(f"{path}:{line}: label {name!r} is already on line {first_line[name]}")
            first_line[name] = line
            names.append(name)
        if not names:
            raise LabelError(f"{path}:{line + 1}: no labels after the header")
        return cls(path, names)

    def index(self, name: str) -> int:
        try:
            return self._index[name]
        except KeyError:
            raise LabelError(f"unknown label {name!r}: it is not in {self.path} "
                             f"({len(self.names)} labels)") from None

    def write(self, path: str) -> None:
        """Write labels.csv (what LabelSet.load reads back equal)."""
        with open(path, "w", encoding="utf-8", newline="") as f:
            writer = csv.writer(f, lineterminator="\n")
            writer.writerow(LABEL_SET_HEADER)
            writer.writerows([i, name] for i, name in enumerate(self.names))

    def __len__(self):
        return len(self.names)


def read_csv_rows(path: str, text: str):
    """[(line the row starts on, cells)] of ``text``, blank lines skipped; a row the csv module
    cannot parse (an unbalanced quote) is a LabelError naming the line it starts on."""
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    rows, last_line = [], 0
    try:
        for row in reader:
            if row:
                rows.append((last_line + 1, row))
            last_line = reader.line_num
    except csv.Error as e:
        raise LabelError(f"{path}:{last_line + 1}: the row does not parse as CSV ({e}, on line "
                         f"{reader.line_num}): an unbalanced quote?") from None
    return rows


def read_label_csv(path: str, expected: str):
    """[(line, cells)] of a label CSV file, the header first; a LabelError names the file (and
    line) when it is missing, not UTF-8, does not parse or is empty (``expected``: what its
    header should be, for the message)."""
    rows = read_csv_rows(path, read_utf8(path, "label CSV", hint=""))
    if not rows:
        raise LabelError(f"{path}:1: empty file; expected {expected}")
    return rows


def _entry_line_numbers(manifest_path: str) -> List[int]:
    """Line numbers of the .tsv's lines after the root line, up to its last non-blank one (the
    lines a .lbl pairs with; Manifest.load also ignores blank lines at the end)."""
    with open(manifest_path, encoding="utf-8") as f:
        lines = f.read().split("\n")
    while len(lines) > 1 and not lines[-1].strip():
        lines.pop()
    return list(range(2, len(lines) + 1))


def load_labels(lbl_path: str, manifest, label_set: LabelSet) -> List[List[int]]:
    """The label indices of each clip ``manifest`` (a mae_ast.manifest.Manifest) kept, in its
    order. Manifest.load may skip entries too short or too long, so the .lbl lines are picked
    by ``manifest.line_numbers``: .lbl line k belongs to .tsv line k+1.

    Errors (LabelError) name the file and line: a line count that differs from the .tsv's
    (both counts, both files), an empty line, an unknown label (with labels.csv's path)."""
    lines = read_utf8(lbl_path, "label file").split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the final line's newline
    tsv_lines = _entry_line_numbers(manifest.path)
    if len(lines) != len(tsv_lines):
        raise LabelError(
            f"{lbl_path}:{min(len(lines), len(tsv_lines)) + 1}: {len(lines)} label lines, but "
            f"{manifest.path} has {len(tsv_lines)} entry lines (the .lbl needs one line per .tsv "
            "line after the root); make both again with tools/make_manifest.py --labels ...")
    labels = []
    for tsv_line in manifest.line_numbers:
        lbl_line = tsv_line - 1
        try:
            labels.append([label_set.index(name) for name in parse_label_list(lines[lbl_line - 1])])
        except LabelError as e:
            raise LabelError(f"{lbl_path}:{lbl_line}: {e} (labels of {manifest.path} line {tsv_line})") from None
    return labels
