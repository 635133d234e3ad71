"""The method-comparison experiment's logic (bench/experiments/compare_methods.py), without a model:
its configs parse, its plan, resuming after a crash, and the results table on hand-made evaluations."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import yaml

from agentr.cli import main as agentr_main

SCRIPT = Path(__file__).parents[1] / "bench" / "experiments" / "compare_methods.py"


@pytest.fixture(scope="module")
def experiment():
    spec = importlib.util.spec_from_file_location("compare_methods", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["compare_methods"] = module
    spec.loader.exec_module(module)
    return module


def small(experiment, tmp_path, *extra):
    return experiment.parse_args(["--out_dir", str(tmp_path / "out"), "--iterations", "2",
                                  "--eval_tasks", "3", "--episodes_per_task", "2",
                                  "--tasks_per_iteration", "4", "--max_turns", "5", "--epochs", "3",
                                  *extra])


def evaluation(outcomes: list[bool], samples: int = 2) -> dict:
    """eval.json contents: greedy outcomes per task, and `samples` sampled copies of each."""
    def summary(task, success, **extra):
        return {"task_id": str(task), "success": success, "reward": float(success), **extra}

    def block(episodes):
        n = len(episodes)
        rate = sum(e["success"] for e in episodes) / n
        return {"metrics": {"success_rate": rate, "success_rate_ci": [0.0, 1.0], "revision_rate": 0.5,
                            "recovery_rate": 1.0, "loop_count": 0.25},
                "num_episodes": n, "episodes": episodes}

    results = block([summary(t, s) for t, s in enumerate(outcomes)])
    results["sampled"] = block([summary(t, s, sample=j) for t, s in enumerate(outcomes)
                                for j in range(samples)])
    return results


def test_run_configs_parse_and_carry_the_scale(experiment, tmp_path, capsys):
    args = small(experiment, tmp_path)
    base = yaml.safe_load((Path(__file__).parents[1] / "configs" / "quickstart.yaml").read_text())
    steps, skipped = experiment.plan(args, base)
    fits = {s.run: s for s in steps if s.kind == "fit"}
    runnable = [m for m, method in experiment.METHODS.items() if experiment.unavailable(method) is None]
    assert list(fits) == ["warm_start", *runnable] and set(skipped) == set(experiment.METHODS) - set(runnable)
    for run, step in fits.items():
        path = tmp_path / f"{run}.yaml"
        path.write_text(yaml.safe_dump(step.config))
        command = step.command[step.command.index("fit"):]
        command[command.index("--config") + 1] = str(path)
        with pytest.raises(SystemExit):
            agentr_main(command + ["--print_config"])
        config = yaml.safe_load(capsys.readouterr().out)
        callbacks = {c["class_path"]: c["init_args"] for c in config["trainer"]["callbacks"]}
        iterations = callbacks["agentr.callbacks.AgentRIterations"]
        evaluation_args = callbacks["agentr.callbacks.EvaluationCallback"]
        assert config["trainer"]["default_root_dir"] == str(tmp_path / "out" / run)
        assert iterations["iterations"] == 2 and iterations["epochs"] == [3]
        assert iterations["stop_after"] == (0 if run == "warm_start" else None)
        assert (evaluation_args["num_tasks"], evaluation_args["episodes_per_task"],
                evaluation_args["max_turns"]) == (3, 2, 5)
        assert config["data"]["init_args"]["num_tasks"] == 4
        search = config["data"]["init_args"]["search"]
        assert search["mode"] == ("optimal" if run == "optimal" else "agent_r")
        if run != "optimal":
            assert search["transition"] == {"direct_revision": "end", "agent_r_oracle": "oracle"}.get(run, "model")


def test_methods_without_their_setting_are_skipped_with_the_reason(experiment):
    Method = experiment.Method
    assert experiment.unavailable(Method("x", requires=("mode", "optimal"))) is None
    assert "does not accept 'nope'" in experiment.unavailable(Method("x", requires=("mode", "nope")))
    assert "no `no_such_field` setting" in experiment.unavailable(Method("x", requires=("no_such_field", "a")))


def test_bad_scale_and_reference_are_refused(experiment, tmp_path):
    with pytest.raises(SystemExit):
        small(experiment, tmp_path, "--iterations", "0")
    with pytest.raises(SystemExit):
        small(experiment, tmp_path, "--epochs", "0")
    with pytest.raises(SystemExit):
        small(experiment, tmp_path, "--methods", "agent_r", "--reference", "direct_revision")


class FakeFit:
    """Stands for `agentr fit`: writes the stages a real fit would evaluate; can crash once."""

    def __init__(self, crash_on: str | None = None):
        self.crash_on = crash_on
        self.runs: list[str] = []

    def __call__(self, command):
        config = yaml.safe_load(Path(command[command.index("--config") + 1]).read_text())
        run = Path(config["trainer"]["default_root_dir"])
        self.runs.append(run.name)
        if run.name == self.crash_on:
            self.crash_on = None
            return 1
        iterations = next(c["init_args"] for c in config["trainer"]["callbacks"]
                          if c["class_path"].endswith("AgentRIterations"))
        if iterations.get("stop_after") == 0:
            stages = ["base", "iteration_0"]
            (run / "checkpoints").mkdir(parents=True)
            (run / "checkpoints" / "last.ckpt").write_text("weights")
        else:
            assert (run / "iteration_0" / "eval.json").exists(), "branched from the warm start"
            stages = [f"iteration_{k}" for k in range(1, iterations["iterations"] + 1)]
        wins = {"direct_revision": 1, "agent_r": 3, "optimal": 2}.get(run.name, 1)
        for stage in stages:
            (run / stage).mkdir(parents=True, exist_ok=True)
            (run / stage / "eval.json").write_text(json.dumps(evaluation([True] * wins + [False] * (3 - wins))))
        return 0


def test_a_crashed_experiment_continues_and_reports(experiment, tmp_path, monkeypatch, capsys):
    args = ["--out_dir", str(tmp_path / "out"), "--eval_tasks", "3", "--episodes_per_task", "2",
            "--methods", "agent_r", "direct_revision", "optimal"]
    crashing = FakeFit(crash_on="direct_revision")
    monkeypatch.setattr(experiment, "run_fit", crashing)
    with pytest.raises(SystemExit, match="direct_revision: agentr fit exited with 1; run the same command again"):
        experiment.main(args)
    assert crashing.runs == ["warm_start", "agent_r", "direct_revision"]
    branched = (tmp_path / "out" / "direct_revision" / "iteration_0" / "eval.json").stat().st_mtime_ns

    resumed = FakeFit()
    monkeypatch.setattr(experiment, "run_fit", resumed)
    experiment.main(args)
    assert resumed.runs == ["direct_revision", "optimal"]  # finished runs are not redone
    assert (tmp_path / "out" / "direct_revision" / "iteration_0" / "eval.json").stat().st_mtime_ns == branched
    assert "wall time of this invocation" in capsys.readouterr().out

    results = json.loads((tmp_path / "out" / "results.json").read_text())
    rows = {(r["method"], r["stage"]): r for r in results["rows"]}
    assert set(rows) == {("warm_start", "iteration_0"), *((m, f"iteration_{k}") for m in
                         ("agent_r", "direct_revision", "optimal") for k in (1, 2))}
    # Agent-R wins all 3 tasks (6 sampled episodes), Direct-Revision 1: +66.7 points, sampled
    agent_r = rows[("agent_r", "iteration_2")]["vs_reference"]
    assert agent_r["stage"] == "iteration_2"
    assert agent_r["sampled"]["success_diff"] == pytest.approx(2 / 3)
    assert agent_r["greedy"]["mcnemar_p"] == pytest.approx(0.5)  # 2 discordant pairs: 2 * 1/4
    assert "vs_reference" not in rows[("direct_revision", "iteration_1")]
    assert rows[("warm_start", "iteration_0")]["vs_reference"]["stage"] == "iteration_2"
    markdown = (tmp_path / "out" / "results.md").read_text()
    assert "| Agent-R (model critique) | iteration_2 |" in markdown
    assert "+66.7 [" in markdown and "(vs iteration_2)" in markdown and "50.0% (100%)" in markdown


def test_dry_run_runs_nothing_and_names_what_it_skips(experiment, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(experiment, "run_fit", lambda command: pytest.fail("ran a command"))
    monkeypatch.setitem(experiment.METHODS, "agent_r_oracle", experiment.Method(
        "Agent-R (oracle critic)", requires=("no_such_setting", "oracle")))
    experiment.main(["--out_dir", str(tmp_path / "out"), "--dry_run"])
    captured = capsys.readouterr()
    assert "[to do] warm_start fit:" in captured.out
    assert "configs/baselines/direct_revision.yaml" in captured.out
    assert "240 episodes" in captured.out  # 30 tasks x 8 samples by default
    assert "agent_r_oracle" not in captured.out
    assert "skipping agent_r_oracle (Agent-R (oracle critic)): SearchConfig has no " \
        "`no_such_setting` setting" in captured.err
    assert not (tmp_path / "out").exists()
