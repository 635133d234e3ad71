"""General chat data mixed into agent training.

Agent-R mixes general conversations (ShareGPT) into its agent data so that the model keeps its
general abilities; the paper weights the two with a mixing factor (eta = 0.2 for agent data).
agentr makes the mix a *sampling ratio*: `chat_ratio` is the fraction of training
conversations, per data set (per iteration), that are chat conversations. With A agent
trajectories it draws `round(A * chat_ratio / (1 - chat_ratio))` chat conversations (without
replacement while the pool lasts) and trains them like any other conversation, every assistant
turn trained; the per-token loss then weighs each source by its share of trained tokens, so a
ratio does not map one-to-one onto the paper's loss weight. Chat data never enters validation.

The file is JSONL, one conversation per line, either `{"messages": [{"role", "content"}, ...]}`
(roles system/user/assistant) or ShareGPT's `{"conversations": [{"from": "human"|"gpt"|"system",
"value": ...}, ...]}`.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Callable

from agentr.data.tokenize import TokenizedExample
from agentr.trajectory import Trajectory

_SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                   "chatgpt": "assistant", "system": "system"}


def _messages(record: dict) -> list[dict]:
    if "messages" in record:
        return [{"role": m["role"], "content": m["content"]} for m in record["messages"]]
    return [{"role": _SHAREGPT_ROLES[m["from"]], "content": m["value"]} for m in record["conversations"]]


def load_chat(path: str | os.PathLike) -> list[Trajectory]:
    """The conversations of a chat JSONL file as trajectories of kind "chat" (assistant turns trained).

    Conversations without an assistant turn are skipped; a malformed line raises with its number.
    """
    out = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                messages = _messages(json.loads(line))
            except (json.JSONDecodeError, KeyError, TypeError) as e:
                raise ValueError(f"{path}:{lineno}: not a chat record ({e})") from e
            for m in messages:
                m["train"] = m["role"] == "assistant"
            if any(m["train"] for m in messages):
                out.append(Trajectory(id=f"chat/{lineno}", env="chat", task_id=str(lineno), iteration=0,
                                      kind="chat", messages=messages))
    return out


def chat_count(num_agent: int, chat_ratio: float) -> int:
    """Chat conversations to add to `num_agent` agent ones so that they are `chat_ratio` of the whole."""
    if not 0.0 <= chat_ratio < 1.0:
        raise ValueError(f"chat_ratio must be in [0, 1), got {chat_ratio}")
    return round(num_agent * chat_ratio / (1.0 - chat_ratio))


def sample_chat(
    pool: list[Trajectory],
    count: int,
    tokenize: Callable[[Trajectory], TokenizedExample],
    max_length: int,
    rng: random.Random,
) -> list[TokenizedExample]:
    """Up to `count` tokenised chat conversations of at most `max_length` tokens, drawn from `pool`.

    Draws without replacement in a shuffled order, skipping over-long ones; when the pool runs
    out before `count`, it starts over (so a small pool is repeated rather than under-mixed).
    """
    out: list[TokenizedExample] = []
    if count <= 0 or not pool:
        return out
    usable = True
    while len(out) < count and usable:
        usable = False
        for i in rng.sample(range(len(pool)), len(pool)):
            example = tokenize(pool[i])
            if len(example) <= max_length and example.num_trained:
                usable = True
                out.append(example)
                if len(out) == count:
                    break
    return out
