"""One turn: a sampled reply meets the environment.

The agent loop, MCTS, expert demonstrations and the splicer all play turns through this module,
so a reply means the same in search, evaluation and training:

1. **The reply rule** (`read_reply`). A reply is thought lines, then one action line,
   `Action: <command>`; both may share one line (`Thought: ... Action: <command>`). The first
   action line with a command is the action, and the reply is cut at the end of that line:
   whatever the model went on to write (an invented `Observation:`, a second thought or action)
   never ran, so the stored reply, which later prompts show and training learns from, is the
   thought and the executed action. A reply is *trainable* when it has an action and its action
   line is whole: the sample ended on its own (`finish_reason` "stop": end of turn or a stop
   string) or went on past that line. A reply cut by the token limit inside its action line, or
   with no action at all, is an invalid step: it is played, never a training target.
2. **What reaches the environment**: the action; a reply without one is sent whole (stripped),
   and the environment answers it as the invalid action it is (the episode goes on).
3. **The revision action** (`Action: revise`, the environment's `revision_action`) is agentr's
   revision turn: the agent answers it itself with `REVISION_REPLY`, the environment never sees
   it, and the reward stays what it was. No shipped environment has a `revise` command
   (ScienceWorld's `wait` is a real one); an environment that does sets another.
4. **Rewards**: a negative reward means failure: the turn is terminal and its reward clamped
   to 0.
5. **Messages**: a turn adds the assistant reply and the user observation to the conversation.
   The observation is never trained; the reply is trained when the caller trains that turn and
   the reply is trainable.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from agentr.envs.base import Environment

#: The revision turn's action by default (`Environment.revision_action`).
REVISION_ACTION = Environment.revision_action
#: The agent's own answer to a revision turn.
REVISION_REPLY = "OK."
#: Stop strings for sampling replies: the model starting to invent the environment's answer.
#: Only a saving of tokens: `read_reply` cuts a reply at its action line either way.
REPLY_STOP = ("\nObservation",)

# An action line: `Action: x`, or `Thought: ... Action: x` on one line.
_ACTION = re.compile(
    r"^[ \t]*(?:Thought[ \t]*:[^\n]*?)?\bAction[ \t]*:[ \t]*(.*?)[ \t\r]*$",
    re.IGNORECASE | re.MULTILINE,
)


@dataclass(frozen=True)
class Reply:
    """A sampled reply under the reply rule.

    Attributes:
        text: the stored reply: up to the end of the action line (stripped); a reply without an
            action is kept whole.
        action: the command of the action line, or None.
        trainable: it has an action and its action line is whole.
    """

    text: str
    action: str | None
    trainable: bool

    @property
    def env_action(self) -> str:
        """What the reply sends: its action, or the whole reply when it has none."""
        return self.action if self.action is not None else self.text


def read_reply(text: str, finish_reason: str = "stop") -> Reply:
    """`text` under the reply rule; `finish_reason` is the engine's ("stop" or "length")."""
    for match in _ACTION.finditer(text):
        if match.group(1):
            whole_line = finish_reason != "length" or "\n" in text[match.end():]
            return Reply(text[:match.end()].strip(), match.group(1), whole_line)
    return Reply(text.strip(), None, False)


def parse_action(reply: str) -> str | None:
    """The command of the first action line of `reply`, or None if it has none."""
    return read_reply(reply).action


def is_revision(action: str | None, revision_action: str = REVISION_ACTION) -> bool:
    """`action` is the revision action (case, surrounding spaces and a final "." ignored)."""
    return action is not None and action.strip().rstrip(".").lower() == revision_action


def format_reply(thought: str, action: str) -> str:
    """An assistant reply in the ReAct format."""
    return f"Thought: {thought}\nAction: {action}"


def turn_messages(reply: str, observation: str, train: bool | None = None) -> list[dict]:
    """The two messages a turn adds; with `train` given, each carries its loss flag."""
    messages = [{"role": "assistant", "content": reply}, {"role": "user", "content": observation}]
    if train is not None:
        messages[0]["train"], messages[1]["train"] = train, False
    return messages


def revision_messages(signal: str, revision_action: str = REVISION_ACTION) -> list[dict]:
    """The revision turn `Thought: <signal>\\nAction: revise` (trained) and the agent's answer."""
    return turn_messages(format_reply(signal, revision_action), REVISION_REPLY, train=True)


@dataclass(frozen=True)
class Turn:
    """What one reply did.

    Attributes:
        reply: the reply under the reply rule.
        action: what the turn sent (the revision action: answered by the agent).
        observation: the environment's answer (`REVISION_REPLY` for a revision turn).
        reward: the reward after the turn, negative rewards clamped to 0.
        done: the episode ended (the environment said so, or it failed).
        failed: the environment reported failure (a negative reward).
        revision: a revision turn.
    """

    reply: Reply
    action: str
    observation: str
    reward: float
    done: bool
    failed: bool = False
    revision: bool = False

    def messages(self, train: bool | None = None) -> list[dict]:
        """The turn's messages; with `train`, flagged (the reply only when trainable)."""
        return turn_messages(self.reply.text, self.observation,
                             None if train is None else train and self.reply.trainable)


def play(env: Environment, reply: Reply, reward: float) -> Turn:
    """Apply `reply` to `env`, whose last reward was `reward`. Errors of `env.step` propagate."""
    action = reply.env_action
    if is_revision(action, env.revision_action):
        return Turn(reply, action, REVISION_REPLY, reward, done=False, revision=True)
    observation, new_reward, done = env.step(action)
    failed = new_reward < 0
    return Turn(reply, action, observation, max(0.0, float(new_reward)), bool(done or failed), failed)
