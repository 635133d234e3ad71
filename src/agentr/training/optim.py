"""AdamW parameter groups and the warmup + cosine learning-rate factor."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch


def param_groups(named_parameters: Iterable[tuple[str, torch.nn.Parameter]], weight_decay: float) -> list[dict]:
    """Trainable parameters in two AdamW groups: matrices decay, vectors (biases, norms) do not."""
    decay, no_decay = [], []
    for _name, p in named_parameters:
        if p.requires_grad:
            (decay if p.dim() >= 2 else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


def warmup_cosine(step: int, total: int, warmup_ratio: float, min_lr_ratio: float) -> float:
    """The learning-rate factor at optimizer step `step` (0-based) of a `total`-step schedule.

    Linear warmup over `ceil(warmup_ratio * total)` steps to 1, then a cosine to `min_lr_ratio` at
    step `total`; later steps (the data grew past the estimate) stay at `min_lr_ratio`.
    """
    total = max(1, int(total))
    warmup = math.ceil(warmup_ratio * total) if warmup_ratio > 0 else 0
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))
