"""The processes of a multi-GPU run, and how they wait for one another.

Phase I and evaluation are hours of unequal work per rank. A collective barrier there would time
out (NCCL's default is 30 minutes), and a rank that raised would leave the others blocked in it
until a watchdog killed the job. So ranks wait on files in the shared run directory instead:

- `shared_token(ranks, directory)`: rank 0 picks a fresh token and every rank checks that it
  sees the file rank 0 wrote there (a run directory that is not shared across nodes fails here,
  with a message saying so, instead of ranks silently reading different files);
- `main_rank_does(work, ranks, directory)`: rank 0 works (e.g. writes the expert data) while
  the others wait for its marker;
- `Rendezvous(directory, token, ranks)`: each rank runs its share of the work and leaves a
  marker, `<token>.rank<k>.done` (with a JSON result) or `<token>.rank<k>.failed` (with the
  error); waiting ranks poll the markers and raise `RankFailed` with the failing rank's error
  as soon as one appears. Markers carry the token, so a crashed attempt's markers never satisfy
  a resumed one. Work shared out item by item (Phase I's tasks, evaluation's episodes) is taken
  with `Rendezvous.claim`: the rank that creates an item's claim file first does it, so a rank
  with room takes the next item and all ranks finish at about the same time.

Collectives are used only where every rank arrives at once (choosing and checking a token, and
`Ranks.decide`, which makes rank 0's view of a file the decision of all ranks).
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from agentr.jsonfiles import write_text

T = TypeVar("T")

#: Seconds between two looks at the markers of a rendezvous.
POLL_SECONDS = 1.0


class RankFailed(RuntimeError):
    """Another rank of the run raised; the message carries its error."""


@dataclass(frozen=True)
class Ranks:
    """This process's place in the run: `rank` of `world` (torch.distributed's, when it is set up)."""

    rank: int = 0
    world: int = 1

    @classmethod
    def current(cls) -> Ranks:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            return cls(dist.get_rank(), dist.get_world_size())
        return cls()

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def broadcast(self, value: Any) -> Any:
        """Rank 0's `value`, on every rank."""
        if self.world == 1:
            return value
        import torch.distributed as dist

        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, value: Any) -> list:
        """Every rank's `value`, in rank order, on every rank."""
        if self.world == 1:
            return [value]
        import torch.distributed as dist

        out: list = [None] * self.world
        dist.all_gather_object(out, value)
        return out

    def decide(self, decision: Callable[[], T]) -> T:
        """`decision()` made on rank 0 alone (e.g. whether a file exists), on every rank.

        Ranks that looked at the filesystem for themselves could disagree (a file written
        between two looks) and then take different paths into the next collective.
        """
        return self.broadcast(decision() if self.is_main else None)


def shared_token(ranks: Ranks, directory: str | os.PathLike) -> str:
    """A fresh token from rank 0, once every rank saw rank 0's file in `directory`.

    Raises (on every rank) when some rank does not see it: the directory is not on a
    filesystem all nodes share.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    token = ranks.broadcast(uuid.uuid4().hex if ranks.is_main else None)
    if ranks.world == 1:
        return token
    probe = directory / f".shared-{token}"
    if ranks.is_main:
        probe.write_text(f"{os.uname().nodename}\n", encoding="utf-8")
    ranks.gather(None)  # everyone waits until the probe is written
    seen = ranks.gather((os.uname().nodename, probe.exists()))
    ranks.gather(None)  # everyone has looked before it goes
    if ranks.is_main:
        probe.unlink()
    blind = [f"rank {k} on {host}" for k, (host, exists) in enumerate(seen) if not exists]
    if blind:
        raise RuntimeError(
            f"{directory} is not shared by all ranks: {', '.join(blind)} cannot see the file rank 0 "
            f"wrote there. Put the run directory (trainer.default_root_dir) on a filesystem every "
            "node mounts (NFS, Lustre, ...).")
    return token


class Rendezvous:
    """Done/failed markers of one step of one attempt, in `directory` (see the module docstring)."""

    def __init__(self, directory: str | os.PathLike, token: str, ranks: Ranks) -> None:
        self.directory = Path(directory)
        self.token = token
        self.ranks = ranks

    def _marker(self, rank: int, state: str) -> Path:
        return self.directory / f"{self.token}.rank{rank}.{state}"

    def run(self, work: Callable[[], T], result: Callable[[T], Any] = lambda _: None) -> T:
        """Run this rank's `work`; mark it done (with `result(value)` as JSON) or failed, re-raising."""
        try:
            value = work()
        except BaseException as error:
            self._write(self._marker(self.ranks.rank, "failed"), f"{type(error).__name__}: {error}")
            raise
        self._write(self._marker(self.ranks.rank, "done"), json.dumps(result(value)))
        return value

    def check(self) -> None:
        """Raise `RankFailed` if another rank has failed this step."""
        for rank in range(self.ranks.world):
            failed = self._marker(rank, "failed")
            if rank != self.ranks.rank and failed.exists():
                raise RankFailed(f"rank {rank} failed: {failed.read_text(encoding='utf-8')}")

    def claim(self, directory: str | os.PathLike, name: str) -> bool:
        """Take work item `name` for this rank: True for the one rank that creates
        `directory/name` (exclusively, with its rank inside), False for the others. Raises
        `RankFailed` first if another rank failed this step, so that a rank stops at its next item."""
        self.check()
        try:
            fd = os.open(Path(directory) / name, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return False
        os.write(fd, f"{self.ranks.rank}\n".encode())
        os.close(fd)
        return True

    def wait(self, ranks: Iterable[int] | None = None, timeout: float | None = None) -> list:
        """The results of `ranks` (all: None) once each is done; `RankFailed` as soon as one failed.

        No timeout by default: the work is allowed to take hours. A rank killed outright (no
        marker) is the launcher's to notice: torchrun and SLURM stop the job when a process dies.
        """
        wanted = list(range(self.ranks.world) if ranks is None else ranks)
        start = time.monotonic()
        while True:
            self.check()
            done = [self._marker(k, "done") for k in wanted]
            if all(p.exists() for p in done):
                return [json.loads(p.read_text(encoding="utf-8")) for p in done]
            if timeout is not None and time.monotonic() - start > timeout:
                missing = [k for k, p in zip(wanted, done) if not p.exists()]
                raise TimeoutError(f"ranks {missing} did not finish within {timeout} s ({self.directory})")
            time.sleep(POLL_SECONDS)

    @staticmethod
    def _write(path: Path, text: str) -> None:
        write_text(path, text)  # a marker appears whole


def main_rank_does(work: Callable[[], Any], ranks: Ranks, directory: str | os.PathLike) -> None:
    """Run `work` on rank 0 while the other ranks wait for its marker in `directory`.

    Every rank calls this at the same point; if rank 0 raises, every rank raises (rank 0 its
    own error, the others `RankFailed` with it).
    """
    if ranks.world == 1:
        work()
        return
    directory = Path(directory)
    # a gather, not a broadcast: rank 0 goes on only once every rank is here, past earlier waits
    token = ranks.gather(uuid.uuid4().hex if ranks.is_main else None)[0]
    if ranks.is_main:  # so the earlier waits' markers can go
        for old in directory.glob("*.rank*"):
            if not old.name.startswith(token):
                old.unlink(missing_ok=True)
    rendezvous = Rendezvous(directory, token, ranks)
    if ranks.is_main:
        rendezvous.run(work)
    rendezvous.wait([0])
