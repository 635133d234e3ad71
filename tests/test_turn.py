"""The rules of one turn (`agentr.agent.turn`), and that every caller plays by them: the agent
loop, MCTS, expert demonstrations, the splicer and Phase I's data."""

from __future__ import annotations

import random

import pytest
from search_fakes import CloneToyEnv, ScriptedEngine, reply
from test_rollout import CounterEnv, always, scripted

from agentr.agent import (
    HEADER_LEN,
    REVISION_ACTION,
    REVISION_REPLY,
    format_reply,
    is_revision,
    parse_action,
    play,
    read_reply,
    run_episodes,
)
from agentr.data.expert import expert_trajectory
from agentr.engines.base import Generation
from agentr.envs.base import Environment
from agentr.search.collect import collect
from agentr.search.config import SearchConfig
from agentr.search.mcts import SearchTree
from agentr.search.splicing import splice


# ---- parsing ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "reply, action",
    [
        ("Thought: I need logs.\nAction: get 1 oak logs", "get 1 oak logs"),
        ("Thought: x\nACTION:   craft 4 oak planks using 1 oak logs  ", "craft 4 oak planks using 1 oak logs"),
        ("action : inventory", "inventory"),
        # one line: a thought, then the action
        ("Thought: I need logs. Action: get 1 oak logs", "get 1 oak logs"),
        ("thought: go on action: inventory", "inventory"),
        ("Thought: hmm, the Action: part is inline", "part is inline"),
        # several Action lines: the first non-empty one wins
        ("Action: get 1 stick\nObservation: Got 1 stick\nAction: inventory", "get 1 stick"),
        ("Action:\nAction: inventory", "inventory"),
        # junk never crashes and gives no action
        ("", None),
        ("OK", None),
        ("I will take an Action: now", None),  # an inline action needs a thought before it
        ("\x00\x01 ```Action```", None),
        ("Actions: get 1 stick", None),
        ("Thought: Reactions: none", None),
    ],
)
def test_parse_action(reply, action):
    assert parse_action(reply) == action


# ---- the reply rule ----------------------------------------------------------------------------
def test_reply_is_cut_after_the_executed_action():
    sampled = "Thought: I need a stick.\nAction: get 1 stick\nObservation: Got 1 stick\nThought: now\nAction: inventory"
    for finish in ("stop", "length"):  # the action line is whole either way: more text follows
        r = read_reply(sampled, finish)
        assert r.text == "Thought: I need a stick.\nAction: get 1 stick"
        assert (r.action, r.trainable) == ("get 1 stick", True)
    assert read_reply("  Thought: a Action: inventory  \n").text == "Thought: a Action: inventory"


def test_a_reply_cut_by_the_token_limit_is_never_trainable():
    cut_in_action = read_reply("Thought: craft planks.\nAction: craft 4 oak pl", "length")
    assert cut_in_action.action == "craft 4 oak pl" and not cut_in_action.trainable
    assert read_reply("Thought: craft planks.\nAction: craft 4 oak pl", "stop").trainable
    no_action = read_reply("Thought: I should first look at what I", "length")
    assert (no_action.action, no_action.trainable) == (None, False)
    assert no_action.env_action == "Thought: I should first look at what I"  # sent whole
    assert not read_reply("I am not sure.", "stop").trainable  # no action: an invalid step


def test_the_reply_rule_is_idempotent():
    for text in ("Thought: a\nAction: b\nObservation: c", "junk", "Thought: a Action: b"):
        stored = read_reply(text).text
        assert read_reply(stored).text == stored


# ---- the revision action -------------------------------------------------------------------------
def test_the_revision_action_is_no_shipped_environment_command():
    from agentr.envs.sciworld import INSTRUCTION as SCIWORLD
    from agentr.envs.textcraft import INSTRUCTION as TEXTCRAFT

    assert REVISION_ACTION == "revise" and REVISION_REPLY == "OK."
    assert "wait (ten ticks)" in SCIWORLD  # ScienceWorld's real command, hence not `wait`
    for instruction in (SCIWORLD, TEXTCRAFT):
        assert REVISION_ACTION not in instruction.lower()


@pytest.mark.parametrize("action, revision", [
    ("revise", True), ("Revise", True), ("REVISE.", True), (" revise ", True),
    ("revise plan", False), ("revised", False), ("wait", False), (None, False),
])
def test_is_revision(action, revision):
    assert is_revision(action) is revision


def test_revision_turn_parses_as_the_revision_action():
    text = format_reply("I realize my approach was flawed. I need to revise it.", REVISION_ACTION)
    assert is_revision(parse_action(text)) and read_reply(text).trainable


class WaitEnv(CounterEnv):
    """An environment with a real `wait` command (as ScienceWorld has) and an expert using it."""

    name = "waiting"

    def _step(self, action):
        if action == "wait":
            self.received.append(action)
            return ("Time passes.", 0.0, False)
        return super()._step(action)

    def expert_actions(self, task_id):
        return ["wait"] + ["step"] * int(task_id)


def test_play_answers_the_revision_itself_and_sends_everything_else():
    env = WaitEnv()
    env.reset("1")
    revision = play(env, read_reply("Thought: I was wrong.\nAction: revise"), 0.5)
    assert (revision.observation, revision.reward, revision.done, revision.revision) == (REVISION_REPLY, 0.5, False, True)
    assert env.received == [] and env.actions == []  # never reached the environment
    wait = play(env, read_reply("Action: wait"), 0.0)
    assert env.received == ["wait"] and wait.observation == "Time passes." and not wait.revision
    junk = play(env, read_reply("I am not sure what to do."), 0.0)
    assert env.received[-1] == "I am not sure what to do." and junk.observation.startswith("Could not execute")


def test_negative_reward_is_a_terminal_failure_clamped_to_zero():
    env = CounterEnv()
    env.reset("3")
    turn = play(env, read_reply("Action: fail"), 0.0)
    assert (turn.reward, turn.done, turn.failed) == (0.0, True, True)
    [episode] = run_episodes(scripted(always("Action: fail")), CounterEnv, ["3"], max_turns=5)
    assert episode.done and episode.turns == 1 and episode.reward == 0.0 and not episode.success


def test_turn_messages_and_their_train_flags():
    env = CounterEnv()
    env.reset("1")
    good = play(env, read_reply("Thought: go\nAction: step\nObservation: won"), 0.0)
    assert good.messages() == [{"role": "assistant", "content": "Thought: go\nAction: step"},
                               {"role": "user", "content": "Count 1."}]
    assert [m["train"] for m in good.messages(train=True)] == [True, False]
    assert [m["train"] for m in good.messages(train=False)] == [False, False]
    env.reset("1")
    cut = play(env, read_reply("Thought: go\nAction: st", "length"), 0.0)
    assert [m["train"] for m in cut.messages(train=True)] == [False, False]  # never a target


# ---- every caller plays by these rules -------------------------------------------------------------
def test_agent_loop_revision_reaches_no_environment_and_the_stored_reply_is_clean():
    replies = iter(["Action: step", "Thought: I was wrong.\nAction: revise\nObservation: OK.",
                    "Action: wait", "Action: step"])
    envs: list[WaitEnv] = []

    def factory():
        envs.append(WaitEnv())
        return envs[-1]

    [episode] = run_episodes(scripted(lambda c: next(replies)), factory, ["2"], max_turns=5)
    assert envs[0].received == ["step", "wait", "step"]  # `wait` is the env's; `revise` is not
    assert episode.messages[HEADER_LEN + 2:HEADER_LEN + 4] == [
        {"role": "assistant", "content": "Thought: I was wrong.\nAction: revise"},  # cut at the action
        {"role": "user", "content": REVISION_REPLY}]
    assert episode.actions == ["step", "revise", "wait", "step"]
    assert episode.rewards == [0.0, 0.0, 0.0, 1.0]
    assert episode.success and episode.turns == 4 and episode.revision_action == REVISION_ACTION


def test_agent_loop_sends_a_reply_without_action_whole():
    replies = iter(["I am not sure what to do.", "Thought: ok. Action: step"])
    envs: list[CounterEnv] = []

    def factory():
        envs.append(CounterEnv())
        return envs[-1]

    [episode] = run_episodes(scripted(lambda c: next(replies)), factory, ["1"], max_turns=5)
    assert envs[0].received == ["I am not sure what to do.", "step"]
    assert episode.messages[HEADER_LEN + 1]["content"] == "Could not execute I am not sure what to do."
    assert episode.success and episode.turns == 2


def test_mcts_plays_the_same_turn():
    tree = SearchTree(CloneToyEnv(need=3), "t0", SearchConfig(), random.Random(0))
    gens = [Generation(reply("revise"), 3), Generation("I do not know", 3),
            Generation(reply("good") + "\nObservation: You win.", 9),
            Generation(reply("good"), 3),  # the same stored reply: a duplicate
            Generation("Thought: more\nAction: noo", 3, "length")]
    revise, junk, good, cut = tree.expand(tree.pending(), gens)
    assert revise.observation == REVISION_REPLY and revise.env.actions == []  # not sent to the env
    assert revise.reward == tree.root.reward and not revise.terminal
    assert junk.action == "I do not know" and junk.observation == "Nothing happens (i do not know)."
    assert not junk.trainable
    assert good.reply == reply("good") and good.trainable and tree.counters.duplicates == 1
    assert cut.action == "noo" and not cut.trainable and cut.to_dict()["trainable"] is False
    assert tree.counters.env_steps == 3


def test_splice_writes_the_environments_revision_action_and_never_trains_cut_replies():
    tree = SearchTree(CloneToyEnv(need=2), "t0", SearchConfig(max_depth=4), random.Random(0))
    bad, first = tree.expand(tree.pending(), [Generation(reply("lose"), 3), Generation(reply("good"), 3)])
    (cut,) = tree.expand(tree.pending(), [Generation("Thought: x\nAction: noo", 3, "length")])
    (win,) = tree.expand(tree.pending(), [Generation(reply("good"), 3)])
    messages = splice(tree.header, [tree.root, bad], [tree.root, first, cut, win], 0, 1, "Oops.",
                      revision_action="rethink")
    trained = [m["content"] for m in messages if m.get("train")]
    assert trained == ["Thought: Oops.\nAction: rethink", reply("good"), reply("good")]
    assert "Thought: x\nAction: noo" in [m["content"] for m in messages]  # kept as context


def test_phase_one_never_trains_replies_cut_by_the_limit(tmp_path):
    def policy(conversation, n):  # half the samples run into the token limit
        rng = random.Random(len(conversation) * 7 + n)
        return [Generation(reply(rng.choice(["good", "noop"])), 3) if i % 2 else
                Generation("Thought: I will say go" + rng.choice(["", "od"]), 3, "length") for i in range(n)]

    engine = ScriptedEngine(policy)
    result = collect(engine, lambda: CloneToyEnv(need=2), ["t0", "t1", "t2"],
                     SearchConfig(num_simulations=6, n_expand=4, max_depth=4, transition="end"),
                     tmp_path, progress=False)
    from agentr.trajectory import read_jsonl

    trajectories = list(read_jsonl(result.dataset))
    assert trajectories and all(t.kind in ("revision", "good") for t in trajectories)
    seen_cut = False
    for t in trajectories:
        for m in t.messages:
            if m["role"] == "assistant" and m["content"].startswith("Thought: I will say"):
                seen_cut = True
                assert not m["train"]
            if m.get("train"):
                assert parse_action(m["content"]) is not None
    assert seen_cut  # the cut replies are in the data, as context
    assert all(call[2].stop == ("\nObservation",) for call in engine.calls)


def test_expert_demonstrations_play_by_the_same_rules():
    env = WaitEnv()
    demo = expert_trajectory(env, "2")
    assert env.received == ["wait", "step", "step"]  # the environment's own `wait` is sent
    assert [m["train"] for m in demo.messages[HEADER_LEN:]] == [True, False] * 3
    assert parse_action(demo.messages[HEADER_LEN]["content"]) == "wait"

    class RevisingExpert(WaitEnv):
        def expert_actions(self, task_id):
            return ["step", "revise"]

    with pytest.raises(ValueError, match="revision_action"):
        expert_trajectory(RevisingExpert(), "2")


def test_an_environment_can_choose_its_revision_action():
    class ReviseIsACommand(CounterEnv):
        revision_action = "rethink"

        def _step(self, action):
            if action == "revise":
                self.received.append(action)
                return ("Revised.", 0.0, False)
            return super()._step(action)

    replies = iter(["Action: revise", "Action: rethink", "Action: step"])
    envs: list[ReviseIsACommand] = []

    def factory():
        envs.append(ReviseIsACommand())
        return envs[-1]

    [episode] = run_episodes(scripted(lambda c: next(replies)), factory, ["1"], max_turns=5)
    assert envs[0].received == ["revise", "step"]
    assert episode.revision_action == "rethink" and episode.messages[HEADER_LEN + 3]["content"] == REVISION_REPLY
    assert Environment.revision_action == REVISION_ACTION
