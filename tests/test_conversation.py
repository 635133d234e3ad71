"""The conversation format: header and truncation (a turn's rules: tests/test_turn.py)."""

import pytest

from agentr.agent import HEADER_LEN, SYSTEM_PROMPT, build_header, truncate_history


def test_header():
    header = build_header("Craft things.", "Goal: craft stick.")
    assert [m["role"] for m in header] == ["system", "user", "assistant", "user"]
    assert len(header) == HEADER_LEN
    assert header[0]["content"] == SYSTEM_PROMPT
    assert header[2]["content"] == "OK"
    assert header[3]["content"] == "Goal: craft stick."


def _conversation(turns: int) -> list[dict]:
    messages = build_header("instruction " * 5, "first observation")
    for i in range(turns):
        messages += [{"role": "assistant", "content": f"Action: step {i}"},
                     {"role": "user", "content": f"observation {i}"}]
    return messages


def _words(messages):
    return sum(len(m["content"].split()) for m in messages)


def test_truncation_drops_oldest_pairs_and_never_the_header():
    messages = _conversation(10)
    limit = _words(messages) - 7  # forces dropping a few pairs
    kept = truncate_history(messages, _words, limit)
    assert _words(kept) <= limit
    assert kept[:HEADER_LEN] == messages[:HEADER_LEN]
    assert kept[-2:] == messages[-2:]  # the newest turn stays
    dropped = (len(messages) - len(kept)) // 2
    assert dropped >= 1
    assert kept[HEADER_LEN]["content"] == f"Action: step {dropped}"  # oldest went first
    assert messages == _conversation(10)  # the input is not modified


def test_truncation_is_a_no_op_when_it_fits():
    messages = _conversation(3)
    assert truncate_history(messages, _words, 10_000) == messages


def test_truncation_raises_when_the_header_alone_is_too_long():
    messages = _conversation(3)
    with pytest.raises(ValueError, match="header"):
        truncate_history(messages, _words, _words(messages[:HEADER_LEN]) - 1)
