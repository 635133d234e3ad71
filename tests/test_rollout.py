"""The batched agent loop, on a toy environment and a scripted engine (no model needed); the
rules of one turn it plays by are tested in tests/test_turn.py."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from agentr.agent import (
    HEADER_LEN,
    REVISION_REPLY,
    EpisodeStart,
    RolloutError,
    build_header,
    run_episodes,
    truncate_history,
)
from agentr.engines.base import Conversation, SamplingConfig
from agentr.envs.base import Environment
from search_fakes import ScriptedEngine


class CounterEnv(Environment):
    """Task "k": say `step` k times to win (reward 1). `fail` loses (reward -1, done)."""

    name = "counter"
    spawned = 0

    def __init__(self):
        super().__init__()
        self.count = 0
        self.goal = 0
        self.received: list[str] = []

    @property
    def instruction(self) -> str:
        return "Say step until you win."

    def task_ids(self, split):
        return [str(k) for k in range(1, 6)]

    def _reset(self, task_id):
        self.count, self.goal = 0, int(task_id)
        return f"Say step {self.goal} times."

    def _step(self, action):
        self.received.append(action)
        if action == "step":
            self.count += 1
            won = self.count >= self.goal
            return (f"Count {self.count}.", 1.0 if won else 0.0, won)
        if action == "fail":
            return ("You lost.", -1.0, True)
        return (f"Could not execute {action}", 0.0, False)

    def spawn(self):
        CounterEnv.spawned += 1
        return CounterEnv()


def scripted(policy: Callable[[Conversation], str], max_model_len: int = 100_000,
             fail_at_call: int | None = None) -> ScriptedEngine:
    """An engine that replies `policy(conversation)`; the `fail_at_call`-th call raises."""
    return ScriptedEngine(lambda conversation, n: [policy(conversation)] * n, max_model_len=max_model_len,
                          fail_after=None if fail_at_call is None else fail_at_call - 1)


def always(text: str):
    return lambda conversation: text


def step_reply(conversation):
    return "Thought: keep going\nAction: step"


def test_all_live_episodes_share_one_engine_call_per_turn():
    engine = scripted(step_reply)
    episodes = run_episodes(engine, CounterEnv, ["1", "2", "3"], max_turns=10)
    # turn 1: 3 episodes, turn 2: 2 (task 1 won), turn 3: 1
    assert [len(b) for b in engine.batches] == [3, 2, 1]
    assert [e.task_id for e in episodes] == ["1", "2", "3"]
    for e in episodes:
        assert e.success and e.done and e.finished and e.reward == 1.0
        assert e.turns == int(e.task_id) and e.actions == ["step"] * e.turns
        assert e.messages[:HEADER_LEN] == build_header("Say step until you win.",
                                                       f"Say step {e.task_id} times.")
        assert e.messages[-1] == {"role": "user", "content": f"Count {e.turns}."}


def test_max_concurrent_bounds_the_batch_and_refills_it():
    engine = scripted(step_reply)
    tasks = ["2"] * 5
    episodes = run_episodes(engine, CounterEnv, tasks, max_turns=10, max_concurrent=2)
    assert max(len(b) for b in engine.batches) == 2
    assert all(e.success for e in episodes)
    assert sum(len(b) for b in engine.batches) == 10  # 5 episodes x 2 turns, no wasted prompt


def test_turn_limit():
    episodes = run_episodes(scripted(always("Action: inventory")), CounterEnv, ["1", "2"],
                            max_turns=4)
    for e in episodes:
        assert e.turns == 4 and not e.done and not e.success and e.finished and e.reward == 0.0


def test_history_is_truncated_for_the_engine_but_kept_whole_in_the_episode():
    engine = scripted(always("Action: inventory"), max_model_len=120)
    sampling = SamplingConfig(max_tokens=20)
    [episode] = run_episodes(engine, CounterEnv, ["1"], max_turns=12, sampling=sampling)
    assert episode.turns == 12 and episode.error is None
    assert len(episode.messages) == HEADER_LEN + 2 * 12
    last_prompt = engine.batches[-1][0]
    assert engine.count_tokens(last_prompt) <= 120 - 20
    assert last_prompt[:HEADER_LEN] == episode.messages[:HEADER_LEN]  # header never dropped
    assert len(last_prompt) < len(episode.messages) - 2
    assert last_prompt[-1] == episode.messages[-3]  # the newest observation before the reply
    # the loop's incremental truncation gives exactly truncate_history's result
    assert last_prompt == truncate_history(episode.messages[:-2], engine.count_tokens, 100)


def test_a_conversation_too_long_for_the_model_ends_that_episode_only():
    # Task "5"'s first observation is padded past the limit; task "1" fits.
    class LongFirstObservation(CounterEnv):
        def _reset(self, task_id):
            text = super()._reset(task_id)
            return text + " pad" * 200 if task_id == "5" else text

    engine = scripted(step_reply, max_model_len=150)
    long, short = run_episodes(engine, LongFirstObservation, ["5", "1"], max_turns=3,
                               sampling=SamplingConfig(max_tokens=10))
    assert long.error is not None and long.error.startswith("context") and long.turns == 0
    assert short.success and short.error is None


def test_engine_death_keeps_the_finished_episodes():
    ended = []
    engine = scripted(step_reply, fail_at_call=3)
    with pytest.raises(RolloutError, match="finished episodes are kept") as info:
        run_episodes(engine, CounterEnv, ["1", "2", "4"], max_turns=10, on_episode_end=ended.append)
    assert [e.task_id for e in info.value.finished] == ["1", "2"]
    assert [e.task_id for e in ended] == ["1", "2"]
    assert all(e.success for e in ended)
    [unfinished] = info.value.unfinished
    assert unfinished.task_id == "4" and unfinished.turns == 2
    assert "killed at call 3" in unfinished.error
    assert isinstance(info.value.__cause__, RuntimeError)


def test_continue_from_a_prefix_replays_its_actions():
    header = build_header("Say step until you win.", "Say step 3 times.")
    prefix = header + [
        {"role": "assistant", "content": "Action: step"}, {"role": "user", "content": "Count 1."},
        {"role": "assistant", "content": "Action: inventory"},
        {"role": "user", "content": "Could not execute inventory"},
        {"role": "assistant", "content": "Action: revise"}, {"role": "user", "content": REVISION_REPLY},
    ]
    engine = scripted(step_reply)
    start = EpisodeStart("3", prefix=prefix, meta={"cut_turn": 3})
    [episode] = run_episodes(engine, CounterEnv, [start], max_turns=2)
    assert episode.start_turn == 3 and episode.meta == {"cut_turn": 3}
    assert episode.actions == ["step", "inventory", "revise", "step", "step"]
    assert episode.messages[:len(prefix)] == prefix
    assert episode.success and episode.turns == 5
    # the first prompt the model saw is the prefix itself
    assert engine.batches[0][0] == prefix


def test_prefix_turn_limit_counts_only_new_turns():
    prefix = build_header("Say step until you win.", "Say step 5 times.") + [
        {"role": "assistant", "content": "Action: step"}, {"role": "user", "content": "Count 1."}]
    [episode] = run_episodes(scripted(always("Action: look")), CounterEnv,
                             [EpisodeStart("5", prefix=prefix)], max_turns=3)
    assert episode.start_turn == 1 and episode.turns == 4 and not episode.done


def test_an_environment_instance_is_spawned_per_live_episode():
    CounterEnv.spawned = 0
    env = CounterEnv()
    episodes = run_episodes(scripted(step_reply), env, ["2", "2", "2"], max_turns=5,
                            max_concurrent=2)
    assert all(e.success for e in episodes)
    assert CounterEnv.spawned == 2  # one per live slot, reused for the third episode
    assert env.task_id is None  # the caller's environment is left alone


def test_unknown_task_is_an_episode_error():
    class Strict(CounterEnv):
        def _reset(self, task_id):
            if task_id == "x":
                raise KeyError("no task x")
            return super()._reset(task_id)

    bad, good = run_episodes(scripted(step_reply), Strict, ["x", "1"], max_turns=3)
    assert bad.error.startswith("reset") and good.success


def test_sampling_must_draw_one_reply():
    with pytest.raises(ValueError, match="n=2"):
        run_episodes(scripted(step_reply), CounterEnv, ["1"], sampling=SamplingConfig(n=2))


def test_seeded_sampling_changes_seed_per_turn():
    seen = []

    class SeedEngine(ScriptedEngine):
        def generate(self, conversations, sampling):
            seen.append(sampling.seed)
            return super().generate(conversations, sampling)

    run_episodes(SeedEngine(lambda c, n: [step_reply(c)] * n), CounterEnv, ["3"],
                 sampling=SamplingConfig(temperature=1.0, seed=7))
    assert seen == [7, 8, 9]


def test_episode_seeds_are_all_or_none_among_the_episodes_that_sample():
    sampled = SamplingConfig(temperature=1.0, max_tokens=8)
    starts = [EpisodeStart("1", seed=3), EpisodeStart("2")]
    with pytest.raises(ValueError, match="every EpisodeStart of a run that samples"):
        run_episodes(scripted(step_reply), CounterEnv, starts, sampling=sampled)
    # a greedy episode draws nothing: it needs no seed beside seeded sampled ones
    greedy_beside = [EpisodeStart("1", seed=3), EpisodeStart("2", temperature=0.0)]
    assert len(run_episodes(scripted(step_reply), CounterEnv, greedy_beside, sampling=sampled)) == 2
