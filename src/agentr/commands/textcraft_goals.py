"""`agentr textcraft-goals`: the goal order of a running AgentGym TextCraft server, as a file."""

from __future__ import annotations

from agentr.envs.textcraft.goal_order import check_goal_order, fetch_goal_order
from agentr.envs.textcraft.recipes import recipe_book
from agentr.errors import check_range
from agentr.jsonfiles import write_json


def textcraft_goals_command(server: str, out: str = "goals.json", timeout: float = 60.0) -> None:
    """Write the goal of every task id of a running AgentGym TextCraft server, in id order.

    AgentGym orders the goals inside a crafting depth as `os.listdir` lists its recipe files,
    which differs between machines. This asks the server for each id's goal (one instance,
    reset to ids 0 to 543, then closed) and writes them as a JSON list; give the file to
    TextCraft as `goal_order` (with `split_scheme: agentgym`) and agentr's task i is the
    server's task i, so per-id results compare with that machine's.

    Args:
        server: the AgentGym TextCraft server's URL, e.g. http://127.0.0.1:36001.
        out: the JSON file to write.
        timeout: seconds for each request.
    """
    check_range("timeout", timeout, 0, low_open=True)
    book = recipe_book()
    goals = check_goal_order(book, fetch_goal_order(server, len(book.recipes), timeout), server)
    write_json(out, list(goals), indent=1)
    print(f"wrote the goals of {server}'s {len(goals)} task ids to {out}; use it as TextCraft's "
          f"goal_order (with split_scheme agentgym)")
