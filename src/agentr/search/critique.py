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
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from agentr.engines.base import Conversation
from agentr.search.mcts import Node
from agentr.search.pairing import Pair

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
