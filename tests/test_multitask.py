"""MultiTaskEnv routing, id interleaving and clones; MultiTaskDataModule's task mix and demonstrations."""

from __future__ import annotations

import pytest
import torch

from agentr.agent.conversation import HEADER_LEN
from agentr.data import MultiTaskDataModule, TextCraftDataModule
from agentr.envs import TextCraftEnv, UnknownTaskError, make_env
from agentr.envs.multitask import MultiTaskEnv, interleave

torch.set_num_threads(1)


def two_textcrafts() -> MultiTaskEnv:
    return MultiTaskEnv({"easy": lambda: TextCraftEnv(max_depth=1), "deep": lambda: TextCraftEnv(3, 3)})


def test_interleave_is_round_robin():
    assert interleave({"a": ["1", "2", "3"], "b": ["x"], "c": ["p", "q"]}) == \
        ["a/1", "b/x", "c/p", "a/2", "c/q", "a/3"]


def test_task_ids_mix_every_prefix_and_keep_each_order():
    with two_textcrafts() as env:
        ids = env.task_ids("train")
        easy, deep = TextCraftEnv(max_depth=1).task_ids("train"), TextCraftEnv(3, 3).task_ids("train")
        assert len(ids) == len(easy) + len(deep)
        assert ids[:4] == [f"easy/{easy[0]}", f"deep/{deep[0]}", f"easy/{easy[1]}", f"deep/{deep[1]}"]
        assert [i[5:] for i in ids if i.startswith("deep/")] == deep
        assert ids == env.task_ids("train")


def test_reset_routes_to_the_sub_environment_and_records_its_name():
    env = two_textcrafts()
    assert env.name == "multitask" and not env.cheap_clone
    with pytest.raises(RuntimeError, match="reset"):
        env.instruction  # noqa: B018
    sub_id = env.sub_env("deep").task_ids("test")[0]
    observation = env.reset(f"deep/{sub_id}")
    assert observation == TextCraftEnv(3, 3).reset(sub_id)
    assert env.name == "deep" and env.cheap_clone and env.task_id == f"deep/{sub_id}"
    assert env.instruction == env.sub_env("deep").instruction
    assert "easy" not in env._envs  # built on first use only
    env.reset(f"easy/00{env.sub_env('easy').task_ids('train')[0]}")
    assert env.name == "easy" and env.task_id == f"easy/{env.sub_env('easy').task_ids('train')[0]}"


@pytest.mark.parametrize("task_id", ["nope/1", "17", "/1"])
def test_unknown_prefix_names_the_valid_ones(task_id):
    env = two_textcrafts()
    with pytest.raises(UnknownTaskError, match="easy, deep"):
        env.reset(task_id)
    with pytest.raises(UnknownTaskError):
        env.expert_actions(task_id)


def test_clone_is_independent_and_cheap():
    env = two_textcrafts()
    task_id = env.task_ids("train")[1]
    env.reset(task_id)
    actions = env.expert_actions(task_id)
    env.step(actions[0])
    copy = env.clone()
    assert copy.task_id == env.task_id and copy.actions == env.actions and copy.name == env.name
    assert copy.active is not env.active and copy.active.inventory == env.active.inventory
    copy.step(actions[1])
    assert env.actions == actions[:1] and copy.actions == actions[:2]
    assert env.active.inventory != copy.active.inventory
    assert env.step("inventory")[0] != copy.step("inventory")[0]
    # the clone can move on to another sub-environment's task
    copy.reset(env.task_ids("train")[0])
    assert copy.name == "easy" and env.name == "deep"


def test_expert_actions_solve_tasks_through_the_wrapper():
    with make_env("multitask", envs={"easy": {"env": "textcraft", "max_depth": 1},
                                     "textcraft": {"min_depth": 2, "max_depth": 2}}) as env:
        for task_id in env.task_ids("test")[:6]:
            env.reset(task_id)
            reward, done = 0.0, False
            for action in env.expert_actions(task_id):
                _, reward, done = env.step(action)
            assert (reward, done) == (1.0, True), task_id


def test_close_closes_every_built_sub_environment():
    closed: list[str] = []

    class Closing(TextCraftEnv):
        def close(self) -> None:
            closed.append(self.task_id)

    env = MultiTaskEnv({"a": Closing(max_depth=1), "b": lambda: Closing(max_depth=1)})
    env.reset(f"b/{env.sub_env('b').task_ids('train')[0]}")
    env.close()
    assert len(closed) == 2


def textcraft_mix(model: str, **kwargs) -> MultiTaskDataModule:
    return MultiTaskDataModule({"shallow": TextCraftDataModule(model=model, max_depth=1, num_tasks=6, seed=1),
                                "deep": TextCraftDataModule(model=model, min_depth=2, max_depth=2, num_tasks=8)},
                               model=model, seed=2, **kwargs)


def test_datamodule_task_ids_mix_the_children(tiny_model_dir):
    dm = textcraft_mix(tiny_model_dir)
    shallow = dm.children["shallow"].task_ids("train")
    deep = dm.children["deep"].task_ids("train")
    ids = dm.task_ids("train")
    assert (len(shallow), len(deep), len(ids)) == (6, 8, 14)  # each child keeps its own num_tasks
    assert ids[:4] == [f"shallow/{shallow[0]}", f"deep/{deep[0]}", f"shallow/{shallow[1]}", f"deep/{deep[1]}"]
    assert textcraft_mix(tiny_model_dir, num_tasks=5).task_ids("train") == ids[:5]
    assert len(dm.task_ids("test")) == len(dm.children["shallow"].task_ids("test")) + \
        len(dm.children["deep"].task_ids("test"))


def test_datamodule_expert_trajectories_mix_and_use_the_childs_thoughts(tiny_model_dir):
    demos = textcraft_mix(tiny_model_dir).expert_trajectories(8)  # 8 of 6 + 8 tasks: both children
    assert len(demos) == 8 and {d.env for d in demos} == {"shallow", "deep"}
    env = textcraft_mix(tiny_model_dir).make_env()
    for demo in demos:
        assert demo.task_id.startswith(f"{demo.env}/") and demo.id.startswith(f"{demo.env}/{demo.task_id}/")
        sub = env.sub_env(demo.env)
        depth = sub.depth_of(demo.task_id.split("/", 1)[1])
        assert depth == 1 if demo.env == "shallow" else depth == 2
        # TextCraftDataModule's thoughts name the goal: the child's expert_thought ran on its own env
        goal = sub.goal_of(demo.task_id.split("/", 1)[1])
        assert goal in demo.messages[HEADER_LEN]["content"]
    env.close()


def test_list_of_children_is_named_by_environment(tiny_model_dir):
    dm = MultiTaskDataModule([TextCraftDataModule(model=tiny_model_dir, max_depth=1)], model=tiny_model_dir)
    assert list(dm.children) == ["textcraft"]
    with pytest.raises(ValueError, match="mapping"):
        MultiTaskDataModule([TextCraftDataModule(max_depth=1), TextCraftDataModule(max_depth=2)])


def test_mistake_labels_come_from_the_task_s_environment():
    from search_fakes import ToyEnv

    env = MultiTaskEnv({"easy": lambda: TextCraftEnv(max_depth=1), "toy": ToyEnv})
    textcraft = TextCraftEnv(max_depth=1)
    task = textcraft.task_ids("train")[0]
    path = ["inventory", *textcraft.expert_actions(task)]
    assert env.label_mistakes(f"easy/{task}", path) == textcraft.label_mistakes(task, path) == [True, False, False]
    assert env.label_mistakes("toy/t0", ["good"]) is None  # ToyEnv has no labels
    assert not env.labels_mistakes  # so transition: oracle is refused for the mix
    assert MultiTaskEnv({"easy": lambda: TextCraftEnv(max_depth=1)}).labels_mistakes
