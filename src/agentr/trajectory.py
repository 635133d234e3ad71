"""The trajectory record: what Phase I writes, users inspect and the trainer reads.

One JSON object per line of a dataset file (JSONL):

    {
      "id": "textcraft/17/revision/0",        unique within a dataset
      "env": "textcraft",                      environment name
      "task_id": "17",
      "iteration": 1,                          Agent-R iteration that produced it (0: warm start)
      "kind": "revision" | "good" | "expert" | "chat",
      "messages": [                            the conversation, header included
        {"role": "system" | "user" | "assistant", "content": "...", "train": false},
        ...
      ],
      "meta": {                                kind-specific; for revision trajectories:
        "good_reward": 1.0, "bad_reward": 0.0,
        "divergence_step": 2,                  turns shared by the good and bad paths
        "transition_step": 4,                  turns of the bad path kept (t', inclusive)
        "revision_signal": "..."
      }
    }

Only assistant messages may have `"train": true`; the trainer computes the loss on exactly those.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from agentr.jsonfiles import read_records, write_records

KINDS = ("revision", "good", "expert", "chat")


@dataclass
class Trajectory:
    """One training conversation with its provenance."""

    id: str
    env: str
    task_id: str
    iteration: int
    kind: str
    messages: list[dict]
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"trajectory {self.id}: unknown kind {self.kind!r}; expected {KINDS}")
        for i, m in enumerate(self.messages):
            if m.get("train") and m.get("role") != "assistant":
                raise ValueError(f"trajectory {self.id}: message {i} is {m.get('role')} but train=true")

    @classmethod
    def from_dict(cls, data: dict) -> Trajectory:
        return cls(**{k: data[k] for k in ("id", "env", "task_id", "iteration", "kind", "messages")},
                   meta=data.get("meta", {}))


def read_jsonl(path: str | os.PathLike) -> Iterator[Trajectory]:
    """Trajectories of a JSONL file; a malformed line raises with its line number (a torn last
    line is skipped with a warning, see `agentr.jsonfiles.read_records`)."""
    for lineno, record in read_records(path):
        try:
            yield Trajectory.from_dict(record)
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"{path}:{lineno}: not a trajectory record ({e})") from e


def write_jsonl_atomic(path: str | os.PathLike, trajectories: Iterable[Trajectory]) -> Path:
    """Write a whole JSONL file at once: a crash leaves either the old file or the new one."""
    return write_records(path, (asdict(t) for t in trajectories))
