"""The environment API that every part of agentr runs against.

An environment is a text game: `reset(task_id)` returns the first observation, `step(action)`
returns `(observation, reward, done)`. Search needs to branch an episode: `clone()` returns an
independent copy at the current state. Environments that can copy their state cheaply override
`clone()`; the others inherit the fallback here, which resets a fresh instance and replays the
actions taken since the last reset.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

SPLITS = ("train", "test")


class UnknownTaskError(KeyError):
    """Raised by `reset` for a task id that the environment does not have."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class Environment(ABC):
    """A text environment played in ReAct turns.

    Subclasses implement `_reset`, `_step`, `instruction` and `task_ids`, and set `name`.
    They override `clone` when they can copy their state without replaying (and set
    `cheap_clone = True`), `expert_actions` when they can produce a correct solution (and
    `expert_thought` to explain its steps in demonstrations), and `label_mistakes` (setting
    `labels_mistakes = True`) when they can tell a mistake from a good step: the ground truth
    that Phase I measures transition points against.
    """

    name: ClassVar[str] = "environment"
    #: True when `clone()` copies state directly; False means reset + replay (O(steps)).
    cheap_clone: ClassVar[bool] = False
    #: True when `label_mistakes` labels steps; False means no ground truth for critiques.
    labels_mistakes: ClassVar[bool] = False
    #: The action of agentr's revision turn (`Action: revise`): the agent answers it itself and
    #: never sends it here, so it must not be one of this environment's commands (set another
    #: if it is). See `agentr.agent.turn`.
    revision_action: ClassVar[str] = "revise"

    def __init__(self) -> None:
        self.task_id: str | None = None
        self.actions: list[str] = []  # actions since the last reset, for replay
        self.done = False

    # ---- the API -------------------------------------------------------------------------
    def reset(self, task_id: str) -> str:
        """Start task `task_id`; return the first observation."""
        observation = self._reset(str(task_id))
        self.task_id = str(task_id)
        self.actions = []
        self.done = False
        return observation

    def step(self, action: str) -> tuple[str, float, bool]:
        """Apply `action`; return `(observation, reward, done)`. Never raises on a bad action."""
        if self.task_id is None:
            raise RuntimeError(f"{type(self).__name__}.step() called before reset(task_id)")
        observation, reward, done = self._step(action)
        self.actions.append(action)
        self.done = self.done or done
        return observation, float(reward), bool(done)

    def clone(self) -> Environment:
        """An independent copy at the current state. Default: reset a new instance and replay."""
        if self.task_id is None:
            raise RuntimeError("clone() needs an episode in progress: call reset() first")
        copy = self.spawn()
        copy.reset(self.task_id)
        for action in self.actions:
            copy.step(action)
        return copy

    def spawn(self) -> Environment:
        """A new, un-reset environment with the same configuration (used by the replay clone)."""
        raise NotImplementedError(f"{type(self).__name__} must implement spawn() or clone()")

    def expert_actions(self, task_id: str) -> list[str] | None:
        """A correct action sequence for `task_id`, or None where the environment has no expert."""
        return None

    def label_mistakes(self, task_id: str, actions: Sequence[str]) -> list[bool] | None:
        """Ground truth for critiques: for each of `actions`, played in order from the start of
        `task_id`, whether that step is a mistake; None where the environment has no labels
        (the default). Leaves this environment's own episode untouched."""
        return None

    def expert_thought(self, actions: list[str], step: int) -> str:
        """The thought a demonstration writes before expert action `actions[step]`, called with
        the environment in the state before it. Override for thoughts that track the state;
        this one names the plan's progress."""
        left = len(actions) - step - 1
        if left == 0:
            return f"This is the last step of my plan: {actions[step]}."
        return f"Next step of my plan ({left} more after it): {actions[step]}."

    def close(self) -> None:
        """Release external resources (processes, connections)."""

    @classmethod
    def recorded_options(cls, options: Mapping[str, Any]) -> dict[str, Any]:
        """The constructor `options` as provenance records them (`agentr.provenance`): as
        given. Override where an option names a file whose content makes the tasks."""
        return dict(options)

    # ---- what subclasses provide -----------------------------------------------------------
    @property
    @abstractmethod
    def instruction(self) -> str:
        """The task instruction shown before the first observation: command syntax and one
        short worked example."""

    @abstractmethod
    def task_ids(self, split: str) -> list[str]:
        """The task ids of `split` ("train" or "test"), in a fixed order."""

    @abstractmethod
    def _reset(self, task_id: str) -> str: ...

    @abstractmethod
    def _step(self, action: str) -> tuple[str, float, bool]: ...

    # ---- helpers ---------------------------------------------------------------------------
    @staticmethod
    def check_split(split: str) -> str:
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
        return split

    def __enter__(self) -> Environment:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
