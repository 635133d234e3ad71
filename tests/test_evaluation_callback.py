"""The evaluation callback: cached stage results, logged intervals, the plot with error bars."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest

from agentr.callbacks import EvaluationCallback
from agentr.callbacks.evaluation import loggable_metrics
from agentr.intervals import wilson_interval
from test_evaluation import SeedPolicyEngine
from test_rollout import CounterEnv


class RecordingLogger:
    def __init__(self):
        self.logged: list[dict] = []

    def log_metrics(self, metrics, step):
        self.logged.append(metrics)


#: The weights' digests a stage was made from (`GenerationCallback.provenance`).
BASE = {"model": "base-digest", "adapter": None}


def fake_trainer(tmp_path, logger):
    datamodule = SimpleNamespace(task_ids=lambda split: ["1", "2", "3", "4"], make_env=CounterEnv,
                                 env_description=lambda: {"name": "counter", "options": {}})
    return SimpleNamespace(is_global_zero=True, strategy=SimpleNamespace(barrier=lambda: None),
                           loggers=[logger], global_step=0, datamodule=datamodule,
                           default_root_dir=str(tmp_path))


def test_stages_log_intervals_and_sampled_metrics_and_plot_them(tmp_path):
    logger = RecordingLogger()
    trainer = fake_trainer(tmp_path, logger)
    callback = EvaluationCallback(num_tasks=3, max_turns=2, episodes_per_task=2)
    engines = []

    def policy():
        engines.append(SeedPolicyEngine())
        return engines[-1]

    results = callback.evaluate_stage(trainer, "base", 0, policy, tmp_path / "base", BASE)
    assert results["sampled"]["num_episodes"] == 6
    logged = logger.logged[-1]
    # greedy steps every turn: tasks 1 and 2 are won in 2 turns, task 3 is not
    assert logged["eval/success_rate"] == pytest.approx(2 / 3)
    low, high = wilson_interval(2, 3)
    assert (logged["eval/success_rate_ci_low"], logged["eval/success_rate_ci_high"]) == pytest.approx((low, high))
    assert "eval_sampled/success_rate_ci_high" in logged and logged["stage"] == 0
    assert "eval/recovery_rate" not in logged  # undefined without a revised episode
    assert (tmp_path / "success_rate.png").stat().st_size > 0
    # cached: a second call (e.g. a resumed run) reads eval.json and plays nothing
    callback.evaluate_stage(trainer, "base", 0, policy, tmp_path / "base", BASE)
    assert len(engines) == 1


def test_loggable_metrics_keeps_scalars_and_splits_intervals():
    metrics = {"success_rate": 0.5, "success_rate_ci": [0.2, 0.8], "recovery_rate": None,
               "avg_reward_ci": None, "loop_count_by_length": {"1": 0.5}, "revision_rate": 0.0}
    assert loggable_metrics(metrics, "eval/") == {
        "eval/success_rate": 0.5, "eval/success_rate_ci_low": 0.2,
        "eval/success_rate_ci_high": 0.8, "eval/revision_rate": 0.0}


def test_sampled_settings_are_checked_when_configured():
    with pytest.raises(ValueError, match="episodes_per_task"):
        EvaluationCallback(episodes_per_task=-2)
    with pytest.raises(ValueError, match="sample_temperature"):
        EvaluationCallback(episodes_per_task=4, sample_temperature=0)


def stage(rate: float, ci: list[float]) -> dict:
    return {"metrics": {"success_rate": rate, "success_rate_ci": ci}}


def test_plot_draws_a_bound_a_rounding_error_past_its_rate(tmp_path, caplog):
    # a first fit's base model, 0/10: a lower bound of 2.8e-17 once made the error bar below
    # 0 negative, and matplotlib refused it
    callback = EvaluationCallback()
    callback.history = {"base": stage(0.0, [2.78e-17, 0.3]), "iteration_0": stage(0.2, [0.05, 0.5])}
    with caplog.at_level(logging.WARNING):
        callback._plot(tmp_path / "success_rate.png")
    assert caplog.text == ""
    assert (tmp_path / "success_rate.png").stat().st_size > 0


def test_a_failed_plot_is_a_warning_not_the_end_of_the_fit(tmp_path, caplog, monkeypatch):
    import matplotlib.pyplot as plt
    from matplotlib.figure import Figure

    def no_space(*args, **kwargs):
        raise OSError("No space left on device")

    monkeypatch.setattr(Figure, "savefig", no_space)
    callback = EvaluationCallback()
    callback.history = {"base": stage(0.5, [0.2, 0.8])}
    figures = plt.get_fignums()
    with caplog.at_level(logging.WARNING):
        callback._plot(tmp_path / "success_rate.png")
    assert "No space left on device" in caplog.text
    assert plt.get_fignums() == figures  # the figure is closed all the same
