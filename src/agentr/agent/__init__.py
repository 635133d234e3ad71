"""The agent: conversation format, action parsing and batched episode running."""

from agentr.agent.conversation import (
    HEADER_LEN,
    SYSTEM_PROMPT,
    WAIT_ACTION,
    WAIT_REPLY,
    build_header,
    format_reply,
    is_wait,
    parse_action,
    truncate_history,
)

__all__ = [
    "HEADER_LEN",
    "SYSTEM_PROMPT",
    "WAIT_ACTION",
    "WAIT_REPLY",
    "build_header",
    "format_reply",
    "is_wait",
    "parse_action",
    "truncate_history",
]
