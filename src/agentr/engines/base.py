"""The generation-engine interface used by search, critique and evaluation."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

#: A chat conversation: a list of {"role": ..., "content": ...} messages.
Conversation = list[dict[str, str]]


@dataclass(frozen=True)
class SamplingConfig:
    """How to sample one batch.

    Attributes:
        n: samples per conversation, drawn in one request.
        temperature: 0 means greedy.
        max_tokens: new tokens per sample.
        stop: strings that end a sample (not included in the text).
        seed: base seed; engines derive per-request seeds from it where they can.
        request_seeds: one seed per conversation of the batch, used as given instead of those
            derived from `seed` (so a conversation's draw does not depend on its batch).
        request_temperatures: one temperature per conversation of the batch, instead of
            `temperature` (0: that conversation is greedy), so that greedy and sampled
            conversations share one batch.
    """

    n: int = 1
    temperature: float = 0.0
    max_tokens: int = 256
    stop: tuple[str, ...] = ()
    seed: int | None = None
    request_seeds: tuple[int, ...] | None = None
    request_temperatures: tuple[float, ...] | None = None

    def temperature_of(self, index: int) -> float:
        """The temperature of conversation `index` of the batch."""
        if self.request_temperatures is not None:
            return self.request_temperatures[index]
        return self.temperature


@dataclass(frozen=True)
class Generation:
    """One sampled reply.

    Attributes:
        text: the reply, without the stop string that ended it.
        num_tokens: tokens generated.
        finish_reason: why the sample ended: "stop" (end of turn or a stop string) or
            "length" (it reached `max_tokens` or the context limit, possibly mid-sentence).
    """

    text: str
    num_tokens: int
    finish_reason: str = "stop"


@dataclass(frozen=True)
class Choice:
    """The scores of a fixed set of continuations of one conversation (see `Engine.choose`).

    Attributes:
        text: the continuation with the highest log-probability (the first one on a tie).
        index: its position in the choices.
        logprobs: the total log-probability of each choice's tokens, in the choices' order.
    """

    text: str
    index: int
    logprobs: tuple[float, ...]


@dataclass
class EngineStats:
    """Counters an engine keeps across calls.

    Attributes:
        requests: conversations sent.
        prompt_tokens: prompt tokens of those requests.
        cached_prompt_tokens: prompt tokens served from the prefix cache rather than computed
            (0 where the engine does not report it).
        generated_tokens: tokens sampled.
        seconds: time inside `generate` and `choose`.
        render_seconds: the part of `seconds` spent rendering and tokenising prompts (0 where
            the engine does not report it).
    """

    requests: int = 0
    prompt_tokens: int = 0
    cached_prompt_tokens: int = 0
    generated_tokens: int = 0
    seconds: float = 0.0
    render_seconds: float = 0.0


class Engine(ABC):
    """Generates assistant replies for a batch of conversations.

    Every engine renders conversations with the model's own chat template (with the generation
    prompt appended), so search, evaluation and training see identical text.
    """

    def __init__(self) -> None:
        self.stats = EngineStats()

    @property
    @abstractmethod
    def tokenizer(self):
        """The model's Hugging Face tokenizer."""

    @property
    @abstractmethod
    def max_model_len(self) -> int:
        """The longest prompt + reply, in tokens, that the engine accepts."""

    @abstractmethod
    def generate(
        self, conversations: Sequence[Conversation], sampling: SamplingConfig
    ) -> list[list[Generation]]:
        """`sampling.n` replies for each conversation, in input order."""

    @abstractmethod
    def choose(
        self, conversations: Sequence[Conversation], prefixes: Sequence[str],
        choices: Sequence[str],
    ) -> list[Choice]:
        """Score `choices` as continuations of each conversation's partial assistant reply.

        Conversation i is rendered for generation (chat template plus generation prompt), then
        continued with `prefixes[i]` as the start of the assistant's reply (not a new turn).
        Each choice is scored by the summed log-probability of its tokens after that text, the
        tokens being those of `prefix + choice` (see `agentr.engines.common.continuation_ids`).
        No sampling: the result depends on the weights and the text only.
        """

    @abstractmethod
    def load_adapter(self, path: str | None) -> None:
        """Generate with the LoRA adapter in directory `path` from now on (None: the base model)."""

    def sleep(self) -> None:
        """Free accelerator memory for training (no-op where not supported)."""

    def wake_up(self) -> None:
        """Undo `sleep()`."""

    def close(self) -> None:
        """Release the engine's resources."""

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def count_tokens(self, conversation: Conversation) -> int:
        """Prompt length in tokens of `conversation` rendered for generation."""
        ids = self.tokenizer.apply_chat_template(
            conversation, add_generation_prompt=True, tokenize=True
        )
        if isinstance(ids, dict) or hasattr(ids, "input_ids"):
            ids = ids["input_ids"]
        return len(ids)
