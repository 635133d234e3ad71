"""Model-guided critique: the current policy finds the transition point t' of a bad path.

The actor model itself is the verifier. For each step of the bad path after the divergence step
it sees the task, the action/observation history before the step, and the step's action and
observation, and gives a verdict: Good, Bad or Uncertain. The first step judged Bad is t' and
stays in the bad prefix; if no step is judged Bad, t' is the end of the bad path (which is what
Direct-Revision uses).

Where the verdict comes from is `SearchConfig.verdict`:

- "parsed": the paper's critique. The verifier writes reasons, then `Judgment: Good|Bad|Uncertain`
  (greedy); the verdict is parsed from the reply (`parse_judgment`). A reply without one counts
  as Uncertain (source "none").
- "parsed_then_forced" (default): as "parsed", but a reply without a verdict is continued with a
  `Judgment:` line and the verdict is the one of the three the model itself finds most likely
  there (`Engine.choose`; source "forced"). Every judged step gets a verdict.
- "forced": no reasons. The prompt asks for the verdict directly (`FORCED_ASK`) and the model's
  most likely verdict after `Judgment:` is taken (source "forced"): the cheapest critique.

Forced verdicts are calibrated (`SearchConfig.calibrate_verdicts`, default on): before judging,
the verifier is asked the same question about a step without content (`content_free_step`: task,
action and observation "N/A"), and a step's forced verdict is Bad when Bad's log-probability rose
more above that baseline than Good-or-Uncertain's did (`calibrated_choice`). A small model is sure of one verdict
word, most often "Good", whatever the step; the baseline is that prior, and what rises above it
is what the step itself says.

Each step's verdict depends only on the path up to that step, so verdicts are cached per node:
pairs that share bad steps ask once.

This module owns the whole rule of t': where it comes from (`SearchConfig.transition`: the
model's verdicts, the end of the bad path, or the environment's first labelled mistake), one
task's walks and verdicts and the figures that measure t' against the labels (`TaskCritique`),
and a run's verdict policy with its calibration (`Judge`). The scheduler only gathers the steps
of every task in flight into one round and hands `Judge` the engine calls' bookkeeping.
"""

from __future__ import annotations

import math
import random
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from agentr.agent.turn import is_revision
from agentr.engines.base import Conversation, Engine, SamplingConfig
from agentr.envs.base import Environment
from agentr.search.config import SearchConfig
from agentr.search.mcts import Node
from agentr.search.pairing import Pair
from agentr.timing import Profile

#: Runs one engine call for the scheduler's bookkeeping: (kind, trees in it, requests, the call).
EngineCall = Callable[[str, int, int, Callable[[], Any]], Any]

VERDICTS = ("Good", "Bad", "Uncertain")
#: Where a verdict came from: parsed from the reply, forced by log-probability, or none
#: (a reply without a verdict under `verdict: parsed`, counted as Uncertain).
VERDICT_SOURCES = ("parsed", "forced", "none")
#: The start of the assistant text that `Engine.choose` continues with one of `VERDICT_CHOICES`.
JUDGMENT_PREFIX = "Judgment:"
VERDICT_CHOICES = tuple(" " + v for v in VERDICTS)

_INTRO = """\
You check the actions of an agent in an interactive text environment. Below are the task, the \
actions the agent has taken with the environment's observations, and the agent's latest action \
with the observation it produced. Decide whether the latest action was good, bad or uncertain:
- Good: it clearly brings the agent closer to finishing the task.
- Bad: it clearly harms the agent's progress, e.g. it is invalid, useless, repeats a failed \
attempt or heads away from the goal.
- Uncertain: it neither clearly helps nor clearly harms."""

_STEP = """

Task:
{task}

Actions so far:
{history}

Latest action: {action}
Observation: {observation}"""

#: The paper's verifier prompt: reasons first, then the judgment line.
VERIFIER_PROMPT = _INTRO + """
First give your reasons in a few sentences. Then end with one line: \
"Judgment: Good", "Judgment: Bad" or "Judgment: Uncertain".""" + _STEP

#: The closing question of the direct (`verdict: forced`) prompt.
FORCED_ASK = "Was the latest action Good, Bad or Uncertain? Answer with one line: Judgment: <verdict>."
#: The direct verifier prompt: no reasons, the verdict asked for last.
FORCED_VERIFIER_PROMPT = _INTRO + _STEP + "\n\n" + FORCED_ASK

_LABEL = re.compile(r"judge?ment", re.IGNORECASE)
# The label, optional markdown around it, a separator, optional opening marks, the verdict word:
# "Judgment: Bad", "**Judgment**: Bad", "**Judgment:** Bad", "Judgment: **Bad**", "Judgment: <Bad>".
_JUDGMENT = re.compile(
    r"judge?ment[\s*_`'\"]*[:\uff1a=-][\s*_`'\"\[(<{]*(good|bad|uncertain)\b", re.IGNORECASE)
_VERDICT_WORD = re.compile(r"\b(good|bad|uncertain)\b", re.IGNORECASE)


def parse_judgment(text: str) -> str | None:
    """The last `Judgment: X` (or `Judgement: X`, with markdown or brackets) verdict in `text`:
    "Good", "Bad", "Uncertain", or None when there is none.

    A line that names all three verdicts after its judgment label echoes the instruction
    (`"Judgment: Good", "Judgment: Bad" or "Judgment: Uncertain"`) and is no verdict.
    """
    verdict = None
    for line in text.splitlines():
        label = _LABEL.search(line)
        if label is None:
            continue
        named = {w.lower() for w in _VERDICT_WORD.findall(line[label.start():])}
        if len(named) == len(VERDICTS):
            continue
        matches = _JUDGMENT.findall(line)
        if matches:
            verdict = matches[-1].capitalize()
    return verdict


def forced_prefix(reply: str | None) -> str:
    """The assistant text that a forced verdict continues: the reply's reasons (None: no reply,
    as in `verdict: forced`), then the judgment label."""
    return JUDGMENT_PREFIX if reply is None else f"{reply.rstrip()}\n{JUDGMENT_PREFIX}"


def verifier_conversation(task: str, history: list[tuple[str, str]], action: str,
                          observation: str, direct: bool = False) -> Conversation:
    """The one-message chat that asks the verifier about one step (`direct`: for the verdict
    alone, `FORCED_VERIFIER_PROMPT`; else reasons first, `VERIFIER_PROMPT`)."""
    lines = "\n".join(f"Action: {a}\nObservation: {o}" for a, o in history) or "(none yet)"
    template = FORCED_VERIFIER_PROMPT if direct else VERIFIER_PROMPT
    prompt = template.format(task=task, history=lines, action=action, observation=observation)
    return [{"role": "user", "content": prompt}]


#: What stands for the task, the action and the observation of the content-free step.
CONTENT_FREE = "N/A"


def content_free_step(direct: bool = False) -> Conversation:
    """The verifier chat about a step without content: the calibration baseline's prompt."""
    return verifier_conversation(CONTENT_FREE, [], CONTENT_FREE, CONTENT_FREE, direct)


def calibrated_choice(logprobs: Sequence[float], baseline: Sequence[float] | None) -> int:
    """The index (in `VERDICTS`) of the forced verdict given the log-probability of each verdict,
    calibrated against `baseline` (the content-free step's, same order; None: the most likely
    verdict).

    Calibrated, the walk's one question is asked: Bad, or not? The step is Bad when Bad's
    log-probability gained more over the baseline than that of "Good or Uncertain" did; else it
    is the likelier of Good and Uncertain. (Comparing the three gains instead lets a verdict the
    baseline finds nearly impossible win on noise.)
    """
    if baseline is None:
        return max(range(len(logprobs)), key=lambda i: (logprobs[i], -i))
    bad = VERDICTS.index("Bad")
    rest = [i for i in range(len(VERDICTS)) if i != bad]
    gain_bad = logprobs[bad] - baseline[bad]
    gain_rest = (_logsumexp([logprobs[i] for i in rest]) - _logsumexp([baseline[i] for i in rest]))
    if gain_bad > gain_rest:
        return bad
    return max(rest, key=lambda i: (logprobs[i], -i))


def _logsumexp(values: Sequence[float]) -> float:
    top = max(values)
    return top + math.log(sum(math.exp(v - top) for v in values))


def step_conversation(path: list[Node], step: int,
                      fits: Callable[[Conversation], bool] = lambda c: True,
                      direct: bool = False) -> Conversation:
    """The verifier chat for step `step` (1-based turn) of `path` (root first).

    The task is the root's first observation; the oldest history steps are dropped until
    `fits` accepts the chat. `direct` asks for the verdict without reasons.
    """
    node = path[step]
    history = [(n.action or "", n.observation) for n in path[1:step]]
    while True:
        conversation = verifier_conversation(path[0].observation, history, node.action or "",
                                             node.observation, direct)
        if fits(conversation):
            return conversation
        if not history:
            raise ValueError(
                "the verifier prompt exceeds the engine's context even without history; "
                "raise max_model_len or lower critique_max_tokens"
            )
        history = history[1:]


@dataclass(frozen=True)
class StepVerdict:
    """The verdict on one bad-path step and where it came from.

    Attributes:
        verdict: "Good", "Bad" or "Uncertain".
        source: "parsed", "forced" or "none" (see `VERDICT_SOURCES`).
        reply: the verifier's reasons (None under `verdict: forced`).
        logprobs: the log-probability of each verdict after `Judgment:` (forced verdicts only).
        baseline: the same for the content-free step, where the verdict was calibrated
            against it (the verdict is then the largest `logprobs - baseline`).
    """

    verdict: str
    source: str
    reply: str | None = None
    logprobs: dict[str, float] | None = None
    baseline: dict[str, float] | None = None

    def to_dict(self) -> dict:
        data: dict = {"verdict": self.verdict, "source": self.source}
        if self.reply is not None:
            data["reply"] = self.reply
        for key in ("logprobs", "baseline"):
            values = getattr(self, key)
            if values is not None:
                data[key] = {k: round(v, 4) for k, v in values.items()}
        return data


@dataclass(eq=False)
class CritiqueWalk:
    """The walk along one pair's bad path, from the step after the divergence to t'.

    `source` says where `transition` came from: "model" (the first step judged Bad), "end" (the
    end of the bad path: nothing judged Bad, or `transition: end`) or "oracle" (the
    environment's first labelled mistake).
    """

    pair: Pair
    next_step: int = 0
    transition: int | None = None
    source: str | None = None

    def __post_init__(self) -> None:
        self.next_step = self.pair.divergence + 1

    def settle(self, step: int, source: str) -> None:
        """Fix t' without asking the verifier."""
        self.transition, self.source = step, source

    def advance(self, verdicts: dict[int, str]) -> Node | None:
        """Skip the steps already judged (by node id in `verdicts`); return the node to ask about
        next, or None once `transition` is known."""
        bad = self.pair.bad
        while self.transition is None:
            if self.next_step >= len(bad):
                self.settle(len(bad) - 1, "end")  # nothing judged Bad: the end of the bad path
                break
            node = bad[self.next_step]
            verdict = verdicts.get(node.id)
            if verdict is None:
                return node
            if verdict == "Bad":
                self.settle(self.next_step, "model")
                break
            self.next_step += 1
        return None


def forces_verdicts(config: SearchConfig) -> bool:
    """Whether Phase I under `config` may force verdicts by log-probability."""
    return config.mode == "agent_r" and config.transition == "model" and config.verdict != "parsed"


def check_transition_source(config: SearchConfig, make_env: Callable[[], Environment]) -> None:
    """Refuse `transition: oracle` for an environment without mistake labels (an environment is
    built to ask only under that setting)."""
    if config.mode != "agent_r" or config.transition != "oracle":
        return
    env = make_env()
    try:
        labels = env.labels_mistakes
    finally:
        env.close()
    if not labels:
        raise ValueError(
            f"search.transition 'oracle' needs an environment that labels mistakes "
            f"(Environment.label_mistakes); {type(env).__name__} has none: use transition "
            "'model' or 'end'")


class TaskCritique:
    """One task's way from its pairs to their transition points.

    Every pair's walk starts after its divergence; under `transition: end` or `oracle` its t' is
    settled at once, under `model` it waits on the verdicts of its steps (`nodes_to_judge`,
    `record_verdict`). It also holds what measures t' against the environment's labels: the
    first labelled mistake after each divergence (`mistakes`; None: no labels) and a step drawn
    uniformly after it from `random_stream` (`random_steps`).
    """

    def __init__(self, pairs: Sequence[Pair], config: SearchConfig, env: Environment, task_id: str,
                 revision_action: str, random_stream: random.Random) -> None:
        self.walks = [CritiqueWalk(pair) for pair in pairs]
        self.verdicts: dict[int, str] = {}
        self.critiques: dict[int, StepVerdict] = {}  # node id -> its verdict and source
        self.verdict_counts: Counter[str] = Counter()
        self.source_counts: Counter[str] = Counter()
        self.unparsed = 0  # replies without a verdict (forced afterwards, or counted Uncertain)
        self.critique_tokens = 0
        self.critique_requests = 0
        self.mistakes = self._first_mistakes(env, task_id, revision_action)
        self.random_steps = [random_stream.randint(w.pair.divergence + 1, len(w.pair.bad) - 1)
                             for w in self.walks]
        for i, walk in enumerate(self.walks):
            end = len(walk.pair.bad) - 1
            if config.transition == "end":
                walk.settle(end, "end")
            elif config.transition == "oracle":
                mistake = self.mistakes[i] if self.mistakes is not None else None
                walk.settle(*((mistake, "oracle") if mistake is not None else (end, "end")))
        #: The walks wait on the policy's verdicts (`transition: model`).
        self.judged = config.transition == "model" and bool(self.walks)

    def _first_mistakes(self, env: Environment, task_id: str, revision_action: str) -> list[int | None] | None:
        """Per walk, the first step after the divergence that the environment labels a mistake
        (None: no such step); None when the environment has no labels for this task. Asks
        `label_mistakes` itself rather than `labels_mistakes`, which a multi-task environment
        answers by building every sub-environment."""
        if not self.walks:
            return None if env.label_mistakes(task_id, []) is None else []
        labelled: dict[int, list[bool]] = {}  # leaf id -> one label per turn
        out = []
        for walk in self.walks:
            bad = walk.pair.bad
            if bad[-1].id not in labelled:
                labels = _labels(env, task_id, revision_action, bad)
                if labels is None:
                    return None
                labelled[bad[-1].id] = labels
            labels = labelled[bad[-1].id]
            out.append(next((k for k in range(walk.pair.divergence + 1, len(bad)) if labels[k - 1]),
                            None))
        return out

    def nodes_to_judge(self) -> list[Node]:
        """The bad-path steps whose verdicts the walks wait on (none: the critique is over)."""
        nodes: dict[int, Node] = {}
        for walk in self.walks:
            node = walk.advance(self.verdicts)
            if node is not None:
                nodes.setdefault(node.id, node)
        return list(nodes.values())

    def record_reply(self, num_tokens: int, parsed: bool) -> None:
        """Count one verifier reply (its verdict is recorded by `record_verdict`)."""
        self.critique_tokens += num_tokens
        self.critique_requests += 1
        self.unparsed += not parsed

    def record_verdict(self, node: Node, verdict: StepVerdict) -> None:
        self.verdicts[node.id] = verdict.verdict
        self.critiques[node.id] = verdict
        self.verdict_counts[verdict.verdict] += 1
        self.source_counts[verdict.source] += 1


def _labels(env: Environment, task_id: str, revision_action: str, path: list[Node]) -> list[bool] | None:
    """The environment's label of every turn of `path`. A revision turn never reached the
    environment (the agent answers it itself): it makes no progress, a mistake."""
    stepped = [n for n in path[1:] if not is_revision(n.action, revision_action)]
    labels = env.label_mistakes(task_id, [n.action or "" for n in stepped])
    if labels is None:
        return None
    by_node = {n.id: label for n, label in zip(stepped, labels, strict=True)}
    return [by_node.get(n.id, True) for n in path[1:]]


class Judge:
    """A run's verdict policy (`SearchConfig.verdict`): gives the steps of a round their
    verdicts, in one batched `generate` for the reasons, then one batched `choose` for the steps
    still without one, calibrated against `baseline` where `calibrate_verdicts` is on.

    `call` runs each engine call for the scheduler's bookkeeping (`EngineCall`); `fits` accepts
    a verifier prompt that leaves room for the reasons and the verdict.
    """

    def __init__(self, engine: Engine, config: SearchConfig, sampling: SamplingConfig,
                 fits: Callable[[Conversation], bool], call: EngineCall, profile: Profile) -> None:
        self.engine, self.config, self.sampling, self.fits = engine, config, sampling, fits
        self.call, self.profile = call, profile
        self.direct = config.verdict == "forced"
        self.calibrated = config.calibrate_verdicts and forces_verdicts(config)
        #: The calibration baseline of the run's forced verdicts: the log-probability of each
        #: verdict (`VERDICTS` order) for the content-free step, asked as the forced verdicts
        #: are (after the verifier's own greedy reasons, or under `verdict: forced` directly).
        #: Asked for when the first verdict is forced: a policy that writes all its verdicts
        #: never pays for it.
        self.baseline: list[float] | None = None

    def _baseline(self) -> list[float] | None:
        if not self.calibrated or self.baseline is not None:
            return self.baseline
        prompt = content_free_step(self.direct)
        reply = None
        if not self.direct:
            reply = self.call("judge", 0, 1, lambda: self.engine.generate([prompt], self.sampling))[0][0].text
        (choice,) = self.call("force", 0, 1, lambda: self.engine.choose(
            [prompt], [forced_prefix(reply)], VERDICT_CHOICES))
        self.baseline = list(choice.logprobs)
        return self.baseline

    def judge(self, judgments: list[tuple[TaskCritique, Node]]) -> None:
        """Give every step in `judgments` (a task's critique, the step) a verdict."""
        with self.profile.phase("judge.prompts"):
            prompts = [step_conversation(node.path(), node.depth, self.fits, self.direct)
                       for _, node in judgments]
        to_force: list[tuple[TaskCritique, Node, Conversation, str | None]] = []
        if self.direct:
            to_force = [(task, node, prompt, None) for (task, node), prompt in zip(judgments, prompts)]
        else:
            replies = self.call("judge", len({id(task) for task, _ in judgments}), len(prompts),
                                lambda: self.engine.generate(prompts, self.sampling))
            for (task, node), prompt, (reply, *_) in zip(judgments, prompts, replies):
                verdict = parse_judgment(reply.text)
                task.record_reply(reply.num_tokens, parsed=verdict is not None)
                if verdict is not None:
                    task.record_verdict(node, StepVerdict(verdict, "parsed", reply.text))
                elif self.config.verdict == "parsed":
                    task.record_verdict(node, StepVerdict("Uncertain", "none", reply.text))
                else:
                    to_force.append((task, node, prompt, reply.text))
        if to_force:
            choices = self.call("force", len({id(task) for task, *_ in to_force}), len(to_force),
                                lambda: self.engine.choose([p for _, _, p, _ in to_force],
                                                           [forced_prefix(reply) for *_, reply in to_force],
                                                           VERDICT_CHOICES))
            base = self._baseline()
            for (task, node, _, reply), choice in zip(to_force, choices):
                verdict = VERDICTS[calibrated_choice(choice.logprobs, base)]
                task.record_verdict(node, StepVerdict(
                    verdict, "forced", reply, dict(zip(VERDICTS, choice.logprobs)),
                    None if base is None else dict(zip(VERDICTS, base))))
