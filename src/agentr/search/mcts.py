"""Monte Carlo tree search over an environment, with the current policy.

A tree belongs to one task. Its root holds the first observation; every other node is one
assistant turn, played by the rules of one turn (`agentr.agent.turn`): the stored reply, its
action, the observation and reward, whether the reply may be trained, and the visit count N and
value sum W of the terminal rewards backed up through it.

One *simulation* (descent) starts at the root and repeats: expand the current node if it has no
children yet, then move to a child chosen by UCT, until the current node has no non-terminal
child left. The descent is the rollout: there is no separate rollout policy.

- Selection: among non-terminal children, unvisited ones (N = 0) first; otherwise the maximum of
  `W/N + c * sqrt(ln N_parent / N)`. Ties (among unvisited children, or equal scores) are broken
  by the tree's seeded `random.Random`.
- Expansion: `n_expand` replies sampled in one request; replies whose stored text (the reply
  rule's) duplicates a sibling's are dropped; each remaining reply steps its own copy of the
  environment.
- Terminal child: the turn ended the episode (the environment said done, or reported failure:
  a negative reward, clamped to 0), or the child's depth reached `max_depth`.
- Backup: each terminal child adds N += 1, W += r on every node from itself to the root; a node
  whose children are all terminal becomes terminal.

`SearchTree` runs this as a state machine: `pending()` names the node waiting for replies and
`expand()` takes them, so a driver can batch the pending nodes of many trees into one engine call
(see `agentr.search.scheduler`).
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field

from agentr.agent.conversation import build_header
from agentr.agent.turn import Reply, play, read_reply, turn_messages
from agentr.engines.base import Conversation, Generation
from agentr.envs.base import Environment
from agentr.search.config import SearchConfig
from agentr.timing import NO_PROFILE, Profile


@dataclass(eq=False)
class Node:
    """One state of the tree: the turn that led here and the search statistics below it."""

    id: int
    parent: Node | None
    depth: int
    #: The assistant reply of this turn, as the reply rule stores it ("" at the root).
    reply: str = ""
    #: The command sent to the environment (None at the root).
    action: str | None = None
    #: What the environment answered (at the root: the first observation).
    observation: str = ""
    #: Environment reward after this step, negative rewards clamped to 0.
    reward: float = 0.0
    done: bool = False
    failed: bool = False
    #: The reply may be a training target (the reply rule: it has a whole action line).
    trainable: bool = True
    terminal: bool = False
    #: N: simulations that passed through this node.
    visits: int = 0
    #: W: the sum of the rewards those simulations backed up (the mean is `mean_value`).
    value_sum: float = 0.0
    children: list[Node] = field(default_factory=list)
    #: The environment at this node's state; held only while the node waits for expansion.
    env: Environment | None = field(default=None, repr=False)

    @property
    def expanded(self) -> bool:
        return bool(self.children)

    @property
    def mean_value(self) -> float:
        return self.value_sum / self.visits if self.visits else 0.0

    def path(self) -> list[Node]:
        """The nodes from the root to this one, both included."""
        nodes = []
        node: Node | None = self
        while node is not None:
            nodes.append(node)
            node = node.parent
        return nodes[::-1]

    def turns(self) -> list[dict[str, str]]:
        """The assistant/observation messages from the root to this node (header excluded)."""
        return [m for node in self.path()[1:] for m in turn_messages(node.reply, node.observation)]

    def to_dict(self) -> dict:
        """A JSON-ready copy of the subtree (environments left out)."""
        data = {
            "id": self.id,
            "depth": self.depth,
            "N": self.visits,
            "W": round(self.value_sum, 6),
            "reward": self.reward,
            "terminal": self.terminal,
        }
        if self.parent is None:
            data["observation"] = self.observation
        else:
            # the key stays "response": the report and earlier runs' trees read it
            data.update(response=self.reply, action=self.action, observation=self.observation)
            if self.done:
                data["done"] = True
            if self.failed:
                data["failed"] = True
            if not self.trainable:
                data["trainable"] = False
        if self.children:
            data["children"] = [child.to_dict() for child in self.children]
        return data


def uct(child: Node, parent_visits: int, c: float) -> float:
    """`W/N + c * sqrt(ln N_parent / N)` of a visited child."""
    return child.value_sum / child.visits + c * math.sqrt(math.log(parent_visits) / child.visits)


def select_child(node: Node, c: float, rng: random.Random) -> Node | None:
    """The child to descend into, or None (and `node` becomes terminal) when all are terminal.

    Unvisited non-terminal children come first; among visited ones the highest UCT score wins;
    ties are broken with `rng`.
    """
    candidates = [child for child in node.children if not child.terminal]
    if not candidates:
        node.terminal = True
        return None
    unvisited = [child for child in candidates if child.visits == 0]
    if unvisited:
        return unvisited[0] if len(unvisited) == 1 else rng.choice(unvisited)
    scores = [uct(child, node.visits, c) for child in candidates]
    best = max(scores)
    tied = [child for child, score in zip(candidates, scores) if score == best]
    return tied[0] if len(tied) == 1 else rng.choice(tied)


def backup(node: Node, reward: float) -> None:
    """Add a terminal reward along the path to the root; mark nodes whose children all ended."""
    current: Node | None = node
    while current is not None:
        current.visits += 1
        current.value_sum += reward
        if current.children and all(child.terminal for child in current.children):
            current.terminal = True
        current = current.parent


@dataclass
class TreeCounters:
    """What one tree's search cost."""

    expansions: int = 0
    samples: int = 0
    duplicates: int = 0
    env_steps: int = 0
    replay_steps: int = 0
    clones: int = 0
    tokens: int = 0


class SearchTree:
    """The search tree of one task, driven by `pending()` / `expand()`.

    Args:
        env: a fresh environment; the tree resets it to `task_id` and owns it from then on
            (it is closed when the search ends).
        task_id: the task to search.
        config: search settings (`num_simulations`, `c_uct`, `max_depth` are used here).
        rng: the tree's own seeded random source, for UCT ties.
        profile: where the time of environment steps and clones goes ("env.step", "env.clone").
    """

    def __init__(self, env: Environment, task_id: str, config: SearchConfig, rng: random.Random,
                 profile: Profile = NO_PROFILE):
        self.task_id = str(task_id)
        self.profile = profile
        self.config = config
        self.rng = rng
        self.counters = TreeCounters()
        first_observation = env.reset(self.task_id)
        self.env_name = env.name
        self.header = build_header(env.instruction, first_observation)
        self.revision_action = env.revision_action
        self.root = Node(id=0, parent=None, depth=0, observation=first_observation, env=env)
        self._num_nodes = 1
        self.simulations = 0
        self._cursor: Node | None = None
        self.finished = False

    # ---- driving ---------------------------------------------------------------------------
    def pending(self) -> Node | None:
        """The node whose expansion the search waits for; None once the search has ended."""
        while not self.finished:
            if self._cursor is None:
                if self.root.terminal or self.simulations >= self.config.num_simulations:
                    self.close()
                    return None
                self.simulations += 1
                self._cursor = self.root
            if not self._cursor.expanded:
                return self._cursor
            self._cursor = self._descend(self._cursor)
        return None

    def conversation(self, node: Node) -> Conversation:
        """The chat the policy continues at `node` (header + turns), before truncation."""
        return self.header + node.turns()

    def expand(self, node: Node, generations: Sequence[Generation]) -> list[Node]:
        """Add the de-duplicated replies in `generations` as children of `node`; back up the
        terminal ones. Returns the new children."""
        if node is not self._cursor or node.expanded:
            raise RuntimeError("expand() must be given the node that pending() returned")
        if not generations:
            raise ValueError("expand() needs at least one generated reply")
        self.counters.expansions += 1
        self.counters.samples += len(generations)
        self.counters.tokens += sum(g.num_tokens for g in generations)
        replies: dict[str, Reply] = {}
        for generation in generations:
            reply = read_reply(generation.text, generation.finish_reason)
            if reply.text in replies:
                self.counters.duplicates += 1
            else:
                replies[reply.text] = reply
        env, node.env = node.env, None
        assert env is not None, "a node waiting for expansion holds its environment"
        for i, reply in enumerate(replies.values()):
            # The last child takes the parent's environment: it is no longer needed there.
            child_env = env if i == len(replies) - 1 else self._clone(env)
            node.children.append(self._step(node, reply, child_env))
        for child in node.children:
            if child.terminal:
                backup(child, child.reward)
        self._cursor = self._descend(node)
        return node.children

    # ---- internals ---------------------------------------------------------------------------
    def _descend(self, node: Node | None) -> Node | None:
        while node is not None and node.expanded:
            node = select_child(node, self.config.c_uct, self.rng)
        return node

    def _clone(self, env: Environment) -> Environment:
        self.counters.clones += 1
        if not env.cheap_clone:
            self.counters.replay_steps += len(env.actions)
        with self.profile.phase("env.clone"):
            return env.clone()

    def _step(self, parent: Node, reply: Reply, env: Environment) -> Node:
        with self.profile.phase("env.step"):
            turn = play(env, reply, parent.reward)
        self.counters.env_steps += not turn.revision
        child = Node(
            id=self._num_nodes,
            parent=parent,
            depth=parent.depth + 1,
            reply=reply.text,
            action=turn.action,
            observation=turn.observation,
            reward=turn.reward,
            done=turn.done,
            failed=turn.failed,
            trainable=reply.trainable,
        )
        self._num_nodes += 1
        child.terminal = turn.done or child.depth >= self.config.max_depth
        if child.terminal:
            env.close()
        else:
            child.env = env
        return child

    def close(self) -> None:
        """End the search (idempotent) and close every environment the tree still holds."""
        self.finished = True
        self._cursor = None
        stack = [self.root]
        while stack:
            node = stack.pop()
            if node.env is not None:
                node.env.close()
                node.env = None
            stack.extend(node.children)

    @property
    def num_nodes(self) -> int:
        return self._num_nodes

