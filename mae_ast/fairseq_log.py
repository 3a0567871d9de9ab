"""Reads the json records of fairseq's training log (plain python: fairseq is not needed).

With ``common.log_format=json`` (our config's default) fairseq's training loop writes one
record per line through Python logging, the logger renamed to the record's kind, e.g.

    [2025-01-01 12:00:00,123][train_inner][INFO] - {"epoch": 1, "update": 0.5, "loss": "14.9", ...}

* ``train_inner``: every ``common.log_interval`` updates, keys as they are (``loss``, ``num_updates``);
* ``valid``: after each validation, every key prefixed ``valid_`` (``valid_loss``);
* ``train``: at the end of an epoch, every key prefixed ``train_``.

The same lines go to the process's stdout and to ``hydra_train.log`` in the run folder, so
the demo's report, its progress lines and the tests all read them here.
"""
import json
import re
from pathlib import Path
from typing import Iterable, List, NamedTuple, Optional, Union

KINDS = ("train_inner", "train", "valid")
_RECORD_LINE = re.compile(r"\]\[(train_inner|train|valid)\]\[INFO\] - (\{.*\})")


class LogRecord(NamedTuple):
    """One record: ``kind`` (one of KINDS) and ``values``, keyed as in ``train_inner`` records
    whatever the kind (the ``valid_`` / ``train_`` prefix fairseq adds is removed, so that
    ``values["loss"]`` is the loss of every kind). Values stay as fairseq wrote them: most
    numbers are strings such as ``"14.932"``; ``number`` converts."""

    kind: str
    values: dict

    def number(self, key: str) -> Optional[float]:
        """``values[key]`` as a float, or None when the record lacks it or it is not a number."""
        try:
            return float(self.values[key])
        except (KeyError, TypeError, ValueError):
            return None


def parse_line(line: str) -> Optional[LogRecord]:
    """The record that one log line holds, or None for any other line."""
    match = _RECORD_LINE.search(line)
    if match is None:
        return None
    try:
        values = json.loads(match.group(2))
    except json.JSONDecodeError:  # the last line of a run killed while writing it
        return None
    kind = match.group(1)
    prefix = "" if kind == "train_inner" else kind + "_"
    return LogRecord(kind, {_without_prefix(key, prefix): value for key, value in values.items()})


def _without_prefix(key: str, prefix: str) -> str:
    return key[len(prefix):] if prefix and key.startswith(prefix) else key


def read_records(text: Union[str, Iterable[str]]) -> List[LogRecord]:
    """Every record in a log, given as one string (a process's stdout) or as lines, in order."""
    lines = text.splitlines() if isinstance(text, str) else text
    return [record for record in map(parse_line, lines) if record is not None]


def read_log_file(path: Union[str, Path]) -> List[LogRecord]:
    """Every record in a log file such as ``RUN/hydra_train.log``; none when it does not exist."""
    path = Path(path)
    if not path.exists():
        return []
    return read_records(path.read_text(errors="replace"))


def last_per_update(records: Iterable[LogRecord], kind: str) -> List[LogRecord]:
    """The records of one kind, one per ``num_updates``, in update order. A resumed run appends
    to the same log and repeats the updates after its last checkpoint: the later record wins."""
    by_update = {}
    for record in records:
        update = record.number("num_updates")
        if record.kind == kind and update is not None:
            by_update[int(update)] = record
    return [by_update[update] for update in sorted(by_update)]
