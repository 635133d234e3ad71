"""TextCraft: ADaPT's format and rules, determinism, splits, the expert, and a text-only oracle."""

from __future__ import annotations

import hashlib
import math
import os
import random
import re
import subprocess
import sys
from functools import lru_cache

import pytest

from agentr.envs import Environment, TextCraftEnv, UnknownTaskError
from agentr.envs.textcraft import AGENTGYM_TEST_IDS, AGENTGYM_TRAIN_IDS

LINE = re.compile(r"^craft (\d+) (.+?) using (.+)$")


@pytest.fixture(scope="module")
def env() -> TextCraftEnv:
    return TextCraftEnv(min_depth=1)  # every goal


def task_of(env: TextCraftEnv, goal: str) -> str:
    return str(env.tasks.goals.index("minecraft:" + goal.replace(" ", "_")))


# ---- a planner that reads only the first observation ------------------------------------------
def oracle_actions(observation: str) -> list[str]:
    """Plan a solution from the text of the first observation alone (no recipe data)."""
    head, goal_line = observation.rsplit("\n\nGoal: craft ", 1)
    goal = goal_line.removesuffix(".")
    recipes: dict[str, list[tuple[int, list[tuple[int, str]]]]] = {}
    for line in head.split("\n")[1:]:
        match = LINE.match(line)
        ingredients = [
            (int(c), n) for c, n in (p.strip().split(" ", 1) for p in match.group(3).split(","))
        ]
        recipes.setdefault(match.group(2), []).append((int(match.group(1)), ingredients))
    outputs = sorted(recipes)

    def resolve(name: str) -> str:
        if name in recipes:
            return name
        # A generic ingredient ("planks"): several listed outputs are kinds of it ("oak planks"),
        # none of them made from the ingredient itself ("8 terracotta" -> "green terracotta").
        members = [
            o
            for o in outputs
            if o.endswith(" " + name) and all(n != name for _, ings in recipes[o] for _, n in ings)
        ]
        return min(members, key=lambda m: (depth(m), m)) if len(members) > 1 else name

    @lru_cache(maxsize=None)
    def depth(item: str) -> int:
        if item not in recipes:
            return 0
        return min(max(depth(resolve(n)) + 1 for _, n in ings) for _, ings in recipes[item])

    choice = {
        item: min(rs, key=lambda r: max(depth(resolve(n)) for _, n in r[1]))
        for item, rs in recipes.items()
    }
    order: list[str] = []
    seen: set[str] = set()

    def visit(item: str) -> None:
        if item not in seen:
            seen.add(item)
            for _, name in choice[item][1] if item in choice else ():
                visit(resolve(name))
            order.append(item)

    visit(goal)
    need = dict.fromkeys(order, 0)
    need[goal] = 1
    batches: dict[str, int] = {}
    for item in reversed(order):
        if item in choice and need[item]:
            out, ingredients = choice[item]
            batches[item] = math.ceil(need[item] / out)
            for count, name in ingredients:
                need[resolve(name)] += batches[item] * count
    actions = [f"get {need[i]} {i}" for i in order if i not in choice and need[i]]
    for item in order:
        if batches.get(item):
            out, ingredients = choice[item]
            using = ", ".join(f"{c} {resolve(n)}" for c, n in ingredients)
            actions += [f"craft {out} {item} using {using}"] * batches[item]
    return actions


def play(env: Environment, task_id: str, actions: list[str]) -> tuple[float, bool, list[str]]:
    env.reset(task_id)
    reward, done, observations = 0.0, False, []
    for action in actions:
        observation, reward, done = env.step(action)
        observations.append(observation)
        if done:
            break
    return reward, done, observations


# ---- format ---------------------------------------------------------------------------------
def test_first_observation_has_adapt_format(env):
    for task_id in env.task_ids("test")[:20] + env.task_ids("train")[:20]:
        observation = env.reset(task_id)
        assert observation.startswith("Crafting commands:\n")
        head, goal = observation.split("\n\nGoal: craft ")
        assert goal == env.goal_of(task_id) + "."
        lines = head.split("\n")[1:]
        assert lines and all(LINE.match(line) for line in lines)
        assert len(lines) == len(set(lines))


def test_observations_match_adapt_strings():
    env = TextCraftEnv(min_depth=1)
    env.reset(task_of(env, "stick"))
    assert env.step("inventory") == ("Inventory: You are not carrying anything.", 0.0, False)
    assert env.step("get 1 oak logs") == ("Got 1 oak logs", 0.0, False)
    assert env.step("get 2 oak logs")[0] == "Got 2 oak logs"
    assert env.step("inventory")[0] == "Inventory: [oak logs] (3) "
    assert env.step("craft 4 oak planks using 1 oak logs") == (
        "Crafted 4 minecraft:oak_planks",
        0.0,
        False,
    )
    assert env.step("inventory")[0] == "Inventory: [oak logs] (2) [oak planks] (4) "
    # a craftable item, a tag and an unknown item cannot be fetched
    assert env.step("get 4 oak planks")[0] == "Could not find oak planks"
    assert env.step("get 2 planks")[0] == "Could not find planks"
    assert env.step("get 1 unobtainium")[0] == "Could not find unobtainium"
    # a tag ingredient takes a member, not the tag's name
    assert env.step("craft 4 stick using 2 planks")[0] == (
        "Could not find enough items to craft minecraft:stick"
    )
    assert env.step("craft 4 stick using 3 oak planks")[0] == (
        "Could not find a valid recipe for minecraft:stick"
    )
    assert env.step("craft 4 stick using 9 oak planks")[0] == (
        "Could not find enough items to craft minecraft:stick"
    )
    assert env.step("craft 4 stick using two oak planks")[0] == "Wrong item format: two oak planks"
    assert env.step("dance")[0] == "Could not execute dance"
    assert env.step("craft 4 stick using 2 oak planks") == ("Crafted 4 minecraft:stick", 1.0, True)
    assert env.step("inventory") == ("The goal is already crafted: the episode is over.", 1.0, True)


def test_output_count_is_not_checked_by_default_and_can_be():
    lenient, strict = TextCraftEnv(min_depth=1), TextCraftEnv(min_depth=1, check_output_count=True)
    for env in (lenient, strict):
        env.reset(task_of(env, "stick"))
        env.step("get 1 oak logs")
    assert (
        lenient.step("craft 3 oak planks using 1 oak logs")[0] == "Crafted 4 minecraft:oak_planks"
    )
    assert strict.step("craft 3 oak planks using 1 oak logs")[0] == (
        "Could not find a valid recipe for minecraft:oak_planks"
    )
    assert strict.step("craft 4 oak planks using 1 oak logs")[0] == "Crafted 4 minecraft:oak_planks"


def test_actions_are_normalised_and_never_raise(env):
    env.reset(task_of(env, "stick"))
    assert env.step("  Get 2   Bamboo. ")[0] == "Got 2 bamboo"
    junk = [
        "",
        " ",
        "get",
        "get x y",
        "get -1 bamboo",
        "get 0 bamboo",
        "craft",
        "craft using",
        "craft 1 stick using",
        "craft 1 stick using ,",
        "craft stick using 2 bamboo, , 1",
        "craft 1 stick using 2 bamboo, 2 bamboo",
        "\x00",
        "get 99999999999999999999 bamboo x",
        "craft 1 stick using 2 bamboo using 2 bamboo",
        "inventory please",
        "Action: get 1 bamboo",
    ]
    for action in junk:
        observation, reward, done = env.step(action)
        assert isinstance(observation, str) and observation
        assert reward == 0.0 and not done
    assert env.step("craft stick using 2 bamboo") == ("Crafted 1 minecraft:stick", 1.0, True)


def test_instruction_is_short_and_names_the_commands(env):
    assert len(env.instruction) < 700
    for word in ("get N item", "craft N item using", "inventory"):
        assert word in env.instruction


# ---- determinism ----------------------------------------------------------------------------
_DIGEST = (
    "import hashlib\n"
    "from agentr.envs import TextCraftEnv\n"
    "env = TextCraftEnv(min_depth=1)\n"
    "h = hashlib.sha256()\n"
    "for t in sorted(env.task_ids('train') + env.task_ids('test'), key=int):\n"
    "    h.update(env.reset(t).encode()); h.update(repr(env.expert_actions(t)).encode())\n"
    "print(h.hexdigest())\n"
)


def test_byte_identical_across_processes_and_hash_seeds(env):
    digests = set()
    for seed in ("0", "1", "4242"):
        result = subprocess.run(
            [sys.executable, "-c", _DIGEST],
            env={**os.environ, "PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
            check=True,
        )
        digests.add(result.stdout.strip())
    assert len(digests) == 1
    here = hashlib.sha256()
    for task_id in sorted(env.task_ids("train") + env.task_ids("test"), key=int):
        here.update(env.reset(task_id).encode())
        here.update(repr(env.expert_actions(task_id)).encode())
    assert digests == {here.hexdigest()}


def test_reset_is_repeatable_and_does_not_drift(env):
    first = env.reset("7")
    for task_id in env.task_ids("train")[:50]:
        env.reset(task_id)
        for action in env.expert_actions(task_id):
            env.step(action)
    assert env.reset("7") == first


# ---- task ids and splits --------------------------------------------------------------------
def test_default_splits_are_adapts_goals_with_100_test_tasks():
    env = TextCraftEnv()
    train, test = env.task_ids("train"), env.task_ids("test")
    assert len(test) == 100 and len(train) == 319
    assert not set(train) & set(test)
    assert sorted(map(int, train + test)) == list(range(419))  # ADaPT's goals: depth >= 2
    for split in (train, test):
        assert {env.depth_of(t) for t in split} == {2, 3, 4}
    assert env.depth_of("0") == 4  # deepest first, as ADaPT


@pytest.mark.parametrize(
    ("options", "train", "test", "depths"),
    [
        ({}, 319, 100, {2, 3, 4}),
        ({"max_depth": 1}, 95, 30, {1}),
        ({"max_depth": 2}, 317, 99, {1, 2}),
        ({"min_depth": 2, "max_depth": 2}, 222, 69, {2}),
        ({"min_depth": 1}, 414, 130, {1, 2, 3, 4}),
    ],
)
def test_difficulty_options_select_goals_by_depth(options, train, test, depths):
    env = TextCraftEnv(**options)
    assert (len(env.task_ids("train")), len(env.task_ids("test"))) == (train, test)
    for split in ("train", "test"):
        assert {env.depth_of(t) for t in env.task_ids(split)} == depths
    everything = TextCraftEnv(min_depth=1)
    assert set(env.task_ids("test")) <= set(everything.task_ids("test"))  # a goal keeps its split


# ---- the Agent-R paper's numbering and splits (AgentGym's construction) -----------------------
def test_agentgym_numbering_is_depth_sorted_shallowest_first_ties_by_item_id():
    env = TextCraftEnv(split_scheme="agentgym")
    book = env.book
    assert env.num_tasks == len(book.recipes) == 544
    goals = [env.tasks.goals[i] for i in range(544)]
    assert sorted(goals) == sorted(book.recipes)  # every craftable item once
    keys = [(book.depth(g), g) for g in goals]
    assert keys == sorted(keys)
    # the depth boundaries that the paper's id lists rely on
    first_of_depth = {
        d: min(i for i, (depth, _) in enumerate(keys) if depth == d) for d in range(1, 5)
    }
    assert first_of_depth == {1: 0, 2: 125, 3: 416, 4: 533}
    for task_id in ("0", "124", "125", "415", "416", "532", "533", "543"):  # sampled indices
        goal = env.tasks.goals[int(task_id)]
        assert env.goal_of(task_id) == goal.removeprefix("minecraft:").replace("_", " ")
        assert env.depth_of(task_id) == book.depth(goal)
        # the same goal as under agentr's numbering, with its own observation and expert
        agentr = TextCraftEnv(min_depth=1)
        same = task_of(agentr, env.goal_of(task_id))
        assert env.reset(task_id) == agentr.reset(same)
        assert play(env, task_id, env.expert_actions(task_id))[:2] == (1.0, True)
    assert env.goal_of("0") == "acacia planks"  # depth 1, first item id


def test_agentgym_servers_agree_on_depth_bands_but_not_on_the_goal_of_an_id():
    """AgentGym's server numbers goals by a stable sort on depth of its recipe files' goals in
    `os.listdir` order, which differs between machines: every order puts the same goals in each
    depth band (ids 0-124, 125-415, 416-532, 533-543), but an id's goal follows the order."""
    env = TextCraftEnv(split_scheme="agentgym")
    ours = [env.tasks.goals[i] for i in range(544)]
    listing = sorted(env.book.recipes)
    random.Random(0).shuffle(listing)  # another machine's directory order
    theirs = sorted(listing, key=env.book.depth)  # AgentGym's `sorted(..., key=depth)`
    for start, stop in ((0, 125), (125, 416), (416, 533), (533, 544)):
        assert set(theirs[start:stop]) == set(ours[start:stop])
    assert sum(a == b for a, b in zip(ours, theirs)) < 20  # per-id goals mostly differ


def test_paper_splits_are_the_official_ids_and_disjoint():
    env = TextCraftEnv(split_scheme="agentgym")
    train, test = env.task_ids("train"), env.task_ids("test")
    assert len(train) == 374 and len(test) == 100 and not set(train) & set(test)
    assert set(test) == AGENTGYM_TEST_IDS and set(train) == AGENTGYM_TRAIN_IDS
    assert min(map(int, train)) == 31 and max(map(int, train)) == 537
    counts = {d: sum(env.depth_of(t) == d for t in test) for d in (1, 2, 3, 4)}
    assert counts == {1: 31, 2: 41, 3: 25, 4: 3}
    # ids 0-99, which some take for the test set, share 69 ids with the official train list
    assert len(AGENTGYM_TRAIN_IDS & {str(i) for i in range(100)}) == 69
    shallow = TextCraftEnv(split_scheme="agentgym", max_depth=1)
    assert shallow.task_ids("test") == [str(i) for i in range(31)]


def test_explicit_goal_lists_replace_splits_and_stay_disjoint():
    env = TextCraftEnv(split_scheme="agentgym", test_goals=["stick", "minecraft:oak_planks"])
    ids = [task_of(env, "stick"), task_of(env, "oak planks")]
    assert env.task_ids("test") == ids
    assert not set(env.task_ids("train")) & set(ids)
    assert len(env.task_ids("train")) == 374 - sum(t in AGENTGYM_TRAIN_IDS for t in ids)
    both = TextCraftEnv(train_goals=["chest", "stick"], test_goals=["oak planks"])
    assert [both.goal_of(t) for t in both.task_ids("train")] == ["chest", "stick"]
    assert [both.goal_of(t) for t in both.task_ids("test")] == ["oak planks"]
    assert both.spawn().task_ids("train") == both.task_ids("train")
    with pytest.raises(ValueError, match="share stick"):
        TextCraftEnv(train_goals=["stick", "chest"], test_goals=["stick"])
    with pytest.raises(ValueError, match="test_goals names 'diamond pickaxe handle'"):
        TextCraftEnv(test_goals=["diamond pickaxe handle"])
    with pytest.raises(ValueError, match="split_scheme='adapt'"):
        TextCraftEnv(split_scheme="adapt")


def test_datamodule_passes_the_split_options():
    from agentr.data.datamodule import TextCraftDataModule

    dm = TextCraftDataModule(split_scheme="agentgym", test_goals=["stick"])
    env = dm.make_env()
    assert env.split_scheme == "agentgym" and env.min_depth == 1
    assert [env.goal_of(t) for t in env.task_ids("test")] == ["stick"]


def test_bad_options_and_unknown_task_ids():
    with pytest.raises(ValueError, match="min_depth"):
        TextCraftEnv(min_depth=3, max_depth=2)
    with pytest.raises(ValueError, match="split"):
        TextCraftEnv().task_ids("dev")
    env = TextCraftEnv()
    for bad in ("544", "-1", "abc", "", "1.5"):
        with pytest.raises(UnknownTaskError, match="'0' to '543'"):
            env.reset(bad)
    with pytest.raises(RuntimeError, match="reset"):
        TextCraftEnv().step("inventory")
    assert env.reset(3) == env.reset("3")


# ---- clone ----------------------------------------------------------------------------------
def test_clone_copies_state_without_replay(env, monkeypatch):
    task_id = task_of(env, "chest")
    env.reset(task_id)
    actions = env.expert_actions(task_id)
    for action in actions[:2]:
        env.step(action)
    calls = []
    monkeypatch.setattr(TextCraftEnv, "_reset", lambda self, t: calls.append(t))
    copy = env.clone()
    assert not calls and TextCraftEnv.cheap_clone
    assert copy.inventory == env.inventory and copy.actions == env.actions
    inventory = env.step("inventory")
    for action in actions[2:]:
        observation, reward, done = copy.step(action)
    assert (reward, done) == (1.0, True)
    assert env.step("inventory") == inventory  # the original is untouched
    assert not env.done


# ---- solutions ------------------------------------------------------------------------------
def test_expert_solves_every_task_of_both_splits(env):
    for split in ("train", "test"):
        for task_id in env.task_ids(split):
            actions = env.expert_actions(task_id)
            reward, done, observations = play(env, task_id, actions)
            assert (reward, done) == (1.0, True), (task_id, actions, observations)
            assert len(observations) == len(actions)  # no wasted or invalid command


@pytest.mark.parametrize("options", [{}, {"min_depth": 1}])
def test_oracle_reading_only_the_first_observation_solves_99_percent(options):
    env = TextCraftEnv(**options)
    test = env.task_ids("test")
    solved = sum(play(env, t, oracle_actions(env.reset(t)))[0] == 1.0 for t in test)
    assert solved >= 0.99 * len(test), f"{solved}/{len(test)}"


# ---- mistake labels (ground truth for transition points) --------------------------------------
def test_mistake_labels_on_hand_built_paths(env):
    planks = task_of(env, "acacia planks")  # expert: get 1 acacia logs, craft 4 acacia planks ...
    craft = "craft 4 acacia planks using 1 acacia logs"
    path = ["inventory",            # no effect
            "get 1 dirt",           # an item the plan does not use
            craft,                  # rejected: no logs yet
            "get 1 acacia logs",    # progress
            "get 1 acacia logs",    # a second log the plan does not need
            craft]                  # crafts the goal
    assert env.label_mistakes(planks, path) == [True, True, True, False, True, False]
    wood = task_of(env, "acacia wood")  # needs 4 acacia log in one craft
    assert env.expert_actions(wood)[0] == "get 4 acacia log"
    assert env.label_mistakes(wood, ["get 2 acacia log", "get 2 acacia log", "get 1 acacia log"]) == [
        True, False, True]  # half a get is still one get to go; then the plan is one craft
    assert env.label_mistakes(planks, []) == []


def test_expert_paths_have_no_mistake_and_labels_leave_the_episode_alone(env):
    for task_id in env.task_ids("train")[:40] + env.task_ids("test")[-10:]:
        assert not any(env.label_mistakes(task_id, env.expert_actions(task_id))), task_id
    task = task_of(env, "acacia planks")
    env.reset(task)
    env.step("get 1 acacia logs")
    inventory = env.step("inventory")
    assert env.label_mistakes(task, ["inventory"]) == [True]
    assert env.step("inventory") == inventory and env.task_id == task
    assert env.labels_mistakes and not Environment.labels_mistakes


def test_solver_plans_from_a_held_inventory(env):
    from agentr.envs.textcraft import solve

    goal = env.tasks.task(task_of(env, "acacia planks")).goal
    assert solve(env.book, goal, {"minecraft:acacia_logs": 1}) == ["craft 4 acacia planks using 1 acacia logs"]
    for task_id in env.task_ids("train")[:20]:
        expert = env.expert_actions(task_id)
        env.reset(task_id)
        env.step(expert[0])
        assert env.steps_to_goal() == len(expert) - 1
        assert solve(env.book, env.tasks.task(task_id).goal, {}) == expert
