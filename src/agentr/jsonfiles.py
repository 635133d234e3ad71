"""JSON and JSONL files that a crash never leaves half-written, and a reader of JSONL records.

Whole files (results, settings, datasets) are written beside their target, synced and renamed
over it: a crash leaves the old file or the new one. Append-only logs (`RecordAppender`, used for
episodes as they end) write each record as one line and flush it; a process killed mid-write,
or a full disk, can still cut the last line short, so `read_records` skips a torn *last* line
with a warning (a malformed line anywhere else is an error).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

log = logging.getLogger(__name__)


def _write_atomic(path: str | os.PathLike, chunks: Iterable[str]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")  # processes writing one path at once
    with open(tmp, "w", encoding="utf-8") as f:
        for chunk in chunks:
            f.write(chunk)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write `text` to `path` atomically (reports, markers, any whole file)."""
    return _write_atomic(path, [text])


def write_json(path: str | os.PathLike, data: object, **dump_kwargs) -> Path:
    """Write `data` as one JSON document, atomically (`dump_kwargs` go to `json.dumps`)."""
    return _write_atomic(path, [json.dumps(data, ensure_ascii=False, **dump_kwargs)])


def write_records(path: str | os.PathLike, records: Iterable[dict]) -> Path:
    """Write a whole JSONL file (one record per line), atomically."""
    return _write_atomic(path, (json.dumps(r, ensure_ascii=False) + "\n" for r in records))


class RecordAppender:
    """Appends records to a new JSONL file one line at a time, each flushed as it is written.

    `path` None makes an appender that writes nothing.
    """

    def __init__(self, path: str | os.PathLike | None):
        self.path = Path(path) if path is not None else None
        self._file = None
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "w", encoding="utf-8")

    def append(self, record: dict) -> None:
        if self._file is not None:
            self._file.write(json.dumps(record, ensure_ascii=False) + "\n")
            self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def read_records(path: str | os.PathLike) -> Iterator[tuple[int, dict]]:
    """`(line number, record)` of every line of a JSONL file; a torn last line is skipped with a
    warning, any other line that is not JSON raises `ValueError` naming the file and line."""
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                if not line.endswith("\n"):  # only the last line can lack its newline
                    log.warning("%s:%d: skipped a torn last line (%d bytes): its writer was stopped "
                                "mid-line (a kill, or a full disk)", path, lineno, len(line.encode()))
                    return
                raise ValueError(f"{path}:{lineno}: not a JSON record ({e})") from e
            yield lineno, record
