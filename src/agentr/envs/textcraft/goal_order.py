"""A goal order: the goal of each TextCraft task id, as one AgentGym server numbers them.

AgentGym's TextCraft server sorts its goals by crafting depth and leaves the order inside a
depth to `os.listdir`, which differs between machines. `fetch_goal_order` asks a running server
for the goal of every id; the file written from it (`agentr textcraft-goals`, a JSON list of
goals in id order) is what `TextCraftEnv(split_scheme="agentgym", goal_order=PATH)` reads with
`load_goal_order`, so that agentr's task i is that server's task i.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

from agentr.envs.http import HTTPEnvError, HTTPEnvironment
from agentr.envs.textcraft.recipes import RecipeBook, display, item_id
from agentr.errors import SettingError

#: What precedes the goal on the last line of a TextCraft first observation (ADaPT's format).
GOAL_LINE = "Goal: craft "


def goal_of_observation(observation: str) -> str | None:
    """The goal's item id named by a first observation (`...Goal: craft oak planks.`), or None."""
    last = observation.strip().splitlines()[-1:] or [""]
    if not last[0].startswith(GOAL_LINE):
        return None
    return item_id(last[0][len(GOAL_LINE) :].strip().removesuffix("."))


def fetch_goal_order(url: str, count: int, timeout: float = 60.0) -> list[str]:
    """The goal (item id) of ids 0 to `count` - 1 on the TextCraft server at `url`, in id order:
    one instance is created, reset to each id in turn, and closed."""
    env = HTTPEnvironment(url, protocol="textcraft", task_ids={"train": [], "test": []},
                          instruction="", timeout=timeout)
    try:
        goals = []
        for task_id in range(count):
            observation = env.reset(str(task_id))
            goal = goal_of_observation(observation)
            if goal is None:
                raise HTTPEnvError(
                    f"{env.url}: the first observation of id {task_id} names no goal (no "
                    f"{GOAL_LINE!r} line): is this a TextCraft server? It answered {observation[-200:]!r}"
                )
            goals.append(goal)
        return goals
    finally:
        env.close()


def check_goal_order(book: RecipeBook, goals: Sequence[str], source: str) -> tuple[str, ...]:
    """`goals` (item ids) as a tuple, after checking that they are every craftable item of
    `book` once, shallowest depth first (AgentGym's sort); `source` names them in the
    `SettingError`s."""
    ids = tuple(goals)
    if len(ids) != len(book.recipes):
        raise SettingError(
            f"goal_order {source}: lists {len(ids)} goals; AgentGym's TextCraft numbers "
            f"{len(book.recipes)}, one per craftable item"
        )
    first_id: dict[str, int] = {}
    for index, name in enumerate(ids):
        if name not in book.recipes:
            raise SettingError(f"goal_order {source}: id {index}, {name!r}, is not a craftable item")
        if name in first_id:
            raise SettingError(
                f"goal_order {source}: {display(name)!r} is listed twice (ids {first_id[name]} "
                f"and {index})"
            )
        first_id[name] = index
        if index and book.depth(name) < book.depth(ids[index - 1]):
            raise SettingError(
                f"goal_order {source}: id {index}, {display(name)!r}, has depth "
                f"{book.depth(name)} after depth {book.depth(ids[index - 1])}; AgentGym numbers "
                "goals shallowest first (was it written from an AgentGym TextCraft server?)"
            )
    return ids


def read_goal_order(path: str | os.PathLike) -> list[str]:
    """The goals of a goal-order file (a JSON list of names or item ids), as item ids."""
    try:
        with open(path, encoding="utf-8") as f:
            goals = json.load(f)
    except (OSError, ValueError) as error:
        raise SettingError(f"goal_order {path}: cannot read it ({error})") from None
    if not isinstance(goals, list) or not all(isinstance(g, str) for g in goals):
        raise SettingError(f"goal_order {path}: not a JSON list of goal names")
    return [item_id(goal) for goal in goals]


def load_goal_order(book: RecipeBook, path: str | os.PathLike) -> tuple[str, ...]:
    """A goal-order file's goals, checked against `book` (`check_goal_order`)."""
    return check_goal_order(book, read_goal_order(path), str(path))
