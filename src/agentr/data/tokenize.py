"""Tokenisation with the loss mask: train on exactly the assistant turns flagged `train`.

A conversation is rendered once with the model's own chat template (`apply_chat_template`, the
same text the engines prompt with) and tokenised with character offsets. The trained span of an
assistant turn i is found by rendering two prefixes of the conversation:

    before  = render(messages[:i], add_generation_prompt=True)   ... "<|im_start|>assistant\\n"
    through = render(messages[:i + 1])                             ... "<content><|im_end|>\\n"

The span is `[len(before), len(through.rstrip()))`: the reply's content and the template's
end-of-turn marker (`<|im_end|>` for ChatML, `<|eot_id|>` for Llama 3), never the role header
that the template writes before the reply (at inference the engine writes it, not the model).
Whitespace after the end-of-turn marker (ChatML's trailing newline) is not trained: generation
stops at the marker, and the template writes the newline itself. A token is trained when it
starts inside a span. Both prefixes must be prefixes of the full rendering; a template that
rewrites earlier turns depending on later ones (so that no such prefix exists) is rejected with
an error rather than trained on a wrong mask.

Labels use the Hugging Face convention, aligned with `input_ids` (not shifted): `labels[t]` is
`input_ids[t]` where token t is trained and -100 elsewhere; the model predicts token t from
position t - 1.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from agentr.trajectory import Trajectory

log = logging.getLogger(__name__)

IGNORE_INDEX = -100


class ChatTemplateError(ValueError):
    """The chat template does not render conversations prefix by prefix, so no mask is possible."""


@dataclass
class TokenizedExample:
    """One tokenised conversation: ids, aligned labels (-100 = not trained) and provenance."""

    input_ids: list[int]
    labels: list[int]
    id: str = ""
    kind: str = ""
    task_id: str = ""

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def num_trained(self) -> int:
        return sum(label != IGNORE_INDEX for label in self.labels)


def render(tokenizer, messages: Sequence[dict], add_generation_prompt: bool = False) -> str:
    """`messages` rendered as text by the model's chat template (only role and content are passed)."""
    clean = [{"role": m["role"], "content": m["content"]} for m in messages]
    return tokenizer.apply_chat_template(clean, tokenize=False, add_generation_prompt=add_generation_prompt)


def trained_spans(tokenizer, messages: Sequence[dict]) -> tuple[str, list[tuple[int, int]]]:
    """The full rendering of `messages` and the character spans of its trained assistant turns."""
    text = render(tokenizer, messages)
    spans = []
    for i, message in enumerate(messages):
        if not message.get("train"):
            continue
        if message["role"] != "assistant":
            raise ValueError(f"message {i} is {message['role']!r} but train=true; only assistant turns train")
        before = render(tokenizer, messages[:i], add_generation_prompt=True)
        through = render(tokenizer, messages[: i + 1])
        if not (text.startswith(before) and text.startswith(through) and through.startswith(before)):
            raise ChatTemplateError(
                f"the chat template does not render message {i} as a prefix of the whole conversation; "
                "agentr cannot locate the assistant turn for the loss mask with this template"
            )
        start, end = len(before), len(through.rstrip())
        if end <= start:
            raise ChatTemplateError(f"assistant message {i} renders as empty text")
        spans.append((start, end))
    return text, spans


def tokenize_messages(tokenizer, messages: Sequence[dict]) -> tuple[list[int], list[int]]:
    """`(input_ids, labels)` of a conversation: labels are -100 except on trained tokens."""
    text, spans = trained_spans(tokenizer, messages)
    try:
        encoding = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    except NotImplementedError as e:  # slow (pure Python) tokenizers have no offsets
        raise ChatTemplateError("agentr's loss mask needs a fast tokenizer (character offsets)") from e
    input_ids = list(encoding["input_ids"])
    labels = [IGNORE_INDEX] * len(input_ids)
    k = 0  # spans and tokens are both in text order: one merge-like pass
    for t, (start, _end) in enumerate(encoding["offset_mapping"]):
        while k < len(spans) and start >= spans[k][1]:
            k += 1
        if k == len(spans):
            break
        if spans[k][0] <= start:
            labels[t] = input_ids[t]
    return input_ids, labels


def tokenize_trajectory(tokenizer, trajectory: Trajectory) -> TokenizedExample:
    input_ids, labels = tokenize_messages(tokenizer, trajectory.messages)
    return TokenizedExample(input_ids, labels, id=trajectory.id, kind=trajectory.kind, task_id=str(trajectory.task_id))


@dataclass
class TokenizeStats:
    """What `tokenize_all` kept and dropped."""

    kept: int = 0
    too_long: int = 0
    untrained: int = 0
    tokens: int = 0
    trained_tokens: int = 0


def tokenize_all(
    tokenizer, trajectories: Iterable[Trajectory], max_length: int
) -> tuple[list[TokenizedExample], TokenizeStats]:
    """Tokenise `trajectories`; drop (and count) those over `max_length` tokens or with nothing trained.

    Over-long conversations are dropped whole, never cut: a cut could end inside a turn or drop
    the trained suffix that the trajectory exists for.
    """
    examples, stats = [], TokenizeStats()
    for trajectory in trajectories:
        example = tokenize_trajectory(tokenizer, trajectory)
        if len(example) > max_length:
            stats.too_long += 1
            continue
        if example.num_trained == 0:
            stats.untrained += 1
            continue
        examples.append(example)
        stats.kept += 1
        stats.tokens += len(example)
        stats.trained_tokens += example.num_trained
    if stats.too_long:
        log.warning("dropped %d of %d trajectories longer than max_length=%d tokens",
                    stats.too_long, stats.too_long + stats.kept + stats.untrained, max_length)
    if stats.untrained:
        log.warning("dropped %d trajectories without a trained assistant turn", stats.untrained)
    return examples, stats
