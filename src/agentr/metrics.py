"""Agent metrics of the paper, as torchmetrics, so evaluation and training log them alike.

- `SuccessRate`: fraction of episodes whose final reward reaches the success threshold.
- `AverageReward`: mean final reward.
- `LoopCount`: mean number of *loop turns* per episode (the paper's "repeated action sequences",
  the dead loops of an agent). `loop_count` defines a loop turn precisely: turn t (counting
  environment actions only; `wait` turns are skipped) is a loop turn when the actions of the n
  turns ending at t equal the n actions right before them, for some block length n >= 1.
  So `A A A A` has 3 loop turns, `A B A B` has 1, `A B A B A B` has 3, `A B C` has 0: every turn
  that continues a cycle already performed once counts once.
- `RevisionReward`: mean final reward of failed trajectories continued from a cut point (the
  revision test).

Actions are compared after stripping, lower-casing and collapsing whitespace.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torchmetrics import MeanMetric

from agentr.agent.conversation import is_wait


def _normalise(actions: Iterable[str]) -> list[str]:
    return [" ".join(a.lower().split()) for a in actions if not is_wait(a)]


def loop_count(actions: Sequence[str]) -> int:
    """Loop turns of one episode: turns that repeat the block of actions right before them."""
    acts = _normalise(actions)
    count = 0
    for t in range(1, len(acts)):
        for n in range(1, (t + 1) // 2 + 1):
            if acts[t - n + 1:t + 1] == acts[t - 2 * n + 1:t - n + 1]:
                count += 1
                break
    return count


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


class _Mean(MeanMetric):
    """A mean over per-episode values given as a sequence (or tensor)."""

    def update(self, values) -> None:  # type: ignore[override]
        values = torch.as_tensor(values, dtype=torch.float32).flatten()
        if values.numel():
            super().update(values)


class SuccessRate(_Mean):
    """Fraction of successful episodes. `update(successes)`: one bool per episode."""


class AverageReward(_Mean):
    """Mean final reward. `update(rewards)`: one final reward per episode."""


class RevisionReward(_Mean):
    """Mean final reward of the revision test. `update(rewards)`: one per continued episode."""


class LoopCount(_Mean):
    """Mean loop turns per episode (see `loop_count`). `update(action_sequences)`: one sequence
    of actions per episode."""

    def update(self, action_sequences: Sequence[Sequence[str]]) -> None:  # type: ignore[override]
        super().update([loop_count(actions) for actions in action_sequences])


def episode_metrics(episodes: Sequence) -> dict[str, float]:
    """success_rate, avg_reward, loop_count, repeat_fraction, avg_turns and revision_rate (the
    fraction of episodes with at least one revision turn, the `wait` action Agent-R teaches) of
    `episodes` (objects with `success`, `reward`, `actions` and `turns`, e.g. `agentr.agent.Episode`)."""
    if not episodes:
        return {k: 0.0 for k in ("success_rate", "avg_reward", "loop_count", "repeat_fraction",
                                 "avg_turns", "revision_rate")}
    success, reward, loops = SuccessRate(), AverageReward(), LoopCount()
    success.update([e.success for e in episodes])
    reward.update([e.reward for e in episodes])
    loops.update([e.actions for e in episodes])
    return {
        "success_rate": float(success.compute()),
        "avg_reward": float(reward.compute()),
        "loop_count": float(loops.compute()),
        "repeat_fraction": sum(repeat_fraction(e.actions) for e in episodes) / len(episodes),
        "avg_turns": sum(e.turns for e in episodes) / len(episodes),
        "revision_rate": sum(any(is_wait(a) for a in e.actions) for e in episodes) / len(episodes),
    }
