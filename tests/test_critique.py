"""Model-guided critique: verdict parsing, verifier prompts, the transition point."""

from __future__ import annotations

import math
import random

import pytest
from search_fakes import ScriptedEngine, ToyEnv, force_bad_on, toy_policy

from agentr.engines.base import SamplingConfig
from agentr.search.config import SearchConfig
from agentr.search.critique import (
    FORCED_ASK,
    CritiqueWalk,
    Judge,
    TaskCritique,
    StepVerdict,
    calibrated_choice,
    content_free_step,
    forced_prefix,
    parse_judgment,
    step_conversation,
    verifier_conversation,
)
from agentr.search.mcts import Node
from agentr.search.pairing import Pair
from agentr.timing import NO_PROFILE


@pytest.mark.parametrize("text, verdict", [
    ("The craft fails.\nJudgment: Bad", "Bad"),
    ("Reasons...\nJudgement: Good", "Good"),            # British spelling
    ("judgment:uncertain", "Uncertain"),
    ("It helps.\nJudgment: **Good**", "Good"),           # markdown emphasis
    ("Judgment: Good? No wait.\nJudgment: Bad.", "Bad"),  # the last verdict counts
    ("JUDGMENT : BAD", "Bad"),
    ("This action is bad.", None),                       # no judgment line
    ("Judgment: maybe", None),
    ("", None),
    ("Judgment: Badly phrased", None),
    ("**Judgment**: Bad", "Bad"),                        # markdown label
    ("**Judgment:** Uncertain", "Uncertain"),
    ("Judgment: **Bad**", "Bad"),
    ("Judgment: <Bad>", "Bad"),                          # the instruction's placeholder form
    ("Judgment: [Good]", "Good"),
    ("Judgement - good", "Good"),
    ("It is not good, not bad.\nJudgment: Uncertain", "Uncertain"),  # words before the label
    # an echo of the instruction names all three verdicts: no verdict
    ('Then end with one line: "Judgment: Good", "Judgment: Bad" or "Judgment: Uncertain".', None),
    ("Judgment: Good|Bad|Uncertain", None),
    ('"Judgment: Good", "Judgment: Bad" or "Judgment: Uncertain"\nIt fails.\nJudgment: Bad', "Bad"),
])
def test_parse_judgment(text, verdict):
    assert parse_judgment(text) == verdict


def _path(actions: list[str]) -> list[Node]:
    root = Node(id=0, parent=None, depth=0, observation="Goal: craft stick.")
    path = [root]
    for i, a in enumerate(actions, 1):
        node = Node(id=i, parent=path[-1], depth=i, reply=f"Action: {a}", action=a, observation=f"after {a}")
        path[-1].children.append(node)
        path.append(node)
    return path


def test_verifier_prompt_has_task_history_and_step():
    (message,) = step_conversation(_path(["get 1 log", "craft 4 planks", "inventory"]), 3)
    text = message["content"]
    assert message["role"] == "user"
    assert "Goal: craft stick." in text
    assert "Action: get 1 log\nObservation: after get 1 log\nAction: craft 4 planks" in text
    assert text.endswith("Latest action: inventory\nObservation: after inventory")
    assert "Judgment: Good" in text and "Judgment: Bad" in text and "Judgment: Uncertain" in text
    assert "(none yet)" in verifier_conversation("task", [], "a", "o")[0]["content"]


def test_direct_prompt_asks_for_the_verdict_last_and_forced_verdicts_continue_the_reply():
    path = _path(["get 1 log", "inventory"])
    direct = step_conversation(path, 2, direct=True)[0]["content"]
    reasons = step_conversation(path, 2)[0]["content"]
    assert direct.endswith("Observation: after inventory\n\n" + FORCED_ASK)
    assert "reasons" in reasons and "reasons" not in direct
    assert direct.split("Task:")[1].split("\n\n" + FORCED_ASK)[0] == reasons.split("Task:")[1]
    assert forced_prefix(None) == "Judgment:"
    assert forced_prefix("It does nothing.\n\n") == "It does nothing.\nJudgment:"


def test_step_verdicts_record_their_source():
    assert StepVerdict("Bad", "parsed", "r").to_dict() == {"verdict": "Bad", "source": "parsed", "reply": "r"}
    forced = StepVerdict("Good", "forced", None, {"Good": -0.123456, "Bad": -2.0, "Uncertain": -3.0})
    assert forced.to_dict() == {"verdict": "Good", "source": "forced",
                                "logprobs": {"Good": -0.1235, "Bad": -2.0, "Uncertain": -3.0}}


def test_calibrated_choice_asks_whether_bad_gained_over_the_content_free_step():
    # a prior that always says Good: the raw argmax is Good, the gain over the prior is Bad's
    assert calibrated_choice([-0.1, -2.0, -4.0], None) == 0
    assert calibrated_choice([-0.1, -2.0, -4.0], [-0.01, -5.0, -4.5]) == 1
    assert calibrated_choice([-1.0, -1.0, -1.0], [-1.0, -1.0, -1.0]) == 0  # no gain: not Bad; Good first
    # Bad lost ground: not Bad, then the likelier of Good and Uncertain
    assert calibrated_choice([-2.0, -3.0, -0.5], [-0.5, -1.0, -3.0]) == 2
    # Uncertain, nearly impossible at the baseline, gains most, but only Bad-or-not is asked
    assert calibrated_choice([-0.2, -3.0, -5.0], [-0.1, -2.5, -9.0]) == 0
    with_baseline = StepVerdict("Bad", "forced", None, {"Good": -0.1, "Bad": -2.0, "Uncertain": -4.0},
                                {"Good": -0.01, "Bad": -5.0, "Uncertain": -4.5})
    assert with_baseline.to_dict()["baseline"] == {"Good": -0.01, "Bad": -5.0, "Uncertain": -4.5}


def test_calibrated_choice_weighs_good_and_uncertain_together():
    # "not Bad" is the mass of Good and Uncertain together (logsumexp), not the likelier one
    # alone (max): which of the two holds the mass must not matter. Probabilities in VERDICTS order.
    def choice(step, baseline):
        return calibrated_choice([math.log(q) for q in step], [math.log(q) for q in baseline])

    good, bad = 0, 1
    # not-Bad fell from 0.6 to 0.5 while Bad rose: Bad. By the likelier one alone, not-Bad
    # rose from 0.3 to 0.5, more than Bad did, and Bad would lose.
    assert choice([0.5, 0.5, 1e-6], [0.3, 0.4, 0.3]) == bad
    # not-Bad rose from 0.55 to 0.6 while Bad fell: not Bad, the likelier Good. By the likelier
    # one alone, not-Bad fell from 0.55 to 0.32, more than Bad did, and Bad would win.
    assert choice([0.32, 0.4, 0.28], [0.55, 0.45, 1e-6]) == good


def test_content_free_step_has_no_task_history_action_or_observation():
    for direct in (False, True):
        text = content_free_step(direct)[0]["content"]
        assert "Task:\nN/A\n" in text and "(none yet)" in text
        assert "Latest action: N/A\nObservation: N/A" in text
        assert text.endswith(FORCED_ASK) == direct


def test_verifier_prompt_drops_oldest_history_to_fit():
    path = _path(["a1", "a2", "a3", "a4"])
    short = step_conversation(path, 4, fits=lambda c: "a1" not in c[0]["content"])[0]["content"]
    assert "Action: a1" not in short and "Action: a2\nObservation: after a2" in short
    with pytest.raises(ValueError):
        step_conversation(path, 4, fits=lambda c: False)


def _pair(bad_actions: list[str], divergence: int) -> Pair:
    bad = _path(bad_actions)
    good = bad[: divergence + 1]
    good_leaf = Node(id=100, parent=good[-1], depth=divergence + 1, action="win")
    return Pair(good=good + [good_leaf], bad=bad, divergence=divergence)


def _walk_with(verdict_of: dict[str, str], pair: Pair) -> tuple[int, list[str]]:
    walk, asked, verdicts = CritiqueWalk(pair), [], {}
    while (node := walk.advance(verdicts)) is not None:
        asked.append(node.action)
        verdicts[node.id] = verdict_of.get(node.action, "Good")
    return walk.transition, asked


def test_first_bad_step_after_divergence_is_the_transition():
    pair = _pair(["s1", "s2", "b3", "b4", "b5"], divergence=2)
    transition, asked = _walk_with({"s1": "Bad", "b3": "Uncertain", "b4": "Bad", "b5": "Bad"}, pair)
    assert transition == 4  # s1 lies in the shared prefix: never judged; b3 uncertain; b4 is first Bad
    assert asked == ["b3", "b4"]  # the walk stops at the first Bad step


def test_no_bad_step_means_end_of_bad_path():
    pair = _pair(["s1", "b2", "b3"], divergence=1)
    transition, asked = _walk_with({}, pair)
    assert (transition, asked) == (3, ["b2", "b3"])
    walk = CritiqueWalk(pair)
    assert walk.advance({2: "Good", 3: "Uncertain"}) is None and walk.source == "end"
    walk = CritiqueWalk(pair)
    assert walk.advance({2: "Bad"}) is None and (walk.transition, walk.source) == (2, "model")


def test_cached_verdicts_are_not_asked_again():
    pair = _pair(["s1", "b2", "b3"], divergence=1)
    walk = CritiqueWalk(pair)
    assert walk.advance({2: "Good", 3: "Bad"}) is None and walk.transition == 3


def _critique(transition: str) -> TaskCritique:
    bad = _path(["a", "b"])
    good = [bad[0], Node(id=9, parent=bad[0], depth=1, action="good", reward=1.0)]
    return TaskCritique([Pair(good, bad, 0)], SearchConfig(transition=transition), ToyEnv(), "t",
                        "revise", random.Random(0))


def test_the_judge_forces_a_missing_verdict_calibrated_against_a_baseline_asked_once():
    """`parsed_then_forced`: a reply without a verdict is forced; the content-free baseline is
    asked after the round's forced verdicts, once per run, and every call is booked."""
    booked = []

    def call(kind, trees, requests, run):
        booked.append((kind, trees, requests))
        return run()

    engine = ScriptedEngine(toy_policy(), judge=lambda c: "Hard to say.", force=force_bad_on("a"))
    config = SearchConfig(verdict="parsed_then_forced", calibrate_verdicts=True)
    judge = Judge(engine, config, SamplingConfig(n=1, temperature=0.0, max_tokens=8), lambda c: True,
                  call, NO_PROFILE)
    critique = _critique("model")
    assert critique.judged and [n.action for n in critique.nodes_to_judge()] == ["a"]
    judge.judge([(critique, node) for node in critique.nodes_to_judge()])
    assert booked == [("judge", 1, 1), ("force", 1, 1), ("judge", 0, 1), ("force", 0, 1)]
    assert judge.baseline == [0.0, -2.0, -2.0]  # the content-free step: Good
    verdict = critique.critiques[1]
    assert (verdict.verdict, verdict.source, verdict.reply) == ("Bad", "forced", "Hard to say.")
    assert critique.nodes_to_judge() == []
    assert (critique.walks[0].transition, critique.walks[0].source) == (1, "model")
    assert (critique.unparsed, critique.critique_requests) == (1, 1)
    judge.judge([(critique, critique.walks[0].pair.bad[2])])
    assert booked[4:] == [("judge", 1, 1), ("force", 1, 1)]  # the baseline is not asked again


def test_transition_end_settles_every_walk_without_the_verifier():
    critique = _critique("end")
    assert not critique.judged and critique.nodes_to_judge() == []
    assert (critique.walks[0].transition, critique.walks[0].source) == (2, "end")
    assert critique.mistakes is None and critique.random_steps == [random.Random(0).randint(1, 2)]
