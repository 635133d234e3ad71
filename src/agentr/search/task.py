"""One task's way through Phase I: search, then critique, then its records.

A `Phase1Task` holds one task's tree and moves through `TaskState`: SEARCH (MCTS simulations:
it names the next node to expand), CRITIQUE (under `transition: model`, its
`agentr.search.critique.TaskCritique` waits on the policy's verdicts), DONE. The scheduler (`agentr.search.scheduler`) sends the
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

from agentr.envs.base import Environment
from agentr.search.config import SearchConfig
from agentr.search.critique import VERDICT_SOURCES, VERDICTS, TaskCritique
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
        self.critique: TaskCritique | None = None  # from the end of the search on

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
        # the random baseline has its own stream, so that it does not shift the data's draws
        baseline = random.Random(task_seed(self.seed, f"{self.task_id}\x00random-transition"))
        self.critique = TaskCritique(pairs, self.config, self.env, self.task_id,
                                     self.tree.revision_action, baseline)
        self.state = TaskState.CRITIQUE if self.critique.judged else TaskState.DONE

    def nodes_to_judge(self) -> list[Node]:
        """The bad-path steps whose verdicts the critique waits on (none: the task is done)."""
        nodes = self.critique.nodes_to_judge()
        if not nodes:
            self.state = TaskState.DONE
        return nodes

    # ---- results -----------------------------------------------------------------------------
    def trajectories(self) -> list[Trajectory]:
        env, header = self.tree.env_name, self.tree.header

        def record(kind: str, index: int, messages: list[dict], meta: dict) -> Trajectory:
            return Trajectory(id=f"{env}/{self.task_id}/{kind}/{index}", env=env, task_id=self.task_id,
                              iteration=self.iteration, kind=kind, messages=messages, meta=meta)

        critique = self.critique
        out = []
        for i, walk in enumerate(critique.walks):
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
            if critique.mistakes is not None:
                meta["mistake_step"] = critique.mistakes[i]
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
        c, critique = self.tree.counters, self.critique
        walks = critique.walks
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
            "divergence_steps": [w.pair.divergence for w in walks],
            "transition_steps": [w.transition for w in walks],
            "transition_sources": [w.source for w in walks],
            "bad_path_ends": [len(w.pair.bad) - 1 for w in walks],
            "random_steps": critique.random_steps,
            **({"mistake_steps": critique.mistakes} if critique.mistakes is not None else {}),
            "verdicts": {v: critique.verdict_counts[v] for v in VERDICTS},
            "verdict_sources": {s: critique.source_counts[s] for s in VERDICT_SOURCES},
            "unparsed_verdicts": critique.unparsed,
            "expansions": c.expansions,
            "samples": c.samples,
            "duplicates": c.duplicates,
            "env_steps": c.env_steps,
            "replay_steps": c.replay_steps,
            "clones": c.clones,
            "search_tokens": c.tokens,
            "critique_requests": critique.critique_requests,
            "critique_tokens": critique.critique_tokens,
            "seconds": round(time.perf_counter() - self.started, 3),
        }
