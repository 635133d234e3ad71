"""TextCraft's goal order: agentr's task ids taken from a running AgentGym TextCraft server."""

from __future__ import annotations

import contextlib
import json
import random
import re
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from agentr.cli import main
from agentr.data.datamodule import TextCraftDataModule
from agentr.envs import TextCraftEnv
from agentr.envs.server import make_server
from agentr.envs.textcraft import AGENTGYM_TEST_IDS
from agentr.errors import ProvenanceError, SettingError
from agentr.provenance import env_description
from agentr.search.run_dir import check_run_settings

BANDS = ((0, 125), (125, 416), (416, 533), (533, 544))


def another_machines_order(seed: int) -> list[str]:
    """AgentGym's numbering on a machine whose `os.listdir` lists the recipes in a shuffled
    order: a stable sort on depth, so the bands hold the same goals in another order."""
    book = TextCraftEnv(split_scheme="agentgym").book
    listing = sorted(book.recipes)
    random.Random(seed).shuffle(listing)
    return sorted(listing, key=book.depth)


@contextlib.contextmanager
def agentgym_textcraft_server(order: list[str], lifetime: float = 60.0):
    """A stand-in for AgentGym's TextCraft server (agentenv_textcraft's answer shapes) numbering
    goals by `order`: `/create` starts task `id`, `/reset` task `data_idx % len(order)`,
    `/close` answers true. It stops itself after `lifetime` seconds whatever the test does."""
    local = TextCraftEnv(split_scheme="agentgym")
    calls: Counter = Counter()
    instances: dict[int, bool] = {}

    def observation(data_idx: int) -> str:
        return local.tasks.task(str(local.tasks.index_of[order[data_idx % len(order)]])).observation

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])) or b"{}")
            calls[self.path] += 1
            if self.path == "/create":
                env_id = len(instances)
                instances[env_id] = True
                answer = {"id": env_id, "observation": observation(env_id), "done": False, "reward": 0}
            elif self.path == "/reset" and instances.get(body["id"]):
                answer = {"id": body["id"], "observation": observation(body["data_idx"]),
                          "done": False, "reward": 0}
            elif self.path == "/close":
                answer = instances.pop(body["id"], False)
            else:
                answer = {"error": f"The id {body.get('id')} is not valid."}
            payload = json.dumps(answer).encode()
            self.send_response(200)  # AgentGym answers its errors with 200 too
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    deadline = threading.Timer(lifetime, server.shutdown)
    deadline.daemon = True
    deadline.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", calls, instances, observation
    finally:
        deadline.cancel()
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def goal_file(tmp_path, goals: list[str], name: str = "goals.json"):
    path = tmp_path / name
    path.write_text(json.dumps(goals))
    return path


def test_goal_order_from_a_running_agentgym_server_gives_task_i_the_servers_goal_i(tmp_path, capsys):
    order = another_machines_order(seed=0)
    out = tmp_path / "goals.json"
    with agentgym_textcraft_server(order) as (url, calls, instances, observation):
        main(["textcraft-goals", "--server", url, "--out", str(out), "--timeout", "5"])
    assert calls["/create"] == 1 and calls["/reset"] == 544 and not instances  # closed
    assert "544 task ids" in capsys.readouterr().out
    assert json.loads(out.read_text()) == order

    env = TextCraftEnv(split_scheme="agentgym", goal_order=str(out))
    for task_id in range(544):  # the server's first observation of the same id, byte for byte
        assert env.reset(str(task_id)) == observation(task_id)
        assert env.tasks.task(str(task_id)).goal == order[task_id]
    assert env.task_ids("test") == sorted(AGENTGYM_TEST_IDS, key=int)  # the paper's ids
    assert env.spawn().tasks.goals == env.tasks.goals
    dm = TextCraftDataModule(split_scheme="agentgym", goal_order=str(out))
    assert dm.make_env().tasks.goals == tuple(order)
    # without it the ids keep their bands but mostly name other goals than this server's
    default = TextCraftEnv(split_scheme="agentgym").tasks.goals
    assert sum(a == b for a, b in zip(default, order)) < 20
    for start, stop in BANDS:
        assert set(default[start:stop]) == set(order[start:stop])


def test_textcraft_goals_refuses_a_server_that_does_not_number_as_agentgym(tmp_path, capsys):
    """agentr's own server with its default numbering (deepest goals first) is no AgentGym
    numbering: the command says so in one line and writes nothing."""
    server = make_server("textcraft", port=0)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        with pytest.raises(SystemExit) as exit_:
            main(["textcraft-goals", "--server", server.url, "--out", str(tmp_path / "g.json")])
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
    assert exit_.value.code == 2 and not (tmp_path / "g.json").exists()
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"agentr: error: goal_order {server.url}: id ") and "\n" not in err
    assert "AgentGym numbers goals shallowest first" in err


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
