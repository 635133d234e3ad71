"""Phase I end to end: search many tasks, pair, critique, splice, and write the dataset.

`collect()` prepares the run directory (or checks the one it resumes), runs the scheduler
(`agentr.search.scheduler`) over the tasks not done yet, and writes the dataset and the
statistics (`agentr.search.summary`) from the per-task files. Over the ranks of a multi-GPU
run: `agentr.search.sharded.collect_sharded`.

Output directory:

    collect.json            what shapes the data: the settings, and the provenance of the policy
                            (digests of its model and adapter, `agentr.provenance`), environment
                            and split; a re-run from anything else refuses to mix with it
    tasks/<task>.jsonl      the task's trajectories (written last, atomically: the "done" mark)
    tasks/<task>.stats.json the task's counters
    trees/<task>.json       the task's search tree, compact JSON (see `Node.to_dict`), for
                            each judged node ("critiques") its verdict, the verdict's source,
                            the verifier's reply and, for forced verdicts, the log-probabilities
                            of the three verdicts and the calibration baseline they were judged
                            against (`StepVerdict.to_dict`), and the pairs spliced
                            ("pairs": good and bad leaf node ids, divergence_step,
                            transition_step and its source, the revision trajectory's id)
    dataset.jsonl           all tasks' trajectories in task order (`agentr.trajectory` schema)
    runs/<run>.<rank>.json  each run's counters (time, engine calls, trees searched), rewritten
                            as its tasks finish, so that a killed run's are kept
    stats.json              totals over all tasks; "runs": each run's wall time, engine calls
                            and rates (a resumed run adds its own, a killed one its finished
                            tasks') and its verdict baseline, "wall_seconds" and
                            "engine_calls" their totals; the accuracy of t' against the
                            environment's mistake labels (`agentr.search.summary`)

Each line of `dataset.jsonl` is an `agentr.trajectory.Trajectory` (schema in that module):

- kind "revision": header + bad turns 1..t' (train false) + `Thought: <signal>\nAction: revise`
  (train **true**: the model learns to produce the revision signal, as the paper and its code
  do) + `OK.` + good turns t+1..end (train true); observations never trained. `meta`:
  good_reward, bad_reward, divergence_step (t, turns shared), transition_step (t', bad turns
  kept), transition_source ("model", "end" or "oracle": see `CritiqueWalk`), revision_signal,
  mode, bad_turns, good_turns (lengths of the two paths), and mistake_step (the first step
  after t that the environment labels a mistake, null if none) where the environment labels
  mistakes.
- kind "good": header + a good path, every assistant turn trained; `meta`: good_reward,
  good_turns. Written when `include_good` is set, and always in mode "optimal" (where only
  perfect paths, reward 1, are good: the paper's optimal baseline); at most
  `max_good_per_task` per task, the shortest first.

Replies are stored and trained as the reply rule of `agentr.agent.turn` says (the thought and
the executed action; a reply without a whole action line is context, never trained).
Revision trajectories of a task come first (in the seeded pair order), then its good ones
(shortest first, ties in tree order); tasks follow the order of `task_ids`.

A re-run skips the tasks whose `tasks/<task>.jsonl` exists and rebuilds `dataset.jsonl` from the
per-task files; it may add tasks (each task's data depends on the task alone, not on the
others: its random choices are seeded by (seed, task id), `agentr.search.task`), so the dataset
does not depend on which tasks shared a batch, nor on where a run was interrupted, given an
engine whose replies depend only on the prompt (the same seed for a sampling engine; greedy
decoding).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from agentr.engines.base import Engine
from agentr.envs.base import Environment
from agentr.errors import check_range
from agentr.jsonfiles import write_json
from agentr.provenance import policy_provenance
from agentr.search.config import SearchConfig
from agentr.search.critique import check_transition_source
from agentr.search.run_dir import check_run_settings, run_history, task_filename
from agentr.search.scheduler import CALL_KINDS, search_tasks
from agentr.search.summary import counted_as_read, phase1_report, summarize
from agentr.search.task import good_threshold
from agentr.timing import Profile
from agentr.trajectory import Trajectory, read_jsonl, write_jsonl_atomic

log = logging.getLogger(__name__)


@dataclass
class CollectResult:
    """Where `collect` wrote its output, and the run's statistics."""

    dataset: Path
    trees: Path
    stats: dict


def collect(
    engine: Engine,
    make_env: Callable[[], Environment],
    task_ids: Sequence[str],
    config: SearchConfig,
    out_dir: str | Path,
    *,
    iteration: int = 1,
    alpha: float = 0.5,
    seed: int = 0,
    provenance: dict | None = None,
    progress: bool = True,
    profile: Profile | None = None,
) -> CollectResult:
    """Run Phase I on `task_ids` and write the dataset under `out_dir` (see the module doc).

    Args:
        engine: the current policy; it samples expansions and, greedily, judges bad steps.
        make_env: builds a fresh environment (one per task in flight).
        task_ids: the tasks, in the order the dataset lists them.
        config: search, pairing and critique settings.
        out_dir: output directory; an existing one is resumed.
        iteration: the Agent-R iteration recorded in every trajectory.
        alpha: a path is good when its reward is `>= alpha` (in mode "optimal": `== 1`).
        seed: base seed of every per-task random choice.
        provenance: what else shapes the data, e.g. {"env": ..., "split": ...}; recorded in
            `collect.json` with the digests of the engine's model and adapter.
        progress: show a progress bar over tasks.
        profile: filled with where the search's time went (see `search_tasks`).

    Raises:
        agentr.errors.ProvenanceError: `out_dir` holds data made from something else.

    Over the ranks of a multi-GPU run: `agentr.search.sharded.collect_sharded`.
    """
    prepare_out_dir(engine, make_env, task_ids, config, out_dir, iteration=iteration, alpha=alpha,
                    seed=seed, provenance=provenance)
    search_tasks(engine, make_env, task_ids, config, out_dir, iteration=iteration, alpha=alpha,
                 seed=seed, progress=progress, profile=profile, record=(uuid.uuid4().hex, 0))
    return write_dataset(out_dir, task_ids, config, iteration=iteration, alpha=alpha, seed=seed,
                         progress=progress)


def prepare_out_dir(engine: Engine, make_env: Callable[[], Environment], task_ids: Sequence[str],
                    config: SearchConfig, out_dir: str | Path, *, iteration: int, alpha: float,
                    seed: int, provenance: dict | None = None) -> None:
    """Create `out_dir`, or check that the run it holds was made with the same settings and
    policy (see `collect`)."""
    check_range("alpha", alpha, 0, 1, low_open=True)
    out_dir = Path(out_dir)
    if len(set(map(str, task_ids))) != len(task_ids):
        raise ValueError("task_ids has duplicates")
    check_transition_source(config, make_env)
    (out_dir / "tasks").mkdir(parents=True, exist_ok=True)
    (out_dir / "trees").mkdir(parents=True, exist_ok=True)
    check_run_settings(out_dir, {"config": dataclasses.asdict(config), "alpha": alpha, "seed": seed,
                                  "iteration": iteration,
                                  "provenance": {**policy_provenance(engine), **(provenance or {})}})


def write_dataset(out_dir: str | Path, task_ids: Sequence[str], config: SearchConfig, *,
                  iteration: int, alpha: float, seed: int, progress: bool = True) -> CollectResult:
    """Write `dataset.jsonl` and `stats.json` from the per-task files of every task (all done)
    and the run records (`run_dir.run_history`). `progress`: print the report (else log it).

    A task file whose torn last line was skipped on reading (`agentr.jsonfiles.read_records`)
    is counted as read: the statistics describe the dataset written.
    """
    out_dir = Path(out_dir)
    tasks_dir, trees_dir = out_dir / "tasks", out_dir / "trees"
    per_task = []
    trajectories: list[Trajectory] = []
    for task_id in map(str, task_ids):
        name = task_filename(task_id)
        task_stats = json.loads((tasks_dir / f"{name}.stats.json").read_text())
        read = list(read_jsonl(tasks_dir / f"{name}.jsonl"))
        per_task.append(counted_as_read(task_stats, read))
        trajectories.extend(read)
    dataset = write_jsonl_atomic(out_dir / "dataset.jsonl", trajectories)

    stats = summarize(per_task, config.transition)
    history = run_history(out_dir)
    stats.update(
        mode=config.mode,
        transition=config.transition,
        verdict=config.verdict,
        calibrate_verdicts=config.calibrate_verdicts,
        alpha=good_threshold(config, alpha),
        seed=seed,
        iteration=iteration,
        wall_seconds=round(sum(r["wall_seconds"] for r in history), 3),
        engine_calls={k: sum(r["engine_calls"].get(k, 0) for r in history) for k in CALL_KINDS},
        engine_seconds={k: round(sum(r.get("engine_seconds", {}).get(k, 0.0) for r in history), 3)
                        for k in CALL_KINDS},
        runs=history,
    )
    write_json(out_dir / "stats.json", stats, indent=2)
    replies = stats["critique_requests"]
    if replies and stats["unparsed_verdicts"] > replies / 2:
        forced = stats["verdict_sources"]["forced"]
        log.warning(
            "%d of %d critique replies had no 'Judgment: Good|Bad|Uncertain' line: the policy "
            "cannot write its own verdicts yet; %d verdicts were forced by the model's "
            "log-probabilities%s. Replies are in %s/*.json ('critiques').",
            stats["unparsed_verdicts"], replies, forced,
            "" if config.verdict != "parsed" else
            " (none: verdict 'parsed' counts them as Uncertain, so those transition points fall "
            "back to the end of the bad path, as with transition 'end')", trees_dir)
    report = phase1_report(stats)
    if progress:
        print(report, file=sys.stderr)
    else:
        log.info("%s", report)
    return CollectResult(dataset=dataset, trees=trees_dir, stats=stats)
