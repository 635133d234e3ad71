"""The conversation format: action parsing, `wait`, header and truncation."""

import pytest

from agentr.agent import (
    HEADER_LEN,
    SYSTEM_PROMPT,
    WAIT_REPLY,
    build_header,
    env_action,
    format_reply,
    is_wait,
    parse_action,
    truncate_history,
)


@pytest.mark.parametrize(
    "reply, action",
    [
        ("Thought: I need logs.\nAction: get 1 oak logs", "get 1 oak logs"),
        ("Thought: x\nACTION:   craft 4 oak planks using 1 oak logs  ", "craft 4 oak planks using 1 oak logs"),
        ("action : inventory", "inventory"),
        # several Action lines: the first non-empty one wins
        ("Action: get 1 stick\nObservation: Got 1 stick\nAction: inventory", "get 1 stick"),
        ("Action:\nAction: inventory", "inventory"),
        # junk never crashes and gives no action
        ("", None),
        ("OK", None),
        ("Thought: hmm, the Action: part is inline", None),
        ("\x00\x01 ```Action```", None),
        ("Actions: get 1 stick", None),
    ],
)
def test_parse_action(reply, action):
    assert parse_action(reply) == action


@pytest.mark.parametrize("action, wait", [
    ("wait", True), ("Wait", True), ("WAIT.", True), (" wait ", True),
    ("wait 5", False), ("waiting", False), ("get 1 wait", False), (None, False),
])
def test_is_wait(action, wait):
    assert is_wait(action) is wait


def test_wait_reply_parses_from_a_revision_turn():
    reply = format_reply("I realize my approach was flawed. I need to revise it.", "wait")
    assert is_wait(parse_action(reply))
    assert WAIT_REPLY == "OK."


def test_env_action_sends_junk_whole():
    assert env_action("Thought: t\nAction: inventory") == "inventory"
    assert env_action("  I will craft a stick now.  \n") == "I will craft a stick now."
    assert env_action("") == ""


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
