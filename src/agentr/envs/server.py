"""Serve any registered agentr environment over HTTP, in the AgentGym server protocol.

    agentr serve-env --name textcraft --port 8000
    agentr serve-env --name textcraft --options '{"max_depth": 2}'

Endpoints (JSON bodies and answers; errors are `{"error": "...", "error_type": "..."}` with an
HTTP status of 400, 404, 429 or 500):

    GET  /                       -> "This is agentr environment textcraft."
    POST /create                 -> {"id": 0, "observation": "", "reward": 0.0, "done": false}
    POST /reset  {"id", "data_idx"} -> {"id", "observation", "reward": 0.0, "done": false}
    POST /step   {"id", "action"}   -> {"observation", "reward", "done"}
    GET  /observation?id=0       -> the last observation (a JSON string)
    POST /close  {"id"}          -> {"closed": true}

agentr's own additions, which `HTTPEnvironment` uses when it finds them:

    GET  /info                   -> {"name", "instruction", "splits": {"train": [...], "test":
                                     [...]}, "clone": bool, "expert": bool}
    POST /clone  {"id"}          -> {"id": <new instance at the same state>}
    POST /expert {"id"?, "data_idx"} -> {"actions": [...] or null}

Every `/create` builds a new environment with `make_env(name, **options)`; one lock per instance
orders its requests. Uses only the standard library (`http.server.ThreadingHTTPServer`).
"""

from __future__ import annotations

import json
import threading
import traceback
import urllib.parse
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from agentr.envs.base import SPLITS, Environment, UnknownTaskError
from agentr.envs.registry import make_env


class _Failure(Exception):
    def __init__(self, status: int, message: str, error_type: str = "Error") -> None:
        super().__init__(message)
        self.status, self.message, self.error_type = status, message, error_type


class _Instance:
    def __init__(self, env: Environment) -> None:
        self.env = env
        self.lock = threading.Lock()
        self.observation = ""


class EnvService:
    """The protocol's state: environment instances by id, created by `factory`."""

    def __init__(self, name: str, factory: Callable[[], Environment], max_envs: int = 1024) -> None:
        self.name = name
        self.factory = factory
        self.max_envs = max_envs
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
            ("POST", "/create"): self.create,
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
        return handlers[route]()

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
            "clone": True,
            "expert": type(env).expert_actions is not Environment.expert_actions,
        }

    def create(self) -> dict[str, Any]:
        with self.lock:
            if len(self.instances) >= self.max_envs:
                raise _Failure(
                    429,
                    f"{len(self.instances)} environments are open (the limit): close some with "
                    "POST /close",
                    "TooManyEnvironments",
                )
        env = self.factory()
        with self.lock:
            env_id = self.next_id
            self.next_id += 1
            self.instances[env_id] = _Instance(env)
        return {"id": env_id, "observation": "", "reward": 0.0, "done": False}

    def reset(self, body: Any) -> dict[str, Any]:
        instance, env_id = self._instance(body)
        task_id = _require(body, "data_idx")
        with instance.lock:
            try:
                observation = instance.env.reset(str(task_id))
            except UnknownTaskError as error:
                raise _Failure(404, str(error), "UnknownTaskError") from None
            instance.observation = observation
        return {"id": env_id, "observation": observation, "reward": 0.0, "done": False}

    def step(self, body: Any) -> dict[str, Any]:
        instance, _ = self._instance(body)
        action = _require(body, "action")
        if not isinstance(action, str):
            raise _Failure(400, f"'action' must be a string, got {action!r}", "BadRequest")
        with instance.lock:
            if instance.env.task_id is None:
                raise _Failure(400, "step before reset: POST /reset first", "BadRequest")
            observation, reward, done = instance.env.step(action)
            instance.observation = observation
        return {"observation": observation, "reward": reward, "done": done}

    def get_observation(self, query: Mapping[str, str]) -> str:
        instance, _ = self._instance(query)
        return instance.observation

    def close(self, body: Any) -> dict[str, Any]:
        _, env_id = self._instance(body)
        with self.lock:
            instance = self.instances.pop(env_id, None)
        if instance is not None:
            with instance.lock:
                instance.env.close()
        return {"closed": instance is not None}

    def clone(self, body: Any) -> dict[str, Any]:
        instance, _ = self._instance(body)
        with instance.lock:
            if instance.env.task_id is None:
                raise _Failure(400, "clone before reset: POST /reset first", "BadRequest")
            copy = _Instance(instance.env.clone())
            copy.observation = instance.observation
        with self.lock:
            env_id = self.next_id
            self.next_id += 1
            self.instances[env_id] = copy
        return {"id": env_id}

    def expert(self, body: Any) -> dict[str, Any]:
        task_id = str(_require(body, "data_idx"))
        if isinstance(body, Mapping) and "id" in body:
            instance, _ = self._instance(body)
            with instance.lock:
                actions = self._expert(instance.env, task_id)
        else:
            env = self.prototype()
            with self._prototype_lock:
                actions = self._expert(env, task_id)
        return {"actions": actions}

    @staticmethod
    def _expert(env: Environment, task_id: str) -> list[str] | None:
        try:
            return env.expert_actions(task_id)
        except UnknownTaskError as error:
            raise _Failure(404, str(error), "UnknownTaskError") from None

    def _instance(self, body: Any) -> tuple[_Instance, int]:
        raw = _require(body, "id")
        try:
            env_id = int(raw)
        except (TypeError, ValueError):
            raise _Failure(400, f"'id' must be an integer, got {raw!r}", "BadRequest") from None
        with self.lock:
            instance = self.instances.get(env_id)
        if instance is None:
            raise _Failure(
                404,
                f"no environment with id {env_id}: POST /create makes one",
                "UnknownEnvironment",
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


def _require(body: Any, key: str) -> Any:
    if not isinstance(body, Mapping) or key not in body:
        raise _Failure(400, f"missing field {key!r} in {body!r}", "BadRequest")
    return body[key]


class _Handler(BaseHTTPRequestHandler):
    server: EnvHTTPServer
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        self._serve("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._serve("POST")

    def _serve(self, method: str) -> None:
        parsed = urllib.parse.urlsplit(self.path)
        query = dict(urllib.parse.parse_qsl(parsed.query))
        try:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            try:
                body = json.loads(raw) if raw.strip() else {}
            except ValueError:
                raise _Failure(
                    400, f"the request body is not JSON: {raw[:200]!r}", "BadRequest"
                ) from None
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
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        if self.server.verbose:
            super().log_message(format, *args)


class EnvHTTPServer(ThreadingHTTPServer):
    """A threading HTTP server around an `EnvService`."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], service: EnvService, verbose: bool = False):
        self.service = service
        self.verbose = verbose
        super().__init__(address, _Handler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"

    def server_close(self) -> None:
        super().server_close()
        self.service.shutdown()


def make_server(
    name: str,
    host: str = "127.0.0.1",
    port: int = 8000,
    options: Mapping[str, Any] | None = None,
    max_envs: int = 1024,
    verbose: bool = False,
) -> EnvHTTPServer:
    """A server (not yet serving) for environment `name`; port 0 picks a free port."""
    kwargs = dict(options or {})
    make_env(name, **kwargs).close()  # fail now, not on the first /create, on a bad name/option
    service = EnvService(name, lambda: make_env(name, **kwargs), max_envs=max_envs)
    return EnvHTTPServer((host, port), service, verbose=verbose)


def serve_command(
    name: str,
    host: str = "127.0.0.1",
    port: int = 8000,
    options: dict[str, Any] | None = None,
    max_envs: int = 1024,
    verbose: bool = False,
) -> None:
    """Serve an agentr environment over HTTP in the AgentGym protocol, until interrupted.

    Args:
        name: a registered environment ("textcraft", "sciworld").
        host: the interface to listen on; loopback by default (the protocol has no
            authentication: expose it only on networks you trust).
        port: the port (0 picks a free one).
        options: constructor options of the environment, e.g. {"max_depth": 2}.
        max_envs: the most environment instances open at once.
        verbose: log every request.
    """
    server = make_server(name, host, port, options, max_envs, verbose)
    print(
        f"Serving agentr environment {name!r} at {server.url} (AgentGym protocol: /create "
        "/reset /step /observation /close; agentr extras: /info /clone /expert). Ctrl-C stops.",
        flush=True,
    )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
