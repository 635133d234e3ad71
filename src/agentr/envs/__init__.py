"""Environments: the `Environment` API and the games agentr ships."""

from agentr.envs.base import Environment, UnknownTaskError

__all__ = ["Environment", "UnknownTaskError"]
