"""The agent: conversation format, the rules of one turn and batched episode running."""

from agentr.agent.conversation import HEADER_LEN, SYSTEM_PROMPT, build_header, truncate_history
from agentr.agent.rollout import (
    Episode,
    EpisodeStart,
    RolloutError,
    default_max_concurrent,
    run_episodes,
)
from agentr.agent.turn import (
    REPLY_STOP,
    REVISION_ACTION,
    REVISION_REPLY,
    Reply,
    Turn,
    format_reply,
    is_revision,
    parse_action,
    play,
    read_reply,
)

__all__ = [
    "HEADER_LEN",
    "REPLY_STOP",
    "REVISION_ACTION",
    "REVISION_REPLY",
    "SYSTEM_PROMPT",
    "Episode",
    "EpisodeStart",
    "Reply",
    "RolloutError",
    "Turn",
    "build_header",
    "default_max_concurrent",
    "format_reply",
    "is_revision",
    "parse_action",
    "play",
    "read_reply",
    "run_episodes",
    "truncate_history",
]
