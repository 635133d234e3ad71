"""One task's way through Phase I: search, then critique, then its records.

A `Phase1Task` holds one task's tree and moves through `TaskState`: SEARCH (MCTS simulations:
it names the next node to expand), CRITIQUE (under `transition: model`, the policy judges the
steps its bad paths' walks wait on), DONE. The scheduler (`agentr.search.scheduler`) sends the
requests of every task in flight to the engine together and hands the replies back. A finished
task turns into its trajectories (revision ones first, in the seeded pair order, then good
ones, shortest first) and its counters.

Every random choice of a task (UCT ties, the pair shuffle, revision signals, the random
baseline of the accuracy figures) draws from `random.Random` seeded by a stable hash of (seed,
task id), so a task's data does not depend on which tasks shared a batch.
"""

from __future__ import annotations

import enum
import hashlib
import random
import time
from collections import Counter
from collections.abc import Callable

from agentr.agent.turn import is_revision
from agentr.envs.base import Environment
from agentr.search.config import SearchConfig
from agentr.search.critique import VERDICT_SOURCES, VERDICTS, CritiqueWalk, StepVerdict
from agentr.search.mcts import Node, SearchTree
from agentr.search.pairing import good_paths, leaf_paths, make_pairs
from agentr.search.splicing import draw_signal, good_conversation, splice
from agentr.timing import NO_PROFILE, Profile
from agentr.trajectory import Trajectory


def task_seed(seed: int, task_id: str) -> int:
    """A stable per-task seed (Python's `hash()` of strings changes between processes)."""
    digest = hashlib.sha256(f"{seed}\x00{task_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


def good_threshold(config: SearchConfig, alpha: float) -> float:
    """The reward a good path needs: `alpha`, or 1 (a perfect path) in mode "optimal"."""
    return 1.0 if config.mode == "optimal" else alpha


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


class TaskState(enum.Enum):
    """Where a task is in Phase I: each round, the scheduler asks every task in flight for the
    engine requests of its state."""

    SEARCH = "search"  # MCTS simulations: its next node to expand
    CRITIQUE = "critique"  # the policy judges its bad paths' steps (transition "model")
    DONE = "done"  # written; leaves the round


class Phase1Task:
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
