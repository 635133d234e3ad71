"""`agentr report`: the HTML report of a run directory."""

from __future__ import annotations

from agentr.report import ReportLimits, format_summary, write_report


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
