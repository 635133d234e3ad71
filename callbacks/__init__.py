"""Lightning callbacks of agentr, installed as `agentr.callbacks`.

- `GenerationCallback` owns the generation engine (vLLM, or transformers as fallback).
- `AgentRIterations` runs the Agent-R loop: Phase I data per iteration, then its epochs.
- `EvaluationCallback` measures success rate and reward after every iteration.
"""

from agentr.callbacks.evaluation import EvaluationCallback
from agentr.callbacks.generation import GenerationCallback
from agentr.callbacks.iteration import AgentRIterations, PlannedEpoch, WarmStart, epoch_plan

__all__ = [
    "AgentRIterations",
    "EvaluationCallback",
    "GenerationCallback",
    "PlannedEpoch",
    "WarmStart",
    "epoch_plan",
]
