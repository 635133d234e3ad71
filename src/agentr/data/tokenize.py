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

An over-long conversation is trimmed the way the agent's prompt is at inference
(`truncate_history`): the header stays and the oldest turn pairs after it go first, here only
while they are untrained (a revision trajectory's bad prefix), so nothing trained is cut and no
turn is split. What still does not fit is dropped. `tokenize_all` counts both.

Labels use the Hugging Face convention, aligned with `input_ids` (not shifted): `labels[t]` is
`input_ids[t]` where token t is trained and -100 elsewhere; the model predicts token t from
position t - 1.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from agentr.agent.conversation import HEADER_LEN
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


def trim_to_fit(tokenizer, trajectory: Trajectory, max_length: int) -> tuple[TokenizedExample, int]:
    """The trajectory tokenised, with the fewest oldest untrained turn pairs after the header
    dropped that make it fit `max_length` tokens, and how many pairs were dropped. It may still
    be too long (the header and the trained turns alone do not fit)."""
    example = tokenize_trajectory(tokenizer, trajectory)
    messages = trajectory.messages
    droppable = 0  # untrained (assistant, observation) pairs right after the header
    while (HEADER_LEN + 2 * droppable + 1 < len(messages)
           and messages[HEADER_LEN + 2 * droppable]["role"] == "assistant"
           and not messages[HEADER_LEN + 2 * droppable].get("train")):
        droppable += 1
    if len(example) <= max_length or droppable == 0:
        return example, 0

    def without(pairs: int) -> TokenizedExample:
        kept = messages[:HEADER_LEN] + messages[HEADER_LEN + 2 * pairs:]
        return tokenize_trajectory(tokenizer, _with_messages(trajectory, kept))

    # The length falls as pairs go: binary search for the fewest that make it fit.
    low, high, best = 1, droppable, without(droppable)
    if len(best) > max_length:
        return best, droppable
    dropped = droppable
    while low < high:
        middle = (low + high) // 2
        candidate = without(middle)
        if len(candidate) <= max_length:
            high, dropped, best = middle, middle, candidate
        else:
            low = middle + 1
    return best, dropped


def _with_messages(trajectory: Trajectory, messages: list[dict]) -> Trajectory:
    return Trajectory(id=trajectory.id, env=trajectory.env, task_id=trajectory.task_id,
                      iteration=trajectory.iteration, kind=trajectory.kind, messages=messages,
                      meta=trajectory.meta)


@dataclass
class TokenizeStats:
    """What `tokenize_all` kept, trimmed and dropped.

    Attributes:
        kept: trajectories kept (trimmed ones included).
        trimmed: kept trajectories whose oldest untrained turns were dropped to fit.
        trimmed_turns: turn pairs dropped from them.
        too_long: dropped: over `max_length` even with every untrained turn after the header gone.
        untrained: dropped: no trained assistant turn.
        tokens: tokens of the kept trajectories.
        trained_tokens: trained tokens of the kept trajectories.
    """

    kept: int = 0
    trimmed: int = 0
    trimmed_turns: int = 0
    too_long: int = 0
    untrained: int = 0
    tokens: int = 0
    trained_tokens: int = 0


def tokenize_all(
    tokenizer, trajectories: Iterable[Trajectory], max_length: int
) -> tuple[list[TokenizedExample], TokenizeStats]:
    """Tokenise `trajectories`, trimming over-long ones (`trim_to_fit`); drop (and count) those
    that still exceed `max_length` tokens or have nothing trained."""
    examples, stats = [], TokenizeStats()
    for trajectory in trajectories:
        example, dropped = trim_to_fit(tokenizer, trajectory, max_length)
        if len(example) > max_length:
            stats.too_long += 1
            continue
        if example.num_trained == 0:
            stats.untrained += 1
            continue
        examples.append(example)
        stats.kept += 1
        stats.trimmed += dropped > 0
        stats.trimmed_turns += dropped
        stats.tokens += len(example)
        stats.trained_tokens += example.num_trained
    total = stats.kept + stats.too_long + stats.untrained
    if stats.trimmed:
        log.info("trimmed %d of %d trajectories to max_length=%d tokens (%d oldest untrained turns)",
                 stats.trimmed, total, max_length, stats.trimmed_turns)
    if stats.too_long:
        log.warning("dropped %d of %d trajectories longer than max_length=%d tokens even without "
                    "their untrained turns", stats.too_long, total, max_length)
    if stats.untrained:
        log.warning("dropped %d trajectories without a trained assistant turn", stats.untrained)
    return examples, stats
