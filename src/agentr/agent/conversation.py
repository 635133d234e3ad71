"""The ReAct conversation format shared by search, evaluation and training (a turn's rules:
`agentr.agent.turn`).

A conversation starts with a fixed header, then alternates assistant replies
(`Thought: ...\nAction: ...`) and user turns holding the environment's observations:

    system     SYSTEM_PROMPT
    user       the environment's instruction (commands and one worked example)
    assistant  OK
    user       the first observation
    assistant  Thought: ...\nAction: ...
    user       observation
    ...
"""

from __future__ import annotations

from collections.abc import Callable

SYSTEM_PROMPT = (
    "You are an agent in a text environment. Each turn, reply with one short thought and one "
    "action, exactly in this format:\nThought: <your reasoning>\nAction: <one command>"
)
#: Number of messages in the header; truncation never drops them.
HEADER_LEN = 4


def build_header(instruction: str, first_observation: str) -> list[dict[str, str]]:
    """The four header messages of every conversation."""
    return [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": instruction},
        {"role": "assistant", "content": "OK"},
        {"role": "user", "content": first_observation},
    ]


def truncate_history(
    messages: list[dict], count_tokens: Callable[[list[dict]], int], limit: int
) -> list[dict]:
    """Drop the oldest assistant/observation pairs after the header until `messages` fit `limit`.

    The header is never dropped, nor the last observation; raises if even that does not fit.
    """
    messages = list(messages)
    while count_tokens(messages) > limit:
        if len(messages) <= HEADER_LEN + 1:
            raise ValueError(
                f"the conversation header and last observation alone exceed {limit} tokens; "
                "raise max_model_len or shorten the environment's instruction"
            )
        del messages[HEADER_LEN : HEADER_LEN + 2]
    return messages
