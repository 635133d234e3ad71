"""Run the quickstart (or any `agentr fit` config) and record it: one dated section of
`bench/results/quickstart.md` per run, with everything the README cites.

The record holds the commit (and whether the tree had uncommitted changes), the date, the exact
command, the load average sampled every 10 s while it ran, the wall time, the peak resident
memory of the fit (its processes included), each stage's success rate with its interval and
sample size (greedy, and sampled where the config plays sampled episodes), revision rate,
recovery rate and repeat fraction, each iteration's Phase I counts and the training time.

    python bench/quickstart.py                                   # configs/quickstart.yaml, fresh run dir
    python bench/quickstart.py --config configs/quickstart.yaml --config my_overlay.yaml
    python bench/quickstart.py --record runs/quickstart          # record a finished run, not timed

A run goes to `runs/quickstart-record/<UTC time>` unless `--run_dir` names one.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import resource
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def git_commit() -> str:
    """HEAD's short hash, with "+changes" when the tree differs from it."""
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                          text=True).stdout.strip() or "unknown"
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                           capture_output=True, text=True).stdout.strip()
    return head + ("+changes" if dirty else "")


def timed_fit(command: list[str]) -> dict:
    """Run `command`; its wall time, exit status, peak RSS and the load averages seen."""
    loads: list[float] = []
    done = threading.Event()

    def sample() -> None:
        while not done.wait(10):
            loads.append(os.getloadavg()[0])

    sampler = threading.Thread(target=sample, daemon=True)
    load_before = os.getloadavg()
    start = time.monotonic()
    sampler.start()
    status = subprocess.run(command, cwd=ROOT).returncode
    done.set()
    wall = time.monotonic() - start
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    # The fit's share of the machine: below 1, other processes had part of the cores (a load
    # average counts waiting processes too, so it cannot say how much the fit itself got).
    cpu_share = (usage.ru_utime + usage.ru_stime) / wall / (os.cpu_count() or 1)
    return {"wall_seconds": wall, "exit": status, "peak_rss_gb": usage.ru_maxrss / 1e6,  # KB -> GB
            "cpu_share": cpu_share, "load_before": load_before, "load_after": os.getloadavg(),
            "loads": loads}


def _rate(metrics: dict, n: int) -> str:
    low, high = metrics.get("success_rate_ci") or (float("nan"), float("nan"))
    return f"{metrics['success_rate']:.0%} [{low:.0%}, {high:.0%}] (n={n})"


def _or_dash(value, fmt: str = "{:.0%}") -> str:
    return "-" if value is None else fmt.format(value)


def stage_rows(run_dir: Path) -> list[str]:
    """The stage table: one row per `<stage>/eval.json`, in the run's order."""
    stages = sorted((p.parent for p in run_dir.glob("*/eval.json")),
                    key=lambda d: (d.name != "base", d.name))
    rows = ["| stage | greedy success [95% CI] | sampled success [95% CI] | revision rate | recovery "
            "| repeat fraction | eval time |", "|---|---|---|---|---|---|---|"]
    for stage in stages:
        result = json.loads((stage / "eval.json").read_text())
        metrics, sampled = result["metrics"], result.get("sampled")
        sampled_cell = _rate(sampled["metrics"], sampled["num_episodes"]) if sampled else "-"
        shown = sampled["metrics"] if sampled else metrics  # revision and loops: the larger sample
        rows.append(f"| {stage.name} | {_rate(metrics, result['num_episodes'])} | {sampled_cell} "
                    f"| {shown['revision_rate']:.0%} | {_or_dash(shown['recovery_rate'])} "
                    f"| {shown['repeat_fraction']:.2f} | {result['timing']['seconds']:.0f} s |")
    return rows


def phase1_rows(run_dir: Path) -> list[str]:
    """One row per iteration's `phase1/stats.json`, and its training time."""
    rows = ["| iteration | trees with a good path | good / bad leaf paths | revision + good trajectories "
            "| verdicts (Good/Bad/Uncertain) | Phase I wall | training |", "|---|---|---|---|---|---|---|"]
    for stats_path in sorted(run_dir.glob("iteration_*/phase1/stats.json")):
        s = json.loads(stats_path.read_text())
        verdicts = s.get("verdicts", {})
        training = stats_path.parents[1] / "training.json"
        train_s = json.loads(training.read_text())["seconds"] if training.exists() else None
        rows.append(f"| {stats_path.parents[1].name} | {s['trees_with_good_path']}/{s['trees_searched']} "
                    f"| {s['good_paths']} / {s['bad_paths']} "
                    f"| {s['revision_trajectories']} + {s['good_trajectories']} "
                    f"| {verdicts.get('Good', 0)}/{verdicts.get('Bad', 0)}/{verdicts.get('Uncertain', 0)} "
                    f"| {s['wall_seconds']:.0f} s | {_or_dash(train_s, '{:.0f} s')} |")
    warm = run_dir / "iteration_0" / "training.json"
    if warm.exists():
        rows.append(f"\nWarm start training: {json.loads(warm.read_text())['seconds']:.0f} s.")
    return rows


def record(run_dir: Path, command: str, timing: dict | None, note: str) -> str:
    """The markdown section for one run."""
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [f"## {now}, commit {git_commit()}", "", f"`{command}`", ""]
    if note:
        lines += [note, ""]
    if timing:
        loads = timing["loads"] or [timing["load_before"][0]]
        minutes, seconds = divmod(round(timing["wall_seconds"]), 60)
        lines += [f"Wall time **{minutes}:{seconds:02d}**, exit {timing['exit']}, peak RSS "
                  f"{timing['peak_rss_gb']:.1f} GB; {os.cpu_count()} CPUs; load average before "
                  f"{timing['load_before'][0]:.1f}, during (1-minute, every 10 s) median "
                  f"{statistics.median(loads):.1f} max {max(loads):.1f}, after "
                  f"{timing['load_after'][0]:.1f}; the fit's CPU time was "
                  f"{timing['cpu_share']:.0%} of the machine's.", ""]
    else:
        lines += ["Not timed here (recorded from its run directory).", ""]
    lines += stage_rows(run_dir) + [""] + phase1_rows(run_dir) + [""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", action="append", help="config files (default: the quickstart)")
    parser.add_argument("--run_dir", default=None)
    parser.add_argument("--record", default=None, help="record this finished run directory instead")
    parser.add_argument("--note", default="", help="a sentence saying what this run tried")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "quickstart.md"))
    args, overrides = parser.parse_known_args(argv)
    if args.record:
        run_dir, command, timing = Path(args.record), f"(recorded from {args.record})", None
    else:
        configs = args.config or ["configs/quickstart.yaml"]
        stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%S")
        run_dir = Path(args.run_dir or f"runs/quickstart-record/{stamp}")
        command_list = ["agentr", "fit", *[a for c in configs for a in ("--config", c)],
                        "--trainer.default_root_dir", str(run_dir),
                        "--trainer.logger.init_args.save_dir", str(run_dir), *overrides]
        command = " ".join(command_list)
        timing = timed_fit(command_list)
        run_dir = ROOT / run_dir if not run_dir.is_absolute() else run_dir
    section = record(run_dir, command, timing, args.note)
    print(section)
    out = Path(args.out)
    if not out.exists():
        out.write_text("# Quickstart runs\n\nEach section was written by `bench/quickstart.py` "
                       "(newest last). Timings are comparable only on an idle machine: see the "
                       "load average beside each.\n\n")
    with out.open("a") as f:
        f.write(section + "\n")
    return 0 if timing is None or timing["exit"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
