"""The Phase I scheduler: many tasks in flight, their engine requests batched by round.

`search_tasks` keeps up to `max_concurrent_trees` tasks (`Phase1Task`) in flight. Each round it
asks every task in state SEARCH for the node it waits on and sends all of them to the engine in
ONE `engine.generate` call (n = `n_expand`, sampled); every task in state CRITIQUE contributes
the next bad-path steps to judge, and the run's `agentr.search.critique.Judge` sends those
together in one greedy call, followed (under `verdict: parsed_then_forced` or `forced`) by one
`engine.choose` call for the steps that still lack a verdict; the scheduler books every call
(`RunCounters`, the profile). A finished task is written at once (`run_dir.write_task`), so a run
killed at any point loses only the tasks in flight. Expansions sample with the stop strings
`REPLY_STOP`, each request seeded by its task and the task's expansion count
(`expansion_seed`), so that a tree's samples do not depend on which other trees share the
batch: the methods of a comparison search the same trees until their critiques differ.
"""

from __future__ import annotations

import dataclasses
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agentr.agent.conversation import truncate_history
from agentr.agent.turn import REPLY_STOP
from agentr.engines.base import Conversation, Engine, SamplingConfig
from agentr.engines.common import derive_seed
from agentr.envs.base import Environment
from agentr.jsonfiles import write_json
from agentr.search.config import SearchConfig
from agentr.search.critique import VERDICTS, Judge, TaskCritique
from agentr.search.mcts import Node
from agentr.search.run_dir import run_record_path, task_filename, write_task
from agentr.search.task import Phase1Task, TaskState
from agentr.timing import NO_PROFILE, Profile

#: Bytes added per message for the chat template (a generous bound on its tokens), used to skip exact counting.
_TEMPLATE_BYTES_PER_MESSAGE = 32


#: Room kept in a verifier prompt for a forced verdict: the judgment label and the verdict.
_VERDICT_TOKENS = 16


#: The kinds of batched engine calls of a run (sampled expansions, critiques, forced verdicts).
CALL_KINDS = ("expand", "judge", "force")


def expansion_seed(seed: int, task_id: str, expansion: int) -> int:
    """The sampling seed of task `task_id`'s `expansion`-th expansion in a run seeded `seed`."""
    return derive_seed(seed, task_id, expansion)


def surely_fits(conversation: Conversation, limit: int) -> bool:
    """True when `conversation` certainly renders to at most `limit` tokens (a token covers at
    least one byte, plus a bound on the chat template), so exact counting can be skipped."""
    size = sum(len(m["content"].encode()) + _TEMPLATE_BYTES_PER_MESSAGE for m in conversation)
    return size + _TEMPLATE_BYTES_PER_MESSAGE <= limit


def fits(engine: Engine, conversation: Conversation, limit: int) -> bool:
    return surely_fits(conversation, limit) or engine.count_tokens(conversation) <= limit


def fit_conversation(engine: Engine, conversation: Conversation, limit: int) -> Conversation:
    """`conversation` with its oldest turns dropped until its prompt has at most `limit` tokens."""
    if surely_fits(conversation, limit):
        return conversation
    return truncate_history(conversation, engine.count_tokens, limit)


@dataclass
class RunCounters:
    """What one process did in one run of the search (ranks' counters are merged)."""

    finished: list[dict]  # the per-task stats of the tasks this run finished
    calls: dict[str, int]  # engine calls by kind ("expand", "judge", "force")
    engine_seconds: dict[str, float]  # engine time by kind of call
    wall_seconds: float
    verdict_baseline: dict[str, float] | None = None  # the content-free step's verdict log-probs

    def record(self, run: str, started: float, tasks_resumed: int) -> dict:
        """These counters as a run record (`run_dir.run_history` reads it): `started`, the
        run's start (Unix time); `tasks_resumed`, the tasks done before it."""
        return {"run": run, "started": started, "tasks_resumed": tasks_resumed,
                "trees_searched": len(self.finished),
                "env_steps": sum(s["env_steps"] for s in self.finished),
                "wall_seconds": self.wall_seconds, "engine_calls": self.calls,
                "engine_seconds": {k: round(v, 3) for k, v in self.engine_seconds.items()},
                "verdict_baseline": self.verdict_baseline}


def search_tasks(
    engine: Engine,
    make_env: Callable[[], Environment],
    task_ids: Sequence[str],
    config: SearchConfig,
    out_dir: str | Path,
    *,
    iteration: int,
    alpha: float,
    seed: int,
    progress: bool = True,
    claim: Callable[[str], bool] | None = None,
    profile: Profile | None = None,
    record: tuple[str, int] | None = None,
) -> RunCounters:
    """Search the tasks of `task_ids` not done yet in `out_dir` (prepared), writing each as it ends.

    `claim(task_id)`, when given, is asked before a task starts: False leaves the task to
    another process (it counts as progress here).

    `record`, (run id, rank): the counters so far are written to the run record
    (`run_dir.run_record_path`) as each task finishes and when the search ends or fails, so
    that a killed run's time and calls reach stats.json.

    `profile`, when given, gets the seconds of each phase: "engine.<kind>" (the engine calls),
    "expand.prompts" and "judge.prompts" (building and fitting prompts), "env.step",
    "env.clone", "write" (finished tasks); and counters: "idle_tree_seconds.<kind>" (trees in
    flight but not in an engine call, times the call's seconds: a tree waiting on the others),
    "requests.<kind>", "rounds", "rounds_below_capacity" (fewer trees in flight than
    `max_concurrent_trees`), and the engine's "engine.prompt_tokens",
    "engine.cached_prompt_tokens", "engine.generated_tokens", "engine.render_seconds".
    """
    prof = profile or NO_PROFILE
    stats0 = dataclasses.replace(engine.stats)
    out_dir = Path(out_dir)
    task_ids = [str(t) for t in task_ids]
    tasks_dir, trees_dir = out_dir / "tasks", out_dir / "trees"
    done_file = lambda t: tasks_dir / f"{task_filename(t)}.jsonl"  # noqa: E731
    todo = deque(t for t in task_ids if not done_file(t).exists())
    started, started_at, resumed = time.perf_counter(), time.time(), len(task_ids) - len(todo)
    calls: Counter[str] = Counter()
    seconds: Counter[str] = Counter()  # engine time per kind of call
    finished_now: list[dict] = []
    written: Counter[str] = Counter()  # trajectories written by this run

    from tqdm.auto import tqdm

    bar = tqdm(total=len(task_ids), initial=len(task_ids) - len(todo), unit="task", desc="collect",
               disable=not progress)
    expand_sampling = SamplingConfig(n=config.n_expand, temperature=config.temperature,
                                     max_tokens=config.max_tokens, stop=REPLY_STOP)
    judge_sampling = SamplingConfig(n=1, temperature=0.0, max_tokens=config.critique_max_tokens, seed=seed)
    expand_limit = engine.max_model_len - config.max_tokens
    reasons = 0 if config.verdict == "forced" else config.critique_max_tokens
    judge_limit = engine.max_model_len - reasons - _VERDICT_TOKENS

    def call(kind: str, trees: int, requests: int, run: Callable[[], Any]) -> Any:
        """Run one engine call of `kind` and book it: its seconds, its requests, and the trees
        in flight that had no part in it (they wait on it)."""
        start = time.perf_counter()
        result = run()
        elapsed = time.perf_counter() - start
        seconds[kind] += elapsed
        calls[kind] += 1
        prof.add_time(f"engine.{kind}", elapsed)
        prof.count(f"requests.{kind}", requests)
        prof.count(f"idle_tree_seconds.{kind}", (len(active) - trees) * elapsed)
        return result

    judge = Judge(engine, config, judge_sampling, lambda c: fits(engine, c, judge_limit), call, prof)


    def counters() -> RunCounters:
        return RunCounters(finished=finished_now, calls={k: calls[k] for k in CALL_KINDS},
                           engine_seconds={k: seconds[k] for k in CALL_KINDS},
                           wall_seconds=round(time.perf_counter() - started, 3),
                           verdict_baseline=None if judge.baseline is None
                           else dict(zip(VERDICTS, judge.baseline)))

    def write_record() -> None:
        if record is not None:
            write_json(run_record_path(out_dir, *record),
                       counters().record(record[0], started_at, resumed), indent=2)

    active: list[Phase1Task] = []
    try:
        while todo or active:
            while todo and len(active) < config.max_concurrent_trees:
                task_id = todo.popleft()
                if claim is not None and not claim(task_id):
                    bar.update(1)  # another process searches it
                    continue
                active.append(Phase1Task(task_id, make_env(), config, alpha, seed, iteration, prof))
            prof.count("rounds")
            prof.count("rounds_below_capacity", len(active) < config.max_concurrent_trees)

            expansions: list[tuple[Phase1Task, Node]] = []
            judgments: list[tuple[TaskCritique, Node]] = []
            for job in active:
                if job.state is TaskState.SEARCH:
                    node = job.tree.pending()
                    if node is not None:
                        expansions.append((job, node))
                        continue
                    job.end_search()
                if job.state is TaskState.CRITIQUE:
                    judgments.extend((job.critique, node) for node in job.nodes_to_judge())

            if expansions:
                with prof.phase("expand.prompts"):
                    prompts = [fit_conversation(engine, job.tree.conversation(node), expand_limit)
                               for job, node in expansions]
                sampling = dataclasses.replace(expand_sampling, request_seeds=tuple(
                    expansion_seed(seed, job.task_id, job.tree.counters.expansions)
                    for job, _ in expansions))
                replies = call("expand", len(prompts), len(prompts),
                               lambda: engine.generate(prompts, sampling))
                for (job, node), generations in zip(expansions, replies):
                    job.tree.expand(node, generations)
            if judgments:
                judge.judge(judgments)

            for job in active:
                if job.state is TaskState.DONE:
                    with prof.phase("write"):
                        finished_now.append(write_task(job, tasks_dir, trees_dir))
                    written.update(revision=finished_now[-1]["revision"], good=finished_now[-1]["good"])
                    bar.set_postfix(revision=written["revision"], good=written["good"], refresh=False)
                    bar.update(1)
                    write_record()
            active = [job for job in active if job.state is not TaskState.DONE]
    finally:
        write_record()
        bar.close()
        for job in active:  # interrupted: release the environments of unfinished trees
            job.tree.close()
        for name in ("prompt_tokens", "cached_prompt_tokens", "generated_tokens", "render_seconds"):
            prof.count(f"engine.{name}", getattr(engine.stats, name) - getattr(stats0, name))

    return counters()

