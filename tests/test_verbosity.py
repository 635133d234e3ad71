"""The `agentr` command's logging: quiet third-party libraries by default, `--verbose` for all."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import warnings
from types import SimpleNamespace

import pytest

from agentr import verbosity
from agentr.verbosity import QUIET_LOGGERS, RoutineWarnings, configure_logging, verbose_requested

ENVIRONMENT = ("VLLM_LOGGING_LEVEL", "VLLM_LOGGING_CONFIG_PATH", "PYTHONWARNINGS", "TORCH_CPP_LOG_LEVEL")


@pytest.fixture
def restore_logging(monkeypatch):
    for name in ENVIRONMENT:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(verbosity, "_verbose", verbosity._verbose)  # restored afterwards
    levels = {name: logging.getLogger(name).level for name in QUIET_LOGGERS}
    with warnings.catch_warnings():
        yield
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)


def test_verbose_flag_and_environment_variable(monkeypatch):
    monkeypatch.delenv("AGENTR_VERBOSE", raising=False)
    assert verbose_requested(["fit", "--verbose", "--config", "x.yaml"]) == (True, ["fit", "--config", "x.yaml"])
    assert verbose_requested(["fit", "--config", "x.yaml"]) == (False, ["fit", "--config", "x.yaml"])
    monkeypatch.setenv("AGENTR_VERBOSE", "1")
    assert verbose_requested(["collect"]) == (True, ["collect"])


SPELLINGS = [
    (["--verbose"], True),
    (["--verbose", "true"], True),
    (["--verbose=true"], True),
    (["--verbose", "True"], True),
    (["--verbose", "false"], False),
    (["--verbose=false"], False),
    (["--verbose", "--verbose", "no"], False),  # the last one wins
]


@pytest.mark.parametrize("spelling, expected", SPELLINGS)
def test_every_spelling_of_verbose_is_read_for_every_command(monkeypatch, spelling, expected):
    monkeypatch.setenv("AGENTR_VERBOSE", "1")  # an explicit flag wins over the environment
    for command in (["serve-env", "--name", "textcraft"], ["fit", "--config", "x.yaml"],
                    ["report", "runs/a"]):
        assert verbose_requested([*command, *spelling]) == (expected, command)
        assert verbose_requested([command[0], *spelling, *command[1:]]) == (expected, command)
    # a value the parser would refuse is left for it to report (AGENTR_VERBOSE decides)
    assert verbose_requested(["fit", "--verbose=maybe"]) == (True, ["fit", "--verbose=maybe"])


@pytest.mark.parametrize("spelling, expected", SPELLINGS)
def test_serve_env_logs_requests_as_its_help_says(restore_logging, monkeypatch, capsys,
                                                  spelling, expected):
    """`agentr serve-env --verbose true` (as `--help` shows it) runs, and every spelling turns the
    server's request log on or off."""
    from agentr.cli import main
    from agentr.commands import serve_env

    monkeypatch.delenv("AGENTR_VERBOSE", raising=False)
    asked = []

    def interrupt():
        raise KeyboardInterrupt  # stops at once, as Ctrl-C would

    def make_server(name, host, port, options, max_envs, verbose, *rest):  # binds nothing
        asked.append(verbose)
        answers = SimpleNamespace(format=SimpleNamespace(name=name))
        return SimpleNamespace(url="http://127.0.0.1:0", service=answers,
                               serve_forever=interrupt, server_close=lambda: None)

    monkeypatch.setattr(serve_env, "make_server", make_server)
    main(["serve-env", "--name", "textcraft", "--port", "0", *spelling])
    assert asked == [expected]
    with pytest.raises(SystemExit):
        main(["serve-env", "--help"])
    assert "--verbose {true,false}" in capsys.readouterr().out


def test_third_party_logs_are_quiet_unless_verbose(restore_logging, monkeypatch):
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.INFO)
    configure_logging(verbose=True)
    assert "VLLM_LOGGING_LEVEL" not in os.environ
    assert logging.getLogger("transformers").getEffectiveLevel() == logging.INFO
    configure_logging(verbose=False)
    assert os.environ["VLLM_LOGGING_LEVEL"] == "WARNING"  # read by vLLM when it is imported
    for name in ("vllm", "transformers", "lightning.pytorch", "torch"):
        assert logging.getLogger(name).getEffectiveLevel() == logging.WARNING
    assert logging.getLogger("agentr").getEffectiveLevel() == logging.INFO
    # engine processes are fresh interpreters: they get the same through the environment
    assert os.environ["PYTHONWARNINGS"] == "ignore::FutureWarning,ignore::DeprecationWarning"
    assert os.environ["TORCH_CPP_LOG_LEVEL"] == "ERROR"
    assert os.path.exists(os.environ["VLLM_LOGGING_CONFIG_PATH"])
    monkeypatch.setenv("VLLM_LOGGING_LEVEL", "DEBUG")
    monkeypatch.setenv("VLLM_LOGGING_CONFIG_PATH", "/mine.json")
    configure_logging(verbose=False)
    assert os.environ["VLLM_LOGGING_LEVEL"] == "DEBUG"  # the user's own choices stay
    assert os.environ["VLLM_LOGGING_CONFIG_PATH"] == "/mine.json"


def test_routine_vllm_warnings_are_dropped_and_others_kept():
    def record(message):
        return logging.LogRecord("vllm.platforms.cpu", logging.WARNING, __file__, 1, message, (), None)

    routine = RoutineWarnings()
    assert not routine.filter(record("Triton is not installed. triton-cpu is expected on x86 CPUs."))
    assert not routine.filter(record("libtcmalloc is not found in LD_PRELOAD. For best performance ..."))
    assert routine.filter(record("The KV cache is too small for max_model_len 2048"))


@pytest.mark.vllm
def test_vllm_logs_at_warning_when_imported_after_configuration():
    pytest.importorskip("vllm")
    code = ("from agentr.verbosity import configure_logging; configure_logging(False); "
            "import logging, vllm.logger; print(vllm.logger.init_logger('vllm.engine').getEffectiveLevel())")
    env = {k: v for k, v in os.environ.items() if k != "VLLM_LOGGING_LEVEL"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.split()[-1] == str(logging.WARNING)



def test_engine_processes_drop_routine_vllm_warnings():
    # what an engine process does with the environment it inherits: vLLM applies the dictConfig
    # file VLLM_LOGGING_CONFIG_PATH names when it configures its logging
    code = ("import json, logging, logging.config, os; "
            "logging.config.dictConfig(json.load(open(os.environ['VLLM_LOGGING_CONFIG_PATH']))); "
            "log = logging.getLogger('vllm.platforms.cpu'); "
            "log.warning('Triton is not installed. triton-cpu is expected on x86 CPUs.'); "
            "log.warning('KV cache is too small'); log.info('an info line')")
    env = {k: v for k, v in os.environ.items() if k not in ENVIRONMENT}
    configure = "from agentr.verbosity import configure_logging; configure_logging(False); import os, subprocess, sys; "
    parent = configure + f"subprocess.run([sys.executable, '-c', {code!r}], check=True)"
    out = subprocess.run([sys.executable, "-c", parent], capture_output=True, text=True, env=env, check=True)
    printed = out.stdout + out.stderr
    assert "(vllm) WARNING KV cache is too small" in printed
    assert "Triton is not installed" not in printed and "an info line" not in printed
