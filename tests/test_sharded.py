"""Phase I over ranks: dynamic task claiming, one merged dataset and stats, a failing rank stopping
the others, the shared-directory check. Two gloo processes, a scripted engine, no model."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from search_fakes import CloneToyEnv, ScriptedEngine, judge_bad_on, toy_policy

from agentr.search.collect import collect, prepare_out_dir
from agentr.search.scheduler import search_tasks
from agentr.search.config import SearchConfig

TASKS = [f"t{i}" for i in range(6)]
SEARCH = dict(num_simulations=4, n_expand=4, max_depth=5, max_concurrent_trees=1)

SCRIPT = textwrap.dedent('''
    import json, os, sys, time
    sys.path.insert(0, os.environ["AGENTR_TESTS"])
    import torch.distributed as dist
    from search_fakes import CloneToyEnv, ScriptedEngine, judge_bad_on, toy_policy
    from agentr.data.base import AgentRDataModule
    from agentr.ranks import Ranks, main_rank_does, shared_token
    from agentr.search.config import SearchConfig

    mode, model_dir, out = sys.argv[1], sys.argv[2], sys.argv[3]
    dist.init_process_group("gloo")
    ranks = Ranks.current()

    class ToyDataModule(AgentRDataModule):
        def make_env(self):
            return CloneToyEnv(need=2, tasks=6)

    def engine(fail_after=None):
        return ScriptedEngine(toy_policy(), judge_bad_on("noop", "lose", "half", "boom"), fail_after=fail_after)

    dm = ToyDataModule(model=model_dir, search=SearchConfig(**json.loads(os.environ["AGENTR_SEARCH"])),
                       val_fraction=0.2)
    phase1 = os.path.join(out, "phase1")
    report = {}
    if mode == "ok":
        try:  # a directory of the same name on each rank, but not the same directory
            shared_token(ranks, os.path.join(out, f"private{ranks.rank}"))
        except RuntimeError as error:
            report["unshared"] = str(error)
        policy = engine()
        dataset = dm.regenerate(policy, iteration=1, alpha=0.5, out_dir=phase1)
        report["dataset"] = str(dataset)
        report["searched"] = bool(policy.calls)
        report["claims"] = {name: open(os.path.join(root, name)).read().strip()
                            for root, _, names in os.walk(os.path.join(phase1, "claims")) for name in names}
        report["train_ids"] = [e.id for e in dm.train_examples]
        report["served"] = len(dm.train_examples) + len(dm.val_examples)
        again = engine()
        dm.regenerate(again, iteration=1, alpha=0.5, out_dir=phase1)  # a resume: nothing left
        report["resumed_calls"] = len(again.calls)
        report["resumed_stats"] = json.load(open(os.path.join(phase1, "stats.json")))
    else:  # rank 1 fails at its first engine call; rank 0 is mid-task then
        policy = engine(fail_after=0 if ranks.rank == 1 else None)
        if ranks.rank == 0:
            generate = policy.generate

            def after_rank1_claimed(conversations, sampling):
                claims = os.path.join(phase1, "claims")
                while not any(open(os.path.join(root, n)).read().strip() == "1"
                              for root, _, names in os.walk(claims) for n in names):
                    time.sleep(0.05)
                return generate(conversations, sampling)

            policy.generate = after_rank1_claimed
        try:
            dm.regenerate(policy, iteration=1, alpha=0.5, out_dir=phase1)
        except Exception as error:
            report["error"] = f"{type(error).__name__}: {error}"

        def evaluate():  # work on rank 0 alone (as evaluation is) that fails
            raise ValueError("evaluation broke")

        try:
            main_rank_does(evaluate, ranks, os.path.join(out, "ranks"))
        except Exception as error:
            report["main_error"] = f"{type(error).__name__}: {error}"
    with open(os.path.join(out, f"report{ranks.rank}.json"), "w") as f:
        json.dump(report, f)
    dist.destroy_process_group()
''')


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_ranks(tmp_path: Path, mode: str, model_dir: str, world: int = 2) -> list[dict]:
    script = tmp_path / "sharded.py"
    script.write_text(SCRIPT)
    out = tmp_path / mode
    out.mkdir()
    env = dict(os.environ, OMP_NUM_THREADS="1", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()),
               WORLD_SIZE=str(world), AGENTR_TESTS=str(Path(__file__).parent),
               AGENTR_SEARCH=json.dumps(SEARCH))
    procs = [subprocess.Popen([sys.executable, str(script), mode, model_dir, str(out)],
                              env={**env, "RANK": str(k), "LOCAL_RANK": str(k)},
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for k in range(world)]
    logs = [p.communicate(timeout=180)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), "\n".join(log[-3000:] for log in logs)
    return [json.loads((out / f"report{k}.json").read_text()) for k in range(world)]


def test_search_tasks_leaves_tasks_another_process_claimed(tmp_path):
    config = SearchConfig(**SEARCH)
    engine = ScriptedEngine(toy_policy(), judge_bad_on("noop", "lose", "half", "boom"))
    prepare_out_dir(engine, lambda: CloneToyEnv(need=2, tasks=6), TASKS, config, tmp_path, iteration=1,
                    alpha=0.5, seed=0)
    asked = []
    counters = search_tasks(engine, lambda: CloneToyEnv(need=2, tasks=6), TASKS, config, tmp_path,
                            iteration=1, alpha=0.5, seed=0, progress=False,
                            claim=lambda t: asked.append(t) or t in ("t1", "t4"))
    assert asked == TASKS
    assert [s["task_id"] for s in counters.finished] == ["t1", "t4"]
    assert sorted(p.name for p in (tmp_path / "tasks").glob("*.jsonl")) == ["t1.jsonl", "t4.jsonl"]


@pytest.mark.skipif(sys.platform != "linux", reason="gloo processes")
def test_two_ranks_claim_tasks_merge_one_dataset_and_resume(tmp_path, tiny_model_dir):
    reports = run_ranks(tmp_path, "ok", tiny_model_dir)
    # the same directory name on each rank, not the same directory: refused on both ranks
    for report in reports:
        assert "is not shared by all ranks: rank 1" in report["unshared"]
    # every task searched once, by whichever rank claimed it; each rank's engine searched its own
    claims = reports[0]["claims"]
    assert sorted(claims) == TASKS
    for k, report in enumerate(reports):
        assert report["searched"] == (str(k) in claims.values())
    # one merged dataset, the one a single process writes; every rank serves all of it
    single = collect(ScriptedEngine(toy_policy(), judge_bad_on("noop", "lose", "half", "boom")),
                     lambda: CloneToyEnv(need=2, tasks=6), TASKS, SearchConfig(**SEARCH), tmp_path / "single",
                     iteration=1, alpha=0.5, seed=1, progress=False)
    assert Path(reports[0]["dataset"]).read_bytes() == single.dataset.read_bytes()
    assert reports[0]["train_ids"] == reports[1]["train_ids"]
    assert reports[0]["served"] == len(single.dataset.read_text().splitlines())
    # statistics at the top level, for all tasks; a resume searches nothing again
    stats = reports[0]["resumed_stats"]
    assert stats["trees_searched"] == len(TASKS)
    [run] = stats["runs"]  # the resume searched nothing: no second run recorded
    assert run["ranks"] == 2 and run["trees_searched"] == len(TASKS) and run["tasks_resumed"] == 0
    assert reports[0]["resumed_calls"] == reports[1]["resumed_calls"] == 0


@pytest.mark.skipif(sys.platform != "linux", reason="gloo processes")
def test_a_failing_rank_stops_the_other_with_its_error(tmp_path, tiny_model_dir):
    reports = run_ranks(tmp_path, "fail", tiny_model_dir)
    assert reports[1]["error"] == "Killed: killed at call 1"
    assert reports[0]["error"] == "RankFailed: rank 1 failed: Killed: killed at call 1"
    # work on rank 0 alone: its failure reaches the rank waiting for it
    assert reports[0]["main_error"] == "ValueError: evaluation broke"
    assert reports[1]["main_error"] == "RankFailed: rank 0 failed: ValueError: evaluation broke"
