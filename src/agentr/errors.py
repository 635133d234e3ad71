"""The errors agentr reports to a user as one clear line, and the check of numeric settings.

`agentr` (see `agentr.cli`) prints these without a traceback: a `SettingError` exits with 2
(bad input, like a command-line error), the others with 1.
"""

from __future__ import annotations

import math


class SettingError(ValueError):
    """A setting has a value outside its allowed range (raised before any model loads)."""


class ModelNotFoundError(SettingError, FileNotFoundError):
    """A model setting names no model directory, .gguf file or reachable Hugging Face id."""


class ProvenanceError(RuntimeError):
    """An output directory holds results made from something else (another model, adapter,
    environment, tasks or settings) than the run that was asked to continue in it."""


class DirectoryInUseError(RuntimeError):
    """An output directory is being written by another agentr process (`agentr.run_lock`)."""


class NoTrainingData(RuntimeError):
    """A stage produced nothing to train on (e.g. Phase I kept no trajectory)."""


class InfrastructureError(RuntimeError):
    """Too many episodes ended in an environment or engine failure for the result to mean anything."""


def check_range(name: str, value, low: float | None = None, high: float | None = None, *,
                low_open: bool = False, high_open: bool = False, optional: bool = False) -> None:
    """Raise `SettingError` unless `value` lies in the range; `name` is how the user sets it.

    `low`/`high` are inclusive unless `low_open`/`high_open`; `optional` lets None through.
    """
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value) or (
            low is not None and (value <= low if low_open else value < low)) or (
            high is not None and (value >= high if high_open else value > high)):
        raise SettingError(f"{name}={value!r} is out of range: must be {_describe(low, high, low_open, high_open)}"
                           + (" (or null)" if optional else ""))


def _describe(low, high, low_open: bool, high_open: bool) -> str:
    if low is not None and high is not None:
        return f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    if low is not None:
        return f"{'>' if low_open else '>='} {low:g}"
    return f"{'<' if high_open else '<='} {high:g}"
