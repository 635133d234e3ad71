"""Evaluation over ranks: episodes claimed by both ranks, one merged eval.json equal to one process's,
a failing rank stopping the other. Two gloo processes, a scripted engine, no model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest
from test_evaluation import SeedPolicyEngine
from test_rollout import CounterEnv
from test_sharded import _free_port

from agentr.callbacks import EvaluationCallback
from agentr.evaluation import read_episodes

TASKS = [str(k) for k in range(1, 7)]
#: The callback's settings: greedy and sampled episodes, some won, some not.
SETTINGS = dict(max_turns=3, episodes_per_task=2, seed=3)
BASE = {"model": "base-digest", "adapter": None}

SCRIPT = textwrap.dedent('''
    import glob, json, os, sys, time
    from pathlib import Path
    from types import SimpleNamespace
    sys.path.insert(0, os.environ["AGENTR_TESTS"])
    import torch.distributed as dist
    from test_evaluation import SeedPolicyEngine
    from test_rollout import CounterEnv
    from agentr.callbacks import EvaluationCallback

    out = Path(sys.argv[1])
    tasks, settings, base = (json.loads(os.environ[f"AGENTR_{k}"]) for k in ("TASKS", "SETTINGS", "BASE"))
    dist.init_process_group("gloo")
    rank = dist.get_rank()

    def wait_for(found, what):  # bounded: a test never hangs
        deadline = time.monotonic() + 30
        while not found():
            if time.monotonic() > deadline:
                raise TimeoutError(f"rank {rank} waited 30 s for {what}")
            time.sleep(0.05)

    def evaluate(mode):
        played = out / mode / f"played{rank}.txt"

        class LoggedEnv(CounterEnv):  # which rank plays which task
            def _reset(self, task_id):
                with open(played, "a") as f:
                    f.write(task_id + "\\n")
                return super()._reset(task_id)

        engines = []

        def policy():
            engine = SeedPolicyEngine()
            if rank == 1 and mode == "fail":
                engine.fail_after = 0  # its first call raises
            if rank == 0:  # rank 0 goes on once rank 1 has started (and, to fail, has failed)
                generate, other = engine.generate, out / mode / "played1.txt"
                failed = lambda: glob.glob(str(out / mode / "base" / "ranks" / "*.failed"))

                def generate_after_rank1(conversations, sampling):
                    wait_for(other.exists, "rank 1 to play")
                    if mode == "fail":
                        wait_for(failed, "rank 1 to fail")
                    return generate(conversations, sampling)

                engine.generate = generate_after_rank1
            engines.append(engine)
            return engine

        datamodule = SimpleNamespace(task_ids=lambda split: tasks, make_env=LoggedEnv,
                                     env_description=lambda: {"name": "counter", "options": {}})
        trainer = SimpleNamespace(is_global_zero=rank == 0, loggers=[], global_step=0,
                                  datamodule=datamodule, default_root_dir=str(out / mode))
        callback = EvaluationCallback(**settings)
        report = {}
        try:
            results = callback.evaluate_stage(trainer, "base", 0, policy, out / mode / "base", base)
            callback.evaluate_stage(trainer, "base", 0, policy, out / mode / "base", base)  # cached
            report.update(results=results, policies=len(engines))
        except Exception as error:
            report["error"] = f"{type(error).__name__}: {error}"
        report["played"] = played.read_text().split() if played.exists() else []
        return report

    reports = {mode: evaluate(mode) for mode in ("ok", "fail")}
    (out / f"report{rank}.json").write_text(json.dumps(reports))
    dist.destroy_process_group()
''')


@pytest.fixture(scope="module")
def reports(tmp_path_factory) -> list[dict]:
    """Each rank's report of an evaluation over two ranks ("ok") and one where rank 1 fails ("fail")."""
    out = tmp_path_factory.mktemp("ranks")
    script = out / "evaluate.py"
    script.write_text(SCRIPT)
    env = dict(os.environ, OMP_NUM_THREADS="1", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()),
               WORLD_SIZE="2", AGENTR_TESTS=str(Path(__file__).parent), AGENTR_TASKS=json.dumps(TASKS),
               AGENTR_SETTINGS=json.dumps(SETTINGS), AGENTR_BASE=json.dumps(BASE))
    procs = [subprocess.Popen([sys.executable, str(script), str(out)],
                              env={**env, "RANK": str(k), "LOCAL_RANK": str(k)},
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for k in range(2)]
    try:
        logs = [p.communicate(timeout=120)[0] for p in procs]
    finally:
        for p in procs:
            p.kill()
    assert all(p.returncode == 0 for p in procs), "\n".join(log[-3000:] for log in logs)
    return [{**json.loads((out / f"report{k}.json").read_text()), "out": out} for k in range(2)]


def without_timing(results: dict) -> dict:
    results = {k: v for k, v in results.items() if k != "timing"}
    if "sampled" in results:
        results["sampled"] = without_timing(results["sampled"])
    return results


linux_only = pytest.mark.skipif(sys.platform != "linux", reason="gloo processes")


@linux_only
def test_both_ranks_play_episodes_and_each_episode_is_played_once(reports):
    ok = [report["ok"] for report in reports]
    assert all(report["played"] for report in ok)
    # each task once greedy and twice sampled, whichever rank played it
    assert sorted(ok[0]["played"] + ok[1]["played"]) == sorted(TASKS * 3)
    timing = ok[0]["results"]["timing"]
    assert sum(timing["episodes_per_rank"]) == len(TASKS) and min(timing["episodes_per_rank"]) > 0
    # every rank made its policy once (for its share) and read the cached results the second time
    assert [report["policies"] for report in ok] == [1, 1]


@linux_only
def test_merged_results_are_one_process_results(reports, tmp_path):
    ok = [report["ok"] for report in reports]
    single_dir = tmp_path / "base"
    datamodule = SimpleNamespace(task_ids=lambda split: TASKS, make_env=CounterEnv,
                                 env_description=lambda: {"name": "counter", "options": {}})
    trainer = SimpleNamespace(is_global_zero=True, loggers=[], global_step=0, datamodule=datamodule,
                              default_root_dir=str(tmp_path))
    single = EvaluationCallback(**SETTINGS).evaluate_stage(trainer, "base", 0, SeedPolicyEngine, single_dir,
                                                           BASE)
    assert 0 < single["metrics"]["success_rate"] < 1 and 0 < single["sampled"]["metrics"]["success_rate"] < 1
    merged_dir = reports[0]["out"] / "ok" / "base"
    merged = json.loads((merged_dir / "eval.json").read_text())
    assert without_timing(merged) == without_timing(single)
    assert ok[0]["results"] == ok[1]["results"] == merged  # every rank returns the merged results
    # the episodes in start order: one process's, which it wrote as they ended
    for name, key in (("episodes.jsonl", lambda e: e.task_id),
                      ("sampled_episodes.jsonl", lambda e: (e.task_id, e.meta["sample"]))):
        assert read_episodes(merged_dir / name) == sorted(read_episodes(single_dir / name), key=key)
    # the ranks' own files and claims are gone; their markers stay
    assert sorted(p.name for p in merged_dir.iterdir()) == [
        "episodes.jsonl", "eval.json", "ranks", "sampled_episodes.jsonl"]
    assert all(p.name.endswith(".done") for p in (merged_dir / "ranks").iterdir())


@linux_only
def test_a_failing_rank_stops_the_other_with_its_error(reports):
    error = reports[1]["fail"]["error"]
    assert error.startswith("RolloutError: the rollout stopped") and "Killed: killed at call 1" in error
    # rank 0 stopped when its episodes ended, with rank 1's error
    assert reports[0]["fail"]["error"] == f"RankFailed: rank 1 failed: {error}"
    assert not (reports[0]["out"] / "fail" / "base" / "eval.json").exists()
