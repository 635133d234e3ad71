"""Phase I's output for a fixed scripted engine, pinned by digest.

The first digests were recorded from the round-by-round scheduler before any scheduling work: a
change to how requests are grouped, ordered or timed must leave every dataset and tree byte
unchanged. The calibrated digests pin the default critique path (forced verdicts calibrated
against the content-free step) under an engine that draws from each request's seed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

from search_fakes import (
    LabelledToyEnv,
    ScriptedEngine,
    SeedDrawnEngine,
    force_bad_on,
    judge_bad_on,
    latest_action,
    toy_policy,
)

from agentr.engines.base import Conversation
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


#: Forced log-probabilities (Good, Bad, Uncertain) by the step's action; "N/A" is the
#: content-free step. Chosen so that each broken rule picks another verdict somewhere: without
#: the baseline noop and lose are not Bad; comparing the best of Good and Uncertain instead of
#: their total makes half Bad.
FORCED_LOGPROBS = {
    "N/A": (-0.2, -3.0, -2.0),
    "good": (-0.1, -4.0, -3.0),
    "noop": (-0.9, -1.2, -1.5),
    "half": (-1.5, -4.0, -1.5),
    "lose": (-2.0, -2.5, -0.3),
    "boom": (-3.0, -0.1, -2.0),
}


def _judge_without_verdict_on_some(conversation: Conversation) -> str:
    """A verifier that gives its verdict on good and boom and only reasons on the rest (and on
    the content-free step), so those verdicts are forced."""
    action = latest_action(conversation)
    verdict = {"good": "\nJudgment: Good", "boom": "\nJudgment: Bad"}.get(action, "")
    return f"The action {action} matters.{verdict}"


def _forced_logprobs(conversation: Conversation, prefix: str, choices: Sequence[str]) -> list[float]:
    return list(FORCED_LOGPROBS[latest_action(conversation)])


def _run_calibrated(out: Path, max_concurrent_trees: int, verdict: str) -> str:
    engine = SeedDrawnEngine(judge=_judge_without_verdict_on_some, force=_forced_logprobs)
    config = SearchConfig(num_simulations=4, n_expand=4, max_depth=5, verdict=verdict,
                          max_concurrent_trees=max_concurrent_trees)
    assert config.calibrate_verdicts  # the default path
    collect(engine, lambda: LabelledToyEnv(need=2), TASKS, config, out, seed=3, progress=False)
    assert any(c[0] == "force" for c in engine.calls)
    return _digest(out)


RECORDED_CALIBRATED = {
    "parsed_then_forced": "b7ee9dca717a0049bd1c0c93b574b8a07f04595fe40115208f6f7a97a6a68da5",
    "forced": "063faf33ad9179bc47b30a3aed78aa26f8b05b0461b0e43fcb087302fd44c619",
}


def test_calibrated_verdicts_leave_the_dataset_and_trees_unchanged(tmp_path):
    assert SearchConfig().verdict == "parsed_then_forced"
    for verdict, expected in RECORDED_CALIBRATED.items():
        for width in (1, 3, len(TASKS)):
            assert _run_calibrated(tmp_path / f"{verdict}-{width}", width, verdict) == expected, (verdict, width)
