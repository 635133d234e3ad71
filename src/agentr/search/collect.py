"""Phase I end to end: search many tasks, pair, critique, splice, and write the dataset.

`collect()` keeps up to `max_concurrent_trees` tasks in flight. Each round it asks every tree in
its search stage for the node it waits on and sends all of them to the engine in ONE
`engine.generate` call (n = `n_expand`, sampled); every tree in its critique stage contributes
the next bad-path steps to judge, and those go out together in one greedy call. A finished task
is written at once, so a run killed at any point loses only the tasks in flight.

Output directory:

    collect.json            the settings of the run; a re-run with other settings refuses to mix
    tasks/<task>.jsonl      the task's trajectories (written last, atomically: the "done" mark)
    tasks/<task>.stats.json the task's counters
    trees/<task>.json       the task's search tree, compact JSON (see `Node.to_dict`), and the
                            verifier's reply and verdict for each judged node ("critiques")
    dataset.jsonl           all tasks' trajectories in task order (`agentr.trajectory` schema)
    stats.json              totals over all tasks, plus this run's wall time and rates

Each line of `dataset.jsonl` is an `agentr.trajectory.Trajectory` (schema in that module):

- kind "revision": header + bad turns 1..t' (train false) + `Thought: <signal>\nAction: wait`
  (train **true**: the model learns to produce the revision signal, as the paper and its code
  do) + `OK.` + good turns t+1..end (train true); observations never trained. `meta`:
  good_reward, bad_reward, divergence_step (t, turns shared), transition_step (t', bad turns
  kept), revision_signal, mode, bad_turns, good_turns (lengths of the two paths).
- kind "good": header + a good path, every assistant turn trained; `meta`: good_reward,
  good_turns. Written when `include_good` is set, and always in mode "optimal"; at most
  `max_good_per_task` per task, the shortest first.

Revision trajectories of a task come first (in the seeded pair order), then its good ones
(shortest first, ties in tree order); tasks follow the order of `task_ids`.

A re-run skips the tasks whose `tasks/<task>.jsonl` exists and rebuilds `dataset.jsonl` from the
per-task files. Every random choice of a task (UCT ties, the pair shuffle, revision signals) draws
from `random.Random` seeded by a stable hash of (seed, task id), so the dataset does not depend
on which tasks shared a batch, nor on where a run was interrupted, given an engine whose replies
depend only on the prompt (the same seed for a sampling engine; greedy decoding).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import random
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from agentr.agent.conversation import truncate_history
from agentr.engines.base import Conversation, Engine, SamplingConfig
from agentr.envs.base import Environment
from agentr.search.config import SearchConfig
from agentr.search.critique import CritiqueWalk, parse_judgment, step_conversation
from agentr.search.mcts import Node, SearchTree
from agentr.search.pairing import good_paths, leaf_paths, make_pairs
from agentr.search.splicing import draw_signal, good_conversation, splice
from agentr.trajectory import Trajectory, read_jsonl, write_jsonl_atomic

log = logging.getLogger(__name__)

#: Chat-template tokens per message, a generous bound used to skip exact counting.
_TEMPLATE_BYTES_PER_MESSAGE = 32


@dataclass
class CollectResult:
    """Where `collect` wrote its output, and the run's statistics."""

    dataset: Path
    trees: Path
    stats: dict


def task_seed(seed: int, task_id: str) -> int:
    """A stable per-task seed (Python's `hash()` of strings changes between processes)."""
    digest = hashlib.sha256(f"{seed}\x00{task_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


def call_seed(seed: int, call: int) -> int:
    """The sampling seed of the `call`-th batched expansion call of a run."""
    return (seed * 1_000_003 + call * 7_919) % (2**31 - 1)


def task_filename(task_id: str) -> str:
    """`task_id` made safe as a file name."""
    return quote(str(task_id), safe="") or "_"


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


def _write_json_atomic(path: Path, data: object, **kwargs) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, ensure_ascii=False, **kwargs)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class _Job:
    """One task on its way: search, then critique (mode agent_r), then done."""

    def __init__(self, task_id: str, env: Environment, config: SearchConfig, alpha: float,
                 seed: int, iteration: int):
        self.task_id = task_id
        self.config = config
        self.alpha = alpha
        self.iteration = iteration
        self.started = time.perf_counter()
        self.rng = random.Random(task_seed(seed, task_id))
        self.tree = SearchTree(env, task_id, config, self.rng)
        self.stage = "search"
        self.walks: list[CritiqueWalk] = []
        self.verdicts: dict[int, str] = {}
        self.replies: dict[int, str] = {}  # node id -> the verifier's reply
        self.verdict_counts: Counter[str] = Counter()
        self.unparsed = 0
        self.critique_tokens = 0
        self.critique_requests = 0

    # ---- stages ------------------------------------------------------------------------------
    def end_search(self) -> None:
        """Collect the leaf paths and pairs; start the critique where the mode needs it."""
        self.paths = leaf_paths(self.tree.root)
        self.good = good_paths(self.paths, self.alpha)
        if self.config.mode == "optimal":
            pairs, self.pairs_found = [], 0
        else:
            pairs, self.pairs_found = make_pairs(
                self.paths, self.alpha, self.config.beta, self.rng, self.config.max_pairs_per_task
            )
        self.walks = [CritiqueWalk(pair) for pair in pairs]
        if self.config.mode == "direct_revision":
            for walk in self.walks:
                walk.transition = len(walk.pair.bad) - 1
        self.stage = "critique" if self.config.mode == "agent_r" and self.walks else "done"

    def nodes_to_judge(self) -> list[Node]:
        """The bad-path steps whose verdicts the walks wait on (none: the critique is over)."""
        nodes: dict[int, Node] = {}
        for walk in self.walks:
            node = walk.advance(self.verdicts)
            if node is not None:
                nodes.setdefault(node.id, node)
        if not nodes:
            self.stage = "done"
        return list(nodes.values())

    def record_verdict(self, node: Node, text: str, num_tokens: int) -> None:
        verdict = parse_judgment(text)
        if verdict is None:
            self.unparsed += 1
            verdict = "Uncertain"
        self.verdicts[node.id] = verdict
        self.replies[node.id] = text
        self.verdict_counts[verdict] += 1
        self.critique_tokens += num_tokens
        self.critique_requests += 1

    # ---- results -----------------------------------------------------------------------------
    def trajectories(self) -> list[Trajectory]:
        env, header = self.tree.env_name, self.tree.header

        def record(kind: str, index: int, messages: list[dict], meta: dict) -> Trajectory:
            return Trajectory(id=f"{env}/{self.task_id}/{kind}/{index}", env=env, task_id=self.task_id,
                              iteration=self.iteration, kind=kind, messages=messages, meta=meta)

        out = []
        for i, walk in enumerate(self.walks):
            pair = walk.pair
            signal = draw_signal(self.rng)
            out.append(record("revision", i, splice(header, pair.bad, pair.good, pair.divergence,
                                                    walk.transition, signal), {
                "good_reward": pair.good_reward,
                "bad_reward": pair.bad_reward,
                "divergence_step": pair.divergence,
                "transition_step": walk.transition,
                "revision_signal": signal,
                "mode": self.config.mode,
                "bad_turns": len(pair.bad) - 1,
                "good_turns": len(pair.good) - 1,
            }))
        if self.config.include_good or self.config.mode == "optimal":
            good = sorted(self.good, key=len)[:self.config.max_good_per_task]  # stable: tree order
            for i, path in enumerate(good):
                out.append(record("good", i, good_conversation(header, path),
                                  {"good_reward": path[-1].reward, "good_turns": len(path) - 1}))
        return out

    def stats(self, trajectories: list[Trajectory]) -> dict:
        c = self.tree.counters
        kinds = Counter(t.kind for t in trajectories)
        return {
            "task_id": self.task_id,
            "simulations": self.tree.simulations,
            "nodes": self.tree.num_nodes,
            "leaf_paths": len(self.paths),
            "good_paths": len(self.good),
            "bad_paths": sum(p[-1].reward < self.alpha for p in self.paths),
            "best_reward": max((p[-1].reward for p in self.paths), default=0.0),
            "pairs_found": self.pairs_found,
            "revision": kinds["revision"],
            "good": kinds["good"],
            "divergence_steps": [w.pair.divergence for w in self.walks],
            "transition_steps": [w.transition for w in self.walks],
            "verdicts": {v: self.verdict_counts[v] for v in ("Good", "Bad", "Uncertain")},
            "unparsed_verdicts": self.unparsed,
            "expansions": c.expansions,
            "samples": c.samples,
            "duplicates": c.duplicates,
            "env_steps": c.env_steps,
            "replay_steps": c.replay_steps,
            "clones": c.clones,
            "search_tokens": c.tokens,
            "critique_requests": self.critique_requests,
            "critique_tokens": self.critique_tokens,
            "seconds": round(time.perf_counter() - self.started, 3),
        }


def _check_run_settings(out_dir: Path, settings: dict) -> None:
    path = out_dir / "collect.json"
    if path.exists():
        previous = json.loads(path.read_text())
        if previous != settings:
            changed = sorted(k for k in set(previous) | set(settings) if previous.get(k) != settings.get(k))
            raise ValueError(
                f"{out_dir} holds a collection made with other settings ({', '.join(changed)}); "
                "resume with the same settings or choose another out_dir"
            )
    else:
        _write_json_atomic(path, settings, indent=2)


def summarize(per_task: list[dict]) -> dict:
    """Totals over per-task stats."""
    transitions = [t for s in per_task for t in s["transition_steps"]]
    offsets = [t - d for s in per_task for t, d in zip(s["transition_steps"], s["divergence_steps"])]
    total = lambda key: sum(s[key] for s in per_task)  # noqa: E731
    return {
        "trees_searched": len(per_task),
        "trees_with_good_path": sum(s["good_paths"] > 0 for s in per_task),
        "leaf_paths": total("leaf_paths"),
        "good_paths": total("good_paths"),
        "bad_paths": total("bad_paths"),
        "pairs_found": total("pairs_found"),
        "revision_trajectories": total("revision"),
        "good_trajectories": total("good"),
        "mean_transition_step": sum(transitions) / len(transitions) if transitions else None,
        "mean_steps_after_divergence": sum(offsets) / len(offsets) if offsets else None,
        "transition_step_histogram": dict(sorted(Counter(transitions).items())),
        "verdicts": {v: sum(s["verdicts"][v] for s in per_task) for v in ("Good", "Bad", "Uncertain")},
        "unparsed_verdicts": total("unparsed_verdicts"),
        "env_steps": total("env_steps"),
        "replay_steps": total("replay_steps"),
        "expansions": total("expansions"),
        "duplicates_dropped": total("duplicates"),
        "tokens_generated": total("search_tokens") + total("critique_tokens"),
        "search_tokens": total("search_tokens"),
        "critique_tokens": total("critique_tokens"),
    }


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
    progress: bool = True,
) -> CollectResult:
    """Run Phase I on `task_ids` and write the dataset under `out_dir` (see the module doc).

    Args:
        engine: the current policy; it samples expansions and, greedily, judges bad steps.
        make_env: builds a fresh environment (one per task in flight).
        task_ids: the tasks, in the order the dataset lists them.
        config: search, pairing and critique settings.
        out_dir: output directory; an existing one is resumed.
        iteration: the Agent-R iteration recorded in every trajectory.
        alpha: a path is good when its reward is `>= alpha`.
        seed: base seed of every per-task random choice.
        progress: show a progress bar over tasks.
    """
    out_dir = Path(out_dir)
    task_ids = [str(t) for t in task_ids]
    if len(set(task_ids)) != len(task_ids):
        raise ValueError("task_ids has duplicates")
    tasks_dir, trees_dir = out_dir / "tasks", out_dir / "trees"
    tasks_dir.mkdir(parents=True, exist_ok=True)
    trees_dir.mkdir(parents=True, exist_ok=True)
    # everything that shapes the data (the concurrency bound does not)
    shaping = {k: v for k, v in dataclasses.asdict(config).items() if k != "max_concurrent_trees"}
    _check_run_settings(out_dir, {"config": shaping, "alpha": alpha, "seed": seed, "iteration": iteration})

    done_file = lambda t: tasks_dir / f"{task_filename(t)}.jsonl"  # noqa: E731
    todo = deque(t for t in task_ids if not done_file(t).exists())
    resumed = len(task_ids) - len(todo)
    started = time.perf_counter()
    calls = Counter()
    finished_now: list[dict] = []
    written: Counter[str] = Counter()  # trajectories written by this run

    from tqdm.auto import tqdm

    bar = tqdm(total=len(task_ids), initial=resumed, unit="task", desc="collect", disable=not progress)
    expand_sampling = SamplingConfig(n=config.n_expand, temperature=config.temperature,
                                     max_tokens=config.max_tokens)
    judge_sampling = SamplingConfig(n=1, temperature=0.0, max_tokens=config.critique_max_tokens, seed=seed)
    expand_limit = engine.max_model_len - config.max_tokens
    judge_limit = engine.max_model_len - config.critique_max_tokens
    judge_fits = lambda c: fits(engine, c, judge_limit)  # noqa: E731

    active: list[_Job] = []
    try:
        while todo or active:
            while todo and len(active) < config.max_concurrent_trees:
                task_id = todo.popleft()
                active.append(_Job(task_id, make_env(), config, alpha, seed, iteration))

            expansions: list[tuple[_Job, Node]] = []
            judgments: list[tuple[_Job, Node]] = []
            for job in active:
                if job.stage == "search":
                    node = job.tree.pending()
                    if node is not None:
                        expansions.append((job, node))
                        continue
                    job.end_search()
                if job.stage == "critique":
                    judgments.extend((job, node) for node in job.nodes_to_judge())

            if expansions:
                prompts = [fit_conversation(engine, job.tree.conversation(node), expand_limit)
                           for job, node in expansions]
                # a fresh seed per call, so that rounds do not replay the same random stream
                sampling = dataclasses.replace(expand_sampling, seed=call_seed(seed, calls["expand"]))
                calls["expand"] += 1
                for (job, node), generations in zip(expansions, engine.generate(prompts, sampling)):
                    job.tree.expand(node, generations)
            if judgments:
                prompts = [step_conversation(node.path(), node.depth, judge_fits) for _, node in judgments]
                calls["judge"] += 1
                for (job, node), generations in zip(judgments, engine.generate(prompts, judge_sampling)):
                    job.record_verdict(node, generations[0].text, generations[0].num_tokens)

            for job in active:
                if job.stage == "done":
                    finished_now.append(_write_task(job, tasks_dir, trees_dir))
                    written.update(revision=finished_now[-1]["revision"], good=finished_now[-1]["good"])
                    bar.set_postfix(revision=written["revision"], good=written["good"], refresh=False)
                    bar.update(1)
            active = [job for job in active if job.stage != "done"]
    finally:
        bar.close()
        for job in active:  # interrupted: release the environments of unfinished trees
            job.tree.close()

    wall = time.perf_counter() - started
    per_task = []
    trajectories: list[Trajectory] = []
    for task_id in task_ids:
        name = task_filename(task_id)
        per_task.append(json.loads((tasks_dir / f"{name}.stats.json").read_text()))
        trajectories.extend(read_jsonl(tasks_dir / f"{name}.jsonl"))
    dataset = write_jsonl_atomic(out_dir / "dataset.jsonl", trajectories)

    stats = summarize(per_task)
    this_run = summarize(finished_now) if finished_now else {"trees_searched": 0, "env_steps": 0}
    stats.update(
        mode=config.mode,
        alpha=alpha,
        seed=seed,
        iteration=iteration,
        tasks_resumed=resumed,
        trees_this_run=this_run["trees_searched"],
        wall_seconds=round(wall, 3),
        trees_per_minute=round(60 * this_run["trees_searched"] / wall, 3) if wall > 0 else None,
        env_steps_per_second=round(this_run["env_steps"] / wall, 3) if wall > 0 else None,
        engine_calls={"expand": calls["expand"], "judge": calls["judge"]},
    )
    _write_json_atomic(out_dir / "stats.json", stats, indent=2)
    judged = sum(stats["verdicts"].values())
    if judged and stats["unparsed_verdicts"] > judged / 2:
        log.warning(
            "%d of %d critique replies had no 'Judgment: Good|Bad|Uncertain' line: the policy "
            "cannot act as its own verifier yet, so those transition points fall back to the end "
            "of the bad path (as in direct_revision). Replies are in %s/*.json ('critiques').",
            stats["unparsed_verdicts"], judged, trees_dir)
    return CollectResult(dataset=dataset, trees=trees_dir, stats=stats)


def _write_task(job: _Job, tasks_dir: Path, trees_dir: Path) -> dict:
    """Write one finished task: tree, stats, then its trajectories (the done mark)."""
    name = task_filename(job.task_id)
    trajectories = job.trajectories()
    stats = job.stats(trajectories)
    tree = {"task_id": job.task_id, "env": job.tree.env_name, "header": job.tree.header,
            "root": job.tree.root.to_dict(),
            "critiques": {i: {"verdict": job.verdicts[i], "reply": r} for i, r in job.replies.items()}}
    _write_json_atomic(trees_dir / f"{name}.json", tree, separators=(",", ":"))
    _write_json_atomic(tasks_dir / f"{name}.stats.json", stats)
    write_jsonl_atomic(tasks_dir / f"{name}.jsonl", trajectories)
    return stats


def collect_command(
    model: str,
    env: str = "textcraft",
    out_dir: str = "runs/collect",
    split: str = "train",
    num_tasks: int | None = None,
    adapter: str | None = None,
    engine: str = "auto",
    search: SearchConfig = SearchConfig(),
    alpha: float = 0.5,
    iteration: int = 1,
    seed: int = 0,
    max_model_len: int = 4096,
    env_options: dict | None = None,
    engine_options: dict | None = None,
    progress: bool = True,
) -> None:
    """Phase I alone: search tasks with a model, critique, splice, and write the dataset as JSONL.

    Writes OUT_DIR/dataset.jsonl (trajectories, see agentr.trajectory), OUT_DIR/trees/ (one
    search tree per task), OUT_DIR/tasks/ (per-task results) and OUT_DIR/stats.json. Running
    again with the same OUT_DIR resumes: finished tasks are skipped.

    Args:
        model: Hugging Face id, model directory or .gguf file of the policy.
        env: environment name (textcraft, sciworld, http).
        out_dir: where the dataset, trees and stats go; an existing one is resumed.
        split: task split to search ("train" or "test").
        num_tasks: search only the first N tasks of the split.
        adapter: LoRA adapter directory loaded on top of the model.
        engine: "vllm", "hf" or "auto" (vLLM when installed).
        search: search, pairing and critique settings.
        alpha: reward threshold of good paths (`>=`).
        iteration: Agent-R iteration recorded in the trajectories.
        seed: base seed of all random choices.
        max_model_len: context length (prompt + reply) of the engine.
        env_options: keyword arguments of the environment, e.g. {"max_depth": 1} for TextCraft.
        engine_options: keyword arguments of the engine, e.g. {"kv_cache_gb": 3}.
        progress: show a progress bar.
    """
    from agentr.engines import make_engine
    from agentr.envs import split_tasks

    env_factory, task_ids = split_tasks(env, split, num_tasks, env_options)
    with make_engine(engine, model, adapter=adapter, max_model_len=max_model_len, seed=seed,
                     **(engine_options or {})) as policy:
        result = collect(policy, env_factory, task_ids, search, out_dir,
                         iteration=iteration, alpha=alpha, seed=seed, progress=progress)
    keys = ("trees_searched", "revision_trajectories", "good_trajectories", "mean_transition_step",
            "transition_step_histogram", "verdicts", "unparsed_verdicts", "env_steps",
            "tokens_generated", "wall_seconds")
    print(json.dumps({"dataset": str(result.dataset), **{k: result.stats[k] for k in keys}}, indent=2))
