"""Every shipped config parses and validates against the code (no training is run)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from agentr.cli import main

CONFIGS = Path(__file__).parents[1] / "configs"
FIT_CONFIGS = sorted(CONFIGS.glob("*.yaml")) + sorted((CONFIGS / "paper").glob("*.yaml"))


def resolved(args: list[str], capsys) -> dict:
    with pytest.raises(SystemExit) as exit_:
        main(args + ["--print_config"])
    assert exit_.value.code in (0, None)
    return yaml.safe_load(capsys.readouterr().out)


@pytest.mark.parametrize("path", FIT_CONFIGS, ids=lambda p: str(p.relative_to(CONFIGS)))
def test_fit_config_parses(path, capsys):
    config = resolved(["fit", "--config", str(path)], capsys)
    callbacks = [c["class_path"] for c in config["trainer"]["callbacks"]]
    assert callbacks == [
        "agentr.callbacks.GenerationCallback",
        "agentr.callbacks.AgentRIterations",
        "agentr.callbacks.EvaluationCallback",
    ]
    # The data's tokenizer is linked to the trained model, so configs never set it twice.
    assert "model" not in config["data"]["init_args"]
    assert config["trainer"]["callbacks"][0]["init_args"]["engine"]["kind"] in ("auto", "vllm")


def test_fit_takes_the_search_settings_without_init_args(capsys):
    """`agentr fit --data.search.X` (as `agentr collect --search.X`), besides the full
    `--data.init_args.search.X`."""
    config = resolved(["fit", "--config", str(CONFIGS / "quickstart.yaml"),
                       "--data.search.num_simulations", "7"], capsys)
    assert config["data"]["init_args"]["search"]["num_simulations"] == 7


@pytest.mark.parametrize("baseline, setting", [("direct_revision", {"transition": "end"}),
                                               ("optimal", {"mode": "optimal"})])
def test_baseline_overlays_switch_the_search_mode(baseline, setting, capsys):
    config = resolved(["fit", "--config", str(CONFIGS / "quickstart.yaml"),
                       "--config", str(CONFIGS / "baselines" / f"{baseline}.yaml")], capsys)
    search = config["data"]["init_args"]["search"]
    assert {k: search[k] for k in setting} == setting
    quickstart = yaml.safe_load((CONFIGS / "quickstart.yaml").read_text())
    assert config["data"]["init_args"]["num_tasks"] == quickstart["data"]["init_args"]["num_tasks"]  # kept


def test_vanilla_baseline_is_an_evaluate_config(capsys):
    config = resolved(["evaluate", "--config", str(CONFIGS / "baselines" / "vanilla.yaml")], capsys)
    assert config["max_turns"] == 100 and config["split"] == "test"


def test_sweep_parameters_are_valid_overrides(capsys):
    sweep = yaml.safe_load((CONFIGS / "sweeps" / "quickstart.yaml").read_text())
    overrides = [f"--{key}={spec['values'][0]}" for key, spec in sweep["parameters"].items()]
    command = [a for a in sweep["command"][1:] if not a.startswith("${")]
    config = resolved(command + overrides, capsys)
    assert config["model"]["learning_rate"] == sweep["parameters"]["model.learning_rate"]["values"][0]
    assert config["trainer"]["logger"]["class_path"] == "lightning.pytorch.loggers.WandbLogger"


def build(args: list[str]):
    """The Trainer, module and data of `agentr fit` with `args`, built as fit builds them."""
    from agentr.cli import _lightning_cli

    return _lightning_cli(args, run=False)


@pytest.mark.parametrize("path", FIT_CONFIGS, ids=lambda p: str(p.relative_to(CONFIGS)))
def test_fit_config_builds_its_trainer_and_strategy(path, tmp_path):
    """Building the Trainer catches what parsing does not (a strategy Lightning refuses)."""
    config = yaml.safe_load(path.read_text())
    cli = build(["--config", str(path), "--trainer.accelerator", "cpu", "--trainer.devices", "1",
                 "--trainer.default_root_dir", str(tmp_path)])
    strategy = config["trainer"].get("strategy")
    if strategy is not None:
        assert f"{type(cli.trainer.strategy).__module__}.{type(cli.trainer.strategy).__name__}" \
            == strategy["class_path"]
    assert [type(c).__name__ for c in cli.trainer.callbacks if type(c).__module__.startswith("agentr")] \
        == ["GenerationCallback", "AgentRIterations", "EvaluationCallback"]


def test_a_strategy_given_as_a_bare_class_path_is_refused_in_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["fit", "--config", str(CONFIGS / "quickstart.yaml"),
              "--trainer.strategy", "agentr.training.fsdp.AgentRFSDPStrategy"])
    assert exit_.value.code == 2
    assert "class_path: agentr.training.fsdp.AgentRFSDPStrategy" in capsys.readouterr().err


# ---- overlays change the callback settings they name, and only those ---------------------------
def _leaves(config, prefix: str = "") -> dict:
    """Every setting of a config as {dotted path: value}; callbacks are keyed by class name."""
    if isinstance(config, dict):
        out = {}
        for key, value in config.items():
            if key == "callbacks" and isinstance(value, list):
                value = {c["class_path"].rsplit(".", 1)[-1]: {k: v for k, v in c.items() if k != "class_path"}
                         for c in value}
            out.update(_leaves(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: config}


def _kept_unless_named(base: dict, result: dict, named: set[str]) -> None:
    """Every setting of `base` is in `result` unchanged, unless `named` sets it or gives a
    `class_path` above it (another class has other settings)."""
    classes = {n.removesuffix("class_path") for n in named if n.endswith("class_path")}
    for path, value in _leaves(base).items():
        if path in named or any(f"{path}.".startswith(c) for c in classes):
            continue
        assert result.get(path, "<missing>") == value, path


def _overlay(tmp_path, callbacks: list) -> str:
    path = tmp_path / "overlay.yaml"
    path.write_text(yaml.safe_dump({"trainer": {"callbacks": callbacks}}))
    return str(path)


@pytest.mark.parametrize("callbacks", [
    [{"class_path": "agentr.callbacks.AgentRIterations", "init_args": {"alpha": [0.6]}}],
    [{"class_path": "agentr.callbacks.GenerationCallback", "init_args": {"engine": {"kind": "hf"}}},
     {"class_path": "AgentRIterations", "init_args": {"alpha": [0.6]}}],
], ids=["alpha alone", "generation and alpha"])
def test_an_overlay_changes_the_callback_settings_it_names_and_keeps_the_rest(tmp_path, capsys, callbacks):
    quickstart = resolved(["fit", "--config", str(CONFIGS / "quickstart.yaml")], capsys)
    config = resolved(["fit", "--config", str(CONFIGS / "quickstart.yaml"),
                       "--config", _overlay(tmp_path, callbacks)], capsys)
    _kept_unless_named(quickstart, _leaves(config), set(_leaves({"trainer": {"callbacks": callbacks}})))
    assert _leaves(config)["trainer.callbacks.AgentRIterations.init_args.alpha"] == [0.6]
    assert [c["class_path"] for c in config["trainer"]["callbacks"]] == [
        c["class_path"] for c in quickstart["trainer"]["callbacks"]]


def test_an_overlay_adds_a_callback_of_a_new_class(tmp_path, capsys):
    config = resolved(["fit", "--config", str(CONFIGS / "quickstart.yaml"), "--config", _overlay(
        tmp_path, [{"class_path": "lightning.pytorch.callbacks.LearningRateMonitor"}])], capsys)
    assert [c["class_path"].rsplit(".", 1)[-1] for c in config["trainer"]["callbacks"]] == [
        "GenerationCallback", "AgentRIterations", "EvaluationCallback", "LearningRateMonitor"]


SWEEP = yaml.safe_load((CONFIGS / "sweeps" / "quickstart.yaml").read_text())


@pytest.mark.parametrize("overlay", ["gpu_smoke.yaml", "baselines/direct_revision.yaml",
                                     "baselines/optimal.yaml", "sweeps/wandb_logger.yaml",
                                     "sweeps/quickstart.yaml"])
def test_shipped_overlays_keep_every_setting_they_do_not_name(overlay, capsys):
    quickstart = resolved(["fit", "--config", str(CONFIGS / "quickstart.yaml")], capsys)
    if overlay == "sweeps/quickstart.yaml":  # the sweep's command, with one value of each parameter
        command = [a for a in SWEEP["command"][1:] if not a.startswith("${")]
        overrides = {key: spec["values"][0] for key, spec in SWEEP["parameters"].items()}
        args = command + [f"--{k}={v}" for k, v in overrides.items()]
        named = set(overrides) | set(_leaves(yaml.safe_load((CONFIGS.parent / command[-1]).read_text())))
    else:
        args = ["fit", "--config", str(CONFIGS / "quickstart.yaml"), "--config", str(CONFIGS / overlay)]
        named = set(_leaves(yaml.safe_load((CONFIGS / overlay).read_text())))
    config = _leaves(resolved(args, capsys))
    _kept_unless_named(quickstart, config, named)
    assert named <= set(config)
