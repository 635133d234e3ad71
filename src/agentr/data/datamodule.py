"""The DataModules of agentr's own environments: TextCraft, ScienceWorld, and any served over HTTP.

(Their Phase I and evaluation records name them by this module, so they stay here.)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from agentr.agent.turn import REVISION_ACTION
from agentr.data.base import AgentRDataModule
from agentr.errors import SettingError, check_range

if TYPE_CHECKING:
    from agentr.envs.base import Environment


class TextCraftDataModule(AgentRDataModule):
    """TextCraft (Minecraft crafting) data; see `agentr.envs.TextCraftEnv`.

    Args:
        min_depth: shallowest crafting depth of the goals (TextCraftEnv's option; None: its
            default, 2, or 1 when max_depth is set or split_scheme is "agentgym").
        max_depth: deepest crafting depth of the goals (None: no limit). Small models start on
            easy goals: `max_depth=2`.
        check_output_count: reject crafts that name a wrong output count.
        split_scheme: "agentr" (agentr's task numbering and splits) or "agentgym" (AgentGym's
            numbering and the Agent-R paper's train/test ids; see the README).
        train_goals: explicit train goals ("oak planks", ...), replacing the scheme's train split.
        test_goals: explicit test goals, replacing the scheme's test split.
        goal_order: a JSON file of the goals in id order, as one AgentGym server numbers them
            (written by `agentr textcraft-goals`); needs split_scheme "agentgym" (None: ties
            inside a depth broken by item id).
        **kwargs: `AgentRDataModule`'s options.
    """

    def __init__(self, min_depth: int | None = None, max_depth: int | None = None,
                 check_output_count: bool = False, split_scheme: Literal["agentr", "agentgym"] = "agentr",
                 train_goals: list[str] | None = None, test_goals: list[str] | None = None,
                 goal_order: str | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        check_range("data.min_depth", min_depth, 1, optional=True)
        check_range("data.max_depth", max_depth, 1, optional=True)
        self.min_depth, self.max_depth, self.check_output_count = min_depth, max_depth, check_output_count
        self.split_scheme, self.train_goals, self.test_goals = split_scheme, train_goals, test_goals
        self.goal_order = goal_order

    def make_env(self) -> Environment:
        from agentr.envs.textcraft import TextCraftEnv

        return TextCraftEnv(self.min_depth, self.max_depth, self.check_output_count,
                            split_scheme=self.split_scheme, train_goals=self.train_goals,
                            test_goals=self.test_goals, goal_order=self.goal_order)

    def env_description(self) -> dict:
        """As `AgentRDataModule`'s, with the options recorded as `TextCraftEnv` records them
        (`goal_order` by its goals, not its path)."""
        from agentr.envs.textcraft import TextCraftEnv

        description = super().env_description()
        description["options"] = TextCraftEnv.recorded_options(description["options"])
        return description


class ScienceWorldDataModule(AgentRDataModule):
    """ScienceWorld data (needs `pip install agentr[sciworld]` and Java 17); see `agentr.envs.sciworld`.

    Args:
        tasks: ScienceWorld task names to use (None: all 30).
        train_per_task: train variations per task (None: all).
        test_per_task: test variations per task.
        simplifications: ScienceWorld's simplification string, e.g. "easy".
        step_limit: end an episode after this many moves (None: no limit).
        max_heap: the JVM heap cap.
        **kwargs: `AgentRDataModule`'s options.
    """

    def __init__(self, tasks: list[str] | None = None, train_per_task: int | None = None,
                 test_per_task: int | None = 5, simplifications: str = "", step_limit: int | None = None,
                 max_heap: str = "1g", **kwargs) -> None:
        super().__init__(**kwargs)
        for name, value in (("train_per_task", train_per_task), ("test_per_task", test_per_task),
                            ("step_limit", step_limit)):
            check_range(f"data.{name}", value, 1, optional=True)
        self.env_options = {"tasks": tasks, "train_per_task": train_per_task, "test_per_task": test_per_task,
                            "simplifications": simplifications, "step_limit": step_limit, "max_heap": max_heap}

    def make_env(self) -> Environment:
        from agentr.envs.sciworld import ScienceWorldEnv

        return ScienceWorldEnv(**self.env_options)


def task_id_list(ids: list[str] | str) -> list[str]:
    """Task ids given as a list, or as integer ranges "A-B" (both ends included) and single
    integers, comma-separated: "0-2,7" is ["0", "1", "2", "7"]."""
    if not isinstance(ids, str):
        return [str(i) for i in ids]
    out = []
    for part in filter(None, (p.strip() for p in ids.split(","))):
        first, dash, last = part.partition("-")
        last = last if dash else first
        if not (first.isdigit() and last.isdigit()) or int(last) < int(first):
            raise SettingError(f"task ids {ids!r}: {part!r} is neither an integer nor a range A-B "
                               "with A <= B")
        out += [str(i) for i in range(int(first), int(last) + 1)]
    return out


class HTTPDataModule(AgentRDataModule):
    """Data from an environment served over HTTP (AgentGym protocol); see `agentr.envs.HTTPEnvironment`.

    Args:
        url: the server's base URL, e.g. "http://127.0.0.1:8000".
        env_name: a protocol preset of `agentr.envs.http.PROTOCOLS` (e.g. "webshop"), the
            environment's name on an AgentGym server (None: an agentr server's own, else
            "agentgym").
        train_ids: train task ids (None: asked from an agentr server): a list, or integer ids
            as ranges, both ends included and comma-separated ("200-2199", "0-9,20"), which
            read faster than a list of thousands.
        test_ids: test task ids, as `train_ids`.
        instruction: the task instruction shown before the first observation (None: an agentr
            server's; other servers need it set).
        timeout: seconds to wait for any one answer.
        revision_action: the action of agentr's revision turn (never sent to the server); set
            another where the environment has a `revise` command.
        **kwargs: `AgentRDataModule`'s options.
    """

    def __init__(self, url: str = "http://127.0.0.1:8000", env_name: str | None = None,
                 train_ids: list[str] | str | None = None, test_ids: list[str] | str | None = None,
                 instruction: str | None = None, timeout: float = 60.0,
                 revision_action: str = REVISION_ACTION, **kwargs) -> None:
        super().__init__(**kwargs)
        check_range("data.timeout", timeout, 0, low_open=True)
        self.url, self.env_name, self.instruction, self.timeout = url, env_name, instruction, timeout
        self.revision_action = revision_action
        self.split_ids = None if train_ids is None and test_ids is None else \
            {"train": task_id_list(train_ids or []), "test": task_id_list(test_ids or [])}

    def make_env(self) -> Environment:
        from agentr.envs.http import HTTPEnvironment

        return HTTPEnvironment(self.url, protocol=self.env_name, task_ids=self.split_ids,
                               instruction=self.instruction, timeout=self.timeout,
                               revision_action=self.revision_action)
