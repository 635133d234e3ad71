"""Metrics, `evaluate`, the revision test and `agentr evaluate`."""

from __future__ import annotations

import json

import pytest
import torch

from agentr.agent import HEADER_LEN, Episode, RolloutError
from agentr.evaluation import evaluate, read_episodes, revision_starts, revision_test
from agentr.metrics import (
    AverageReward,
    LoopCount,
    RevisionReward,
    SuccessRate,
    episode_metrics,
    loop_count,
    repeat_fraction,
)
from test_rollout import CounterEnv, always, scripted, step_reply


@pytest.mark.parametrize("actions, loops", [
    ([], 0),
    (["a"], 0),
    (["a", "b", "c"], 0),
    (["a", "a", "a", "a"], 3),
    (["a", "b", "a", "b"], 1),
    (["a", "b", "a", "b", "a", "b"], 3),
    (["a", "b", "c", "a", "b", "c"], 1),
    (["a", "b", "a", "c"], 0),  # a repeated action, but not a repeated sequence
    (["get 1 log", "Get  1 Log", "wait", "get 1 log"], 2),  # normalised; waits skipped
])
def test_loop_count(actions, loops):
    assert loop_count(actions) == loops


def test_repeat_fraction():
    assert repeat_fraction([]) == 0.0
    assert repeat_fraction(["a", "b", "a", "a"]) == 0.5
    assert repeat_fraction(["a", "wait", "b"]) == 0.0


def test_metrics_accumulate_like_torchmetrics():
    success, reward, loops, revision = SuccessRate(), AverageReward(), LoopCount(), RevisionReward()
    success.update([True, False]); success.update([True, True])  # noqa: E702
    reward.update(torch.tensor([1.0, 0.0, 0.5]))
    loops.update([["a", "a", "a"], ["a", "b"]]); loops.update([])  # noqa: E702
    revision.update([0.0, 1.0])
    assert success.compute().item() == pytest.approx(0.75)
    assert reward.compute().item() == pytest.approx(0.5)
    assert loops.compute().item() == pytest.approx(1.0)
    assert revision.compute().item() == pytest.approx(0.5)
    success.reset()
    success.update([False])
    assert success.compute().item() == 0.0


def test_episode_metrics():
    episodes = [Episode("1", actions=["a", "a"], reward=1.0, success=True, turns=2),
                Episode("2", actions=["a", "b", "wait", "a", "b"], reward=0.5, success=False, turns=5)]
    m = episode_metrics(episodes)
    assert m == pytest.approx({"success_rate": 0.5, "avg_reward": 0.75, "loop_count": 1.0,
                               "repeat_fraction": 0.5, "avg_turns": 3.5, "revision_rate": 0.5})


def test_evaluate_writes_results_and_every_trajectory(tmp_path):
    # task 1 is solved in one turn; tasks 3 and 4 need more than the 2-turn limit
    results = evaluate(scripted(step_reply), CounterEnv, ["1", "3", "4"], max_turns=2,
                       out_dir=tmp_path, progress=False)
    assert results["metrics"]["success_rate"] == pytest.approx(1 / 3)
    assert results["metrics"]["avg_reward"] == pytest.approx(1 / 3)
    assert results["metrics"]["loop_count"] == pytest.approx(2 / 3)  # step, step: 1 loop turn
    assert results["num_episodes"] == 3 and results["num_errors"] == 0
    assert results["timing"]["generated_tokens"] == 0  # the scripted engine counts nothing
    saved = json.loads((tmp_path / "eval.json").read_text())
    assert saved["metrics"] == results["metrics"]
    episodes = read_episodes(tmp_path / "trajectories.jsonl")
    assert sorted(e.task_id for e in episodes) == ["1", "3", "4"]
    assert all(len(e.messages) == HEADER_LEN + 2 * e.turns for e in episodes)


def test_evaluate_keeps_finished_episodes_when_the_engine_dies(tmp_path):
    with pytest.raises(RolloutError):
        evaluate(scripted(step_reply, fail_at_call=3), CounterEnv, ["1", "2", "5"],
                 out_dir=tmp_path, progress=False)
    kept = read_episodes(tmp_path / "trajectories.jsonl")
    assert [e.task_id for e in kept] == ["1", "2"] and all(e.success for e in kept)
    assert not (tmp_path / "eval.json").exists()  # no results claimed for a broken run


def _failed_reference(tmp_path):
    evaluate(scripted(always("Action: inventory")), CounterEnv, ["1", "2", "3", "4"],
             max_turns=6, out_dir=tmp_path / "ref", progress=False)
    return tmp_path / "ref" / "trajectories.jsonl"


def test_revision_cut_points_are_seeded_and_only_for_failures(tmp_path):
    reference = read_episodes(_failed_reference(tmp_path))
    reference[0].success = True  # a success is never revised
    starts = revision_starts(reference, seed=3)
    assert [s.task_id for s in starts] == ["2", "3", "4"]
    assert [s.meta["cut_turn"] for s in starts] == [s.meta["cut_turn"] for s in revision_starts(reference, seed=3)]
    for s in starts:
        assert 1 <= s.meta["cut_turn"] <= 5
        assert len(s.prefix) == HEADER_LEN + 2 * s.meta["cut_turn"]
    cuts = {tuple(s.meta["cut_turn"] for s in revision_starts(reference, seed=k)) for k in range(10)}
    assert len(cuts) > 1  # the seed matters


def test_revision_test_continues_failed_trajectories(tmp_path):
    reference = _failed_reference(tmp_path)
    results = revision_test(scripted(step_reply), CounterEnv, reference, max_turns=50,
                            out_dir=tmp_path / "rev", progress=False)
    assert results["num_episodes"] == 4
    assert results["metrics"]["revision_reward"] == 1.0
    episodes = read_episodes(tmp_path / "rev" / "revision_trajectories.jsonl")
    for e in episodes:
        cut = e.meta["cut_turn"]
        assert e.start_turn == cut and e.actions[:cut] == ["inventory"] * cut
        assert e.actions[cut:] == ["step"] * int(e.task_id)
    # a policy that never recovers scores 0
    stuck = revision_test(scripted(always("Action: inventory")), CounterEnv, reference,
                          max_turns=3, progress=False)
    assert stuck["metrics"]["revision_reward"] == 0.0


def test_evaluate_command_end_to_end_with_the_hf_engine(tiny_engine_model_dir, tmp_path, capsys):
    """`agentr evaluate` as a user runs it: real engine (tiny model), real TextCraft."""
    from agentr.cli import main

    out = tmp_path / "eval"
    main(["evaluate", "--model", tiny_engine_model_dir, "--engine", "hf", "--num_tasks", "2",
          "--max_turns", "2", "--max_tokens", "8", "--out_dir", str(out), "--progress", "false"])
    printed = capsys.readouterr().out
    assert "success_rate" in printed and "HFEngine" in printed
    results = json.loads((out / "eval.json").read_text())
    assert results["num_episodes"] == 2 and results["num_errors"] == 0
    assert results["timing"]["generated_tokens"] > 0
    episodes = read_episodes(out / "trajectories.jsonl")
    assert [e.turns for e in episodes] == [2, 2]
    assert episodes[0].messages[HEADER_LEN - 1]["content"].startswith("Crafting commands:")

    # the revision test on those (failed) trajectories
    main(["evaluate", "--model", tiny_engine_model_dir, "--engine", "hf", "--num_tasks", "1",
          "--max_turns", "1", "--max_tokens", "8", "--out_dir", str(tmp_path / "rev"),
          "--revision_from", str(out / "trajectories.jsonl"), "--revision_max_turns", "2",
          "--progress", "false"])
    assert "revision revision_reward" in capsys.readouterr().out
    revision = json.loads((tmp_path / "rev" / "revision.json").read_text())
    assert revision["num_episodes"] == 2
    assert [e["cut_turn"] for e in revision["episodes"]] == [1, 1]  # 2-turn episodes cut at 1
    assert all(e["turns"] == 3 for e in revision["episodes"])  # 1 replayed + 2 new
