"""HTTP environments: agentr's server and client together, and failures that must not hang."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from search_fakes import ScriptedEngine, ToyEnv, judge_bad_on, toy_policy

from agentr.envs import (
    Environment,
    HTTPEnvError,
    HTTPEnvironment,
    TextCraftEnv,
    UnknownTaskError,
    make_env,
)
from agentr.envs.http import EPISODE_OVER, PROTOCOLS, ServerUnreachableError
from agentr.envs.registry import ENVIRONMENTS, env_class
from agentr.envs.sciworld import TASKS
from agentr.search.collect import collect
from agentr.search.config import SearchConfig
from agentr.trajectory import read_jsonl
from agentr.envs.server import (
    AGENTGYM_SCIWORLD_SKIPPED,
    ANSWER_FORMATS,
    EnvHTTPServer,
    EnvService,
    _Failure,
    make_server,
)


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
    # an environment of the user's needs no registering: its import path is its name
    assert env_class("agentr.envs.textcraft:TextCraftEnv") is TextCraftEnv
    with pytest.raises(KeyError, match="cannot import NoSuchEnv from agentr.envs.textcraft"):
        make_env("agentr.envs.textcraft:NoSuchEnv")
    with pytest.raises(KeyError, match="not an agentr.envs.Environment subclass"):
        make_env("agentr.envs.registry:make_env")


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
        remote.reset("oak planks")
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
    # a server that is down is said to be down, and not remembered as "not an agentr server"
    remote = client(f"127.0.0.1:{port}")
    for ask in (lambda: remote.task_ids("train"), lambda: remote.instruction):
        with pytest.raises(ServerUnreachableError, match="connection refused"):
            ask()
    assert remote.server_info(required=False) is None
    server = make_server("textcraft", port=port, options={"max_depth": 2})
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        assert remote.task_ids("test") == TextCraftEnv(max_depth=2).task_ids("test")
        assert remote.instruction == TextCraftEnv().instruction
        assert remote.protocol == PROTOCOLS["textcraft"]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


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
    from agentr.cli import _stage_function
    from agentr.commands.serve_env import serve_command

    assert _stage_function("serve-env") is serve_command


# ---- AgentGym's own clients against `agentr serve-env` ----------------------------------------
def _post(url: str, path: str, body: dict) -> dict:
    """requests.post(...).json() with the `assert status_code == 200` of AgentGym's clients."""
    request = urllib.request.Request(
        url + path, json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        assert response.status == 200
        return json.loads(response.read())


def _get(url: str, path: str) -> object:
    """requests.get(...).json() with the `assert status_code == 200` of AgentGym's clients."""
    with urllib.request.urlopen(url + path, timeout=5) as response:
        assert response.status == 200
        return json.loads(response.read())


class AgentGymClient:
    """The fields AgentGym's clients (agentenv.envs.textcraft/sciworld/babyai) read, no more:
    `/create` -> id (TextCraft also observation); `/reset` -> observation (SciWorld:
    task_description + "\\n" + observation); `/step` -> observation, done, and the reward
    (TextCraft: reward; SciWorld, BabyAI: score)."""

    def __init__(self, url: str, kind: str) -> None:
        self.url, self.kind = url, kind
        created = _post(url, "/create", {})
        self.env_id = created["id"]
        if kind == "textcraft":
            self.observation = created["observation"]

    def reset(self, data_idx: int) -> str:
        answer = _post(self.url, "/reset", {"id": self.env_id, "data_idx": data_idx})
        if self.kind == "sciworld":
            return answer["task_description"] + "\n" + answer["observation"]
        if self.kind == "babyai":
            answer["reward"], answer["score"], answer["done"]
        return answer["observation"]

    def step(self, action: str) -> tuple[str, float, bool]:
        answer = _post(self.url, "/step", {"id": self.env_id, "action": action})
        if self.kind != "textcraft":
            answer["reward"]
            return answer["observation"], answer["score"], answer["done"]
        return answer["observation"], answer["reward"], answer["done"]

    def close(self) -> bool:
        return _post(self.url, "/close", {"id": self.env_id})


class ScoredEnv(Environment):
    """A game with a task description line and partial scores: `progress` adds 0.25, `finish`
    completes (1.0), anything else changes nothing."""

    name = "scored"

    def __init__(self) -> None:
        super().__init__()
        self.score = 0.0

    @property
    def instruction(self) -> str:
        return "Make progress, then finish."

    def task_ids(self, split: str) -> list[str]:
        return ["boil:0", "melt:1"] if split == "test" else ["boil:1"]

    def spawn(self) -> ScoredEnv:
        return ScoredEnv()

    def _reset(self, task_id: str) -> str:
        self.score = 0.0
        return f"Your task is to {task_id}.\nThis room is called the kitchen."

    def _step(self, action: str) -> tuple[str, float, bool]:
        if action == "progress":
            self.score = min(self.score + 0.25, 0.75)
        elif action == "finish":
            self.score = 1.0
        return f"You did {action}.", self.score, self.score == 1.0


@contextlib.contextmanager
def serving(service: EnvService, **options):
    server = EnvHTTPServer(("127.0.0.1", 0), service, **options)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


class FailingOnceService(EnvService):
    """agentr's service whose first answer to `GET /info` is an HTTP 500 (a passing fault)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.failed = False

    def handle(self, method, path, query, body):
        if path == "/info" and not self.failed:
            self.failed = True
            raise _Failure(500, "a passing fault", "InternalError")
        return super().handle(method, path, query, body)


def test_a_failed_info_is_not_remembered():
    """One 500 on /info fails that use loudly (or, where /info is optional, answers None), and
    the next use asks again: the client does not decide for good that the server is not an
    agentr server, nor play with an empty instruction."""
    for required in (True, False):
        with serving(FailingOnceService("toy", ToyEnv)) as server:
            remote = client(server.url)
            if required:
                with pytest.raises(HTTPEnvError, match="/info failed with HTTP 500"):
                    remote.instruction
            else:
                assert remote.server_info(required=False) is None
            assert remote.instruction == ToyEnv().instruction
            assert remote.task_ids("train") == ToyEnv().task_ids("train")
            assert remote.server_info(required=False)["name"] == "toy"


def test_no_episode_is_played_without_an_instruction():
    with serving(WebShopLikeService("toy", ToyEnv)) as server:  # no /info: not an agentr server
        remote = client(server.url, task_ids={"train": ["t0"], "test": []})
        with pytest.raises(HTTPEnvError, match="no task instruction.*pass instruction="):
            remote.instruction
        assert client(server.url, instruction="Play.").instruction == "Play."


def test_agentgym_textcraft_client_plays_agentgym_task_numbers():
    with serving(EnvService("textcraft", lambda: TextCraftEnv(split_scheme="agentgym"),
                            answer_format=ANSWER_FORMATS["textcraft"])) as server:
        local = TextCraftEnv(split_scheme="agentgym")
        remote = AgentGymClient(server.url, "textcraft")
        assert remote.observation == local.reset("0")  # /create starts task `id`, as AgentGym's
        for data_idx in (0, 140, 533, 544 + 7):  # ids past the 544 goals wrap, as AgentGym's
            task_id = str(data_idx % 544)
            assert remote.reset(data_idx) == local.reset(task_id)
            for action in local.expert_actions(task_id):
                result = remote.step(action)
                assert result == local.step(action)
            assert result[1:] == (1, True)
        remote.close()


def test_agentgym_sciworld_and_babyai_clients_read_their_fields():
    for kind in ("sciworld", "babyai"):
        with serving(EnvService("scored", ScoredEnv, answer_format=ANSWER_FORMATS[kind])) as server:
            remote, local = AgentGymClient(server.url, kind), ScoredEnv()
            # SciWorld numbers AgentGym's games: 30 variations of boil, then melt's
            data_idx, task_id = (31, "melt:1") if kind == "sciworld" else (31, "31")
            assert remote.reset(data_idx) == local.reset(task_id)
            scores = [remote.step(a)[1] for a in ("look", "progress", "progress", "finish")]
            scale = 100 if kind == "sciworld" else 1
            assert scores == [0, 0.25 * scale, 0.5 * scale, 1.0 * scale]
            remote.reset(data_idx)
            rewards = [_post(server.url, "/step", {"id": remote.env_id, "action": a})["reward"]
                       for a in ("progress", "progress", "finish")]
            # SciWorld's reward is the change of score; BabyAI's is the reward itself
            assert rewards == ([25, 25, 50] if kind == "sciworld" else [0.25, 0.5, 1.0])
            # agentr's client reads the same server through the preset /info names
            mine = client(server.url)
            assert mine.protocol == PROTOCOLS[kind]
            assert mine.reset(task_id) == local.reset(task_id)
            for action in ("progress", "finish"):
                assert mine.step(action) == local.step(action)
            mine.close()
            remote.close()


def test_sciworld_numbering_ends_where_agentgyms_does():
    service = EnvService("scored", ScoredEnv, answer_format=ANSWER_FORMATS["sciworld"])
    with serving(service) as server:
        remote = client(server.url)
        remote._ensure_created()
        # every variation of the 23 tasks that AgentGym keeps (10-1 and 10-2 are skipped)
        count = sum(t[1] for t in TASKS.values() if t[0] not in AGENTGYM_SCIWORLD_SKIPPED)
        assert len(TASKS) - len(AGENTGYM_SCIWORLD_SKIPPED) == 23
        last = remote._request("POST", "/reset", {"id": remote.env_id, "data_idx": count - 1})
        assert last["task_description"] == "Your task is to identify-life-stages-2:9."
        with pytest.raises(UnknownTaskError, match=f"games 0 to {count - 1}"):
            remote._request("POST", "/reset", {"id": remote.env_id, "data_idx": count})


def test_agentgym_clients_get_errors_with_status_200_and_close_answers_false():
    """What AgentGym's clients can handle: a refused request answers 200 and `{"error": ...}`
    (they `assert` 200), `close` of a closed instance `false`; agentr's own endpoints keep 404."""
    for kind in ("textcraft", "sciworld", "babyai"):
        with serving(EnvService("scored", ScoredEnv, answer_format=ANSWER_FORMATS[kind])) as server:
            remote = AgentGymClient(server.url, kind)
            remote.reset(0)
            for path, body in (("/step", {"id": 999, "action": "look"}),
                               ("/reset", {"id": 999, "data_idx": 0})):
                assert "no environment with id 999" in _post(server.url, path, body)["error"]
            assert "no environment" in _get(server.url, "/observation?id=999")["error"]
            assert remote.close() is True
            assert remote.close() is False  # closed twice
            answer = _post(server.url, "/step", {"id": remote.env_id, "action": "look"})
            assert "closed" in answer["error"] and "observation" not in answer
            with pytest.raises(urllib.error.HTTPError) as refused:  # agentr's own: 4xx
                _post(server.url, "/clone", {"id": remote.env_id})
            assert refused.value.code == 404
            with pytest.raises(urllib.error.HTTPError) as malformed:
                _post(server.url, "/step", {"id": "x", "action": "look"})
            assert malformed.value.code == 400  # malformed: not an AgentGym error either


def test_sciworld_shape_passes_a_failure_score_through_and_agentr_reads_reward_zero():
    """ScienceWorld scores a failure -100 and ends the task: AgentGym's SciWorld server answers
    that score (and its change as `reward`), agentr's reward is 0."""

    class FailingEnv(ScoredEnv):
        def __init__(self) -> None:
            super().__init__()
            self.raw_score = 0  # as ScienceWorldEnv's: ScienceWorld's own score

        def spawn(self) -> FailingEnv:
            return FailingEnv()

        def _step(self, action: str) -> tuple[str, float, bool]:
            if action == "focus on air":
                self.raw_score = -100
                return "You focus on the air.", 0.0, True
            observation, reward, done = super()._step(action)
            self.raw_score = round(100 * reward)
            return observation, reward, done

    service = EnvService("sciworld", FailingEnv, answer_format=ANSWER_FORMATS["sciworld"])
    with serving(service) as server:
        remote = AgentGymClient(server.url, "sciworld")
        remote.reset(0)
        assert remote.step("progress") == ("You did progress.", 25, False)
        answer = _post(server.url, "/step", {"id": remote.env_id, "action": "focus on air"})
        assert (answer["score"], answer["reward"], answer["done"]) == (-100, -125, True)
        mine = client(server.url)
        mine.reset("boil:0")
        assert mine.step("focus on air") == ("You focus on the air.", 0.0, True)
        mine.close()


def test_textcraft_client_custom_task_is_refused_in_agentgyms_error_shape():
    """AgentGym's TextCraftEnvClient posts `commands`/`goal` to `/create` (None unless a custom
    task is given): without them it gets task `id`'s observation; with them, a clear refusal."""
    service = EnvService("textcraft", lambda: TextCraftEnv(split_scheme="agentgym"),
                         answer_format=ANSWER_FORMATS["textcraft"])
    with serving(service) as server:
        plain = {"minecraft_dir": "agentenv_textcraft/", "commands": None, "goal": None}
        created = _post(server.url, "/create", plain)
        assert created["observation"] == TextCraftEnv(split_scheme="agentgym").reset("0")
        custom = {**plain, "commands": "craft 1 stick using 2 planks", "goal": "minecraft:stick"}
        refused = _post(server.url, "/create", custom)
        assert "id" not in refused and "custom tasks (commands and goal" in refused["error"]
        assert list(service.instances) == [created["id"]]  # nothing was created


# ---- finished episodes ------------------------------------------------------------------------
def test_no_environment_plays_a_step_after_done_in_any_shape():
    """One rule, every environment: a step after done is never played. TextCraft's shape
    answers the episode-over observation with the final reward; SciWorld's and BabyAI's answer
    their servers' "has finished" error."""
    for kind in ("textcraft", "sciworld", "babyai"):
        service = EnvService("scored", ScoredEnv, answer_format=ANSWER_FORMATS[kind])
        with serving(service) as server:
            remote = AgentGymClient(server.url, kind)
            remote.reset(0)
            assert remote.step("finish")[2] is True
            env = service.instances[remote.env_id].env
            answer = _post(server.url, "/step", {"id": remote.env_id, "action": "progress"})
            if kind == "textcraft":
                assert answer == {"observation": EPISODE_OVER, "reward": 1.0, "done": True}
            else:
                assert answer["error"].startswith(f"The task with environment {remote.env_id} "
                                                  "has finished")
            assert env.actions == ["finish"]  # not played
            remote.reset(1)  # a reset starts again
            assert remote.step("progress")[2] is False


def test_step_after_done_over_http_answers_like_a_local_environment(server):
    local, remote = TextCraftEnv(max_depth=2), client(server.url)
    task_id = local.task_ids("test")[0]
    local.reset(task_id)
    remote.reset(task_id)
    for action in local.expert_actions(task_id):
        local.step(action)
        remote.step(action)
    instance = server.service.instances[remote.env_id]
    sent = len(instance.env.actions)
    for action in ("inventory", "get 1 oak logs"):
        observation, reward, done = remote.step(action)
        assert (reward, done) == local.step(action)[1:] == (1.0, True)
        assert observation == EPISODE_OVER
    assert len(instance.env.actions) == sent  # nothing was sent: AgentGym servers would error
    copy = remote.clone()  # a finished episode clones as finished
    assert copy.step("inventory") == (EPISODE_OVER, 1.0, True)
    copy.close()
    remote.close()


# ---- servers without /close: pooled instances -------------------------------------------------
class WebShopLikeService(EnvService):
    """agentr's service without /close and without agentr's extras (/info, /clone, /expert),
    as AgentGym's WebShop and ALFWorld servers; counts its /create and /reset calls."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.calls = Counter()

    def handle(self, method, path, query, body):
        self.calls[path] += 1
        if path in ("/close", "/info", "/clone", "/expert"):
            path = "/no-such-endpoint"  # 404, as FastAPI answers
        return super().handle(method, path, query, body)


def test_pool_bounds_instances_across_a_phase_one_search_over_http(tmp_path):
    bound = 8
    config = SearchConfig(num_simulations=4, n_expand=3, max_depth=4, max_concurrent_trees=1)
    tasks = [f"t{i}" for i in range(5)]
    local = collect(ScriptedEngine(toy_policy(), judge_bad_on("noop", "lose")),
                    lambda: ToyEnv(need=2), tasks, config, tmp_path / "local", progress=False)
    service = WebShopLikeService("toy", lambda: ToyEnv(need=2), max_envs=100)
    with serving(service) as server:
        make_remote = lambda: client(  # noqa: E731
            server.url, instruction=ToyEnv().instruction, max_instances=bound,
            task_ids={"train": tasks, "test": []},
        )
        remote = collect(ScriptedEngine(toy_policy(), judge_bad_on("noop", "lose")),
                         make_remote, tasks, config, tmp_path / "http", progress=False)
        assert service.calls["/close"] >= 1  # tried once, then learned that there is none
        assert service.calls["/create"] == service.next_id <= bound
        assert service.calls["/reset"] > 2 * bound  # instances were reset and reused
        played = lambda result: [  # noqa: E731 (the dataset but the environment's name)
            (t.task_id, t.kind, t.messages, t.meta) for t in read_jsonl(result.dataset)
        ]
        assert played(remote) == played(local) and played(local)
        # past the bound, a clear error instead of another instance
        held = [make_remote() for _ in range(bound + 1)]
        with pytest.raises(HTTPEnvError, match=f"max_instances={bound}"):
            for env in held:
                env.reset("t0")
        assert service.next_id <= bound


def test_webshop_and_alfworld_presets_pool_without_asking():
    assert not PROTOCOLS["webshop"].closes and not PROTOCOLS["alfworld"].closes
    assert PROTOCOLS["textcraft"].closes and PROTOCOLS["sciworld"].closes


# ---- the server under abuse (loopback only, each bounded to about a second) -------------------
def _raw(url: str, request: bytes, timeout: float = 3.0) -> tuple[bytes, float]:
    """Send raw bytes; return everything the server answers before closing, and the seconds."""
    host, port = url.removeprefix("http://").split(":")
    start = time.monotonic()
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        sock.sendall(request)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer, time.monotonic() - start


def _post_raw(body: bytes, length: str | None = None) -> bytes:
    length = str(len(body)) if length is None else length
    head = f"POST /step HTTP/1.1\r\nConnection: close\r\nContent-Length: {length}\r\n\r\n"
    return head.encode() + body


def test_clone_honours_max_envs():
    with serving(EnvService("textcraft", TextCraftEnv, max_envs=2)) as server:
        remote = client(server.url)
        remote.reset("0")
        copy = remote.clone()
        with pytest.raises(HTTPEnvError, match="429.*max_envs"):
            remote.clone()
        copy.close()
        remote.clone().close()  # room again


def test_bad_requests_answer_400_413_408_and_free_their_thread():
    service = EnvService("textcraft", TextCraftEnv)
    with serving(service, max_body_bytes=4096, request_timeout=0.5) as server:
        env_id = _post(server.url, "/create", {})["id"]
        answer, _ = _raw(server.url, _post_raw(b"{}", length="abc"))
        assert answer.startswith(b"HTTP/1.1 400") and b"Content-Length" in answer
        # a huge body is refused from its header, before it is read
        answer, _ = _raw(server.url, _post_raw(b"", length=str(200 << 20)))
        assert answer.startswith(b"HTTP/1.1 413") and b"limit is 4096" in answer
        # a body shorter than its Content-Length: 408 after request_timeout, not a stalled thread
        answer, seconds = _raw(server.url, _post_raw(b'{"id": 0', length="100"))
        assert answer.startswith(b"HTTP/1.1 408") and seconds < 2.5
        # an idle connection is dropped
        answer, seconds = _raw(server.url, b"")
        assert answer == b"" and seconds < 2.5
        for bad in ({"id": 0.9, "action": "inventory"}, {"id": True, "action": "inventory"},
                    {"id": "0.9", "action": "inventory"}):
            answer, _ = _raw(server.url, _post_raw(json.dumps(bad).encode()))
            assert answer.startswith(b"HTTP/1.1 400") and b"'id' must be an integer" in answer
        reset = json.dumps({"id": env_id, "data_idx": 1.5}).encode()
        answer, _ = _raw(server.url, _post_raw(reset).replace(b"/step", b"/reset"))
        assert answer.startswith(b"HTTP/1.1 400") and b"data_idx" in answer
        # still serving, and nothing was created by the bad requests
        assert _post(server.url, "/reset", {"id": env_id, "data_idx": 3})["observation"]
        assert len(service.instances) == 1


def _handler_threads() -> int:
    """Threads serving a connection (socketserver's `process_request_thread`)."""
    return sum("process_request_thread" in t.name for t in threading.enumerate())


def _wait_for(condition, seconds: float = 3.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_stalled_connections_hold_at_most_max_connections_threads():
    with serving(EnvService("toy", ToyEnv), request_timeout=1.0, max_connections=2) as server:
        address = server.server_address[:2]
        with contextlib.ExitStack() as stack:
            stalled = [stack.enter_context(socket.create_connection(address, timeout=3))
                       for _ in range(2)]  # connect, send nothing
            _wait_for(lambda: _handler_threads() == 2)
            for _ in range(4):  # past the bound: answered at once, no thread
                with socket.create_connection(address, timeout=3) as extra:
                    answer = extra.recv(65536)
                assert answer.startswith(b"HTTP/1.1 503") and b"max_connections" in answer
            assert _handler_threads() == 2
            # agentr's client retries the 503 until the stalled connections time out
            remote = HTTPEnvironment(server.url, timeout=5, retries=6, backoff=0.1)
            assert remote.instruction == ToyEnv().instruction
            assert all(sock.recv(65536) == b"" for sock in stalled)  # dropped by the server
        _wait_for(lambda: _handler_threads() == 0)


class SlowService(EnvService):
    """Answers after 0.2 s: time for a client to hang up first."""

    def handle(self, method, path, query, body):
        time.sleep(0.2)
        return super().handle(method, path, query, body)


def test_a_client_that_hangs_up_leaves_no_traceback(capsys):
    import struct

    with serving(SlowService("toy", ToyEnv)) as server:
        for _ in range(3):
            sock = socket.create_connection(server.server_address[:2], timeout=3)
            sock.sendall(b"GET /info HTTP/1.1\r\nConnection: close\r\n\r\n")
            # close with a reset: the server's answer meets a connection that is gone
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()
        _wait_for(lambda: _handler_threads() == 0)
        assert client(server.url).instruction == ToyEnv().instruction  # still serving
    assert "Traceback" not in capsys.readouterr().err


def test_client_deadline_is_per_request_not_per_read():
    """A server that answers one byte every 0.1 s (a 40-byte body: 4 s) against a 1 s client."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(5)

    def trickle() -> None:
        with contextlib.suppress(OSError), listener, listener.accept()[0] as conn:
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 40\r\n\r\n")
            for _ in range(40):
                conn.sendall(b" ")
                time.sleep(0.1)

    thread = threading.Thread(target=trickle, daemon=True)
    thread.start()
    remote = HTTPEnvironment(f"127.0.0.1:{listener.getsockname()[1]}", timeout=1, retries=0)
    start = time.monotonic()
    with pytest.raises(ServerUnreachableError, match="within 1 s"):
        remote.reset("0")
    assert time.monotonic() - start < 2
    thread.join(timeout=6)


def test_non_loopback_bind_warns_and_help_says_no_authentication(monkeypatch, caplog, capsys):
    from agentr.cli import main
    from agentr.envs import server as server_module

    assert server_module.is_loopback("127.0.0.1") and server_module.is_loopback("::1")
    assert server_module.is_loopback("localhost") and not server_module.is_loopback("0.0.0.0")
    monkeypatch.setattr(server_module, "EnvHTTPServer", lambda *a, **k: None)  # binds nothing
    with caplog.at_level("WARNING", logger="agentr.envs.server"):
        server_module.make_server("textcraft", host="127.0.0.1", port=0)
        assert not caplog.records
        server_module.make_server("textcraft", host="0.0.0.0", port=0)
    assert "no authentication" in caplog.text and "0.0.0.0" in caplog.text
    with pytest.raises(SystemExit):
        main(["serve-env", "--help"])
    assert "no authentication" in " ".join(capsys.readouterr().out.split()).lower()


def test_pooled_instances_of_a_restarted_server_are_replaced():
    service = WebShopLikeService("toy", ToyEnv)
    with serving(service) as server:
        remote = client(server.url, task_ids={"train": ["t0"], "test": []}, instruction="")
        remote.reset("t0")
        remote.close()  # learns that there is no /close: the instance is pooled
        service.instances.clear()  # as if the server had restarted
        again = client(server.url, task_ids={"train": ["t0"], "test": []}, instruction="")
        assert again.reset("t0").startswith("Task t0")
        assert service.calls["/create"] == 2


def test_revision_action_is_a_client_setting_that_clones_keep(server):
    from agentr.agent.turn import play, read_reply

    remote = client(server.url, revision_action="reflect")
    task_id = remote.task_ids("test")[0]
    remote.reset(task_id)
    turn = play(remote, read_reply("Thought: I went wrong.\nAction: reflect"), 0.0)
    assert turn.revision and remote.actions == []  # answered by the agent, never sent
    turn = play(remote, read_reply("Action: revise"), 0.0)
    assert not turn.revision and remote.actions == ["revise"]  # a command like any other here
    copy = remote.clone()
    assert copy.revision_action == "reflect" and copy.spawn().revision_action == "reflect"
    copy.close()
    remote.close()
    with pytest.raises(ValueError, match="revision_action must be a non-empty lower-case"):
        client(server.url, revision_action="Reflect ")
