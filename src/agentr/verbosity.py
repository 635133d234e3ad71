"""What the `agentr` command prints: agentr's own progress, and other libraries' warnings only.

By default the logs of vLLM, transformers, torch, Lightning (its info lines; progress bars are
kept) and their helpers show from WARNING up, and FutureWarning/DeprecationWarning messages are
hidden; agentr's own INFO messages go to stderr. vLLM's routine warnings, which every engine
start on a CPU repeats and which ask nothing of the user (`ROUTINE_VLLM_WARNINGS`), and torch's
C++ warnings are dropped too. `--verbose` (or `--verbose true`, `--verbose=true`; `false` turns
it off) on any `agentr` command, or `AGENTR_VERBOSE=1`, keeps every library's full log.

vLLM reads its logging settings once, when it is first imported, and its engine processes are
fresh interpreters that only inherit the environment, so everything here is also set through
environment variables (VLLM_LOGGING_LEVEL, VLLM_LOGGING_CONFIG_PATH, PYTHONWARNINGS,
TORCH_CPP_LOG_LEVEL) before any engine starts; a variable the user set is left as it is.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
import warnings
from pathlib import Path

from agentr.jsonfiles import write_text

#: Loggers held at WARNING unless verbose.
QUIET_LOGGERS = ("vllm", "transformers", "torch", "lightning", "lightning.pytorch", "lightning.fabric",
                 "peft", "accelerate", "urllib3", "httpx", "filelock", "datasets", "numexpr")


#: Parts of vLLM warnings that are dropped unless verbose: CPU builds without Triton, compile or
#: tcmalloc (README: "Set-up"), and agentr's own engine shutdown.
ROUTINE_VLLM_WARNINGS = (
    "requires Triton", "Triton is not installed", "Triton is installed, but",
    "Enforce eager set", "Inductor compilation was disabled", "is not found in LD_PRELOAD",
    "Reset SSM cache type", "force killing",
    "does not officially support disabling chunked prefill",
    # an engine core in agentr's process (vllm_engine): agentr keeps the random state itself,
    # and training runs with the threads the engine bound
    "this may affect the random state of the Python process",
    "doesn't allow to use `torch.set_num_threads`",
)


class RoutineWarnings(logging.Filter):
    """Drops records whose message contains one of `ROUTINE_VLLM_WARNINGS`."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(part in message for part in ROUTINE_VLLM_WARNINGS)


def vllm_logging_config() -> dict:
    """vLLM's logging at WARNING, routine warnings dropped (a `logging.config.dictConfig`)."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"routine": {"()": f"{__name__}.RoutineWarnings"}},
        "formatters": {"plain": {"format": "(vllm) %(levelname)s %(message)s"}},
        "handlers": {"vllm": {"class": "logging.StreamHandler", "stream": "ext://sys.stdout",
                              "level": "WARNING", "filters": ["routine"], "formatter": "plain"}},
        "loggers": {"vllm": {"handlers": ["vllm"], "level": "WARNING", "propagate": False}},
    }


def _write_vllm_logging_config() -> str:
    """`vllm_logging_config()` as a file vLLM's processes can read (VLLM_LOGGING_CONFIG_PATH)."""
    path = Path(tempfile.gettempdir()) / f"agentr-vllm-logging-{os.getuid()}.json"
    text = json.dumps(vllm_logging_config(), indent=1)
    if not path.exists() or path.read_text() != text:
        write_text(path, text)
    return str(path)


#: The words `--verbose` takes as its value, as the command-line parser reads booleans.
BOOLEAN_WORDS = {"true": True, "yes": True, "on": True, "false": False, "no": False, "off": False}

_verbose = False  # what the running `agentr` command asked for (set by `configure_logging`)


def verbose_requested(argv: list[str]) -> tuple[bool, list[str]]:
    """Whether the command asks to be verbose, and `argv` without the asking.

    `--verbose`, `--verbose true`, `--verbose=true` (or yes/on) and `--verbose false` (or
    `=false`, no, off) are all read here, for every command, before any parser sees `argv`: the
    last one wins, else AGENTR_VERBOSE (1/true/yes). A `--verbose=VALUE` with another value is
    left in `argv`, for the command's parser to report.
    """
    verbose, rest, i = None, [], 0
    while i < len(argv):
        name, equals, value = argv[i].partition("=")
        if name != "--verbose" or (equals and value.lower() not in BOOLEAN_WORDS):
            rest.append(argv[i])
            i += 1
            continue
        if not equals and i + 1 < len(argv) and argv[i + 1].lower() in BOOLEAN_WORDS:
            value, i = argv[i + 1], i + 1
        verbose = BOOLEAN_WORDS.get(value.lower(), True)  # a bare `--verbose` is true
        i += 1
    if verbose is None:
        verbose = os.environ.get("AGENTR_VERBOSE", "").strip().lower() in ("1", "true", "yes")
    return verbose, rest


def is_verbose() -> bool:
    """Whether the running `agentr` command is verbose (`configure_logging`'s last setting), for
    commands that log more when asked (`serve-env` logs every request)."""
    return _verbose


def configure_logging(verbose: bool) -> None:
    """agentr's INFO messages on stderr; other libraries at WARNING unless `verbose`."""
    global _verbose
    _verbose = verbose
    agentr = logging.getLogger("agentr")
    if not agentr.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("[agentr] %(message)s"))
        agentr.addHandler(handler)
        agentr.setLevel(logging.INFO)
    if verbose:
        return
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    if "VLLM_LOGGING_CONFIG_PATH" not in os.environ:
        os.environ["VLLM_LOGGING_CONFIG_PATH"] = _write_vllm_logging_config()
    os.environ.setdefault("PYTHONWARNINGS", "ignore::FutureWarning,ignore::DeprecationWarning")
    os.environ.setdefault("TORCH_CPP_LOG_LEVEL", "ERROR")  # e.g. vLLM-CPU's NUMA binding notice
    quiet_libraries()
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)


def quiet_libraries() -> None:
    """Hold the third-party loggers at WARNING. Lightning sets its level to INFO when it is
    imported, so this runs again once it is."""
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
