"""`agentr compare`: the paired difference of two evaluations."""

from __future__ import annotations

from agentr.compare import PAIRED_METHOD, compare_paths, format_comparison
from agentr.jsonfiles import write_json
from agentr.intervals import CONFIDENCE


def compare_command(run_a: str, run_b: str, out: str | None = None, seed: int = 0) -> None:
    """Compare two evaluations of the same tasks: success and reward of A minus B, paired.

    RUN_A and RUN_B are eval.json files (or directories holding one), or two run directories,
    compared stage by stage. Episodes are matched by task id (and sample index for sampled
    evaluation); the intervals are a paired bootstrap over tasks, the p-value McNemar's exact
    test (one episode per task). Prints a table; with --out, writes the numbers as JSON.

    Args:
        run_a: eval.json, stage directory or run directory of A.
        run_b: the same for B.
        out: write the comparison to this JSON file.
        seed: seed of the bootstrap resamples.
    """
    try:
        comparisons = compare_paths(run_a, run_b, seed=seed)
    except ValueError as e:
        raise SystemExit(f"agentr compare: {e}") from None
    print(f"A: {run_a}\nB: {run_b}\n{PAIRED_METHOD}, {CONFIDENCE:.0%} intervals; McNemar: exact\n")
    print(format_comparison(comparisons))
    if out is not None:
        write_json(out, {"a": str(run_a), "b": str(run_b), "stages": comparisons}, indent=2)
