"""The Hugging Face engine: `transformers` generate, for machines without vLLM.

Same contract as the vLLM engine: conversations are rendered with the model's chat template
(generation prompt appended), batched with left padding, `n` samples per conversation; greedy
decoding when temperature is 0; stop strings cut the text after generation (and end it early).

Sampling is seeded per sample, not per batch: every sample (row) has its own random generator,
seeded from its request's seed, and draws its token as the argmax of the tempered logits plus
Gumbel noise from that generator (the Gumbel-max trick: exactly a draw from the softmax). So a
seeded request gets the same random draws in any batch (its tokens can still differ where padding
changes the logits' rounding, as in vLLM), and seeded requests are still batched.

LoRA adapters load through PEFT; switching adapters unloads the previous one (never merges).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path

from agentr.engines.base import Choice, Conversation, Engine, Generation, SamplingConfig
from agentr.engines.common import (
    best_choice,
    check_adapter,
    check_prompt_length,
    continuation_ids,
    cut_at_stop,
    derive_seed,
    fit_model_len,
    render_prompt_ids,
    request_seed,
)
from agentr.engines.config import DTYPE_ALONE
from agentr.engines.models import resolve_model

log = logging.getLogger(__name__)


def _default_threads() -> int:
    """`OMP_NUM_THREADS` where set (e.g. by a test harness), else every core we may use."""
    if os.environ.get("OMP_NUM_THREADS", "").isdigit():
        return int(os.environ["OMP_NUM_THREADS"])
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


class GumbelSampler:
    """A logits processor that turns greedy decoding into seeded sampling, row by row.

    Row i's scores become `logits / temperatures[i] + g`, with g standard Gumbel noise drawn
    from the row's own generator (seeded `seeds[i]`), one vector per step: their argmax is a
    draw from `softmax(logits / temperature)`, and depends on the row's seed alone, not on the
    other rows of the batch. A row with seed None stays greedy (its scores are left as they are).
    """

    def __init__(self, seeds: Sequence[int | None], temperatures: Sequence[float], device) -> None:
        import torch

        self.temperatures = list(temperatures)
        self.generators = [None if s is None else torch.Generator(device=device).manual_seed(int(s))
                           for s in seeds]

    def __call__(self, input_ids, scores):
        import torch

        scores = scores.float()
        rows = []
        for row, generator, temperature in zip(scores, self.generators, self.temperatures):
            if generator is None:
                rows.append(row)
                continue
            uniform = torch.rand(row.shape[-1], generator=generator, device=row.device,
                                 dtype=torch.float32)
            gumbel = -torch.log(-torch.log(uniform.clamp(min=torch.finfo(torch.float32).tiny)))
            rows.append(row / temperature + gumbel)
        return torch.stack(rows)


class HFEngine(Engine):
    """Generation with `transformers` `generate` (CPU or one GPU).

    Args:
        model: a Hugging Face id, a local model directory or a `.gguf` file.
        max_model_len: longest prompt + reply, in tokens (capped at the model's own limit).
        dtype: weights' dtype ("auto": the model config's, "bfloat16", "float16", "float32").
        seed: seed for sampling when `SamplingConfig.seed` is not given.
        batch_size: rows (samples; conversations when greedy) per `generate` call.
        num_threads: torch CPU threads, set with `torch.set_num_threads` (process-wide). None:
            `OMP_NUM_THREADS` if set, else all cores this process may use. Where other busy
            processes share the cores, fewer threads (or `OMP_WAIT_POLICY=PASSIVE` set before
            Python starts) avoid OpenMP spin-waiting, which can slow generation many times over.
        device: "cuda", "cpu" or None (CUDA where available).
        trust_remote_code: run code shipped with the model (only for models that need it).
    """

    def __init__(
        self,
        model: str,
        max_model_len: int = 4096,
        dtype: str = DTYPE_ALONE,
        seed: int = 0,
        batch_size: int = 16,
        num_threads: int | None = None,
        device: str | None = None,
        trust_remote_code: bool = False,
    ) -> None:
        super().__init__()
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.model_path = resolve_model(model)
        self.num_threads = num_threads or _default_threads()
        torch.set_num_threads(self.num_threads)
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self._tokenizer = AutoTokenizer.from_pretrained(
            self.model_path, trust_remote_code=trust_remote_code)
        self._tokenizer.padding_side = "left"
        if self._tokenizer.pad_token_id is None:
            self._tokenizer.pad_token = self._tokenizer.eos_token
        torch_dtype = dtype if dtype == "auto" else getattr(torch, dtype)
        self.model = AutoModelForCausalLM.from_pretrained(
            self.model_path, dtype=torch_dtype, trust_remote_code=trust_remote_code
        ).to(self.device).eval()
        self._max_model_len = fit_model_len(self.model.config, max_model_len)
        self.seed = seed
        self.batch_size = batch_size
        self.adapter_path: str | None = None

    @property
    def tokenizer(self):
        return self._tokenizer

    @property
    def max_model_len(self) -> int:
        return self._max_model_len

    def generate(
        self, conversations: Sequence[Conversation], sampling: SamplingConfig
    ) -> list[list[Generation]]:
        start = time.perf_counter()
        prompts = [render_prompt_ids(self._tokenizer, c) for c in conversations]
        for ids in prompts:
            check_prompt_length(len(ids), self._max_model_len)
        # One row per sampled draw, each with a seed of its own; greedy draws are identical, so a
        # greedy conversation is one row (seed None), copied n times.
        rows = []  # (conversation, prompt ids, seed, temperature)
        for i, ids in enumerate(prompts):
            temperature = sampling.temperature_of(i)
            if temperature == 0:
                rows.append((i, ids, None, 0.0))
            else:
                seed = self._request_seed(sampling, i)
                rows.extend((i, ids, derive_seed(seed, j), temperature) for j in range(sampling.n))
        samples = []
        for b in range(0, len(rows), self.batch_size):
            batch = rows[b:b + self.batch_size]
            samples.extend(self._generate_rows([r[1] for r in batch], sampling,
                                               [r[2] for r in batch], [r[3] for r in batch]))
        results: list[list[Generation]] = [[] for _ in prompts]
        for (i, _, seed, _), generation in zip(rows, samples):
            results[i].extend([generation] * (sampling.n if seed is None else 1))
        self.stats.requests += len(prompts)
        self.stats.prompt_tokens += sum(map(len, prompts))
        self.stats.generated_tokens += sum(g.num_tokens for gs in results for g in gs)
        self.stats.seconds += time.perf_counter() - start
        return results

    def _request_seed(self, sampling: SamplingConfig, index: int) -> int:
        """The seed of request `index`: `sampling.request_seeds[index]` if given, else derived
        from `sampling.seed` (the engine's own seed where that is None), as vLLM's are."""
        if sampling.request_seeds is not None:
            return sampling.request_seeds[index]
        return request_seed(self.seed if sampling.seed is None else sampling.seed, index)

    def _generate_rows(self, prompts: list[list[int]], sampling: SamplingConfig,
                       seeds: list[int | None], temperatures: list[float]) -> list[Generation]:
        """One generation per prompt: greedy where its seed is None, else sampled at its
        temperature with the generator seeded with it (`GumbelSampler`)."""
        import torch
        from transformers import LogitsProcessorList

        pad = self._tokenizer.pad_token_id
        width = max(map(len, prompts))
        input_ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts])
        attention = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
        max_new_tokens = max(1, min(sampling.max_tokens, self._max_model_len - width))
        kwargs = dict(
            max_new_tokens=max_new_tokens,
            do_sample=False,  # sampled rows take the argmax of logits plus their own noise
            pad_token_id=pad,
            eos_token_id=self._tokenizer.eos_token_id,
            temperature=None,
            top_p=None,
            top_k=None,
        )
        if any(seed is not None for seed in seeds):
            kwargs["logits_processor"] = LogitsProcessorList(
                [GumbelSampler(seeds, temperatures, self.device)])
        if sampling.stop:
            kwargs.update(stop_strings=list(sampling.stop), tokenizer=self._tokenizer)
        with torch.inference_mode():
            output = self.model.generate(
                input_ids=input_ids.to(self.device), attention_mask=attention.to(self.device),
                **kwargs)
        results = []
        for tokens in output[:, width:].tolist():
            tokens, ended = self._until_eos(tokens)
            text = self._tokenizer.decode(tokens, skip_special_tokens=True)
            reply = cut_at_stop(text, sampling.stop)
            # Without an end of turn or a stop string, the sample ran out of tokens.
            cut = not ended and reply == text and len(tokens) >= max_new_tokens
            results.append(Generation(reply, len(tokens), "length" if cut else "stop"))
        return results

    def _until_eos(self, tokens: list[int]) -> tuple[list[int], bool]:
        """The generated tokens up to and including the first end-of-sequence token, and
        whether there was one."""
        eos = self.model.generation_config.eos_token_id
        eos = set(eos if isinstance(eos, list) else [eos, self._tokenizer.eos_token_id])
        for j, t in enumerate(tokens):
            if t in eos:
                return tokens[:j + 1], True
        return tokens, False

    def choose(
        self, conversations: Sequence[Conversation], prefixes: Sequence[str],
        choices: Sequence[str],
    ) -> list[Choice]:
        """See `Engine.choose`: one forward pass per batch of (conversation, choice) rows."""
        start = time.perf_counter()
        rows: list[tuple[list[int], int]] = []  # (context + choice ids, number of choice ids)
        for conversation, prefix in zip(conversations, prefixes, strict=True):
            context, tails = continuation_ids(self._tokenizer, conversation, prefix, choices)
            for tail in tails:
                check_prompt_length(len(context) + len(tail), self._max_model_len)
                rows.append((context + tail, len(tail)))
        scores: list[float] = []
        for b in range(0, len(rows), self.batch_size):
            scores.extend(self._score_batch(rows[b:b + self.batch_size]))
        k = len(choices)
        self.stats.requests += len(conversations)
        self.stats.prompt_tokens += sum(len(ids) for ids, _ in rows)
        self.stats.seconds += time.perf_counter() - start
        return [best_choice(choices, scores[i * k:(i + 1) * k]) for i in range(len(conversations))]

    def _score_batch(self, rows: list[tuple[list[int], int]]) -> list[float]:
        """The summed log-probability of the last `n` tokens of each row, given the rest."""
        import torch

        pad = self._tokenizer.pad_token_id
        width = max(len(ids) for ids, _ in rows)
        keep = max(n for _, n in rows) + 1  # logits only where a choice token is predicted
        input_ids = torch.tensor([[pad] * (width - len(ids)) + ids for ids, _ in rows])
        attention = torch.tensor([[0] * (width - len(ids)) + [1] * len(ids) for ids, _ in rows])
        # positions as in an unpadded pass (left padding would shift them otherwise)
        positions = (attention.cumsum(-1) - 1).clamp(min=0)
        with torch.inference_mode():
            logits = self.model(
                input_ids=input_ids.to(self.device), attention_mask=attention.to(self.device),
                position_ids=positions.to(self.device), logits_to_keep=keep,
            ).logits.float()
        logprobs = torch.log_softmax(logits[:, :-1], dim=-1).cpu()  # predicts the last keep-1
        scores = []
        for row, (ids, n) in enumerate(rows):
            targets = torch.tensor(ids[-n:])
            predicted = logprobs[row, keep - 1 - n:]
            scores.append(float(predicted.gather(-1, targets[:, None]).sum()))
        return scores

    def load_adapter(self, path: str | None) -> None:
        """Generate with the PEFT LoRA adapter in `path` from now on (None: the base model).

        The previous adapter is unloaded first (`PeftModel.unload`, no merging), so the base
        weights stay untouched and adapters never stack.
        """
        from peft import PeftModel

        if path is not None:
            path = str(Path(path).expanduser().resolve())
            check_adapter(path, self.model_path)
        if isinstance(self.model, PeftModel):
            self.model = self.model.unload()
        if path is not None:
            self.model = PeftModel.from_pretrained(self.model, path).to(self.device).eval()
            log.info("HF engine: generating with LoRA adapter %s", path)
        self.adapter_path = path

    def close(self) -> None:
        self.model = None
