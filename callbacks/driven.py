"""The callbacks that `AgentRIterations` drives refuse a fit without it.

Its own module, so that the driven callbacks and the driver import it and not each other.
"""

from __future__ import annotations

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback


class Driver(Callback):
    """A callback that calls the generation and evaluation callbacks (`AgentRIterations`)."""


def check_driven(trainer: pl.Trainer, callback: Callback) -> None:
    """Fail a fit whose `callback` (generation or evaluation) has no AgentRIterations to call it:
    it would silently do nothing."""
    if not any(isinstance(c, Driver) for c in trainer.callbacks):
        from agentr.errors import SettingError

        raise SettingError(
            f"{type(callback).__name__} is called by agentr.callbacks.AgentRIterations, which is not in "
            "trainer.callbacks: add it (see configs/quickstart.yaml)")
