"""Warm-start demonstrations: the environment's expert, played by the rules of one turn."""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from typing import TYPE_CHECKING

from agentr.agent.conversation import build_header
from agentr.agent.turn import Reply, format_reply, is_revision, play
from agentr.trajectory import Trajectory

if TYPE_CHECKING:
    from agentr.envs.base import Environment

log = logging.getLogger(__name__)


def expert_trajectories(make_env: Callable[[], Environment], searched: set[str], num: int,
                        seed: int) -> list[Trajectory]:
    """Up to `num` demonstrations from the expert of `make_env()`'s environment, on train tasks.

    Each is the agent's conversation (header, then `Thought: ...\\nAction: ...` replies and
    observations, played by the rules of one turn, `agentr.agent.turn`, with the
    environment's `expert_thought`s) with every assistant turn after the header trained,
    kind "expert", iteration 0. Tasks are drawn (seeded by `seed`) from the environment's whole
    train split, those that Phase I does not search (not in `searched`) first: a warm start that
    memorised the searched tasks would leave MCTS few failures to learn from. Tasks without an
    expert solution, or whose solution does not reach reward 1, are skipped.
    """
    env = make_env()
    ids = [str(t) for t in env.task_ids("train")]
    order = random.Random(seed).sample(ids, len(ids))
    order.sort(key=lambda t: t in searched)  # stable: unsearched tasks first, still shuffled
    out: list[Trajectory] = []
    try:
        for task_id in order:
            if len(out) >= num:
                break
            trajectory = expert_trajectory(env, task_id)
            if trajectory is not None:
                out.append(trajectory)
    finally:
        env.close()
    if len(out) < num:
        log.warning("only %d expert demonstrations from %d train tasks (asked for %d)", len(out), len(ids), num)
    return out


def expert_trajectory(env: Environment, task_id: str) -> Trajectory | None:
    """The expert's demonstration of task `task_id` (None: no solution, or one short of reward 1)."""
    actions = env.expert_actions(task_id)
    if not actions:
        return None
    for action in actions:
        if is_revision(action, env.revision_action):
            raise ValueError(
                f"{env.name} task {task_id}: the expert's action {action!r} is the revision "
                f"action; set {type(env).__name__}.revision_action to a command it does not have")
    observation = env.reset(task_id)
    messages = [{**m, "train": False} for m in build_header(env.instruction, observation)]
    reward = 0.0
    for step, action in enumerate(actions):
        reply = Reply(format_reply(env.expert_thought(actions, step), action), action, trainable=True)
        turn = play(env, reply, reward)
        messages += turn.messages(train=True)
        reward = turn.reward
        if turn.done:
            break
    if reward < 1.0:
        log.warning("%s task %s: the expert's actions end with reward %s; skipped", env.name, task_id, reward)
        return None
    return Trajectory(id=f"{env.name}/{task_id}/expert/0", env=env.name, task_id=str(task_id), iteration=0,
                      kind="expert", messages=messages, meta={"turns": step + 1})
