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

import os
from pathlib import Path

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
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(render(run), encoding="utf-8")
    os.replace(tmp, path)
    return path, run


def report_command(run_dir: str, out: str | None = None, limits: ReportLimits = ReportLimits()) -> None:
    """Write the HTML report of a run directory (of `agentr fit`, `collect` or `evaluate`).

    The report is one self-contained HTML file: learning curve, search trees, training
    trajectories and evaluation episodes; it opens from disk in any browser. Prints the run's
    summary table.

    Args:
        run_dir: the run directory (trainer.default_root_dir, or a collect/evaluate out_dir).
        out: the HTML file to write (default: RUN_DIR/report.html).
        limits: how much of the run the page embeds.
    """
    path, run = write_report(run_dir, out, limits)
    print(format_summary(run, path))


__all__ = ["REPORT_NAME", "ReportLimits", "format_summary", "read_run", "render", "report_command",
           "write_report"]
