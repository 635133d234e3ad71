"""Splicing revision trajectories and writing good ones.

    revision = header + bad turns 1..t' + revision turn + good turns t+1..end

where t is the divergence step (turns shared by both paths, so bad turns 1..t are also the good
path's) and t' >= t+1 the transition step.

Loss (`train`) flags:
- header and every user turn (observations, and the `OK.` answering the revision turn): false;
- bad-prefix assistant turns 1..t': false, they are context only;
- the revision turn `Thought: <signal>\\nAction: revise` (the environment's revision action):
  **true**. Agent-R's point is that the model learns to *produce* the revision signal once it
  has gone wrong, and the official code trains this turn too;
- good-suffix assistant turns t+1..end: true.
A good trajectory is the header plus the good path, every assistant turn trained. Replies that
the reply rule marks untrainable (no whole action line: `agentr.agent.turn`) stay untrained
wherever they are; their turns are kept as context.
"""

from __future__ import annotations

import random

from agentr.agent.turn import REVISION_ACTION, revision_messages, turn_messages
from agentr.search.mcts import Node

#: agentr's revision signals; one is drawn (seeded) per revision trajectory.
REVISION_SIGNALS = (
    "My last actions are not getting me closer to the goal. I should step back and try another way.",
    "I made a mistake along the way. Let me go back and choose a different action.",
    "This is not working: the observations show my plan went wrong. I will change course.",
    "I see now that my recent steps were wrong. I need to rethink what to do next.",
    "I have been going down the wrong path. Let me return to a better plan.",
    "Looking at what happened, my approach was flawed. I will revise it.",
    "These actions are leading nowhere. I should correct my plan before continuing.",
    "I think I took a wrong turn a few steps ago. Let me reconsider and fix it.",
    "My previous actions did not help with the task. I will try a different approach.",
    "Something went wrong with my plan. I need to reassess and act differently.",
)


def _turns(nodes: list[Node], train: bool) -> list[dict]:
    return [m for node in nodes
            for m in turn_messages(node.reply, node.observation, train and node.trainable)]


def header_messages(header: list[dict]) -> list[dict]:
    """The conversation header with every message untrained."""
    return [{"role": m["role"], "content": m["content"], "train": False} for m in header]


def draw_signal(rng: random.Random) -> str:
    return rng.choice(REVISION_SIGNALS)


def splice(header: list[dict], bad: list[Node], good: list[Node], divergence: int,
           transition: int, signal: str, revision_action: str = REVISION_ACTION) -> list[dict]:
    """The revision conversation: header + bad[1..transition] + revision turn + good[divergence+1..].

    `bad` and `good` are root-first paths; steps are 1-based turn numbers (node depths);
    `revision_action` is the environment's.
    """
    if not divergence < transition < len(bad):
        raise ValueError(f"transition step {transition} must lie in ({divergence}, {len(bad) - 1}]")
    if not divergence < len(good) - 1:
        raise ValueError(f"divergence step {divergence} leaves no good suffix (good path has {len(good) - 1} turns)")
    if any(b is not g for b, g in zip(bad[: divergence + 1], good[: divergence + 1])):
        raise ValueError(f"the paths do not share their first {divergence} turns")
    return (
        header_messages(header)
        + _turns(bad[1 : transition + 1], train=False)
        + revision_messages(signal, revision_action)
        + _turns(good[divergence + 1 :], train=True)
    )


def good_conversation(header: list[dict], good: list[Node]) -> list[dict]:
    """A good path as a conversation with every assistant turn trained."""
    return header_messages(header) + _turns(good[1:], train=True)
