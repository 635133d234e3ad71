"""Agent metrics of the paper: success rate, average reward, loops, revision and recovery.

They are plain means over a process's own episodes, computed exactly in Python (k/n, not a
float32 tensor), and never synced across ranks: an evaluation's episodes are all in one place.

- success rate: fraction of episodes whose final reward reaches the success threshold.
- average reward: mean final reward.
- loop count: mean number of *loop turns* per episode (the paper's "repeated action sequences",
  the dead loops of an agent). `loop_count` defines a loop turn precisely: turn t (counting
  environment actions only; revision turns are skipped) is a loop turn when the actions of the n
  turns ending at t equal the n actions right before them, for some block length n >= 1.
  So `A A A A` has 3 loop turns, `A B A B` has 1, `A B A B A B` has 3, `A B C` has 0: every turn
  that continues a cycle already performed once counts once. `loop_lengths` sorts the loop
  turns by that block length (the shortest that matches), like the paper's counts of repeated
  action sequences per length: `A A A A` has three of length 1, `A B A B A B` three of length 2.
- revision reward (`agentr.evaluation.revision_test`): mean final reward of failed
  trajectories continued from a cut point.

Actions are compared after stripping, lower-casing and collapsing whitespace.

`episode_metrics` summarises a set of episodes with 95% intervals (`agentr.intervals`): Wilson for
the success rate when every task has one episode, else a bootstrap over tasks; a bootstrap
over tasks for the average reward. `interval_methods` says which, in words.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence

from agentr.agent.turn import REVISION_ACTION, is_revision
from agentr.intervals import BOOTSTRAP_RESAMPLES, CONFIDENCE, cluster_bootstrap_interval, wilson_interval


def _normalise(actions: Iterable[str]) -> list[str]:
    return [" ".join(a.lower().split()) for a in actions if not is_revision(a)]


def _env_actions(episode) -> list[str]:
    """The episode's actions without its revision turns (by its environment's revision action)."""
    revision_action = getattr(episode, "revision_action", REVISION_ACTION)
    return [a for a in episode.actions if not is_revision(a, revision_action)]


def loop_lengths(actions: Sequence[str]) -> dict[int, int]:
    """Loop turns of one episode by block length: {n: turns that repeat the n actions before}."""
    acts = _normalise(actions)
    lengths: Counter[int] = Counter()
    for t in range(1, len(acts)):
        for n in range(1, (t + 1) // 2 + 1):
            if acts[t - n + 1:t + 1] == acts[t - 2 * n + 1:t - n + 1]:
                lengths[n] += 1
                break
    return dict(sorted(lengths.items()))


def loop_count(actions: Sequence[str]) -> int:
    """Loop turns of one episode: turns that repeat the block of actions right before them."""
    return sum(loop_lengths(actions).values())


def repeat_fraction(actions: Sequence[str]) -> float:
    """Fraction of an episode's actions that repeat an earlier action of the same episode."""
    acts = _normalise(actions)
    if not acts:
        return 0.0
    seen: set[str] = set()
    repeats = 0
    for a in acts:
        repeats += a in seen
        seen.add(a)
    return repeats / len(acts)


def has_revision(episode) -> bool:
    """The episode took at least one revision turn (the revision action Agent-R teaches)."""
    return len(_env_actions(episode)) < len(episode.actions)


def _by_task(episodes: Sequence, value) -> list[list[float]]:
    groups: dict[str, list[float]] = {}
    for e in episodes:
        groups.setdefault(e.task_id, []).append(float(value(e)))
    return list(groups.values())


def _one_per_task(episodes: Sequence) -> bool:
    return len({e.task_id for e in episodes}) == len(episodes)


def episode_metrics(episodes: Sequence) -> dict:
    """The evaluation metrics of `episodes` (objects with `task_id`, `success`, `reward`,
    `actions` and `turns`, e.g. `agentr.agent.Episode`):

    - success_rate, success_rate_ci ([low, high], 95%), avg_reward, avg_reward_ci;
    - loop_count (mean loop turns per episode) and loop_count_by_length ({"n": mean loop turns
      of block length n per episode}; its values sum to loop_count), repeat_fraction, avg_turns;
    - revision_rate: the share of episodes with a revision turn; recovery_rate: the share of
      those that succeeded (None without any).

    No episodes: every number 0, intervals and recovery_rate None.
    """
    if not episodes:
        return {"success_rate": 0.0, "success_rate_ci": None, "avg_reward": 0.0,
                "avg_reward_ci": None, "loop_count": 0.0, "loop_count_by_length": {},
                "repeat_fraction": 0.0, "avg_turns": 0.0, "revision_rate": 0.0,
                "recovery_rate": None}
    n = len(episodes)
    if _one_per_task(episodes):
        success_ci = wilson_interval(sum(bool(e.success) for e in episodes), n)
    else:
        success_ci = cluster_bootstrap_interval(_by_task(episodes, lambda e: e.success))
    by_length: Counter[int] = Counter()
    for e in episodes:
        by_length.update(loop_lengths(_env_actions(e)))
    revised = [e for e in episodes if has_revision(e)]
    return {
        "success_rate": sum(bool(e.success) for e in episodes) / n,
        "success_rate_ci": list(success_ci),
        "avg_reward": sum(float(e.reward) for e in episodes) / n,
        "avg_reward_ci": list(cluster_bootstrap_interval(_by_task(episodes, lambda e: e.reward))),
        "loop_count": sum(loop_count(_env_actions(e)) for e in episodes) / n,
        "loop_count_by_length": {str(k): v / n for k, v in sorted(by_length.items())},
        "repeat_fraction": sum(repeat_fraction(_env_actions(e)) for e in episodes) / n,
        "avg_turns": sum(e.turns for e in episodes) / n,
        "revision_rate": len(revised) / n,
        "recovery_rate": sum(bool(e.success) for e in revised) / len(revised) if revised else None,
    }


def interval_methods(episodes: Sequence) -> dict[str, str]:
    """How `episode_metrics(episodes)` computed its intervals, in words."""
    bootstrap = f"bootstrap over tasks ({BOOTSTRAP_RESAMPLES} resamples, percentile)"
    one_per_task = _one_per_task(episodes)
    return {
        "confidence": f"{CONFIDENCE:.0%}",
        "success_rate": "Wilson (one episode per task)" if one_per_task else
                        f"{bootstrap}: several episodes per task are correlated",
        "avg_reward": bootstrap,
    }
