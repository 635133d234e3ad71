"""`agentr serve-env`: an agentr environment over HTTP."""

from __future__ import annotations

from typing import Any

from agentr.envs.server import make_server
from agentr.verbosity import is_verbose


def serve_command(
    name: str,
    host: str = "127.0.0.1",
    port: int = 8000,
    options: dict[str, Any] | None = None,
    max_envs: int = 1024,
    verbose: bool = False,
    answer_format: str | None = None,
    max_body_bytes: int = 1 << 20,
    request_timeout: float = 30.0,
    max_connections: int = 64,
) -> None:
    """Serve an agentr environment over HTTP in the AgentGym protocol, until interrupted.

    The server has NO authentication: anyone who can reach its port can create and play
    environments. It listens on loopback (127.0.0.1) by default and warns when told otherwise.

    Args:
        name: a registered environment ("textcraft", "sciworld").
        host: the interface to listen on; loopback by default (no authentication: expose it
            only on networks you trust).
        port: the port (0 picks a free one).
        options: constructor options of the environment, e.g. {"split_scheme": "agentgym"}.
        max_envs: the most environment instances open at once (`/create` and `/clone`).
        verbose: log every request. On the command line every spelling (`--verbose`,
            `--verbose true`, `--verbose=true`, `--verbose false`) is the `agentr` command's own
            `--verbose`, which also shows other libraries' full logs; so is AGENTR_VERBOSE=1.
        answer_format: the AgentGym server whose answers to imitate: "textcraft", "sciworld",
            "babyai" or "agentgym"; default: the environment's name when it is one of them,
            else "agentgym".
        max_body_bytes: the largest request body accepted (413 past it).
        request_timeout: seconds a request body may take to arrive, and an idle connection
            may stay open (408 past it).
        max_connections: the most connections served at once, each by its own thread (503
            past it: clients retry).
    """
    server = make_server(
        name, host, port, options, max_envs, verbose or is_verbose(), answer_format, max_body_bytes,
        request_timeout, max_connections,
    )  # fmt: skip
    print(
        f"Serving agentr environment {name!r} at {server.url} (AgentGym protocol, "
        f"{server.service.format.name} answers: /create /reset /step /observation /close; agentr "
        "extras: /info /clone /expert). No authentication. Ctrl-C stops.",
        flush=True,
    )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
