"""What every benchmark report says about the machine, and where it goes."""

from __future__ import annotations

import os
import platform
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


def header(title: str, script: str, argv: list[str] | None) -> list[str]:
    """A report's first lines: its title and the command that produced it."""
    args = " ".join(argv if argv is not None else sys.argv[1:])
    return [f"# {title}", "", f"`python {script} {args}`".replace(" `", "`"), ""]
