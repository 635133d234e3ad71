"""Several environments behind one `Environment`, for multi-task training (WebShop + SciWorld + ...).

Task ids are `"<name>/<task id>"`, e.g. `"textcraft/17"`: the name picks the sub-environment, the
rest is that environment's own id.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from agentr.envs.base import Environment, UnknownTaskError
from agentr.envs.registry import env_class, make_env

#: What `MultiTaskEnv` accepts per name: an instance, a factory, or `make_env` options.
EnvSpec = Environment | Callable[[], Environment] | Mapping[str, Any]

SEPARATOR = "/"


def join_id(name: str, task_id: str) -> str:
    """`("textcraft", "17")` -> `"textcraft/17"`."""
    return f"{name}{SEPARATOR}{task_id}"


def interleave(ids: Mapping[str, list[str]]) -> list[str]:
    """Round-robin over `ids` (name -> that environment's ids), as joined ids.

    Every prefix of the result draws from all names as evenly as their lengths allow, so taking
    the first N tasks gives a mix rather than N tasks of the first environment.
    """
    out: list[str] = []
    longest = max((len(v) for v in ids.values()), default=0)
    for i in range(longest):
        out += [join_id(name, task_ids[i]) for name, task_ids in ids.items() if i < len(task_ids)]
    return out


class MultiTaskEnv(Environment):
    """Several named environments behind one API; task ids are `"<name>/<task id>"`.

    Sub-environments are built on first use, so an instance that plays TextCraft tasks never
    starts ScienceWorld's JVM. `task_ids(split)` interleaves the sub-environments' ids
    round-robin, in the order of `envs`.

    While an episode runs, `instruction`, `name` and `cheap_clone` are those of the active
    sub-environment (the one the last `reset` routed to), so a trajectory records the
    sub-environment's name (the key in `envs`) and its own instruction. They are valid after
    `reset`; before it `name` is "multitask", `cheap_clone` False, and `instruction` raises.

    Args:
        envs: name -> an `Environment`, a zero-argument factory, or `make_env` options: a
            mapping whose optional "env" key names a registered environment (default: the
            name) and whose other keys are its options, e.g.
            `{"textcraft": {"max_depth": 2}, "hard": {"env": "textcraft", "min_depth": 3}}`.
            A clone resets other sub-environments through `spawn()` of a given instance.
    """

    def __init__(self, envs: Mapping[str, EnvSpec]) -> None:
        super().__init__()
        if not envs:
            raise ValueError("MultiTaskEnv needs at least one environment")
        self._factories: dict[str, Callable[[], Environment]] = {}
        self._envs: dict[str, Environment] = {}
        for env_name, spec in envs.items():
            if SEPARATOR in env_name or not env_name:
                raise ValueError(f"environment name {env_name!r} must be non-empty and free of {SEPARATOR!r}")
            if isinstance(spec, Environment):
                self._envs[env_name] = spec
                self._factories[env_name] = spec.spawn
            elif isinstance(spec, Mapping):
                self._factories[env_name] = _registry_factory(env_name, spec)
            else:
                self._factories[env_name] = spec
        self._active: str | None = None

    # ---- routing -----------------------------------------------------------------------------
    @property
    def names(self) -> list[str]:
        """The sub-environments' names, in order."""
        return list(self._factories)

    def split_id(self, task_id: str) -> tuple[str, str]:
        """`"textcraft/17"` -> `("textcraft", "17")`; UnknownTaskError for an unknown name."""
        env_name, sep, sub_id = str(task_id).partition(SEPARATOR)
        if not sep or env_name not in self._factories:
            raise UnknownTaskError(
                f"task id {task_id!r} must be '<name>{SEPARATOR}<task id>' with name one of: "
                f"{', '.join(self._factories)}"
            )
        return env_name, sub_id

    def sub_env(self, env_name: str) -> Environment:
        """The sub-environment `env_name`, built on first use."""
        if env_name not in self._envs:
            if env_name not in self._factories:
                raise KeyError(f"unknown environment {env_name!r}; have: {', '.join(self._factories)}")
            self._envs[env_name] = self._factories[env_name]()
        return self._envs[env_name]

    @property
    def active(self) -> Environment:
        """The sub-environment of the episode in progress."""
        if self._active is None:
            raise RuntimeError("MultiTaskEnv has no active environment: call reset(task_id) first")
        return self._envs[self._active]

    # ---- per-episode attributes (instance properties shadow the base's class constants) ------
    @property  # type: ignore[override]
    def name(self) -> str:
        return self._active if self._active is not None else "multitask"

    @property  # type: ignore[override]
    def cheap_clone(self) -> bool:
        return self._active is not None and self.active.cheap_clone

    @property  # type: ignore[override]
    def labels_mistakes(self) -> bool:
        """Whether every sub-environment labels mistakes (builds them all on first use)."""
        return all(self.sub_env(n).labels_mistakes for n in self._factories)

    @property  # type: ignore[override]
    def revision_action(self) -> str:
        return self.active.revision_action if self._active is not None else Environment.revision_action

    @property
    def instruction(self) -> str:
        """The active sub-environment's instruction (valid after `reset`)."""
        return self.active.instruction

    # ---- the API -----------------------------------------------------------------------------
    def task_ids(self, split: str) -> list[str]:
        self.check_split(split)
        return interleave({n: [str(t) for t in self.sub_env(n).task_ids(split)] for n in self._factories})

    def reset(self, task_id: str) -> str:
        observation = super().reset(task_id)
        # the sub-environment may canonicalise its id (TextCraft: "007" -> "7")
        self.task_id = join_id(self.name, str(self.active.task_id))
        return observation

    def _reset(self, task_id: str) -> str:
        env_name, sub_id = self.split_id(task_id)
        observation = self.sub_env(env_name).reset(sub_id)
        self._active = env_name
        return observation

    def _step(self, action: str) -> tuple[str, float, bool]:
        return self.active.step(action)

    def clone(self) -> MultiTaskEnv:
        """A copy holding a clone of the active sub-environment only; the others are built anew
        on demand (cheap exactly when the active one's clone is)."""
        if self._active is None:
            raise RuntimeError("clone() needs an episode in progress: call reset() first")
        copy = MultiTaskEnv(self._factories)
        copy._envs[self._active] = self.active.clone()
        copy._active = self._active
        copy.task_id, copy.actions, copy.done = self.task_id, list(self.actions), self.done
        return copy

    def expert_actions(self, task_id: str) -> list[str] | None:
        env_name, sub_id = self.split_id(task_id)
        return self.sub_env(env_name).expert_actions(sub_id)

    def label_mistakes(self, task_id: str, actions: Sequence[str]) -> list[bool] | None:
        env_name, sub_id = self.split_id(task_id)
        return self.sub_env(env_name).label_mistakes(sub_id, actions)

    def expert_thought(self, actions: list[str], step: int) -> str:
        return self.active.expert_thought(actions, step)

    @classmethod
    def recorded_options(cls, options: Mapping[str, Any]) -> dict[str, Any]:
        """Each sub-environment given by options is recorded as its own class records them."""
        recorded = dict(options)
        envs = recorded.get("envs")
        if isinstance(envs, Mapping):
            recorded["envs"] = {
                name: env_class(spec.get("env", name)).recorded_options(spec)
                if isinstance(spec, Mapping) else spec
                for name, spec in envs.items()
            }
        return recorded

    def close(self) -> None:
        envs, self._envs, self._active = self._envs, {}, None
        for env in envs.values():
            env.close()


def _registry_factory(env_name: str, spec: Mapping[str, Any]) -> Callable[[], Environment]:
    options = dict(spec)
    registered = options.pop("env", env_name)
    return lambda: make_env(registered, **options)
