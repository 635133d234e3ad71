"""The generation callback: owns the engine that Phase I and evaluation sample from."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Literal

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback

from agentr.engines.base import Engine

log = logging.getLogger(__name__)


class GenerationCallback(Callback):
    """Owns one generation engine for the whole fit and serves the current policy from it.

    The engine is built on first use from the LightningModule's base model, and each Phase I
    switches it to the newest LoRA adapter (a fresh adapter request, no weight merging). On GPU,
    vLLM sleeps while the trainer uses the GPU and wakes for generation; on CPU both are no-ops.

    Args:
        engine: "vllm", "hf" (transformers generate) or "auto" (vLLM where installed).
        max_model_len: longest prompt + reply, in tokens.
        kv_cache_gb: vLLM's KV-cache size on CPU, in GB (sets VLLM_CPU_KVCACHE_SPACE).
        gpu_memory_utilization: fraction of GPU memory vLLM may take (it shares the GPU with training).
        max_num_seqs: most sequences vLLM runs at once.
        dtype: weights' dtype for generation.
        seed: engine seed.
    """

    def __init__(
        self,
        engine: Literal["auto", "vllm", "hf"] = "auto",
        max_model_len: int = 4096,
        kv_cache_gb: float = 4.0,
        gpu_memory_utilization: float = 0.3,
        max_num_seqs: int = 128,
        dtype: str = "bfloat16",
        seed: int = 0,
    ) -> None:
        self.kind = engine
        self.engine_kwargs = dict(
            max_model_len=max_model_len,
            kv_cache_gb=kv_cache_gb,
            gpu_memory_utilization=gpu_memory_utilization,
            max_num_seqs=max_num_seqs,
            dtype=dtype,
            seed=seed,
        )
        self._engine: Engine | None = None
        self._model: str | None = None
        self._max_lora_rank = 16
        self._trust_remote_code = False

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._model = pl_module.model_name
        self._max_lora_rank = max(16, int(getattr(pl_module, "lora_rank", 16)))
        self._trust_remote_code = bool(getattr(pl_module, "trust_remote_code", False))

    @property
    def engine(self) -> Engine:
        """The engine, built on first use."""
        if self._engine is None:
            if self._model is None:
                raise RuntimeError("GenerationCallback used before Trainer.fit set it up")
            from agentr.engines import make_engine

            log.info("starting the %s generation engine for %s", self.kind, self._model)
            self._engine = make_engine(
                self.kind,
                self._model,
                max_lora_rank=self._max_lora_rank,
                trust_remote_code=self._trust_remote_code,
                **self.engine_kwargs,
            )
        return self._engine

    def policy(self, adapter: str | Path | None) -> Engine:
        """The engine, awake and generating with `adapter` (None: the base model)."""
        engine = self.engine
        engine.wake_up()
        engine.load_adapter(str(adapter) if adapter is not None else None)
        return engine

    def release(self) -> None:
        """Hand the accelerator back to training."""
        if self._engine is not None:
            self._engine.sleep()

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if self._engine is not None:
            self._engine.close()
            self._engine = None
