"""Environments: the `Environment` API and the games agentr ships.

`ScienceWorldEnv` needs the optional extra (`pip install agentr[sciworld]`) and Java 17; it is
imported on first use, so `from agentr.envs import TextCraftEnv` works without either.
"""

from agentr.envs.base import Environment, UnknownTaskError
from agentr.envs.http import HTTPEnvError, HTTPEnvironment
from agentr.envs.registry import ENVIRONMENTS, make_env, split_tasks
from agentr.envs.textcraft import TextCraftEnv

__all__ = [
    "ENVIRONMENTS",
    "Environment",
    "HTTPEnvError",
    "HTTPEnvironment",
    "ScienceWorldEnv",
    "TextCraftEnv",
    "UnknownTaskError",
    "make_env",
    "split_tasks",
]


def __getattr__(name: str):
    if name == "ScienceWorldEnv":
        from agentr.envs.sciworld import ScienceWorldEnv

        return ScienceWorldEnv
    raise AttributeError(f"module 'agentr.envs' has no attribute {name!r}")
