"""The optional profile of Phase I and the agent loop: what it records, and nothing without one."""

from __future__ import annotations

from search_fakes import CloneToyEnv, ScriptedEngine, judge_bad_on, toy_policy

from agentr.agent.rollout import run_episodes
from agentr.engines.base import SamplingConfig
from agentr.search.collect import collect
from agentr.search.config import SearchConfig
from agentr.timing import NO_PROFILE, Profile

TASKS = [f"t{i}" for i in range(5)]


def test_phases_and_counters_add_up():
    profile = Profile()
    for _ in range(3):
        with profile.phase("a"):
            pass
    profile.count("tokens", 5)
    profile.count("tokens", 2)
    assert profile.calls["a"] == 3 and profile.seconds["a"] >= 0
    assert profile.to_dict()["counts"] == {"tokens": 7}
    assert "| a |" in profile.table(wall=1.0) and "| tokens | 7 |" in profile.table()


def test_the_shared_null_profile_records_nothing():
    with NO_PROFILE.phase("a"):
        NO_PROFILE.count("b")
    assert not NO_PROFILE.seconds and not NO_PROFILE.counts and not NO_PROFILE.calls


def test_collect_profile_books_every_engine_call_and_waiting_tree(tmp_path):
    engine = ScriptedEngine(toy_policy(), judge_bad_on("noop", "lose", "half", "boom"))
    profile = Profile()
    config = SearchConfig(num_simulations=4, n_expand=4, max_depth=5, max_concurrent_trees=3)
    collect(engine, lambda: CloneToyEnv(need=2), TASKS, config, tmp_path, progress=False,
            profile=profile)
    expand = [c for c in engine.calls if c[0] == "expand"]
    judge = [c for c in engine.calls if c[0] == "judge"]
    assert profile.calls["engine.expand"] == len(expand) and profile.calls["engine.judge"] == len(judge)
    assert profile.counts["requests.expand"] == sum(c[1] for c in expand)
    assert profile.counts["requests.judge"] == sum(c[1] for c in judge)
    assert profile.calls["env.step"] > 0 and profile.calls["write"] == len(TASKS)
    # two trees in flight beyond the third: the last rounds run below capacity
    assert 0 < profile.counts["rounds_below_capacity"] < profile.counts["rounds"]
    assert profile.counts["idle_tree_seconds.expand"] >= 0


def test_run_episodes_profile_counts_turns_and_requests():
    engine = ScriptedEngine(toy_policy())
    profile = Profile()
    episodes = run_episodes(engine, lambda: CloneToyEnv(need=2), TASKS[:3], max_turns=3,
                            sampling=SamplingConfig(temperature=1.0, max_tokens=8, seed=0),
                            profile=profile)
    turns = sum(e.turns for e in episodes)
    assert profile.counts["turns"] == turns == profile.counts["requests"]
    assert profile.calls["engine.generate"] == len(engine.calls)
    assert profile.calls["env.reset"] == 3
