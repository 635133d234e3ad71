"""Remote environments over HTTP, in the AgentGym server protocol.

AgentGym's environment servers (`agentenv-textcraft`, `-webshop`, `-alfworld`, `-babyai`,
`-sciworld`, ...) share one shape:

    POST /create                          -> {"id": 0, ...}            (WebShop: a bare int)
    POST /reset  {"id": 0, "data_idx": 3} -> {"observation": "...", ...}
    POST /step   {"id": 0, "action": "…"} -> {"observation": "...", "reward": 0.0, "done": false}
    GET  /observation?id=0                -> "..."
    POST /close  {"id": 0}                -> {"closed": true}          (not every server has it)

and an error is answered as `{"error": "..."}`. The field names differ a little between servers;
`Protocol` names them, and `PROTOCOLS` holds presets (`"agentgym"` is the common one, used by
agentr's own server, TextCraft and BabyAI; `"webshop"`, `"sciworld"`, `"alfworld"`).

agentr's server (`agentr serve-env`) adds `GET /info` (instruction, splits), `POST /clone` and
`POST /expert`; the client uses them when they are there. Against another server, pass
`task_ids` and `instruction` yourself.

Only the standard library is used (urllib). Every request has a timeout; a refused connection and
a 502/503/504 answer are retried a bounded number of times with exponential backoff (nothing else
is retried, so a step is never applied twice); every failure raises `HTTPEnvError` naming the URL.
"""

from __future__ import annotations

import http.client
import json
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from agentr.envs.base import Environment, UnknownTaskError


class HTTPEnvError(RuntimeError):
    """A remote environment is unreachable, failed, or answered something unexpected."""


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
    ),
    "alfworld": Protocol(
        reset_field="game", reset_extra={"world_type": "Text"}, actions_field="available_actions"
    ),
}

_RETRY_STATUS = {502, 503, 504}


class HTTPEnvironment(Environment):
    """An environment served over HTTP in the AgentGym protocol.

    Args:
        url: the server's base URL, e.g. "http://127.0.0.1:8000".
        protocol: a preset name from `PROTOCOLS`, a `Protocol`, or a dict of `Protocol` fields.
        task_ids: the task ids of each split, e.g. `{"train": range(0, 300), "test": range(300,
            400)}`; default: asked from an agentr server (`GET /info`).
        instruction: the task instruction; default: an agentr server's, else "".
        timeout: seconds to wait for any one answer.
        retries: extra attempts after a refused connection or a 502/503/504 answer.
        backoff: seconds before the first retry; doubled for each next one.
        create_payload: the JSON body of `/create` (AgentGym's TextCraft takes `commands`, `goal`).

    The server-side instance is created on the first `reset` and released by `close()`. Clones
    use the server's `/clone` when it has one (agentr servers), else reset-and-replay on a new
    instance: close clones you no longer need.
    """

    name = "http"
    cheap_clone = False

    def __init__(
        self,
        url: str,
        protocol: str | Protocol | Mapping[str, Any] = "agentgym",
        task_ids: Mapping[str, Iterable[Any]] | None = None,
        instruction: str | None = None,
        timeout: float = 60.0,
        retries: int = 3,
        backoff: float = 0.5,
        create_payload: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if "://" not in url:
            url = "http://" + url
        self.url = url.rstrip("/")
        if isinstance(protocol, str):
            if protocol not in PROTOCOLS:
                raise ValueError(
                    f"unknown protocol {protocol!r}; presets: {', '.join(sorted(PROTOCOLS))}"
                )
            protocol = PROTOCOLS[protocol]
        elif isinstance(protocol, Mapping):
            protocol = replace(PROTOCOLS["agentgym"], **dict(protocol))
        self.protocol: Protocol = protocol
        self._task_ids = (
            {split: [str(t) for t in ids] for split, ids in task_ids.items()} if task_ids else None
        )
        self._instruction = instruction
        self.timeout = float(timeout)
        self.retries = int(retries)
        self.backoff = float(backoff)
        self.create_payload = dict(create_payload or {})
        self.env_id: Any = None
        self._info: dict[str, Any] | None = None
        self.observation: str | None = None

    # ---- Environment API ---------------------------------------------------------------------
    @property
    def instruction(self) -> str:
        if self._instruction is None:
            info = self.server_info(required=False)
            self._instruction = str(info.get("instruction", "")) if info else ""
        return self._instruction

    def task_ids(self, split: str) -> list[str]:
        self.check_split(split)
        if self._task_ids is None:
            info = self.server_info(required=False)
            if not info or "splits" not in info:
                raise HTTPEnvError(
                    f"the server at {self.url} does not list its tasks (it is not an agentr "
                    "server): pass task_ids={'train': [...], 'test': [...]} to HTTPEnvironment"
                )
            self._task_ids = {s: [str(t) for t in ids] for s, ids in info["splits"].items()}
        return list(self._task_ids.get(split, []))

    def _reset(self, task_id: str) -> str:
        self._ensure_created()
        p = self.protocol
        body = {p.id_field: self.env_id, p.reset_field: self._wire_task(task_id), **p.reset_extra}
        answer = self._request("POST", "/reset", body)
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
        return observation

    def _step(self, action: str) -> tuple[str, float, bool]:
        if self.env_id is None:
            raise HTTPEnvError(f"{self.url}: step() before a successful reset()")
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
        return observation, reward, done

    def clone(self) -> HTTPEnvironment:
        if self.task_id is None:
            raise RuntimeError("clone() needs an episode in progress: call reset() first")
        info = self.server_info(required=False)
        if info and info.get("clone"):
            answer = self._request("POST", "/clone", {self.protocol.id_field: self.env_id})
            copy = self.spawn()
            copy.env_id = self._field(answer, "id", "/clone")
            copy.task_id, copy.actions, copy.done = self.task_id, list(self.actions), self.done
            copy.observation = self.observation
            return copy
        return super().clone()

    def spawn(self) -> HTTPEnvironment:
        copy = HTTPEnvironment(
            self.url,
            self.protocol,
            self._task_ids,
            self._instruction,
            self.timeout,
            self.retries,
            self.backoff,
            self.create_payload,
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
        """Release the server-side instance (servers without `/close` are left alone)."""
        if self.env_id is None:
            return
        env_id, self.env_id = self.env_id, None
        try:
            self._request("POST", "/close", {self.protocol.id_field: env_id}, retries=0)
        except HTTPEnvError:
            pass

    # ---- helpers -----------------------------------------------------------------------------
    def server_info(self, required: bool = True) -> dict[str, Any] | None:
        """An agentr server's `GET /info` (name, instruction, splits, clone, expert), cached."""
        if self._info is None:
            try:
                answer = self._request("GET", "/info")
            except HTTPEnvError:
                if required:
                    raise
                answer = None
            self._info = answer if isinstance(answer, dict) and "splits" in answer else {}
        return self._info or None

    def _ensure_created(self) -> None:
        if self.env_id is not None:
            return
        answer = self._request("POST", "/create", self.create_payload)
        if isinstance(answer, bool) or not isinstance(answer, (int, Mapping)):
            raise self._garbage("/create", answer)
        self.env_id = answer if isinstance(answer, int) else self._field(answer, "id", "/create")

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
            request = urllib.request.Request(url, data=data, method=method)
            request.add_header("Accept", "application/json")
            if data is not None:
                request.add_header("Content-Type", "application/json")
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    raw = response.read()
            except urllib.error.HTTPError as error:
                payload = _decode(error.read())
                message = payload.get("error") if isinstance(payload, dict) else None
                if error.code in _RETRY_STATUS:
                    last = f"HTTP {error.code}" + (f": {message}" if message else "")
                    continue
                if isinstance(payload, dict) and payload.get("error_type") == "UnknownTaskError":
                    raise UnknownTaskError(f"{message} (from {url})") from None
                raise HTTPEnvError(
                    f"{method} {url} failed with HTTP {error.code}: {message or _snippet(payload)}"
                ) from None
            except urllib.error.URLError as error:
                reason = error.reason
                if isinstance(reason, ConnectionRefusedError):
                    last = "connection refused"
                    continue
                if isinstance(reason, (TimeoutError, socket.timeout)):
                    raise self._timeout(method, url) from None
                raise HTTPEnvError(f"{method} {url} failed: {reason}") from None
            except (TimeoutError, socket.timeout):
                raise self._timeout(method, url) from None
            except (ConnectionError, http.client.HTTPException) as error:
                # The server closed the connection mid-answer: the request may have been applied,
                # so it is not repeated.
                raise HTTPEnvError(
                    f"{method} {url}: the server closed the connection ({error!r}); it may have "
                    "crashed or been stopped"
                ) from None
            payload = _decode(raw)
            if payload is _NOT_JSON:
                raise HTTPEnvError(
                    f"{method} {url} answered something that is not JSON: {raw[:300]!r}"
                )
            if isinstance(payload, dict) and "error" in payload and len(payload) <= 2:
                if payload.get("error_type") == "UnknownTaskError":
                    raise UnknownTaskError(f"{payload['error']} (from {url})")
                raise HTTPEnvError(f"{method} {url} reported an error: {payload['error']}")
            return payload
        raise HTTPEnvError(
            f"cannot reach the environment server at {self.url} ({method} {path}): {last} after "
            f"{attempts} attempt(s). Is it running? (agentr serves its own environments with "
            "`agentr serve-env --name textcraft`.)"
        )

    def _timeout(self, method: str, url: str) -> HTTPEnvError:
        return HTTPEnvError(
            f"{method} {url}: no answer within {self.timeout:g} s (timeout); the server is hung "
            "or overloaded. Raise `timeout` if its steps are slow."
        )


_NOT_JSON = object()


def _decode(raw: bytes) -> Any:
    try:
        return json.loads(raw.decode("utf-8")) if raw else None
    except (UnicodeDecodeError, ValueError):
        return _NOT_JSON


def _snippet(payload: Any) -> str:
    return "(no JSON body)" if payload is _NOT_JSON else json.dumps(payload)[:300]
