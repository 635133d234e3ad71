"""Scripted engines and a tiny environment for the search tests (no model needed)."""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Callable, Sequence

from agentr.agent.conversation import HEADER_LEN
from agentr.agent.turn import parse_action
from agentr.engines.base import Choice, Conversation, Engine, Generation, SamplingConfig
from agentr.engines.common import best_choice
from agentr.envs.base import Environment
from agentr.search.critique import VERIFIER_PROMPT
from agentr.search.mcts import SearchTree


class Killed(RuntimeError):
    """Raised by a `ScriptedEngine` to simulate a run killed mid-way."""


def reply(action: str, thought: str = "step") -> str:
    return f"Thought: {thought}\nAction: {action}"


def is_verifier(conversation: Conversation) -> bool:
    return len(conversation) == 1 and conversation[0]["content"].startswith(VERIFIER_PROMPT[:40])


def actions_so_far(conversation: Conversation) -> list[str]:
    """The actions of the assistant turns after the header."""
    return [parse_action(m["content"]) or "" for m in conversation[HEADER_LEN:] if m["role"] == "assistant"]


def latest_action(verifier_conversation: Conversation) -> str:
    text = verifier_conversation[0]["content"]
    return text.split("Latest action: ")[-1].split("\n")[0]


def content_rng(conversation: Conversation) -> random.Random:
    """A random source determined by the prompt alone (as a seeded engine would be)."""
    digest = hashlib.sha256(json.dumps(conversation, sort_keys=True).encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


class ScriptedEngine(Engine):
    """Replies by rule: `policy(conversation, n)` -> n texts (or `Generation`s, to say how a
    sample ended), `judge(conversation)` -> text, `force(conversation, prefix, choices)` -> one
    log-probability per choice (`choose`).

    Records every call as (kind, number of conversations, sampling) in `calls` ("force" with
    sampling None for `choose`) and its prompts in `batches` (`choose`: (conversation, prefix)
    pairs); with `fail_after=k` the (k+1)-th call raises `Killed`.
    """

    def __init__(self, policy: Callable[[Conversation, int], list[str]],
                 judge: Callable[[Conversation], str] | None = None,
                 fail_after: int | None = None, max_model_len: int = 100_000,
                 force: Callable[[Conversation, str, Sequence[str]], list[float]] | None = None):
        super().__init__()
        self.policy = policy
        self.judge = judge or (lambda c: "Looks fine.\nJudgment: Good")
        self.force = force or (lambda c, prefix, choices: [-float(i) for i in range(len(choices))])
        self.fail_after = fail_after
        self._max_model_len = max_model_len
        self.calls: list[tuple[str, int, SamplingConfig]] = []
        self.batches: list[list[Conversation]] = []

    @property
    def tokenizer(self):
        return None

    @property
    def max_model_len(self) -> int:
        return self._max_model_len

    def count_tokens(self, conversation: Conversation) -> int:
        return sum(len(m["content"].split()) + 3 for m in conversation) + 1

    def generate(self, conversations: Sequence[Conversation], sampling: SamplingConfig) -> list[list[Generation]]:
        if self.fail_after is not None and len(self.calls) >= self.fail_after:
            raise Killed(f"killed at call {len(self.calls) + 1}")
        kinds = {"judge" if is_verifier(c) else "expand" for c in conversations}
        assert len(kinds) == 1, "expansions and judgments never share a call"
        self.calls.append((kinds.pop(), len(conversations), sampling))
        self.batches.append([list(c) for c in conversations])
        out = []
        for conversation in conversations:
            if is_verifier(conversation):
                texts = [self.judge(conversation) for _ in range(sampling.n)]
            else:
                texts = self.policy(conversation, sampling.n)
                assert len(texts) == sampling.n
            out.append([t if isinstance(t, Generation) else Generation(t, len(t.split())) for t in texts])
        return out

    def choose(self, conversations: Sequence[Conversation], prefixes: Sequence[str],
               choices: Sequence[str]) -> list[Choice]:
        if self.fail_after is not None and len(self.calls) >= self.fail_after:
            raise Killed(f"killed at call {len(self.calls) + 1}")
        assert all(is_verifier(c) for c in conversations)
        self.calls.append(("force", len(conversations), None))
        self.batches.append([(list(c), p) for c, p in zip(conversations, prefixes)])
        return [best_choice(choices, self.force(c, p, choices)) for c, p in zip(conversations, prefixes)]

    def load_adapter(self, path: str | None) -> None:
        pass


class ToyEnv(Environment):
    """A tiny game. `good` moves one step forward; after `need` of them the task is won
    (reward 1, done). `half` ends with reward 0.5, `lose` with 0, `boom` is a failure (reward -1);
    anything else (`noop`) changes nothing. No cheap clone: the base class replays."""

    name = "toy"

    def __init__(self, need: int = 2, tasks: int = 5):
        super().__init__()
        self.need = need
        self.num_tasks = tasks
        self.progress = 0

    @property
    def instruction(self) -> str:
        return "Commands: good, half, lose, boom, noop."

    def task_ids(self, split: str) -> list[str]:
        self.check_split(split)
        return [f"t{i}" for i in range(self.num_tasks)] if split == "train" else ["x0"]

    def spawn(self) -> ToyEnv:
        return type(self)(self.need, self.num_tasks)

    def _reset(self, task_id: str) -> str:
        self.progress = 0
        return f"Task {task_id}: say good {self.need} times."

    def _step(self, action: str) -> tuple[str, float, bool]:
        action = action.strip().lower()
        if action == "good":
            self.progress += 1
            if self.progress >= self.need:
                return "You win.", 1.0, True
            return f"Progress {self.progress}/{self.need}.", 0.0, False
        if action == "half":
            return "Half done, game over.", 0.5, True
        if action == "lose":
            return "You lose.", 0.0, True
        if action == "boom":
            return "Boom! The game crashed.", -1.0, True
        return f"Nothing happens ({action}).", 0.0, False


class CloneToyEnv(ToyEnv):
    """`ToyEnv` with a cheap clone."""

    cheap_clone = True

    def clone(self) -> CloneToyEnv:
        copy = type(self)(self.need, self.num_tasks)
        copy.task_id, copy.actions, copy.done, copy.progress = self.task_id, list(self.actions), self.done, self.progress
        return copy


class LabelledToyEnv(CloneToyEnv):
    """`CloneToyEnv` with ground truth: every action but `good` is a mistake."""

    labels_mistakes = True

    def label_mistakes(self, task_id: str, actions: Sequence[str]) -> list[bool]:
        return [a.strip().lower() != "good" for a in actions]


#: How likely the toy policies are to play each action of the toy game.
TOY_WEIGHTS = {"good": 3, "noop": 2, "lose": 1, "half": 1, "boom": 0.5}


def toy_replies(rng: random.Random, n: int, weights: dict[str, float] | None = None) -> list[str]:
    """n replies playing actions of the toy game drawn from `rng` by `weights`."""
    weights = weights or TOY_WEIGHTS
    return [reply(a, thought="try " + a)
            for a in rng.choices(list(weights), weights=list(weights.values()), k=n)]


def toy_policy(weights: dict[str, float] | None = None) -> Callable[[Conversation, int], list[str]]:
    """Samples n actions of the toy game by `weights`, from a prompt-seeded random source."""
    def policy(conversation: Conversation, n: int) -> list[str]:
        return toy_replies(content_rng(conversation), n, weights)

    return policy


class SeedDrawnEngine(ScriptedEngine):
    """Samples toy actions from each request's own seed (as vLLM does with per-request seeds),
    not from the prompt: what a tree draws depends on the seeds it is given alone. The verifier
    is `judge` (default: Bad on every action but `good`)."""

    def __init__(self, weights: dict[str, float] | None = None,
                 judge: Callable[[Conversation], str] | None = None, **kwargs):
        super().__init__(toy_policy(weights), judge or judge_bad_on("noop", "lose", "half", "boom"), **kwargs)
        self.weights = weights

    def generate(self, conversations, sampling):
        if any(map(is_verifier, conversations)):
            return super().generate(conversations, sampling)
        self.calls.append(("expand", len(conversations), sampling))
        assert sampling.request_seeds is not None, "expansions must seed each request"
        return [[Generation(text, 3) for text in toy_replies(random.Random(seed), sampling.n, self.weights)]
                for seed in sampling.request_seeds]


def force_bad_on(*bad_actions: str) -> Callable[[Conversation, str, Sequence[str]], list[float]]:
    """Forced verdicts (choices " Good", " Bad", " Uncertain"): Bad exactly for the given
    actions, Good otherwise."""

    def force(conversation: Conversation, prefix: str, choices: Sequence[str]) -> list[float]:
        best = " Bad" if latest_action(conversation) in bad_actions else " Good"
        return [0.0 if c == best else -2.0 for c in choices]

    return force


def judge_bad_on(*bad_actions: str) -> Callable[[Conversation], str]:
    """A verifier answering Bad exactly for the given actions, Good otherwise."""

    def judge(conversation: Conversation) -> str:
        verdict = "Bad" if latest_action(conversation) in bad_actions else "Good"
        return f"The action {latest_action(conversation)} matters.\nJudgment: {verdict}"

    return judge


def search_sequential(tree: SearchTree, engine: Engine, sampling: SamplingConfig) -> SearchTree:
    """Run one tree to the end, one engine call per expansion."""
    while (node := tree.pending()) is not None:
        tree.expand(node, engine.generate([tree.conversation(node)], sampling)[0])
    return tree
