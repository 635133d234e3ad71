"""One model trained on several environments at once (the paper: WebShop + SciWorld + TextCraft)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from agentr.data.base import AgentRDataModule
from agentr.envs.multitask import MultiTaskEnv, interleave


class MultiTaskDataModule(AgentRDataModule):
    """Agent-R data from several environments, each described by its own DataModule.

    The children say what to play: their environments (`make_env`, whose experts write their
    own demonstration thoughts) and their tasks (`task_ids`, each with its own `num_tasks` and
    seed).
    This module does everything else with its own options: search, tokenisation, packing,
    validation split and chat mixing. Its environment is a `MultiTaskEnv` whose task ids are
    `"<name>/<task id>"`; trajectories record the child's name as their `env`.

    In a config:

        data:
          class_path: agentr.data.MultiTaskDataModule
          init_args:
            datamodules:
              textcraft: {class_path: agentr.data.TextCraftDataModule, init_args: {max_depth: 2}}
              sciworld: {class_path: agentr.data.ScienceWorldDataModule, init_args: {num_tasks: 100}}

    Args:
        datamodules: name -> child DataModule; or a list, named by the environments they make
            (two children that make the same environment need a mapping).
        **kwargs: `AgentRDataModule`'s options. `num_tasks` here keeps the first `num_tasks` of
            the mixed train ids (the children's ids, interleaved round-robin), so every child
            keeps an even share.
    """

    def __init__(self, datamodules: Mapping[str, AgentRDataModule] | Sequence[AgentRDataModule],
                 **kwargs) -> None:
        super().__init__(**kwargs)
        if not datamodules:
            raise ValueError("MultiTaskDataModule needs at least one child DataModule")
        if isinstance(datamodules, Mapping):
            self.children = dict(datamodules)
        else:
            self.children = _name_by_env(datamodules)

    def make_env(self) -> MultiTaskEnv:
        return MultiTaskEnv({name: child.make_env for name, child in self.children.items()})

    def task_ids(self, split: str) -> list[str]:
        """The children's `task_ids(split)`, interleaved round-robin as `"<name>/<task id>"`."""
        ids = interleave({name: child.task_ids(split) for name, child in self.children.items()})
        if split == "train" and self.num_tasks is not None:
            ids = ids[:self.num_tasks]
        return ids


def _name_by_env(datamodules: Sequence[AgentRDataModule]) -> dict[str, AgentRDataModule]:
    children: dict[str, AgentRDataModule] = {}
    for child in datamodules:
        env = child.make_env()
        try:
            name = env.name
        finally:
            env.close()
        if name in children:
            raise ValueError(f"two child DataModules make {name!r} environments: "
                             "pass datamodules as a mapping name -> DataModule")
        children[name] = child
    return children
