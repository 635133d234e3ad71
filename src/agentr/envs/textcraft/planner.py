"""The solver behind TextCraft's expert demonstrations and its mistake labels."""

from __future__ import annotations

import math
from collections.abc import Mapping

from agentr.envs.textcraft.recipes import Ingredient, Recipe, RecipeBook, display


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

