"""The `agentr` command's logging: quiet third-party libraries by default, `--verbose` for all."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import warnings

import pytest

from agentr.verbosity import QUIET_LOGGERS, configure_logging, verbose_requested


@pytest.fixture
def restore_logging(monkeypatch):
    monkeypatch.delenv("VLLM_LOGGING_LEVEL", raising=False)
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
    monkeypatch.setenv("VLLM_LOGGING_LEVEL", "DEBUG")
    configure_logging(verbose=False)
    assert os.environ["VLLM_LOGGING_LEVEL"] == "DEBUG"  # the user's own choice stays


@pytest.mark.vllm
def test_vllm_logs_at_warning_when_imported_after_configuration():
    pytest.importorskip("vllm")
    code = ("from agentr.verbosity import configure_logging; configure_logging(False); "
            "import logging, vllm.logger; print(vllm.logger.init_logger('vllm.engine').getEffectiveLevel())")
    env = {k: v for k, v in os.environ.items() if k != "VLLM_LOGGING_LEVEL"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.split()[-1] == str(logging.WARNING)
