"""Remote environments over HTTP, in the AgentGym server protocol.

AgentGym's environment servers (`agentenv-textcraft`, `-webshop`, `-alfworld`, `-babyai`,
`-sciworld`, ...) share one shape:

    POST /create                          -> {"id": 0, ...}            (WebShop: a bare int)
    POST /reset  {"id": 0, "data_idx": 3} -> {"observation": "...", ...}
    POST /step   {"id": 0, "action": "…"} -> {"observation": "...", "reward": 0.0, "done": false}
    GET  /observation?id=0                -> "..."
    POST /close  {"id": 0}                -> true          (WebShop and ALFWorld have none)

and an error is answered as `{"error": "..."}`. The field names differ a little between servers;
`Protocol` names them, and `PROTOCOLS` holds presets (`"agentgym"` is the common one, used by
TextCraft; `"babyai"`, `"sciworld"`, `"webshop"`, `"alfworld"`).

agentr's server (`agentr serve-env`) adds `GET /info` (instruction, splits, its answer format),
`POST /clone` and `POST /expert`; the client uses them when they are there, and takes the
server's answer format as its protocol unless given one. Against another server, pass
`protocol`, `task_ids` and `instruction` yourself.

**Deadlines and retries.** Every request has a total deadline (`timeout`, from connecting to the
last byte of the answer, however slowly the server trickles it). A refused connection and a
502/503/504 answer are retried a bounded number of times with exponential backoff (nothing else
is retried, so a step is never applied twice); every failure raises `HTTPEnvError` naming the
URL, `ServerUnreachableError` when no answer came at all. A `GET /info` that failed (no answer,
or a 5xx) is not remembered: the next use asks again. A client never plays an episode without a
task instruction: `instruction` raises when neither the caller nor the server gives one.

**Finished episodes.** AgentGym's BabyAI, SciWorld and ALFWorld servers answer an error to a
step after `done`. The client never sends one: like agentr's local environments it answers
`("The episode is over: reset to start another.", <the final reward>, True)` itself.

**Server instances.** Instances are counted per server (URL and `/create` payload) in this
process: at most `max_instances` live at once. Servers without `/close` (WebShop, ALFWorld:
`Protocol.closes` false, or learned from a 404 answer to `/close`) cannot free an instance, so
`close()` puts it in a pool that the next `reset` of any client of that server takes from (and
resets) before creating a new one: a Phase I search over such a server creates at most
`max_instances` instances in all.

Only the standard library is used (http.client).
"""

from __future__ import annotations

import http.client
import io
import json
import socket
import threading
import time
import urllib.parse
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from agentr.envs.base import Environment, UnknownTaskError


class HTTPEnvError(RuntimeError):
    """A remote environment is unreachable, failed, or answered something unexpected.

    `status` is the HTTP status of the answer when the server answered with an error status.
    """

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class ServerUnreachableError(HTTPEnvError):
    """No answer came: the connection was refused, timed out or was dropped."""


@dataclass(frozen=True)
class Protocol:
    """Field names of one AgentGym-style server.

    Attributes:
        id_field: the environment-instance field of requests (query parameter for GETs).
        reset_field: the task field of `/reset`.
        reset_extra: other fields that `/reset` needs (ALFWorld: `{"world_type": "Text"}`).
        observation_field: the observation in `/reset` and `/step` answers.
        reward_field: the reward in `/step` answers (BabyAI, SciWorld: `score`).
        reward_scale: multiplies the reward (SciWorld's score is 0..100).
        negative_is_failure: a negative reward ends the episode with reward 0.
        reset_prefix_fields: `/reset` answer fields put before the observation, one a line
            (SciWorld: `task_description`).
        reset_reads_observation: `/reset` answers no observation: read `GET /observation`.
        actions_field: answers' list of valid actions, appended to observations when given.
        integer_task_ids: send digit-only task ids as JSON numbers (servers declare `int`).
        closes: the server has `POST /close` (WebShop's and ALFWorld's have not: their
            instances are pooled and reused instead).
    """

    id_field: str = "id"
    reset_field: str = "data_idx"
    reset_extra: Mapping[str, Any] = field(default_factory=dict)
    observation_field: str = "observation"
    reward_field: str = "reward"
    reward_scale: float = 1.0
    negative_is_failure: bool = False
    reset_prefix_fields: tuple[str, ...] = ()
    reset_reads_observation: bool = False
    actions_field: str | None = None
    integer_task_ids: bool = True
    closes: bool = True


PROTOCOLS: dict[str, Protocol] = {
    "agentgym": Protocol(),
    "textcraft": Protocol(),
    "babyai": Protocol(reward_field="score"),
    "sciworld": Protocol(
        reward_field="score",
        reward_scale=0.01,
        negative_is_failure=True,
        reset_prefix_fields=("task_description",),
    ),
    "webshop": Protocol(
        id_field="env_idx",
        reset_field="session_id",
        observation_field="state",
        reset_reads_observation=True,
        closes=False,
    ),
    "alfworld": Protocol(
        reset_field="game",
        reset_extra={"world_type": "Text"},
        actions_field="available_actions",
        closes=False,
    ),
}

_RETRY_STATUS = {502, 503, 504}
#: What a step after done answers (no request is sent).
EPISODE_OVER = "The episode is over: reset to start another."


class InstancePool:
    """The server instances this process holds on one server: live ones are counted, and the
    closed ones of a server without `/close` wait in `idle` to be reset and reused."""

    def __init__(self, closable: bool) -> None:
        self.closable = closable
        self.live = 0  # created or cloned, not closed on the server
        self.idle: list[Any] = []
        self.lock = threading.Lock()

    def take(self) -> Any:
        """An idle instance id, or None."""
        with self.lock:
            return self.idle.pop() if self.idle else None

    def reserve(self, bound: int, url: str) -> None:
        """Count one more live instance; refuse past `bound`."""
        with self.lock:
            if self.live >= bound:
                raise HTTPEnvError(
                    f"{url}: max_instances={bound} server instances are in use by this process "
                    "and none is free; close environments you no longer need, or raise "
                    "max_instances (WebShop's server reuses ids past 8000)"
                )
            self.live += 1

    def unreserve(self) -> None:
        with self.lock:
            self.live -= 1

    forget = unreserve  # an instance that the server lost

    def release(self, env_id: Any) -> None:
        """An instance the client is done with: idle when the server cannot close it."""
        with self.lock:
            if self.closable:
                self.live -= 1
            else:
                self.idle.append(env_id)


_POOLS: dict[tuple[str, str], InstancePool] = {}
_POOLS_LOCK = threading.Lock()


def instance_pool(url: str, create_payload: Mapping[str, Any], closable: bool) -> InstancePool:
    """The pool of the server at `url` for instances made with `create_payload`."""
    key = (url, json.dumps(dict(create_payload), sort_keys=True))
    with _POOLS_LOCK:
        if key not in _POOLS:
            _POOLS[key] = InstancePool(closable)
        return _POOLS[key]


class HTTPEnvironment(Environment):
    """An environment served over HTTP in the AgentGym protocol.

    Args:
        url: the server's base URL, e.g. "http://127.0.0.1:8000".
        protocol: a preset name from `PROTOCOLS`, a `Protocol`, or a dict of `Protocol` fields;
            default: an agentr server's answer format (`GET /info`), else "agentgym".
        task_ids: the task ids of each split, e.g. `{"train": range(0, 300), "test": range(300,
            400)}`; default: asked from an agentr server (`GET /info`).
        instruction: the task instruction; default: an agentr server's (other servers need
            it given: no episode is played without one).
        timeout: seconds for a whole request, from connecting to the last byte of the answer.
        retries: extra attempts after a refused connection or a 502/503/504 answer.
        backoff: seconds before the first retry; doubled for each next one.
        create_payload: the JSON body of `/create` (AgentGym's TextCraft takes `commands`, `goal`).
        max_instances: the most server instances this process keeps live on this server (all
            its clients together); past it, `reset` raises instead of creating another.
        revision_action: the action of agentr's revision turn, answered by the agent and never
            sent to the server; set another where the environment has a `revise` command.

    The server-side instance is created (or taken from the pool) on the first `reset` and
    released by `close()`. Clones use the server's `/clone` when it has one (agentr servers),
    else reset-and-replay on another instance: close clones you no longer need.
    """

    name = "http"
    cheap_clone = False

    def __init__(
        self,
        url: str,
        protocol: str | Protocol | Mapping[str, Any] | None = None,
        task_ids: Mapping[str, Iterable[Any]] | None = None,
        instruction: str | None = None,
        timeout: float = 60.0,
        retries: int = 3,
        backoff: float = 0.5,
        create_payload: Mapping[str, Any] | None = None,
        max_instances: int = 1000,
        revision_action: str = Environment.revision_action,
    ) -> None:
        super().__init__()
        if not revision_action.strip() or revision_action != revision_action.strip().lower():
            raise ValueError(f"revision_action must be a non-empty lower-case action without "
                             f"surrounding spaces, got {revision_action!r}")
        self.revision_action = revision_action
        if "://" not in url:
            url = "http://" + url
        self.url = url.rstrip("/")
        self._protocol = None if protocol is None else _protocol(protocol)
        self._task_ids = (
            {split: [str(t) for t in ids] for split, ids in task_ids.items()} if task_ids else None
        )
        self._instruction = instruction
        if timeout <= 0 or retries < 0 or backoff < 0 or max_instances < 1:
            raise ValueError(
                f"HTTPEnvironment: need timeout > 0, retries >= 0, backoff >= 0 and "
                f"max_instances >= 1, got timeout={timeout}, retries={retries}, "
                f"backoff={backoff}, max_instances={max_instances}"
            )
        self.timeout = float(timeout)
        self.retries = int(retries)
        self.backoff = float(backoff)
        self.create_payload = dict(create_payload or {})
        self.max_instances = int(max_instances)
        self.env_id: Any = None
        self._info: dict[str, Any] | None = None
        self.observation: str | None = None
        self._final_reward = 0.0

    # ---- Environment API ---------------------------------------------------------------------
    @property
    def protocol(self) -> Protocol:
        """The field names in use: as given, else the agentr server's, else "agentgym"."""
        if self._protocol is None:
            info = self.server_info(required=True)
            name = info.get("protocol") if info else None
            self._protocol = PROTOCOLS[name if name in PROTOCOLS else "agentgym"]
        return self._protocol

    @property
    def instruction(self) -> str:
        """As given, else the agentr server's; never empty (no episode is played without one)."""
        if self._instruction is None:
            info = self.server_info(required=True)
            self._instruction = str(info.get("instruction", "")) if info else ""
        if not self._instruction.strip():
            raise HTTPEnvError(
                f"no task instruction for the environment at {self.url}: the server gives none "
                "(an agentr server gives its environment's in GET /info); pass instruction=... "
                "to HTTPEnvironment (HTTPDataModule's instruction)"
            )
        return self._instruction

    def task_ids(self, split: str) -> list[str]:
        self.check_split(split)
        if self._task_ids is None:
            info = self.server_info(required=True)
            if not info or "splits" not in info:
                raise HTTPEnvError(
                    f"the server at {self.url} does not list its tasks (it is not an agentr "
                    "server): pass task_ids={'train': [...], 'test': [...]} to HTTPEnvironment"
                )
            self._task_ids = {s: [str(t) for t in ids] for s, ids in info["splits"].items()}
        return list(self._task_ids.get(split, []))

    def _reset(self, task_id: str) -> str:
        reused = self._ensure_created()
        p = self.protocol
        body = {p.id_field: self.env_id, p.reset_field: self._wire_task(task_id), **p.reset_extra}
        try:
            answer = self._request("POST", "/reset", body)
        except HTTPEnvError as error:
            if not reused or isinstance(error, ServerUnreachableError):
                raise
            # a pooled instance the server no longer knows (it was restarted): make a new one
            self._pool().forget()
            self.env_id = None
            self._ensure_created()
            answer = self._request("POST", "/reset", {**body, p.id_field: self.env_id})
        observation = None
        if isinstance(answer, Mapping) and not p.reset_reads_observation:
            observation = self._field(answer, p.observation_field, "/reset")
            parts = [str(answer[f]) for f in p.reset_prefix_fields if answer.get(f)]
            observation = "\n".join([*parts, str(observation)])
            observation += self._actions_suffix(answer)
        elif isinstance(answer, list) and answer and isinstance(answer[0], str):
            observation = answer[0]
        if observation is None or p.reset_reads_observation:
            observation = self._get_observation()
        self.observation = observation
        self._final_reward = 0.0
        return observation

    def _step(self, action: str) -> tuple[str, float, bool]:
        if self.env_id is None:
            raise HTTPEnvError(f"{self.url}: step() before a successful reset()")
        if self.done:  # servers differ here (some answer an error): answer as local envs do
            return EPISODE_OVER, self._final_reward, True
        p = self.protocol
        answer = self._request("POST", "/step", {p.id_field: self.env_id, "action": action})
        if not isinstance(answer, Mapping):
            raise self._garbage("/step", answer)
        observation = str(self._field(answer, p.observation_field, "/step"))
        observation += self._actions_suffix(answer)
        try:
            reward = float(self._field(answer, p.reward_field, "/step") or 0.0) * p.reward_scale
            done = bool(self._field(answer, "done", "/step"))
        except (TypeError, ValueError):
            raise self._garbage("/step", answer) from None
        if p.negative_is_failure and reward < 0:
            reward, done = 0.0, True
        self.observation = observation
        self._final_reward = reward
        return observation, reward, done

    def clone(self) -> HTTPEnvironment:
        if self.task_id is None:
            raise RuntimeError("clone() needs an episode in progress: call reset() first")
        info = self.server_info(required=False)
        if info and info.get("clone"):
            pool = self._pool()
            pool.reserve(self.max_instances, self.url)
            try:
                answer = self._request("POST", "/clone", {self.protocol.id_field: self.env_id})
                env_id = self._field(answer, "id", "/clone")
            except BaseException:
                pool.unreserve()
                raise
            copy = self.spawn()
            copy.env_id = env_id
            copy.task_id, copy.actions, copy.done = self.task_id, list(self.actions), self.done
            copy.observation, copy._final_reward = self.observation, self._final_reward
            return copy
        return super().clone()

    def spawn(self) -> HTTPEnvironment:
        copy = HTTPEnvironment(
            self.url,
            self._protocol,
            self._task_ids,
            self._instruction,
            self.timeout,
            self.retries,
            self.backoff,
            self.create_payload,
            self.max_instances,
            self.revision_action,
        )
        copy._info = self._info
        return copy

    def expert_actions(self, task_id: str) -> list[str] | None:
        info = self.server_info(required=False)
        if not info or not info.get("expert"):
            return None
        answer = self._request("POST", "/expert", {"data_idx": self._wire_task(task_id)})
        actions = self._field(answer, "actions", "/expert")
        return None if actions is None else [str(a) for a in actions]

    def close(self) -> None:
        """Release the server-side instance: close it, or pool it where the server cannot."""
        if self.env_id is None:
            return
        env_id, self.env_id = self.env_id, None
        pool = self._pool()
        if pool.closable:
            try:
                self._request("POST", "/close", {self.protocol.id_field: env_id}, retries=0)
            except HTTPEnvError as error:
                if error.status in (404, 405):
                    pool.closable = False  # learned: this server has no /close
        pool.release(env_id)

    # ---- helpers -----------------------------------------------------------------------------
    def server_info(self, required: bool = True) -> dict[str, Any] | None:
        """An agentr server's `GET /info` (name, instruction, splits, protocol, clone, expert),
        or None for another server. Cached once the server gave a definite answer (a 4xx, or an
        answer without splits: not an agentr server); when it could not be reached or failed
        (a 5xx but 501), `required` raises and otherwise None is returned, and the next call asks
        again."""
        if self._info is None:
            try:
                answer = self._request("GET", "/info")
            except HTTPEnvError as error:
                # a 4xx, or 501 Not Implemented (no GET at all), is a definite answer
                status = error.status or 0
                failed = isinstance(error, ServerUnreachableError) or (status >= 500 and status != 501)
                if not failed:  # not an agentr server
                    answer = None
                elif required:
                    raise
                else:
                    return None
            self._info = answer if isinstance(answer, dict) and "splits" in answer else {}
        return self._info or None

    def _pool(self) -> InstancePool:
        return instance_pool(self.url, self.create_payload, self.protocol.closes)

    def _ensure_created(self) -> bool:
        """Make sure this client holds an instance; True when it came from the pool."""
        if self.env_id is not None:
            return False
        pool = self._pool()
        reused = pool.take()
        if reused is not None:
            self.env_id = reused  # the caller resets it
            return True
        pool.reserve(self.max_instances, self.url)
        try:
            answer = self._request("POST", "/create", self.create_payload)
            if isinstance(answer, bool) or not isinstance(answer, (int, Mapping)):
                raise self._garbage("/create", answer)
            env_id = answer if isinstance(answer, int) else self._field(answer, "id", "/create")
        except BaseException:
            pool.unreserve()
            raise
        self.env_id = env_id
        return False

    def _get_observation(self) -> str:
        answer = self._request("GET", "/observation", query={self.protocol.id_field: self.env_id})
        if not isinstance(answer, str):
            raise self._garbage("/observation", answer)
        return answer

    def _actions_suffix(self, answer: Mapping[str, Any]) -> str:
        field_name = self.protocol.actions_field
        if field_name and isinstance(answer.get(field_name), list):
            return "\nAvailable actions: " + ", ".join(map(str, answer[field_name]))
        return ""

    def _wire_task(self, task_id: str) -> Any:
        if self.protocol.integer_task_ids and str(task_id).isdigit():
            return int(task_id)
        return str(task_id)

    def _field(self, answer: Any, name: str, path: str) -> Any:
        if not isinstance(answer, Mapping) or name not in answer:
            raise self._garbage(path, answer, f"no field {name!r}")
        return answer[name]

    def _garbage(self, path: str, answer: Any, what: str = "unexpected answer") -> HTTPEnvError:
        text = json.dumps(answer)[:300] if not isinstance(answer, str) else answer[:300]
        return HTTPEnvError(
            f"{self.url}{path} answered garbage ({what}): {text!r}. Is this an AgentGym-protocol "
            f"server, and is protocol={self.protocol!r} right for it?"
        )

    def _request(
        self,
        method: str,
        path: str,
        body: Mapping[str, Any] | None = None,
        query: Mapping[str, Any] | None = None,
        retries: int | None = None,
    ) -> Any:
        url = self.url + path
        if query:
            url += "?" + urllib.parse.urlencode(query)
        data = None if method == "GET" else json.dumps(dict(body or {})).encode("utf-8")
        attempts = 1 + (self.retries if retries is None else retries)
        delay = self.backoff
        last: str = ""
        for attempt in range(attempts):
            if attempt:
                time.sleep(delay)
                delay *= 2
            try:
                status, raw = _exchange(method, url, data, self.timeout)
            except ConnectionRefusedError:
                last = "connection refused"
                continue
            except TimeoutError:
                raise ServerUnreachableError(
                    f"{method} {url}: no complete answer within {self.timeout:g} s (timeout); "
                    "the server is hung or overloaded. Raise `timeout` if its steps are slow."
                ) from None
            except (ConnectionError, http.client.HTTPException) as error:
                # The server closed the connection mid-answer: the request may have been applied,
                # so it is not repeated.
                raise ServerUnreachableError(
                    f"{method} {url}: the server closed the connection ({error!r}); it may have "
                    "crashed or been stopped"
                ) from None
            except OSError as error:
                raise ServerUnreachableError(f"{method} {url} failed: {error}") from None
            payload = _decode(raw)
            message = payload.get("error") if isinstance(payload, dict) else None
            if status in _RETRY_STATUS:
                last = f"HTTP {status}" + (f": {message}" if message else "")
                continue
            if isinstance(payload, dict) and payload.get("error_type") == "UnknownTaskError":
                raise UnknownTaskError(f"{message} (from {url})")
            if status >= 400:
                raise HTTPEnvError(
                    f"{method} {url} failed with HTTP {status}: {message or _snippet(payload)}",
                    status,
                )
            if payload is _NOT_JSON:
                raise HTTPEnvError(
                    f"{method} {url} answered something that is not JSON: {raw[:300]!r}"
                )
            if isinstance(payload, dict) and "error" in payload and len(payload) <= 2:
                raise HTTPEnvError(f"{method} {url} reported an error: {payload['error']}")
            return payload
        raise ServerUnreachableError(
            f"cannot reach the environment server at {self.url} ({method} {path}): {last} after "
            f"{attempts} attempt(s). Is it running? (agentr serves its own environments with "
            "`agentr serve-env --name textcraft`.)"
        )


def _protocol(protocol: str | Protocol | Mapping[str, Any]) -> Protocol:
    if isinstance(protocol, str):
        if protocol not in PROTOCOLS:
            raise ValueError(
                f"unknown protocol {protocol!r}; presets: {', '.join(sorted(PROTOCOLS))}"
            )
        return PROTOCOLS[protocol]
    if isinstance(protocol, Mapping):
        return replace(PROTOCOLS["agentgym"], **dict(protocol))
    return protocol


class _DeadlineReader(io.RawIOBase):
    """Reads a socket, each read waiting only for what is left of one overall deadline."""

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self.sock, self.deadline = sock, deadline

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("deadline passed")
        self.sock.settimeout(left)
        return self.sock.recv_into(buffer)


class _DeadlineSocket:
    """The parts of a socket that `http.client` uses, bound to one deadline."""

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self.sock, self.deadline = sock, deadline

    def sendall(self, data: bytes) -> None:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("deadline passed")
        self.sock.settimeout(left)
        self.sock.sendall(data)

    def makefile(self, mode: str) -> io.BufferedReader:
        return io.BufferedReader(_DeadlineReader(self.sock, self.deadline))

    def close(self) -> None:
        """Left to `_exchange`, which closes the socket once the answer is read (http.client
        closes it as soon as the headers say "Connection: close")."""


def _exchange(method: str, url: str, data: bytes | None, timeout: float) -> tuple[int, bytes]:
    """One request, answered within `timeout` seconds in all: (status, body)."""
    deadline = time.monotonic() + timeout
    parts = urllib.parse.urlsplit(url)
    kind = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    connection = kind(parts.netloc, timeout=timeout)
    sock = None
    try:
        connection.connect()
        sock = connection.sock
        connection.sock = _DeadlineSocket(sock, deadline)  # type: ignore[assignment]
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        headers = {"Accept": "application/json", "Connection": "close"}
        if data is not None:
            headers["Content-Type"] = "application/json"
        connection.request(method, target or "/", body=data, headers=headers)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()
        if sock is not None:
            sock.close()


_NOT_JSON = object()


def _decode(raw: bytes) -> Any:
    try:
        return json.loads(raw.decode("utf-8")) if raw else None
    except (UnicodeDecodeError, ValueError):
        return _NOT_JSON


def _snippet(payload: Any) -> str:
    return "(no JSON body)" if payload is _NOT_JSON else json.dumps(payload)[:300]
