"""ScienceWorld: ids and splits (no Java needed), then gold paths on the real simulator (Java)."""

from __future__ import annotations

import pytest

from agentr.envs import UnknownTaskError
from agentr.envs.sciworld import (
    EPISODE_OVER,
    TASKS,
    JavaNotFoundError,
    ScienceWorldEnv,
    find_java,
    parse_task_id,
)

# A few tasks whose gold paths are quick to generate (well under a second each).
GOLD_TASKS = [
    "find-plant:225",
    "lifespan-longest-lived:93",
    "power-component:15",
    "chemistry-mix:24",
]


def test_task_ids_and_splits_without_java():
    env = ScienceWorldEnv()
    train, test = env.task_ids("train"), env.task_ids("test")
    assert len(train) == 3592 and len(test) == 149
    assert not set(train) & set(test)
    assert {t.split(":")[0] for t in test} == set(TASKS)
    assert test[:3] == ["boil:21", "boil:22", "boil:24"]  # evenly spaced over boil's 21..29
    assert len(ScienceWorldEnv(test_per_task=None).task_ids("test")) == 1819
    assert ScienceWorldEnv(tasks=["1-1", "find-plant"], train_per_task=2).task_ids("train") == [
        "boil:0",
        "boil:7",
        "find-plant:0",
        "find-plant:75",
    ]
    assert parse_task_id("1-1:3") == parse_task_id("boil:3") == ("boil", 3)


@pytest.mark.parametrize("bad", ["boil", "boil:30", "boil:-1", "nope:1", "1-9:0", ""])
def test_unknown_task_ids(bad):
    with pytest.raises(UnknownTaskError, match="boil|task"):
        ScienceWorldEnv().reset(bad)


def test_missing_java_is_explained(monkeypatch):
    import agentr.envs.sciworld as sciworld

    monkeypatch.setattr(sciworld, "find_java", lambda: None)
    with pytest.raises(JavaNotFoundError, match="openjdk-17"):
        ScienceWorldEnv().reset("boil:0")


class FakeSimulator:
    """The parts of `scienceworld.ScienceWorldEnv` that ScienceWorldEnv uses, without Java:
    "focus on air" fails the task (score -100), "focus on dog" completes it."""

    def __init__(self) -> None:
        self.server, self.score, self.played = self, 0.0, []

    def load(self, name, variation, simplifications, generateGoldPath=False):  # noqa: N803
        self.score = 0.0

    def getTaskDescription(self):  # noqa: N802 (ScienceWorld's naming)
        return "Your task is to find a(n) animal."

    def step(self, action):
        self.played.append(action)
        self.score = {"focus on air": -1.0, "focus on dog": 1.0}.get(action, self.score)
        return f"You did {action}."

    def getScore(self):  # noqa: N802
        return self.score

    def getCompleted(self):  # noqa: N802
        return self.score == 1.0

    def getNumMoves(self):  # noqa: N802
        return len(self.played)

    def close(self):
        pass


def fake_env() -> ScienceWorldEnv:
    env = ScienceWorldEnv()
    env._sim = FakeSimulator()
    return env


def test_failure_keeps_scienceworlds_score_and_no_step_is_played_after_done():
    env = fake_env()
    env.reset("find-animal:225")
    assert env.step("focus on air") == ("You did focus on air.", 0.0, True)
    assert env.raw_score == -100  # agentr's reward is 0; AgentGym's server answers -100
    played = list(env._sim.played)
    assert env.step("focus on dog") == (EPISODE_OVER, 0.0, True)  # as TextCraft: refused
    assert env._sim.played == played
    env.reset("find-animal:225")
    assert env.step("focus on dog")[1:] == (1.0, True) and env.raw_score == 100
    assert env.step("look around") == (EPISODE_OVER, 1.0, True)


def test_agentgym_sciworld_client_sees_minus_100_then_finished():
    """AgentGym's SciWorld client reads `score` (its reward) and `done`, asserting status 200."""
    from test_http_env import AgentGymClient, _post, serving

    from agentr.envs.server import ANSWER_FORMATS, EnvService

    with serving(EnvService("sciworld", fake_env, answer_format=ANSWER_FORMATS["sciworld"])) as server:
        remote = AgentGymClient(server.url, "sciworld")
        assert remote.reset(0) == "Your task is to find a(n) animal.\nYou did look around."
        assert remote.step("focus on air") == ("You did focus on air.", -100, True)
        answer = _post(server.url, "/step", {"id": remote.env_id, "action": "focus on dog"})
        assert "has finished" in answer["error"]


# ---- the real simulator: one JVM for the module (starting one takes a second or two) ---------
@pytest.fixture(scope="module")
def env():
    pytest.importorskip("scienceworld")
    env = ScienceWorldEnv()
    yield env
    env.close()


@pytest.mark.parametrize("task_id", GOLD_TASKS)
@pytest.mark.java
@pytest.mark.skipif(find_java() is None, reason="needs Java (ScienceWorld runs on the JVM)")
def test_gold_actions_reach_reward_one(env, task_id):
    actions = env.expert_actions(task_id)
    observation = env.reset(task_id)
    assert observation.startswith("Your task is to") and "\nThis " in observation
    reward, done = 0.0, False
    for action in actions:  # gold paths may run on after completion (a last "wait1")
        _, reward, done = env.step(action)
        assert 0.0 <= reward <= 1.0
        if done:
            break
    assert (reward, done) == (1.0, True)


@pytest.mark.java
@pytest.mark.skipif(find_java() is None, reason="needs Java (ScienceWorld runs on the JVM)")
def test_jvm_heap_is_capped_and_splits_match_the_jar(env):
    sim = env.simulator()
    assert "-Xmx1g" in sim._gateway.java_process.args
    for name, (_code, total, train_end, dev_end) in TASKS.items():
        sim.load(name, 0, "")
        assert sim.get_max_variations(name) == total
        assert sim.get_variations_train() == list(range(0, train_end))
        assert sim.get_variations_dev() == list(range(train_end, dev_end))
        assert sim.get_variations_test() == list(range(dev_end, total))


@pytest.mark.java
@pytest.mark.skipif(find_java() is None, reason="needs Java (ScienceWorld runs on the JVM)")
def test_failure_ends_the_episode_with_reward_zero_and_bad_actions_do_not_raise(env):
    env.reset("find-living-thing:225")
    observation, reward, done = env.step("fly to the moon")
    assert isinstance(observation, str) and (reward, done) == (0.0, False)
    assert env.step("focus on air") == ("You focus on the air.", 0.0, True)  # negative score
    assert env.raw_score == -100
    assert env.step("look around") == (EPISODE_OVER, 0.0, True)


@pytest.mark.java
@pytest.mark.skipif(find_java() is None, reason="needs Java (ScienceWorld runs on the JVM)")
def test_expert_keeps_the_episode_and_clone_replays(env):
    task_id = GOLD_TASKS[0]
    actions = env.expert_actions(task_id)
    env.reset(task_id)
    for action in actions[:3]:
        env.step(action)
    env.expert_actions("lifespan-shortest-lived:93")  # loads another task in this JVM ...
    copy = env.clone()  # ... yet the episode goes on, here and in a replayed copy (a second JVM)
    try:
        assert copy.actions == env.actions == actions[:3]
        for action in actions[3:]:
            assert env.step(action) == copy.step(action)
        assert env.done and copy.done
    finally:
        copy.close()


@pytest.mark.java
@pytest.mark.skipif(find_java() is None, reason="needs Java (ScienceWorld runs on the JVM)")
def test_the_revision_action_never_reaches_scienceworld(env):
    from agentr.agent import REVISION_REPLY, play, read_reply

    env.reset(GOLD_TASKS[0])
    revision = play(env, read_reply("Thought: I went wrong.\nAction: revise"), 0.0)
    assert revision.revision and revision.observation == REVISION_REPLY and env.actions == []
    wait = play(env, read_reply("Thought: let time pass.\nAction: wait"), 0.0)
    assert not wait.revision and env.actions == ["wait"]  # ScienceWorld's own command
