"""fairseq audio manifests: ``{split}.tsv`` with the root folder on the first line, then
``relative/path<TAB>num_samples`` (at 16 kHz). Malformed input fails with file and line.

Lines end where Python's universal newlines end them (``\n``, ``\r``, ``\r\n``), as in
fairseq's own reader; so a name can hold any character but those and the tab.
"""
import os
from dataclasses import dataclass
from typing import List, Optional


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
