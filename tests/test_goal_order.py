"""TextCraft's goal order: agentr's task ids taken from a running AgentGym TextCraft server."""

from __future__ import annotations

import json
import random
import re

import pytest

from agentr.cli import main
from agentr.data.datamodule import TextCraftDataModule
from agentr.envs import TextCraftEnv
from agentr.errors import ProvenanceError, SettingError
from agentr.provenance import env_description
from agentr.search.run_dir import check_run_settings


def another_machines_order(seed: int) -> list[str]:
    """AgentGym's numbering on a machine whose `os.listdir` lists the recipes in a shuffled
    order: a stable sort on depth, so the bands hold the same goals in another order."""
    book = TextCraftEnv(split_scheme="agentgym").book
    listing = sorted(book.recipes)
    random.Random(seed).shuffle(listing)
    return sorted(listing, key=book.depth)


def goal_file(tmp_path, goals: list[str], name: str = "goals.json"):
    path = tmp_path / name
    path.write_text(json.dumps(goals))
    return path


def test_bad_goal_orders_are_refused_in_one_line(tmp_path, capsys):
    order = another_machines_order(seed=1)
    cases = {
        "lists 543 goals; AgentGym's TextCraft numbers 544": order[:-1],
        "id 7, 'minecraft:diamond_pickaxe_handle', is not a craftable item":
            order[:7] + ["diamond pickaxe handle"] + order[8:],
        f"'{order[3].removeprefix('minecraft:').replace('_', ' ')}' is listed twice (ids 3 and 4)":
            order[:4] + [order[3]] + order[5:],
        "has depth 3 after depth 4": list(TextCraftEnv(min_depth=1).tasks.goals),  # agentr's order
    }
    for message, goals in cases.items():
        with pytest.raises(SettingError, match=re.escape(message)):
            TextCraftEnv(split_scheme="agentgym", goal_order=goal_file(tmp_path, goals))
    good = goal_file(tmp_path, order)
    with pytest.raises(SettingError, match="needs split_scheme='agentgym', not 'agentr'"):
        TextCraftEnv(goal_order=good)
    with pytest.raises(SettingError, match="not a JSON list of goal names"):
        TextCraftEnv(split_scheme="agentgym", goal_order=goal_file(tmp_path, {"0": "stick"}))
    with pytest.raises(SettingError, match="cannot read it"):
        TextCraftEnv(split_scheme="agentgym", goal_order=tmp_path / "missing.json")
    # on the command line: one line, exit status 2, before any model loads
    short = goal_file(tmp_path, order[:10], "short.json")
    options = json.dumps({"split_scheme": "agentgym", "goal_order": str(short)})
    with pytest.raises(SystemExit) as exit_:
        main(["evaluate", "--model", str(tmp_path / "no-model"), "--env", "textcraft",
              "--env_options", options, "--out_dir", str(tmp_path / "eval")])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err == f"agentr: error: goal_order {short}: lists 10 goals; AgentGym's TextCraft " \
                  "numbers 544, one per craftable item"


def test_a_run_with_another_goal_order_does_not_resume(tmp_path):
    path = goal_file(tmp_path, another_machines_order(seed=2))
    options = {"split_scheme": "agentgym", "goal_order": str(path)}
    first = {"env": env_description("textcraft", options), "split": "train"}
    check_run_settings(tmp_path, first)
    moved = goal_file(tmp_path, another_machines_order(seed=2), "moved.json")
    check_run_settings(tmp_path, {"env": env_description(  # the same goals elsewhere: resumes
        "textcraft", {**options, "goal_order": str(moved)}), "split": "train"})
    goal_file(tmp_path, another_machines_order(seed=3))  # other goals at the same path
    with pytest.raises(ProvenanceError, match="env.options.goal_order.digest"):
        check_run_settings(tmp_path, {"env": env_description("textcraft", options), "split": "train"})
    dm = TextCraftDataModule(split_scheme="agentgym", goal_order=str(moved))
    assert dm.env_description()["options"]["goal_order"] == first["env"]["options"]["goal_order"]
    # without the option, records are what they were before it existed
    assert env_description("textcraft", {"split_scheme": "agentgym"})["options"] == {
        "split_scheme": "agentgym"}
    assert "goal_order" not in TextCraftDataModule(split_scheme="agentgym").env_description()["options"]
    multi = env_description("multitask", {"envs": {"tc": {"env": "textcraft", "goal_order": str(moved)}}})
    assert multi["options"]["envs"]["tc"]["goal_order"] == first["env"]["options"]["goal_order"]
