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
from agentr.agent.rollout import (
    Episode,
    EpisodeStart,
    RolloutError,
    default_max_concurrent,
    env_action,
    run_episodes,
)

__all__ = [
    "HEADER_LEN",
    "SYSTEM_PROMPT",
    "WAIT_ACTION",
    "WAIT_REPLY",
    "Episode",
    "EpisodeStart",
    "RolloutError",
    "build_header",
    "default_max_concurrent",
    "env_action",
    "format_reply",
    "is_wait",
    "parse_action",
    "run_episodes",
    "truncate_history",
]
