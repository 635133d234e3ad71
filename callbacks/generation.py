"""The generation callback: owns the engine that Phase I and evaluation sample from."""

from __future__ import annotations

import logging
from pathlib import Path

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback

from agentr.callbacks.driven import check_driven
from agentr.engines.base import Engine
from agentr.engines.config import EngineConfig
from agentr.memory import return_freed_heap

log = logging.getLogger(__name__)


class GenerationCallback(Callback):
    """Owns one generation engine for the whole fit and serves the current policy from it.

    The engine is built on first use from the LightningModule's base model, and each Phase I
    switches it to the newest LoRA adapter (a fresh adapter request). On GPU, vLLM sleeps while
    the trainer uses the GPU and wakes for generation; on CPU both are no-ops, and vLLM serves
    each adapter merged into a copy of the weights (see `EngineConfig.merge_lora`).

    Args:
        engine: which engine and how large (`EngineConfig`); unset `dtype` and
            `gpu_memory_utilization` take the values for an engine sharing its GPU with training.
        seed: the engine's global seed (per-request seeds come from the search and evaluation
            settings).
    """

    def __init__(self, engine: EngineConfig = EngineConfig(), seed: int = 0) -> None:
        self.config = engine
        self.seed = seed
        self._engine: Engine | None = None
        self._module_kwargs: dict = {}

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage == "fit":
            check_driven(trainer, self)
        # The engine serves the module's base model, with room for the module's LoRA rank.
        hparams = pl_module.hparams
        self._module_kwargs = dict(model=hparams.model, trust_remote_code=hparams.trust_remote_code)
        self._lora_rank = int(hparams.lora_r)
        self._base_model = hparams.model

    @property
    def engine(self) -> Engine:
        """The engine, built on first use."""
        if self._engine is None:
            if not self._module_kwargs:
                raise RuntimeError("GenerationCallback used before Trainer.fit set it up")
            from agentr.engines import make_engine

            # vLLM's LoRA slots are sized up front: the smallest >= our rank
            rank = next(r for r in (8, 16, 32, 64, 128, 256, 512) if r >= self._lora_rank)
            self._engine = make_engine(self.config, **self._module_kwargs, seed=self.seed,
                                       shares_gpu=True, max_lora_rank=rank)
            log.info("generation engine: %s for %s", type(self._engine).__name__,
                     self._module_kwargs["model"])
        return self._engine

    def policy(self, weights: str | Path | None) -> Engine:
        """The engine, awake and generating with `weights` (None: the base model).

        `weights` is a LoRA adapter directory, or a whole model directory (full fine-tuning),
        for which the engine is rebuilt on those weights.
        """
        return_freed_heap()  # what training freed, before the engine (re)starts beside it
        if _is_model(weights):
            if self._module_kwargs.get("model") != str(weights):
                self.close()
                self._module_kwargs["model"] = str(weights)
            weights = None
        engine = self.engine
        engine.wake_up()
        engine.load_adapter(str(weights) if weights is not None else None)
        return engine

    def provenance(self, weights: str | Path | None) -> dict:
        """The digests of what `policy(weights)` generates with, without starting the engine
        (`agentr.provenance.policy_provenance` of that engine)."""
        from agentr.engines import resolve_model
        from agentr.provenance import weights_digest

        if _is_model(weights):
            return {"model": weights_digest(weights), "adapter": None}
        if not self._module_kwargs:
            raise RuntimeError("GenerationCallback used before Trainer.fit set it up")
        return {"model": weights_digest(resolve_model(self._base_model)),
                "adapter": weights_digest(weights)}

    def release(self) -> None:
        """Hand the accelerator (and on CPU the memory) back to training."""
        if self._engine is not None:
            self._engine.sleep()
        return_freed_heap()

    def close(self) -> None:
        """Shut the engine down (a later use starts a new one)."""
        if self._engine is not None:
            self._engine.close()
            self._engine = None

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self.close()


def _is_model(weights: str | Path | None) -> bool:
    """`weights` is a whole model directory (full fine-tuning), not a LoRA adapter."""
    return weights is not None and (Path(weights) / "config.json").is_file()
