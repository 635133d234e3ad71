"""A small fit-shaped run directory made with scripted engines (no model): for the report tests."""

from __future__ import annotations

import json
from pathlib import Path

from search_fakes import CloneToyEnv, ScriptedEngine, content_rng, force_bad_on, judge_bad_on, reply, toy_policy

from agentr.evaluation import evaluate
from agentr.search.collect import collect
from agentr.search.config import SearchConfig

TASKS = [f"t{i}" for i in range(4)]


def revising_policy(conversation, n: int) -> list[str]:
    """Toy moves, and now and then the revision turn (`revise`)."""
    rng = content_rng(conversation)
    return [reply(rng.choice(["good", "noop", "revise", "lose"])) for _ in range(n)]


def make_run(root: Path, verdict: str = "parsed_then_forced") -> Path:
    """base/ and iteration_1/ (Phase I, training time, evaluation with an interval); Phase I's
    verdicts by `verdict` (`SearchConfig.verdict`: "forced" gives them log-probabilities)."""
    run = root / "run"
    env = lambda: CloneToyEnv(need=2)  # noqa: E731
    evaluate(ScriptedEngine(lambda c, n: [reply("noop")] * n), env, ["x0", "x1"], max_turns=3,
             out_dir=run / "base", progress=False)
    bad = ("noop", "lose", "half", "boom")
    collect(ScriptedEngine(toy_policy(), judge_bad_on(*bad), force=force_bad_on(*bad)), env, TASKS,
            SearchConfig(num_simulations=4, n_expand=4, max_depth=5, verdict=verdict),
            run / "iteration_1" / "phase1", alpha=0.5, progress=False)
    (run / "iteration_1" / "training.json").write_text(json.dumps({"seconds": 75.0, "epoch_seconds": [75.0]}))
    evaluate(ScriptedEngine(revising_policy), env, [f"x{i}" for i in range(6)], max_turns=4,
             out_dir=run / "iteration_1", progress=False)
    # Fields of newer eval.json files: intervals (`<metric>_ci`), histograms, a fingerprint.
    results = json.loads((run / "iteration_1" / "eval.json").read_text())
    results["metrics"].update(success_rate_ci=[0.1, 0.7], loop_count_by_length={"1": 0.5})
    results["fingerprint"] = "f1ng3rpr1nt"
    (run / "iteration_1" / "eval.json").write_text(json.dumps(results))
    return run
