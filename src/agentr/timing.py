"""Where a driver's time goes: seconds and counts per named phase, filled only when asked for.

`collect`/`search_tasks` (Phase I) and `run_episodes` (the agent loop) take an optional
`Profile`; without one they time nothing (`NO_PROFILE`'s phases are a shared null context).
The benchmarks print `Profile.table()` next to their rates.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from typing import ContextManager


class Profile:
    """Seconds per phase (`phase`) and free counters (`count`), summed over a run."""

    def __init__(self) -> None:
        self.seconds: Counter[str] = Counter()
        self.calls: Counter[str] = Counter()
        self.counts: Counter[str] = Counter()

    @contextmanager
    def _timed(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.add_time(name, time.perf_counter() - start)

    def add_time(self, name: str, seconds: float) -> None:
        """Book one call of phase `name` that took `seconds` (timed by the caller)."""
        self.seconds[name] += seconds
        self.calls[name] += 1

    def phase(self, name: str) -> ContextManager[None]:
        """Time the block under `name`."""
        return self._timed(name)

    def count(self, name: str, value: float = 1) -> None:
        """Add `value` to counter `name` (tokens, requests, idle tree-seconds...)."""
        self.counts[name] += value

    def to_dict(self) -> dict:
        return {"seconds": {k: round(v, 3) for k, v in sorted(self.seconds.items())},
                "calls": dict(sorted(self.calls.items())),
                "counts": {k: round(v, 3) for k, v in sorted(self.counts.items())}}

    def table(self, wall: float | None = None) -> str:
        """A markdown table of the phases (share of `wall` where given), then the counters."""
        rows = ["| phase | seconds | calls | share of wall |", "|---|---:|---:|---:|"]
        for name, seconds in sorted(self.seconds.items(), key=lambda kv: -kv[1]):
            share = f"{seconds / wall:.0%}" if wall else ""
            rows.append(f"| {name} | {seconds:.2f} | {self.calls[name]} | {share} |")
        rows += ["", "| counter | value |", "|---|---:|"]
        rows += [f"| {name} | {value:g} |" for name, value in sorted(self.counts.items())]
        return "\n".join(rows)


class _NoProfile(Profile):
    """A profile that records nothing, at the cost of a method call."""

    def phase(self, name: str) -> ContextManager[None]:
        return _NULL

    def add_time(self, name: str, seconds: float) -> None:
        pass

    def count(self, name: str, value: float = 1) -> None:
        pass


_NULL = nullcontext()
#: The profile of a run nobody profiles.
NO_PROFILE: Profile = _NoProfile()
