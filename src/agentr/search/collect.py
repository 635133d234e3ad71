"""Phase I end to end: search many tasks, pair, critique, splice, and write the dataset.

`collect()` keeps up to `max_concurrent_trees` tasks in flight. Each round it asks every tree in
state `SEARCH` (`TaskState`) for the node it waits on and sends all of them to the engine in ONE
`engine.generate` call (n = `n_expand`, sampled); every tree in state `CRITIQUE` contributes
the next bad-path steps to judge, and those go out together in one greedy call, followed (under
`verdict: parsed_then_forced` or `forced`) by one `engine.choose` call for the steps that still
lack a verdict. A finished task is written at once, so a run killed at any point loses only the
tasks in flight.

Output directory:

    collect.json            what shapes the data: the settings, and the provenance of the policy
                            (digests of its model and adapter, `agentr.provenance`), environment
                            and split; a re-run from anything else refuses to mix with it
    tasks/<task>.jsonl      the task's trajectories (written last, atomically: the "done" mark)
    tasks/<task>.stats.json the task's counters
    trees/<task>.json       the task's search tree, compact JSON (see `Node.to_dict`), for
                            each judged node ("critiques") its verdict, the verdict's source,
                            the verifier's reply and, for forced verdicts, the log-probabilities
                            of the three verdicts (`StepVerdict.to_dict`), and the pairs spliced
                            ("pairs": good and bad leaf node ids, divergence_step,
                            transition_step and its source, the revision trajectory's id)
    dataset.jsonl           all tasks' trajectories in task order (`agentr.trajectory` schema)
    stats.json              totals over all tasks; "runs": each run's wall time, engine calls
                            and rates (a resumed run adds its own), "wall_seconds" and
                            "engine_calls" their totals

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

Transition-point accuracy. Where the environment labels mistakes
(`Environment.label_mistakes`), every pair's first labelled mistake after the divergence step is
the reference, and `stats.json` holds "transition_accuracy": for the model's t' (under
`transition: model`), for the end-of-path rule (Direct-Revision) and for a uniformly random step
after the divergence (seeded per task), on the same pairs, the fractions of pairs whose t' equals
the reference, lies before it or after it, and the mean absolute distance (pairs whose bad path
has no labelled mistake are left out and counted apart). Without labels the key is absent.

Replies are stored and trained as the reply rule of `agentr.agent.turn` says (the thought and
the executed action; a reply without a whole action line is context, never trained).
Expansions sample with the stop strings `REPLY_STOP`.

Revision trajectories of a task come first (in the seeded pair order), then its good ones
(shortest first, ties in tree order); tasks follow the order of `task_ids`.

A re-run skips the tasks whose `tasks/<task>.jsonl` exists and rebuilds `dataset.jsonl` from the
per-task files; it may add tasks (each task's data depends on the task alone, not on the others). Every random choice of a task (UCT ties, the pair shuffle, revision signals) draws
from `random.Random` seeded by a stable hash of (seed, task id), so the dataset does not depend
on which tasks shared a batch, nor on where a run was interrupted, given an engine whose replies
depend only on the prompt (the same seed for a sampling engine; greedy decoding).
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import json
import logging
import random
import sys
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from agentr.agent.conversation import truncate_history
from agentr.agent.turn import REPLY_STOP, is_revision
from agentr.engines.base import Conversation, Engine, SamplingConfig
from agentr.envs.base import Environment
from agentr.errors import ProvenanceError, check_range
from agentr.jsonfiles import write_json
from agentr.provenance import changed_keys, policy_provenance
from agentr.search.config import SearchConfig
from agentr.search.critique import (
    VERDICT_CHOICES,
    VERDICT_SOURCES,
    VERDICTS,
    CritiqueWalk,
    StepVerdict,
    calibrated_choice,
    content_free_step,
    forced_prefix,
    parse_judgment,
    step_conversation,
)
from agentr.search.mcts import Node, SearchTree
from agentr.search.pairing import good_paths, leaf_paths, make_pairs
from agentr.search.splicing import draw_signal, good_conversation, splice
from agentr.timing import NO_PROFILE, Profile
from agentr.trajectory import Trajectory, read_jsonl, write_jsonl_atomic

log = logging.getLogger(__name__)

#: Chat-template tokens per message, a generous bound used to skip exact counting.
_TEMPLATE_BYTES_PER_MESSAGE = 32
#: Room kept in a verifier prompt for a forced verdict: the judgment label and the verdict.
_VERDICT_TOKENS = 16


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


class TaskState(enum.Enum):
    """Where a task is in Phase I: each round, the scheduler asks every task in flight for the
    engine requests of its state."""

    SEARCH = "search"  # MCTS simulations: its next node to expand
    CRITIQUE = "critique"  # the policy judges its bad paths' steps (transition "model")
    DONE = "done"  # written; leaves the round


class _Job:
    """One task on its way: search, then critique (`transition: model`), then done."""

    def __init__(self, task_id: str, env: Environment, config: SearchConfig, alpha: float,
                 seed: int, iteration: int, profile: Profile = NO_PROFILE):
        self.task_id = task_id
        self.env = env
        self.seed = seed
        self.config = config
        self.alpha = good_threshold(config, alpha)
        self.iteration = iteration
        self.started = time.perf_counter()
        self.rng = random.Random(task_seed(seed, task_id))
        self.tree = SearchTree(env, task_id, config, self.rng, profile)
        self.state = TaskState.SEARCH
        self.walks: list[CritiqueWalk] = []
        self.verdicts: dict[int, str] = {}
        self.critiques: dict[int, StepVerdict] = {}  # node id -> its verdict and source
        self.verdict_counts: Counter[str] = Counter()
        self.source_counts: Counter[str] = Counter()
        self.unparsed = 0  # replies without a verdict (forced afterwards, or counted Uncertain)
        self.mistakes: list[int | None] | None = None  # per walk; None: the env has no labels
        self.random_steps: list[int] = []
        self.critique_tokens = 0
        self.critique_requests = 0

    # ---- states ------------------------------------------------------------------------------
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
        self.mistakes = self._first_mistakes()
        # the random baseline has its own stream, so that it does not shift the data's draws
        baseline = random.Random(task_seed(self.seed, f"{self.task_id}\x00random-transition"))
        self.random_steps = [baseline.randint(w.pair.divergence + 1, len(w.pair.bad) - 1)
                             for w in self.walks]
        for i, walk in enumerate(self.walks):
            end = len(walk.pair.bad) - 1
            if self.config.transition == "end":
                walk.settle(end, "end")
            elif self.config.transition == "oracle":
                mistake = self.mistakes[i] if self.mistakes is not None else None
                walk.settle(*((mistake, "oracle") if mistake is not None else (end, "end")))
        self.state = TaskState.CRITIQUE if self.config.transition == "model" and self.walks else TaskState.DONE

    def _first_mistakes(self) -> list[int | None] | None:
        """Per walk, the first step after the divergence that the environment labels a mistake
        (None: no such step); None when the environment has no labels for this task. Asks
        `label_mistakes` itself rather than `labels_mistakes`, which a multi-task environment
        answers by building every sub-environment."""
        if not self.walks:
            return None if self.env.label_mistakes(self.task_id, []) is None else []
        labelled: dict[int, list[bool]] = {}  # leaf id -> one label per turn
        out = []
        for walk in self.walks:
            bad = walk.pair.bad
            if bad[-1].id not in labelled:
                labels = self._labels(bad)
                if labels is None:
                    return None
                labelled[bad[-1].id] = labels
            labels = labelled[bad[-1].id]
            out.append(next((k for k in range(walk.pair.divergence + 1, len(bad)) if labels[k - 1]),
                            None))
        return out

    def _labels(self, path: list[Node]) -> list[bool] | None:
        """The environment's label of every turn of `path`. A revision turn never reached the
        environment (the agent answers it itself): it makes no progress, a mistake."""
        stepped = [n for n in path[1:] if not is_revision(n.action, self.tree.revision_action)]
        labels = self.env.label_mistakes(self.task_id, [n.action or "" for n in stepped])
        if labels is None:
            return None
        by_node = {n.id: label for n, label in zip(stepped, labels, strict=True)}
        return [by_node.get(n.id, True) for n in path[1:]]

    def nodes_to_judge(self) -> list[Node]:
        """The bad-path steps whose verdicts the walks wait on (none: the critique is over)."""
        nodes: dict[int, Node] = {}
        for walk in self.walks:
            node = walk.advance(self.verdicts)
            if node is not None:
                nodes.setdefault(node.id, node)
        if not nodes:
            self.state = TaskState.DONE
        return list(nodes.values())

    def record_reply(self, num_tokens: int, parsed: bool) -> None:
        """Count one verifier reply (its verdict is recorded by `record_verdict`)."""
        self.critique_tokens += num_tokens
        self.critique_requests += 1
        self.unparsed += not parsed

    def record_verdict(self, node: Node, verdict: StepVerdict) -> None:
        self.verdicts[node.id] = verdict.verdict
        self.critiques[node.id] = verdict
        self.verdict_counts[verdict.verdict] += 1
        self.source_counts[verdict.source] += 1

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
            meta = {
                "good_reward": pair.good_reward,
                "bad_reward": pair.bad_reward,
                "divergence_step": pair.divergence,
                "transition_step": walk.transition,
                "transition_source": walk.source,
                "revision_signal": signal,
                "mode": self.config.mode,
                "bad_turns": len(pair.bad) - 1,
                "good_turns": len(pair.good) - 1,
            }
            if self.mistakes is not None:
                meta["mistake_step"] = self.mistakes[i]
            out.append(record("revision", i, splice(header, pair.bad, pair.good, pair.divergence,
                                                    walk.transition, signal,
                                                    self.tree.revision_action), meta))
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
            "transition_sources": [w.source for w in self.walks],
            "bad_path_ends": [len(w.pair.bad) - 1 for w in self.walks],
            "random_steps": self.random_steps,
            **({"mistake_steps": self.mistakes} if self.mistakes is not None else {}),
            "verdicts": {v: self.verdict_counts[v] for v in VERDICTS},
            "verdict_sources": {s: self.source_counts[s] for s in VERDICT_SOURCES},
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


def check_transition_source(config: SearchConfig, make_env: Callable[[], Environment]) -> None:
    """Refuse `transition: oracle` for an environment without mistake labels (an environment is
    built to ask only under that setting)."""
    if config.mode != "agent_r" or config.transition != "oracle":
        return
    env = make_env()
    try:
        labels = env.labels_mistakes
    finally:
        env.close()
    if not labels:
        raise ValueError(
            f"search.transition 'oracle' needs an environment that labels mistakes "
            f"(Environment.label_mistakes); {type(env).__name__} has none: use transition "
            "'model' or 'end'")


def forces_verdicts(config: SearchConfig) -> bool:
    """Whether Phase I under `config` may force verdicts by log-probability."""
    return config.mode == "agent_r" and config.transition == "model" and config.verdict != "parsed"


class _Baseline:
    """The calibration baseline of a run's forced verdicts: the log-probability of each verdict
    (`VERDICTS` order) for the content-free step, asked as the forced verdicts are (after the
    verifier's own greedy reasons, or under `verdict: forced` directly). Asked for when the
    first verdict is forced: a policy that writes all its verdicts never pays for it."""

    def __init__(self, engine: Engine, config: SearchConfig, sampling: SamplingConfig) -> None:
        self.enabled = config.calibrate_verdicts and forces_verdicts(config)
        self.direct = config.verdict == "forced"
        self.engine, self.sampling = engine, sampling
        self.logprobs: list[float] | None = None

    def get(self, calls: Counter, seconds: Counter, prof: Profile, in_flight: int) -> list[float] | None:
        if not self.enabled or self.logprobs is not None:
            return self.logprobs
        prompt = content_free_step(self.direct)
        reply = None
        if not self.direct:
            start = time.perf_counter()
            reply = self.engine.generate([prompt], self.sampling)[0][0].text
            _record_call(prof, seconds, "judge", time.perf_counter() - start, 0, in_flight, 1)
            calls["judge"] += 1
        start = time.perf_counter()
        (choice,) = self.engine.choose([prompt], [forced_prefix(reply)], VERDICT_CHOICES)
        _record_call(prof, seconds, "force", time.perf_counter() - start, 0, in_flight, 1)
        calls["force"] += 1
        self.logprobs = list(choice.logprobs)
        return self.logprobs


def _judge(engine: Engine, judgments: list[tuple[_Job, Node]], config: SearchConfig,
           sampling: SamplingConfig, fits: Callable[[Conversation], bool],
           baseline: _Baseline, calls: Counter, seconds: Counter, prof: Profile,
           in_flight: int) -> None:
    """Give every step in `judgments` a verdict by `config.verdict` (see `agentr.search.critique`):
    one batched `generate` for the reasons, then one batched `choose` for the steps still
    without a verdict, calibrated against `baseline` where it is enabled."""
    direct = config.verdict == "forced"
    with prof.phase("judge.prompts"):
        prompts = [step_conversation(node.path(), node.depth, fits, direct) for _, node in judgments]
    to_force: list[tuple[_Job, Node, Conversation, str | None]] = []
    if direct:
        to_force = [(job, node, prompt, None) for (job, node), prompt in zip(judgments, prompts)]
    else:
        start = time.perf_counter()
        replies = engine.generate(prompts, sampling)
        _record_call(prof, seconds, "judge", time.perf_counter() - start,
                     len({id(job) for job, _ in judgments}), in_flight, len(prompts))
        calls["judge"] += 1
        for (job, node), prompt, (reply, *_) in zip(judgments, prompts, replies):
            verdict = parse_judgment(reply.text)
            job.record_reply(reply.num_tokens, parsed=verdict is not None)
            if verdict is not None:
                job.record_verdict(node, StepVerdict(verdict, "parsed", reply.text))
            elif config.verdict == "parsed":
                job.record_verdict(node, StepVerdict("Uncertain", "none", reply.text))
            else:
                to_force.append((job, node, prompt, reply.text))
    if to_force:
        start = time.perf_counter()
        choices = engine.choose([p for _, _, p, _ in to_force],
                                [forced_prefix(reply) for *_, reply in to_force], VERDICT_CHOICES)
        _record_call(prof, seconds, "force", time.perf_counter() - start,
                     len({id(job) for job, *_ in to_force}), in_flight, len(to_force))
        calls["force"] += 1
        base = baseline.get(calls, seconds, prof, in_flight)
        for (job, node, _, reply), choice in zip(to_force, choices):
            verdict = VERDICTS[calibrated_choice(choice.logprobs, base)]
            job.record_verdict(node, StepVerdict(
                verdict, "forced", reply, dict(zip(VERDICTS, choice.logprobs)),
                None if base is None else dict(zip(VERDICTS, base))))


def _record_call(prof: Profile, seconds: Counter, kind: str, elapsed: float, trees: int,
                 in_flight: int, requests: int | None = None) -> None:
    """Book one engine call of `kind`: its seconds, its requests, and the trees in flight that
    had no part in it (they wait on it)."""
    seconds[kind] += elapsed
    prof.add_time(f"engine.{kind}", elapsed)
    prof.count(f"requests.{kind}", trees if requests is None else requests)
    prof.count(f"idle_tree_seconds.{kind}", (in_flight - trees) * elapsed)


def phase1_report(stats: dict) -> str:
    """A few lines on a finished Phase I: trajectories, verdicts and where t' came from, and
    (with mistake labels) the transition-point accuracy of each rule."""
    sources = ", ".join(f"{k} {v}" for k, v in stats["verdict_sources"].items())
    verdicts = ", ".join(f"{k} {v}" for k, v in stats["verdicts"].items())
    lines = [
        f"Phase I: {stats['trees_searched']} trees, {stats['revision_trajectories']} revision + "
        f"{stats['good_trajectories']} good trajectories, {stats['wall_seconds']:.0f} s",
        f"  verdicts: {verdicts} (by source: {sources}"
        f"{'; forced ones calibrated' if stats.get('calibrate_verdicts') else ''})",
        f"  t' sources: {stats['transition_sources']}; t' histogram: "
        f"{stats['transition_step_histogram']}",
    ]
    accuracy = stats.get("transition_accuracy")
    if accuracy is not None:
        lines.append(f"  t' against the first labelled mistake ({accuracy['pairs_with_mistake']} of "
                     f"{accuracy['pairs']} pairs have one):")
        for rule in ("model", "end", "random"):
            if rule in accuracy and accuracy[rule]["equal"] is not None:
                a = accuracy[rule]
                lines.append(f"    {rule:>6}: equal {a['equal']:.0%}, before {a['before']:.0%}, "
                             f"after {a['after']:.0%}, mean distance {a['mean_distance']:.2f}")
    return "\n".join(lines)


def good_threshold(config: SearchConfig, alpha: float) -> float:
    """The reward a good path needs: `alpha`, or 1 (a perfect path) in mode "optimal"."""
    return 1.0 if config.mode == "optimal" else alpha


def _check_run_settings(out_dir: Path, settings: dict) -> None:
    path = out_dir / "collect.json"
    if path.exists():
        previous = json.loads(path.read_text())
        if previous != settings:
            raise ProvenanceError(
                f"{out_dir} holds Phase I data made with other settings or from another model, "
                f"adapter, environment or split (changed: {', '.join(changed_keys(previous, settings))}); "
                f"resume with the same ones, or start afresh: delete {out_dir} or write elsewhere "
                "(--out_dir of `agentr collect`, trainer.default_root_dir of `agentr fit`)"
            )
    else:
        write_json(path, settings, indent=2)


#: The kinds of batched engine calls of a run (sampled expansions, critiques, forced verdicts).
CALL_KINDS = ("expand", "judge", "force")


def _runs(stats_path: Path, this_run: dict) -> list[dict]:
    """The runs recorded in stats.json, plus `this_run` unless it searched nothing."""
    runs = []
    if stats_path.exists():
        runs = json.loads(stats_path.read_text()).get("runs", [])
    if this_run["trees_searched"] or not runs:  # a replay of finished tasks is no new run
        runs.append(this_run)
    return runs


def placement(steps: Sequence[int], references: Sequence[int | None]) -> dict:
    """How transition points `steps` lie against `references` (the first labelled mistake of
    each pair; None: the pair's bad path has none, left out): the fractions of pairs where they
    are equal, before, after, and the mean absolute distance (all None without a pair)."""
    pairs = [(s, r) for s, r in zip(steps, references, strict=True) if r is not None]
    if not pairs:
        return dict.fromkeys(("equal", "before", "after", "mean_distance"))
    share = lambda hit: round(sum(map(hit, pairs)) / len(pairs), 4)  # noqa: E731
    return {
        "equal": share(lambda p: p[0] == p[1]),
        "before": share(lambda p: p[0] < p[1]),
        "after": share(lambda p: p[0] > p[1]),
        "mean_distance": round(sum(abs(s - r) for s, r in pairs) / len(pairs), 4),
    }


def transition_accuracy(per_task: list[dict], transition: str) -> dict | None:
    """The "transition_accuracy" figures of `stats.json` (see the module doc); None when no task
    has mistake labels."""
    labelled = [s for s in per_task if "mistake_steps" in s]
    if not labelled:
        return None
    gather = lambda key: [x for s in labelled for x in s[key]]  # noqa: E731
    mistakes = gather("mistake_steps")
    rules = {"end": gather("bad_path_ends"), "random": gather("random_steps")}
    if transition == "model":
        rules = {"model": gather("transition_steps"), **rules}
    found = [m for m in mistakes if m is not None]
    return {
        "pairs": len(mistakes),
        "pairs_with_mistake": len(found),
        "mean_mistake_step": round(sum(found) / len(found), 4) if found else None,
        **{rule: placement(steps, mistakes) for rule, steps in rules.items()},
    }


def summarize(per_task: list[dict], transition: str = "model") -> dict:
    """Totals over per-task stats (`transition`: the run's `SearchConfig.transition`)."""
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
        "transition_sources": dict(sorted(Counter(x for s in per_task for x in s["transition_sources"]).items())),
        "verdicts": {v: sum(s["verdicts"][v] for s in per_task) for v in VERDICTS},
        "verdict_sources": {v: sum(s["verdict_sources"][v] for s in per_task) for v in VERDICT_SOURCES},
        "unparsed_verdicts": total("unparsed_verdicts"),
        "env_steps": total("env_steps"),
        "replay_steps": total("replay_steps"),
        "expansions": total("expansions"),
        "duplicates_dropped": total("duplicates"),
        "tokens_generated": total("search_tokens") + total("critique_tokens"),
        "search_tokens": total("search_tokens"),
        "critique_tokens": total("critique_tokens"),
        "critique_requests": total("critique_requests"),
        **({"transition_accuracy": accuracy}
           if (accuracy := transition_accuracy(per_task, transition)) is not None else {}),
    }


@dataclass
class RunCounters:
    """What one process did in one run of the search (ranks' counters are merged)."""

    finished: list[dict]  # the per-task stats of the tasks this run finished
    calls: dict[str, int]  # engine calls by kind ("expand", "judge", "force")
    engine_seconds: dict[str, float]  # engine time by kind of call
    wall_seconds: float
    verdict_baseline: dict[str, float] | None = None  # the content-free step's verdict log-probs


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
    counters = search_tasks(engine, make_env, task_ids, config, out_dir, iteration=iteration,
                            alpha=alpha, seed=seed, progress=progress, profile=profile)
    return write_dataset(out_dir, task_ids, config, [counters], iteration=iteration, alpha=alpha,
                         seed=seed, progress=progress)


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
    # everything that shapes the data (the concurrency bound does not)
    shaping = {k: v for k, v in dataclasses.asdict(config).items() if k != "max_concurrent_trees"}
    _check_run_settings(out_dir, {"config": shaping, "alpha": alpha, "seed": seed, "iteration": iteration,
                                  "provenance": {**policy_provenance(engine), **(provenance or {})}})


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
) -> RunCounters:
    """Search the tasks of `task_ids` not done yet in `out_dir` (prepared), writing each as it ends.

    `claim(task_id)`, when given, is asked before a task starts: False leaves the task to
    another process (it counts as progress here).

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
    started = time.perf_counter()
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
    judge_fits = lambda c: fits(engine, c, judge_limit)  # noqa: E731
    baseline = _Baseline(engine, config, judge_sampling)

    active: list[_Job] = []
    try:
        while todo or active:
            while todo and len(active) < config.max_concurrent_trees:
                task_id = todo.popleft()
                if claim is not None and not claim(task_id):
                    bar.update(1)  # another process searches it
                    continue
                active.append(_Job(task_id, make_env(), config, alpha, seed, iteration, prof))
            prof.count("rounds")
            prof.count("rounds_below_capacity", len(active) < config.max_concurrent_trees)

            expansions: list[tuple[_Job, Node]] = []
            judgments: list[tuple[_Job, Node]] = []
            for job in active:
                if job.state is TaskState.SEARCH:
                    node = job.tree.pending()
                    if node is not None:
                        expansions.append((job, node))
                        continue
                    job.end_search()
                if job.state is TaskState.CRITIQUE:
                    judgments.extend((job, node) for node in job.nodes_to_judge())

            if expansions:
                with prof.phase("expand.prompts"):
                    prompts = [fit_conversation(engine, job.tree.conversation(node), expand_limit)
                               for job, node in expansions]
                # a fresh seed per call, so that rounds do not replay the same random stream
                sampling = dataclasses.replace(expand_sampling, seed=call_seed(seed, calls["expand"]))
                calls["expand"] += 1
                start = time.perf_counter()
                replies = engine.generate(prompts, sampling)
                _record_call(prof, seconds, "expand", time.perf_counter() - start, len(prompts),
                             len(active))
                for (job, node), generations in zip(expansions, replies):
                    job.tree.expand(node, generations)
            if judgments:
                _judge(engine, judgments, config, judge_sampling, judge_fits, baseline, calls,
                       seconds, prof, len(active))

            for job in active:
                if job.state is TaskState.DONE:
                    with prof.phase("write"):
                        finished_now.append(_write_task(job, tasks_dir, trees_dir))
                    written.update(revision=finished_now[-1]["revision"], good=finished_now[-1]["good"])
                    bar.set_postfix(revision=written["revision"], good=written["good"], refresh=False)
                    bar.update(1)
            active = [job for job in active if job.state is not TaskState.DONE]
    finally:
        bar.close()
        for job in active:  # interrupted: release the environments of unfinished trees
            job.tree.close()
        for name in ("prompt_tokens", "cached_prompt_tokens", "generated_tokens", "render_seconds"):
            prof.count(f"engine.{name}", getattr(engine.stats, name) - getattr(stats0, name))

    return RunCounters(finished=finished_now, calls={k: calls[k] for k in CALL_KINDS},
                       engine_seconds={k: seconds[k] for k in CALL_KINDS},
                       wall_seconds=round(time.perf_counter() - started, 3),
                       verdict_baseline=None if baseline.logprobs is None
                       else dict(zip(VERDICTS, baseline.logprobs)))


def write_dataset(out_dir: str | Path, task_ids: Sequence[str], config: SearchConfig,
                  runs: Sequence[RunCounters], *, iteration: int, alpha: float, seed: int,
                  progress: bool = True) -> CollectResult:
    """Write `dataset.jsonl` and `stats.json` from the per-task files of every task (all done).

    `runs`: the counters of the processes that searched in this run (one, or one per rank);
    the run's rates are over the longest of their wall times. `progress`: print the report
    (else log it).
    """
    out_dir = Path(out_dir)
    tasks_dir, trees_dir = out_dir / "tasks", out_dir / "trees"
    per_task = []
    trajectories: list[Trajectory] = []
    for task_id in map(str, task_ids):
        name = task_filename(task_id)
        per_task.append(json.loads((tasks_dir / f"{name}.stats.json").read_text()))
        trajectories.extend(read_jsonl(tasks_dir / f"{name}.jsonl"))
    dataset = write_jsonl_atomic(out_dir / "dataset.jsonl", trajectories)

    finished_now = [stats for run in runs for stats in run.finished]
    wall = max((run.wall_seconds for run in runs), default=0.0)
    stats = summarize(per_task, config.transition)
    this_run = summarize(finished_now) if finished_now else {"trees_searched": 0, "env_steps": 0}
    history = _runs(out_dir / "stats.json", {
        "tasks_resumed": len(per_task) - len(finished_now),
        "trees_searched": this_run["trees_searched"],
        "wall_seconds": round(wall, 3),
        "trees_per_minute": round(60 * this_run["trees_searched"] / wall, 3) if wall > 0 else None,
        "env_steps_per_second": round(this_run["env_steps"] / wall, 3) if wall > 0 else None,
        "engine_calls": {k: sum(run.calls.get(k, 0) for run in runs) for k in CALL_KINDS},
        "engine_seconds": {k: round(sum(run.engine_seconds.get(k, 0.0) for run in runs), 3)
                           for k in CALL_KINDS},
        "ranks": len(runs),
        "verdict_baseline": next((r.verdict_baseline for r in runs if r.verdict_baseline), None),
    })
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


def _write_task(job: _Job, tasks_dir: Path, trees_dir: Path) -> dict:
    """Write one finished task: tree, stats, then its trajectories (the done mark)."""
    name = task_filename(job.task_id)
    trajectories = job.trajectories()
    stats = job.stats(trajectories)
    revisions = [t for t in trajectories if t.kind == "revision"]  # one per walk, in walk order
    pairs = [{"good": walk.pair.good[-1].id, "bad": walk.pair.bad[-1].id,
              "divergence_step": walk.pair.divergence, "transition_step": walk.transition,
              "transition_source": walk.source, "trajectory": revision.id} for walk, revision in zip(job.walks, revisions)]
    tree = {"task_id": job.task_id, "env": job.tree.env_name, "header": job.tree.header,
            "root": job.tree.root.to_dict(),
            "critiques": {i: v.to_dict() for i, v in job.critiques.items()},
            "pairs": pairs}
    write_json(trees_dir / f"{name}.json", tree, separators=(",", ":"))
    write_json(tasks_dir / f"{name}.stats.json", stats)
    write_jsonl_atomic(tasks_dir / f"{name}.jsonl", trajectories)
    return stats
