"""TextCraft's tasks: goals, their task ids, their fixed splits and their first observations."""

from __future__ import annotations

import functools
import hashlib
import random
from dataclasses import dataclass
from typing import Literal

from agentr.envs.base import UnknownTaskError
from agentr.envs.textcraft.recipes import Recipe, RecipeBook, display, recipe_book
from agentr.errors import SettingError

#: ADaPT's cap on distractor recipes per task.
MAX_DISTRACTORS = 10
#: ADaPT's cap on recipes sampled per ingredient when collecting distractor candidates.
DISTRACTORS_PER_INGREDIENT = 10
#: Test goals per depth (the default goal set, depths >= 2, has exactly 100 of them).
TEST_QUOTA = {1: 30, 2: 69, 3: 28, 4: 3}

#: How task ids name goals: "agentr" (ADaPT's order, agentr's splits) or "agentgym" (AgentGym's
#: order, the Agent-R paper's splits); see `TextCraftEnv`.
SplitScheme = Literal["agentr", "agentgym"]
SPLIT_SCHEMES: tuple[str, ...] = ("agentr", "agentgym")


def _ids(*runs: tuple[int, int]) -> frozenset[str]:
    return frozenset(str(i) for start, stop in runs for i in range(start, stop))


#: The Agent-R paper's TextCraft test ids (AgentGym numbering), as listed in the official
#: repository (bytedance/Agent-R, mcts_utils/textcraft/textcraft_test.json): 100 ids, 31/41/25/3
#: goals of depth 1/2/3/4.
AGENTGYM_TEST_IDS = _ids((0, 31), (140, 181), (420, 445), (533, 536))
#: The paper's TextCraft train ids (ibid., textcraft_train_clean.json): 374 ids from 31 to 537,
#: none of them a test id.
AGENTGYM_TRAIN_IDS = _ids(
    (31, 140), (181, 184), (185, 195), (196, 216), (217, 223), (224, 229), (230, 239),
    (240, 243), (244, 254), (255, 265), (266, 287), (288, 302), (303, 323), (324, 362),
    (363, 376), (377, 381), (383, 385), (386, 404), (405, 420), (445, 447), (448, 453),
    (455, 456), (459, 460), (462, 465), (466, 467), (469, 473), (475, 476), (477, 478),
    (480, 483), (484, 485), (489, 490), (491, 493), (495, 497), (501, 503), (504, 505),
    (506, 507), (510, 512), (513, 515), (517, 519), (520, 521), (523, 524), (528, 529),
    (531, 533), (537, 538),
)  # fmt: skip


def _stable_key(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Task:
    task_id: str
    goal: str
    depth: int
    observation: str


class TaskSet:
    """Goals, their task ids, their fixed splits, and their first observations.

    `scheme` "agentr": ids follow `book.goals` (ADaPT's order, deepest first); within each depth
    the goals with the smallest SHA-256 of their name are test (`TEST_QUOTA`), the rest train.
    `scheme` "agentgym": id i is entry i of the craftable items sorted by crafting depth,
    shallowest first, then by item id (AgentGym sorts by depth only, so its order within a
    depth is the file system's), or `goal_order`, the goals in id order of one AgentGym server
    (as `load_goal_order` returns them); the splits are the Agent-R paper's id lists, and the
    ids in neither list belong to no split.
    """

    def __init__(
        self,
        book: RecipeBook,
        scheme: SplitScheme = "agentr",
        goal_order: tuple[str, ...] | None = None,
    ) -> None:
        if scheme not in SPLIT_SCHEMES:
            raise ValueError(
                f"TextCraft split_scheme={scheme!r}; expected one of {', '.join(SPLIT_SCHEMES)}"
            )
        if goal_order is not None and scheme != "agentgym":
            raise SettingError(
                f"TextCraft goal_order is AgentGym's numbering: it needs split_scheme='agentgym', "
                f"not {scheme!r}"
            )
        self.book = book
        self.scheme = scheme
        self.split_of: dict[str, str] = {}
        if scheme == "agentgym":
            self.goals = goal_order if goal_order is not None else tuple(
                sorted(book.recipes, key=lambda item: (book.depth(item), item))
            )
            self.split_of.update(dict.fromkeys(AGENTGYM_TRAIN_IDS, "train"))
            self.split_of.update(dict.fromkeys(AGENTGYM_TEST_IDS, "test"))
        else:
            self.goals = book.goals
            by_depth: dict[int, list[int]] = {}
            for index, goal in enumerate(self.goals):
                by_depth.setdefault(book.depth(goal), []).append(index)
            for depth, indices in by_depth.items():
                quota = TEST_QUOTA.get(depth, round(len(indices) * 100 / 419))
                ranked = sorted(indices, key=lambda i: _stable_key(self.goals[i]))
                test = set(ranked[:quota])
                for index in indices:
                    self.split_of[str(index)] = "test" if index in test else "train"
        self.index_of: dict[str, int] = {goal: index for index, goal in enumerate(self.goals)}
        self._tasks: dict[str, Task] = {}

    def __len__(self) -> int:
        return len(self.goals)

    def canonical(self, task_id: str) -> str:
        text = str(task_id).strip()
        if not text.isdigit() or int(text) >= len(self.goals):
            raise UnknownTaskError(
                f"unknown TextCraft task id {task_id!r}: task ids are the strings "
                f"'0' to '{len(self.goals) - 1}' (see TextCraftEnv.task_ids('train'|'test'))"
            )
        return str(int(text))

    def task(self, task_id: str) -> Task:
        task_id = self.canonical(task_id)
        task = self._tasks.get(task_id)
        if task is None:
            goal = self.goals[int(task_id)]
            task = Task(task_id, goal, self.book.depth(goal), self._first_observation(goal))
            self._tasks[task_id] = task
        return task

    def tree_recipes(self, goal: str) -> list[Recipe]:
        """Every recipe reachable from `goal` (all alternatives), in first-visit order."""
        seen_names: set[str] = set()
        seen_texts: set[str] = set()
        out: list[Recipe] = []
        stack = [goal]
        while stack:
            name = stack.pop()
            if name in seen_names:
                continue
            seen_names.add(name)
            for recipe in self.book.recipes_for(name):
                if recipe.text not in seen_texts:
                    seen_texts.add(recipe.text)
                    out.append(recipe)
                stack.extend(i.name for i in reversed(recipe.inputs))
        return out

    def _first_observation(self, goal: str) -> str:
        rng = random.Random(f"agentr-textcraft:{goal}")  # str seeds hash with SHA-512: stable
        tree = self.tree_recipes(goal)
        tree_texts = sorted({r.text for r in tree})
        ingredient_names = sorted({i.name for r in tree for i in r.inputs})
        candidates: set[str] = set()
        for name in ingredient_names:
            uses = self.book.uses.get(name, ())
            candidates.update(rng.sample(uses, min(len(uses), DISTRACTORS_PER_INGREDIENT)))
        distractors = sorted(candidates - set(tree_texts))
        lines = tree_texts + rng.sample(distractors, min(len(distractors), MAX_DISTRACTORS))
        rng.shuffle(lines)
        return "Crafting commands:\n{}\n\nGoal: craft {}.".format("\n".join(lines), display(goal))


@functools.lru_cache(maxsize=4)
def task_set(
    recipe_dir: str | None = None,
    scheme: SplitScheme = "agentr",
    goal_order: tuple[str, ...] | None = None,
) -> TaskSet:
    return TaskSet(recipe_book(recipe_dir), scheme, goal_order)
