"""The run's summary for the terminal: one row per stage, then where to look next."""

from __future__ import annotations

from pathlib import Path


def percent(value) -> str:
    return "-" if value is None else f"{100 * value:.0f}%"


def format_seconds(seconds) -> str:
    """`m:ss` (or `h:mm:ss`); "-" for None."""
    if seconds is None:
        return "-"
    seconds = round(seconds)
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


def success_text(evaluation: dict) -> str:
    """`40% (8/20)`, with `[lo-hi%]` when the evaluation gives an interval."""
    rate = evaluation["metrics"].get("success_rate")
    text = percent(rate)
    if evaluation.get("num_episodes"):
        text += f" ({evaluation['num_successes']}/{evaluation['num_episodes']})"
    interval = evaluation["intervals"].get("success_rate")
    if interval:
        text += f" [{100 * interval[0]:.0f}-{100 * interval[1]:.0f}%]"
    return text


def stage_times(stage: dict) -> dict:
    """Wall time per phase of a stage, in seconds (None where the run recorded none)."""
    return {
        "phase1": stage.get("phase1", {}).get("stats", {}).get("wall_seconds"),
        "train": stage.get("training", {}).get("seconds"),
        "eval": stage.get("eval", {}).get("seconds"),
    }


def kept_text(stage: dict) -> str:
    """Phase I's kept trajectories: `revision + good`."""
    stats = stage.get("phase1", {}).get("stats", {})
    if "revision_trajectories" not in stats:
        return "-"
    return f"{stats['revision_trajectories']} + {stats.get('good_trajectories', 0)}"


def behaviour(evaluation: dict) -> dict:
    """The stage's revision rate, recovery rate and repeat fraction: of its sampled episodes
    where it played any (the larger sample), else of the greedy ones."""
    metrics = (evaluation.get("sampled") or evaluation)["metrics"]
    return {"revision": percent(metrics.get("revision_rate")),
            "recovery": percent(metrics.get("recovery_rate")),
            "repeats": "-" if metrics.get("repeat_fraction") is None else f"{metrics['repeat_fraction']:.2f}"}


def format_summary(run: dict, report: str | Path | None = None) -> str:
    """A text table of `run` (a `read_run` result): greedy and sampled success with their
    intervals where the evaluation has them; revision rate, recovery rate (the share of revised
    episodes that succeeded) and repeat fraction (of the sampled episodes where there are any);
    Phase I's kept trajectories and wall time per phase; then the report's and the run
    directory's paths."""
    head = ("stage", "success", "sampled success", "revision rate", "recovery", "repeats",
            "Phase I kept (rev + good)", "Phase I", "training", "eval")
    rows = [head]
    for stage in run["stages"]:
        evaluation = stage.get("eval")
        times = stage_times(stage)
        if evaluation:
            sampled = evaluation.get("sampled")
            shown = behaviour(evaluation)
            cells = (success_text(evaluation), success_text(sampled) if sampled else "-",
                     shown["revision"], shown["recovery"], shown["repeats"])
        else:
            cells = ("-",) * 5
        rows.append((stage["name"], *cells, kept_text(stage), format_seconds(times["phase1"]),
                     format_seconds(times["train"]), format_seconds(times["eval"])))
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines.append("")
    if report is not None:
        lines.append(f"report:        {report}")
    lines.append(f"run directory: {run['run_dir']}")
    return "\n".join(lines)
