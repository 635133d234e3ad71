"""The generation engine's settings, one dataclass for `agentr fit`, `collect` and `evaluate`."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

from agentr.errors import SettingError, check_range

KINDS = ("auto", "vllm", "hf")
#: `dtype` and `gpu_memory_utilization` where a config leaves them unset, for an engine alone on
#: its GPU (`agentr collect`, `agentr evaluate`, an engine built directly) ...
DTYPE_ALONE, GPU_MEMORY_ALONE = "auto", 0.9
#: ... and for one that shares its GPU with training (`agentr fit`): training computes in
#: bfloat16, and the trainer keeps most of the memory while the engine sleeps.
DTYPE_SHARED, GPU_MEMORY_SHARED = "bfloat16", 0.3


@dataclass(frozen=True)
class EngineConfig:
    """Which engine generates, and how large it is.

    Attributes:
        kind: "vllm", "hf" (transformers generate) or "auto" (vLLM where installed, else HF).
        max_model_len: longest prompt + reply, in tokens (capped at the model's own limit).
        dtype: weights' dtype for generation ("auto": the checkpoint's, "bfloat16", "float16",
            "float32"). None: "auto" for a command alone on its GPU, "bfloat16" (the dtype
            training computes in) in `agentr fit`.
        kv_cache_gb: vLLM's KV-cache size in GB. None: 4 GB on CPU; on GPU vLLM sizes the cache
            from `gpu_memory_utilization` (see `VLLMEngine`).
        gpu_memory_utilization: fraction of GPU memory vLLM may take. None: 0.9 for a command
            alone on its GPU, 0.3 in `agentr fit`, where training shares the GPU.
        max_num_seqs: most sequences generated at once: vLLM's scheduler limit, the HF
            engine's rows (samples) per `generate` call.
        merge_lora: vLLM serves adapters merged into a copy of the weights, restarting once per
            adapter, instead of through its LoRA kernels. None: on CPU only, where those kernels
            are several times slower than the merged model (bench/results/lora_serving.md).
        cpu_threads: threads generation computes with on CPU: vLLM binds its worker's OpenMP
            threads to this many cores, the HF engine sets torch's thread count. None: vLLM's
            own binding (every core, its engine core running in this process: see
            `agentr.engines.vllm_engine`); for HF,
            `OMP_NUM_THREADS` if set, else every core.

    `kv_cache_gb`, `gpu_memory_utilization` and `merge_lora` are vLLM's alone:
    the HF engine ignores them, so that one config drives either engine (`kind: auto`).
    """

    kind: Literal["auto", "vllm", "hf"] = "auto"
    max_model_len: int = 4096
    dtype: Literal["auto", "bfloat16", "float16", "float32"] | None = None
    kv_cache_gb: float | None = None
    gpu_memory_utilization: float | None = None
    max_num_seqs: int = 128
    merge_lora: bool | None = None
    cpu_threads: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise SettingError(f"engine.kind={self.kind!r} is not an engine: expected one of "
                               f"{', '.join(KINDS)}")
        check_range("engine.max_model_len", self.max_model_len, 1)
        check_range("engine.kv_cache_gb", self.kv_cache_gb, 0, low_open=True, optional=True)
        check_range("engine.gpu_memory_utilization", self.gpu_memory_utilization, 0, 1,
                    low_open=True, optional=True)
        check_range("engine.max_num_seqs", self.max_num_seqs, 1)
        check_range("engine.cpu_threads", self.cpu_threads, 1, optional=True)

    def resolved(self, shares_gpu: bool) -> EngineConfig:
        """These settings with the unset `dtype` and `gpu_memory_utilization` filled in, for an
        engine that shares its GPU with training (`shares_gpu`) or has it alone."""
        return dataclasses.replace(
            self,
            dtype=(DTYPE_SHARED if shares_gpu else DTYPE_ALONE) if self.dtype is None
            else self.dtype,
            gpu_memory_utilization=(GPU_MEMORY_SHARED if shares_gpu else GPU_MEMORY_ALONE)
            if self.gpu_memory_utilization is None else self.gpu_memory_utilization)
