"""fairseq audio manifests: ``{split}.tsv`` with the root folder on the first line, then
``relative/path<TAB>num_samples`` (at 16 kHz). Malformed input fails with file and line.

Lines end where Python's universal newlines end them (``\n``, ``\r``, ``\r\n``), as in
fairseq's own reader; so a name can hold any character but those and the tab.

Making manifests (tools/make_manifest.py): ``find_files`` lists the audio below a root,
``measure_all`` decodes each file once (broken and too-short ones are left out with the
reason), ``assign_splits`` draws the split and ``write_splits`` writes the .tsv (and .lbl)
files.
"""
import os
from collections import Counter
from dataclasses import dataclass
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Set, Tuple

from mae_ast.labels import LABEL_SET_FILE


class ManifestError(ValueError):
    pass


# The characters that would split one entry into several fields or lines.
CHARACTERS_NAMES_CANNOT_HOLD = {"\t": "a tab", "\n": "a newline", "\r": "a carriage return"}


def unwritable_name_reason(name: str) -> Optional[str]:
    """Why ``name`` (a path relative to the root) cannot be written as a manifest entry that
    ``Manifest.load`` reads back unchanged, or None when it can."""
    held = [what for char, what in CHARACTERS_NAMES_CANNOT_HOLD.items() if char in name]
    if held:
        return f"path holds {' and '.join(held)} (a manifest line cannot)"
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:  # os.walk hands undecodable bytes over as lone surrogates
        return "path is not valid UTF-8 (a manifest is UTF-8 text)"
    return None


def unwritable_root_reason(root: str) -> Optional[str]:
    """Like ``unwritable_name_reason`` for the root folder, whose line is also stripped."""
    if root != root.strip():
        return "path starts or ends with white space (the manifest's first line is stripped)"
    return unwritable_name_reason(root)


@dataclass
class Manifest:
    path: str
    root: str
    names: List[str]
    sizes: List[int]
    line_numbers: List[int]
    skipped_short: int = 0
    skipped_long: int = 0

    def audio_path(self, i: int) -> str:
        return os.path.join(self.root, self.names[i])

    @classmethod
    def load(cls, path: str, min_size: Optional[int] = None, max_size: Optional[int] = None) -> "Manifest":
        if not os.path.isfile(path):
            raise ManifestError(f"{path}: manifest not found (make one with tools/make_manifest.py)")
        with open(path, encoding="utf-8") as f:  # universal newlines: \r and \r\n read as \n
            lines = f.read().split("\n")
        if not lines or not lines[0].strip():
            raise ManifestError(f"{path}:1: the first line must be the audio root folder; the file is empty")
        root = lines[0].strip()
        if "\t" in root:
            raise ManifestError(
                f"{path}:1: the first line must be the audio root folder, found an entry {root!r}")
        m = cls(path, root, [], [], [])
        for lineno, line in enumerate(lines[1:], start=2):
            if not line.strip():
                continue
            fields = line.split("\t")
            if len(fields) != 2:
                raise ManifestError(
                    f"{path}:{lineno}: expected 'relative/path<TAB>num_samples', got {line!r}")
            name, size_text = fields
            try:
                size = int(size_text)
            except ValueError:
                raise ManifestError(
                    f"{path}:{lineno}: length {size_text!r} is not a whole number of samples") from None
            if size < 0:
                raise ManifestError(f"{path}:{lineno}: negative length {size}")
            if min_size is not None and size < min_size:
                m.skipped_short += 1
            elif max_size is not None and size > max_size:
                m.skipped_long += 1
            else:
                m.names.append(name)
                m.sizes.append(size)
                m.line_numbers.append(lineno)
        return m

    def __len__(self):
        return len(self.names)


# ---- making manifests (tools/make_manifest.py) -------------------------------------------------
def extension(name: str) -> str:
    return os.path.splitext(name)[1].lower()


def audio_extensions(text: str) -> Set[str]:
    """The --ext list ('flac,WAV,.mp3') as lower-case extensions with their dot."""
    return {"." + e.strip().lower().lstrip(".") for e in text.split(",") if e.strip()}


def printable(path: str) -> str:
    """The path as it is, or its repr when it holds characters that would garble the listing."""
    return path if path.isprintable() else repr(path)


def checked_root(given: str) -> str:
    """The audio folder as the manifest's first line: its real path, which must be a folder and
    survive the reader's stripping."""
    root = os.path.realpath(given)
    if not os.path.isdir(root):
        raise ManifestError(f"{given} is not a folder")
    why = unwritable_root_reason(root)
    if why:
        raise ManifestError(f"the folder {root!r} cannot be a manifest's first line: {why}; "
                            "move or link the audio to a plain path")
    return root


def check_excluded_folders_exist(root: str, names: Sequence[str]) -> None:
    """A name that is no folder of ``root`` is a typo, and would leave the folder in the set."""
    absent = [name for name in names if not os.path.isdir(os.path.join(root, name))]
    if absent:
        present = sorted(e.name for e in os.scandir(root) if e.is_dir())
        raise ManifestError(f"--exclude-folders: no folder named {absent[0]!r} in {root} "
                            f"(its folders: {', '.join(repr(n) for n in present) or 'none'})")


def find_files(root: str, exts: Set[str], exclude: Sequence[str] = ()):
    """(sorted relative paths with one of ``exts``, Counter of the other files' extensions,
    {name: files with one of ``exts``} for each top-level folder in ``exclude``, not searched
    otherwise: its other files are not counted at all)."""
    found, others = [], Counter()
    excluded = {name: 0 for name in exclude}
    for folder, dirs, files in os.walk(root, followlinks=True):
        if folder == root:
            dirs[:] = [d for d in dirs if d not in excluded]
        for name in files:
            if extension(name) in exts:
                found.append(os.path.relpath(os.path.join(folder, name), root))
            else:
                others[extension(name) or "(none)"] += 1
    for name in excluded:
        excluded[name] = sum(extension(f) in exts for _, _, files in os.walk(os.path.join(root, name), followlinks=True)
                             for f in files)
    return sorted(found), others, excluded


def measure(job: Tuple[str, str, int]) -> Tuple[str, Optional[int], Optional[str]]:
    """(relative path, samples at 16 kHz or None, reason when left out) of ``job``:
    (root, relative path, fewest samples kept)."""
    from mae_ast import audio
    from mae_ast.core.features import SAMPLE_RATE

    root, rel, min_samples = job
    try:
        samples = audio.num_samples(os.path.join(root, rel), SAMPLE_RATE)
    except audio.AudioReadError as e:
        return rel, None, e.reason
    except Exception as e:  # a decoder crash must not end a scan of millions of files
        return rel, None, f"{type(e).__name__}: {e}"
    if samples < min_samples:
        return rel, None, f"too short ({samples / SAMPLE_RATE:.3f} s)"
    return rel, samples, None


def measure_all(root: str, files: Sequence[str], min_samples: int, jobs: int,
                progress: Optional[Callable[[int, int], None]] = None):
    """``measure`` every file, in parallel when ``jobs`` > 1, in the order of ``files``;
    ``progress(done, total)`` every 50 files and at the end."""
    from concurrent.futures import ProcessPoolExecutor

    work = [(root, rel, min_samples) for rel in files]
    results = []
    pool = ProcessPoolExecutor(jobs) if jobs > 1 else None
    try:
        measured = pool.map(measure, work, chunksize=16) if pool else map(measure, work)
        for result in measured:
            results.append(result)
            if progress and len(results) % 50 == 0:
                progress(len(results), len(work))
    finally:
        if pool:
            pool.shutdown()
    if progress:
        progress(len(results), len(work))
    return results


def assign_splits(good: Sequence[Tuple[str, int]], fixed: Dict[str, str], valid_percent: float, seed: int,
                  draw_valid: bool = True) -> List[str]:
    """The split of each entry of ``good``: ``fixed[rel]`` where given (split lists or folds),
    else train; with ``draw_valid`` each train entry goes to valid with probability
    ``valid_percent``, always the same for the same input."""
    import numpy as np

    split_of = [fixed.get(rel, "train") for rel, _ in good]
    if draw_valid:
        at_random = [i for i, split in enumerate(split_of) if split == "train"]
        rng = np.random.default_rng(seed)
        for i, is_valid in zip(at_random, rng.random(len(at_random)) < valid_percent):
            if is_valid:
                split_of[i] = "valid"
    return split_of


def write_splits(dest: str, root: str, good: Sequence[Tuple[str, int]], split_of: Sequence[str],
                 splits: Iterable[str], labels: Optional[Dict[str, List[str]]] = None) -> Dict[str, Tuple[int, float]]:
    """Write {split}.tsv (and with ``labels``, {relative path: label names}, {split}.lbl);
    returns {split: (files, hours)}."""
    from mae_ast.core.features import SAMPLE_RATE

    counts = {}
    for split in splits:
        rows = [g for g, s in zip(good, split_of) if s == split]
        with open(os.path.join(dest, f"{split}.tsv"), "w", encoding="utf-8") as f:
            f.write(root + "\n")
            f.writelines(f"{rel}\t{n}\n" for rel, n in rows)
        if labels is not None:
            with open(os.path.join(dest, f"{split}.lbl"), "w", encoding="utf-8") as f:
                f.writelines(",".join(labels[rel]) + "\n" for rel, _ in rows)
        counts[split] = (len(rows), sum(n for _, n in rows) / SAMPLE_RATE / 3600)
    return counts


def stale_outputs(dest: str, written: Set[str]) -> List[str]:
    """Files make_manifest writes, left in ``dest`` by an earlier run: a train.lbl that does not
    belong to the new train.tsv would pair labels with the wrong clips."""
    ours = [f"{split}.{kind}" for split in ("train", "valid", "test") for kind in ("tsv", "lbl")]
    return [os.path.join(dest, name) for name in ours + [LABEL_SET_FILE]
            if name not in written and os.path.exists(os.path.join(dest, name))]
