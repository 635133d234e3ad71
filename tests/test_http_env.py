"""HTTP environments: agentr's server and client together, and failures that must not hang."""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from agentr.envs import HTTPEnvError, HTTPEnvironment, TextCraftEnv, UnknownTaskError, make_env
from agentr.envs.registry import ENVIRONMENTS, env_class
from agentr.envs.server import make_server


@pytest.fixture
def server():
    server = make_server("textcraft", port=0, options={"max_depth": 2})
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def client(url: str, **kwargs) -> HTTPEnvironment:
    return HTTPEnvironment(url, timeout=5, retries=2, backoff=0.05, **kwargs)


def test_registry_builds_environments_by_name():
    assert {"textcraft", "sciworld", "http"} <= set(ENVIRONMENTS)
    env = make_env("textcraft", max_depth=1)
    assert isinstance(env, TextCraftEnv) and env.max_depth == 1
    assert env_class("http") is HTTPEnvironment
    with pytest.raises(KeyError, match="textcraft"):
        make_env("minecraft")


def test_episode_over_http_matches_in_process_step_for_step(server):
    local = TextCraftEnv(max_depth=2)
    remote = client(server.url)
    assert remote.task_ids("test") == local.task_ids("test")
    assert remote.instruction == local.instruction
    for task_id in local.task_ids("test")[:5]:
        actions = local.expert_actions(task_id)
        assert remote.expert_actions(task_id) == actions
        # a few wrong moves first, then the solution
        actions = ["inventory", "get 1 planks", "craft 1 nothing using 1 air", *actions]
        assert remote.reset(task_id) == local.reset(task_id)
        for action in actions:
            assert remote.step(action) == local.step(action)
        assert remote.done and local.done
    remote.close()


def test_concurrent_clients_each_get_their_own_episode(server):
    local = TextCraftEnv(max_depth=2)
    ids = local.task_ids("train")[:24]
    expected = {}
    for task_id in ids:
        local.reset(task_id)
        expected[task_id] = [local.step(a) for a in ["inventory", *local.expert_actions(task_id)]]
    results: dict[str, list] = {}
    errors: list[BaseException] = []

    def play(chunk: list[str]) -> None:
        try:
            remote = client(server.url)
            for task_id in chunk:
                remote.reset(task_id)
                actions = ["inventory", *remote.expert_actions(task_id)]
                results[task_id] = [remote.step(a) for a in actions]
            remote.close()
        except BaseException as error:  # noqa: BLE001 (reported below)
            errors.append(error)

    threads = [threading.Thread(target=play, args=(ids[i::8],)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors and results == expected


def test_clone_over_http_uses_the_servers_clone(server):
    remote = client(server.url)
    task_id = remote.task_ids("train")[0]
    actions = remote.expert_actions(task_id)
    remote.reset(task_id)
    remote.step(actions[0])
    copy = remote.clone()
    assert copy.env_id != remote.env_id and copy.actions == remote.actions
    for action in actions[1:]:
        result = copy.step(action)
    assert result[1:] == (1.0, True)
    assert not remote.done
    assert remote.step("inventory")[0].startswith("Inventory: [")
    copy.close()
    remote.close()


def test_unknown_task_and_bad_requests_are_clear(server):
    remote = client(server.url)
    with pytest.raises(UnknownTaskError, match="'0' to '543'"):
        remote.reset("9999")
    with pytest.raises(HTTPEnvError, match="no environment with id"):
        remote._request("POST", "/step", {"id": 12345, "action": "inventory"})
    with pytest.raises(HTTPEnvError, match="missing field 'action'"):
        remote._request("POST", "/step", {"id": remote.env_id})
    with pytest.raises(HTTPEnvError, match="no endpoint"):
        remote._request("GET", "/nowhere")


def test_server_dying_mid_episode_gives_a_clear_error_quickly():
    server = make_server("textcraft", port=0)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    remote = client(server.url)
    task_id = remote.task_ids("test")[0]
    remote.reset(task_id)
    remote.step("inventory")
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)
    start = time.monotonic()
    with pytest.raises(HTTPEnvError, match=rf"{server.url}.*(refused|closed)"):
        remote.step("inventory")
    assert time.monotonic() - start < 5


def test_no_server_at_all():
    with socket.socket() as probe:  # a port that nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    remote = client(f"127.0.0.1:{port}", task_ids={"train": ["0"], "test": ["1"]})
    start = time.monotonic()
    with pytest.raises(
        HTTPEnvError, match=rf"http://127.0.0.1:{port}.*connection refused.*3 attempt"
    ):
        remote.reset("0")
    assert time.monotonic() - start < 5
    with pytest.raises(HTTPEnvError, match="pass task_ids"):
        client(f"127.0.0.1:{port}").task_ids("train")


class _Garbage(BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        body = b"<html>not json</html>" if self.path == "/create" else b"{}"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_garbage_answers_and_hung_servers_raise():
    garbage = ThreadingHTTPServer(("127.0.0.1", 0), _Garbage)
    threading.Thread(target=garbage.serve_forever, args=(0.05,), daemon=True).start()
    url = f"http://127.0.0.1:{garbage.server_address[1]}"
    try:
        with pytest.raises(
            HTTPEnvError, match=rf"{url}/create answered something that is not JSON"
        ):
            client(url).reset("0")
    finally:
        garbage.shutdown()
        garbage.server_close()
    # a server that accepts connections and never answers
    with socket.socket() as hung:
        hung.bind(("127.0.0.1", 0))
        hung.listen(8)
        remote = HTTPEnvironment(f"127.0.0.1:{hung.getsockname()[1]}", timeout=0.5, retries=1)
        start = time.monotonic()
        with pytest.raises(HTTPEnvError, match="timeout"):
            remote.reset("0")
        assert time.monotonic() - start < 3


def test_agentgym_field_names(server):
    """A foreign server with WebShop's field names, faked in a few lines."""
    state = {"obs": ""}

    class WebShopLike(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _send(self, payload):
            data = json.dumps(payload).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self):  # noqa: N802
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])) or b"{}")
            if self.path == "/create":
                return self._send(7)
            assert body["env_idx"] == 7
            if self.path == "/reset":
                state["obs"] = f"WebShop [SEP] Instruction: buy item {body['session_id']}"
                return self._send([state["obs"], None])
            if self.path == "/step":
                return self._send(
                    {
                        "state": "clicked " + body["action"],
                        "reward": 0.5,
                        "done": True,
                        "info": None,
                    }
                )
            return self._send({"closed": True})

        def do_GET(self):  # noqa: N802
            assert self.path == "/observation?env_idx=7"
            self._send(state["obs"])

        def log_message(self, *args):
            pass

    fake = ThreadingHTTPServer(("127.0.0.1", 0), WebShopLike)
    threading.Thread(target=fake.serve_forever, args=(0.05,), daemon=True).start()
    try:
        remote = client(
            f"http://127.0.0.1:{fake.server_address[1]}",
            protocol="webshop",
            task_ids={"train": range(10, 20), "test": range(0, 10)},
        )
        assert remote.task_ids("test")[:2] == ["0", "1"]
        assert remote.reset("3") == "WebShop [SEP] Instruction: buy item 3"
        assert remote.step("click[buy now]") == ("clicked click[buy now]", 0.5, True)
        assert remote.expert_actions("3") is None
        remote.close()
    finally:
        fake.shutdown()
        fake.server_close()


def test_serve_env_cli_is_wired():
    from agentr.cli import STAGE_COMMANDS
    from agentr.envs.server import serve_command

    module, function = STAGE_COMMANDS["serve-env"].split(":")
    assert (module, function) == ("agentr.envs.server", "serve_command")
    assert callable(serve_command)
