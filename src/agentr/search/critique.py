"""Model-guided critique: the current policy finds the transition point t' of a bad path (DESIGN 1.3).

The actor model itself is the verifier. For each step of the bad path after the divergence step
it sees the task, the action/observation history before the step, and the step's action and
observation, and answers with reasons followed by `Judgment: Good|Bad|Uncertain` (the spelling
`Judgement` is accepted too). Decoding is greedy. The first step judged Bad is t' and stays in the
bad prefix; if no step is judged Bad, t' is the end of the bad path (which is Direct-Revision).
An answer without a parsable judgment counts as Uncertain and is counted apart in the stats.

Each step's verdict depends only on the path up to that step, so verdicts are cached per node:
pairs that share bad steps ask once.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from agentr.engines.base import Conversation
from agentr.search.mcts import Node
from agentr.search.pairing import Pair

VERDICTS = ("Good", "Bad", "Uncertain")

VERIFIER_PROMPT = """\
You check the actions of an agent in an interactive text environment. Below are the task, the \
actions the agent has taken with the environment's observations, and the agent's latest action \
with the observation it produced. Decide whether the latest action was good, bad or uncertain:
- Good: it clearly brings the agent closer to finishing the task.
- Bad: it clearly harms the agent's progress, e.g. it is invalid, useless, repeats a failed \
attempt or heads away from the goal.
- Uncertain: it neither clearly helps nor clearly harms.
First give your reasons in a few sentences. Then end with one line: \
"Judgment: Good", "Judgment: Bad" or "Judgment: Uncertain".

Task:
{task}

Actions so far:
{history}

Latest action: {action}
Observation: {observation}"""

_JUDGMENT = re.compile(r"judge?ment\s*[:\uff1a]\s*[*_`'\"\[(]*\s*(good|bad|uncertain)\b", re.IGNORECASE)


def parse_judgment(text: str) -> str | None:
    """The last `Judgment: X` (or `Judgement: X`) verdict in `text`: "Good", "Bad", "Uncertain",
    or None when there is none."""
    matches = _JUDGMENT.findall(text)
    return matches[-1].capitalize() if matches else None


def verifier_conversation(task: str, history: list[tuple[str, str]], action: str,
                          observation: str) -> Conversation:
    """The one-message chat that asks the verifier about one step."""
    lines = "\n".join(f"Action: {a}\nObservation: {o}" for a, o in history) or "(none yet)"
    prompt = VERIFIER_PROMPT.format(task=task, history=lines, action=action, observation=observation)
    return [{"role": "user", "content": prompt}]


def step_conversation(path: list[Node], step: int,
                      fits: Callable[[Conversation], bool] = lambda c: True) -> Conversation:
    """The verifier chat for step `step` (1-based turn) of `path` (root first).

    The task is the root's first observation; the oldest history steps are dropped until
    `fits` accepts the chat.
    """
    node = path[step]
    history = [(n.action or "", n.observation) for n in path[1:step]]
    while True:
        conversation = verifier_conversation(path[0].observation, history, node.action or "", node.observation)
        if fits(conversation):
            return conversation
        if not history:
            raise ValueError(
                "the verifier prompt exceeds the engine's context even without history; "
                "raise max_model_len or lower critique_max_tokens"
            )
        history = history[1:]


@dataclass(eq=False)
class CritiqueWalk:
    """The walk along one pair's bad path, from the step after the divergence to t'."""

    pair: Pair
    next_step: int = 0
    transition: int | None = None

    def __post_init__(self) -> None:
        self.next_step = self.pair.divergence + 1

    def advance(self, verdicts: dict[int, str]) -> Node | None:
        """Skip the steps already judged (by node id in `verdicts`); return the node to ask about
        next, or None once `transition` is known."""
        bad = self.pair.bad
        while self.transition is None:
            if self.next_step >= len(bad):
                self.transition = len(bad) - 1  # nothing judged Bad: the end of the bad path
                break
            node = bad[self.next_step]
            verdict = verdicts.get(node.id)
            if verdict is None:
                return node
            if verdict == "Bad":
                self.transition = self.next_step
                break
            self.next_step += 1
        return None
