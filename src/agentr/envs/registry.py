"""Environments by name: `make_env("textcraft", max_depth=2)`.

The registry maps a name to the import path of its class, so listing names never imports an
optional dependency (ScienceWorld's Java bridge). Your own environment needs no registering:
name it by its import path, `make_env("my_env:CoinEnv")`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from agentr.envs.base import Environment

#: name -> "module:Class". Options of `make_env` go to the class's constructor.
ENVIRONMENTS: dict[str, str] = {
    "textcraft": "agentr.envs.textcraft:TextCraftEnv",
    "sciworld": "agentr.envs.sciworld:ScienceWorldEnv",
    "http": "agentr.envs.http:HTTPEnvironment",
    # make_env("multitask", envs={"textcraft": {"max_depth": 2}, "sciworld": {}})
    "multitask": "agentr.envs.multitask:MultiTaskEnv",
}


def env_class(name: str) -> type[Environment]:
    """The class registered as `name`, or named by its import path "module:Class"."""
    target = ENVIRONMENTS.get(name, name)
    module, _, attribute = target.partition(":")
    if not attribute:
        raise KeyError(f"unknown environment {name!r}; registered: {', '.join(sorted(ENVIRONMENTS))}, "
                       "or your own as \"module:Class\"")
    try:
        cls = getattr(importlib.import_module(module), attribute)
    except (ImportError, AttributeError) as error:
        if name in ENVIRONMENTS:
            raise  # a shipped environment's optional dependency is missing: say which
        raise KeyError(f"environment {name!r}: cannot import {attribute} from {module} ({error})") from None
    if not (isinstance(cls, type) and issubclass(cls, Environment)):
        raise KeyError(f"environment {name!r} is not an agentr.envs.Environment subclass")
    return cls


def make_env(name: str, **kwargs: Any) -> Environment:
    """A new environment `name` built with `kwargs`, e.g. `make_env("textcraft", max_depth=2)`."""
    return env_class(name)(**kwargs)


def split_tasks(
    name: str, split: str, num_tasks: int | None = None, options: dict | None = None
) -> tuple[Callable[[], Environment], list[str]]:
    """A factory of environment `name` (built with `options`) and its first `num_tasks` task
    ids of `split` (all of them when None)."""
    factory = lambda: make_env(name, **(options or {}))  # noqa: E731
    with factory() as probe:
        task_ids = probe.task_ids(split)
    return factory, task_ids[:num_tasks] if num_tasks is not None else task_ids
