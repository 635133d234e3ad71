"""Serve any registered agentr environment over HTTP, in the AgentGym server protocol.

    agentr serve-env --name textcraft --port 8000
    agentr serve-env --name textcraft --options '{"split_scheme": "agentgym"}'

Endpoints (JSON bodies and answers; errors are `{"error": "...", "error_type": "..."}`):

    GET  /                       -> "This is agentr environment textcraft."
    POST /create                 -> {"id": 0, ...}
    POST /reset  {"id", "data_idx"} -> {"observation", ...}
    POST /step   {"id", "action"}   -> {"observation", "reward", "done", ...}
    GET  /observation?id=0       -> the last observation (a JSON string)
    POST /close  {"id"}          -> true (false when there is no such instance: never created,
                                    or closed already)

**Errors.** On those AgentGym endpoints a well-formed request that the game state refuses (an
unknown or closed instance id, an unknown task, a step before reset or after done, a custom
task) is answered with HTTP 200 and the error, as AgentGym's servers answer (their clients
`assert` the status is 200). A malformed request is a 400 (AgentGym's FastAPI answers 422), and
the server's limits answer 408, 413 and 429; an environment's bug, 500. agentr's own endpoints
below answer every error with its 4xx status (404 for an unknown id or task).

agentr's own additions, which `HTTPEnvironment` uses when it finds them:

    GET  /info                   -> {"name", "instruction", "splits": {"train": [...], "test":
                                     [...]}, "protocol", "clone": bool, "expert": bool}
    POST /clone  {"id"}          -> {"id": <new instance at the same state>}
    POST /expert {"id"?, "data_idx"} -> {"actions": [...] or null}

**Answer formats.** The fields of `/create`, `/reset` and `/step`, and how `data_idx` picks a
task, follow the AgentGym server of the same environment (`ANSWER_FORMATS`; chosen by the
environment's name, or `answer_format`), so that AgentGym's own clients work unchanged:

- "textcraft" (also "agentgym", for other environments): `/create` and `/reset` answer `id`,
  `observation`, `reward` 0, `done` false; `/step` answers `observation`, `reward`, `done`. An
  integer `data_idx` wraps modulo the task count (544), as AgentGym's server does. "textcraft"'s
  `/create` starts task `data_idx` = the new id, as AgentGym's does, and answers its
  observation ("agentgym"'s answers ""). A custom task (`commands`, `goal` in `/create`) is
  refused: agentr plays its own tasks (AgentGym's server takes them, then starts task `id`).
- "sciworld": `/create` answers `id`; `/reset` answers `task_description` (the first line of
  the first observation), `observation` (the rest), `reward`, `score`, `done`; `/step` answers
  `observation`, `reward` (the change of score), `score` and `done`. `score` is ScienceWorld's
  own, -100 after a failure (e.g. focusing on a wrong object), as AgentGym passes it on, where
  agentr's reward is 0 (`ScienceWorldEnv.raw_score`; other environments: the reward x 100). An
  integer `data_idx` is an index into AgentGym's list of games (every variation of every task
  but 5-1, 5-2, 9-1, 9-2, 9-3, 10-1, 10-2, in task-code order); past its end is an error, as
  there; "boil:3" names a task directly.
- "babyai": `/create` answers `id`; `/reset` and `/step` answer `observation`, `reward`,
  `score` (= the reward), `done`.

**After done** no environment plays a step: "textcraft" and "agentgym" answer the episode-over
observation (`EPISODE_OVER`) with the final reward and done (AgentGym's TextCraft server would
play on), "sciworld" and "babyai" the error `... has finished`, as AgentGym's servers do.

`data_idx` must be an integer or a string, `id` an integer (or digits): anything else is a 400.

**Limits.** Every `/create` and `/clone` builds a new environment (`make_env(name, **options)`);
at most `max_envs` are open at once (429 past it). A request body is at most `max_body_bytes`
(413), and must arrive within `request_timeout` seconds (408; an idle keep-alive connection is
dropped after as long), so no client can hold a handler thread forever; at most
`max_connections` connections have a thread at once (503 past it, which agentr's client retries),
and a client that hangs up mid-answer is no error (no traceback). One lock per instance
orders its requests. There is no authentication: anyone who can reach the port can run
environments, so the server listens on loopback unless told otherwise, and warns when not.
Uses only the standard library (`http.server.ThreadingHTTPServer`).
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
import socket
import sys
import threading
import time
import traceback
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from agentr.envs.base import SPLITS, Environment, UnknownTaskError
from agentr.envs.http import EPISODE_OVER
from agentr.envs.registry import make_env

logger = logging.getLogger(__name__)


class _Failure(Exception):
    """A refused request, answered with `status` and `payload()`.

    `in_game` marks a well-formed request that the game state refuses (an unknown or closed
    instance, an unknown task, a finished episode): AgentGym's servers answer those with HTTP 200
    and `{"error": ...}`, and so does this one on their endpoints (`AGENTGYM_ROUTES`).
    """

    def __init__(
        self, status: int, message: str, error_type: str = "BadRequest", in_game: bool = False
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.error_type = status, message, error_type
        self.in_game = in_game

    def payload(self) -> dict[str, str]:
        return {"error": self.message, "error_type": self.error_type}


# ------------------------------------------------------------------------------------------------
# Answer formats
# ------------------------------------------------------------------------------------------------
#: ScienceWorld task codes that AgentGym's SciWorld server leaves out of its list of games.
AGENTGYM_SCIWORLD_SKIPPED = frozenset({"5-1", "5-2", "9-1", "9-2", "9-3", "10-1", "10-2"})


@dataclass(frozen=True)
class AnswerFormat:
    """How one AgentGym server shapes its answers and reads `data_idx`.

    Attributes:
        name: the format's name (also the `HTTPEnvironment` protocol preset that reads it).
        create_observation: `/create` answers `observation`, `reward`, `done` besides `id`.
        create_starts_task: `/create` starts task `data_idx` = the new id and answers its
            observation (AgentGym's TextCraft server does; "" where there is no such task).
        score_scale: answers carry `score` = reward x this (None: no `score` field).
        raw_score: `score` is the environment's own `raw_score` where it has one (ScienceWorld's
            score, -100 after a failure, where agentr's reward is 0), as AgentGym passes it on.
        reward_is_change: `/step`'s `reward` is the change of `score` (SciWorld's), not the
            reward.
        task_description: `/reset` answers the first line of the observation apart.
        wrap_task_ids: an integer `data_idx` wraps modulo the environment's task count.
        sciworld_numbering: an integer `data_idx` indexes AgentGym's SciWorld games.
        finished_is_error: a step after done answers `{"error": "... has finished."}` (BabyAI's
            and SciWorld's servers), not the episode-over observation with the final reward.
    """

    name: str
    create_observation: bool = False
    create_starts_task: bool = False
    score_scale: float | None = None
    raw_score: bool = False
    reward_is_change: bool = False
    task_description: bool = False
    wrap_task_ids: bool = False
    sciworld_numbering: bool = False
    finished_is_error: bool = False

    def task_id(self, env: Environment, data_idx: Any) -> str:
        """The environment's task id for a request's `data_idx`."""
        if isinstance(data_idx, bool) or not isinstance(data_idx, (int, str)):
            raise _Failure(400, f"'data_idx' must be an integer or a string, got {data_idx!r}")
        if not isinstance(data_idx, int):
            return data_idx
        if self.sciworld_numbering:
            return _sciworld_task_id(data_idx)
        count = getattr(env, "num_tasks", None)
        if self.wrap_task_ids and isinstance(count, int) and count > 0:
            return str(data_idx % count)
        return str(data_idx)

    def created(self, env_id: int, observation: str) -> dict[str, Any]:
        if self.create_observation:
            return {"id": env_id, "observation": observation, "reward": 0, "done": False}
        return {"id": env_id}

    def reset(self, env_id: int, observation: str) -> dict[str, Any]:
        answer: dict[str, Any] = {"id": env_id}
        if self.task_description:
            description, _, observation = observation.partition("\n")
            answer["task_description"] = description
        answer.update(observation=observation, reward=0, done=False)
        if self.score_scale is not None:
            answer["score"] = 0
        return answer

    def score(self, env: Environment, reward: float) -> float | None:
        """The `score` of a `/step` answer after `reward` (None: the format has no `score`)."""
        if self.score_scale is None:
            return None
        raw = getattr(env, "raw_score", None) if self.raw_score else None
        return raw if raw is not None else round(reward * self.score_scale, 6)

    def step(
        self, observation: str, reward: float, done: bool, score: float | None, before: float
    ) -> dict[str, Any]:
        """`score` from `score()`; `before`, the previous answer's (SciWorld's `reward` is the
        change of score)."""
        if score is None:
            return {"observation": observation, "reward": reward, "done": done}
        if self.reward_is_change:
            reward = round(score - before, 6)
        return {"observation": observation, "reward": reward, "score": score, "done": done}

    def finished(self, env_id: int, reward: float, score: float | None) -> dict[str, Any]:
        """The answer to a step after done, which no environment plays: the episode-over
        observation with the final reward and score, or BabyAI's and SciWorld's error."""
        if self.finished_is_error:
            message = f"The task with environment {env_id} has finished: reset it to play again."
            raise _Failure(409, message, "EpisodeFinished", in_game=True)
        return self.step(EPISODE_OVER, reward, True, score, score or 0.0)


ANSWER_FORMATS: dict[str, AnswerFormat] = {
    "agentgym": AnswerFormat("agentgym", create_observation=True, wrap_task_ids=True),
    "textcraft": AnswerFormat(
        "textcraft", create_observation=True, create_starts_task=True, wrap_task_ids=True
    ),
    "babyai": AnswerFormat("babyai", score_scale=1.0, finished_is_error=True),
    "sciworld": AnswerFormat(
        "sciworld",
        score_scale=100.0,
        raw_score=True,
        reward_is_change=True,
        task_description=True,
        sciworld_numbering=True,
        finished_is_error=True,
    ),
}


def _sciworld_task_id(index: int) -> str:
    from agentr.envs.sciworld import TASKS

    games = [
        (name, total) for name, (code, total, *_rest) in TASKS.items()
        if code not in AGENTGYM_SCIWORLD_SKIPPED
    ]  # fmt: skip
    count = sum(total for _name, total in games)
    if not 0 <= index < count:
        raise UnknownTaskError(
            f"unknown SciWorld game {index}: AgentGym's numbering has games 0 to {count - 1}"
        )
    for name, total in games:
        if index < total:
            return f"{name}:{index}"
        index -= total
    raise AssertionError("unreachable")


# ------------------------------------------------------------------------------------------------
# The service
# ------------------------------------------------------------------------------------------------
#: The endpoints of AgentGym's servers, where an in-game refusal is answered with HTTP 200 (their
#: clients `assert` the status is 200); agentr's own endpoints keep the 4xx.
AGENTGYM_ROUTES = frozenset({"/create", "/reset", "/step", "/observation", "/close"})


class _Instance:
    def __init__(self, env: Environment) -> None:
        self.env = env
        self.lock = threading.Lock()
        self.observation = ""
        self.reward = 0.0  # of the last answer
        self.score: float | None = None  # of the last answer, in formats that answer one


class EnvService:
    """The protocol's state: environment instances by id, created by `factory`, answered in
    `answer_format`."""

    def __init__(
        self,
        name: str,
        factory: Callable[[], Environment],
        max_envs: int = 1024,
        answer_format: AnswerFormat | None = None,
    ) -> None:
        self.name = name
        self.factory = factory
        self.max_envs = max_envs
        self.format = answer_format or ANSWER_FORMATS["agentgym"]
        self.instances: dict[int, _Instance] = {}
        self.lock = threading.Lock()
        self.next_id = 0
        self._prototype: Environment | None = None
        self._prototype_lock = threading.Lock()  # also orders expert requests on the prototype

    # ---- dispatch ------------------------------------------------------------------------------
    def handle(self, method: str, path: str, query: Mapping[str, str], body: Any) -> Any:
        route = (method, path.rstrip("/") or "/")
        handlers = {
            ("GET", "/"): lambda: f"This is agentr environment {self.name}.",
            ("GET", "/info"): self.info,
            ("POST", "/create"): lambda: self.create(body),
            ("POST", "/reset"): lambda: self.reset(body),
            ("POST", "/step"): lambda: self.step(body),
            ("GET", "/observation"): lambda: self.get_observation(query),
            ("POST", "/close"): lambda: self.close(body),
            ("POST", "/clone"): lambda: self.clone(body),
            ("POST", "/expert"): lambda: self.expert(body),
        }
        if route not in handlers:
            known = ", ".join(f"{m} {p}" for m, p in handlers)
            raise _Failure(404, f"no endpoint {method} {path}; endpoints: {known}", "NotFound")
        try:
            return handlers[route]()
        except _Failure as failure:
            if failure.in_game and route[1] in AGENTGYM_ROUTES:
                return failure.payload()  # answered with 200, as AgentGym's servers do
            raise

    # ---- endpoints -----------------------------------------------------------------------------
    def prototype(self) -> Environment:
        """One shared instance for /info and /expert (never reset by a client)."""
        with self._prototype_lock:
            if self._prototype is None:
                self._prototype = self.factory()
            return self._prototype

    def info(self) -> dict[str, Any]:
        env = self.prototype()
        return {
            "name": self.name,
            "instruction": env.instruction,
            "splits": {split: env.task_ids(split) for split in SPLITS},
            "protocol": self.format.name,
            "clone": True,
            "expert": type(env).expert_actions is not Environment.expert_actions,
        }

    def create(self, body: Any) -> dict[str, Any]:
        _refuse_custom_task(body)
        self._check_room()
        instance = _Instance(self.factory())
        env_id = self._add(instance)
        if self.format.create_starts_task:
            with instance.lock, contextlib.suppress(_Failure):  # no task `env_id`: stays ""
                self._start(instance, env_id)
        return self.format.created(env_id, instance.observation)

    def reset(self, body: Any) -> dict[str, Any]:
        instance, env_id = self._instance(body)
        raw = _require(body, "data_idx")
        with instance.lock:
            observation = self._start(instance, raw)
        return self.format.reset(env_id, observation)

    def step(self, body: Any) -> dict[str, Any]:
        """Play `action`, or answer as the format does after done: agentr never plays a step
        after done, in any environment."""
        instance, env_id = self._instance(body)
        action = _require(body, "action")
        if not isinstance(action, str):
            raise _Failure(400, f"'action' must be a string, got {action!r}")
        with instance.lock:
            env = instance.env
            if env.task_id is None:
                raise _Failure(400, "step before reset: POST /reset first", "NotReset", in_game=True)
            if env.done:
                return self.format.finished(env_id, instance.reward, instance.score)
            observation, reward, done = env.step(action)
            score = self.format.score(env, reward)
            answer = self.format.step(observation, reward, done, score, instance.score or 0.0)
            instance.observation, instance.reward, instance.score = observation, reward, score
        return answer

    def get_observation(self, query: Mapping[str, str]) -> str:
        instance, _ = self._instance(query)
        return instance.observation

    def close(self, body: Any) -> bool:
        """Close instance `id`: true, or false when there is none (never created, or closed
        already), as AgentGym's TextCraft and BabyAI servers answer."""
        env_id = _env_id(_require(body, "id"))
        with self.lock:
            instance = self.instances.pop(env_id, None)
        if instance is None:
            return False
        with instance.lock:
            instance.env.close()
        return True

    def clone(self, body: Any) -> dict[str, Any]:
        instance, _ = self._instance(body)
        self._check_room()
        with instance.lock:
            if instance.env.task_id is None:
                raise _Failure(400, "clone before reset: POST /reset first")
            copy = _Instance(instance.env.clone())
            copy.observation, copy.reward = instance.observation, instance.reward
            copy.score = instance.score
        return {"id": self._add(copy)}

    def expert(self, body: Any) -> dict[str, Any]:
        raw = _require(body, "data_idx")
        if isinstance(body, Mapping) and "id" in body:
            instance, _ = self._instance(body)
            with instance.lock:
                actions = self._expert(instance.env, raw)
        else:
            env = self.prototype()
            with self._prototype_lock:
                actions = self._expert(env, raw)
        return {"actions": actions}

    def _expert(self, env: Environment, raw: Any) -> list[str] | None:
        try:
            return env.expert_actions(self.format.task_id(env, raw))
        except UnknownTaskError as error:
            raise _unknown_task(error) from None

    def _start(self, instance: _Instance, raw: Any) -> str:
        """Reset `instance` (its lock held) on the task of `data_idx` `raw`."""
        try:
            observation = instance.env.reset(self.format.task_id(instance.env, raw))
        except UnknownTaskError as error:
            raise _unknown_task(error) from None
        instance.observation, instance.reward = observation, 0.0
        instance.score = self.format.score(instance.env, 0.0)
        return observation

    def _full(self) -> _Failure:
        return _Failure(
            429,
            f"{self.max_envs} environments are open (max_envs): close some with POST /close",
            "TooManyEnvironments",
        )

    def _check_room(self) -> None:
        with self.lock:
            if len(self.instances) >= self.max_envs:
                raise self._full()

    def _add(self, instance: _Instance) -> int:
        """Register `instance` under a new id; refuse (and close it) past `max_envs`."""
        with self.lock:
            if len(self.instances) < self.max_envs:
                env_id = self.next_id
                self.next_id += 1
                self.instances[env_id] = instance
                return env_id
        instance.env.close()  # other requests took the last places while this one was built
        raise self._full()

    def _instance(self, body: Any) -> tuple[_Instance, int]:
        env_id = _env_id(_require(body, "id"))
        with self.lock:
            instance = self.instances.get(env_id)
        if instance is None:
            raise _Failure(
                404,
                f"no environment with id {env_id} (never created, or closed): POST /create "
                "makes one",
                "UnknownEnvironment",
                in_game=True,
            )
        return instance, env_id

    def shutdown(self) -> None:
        with self.lock:
            instances, self.instances = list(self.instances.values()), {}
            prototype, self._prototype = self._prototype, None
        for instance in instances:
            instance.env.close()
        if prototype is not None:
            prototype.close()


def _unknown_task(error: UnknownTaskError) -> _Failure:
    return _Failure(404, str(error), "UnknownTaskError", in_game=True)


def _refuse_custom_task(body: Any) -> None:
    """Refuse a task of the client's own in `/create` (AgentGym's TextCraft client sends
    `commands` and `goal`): agentr's environments play only their own tasks. AgentGym's TextCraft
    server takes them but starts task `id` all the same."""
    fields = body if isinstance(body, Mapping) else {}
    given = [key for key in ("commands", "goal") if fields.get(key) is not None]
    if given:
        raise _Failure(
            400,
            f"custom tasks ({' and '.join(given)} in POST /create) are not supported: agentr "
            "plays its environments' own tasks; create without them and reset to a task id "
            "(GET /info lists them)",
            "CustomTaskUnsupported",
            in_game=True,
        )


def _require(body: Any, key: str) -> Any:
    if not isinstance(body, Mapping) or key not in body:
        raise _Failure(400, f"missing field {key!r} in {str(body)[:200]}")
    return body[key]


def _env_id(raw: Any) -> int:
    """An instance id: a JSON integer, or digits (query parameters are text). Not 0.9, not true."""
    if isinstance(raw, int) and not isinstance(raw, bool):
        return raw
    if isinstance(raw, str) and raw.strip().isdigit():
        return int(raw)
    raise _Failure(400, f"'id' must be an integer, got {raw!r}")


# ------------------------------------------------------------------------------------------------
# HTTP
# ------------------------------------------------------------------------------------------------
class _Handler(BaseHTTPRequestHandler):
    server: EnvHTTPServer
    protocol_version = "HTTP/1.1"

    def setup(self) -> None:
        # The socket timeout (StreamRequestHandler applies `timeout`): an idle or stalled
        # connection is dropped instead of holding its thread.
        self.timeout = self.server.request_timeout
        super().setup()

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        self._serve("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._serve("POST")

    def _serve(self, method: str) -> None:
        parsed = urllib.parse.urlsplit(self.path)
        query = dict(urllib.parse.parse_qsl(parsed.query))
        try:
            body = self._read_json()
            status, payload = 200, self.server.service.handle(method, parsed.path, query, body)
        except _Failure as failure:
            status, payload = (
                failure.status,
                {"error": failure.message, "error_type": failure.error_type},
            )
        except Exception as error:  # an environment bug: report it, keep serving
            traceback.print_exc()
            kind = type(error).__name__
            status, payload = 500, {"error": f"{kind}: {error}", "error_type": kind}
        data = json.dumps(payload).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(data)

    def _read_json(self) -> Any:
        text = self.headers.get("Content-Length")
        if text is None or not text.strip():
            return {}
        if not text.strip().isdigit():
            self.close_connection = True  # the body's end is unknown: the stream is unusable
            raise _Failure(400, f"bad Content-Length {text!r}: expected a number of bytes")
        length = int(text)
        limit = self.server.max_body_bytes
        if length > limit:
            self.close_connection = True
            raise _Failure(
                413, f"request body of {length} bytes; the limit is {limit}", "BodyTooLarge"
            )
        raw = self._read_body(length)
        if not raw.strip():
            return {}
        try:
            return json.loads(raw)
        except ValueError:
            raise _Failure(400, f"the request body is not JSON: {raw[:200]!r}") from None

    def _read_body(self, length: int) -> bytes:
        """`length` bytes, all of them within `request_timeout` (not per read)."""
        deadline = time.monotonic() + self.server.request_timeout
        chunks, got = [], 0
        try:
            while got < length:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError
                self.connection.settimeout(left)
                chunk = self.rfile.read1(length - got)
                if not chunk:
                    break
                chunks.append(chunk)
                got += len(chunk)
        except TimeoutError:
            self.close_connection = True
            raise _Failure(
                408,
                f"the request body did not arrive within {self.server.request_timeout:g} s "
                f"({got} of {length} bytes, as its Content-Length says)",
                "RequestTimeout",
            ) from None
        finally:
            self.connection.settimeout(self.server.request_timeout)
        if got < length:
            self.close_connection = True
            raise _Failure(400, f"the request body ended after {got} of {length} bytes")
        return b"".join(chunks)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        if self.server.verbose:
            super().log_message(format, *args)


class EnvHTTPServer(ThreadingHTTPServer):
    """A threading HTTP server around an `EnvService`, with one thread per open connection and
    at most `max_connections` of them: a connection past that is answered 503 (which agentr's
    client retries) and closed at once, so stalled clients cannot pile up threads."""

    daemon_threads = True

    def __init__(
        self,
        address: tuple[str, int],
        service: EnvService,
        verbose: bool = False,
        max_body_bytes: int = 1 << 20,
        request_timeout: float = 30.0,
        max_connections: int = 64,
    ):
        self.service = service
        self.verbose = verbose
        self.max_body_bytes = max_body_bytes
        self.request_timeout = request_timeout
        self.max_connections = max_connections
        self._connection_slots = threading.BoundedSemaphore(max_connections)
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._connection_slots.acquire(blocking=False):
            self._refuse(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:  # no thread started: it will not free its slot
            self._connection_slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._connection_slots.release()

    def _refuse(self, request: socket.socket) -> None:
        """Answer 503 on a connection past `max_connections`, from the accepting thread: a
        short answer into a new connection's empty send buffer, which never blocks."""
        message = (f"{self.max_connections} connections are open (max_connections): "
                   "try again shortly")
        body = json.dumps({"error": message, "error_type": "TooManyConnections"}).encode()
        head = ("HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()
        with contextlib.suppress(OSError):
            request.setblocking(False)
            request.sendall(head + body)
            request.recv(1 << 16)  # what the client sent, so that closing sends no reset
        self.shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hung up (its connection reset or closed mid-answer) is no error of the
        server's: logged in verbose mode, without the traceback socketserver prints."""
        error = sys.exc_info()[1]
        if isinstance(error, ConnectionError):
            if self.verbose:
                logger.info("client %s hung up: %s", client_address[0], error)
            return
        super().handle_error(request, client_address)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"

    def server_close(self) -> None:
        super().server_close()
        self.service.shutdown()


def is_loopback(host: str) -> bool:
    """Whether `host` names only this machine ("localhost", 127.x, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def make_server(
    name: str,
    host: str = "127.0.0.1",
    port: int = 8000,
    options: Mapping[str, Any] | None = None,
    max_envs: int = 1024,
    verbose: bool = False,
    answer_format: str | None = None,
    max_body_bytes: int = 1 << 20,
    request_timeout: float = 30.0,
    max_connections: int = 64,
) -> EnvHTTPServer:
    """A server (not yet serving) for environment `name`; port 0 picks a free port. See
    `agentr.commands.serve_env.serve_command` for the arguments."""
    chosen = answer_format or (name if name in ANSWER_FORMATS else "agentgym")
    if chosen not in ANSWER_FORMATS:
        raise ValueError(
            f"serve-env: answer_format={chosen!r}; expected one of {', '.join(ANSWER_FORMATS)}"
        )
    for setting, value in (("max_envs", max_envs), ("max_body_bytes", max_body_bytes),
                           ("max_connections", max_connections)):
        if value < 1:
            raise ValueError(f"serve-env: {setting}={value}; it must be at least 1")
    if request_timeout <= 0:
        raise ValueError(f"serve-env: request_timeout={request_timeout}; it must be > 0 seconds")
    kwargs = dict(options or {})
    make_env(name, **kwargs).close()  # fail now, not on the first /create, on a bad name/option
    service = EnvService(
        name, lambda: make_env(name, **kwargs), max_envs, ANSWER_FORMATS[chosen]
    )
    if not is_loopback(host):
        logger.warning(
            "serve-env listens on %s: the server has no authentication, so anyone who can "
            "reach port %s can create and play environments on this machine",
            host,
            port,
        )
    return EnvHTTPServer(
        (host, port), service, verbose, max_body_bytes=max_body_bytes,
        request_timeout=request_timeout, max_connections=max_connections,
    )  # fmt: skip
