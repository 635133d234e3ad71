"""What every benchmark report says about the machine, and where it goes."""

from __future__ import annotations

import datetime
import json
import os
import platform
import subprocess
import sys


def load_average() -> str:
    """The 1, 5 and 15 minute load averages: how much else ran beside the benchmark."""
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def machine() -> str:
    return f"{os.cpu_count()} CPUs ({platform.processor() or platform.machine()})"


def write_report(report: str, out: str) -> None:
    """Print `report` and write it to `out` (a markdown file; "-" for stdout only)."""
    print(report)
    if out != "-":
        os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
        with open(out, "w") as f:
            f.write(report)


def commit() -> str:
    """The checkout's short commit, with "+changes" when its tracked files differ from it."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    run = lambda *args: subprocess.run(["git", *args], cwd=root, capture_output=True, text=True).stdout.strip()  # noqa: E731
    return (run("rev-parse", "--short", "HEAD") or "unknown") + (
        "+changes" if run("status", "--porcelain", "--untracked-files=no") else "")


def header(title: str, script: str, argv: list[str] | None) -> list[str]:
    """A report's first lines: its title, the date and commit, and the command that produced it."""
    args = " ".join(argv if argv is not None else sys.argv[1:])
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return [f"# {title}", "", f"{date}, commit {commit()}:", "",
            f"`python {script} {args}`".replace(" `", "`"), ""]


def run_workers(script: str, names, argv: list[str] | None) -> dict:
    """Each of `names` measured by `python SCRIPT --worker NAME ARGV...` in a fresh process, one
    after the other: name -> the JSON of the worker's last `RESULT {...}` line."""
    results = {}
    for name in names:
        command = [sys.executable, script, "--worker", str(name), *(argv if argv is not None else sys.argv[1:])]
        proc = subprocess.run(command, capture_output=True, text=True, check=False)
        lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
        if proc.returncode or not lines:
            print(proc.stdout[-2000:], proc.stderr[-4000:], file=sys.stderr)
            raise SystemExit(f"{name}: the worker failed (exit {proc.returncode})")
        results[name] = json.loads(lines[-1][len("RESULT "):])
    return results
