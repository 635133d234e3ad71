"""Phase I's output for a fixed scripted engine, pinned by digest.

The digest was recorded from the round-by-round scheduler before any scheduling work: a change to
how requests are grouped, ordered or timed must leave every dataset and tree byte unchanged.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from search_fakes import LabelledToyEnv, ScriptedEngine, force_bad_on, judge_bad_on, toy_policy

from agentr.search.collect import collect
from agentr.search.config import SearchConfig

TASKS = [f"t{i}" for i in range(7)]


def _digest(out: Path) -> str:
    """sha256 over dataset.jsonl and every tree file (the files without timings)."""
    h = hashlib.sha256()
    for path in [out / "dataset.jsonl", *sorted((out / "trees").glob("*.json"))]:
        h.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()


def _run(out: Path, max_concurrent_trees: int, verdict: str) -> str:
    # verdict "forced" scores the verdicts with choose(); the other mode parses the judge's reply
    engine = ScriptedEngine(toy_policy(), judge_bad_on("noop", "lose", "half", "boom"),
                            force=force_bad_on("noop", "lose", "half"))
    # the recorded trees predate the calibration baseline that forced verdicts now carry
    # (calibrated, these scripted verdicts and so the dataset are the same)
    config = SearchConfig(num_simulations=4, n_expand=4, max_depth=5, verdict=verdict,
                          max_concurrent_trees=max_concurrent_trees, calibrate_verdicts=False)
    collect(engine, lambda: LabelledToyEnv(need=2), TASKS, config, out, seed=3, progress=False)
    return _digest(out)


RECORDED = {
    "parsed_then_forced": "e5db718e2c11df341efe61c002b383617d9987b20e53e1a7b7b55f1ec76b35df",
    "forced": "d3ede26c84256aa272ae92b43c305aeff11184acee4883038439b4c90a82da54",
}


def test_scheduling_leaves_the_dataset_and_trees_unchanged(tmp_path):
    for verdict, expected in RECORDED.items():
        for width in (1, 3, len(TASKS)):
            assert _run(tmp_path / f"{verdict}-{width}", width, verdict) == expected, (verdict, width)
