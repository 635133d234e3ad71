"""What the `agentr` command prints: agentr's own progress, and other libraries' warnings only.

By default the logs of vLLM, transformers, torch, Lightning (its info lines; progress bars are
kept) and their helpers show from WARNING up, and FutureWarning/DeprecationWarning messages are
hidden; agentr's own INFO messages go to stderr. `--verbose` on any `agentr` command, or
`AGENTR_VERBOSE=1`, keeps every library's full log. vLLM reads VLLM_LOGGING_LEVEL once, when it
is first imported (its engine processes inherit it), so `configure_logging` runs before any
engine starts; an explicit VLLM_LOGGING_LEVEL is left as the user set it.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings

#: Loggers held at WARNING unless verbose.
QUIET_LOGGERS = ("vllm", "transformers", "torch", "lightning", "lightning.pytorch", "lightning.fabric",
                 "peft", "accelerate", "urllib3", "httpx", "filelock", "datasets", "numexpr")


def verbose_requested(argv: list[str]) -> tuple[bool, list[str]]:
    """Whether `--verbose` is in `argv` or AGENTR_VERBOSE is set to 1/true/yes; `argv` without it."""
    rest = [a for a in argv if a != "--verbose"]
    from_env = os.environ.get("AGENTR_VERBOSE", "").strip().lower() in ("1", "true", "yes")
    return from_env or len(rest) < len(argv), rest


def configure_logging(verbose: bool) -> None:
    """agentr's INFO messages on stderr; other libraries at WARNING unless `verbose`."""
    agentr = logging.getLogger("agentr")
    if not agentr.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("[agentr] %(message)s"))
        agentr.addHandler(handler)
        agentr.setLevel(logging.INFO)
    if verbose:
        return
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    quiet_libraries()
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)


def quiet_libraries() -> None:
    """Hold the third-party loggers at WARNING. Lightning sets its level to INFO when it is
    imported, so this runs again once it is."""
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
