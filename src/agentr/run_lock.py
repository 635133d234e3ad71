"""One writer per output directory: the lock that `agentr fit`, `collect` and `evaluate` hold.

Two commands writing one directory at once would both do all of its work and mix their files
(both search every Phase I tree; `stats.json` sums their times), so each command holds the lock
of its run directory or out_dir while it runs: an exclusive `flock` on `<dir>/.agentr.lock`,
with the holder's pid written inside for the message that refuses a second writer. The kernel
drops the lock when its process ends, however it ends (`kill -9` included), so a lock file left
by a dead process never blocks.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from agentr.errors import DirectoryInUseError

#: The lock file in a locked directory.
LOCK_FILE = ".agentr.lock"


class DirectoryLock:
    """The lock of one output directory (see the module doc); a context manager."""

    def __init__(self, directory: str | os.PathLike) -> None:
        self.directory = Path(directory)
        self.path = self.directory / LOCK_FILE
        self._fd: int | None = None

    def try_acquire(self) -> str | None:
        """Take the lock: None once held, else the message that refuses this writer."""
        if self._fd is not None:
            return None
        self.directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            return (f"{self.directory} is being written by another agentr process (pid {holder}, "
                    f"which holds {self.path}): wait for it to end, or write elsewhere")
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        return None

    def acquire(self) -> None:
        """Take the lock, or raise `DirectoryInUseError` naming the holder."""
        refusal = self.try_acquire()
        if refusal is not None:
            raise DirectoryInUseError(refusal)

    def release(self) -> None:
        """Let the lock go (the file stays: removing it would race a writer opening it)."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)  # closing the only descriptor releases the flock

    def __enter__(self) -> DirectoryLock:
        self.acquire()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()
