"""`agentr report`: one self-contained HTML page of a run, and the run's terminal summary.

The page (`report.html` in the run directory) shows the learning curve per stage, each
iteration's search trees (good and bad leaves, each pair's divergence step and transition
point, the verifier's replies), the training trajectories with their bad prefix, revision turn
and good suffix apart, and the evaluation episodes, filterable to failures and to episodes with
a revision turn. It opens from disk in any browser; nothing is fetched at view time.

Size: `ReportLimits` bounds what is embedded, by default 30 trees per iteration (those that
produced revision data first), 100 training trajectories per iteration, 50 episode
conversations per stage (every episode's outcome is listed) and 1000 characters per message;
the page says where a list was cut, and builds a tree only when its task is opened. `agentr fit` and `agentr collect` write the
report at their end; `agentr report RUN_DIR` rewrites it, e.g. with other limits.
"""

from __future__ import annotations

from pathlib import Path

from agentr.jsonfiles import write_text
from agentr.report.page import render
from agentr.report.run import ReportLimits, read_run
from agentr.report.summary import format_summary

REPORT_NAME = "report.html"


def write_report(run_dir: str | Path, out: str | Path | None = None,
                 limits: ReportLimits | None = None) -> tuple[Path, dict]:
    """Write the report of `run_dir` to `out` (default `<run_dir>/report.html`) atomically;
    return its path and the run data it shows (a `read_run` result)."""
    run = read_run(run_dir, limits)
    path = Path(out) if out is not None else Path(run_dir) / REPORT_NAME
    write_text(path, render(run))
    return path, run


__all__ = ["REPORT_NAME", "ReportLimits", "format_summary", "read_run", "render",
           "write_report"]
