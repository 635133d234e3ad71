import pytest

from agentr.callbacks import PlannedEpoch, epoch_plan
from agentr.callbacks.iteration import iteration_steps, per_iteration


def test_paper_schedule_three_epochs_then_one():
    plan = epoch_plan(iterations=3, epochs=[3, 1])
    assert [s.iteration for s in plan] == [1, 1, 1, 2, 3]
    assert [s.is_last_epoch for s in plan] == [False, False, True, True, True]


def test_warm_start_is_iteration_zero_before_the_loop():
    plan = epoch_plan(iterations=2, epochs=[1], warm_start_epochs=2)
    assert plan == [PlannedEpoch(0, 0, 2), PlannedEpoch(0, 1, 2), PlannedEpoch(1, 0, 1), PlannedEpoch(2, 0, 1)]


def test_per_iteration_repeats_the_last_value():
    assert per_iteration([0.5, 0.7], 4) == [0.5, 0.7, 0.7, 0.7]
    assert per_iteration([0.5, 0.7, 1.0], 2) == [0.5, 0.7]


@pytest.mark.parametrize("iterations,epochs", [(0, [1]), (2, [0]), (1, [])])
def test_bad_schedules_are_rejected(iterations, epochs):
    with pytest.raises(ValueError):
        epoch_plan(iterations, epochs)


@pytest.mark.parametrize("epochs,batches,world,accumulate,steps", [
    (3, 10, 1, 1, 30),
    (1, 10, 4, 1, 3),  # ranks get 3, 3, 2 (+1 padded) batches: all step 3 times
    (2, 10, 1, 4, 6),  # 4 + 4 + a final partial accumulation of 2
    (1, 9, 2, 2, 3),  # 5 batches per rank, accumulated in 2 + 2 + 1
])
def test_iteration_steps_count_optimizer_steps_per_rank(epochs, batches, world, accumulate, steps):
    assert iteration_steps(epochs, batches, world, accumulate) == steps


def test_phase1_stats_are_logged_as_flat_numbers():
    from agentr.callbacks.iteration import numeric_items

    stats = {"trees_searched": 4, "mode": "agent_r", "mean_transition_step": None, "verdicts": {"Bad": 3},
             "transition_accuracy": {"pairs": 5, "model": {"equal": 0.4, "before": None}},
             "transition_step_histogram": {"2": 1}, "flag": True}
    assert numeric_items(stats, "phase1") == {
        "phase1/trees_searched": 4, "phase1/verdicts/Bad": 3, "phase1/transition_accuracy/pairs": 5,
        "phase1/transition_accuracy/model/equal": 0.4, "phase1/transition_step_histogram/2": 1}


def test_a_misconfigured_callback_list_fails_loudly(tmp_path, caplog):
    import lightning.pytorch as pl

    from agentr.callbacks import AgentRIterations, EvaluationCallback, GenerationCallback

    def trainer(*callbacks):
        return pl.Trainer(callbacks=list(callbacks), default_root_dir=tmp_path, logger=False,
                          enable_checkpointing=False, enable_progress_bar=False, accelerator="cpu")

    # generation and evaluation without the loop that calls them would do nothing, silently
    generation, evaluation = GenerationCallback(), EvaluationCallback()
    alone = trainer(generation, evaluation)
    for callback in (generation, evaluation):
        with pytest.raises(ValueError, match=f"{type(callback).__name__} is called by agentr.callbacks.AgentRIterations"):
            callback.setup(alone, None, "fit")
    loop = AgentRIterations(iterations=1, epochs=[1])
    with pytest.raises(ValueError, match="AgentRIterations needs a GenerationCallback"):
        loop.setup(trainer(loop, evaluation), None, "fit")
    with pytest.raises(ValueError, match="trainer.callbacks holds 2 GenerationCallback callbacks"):
        loop.setup(trainer(loop, GenerationCallback(), GenerationCallback()), None, "fit")
    with pytest.raises(ValueError, match="trainer.callbacks holds 2 AgentRIterations callbacks"):
        loop.setup(trainer(loop, AgentRIterations(iterations=1, epochs=[1]), generation), None, "fit")
    # no evaluation is allowed, but said; past the callbacks, the DataModule is checked
    with pytest.raises(TypeError, match="needs an agentr.data.AgentRDataModule"):
        loop.setup(trainer(loop, generation), None, "fit")
    assert "no EvaluationCallback in trainer.callbacks" in caplog.text
