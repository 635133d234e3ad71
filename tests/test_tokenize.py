"""The loss mask, token by token, on SmolLM2's real ChatML template."""

from __future__ import annotations

import pytest

from agentr.data.tokenize import (
    IGNORE_INDEX,
    ChatTemplateError,
    tokenize_all,
    tokenize_messages,
    tokenize_trajectory,
)
from agentr.trajectory import Trajectory


@pytest.fixture(scope="module")
def tokenizer(smollm2_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(smollm2_dir)


def conversation() -> list[dict]:
    """A revision-shaped conversation: header, an untrained bad turn, trained turns, observations."""
    return [
        {"role": "system", "content": "You are an agent.", "train": False},
        {"role": "user", "content": "Craft the goal item.", "train": False},
        {"role": "assistant", "content": "OK", "train": False},
        {"role": "user", "content": "Goal: craft stick.", "train": False},
        {"role": "assistant", "content": "Thought: wrong idea\nAction: get 1 stick", "train": False},
        {"role": "user", "content": "Could not find stick", "train": False},
        {"role": "assistant", "content": "Thought: I realize my approach was flawed.\nAction: revise", "train": True},
        {"role": "user", "content": "OK.", "train": False},
        {"role": "assistant", "content": "Thought: get logs first.\nAction: get 1 oak logs", "train": True},
        {"role": "user", "content": "Got 1 oak logs", "train": False},
    ]


def expected_chatml(tokenizer, messages):
    """ChatML built segment by segment, independently of agentr's span logic.

    Each message is `<|im_start|>role\\n` + content + `<|im_end|>` + `\\n`; a trained assistant
    message trains exactly its content tokens and `<|im_end|>`.
    """
    encode = lambda text: tokenizer(text, add_special_tokens=False)["input_ids"]  # noqa: E731
    start, end = tokenizer.convert_tokens_to_ids(["<|im_start|>", "<|im_end|>"])
    ids, labels = [], []
    for m in messages:
        head = [start, *encode(m["role"] + "\n")]
        body = [*encode(m["content"]), end]
        tail = encode("\n")
        ids += head + body + tail
        labels += [IGNORE_INDEX] * len(head)
        labels += body if m.get("train") else [IGNORE_INDEX] * len(body)
        labels += [IGNORE_INDEX] * len(tail)
    return ids, labels


def test_mask_token_by_token_on_smollm2_chatml(tokenizer):
    messages = conversation()
    ids, labels = tokenize_messages(tokenizer, messages)

    # The ids are exactly what the chat template gives the engines.
    rendered = tokenizer.apply_chat_template([{"role": m["role"], "content": m["content"]} for m in messages])
    rendered = rendered["input_ids"] if hasattr(rendered, "keys") else rendered
    assert ids == list(rendered)

    expected_ids, expected_labels = expected_chatml(tokenizer, messages)
    assert ids == expected_ids
    for t, (got, want) in enumerate(zip(labels, expected_labels, strict=True)):
        assert got == want, f"token {t} {tokenizer.decode([ids[t]])!r}: label {got}, expected {want}"


def test_trained_text_is_reply_plus_end_of_turn_only(tokenizer):
    ids, labels = tokenize_messages(tokenizer, conversation())
    trained = [i for i, label in zip(ids, labels) if label != IGNORE_INDEX]
    assert tokenizer.decode(trained) == (
        "Thought: I realize my approach was flawed.\nAction: revise<|im_end|>"
        "Thought: get logs first.\nAction: get 1 oak logs<|im_end|>"
    )
    # No role header token and no newline after <|im_end|> is ever trained.
    start, end = tokenizer.convert_tokens_to_ids(["<|im_start|>", "<|im_end|>"])
    for t, label in enumerate(labels):
        if label == end:
            assert labels[t + 1] == IGNORE_INDEX  # the "\n" after it
        assert label != start
    assert sum(label == end for label in labels) == 2
    # Labels are aligned with the ids, not shifted.
    assert all(label in (IGNORE_INDEX, i) for i, label in zip(ids, labels))


def test_default_system_prompt_of_the_template_is_never_trained(tokenizer):
    messages = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "Thought: greet\nAction: say hi", "train": True},
    ]
    ids, labels = tokenize_messages(tokenizer, messages)
    text = tokenizer.decode(ids)
    assert "You are a helpful AI assistant named SmolLM" in text  # the template added it
    trained = tokenizer.decode([i for i, label in zip(ids, labels) if label != IGNORE_INDEX])
    assert trained == "Thought: greet\nAction: say hi<|im_end|>"


def test_other_template_with_its_own_end_of_turn(tokenizer):
    """A non-ChatML template: the span logic finds the reply and its `<|endoftext|>` marker."""
    tok = type(tokenizer).from_pretrained(tokenizer.name_or_path)
    tok.chat_template = (
        "{% for m in messages %}[{{ m['role'] }}]\n{{ m['content'] }}"
        "{% if m['role'] == 'assistant' %}<|endoftext|>{% endif %}\n{% endfor %}"
        "{% if add_generation_prompt %}[assistant]\n{% endif %}"
    )
    messages = [{"role": "user", "content": "go"},
                {"role": "assistant", "content": "Action: go", "train": True},
                {"role": "user", "content": "went"}]
    ids, labels = tokenize_messages(tok, messages)
    assert tok.decode([i for i, label in zip(ids, labels) if label != IGNORE_INDEX]) == "Action: go<|endoftext|>"


def test_template_that_rewrites_earlier_turns_is_rejected(tokenizer):
    tok = type(tokenizer).from_pretrained(tokenizer.name_or_path)
    # Renders only the last message in full: no prefix of the conversation is stable.
    tok.chat_template = (
        "{% for m in messages %}{% if loop.last %}{{ m['content'] }}{% else %}{{ m['role'] }}{% endif %}\n"
        "{% endfor %}{% if add_generation_prompt %}>{% endif %}"
    )
    with pytest.raises(ChatTemplateError):
        tokenize_messages(tok, conversation())


def test_tokenize_all_drops_over_long_and_untrained_with_counts(tokenizer):
    def trajectory(i, messages):
        return Trajectory(id=str(i), env="toy", task_id=str(i), iteration=1, kind="good", messages=messages)

    short = conversation()
    long = conversation()
    long[3] = {"role": "user", "content": "word " * 400, "train": False}
    untrained = [dict(m, train=False) for m in conversation()]
    examples, stats = tokenize_all(tokenizer, [trajectory(0, short), trajectory(1, long), trajectory(2, untrained)],
                                   max_length=300)
    assert [e.id for e in examples] == ["0"]
    assert (stats.kept, stats.too_long, stats.untrained) == (1, 1, 1)
    assert stats.trained_tokens == examples[0].num_trained > 0
    assert stats.tokens == len(examples[0]) == len(tokenize_trajectory(tokenizer, trajectory(0, short)))
