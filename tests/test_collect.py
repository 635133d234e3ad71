"""Phase I end to end with scripted engines: batching, modes, files, resume after a kill."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from search_fakes import (
    CloneToyEnv,
    Killed,
    ScriptedEngine,
    SeedDrawnEngine,
    ToyEnv,
    actions_so_far,
    content_rng,
    LabelledToyEnv,
    force_bad_on,
    judge_bad_on,
    latest_action,
    reply,
    toy_policy,
)

from agentr.envs import textcraft
from agentr.errors import ProvenanceError
from agentr.search.collect import collect
from agentr.search.summary import phase1_report
from agentr.search.task import task_seed
from agentr.search.config import SearchConfig
from agentr.trajectory import read_jsonl

TASKS = [f"t{i}" for i in range(5)]
CONFIG = dict(num_simulations=4, n_expand=4, max_depth=5)


def _collect(tmp: Path, engine=None, env=CloneToyEnv, tasks=TASKS, alpha=0.5, seed=0, **config):
    engine = engine or ScriptedEngine(toy_policy(), judge_bad_on("noop", "lose", "half", "boom"))
    cfg = SearchConfig(**{**CONFIG, **config})
    return engine, collect(engine, lambda: env(need=2), tasks, cfg, tmp, alpha=alpha, seed=seed, progress=False)


def _bad_actions(trajectory) -> list[str]:
    """Actions of the bad prefix (assistant turns before the revision turn)."""
    actions = []
    for m in trajectory.messages[4:]:
        if m["role"] != "assistant":
            continue
        if m["content"].endswith("Action: revise"):
            break
        actions.append(m["content"].split("Action: ")[-1])
    return actions


def test_agent_r_dataset_files_and_stats(tmp_path):
    engine, result = _collect(tmp_path)
    trajectories = list(read_jsonl(result.dataset))
    kinds = [t.kind for t in trajectories]
    assert "revision" in kinds and "good" in kinds
    stats = result.stats
    assert stats["trees_searched"] == len(TASKS)
    assert stats["revision_trajectories"] == kinds.count("revision")
    assert stats["good_trajectories"] == kinds.count("good")
    assert stats["env_steps"] > 0 and stats["tokens_generated"] > 0 and stats["wall_seconds"] > 0
    assert sum(stats["verdicts"].values()) == sum(1 for c in engine.calls if c[0] == "judge" for _ in range(c[1]))
    assert json.loads((tmp_path / "stats.json").read_text())["trees_searched"] == len(TASKS)
    for task in TASKS:  # one compact tree per task, one done file per task
        tree = json.loads((tmp_path / "trees" / f"{task}.json").read_text())
        assert tree["task_id"] == task and tree["root"]["N"] >= 1
        assert all(c["verdict"] in ("Good", "Bad") for c in tree["critiques"].values())
        assert (tmp_path / "tasks" / f"{task}.jsonl").exists()
    # task order in the dataset
    order = [t.task_id for t in trajectories]
    assert order == sorted(order, key=TASKS.index)
    for t in trajectories:
        assert t.env == "toy" and t.iteration == 1
        if t.kind == "revision":
            meta = t.meta
            assert meta["good_reward"] - meta["bad_reward"] > 0.2 and meta["good_reward"] >= 0.5
            assert meta["divergence_step"] < meta["transition_step"] <= meta["bad_turns"]
            bad = _bad_actions(t)
            assert len(bad) == meta["transition_step"]
            # model-guided t': the judge says Bad for every non-`good` action, so t' is the first
            # such action after the divergence, or the end of the bad path
            after = bad[meta["divergence_step"]:]
            assert all(a == "good" for a in after[:-1])
            assert after[-1] != "good" or len(bad) == meta["bad_turns"]
            assert meta["revision_signal"] in t.messages[4 + 2 * len(bad)]["content"]
        else:
            assert t.meta["good_reward"] >= 0.5
            assert all(m["train"] == (m["role"] == "assistant") for m in t.messages[4:])


def test_each_engine_call_batches_the_trees(tmp_path):
    engine, result = _collect(tmp_path)
    expand_calls = [c for c in engine.calls if c[0] == "expand"]
    per_task = [json.loads((tmp_path / "tasks" / f"{t}.stats.json").read_text()) for t in TASKS]
    # all five trees advance together: one call per round, not one per expansion
    assert len(expand_calls) == max(s["expansions"] for s in per_task)
    assert sum(c[1] for c in expand_calls) == sum(s["expansions"] for s in per_task)
    assert expand_calls[0][1] == len(TASKS)
    assert all(c[2].n == 4 and c[2].temperature == 1.0 for c in expand_calls)
    judge_calls = [c for c in engine.calls if c[0] == "judge"]
    assert judge_calls and all(c[2].temperature == 0.0 and c[2].n == 1 for c in judge_calls)
    assert result.stats["engine_calls"] == {"expand": len(expand_calls), "judge": len(judge_calls), "force": 0}


def test_batch_composition_does_not_change_the_dataset(tmp_path):
    # The engine draws from the request seeds alone: a tree searches the same whatever shares
    # its batches, so methods that judge differently still search the same trees.
    _, wide = _collect(tmp_path / "wide", engine=SeedDrawnEngine())
    engine, narrow = _collect(tmp_path / "narrow", engine=SeedDrawnEngine(), max_concurrent_trees=2)
    assert max(c[1] for c in engine.calls if c[0] == "expand") <= 2
    assert wide.dataset.read_bytes() == narrow.dataset.read_bytes()
    _collect(tmp_path / "alone", engine=SeedDrawnEngine(), tasks=["t3"])
    tree = lambda run: (tmp_path / run / "trees" / "t3.json").read_bytes()  # noqa: E731
    assert tree("alone") == tree("wide")
    _, reseeded = _collect(tmp_path / "reseeded", engine=SeedDrawnEngine(), seed=1)
    assert reseeded.dataset.read_bytes() != wide.dataset.read_bytes()


def test_modes_differ_as_specified(tmp_path):
    runs = {}
    settings = {"agent_r": {}, "direct_revision": {"transition": "end"}, "optimal": {"mode": "optimal"}}
    for name, config in settings.items():
        engine, result = _collect(tmp_path / name, **config)
        runs[name] = (engine, list(read_jsonl(result.dataset)))
    # optimal: good trajectories only, no critique
    engine, data = runs["optimal"]
    assert data and all(t.kind == "good" for t in data)
    assert not any(c[0] == "judge" for c in engine.calls)
    # direct revision: t' = end of the bad path, no critique
    engine, data = runs["direct_revision"]
    revisions = [t for t in data if t.kind == "revision"]
    assert revisions and all(t.meta["transition_step"] == t.meta["bad_turns"] for t in revisions)
    assert all(t.meta["transition_source"] == "end" for t in revisions)
    assert not any(c[0] in ("judge", "force") for c in engine.calls)
    # agent_r: the same pairs, cut earlier where the verifier found a Bad step
    engine, data = runs["agent_r"]
    agent_r = [t for t in data if t.kind == "revision"]
    assert any(c[0] == "judge" for c in engine.calls)
    assert [(t.id, t.meta["divergence_step"]) for t in agent_r] == \
        [(t.id, t.meta["divergence_step"]) for t in revisions]
    assert all(a.meta["transition_step"] <= d.meta["transition_step"] for a, d in zip(agent_r, revisions))
    assert any(a.meta["transition_step"] < d.meta["transition_step"] for a, d in zip(agent_r, revisions))
    for t in agent_r:  # "model" exactly where a step was judged Bad before the end
        assert t.meta["transition_source"] in ("model", "end")
        assert t.meta["transition_source"] == "end" or _bad_actions(t)[-1] != "good"
    # the good trajectories are the same in both revision modes; optimal keeps the perfect ones
    goods = {mode: [t for t in data if t.kind == "good"] for mode, (_, data) in runs.items()}
    assert goods["agent_r"] == goods["direct_revision"]
    perfect = [(t.task_id, t.messages) for t in goods["agent_r"] if t.meta["good_reward"] == 1.0]
    assert [(t.task_id, t.messages) for t in goods["optimal"]] == perfect
    assert len(perfect) < len(goods["agent_r"])  # the toy game's 0.5 paths are good at alpha 0.5 only


def test_include_good_false_and_pair_cap(tmp_path):
    _, result = _collect(tmp_path, include_good=False, max_pairs_per_task=1)
    data = list(read_jsonl(result.dataset))
    assert data and all(t.kind == "revision" for t in data)
    per_task = {}
    for t in data:
        per_task[t.task_id] = per_task.get(t.task_id, 0) + 1
    assert max(per_task.values()) == 1
    assert result.stats["pairs_found"] > len(data)


def test_good_cap_keeps_the_shortest_good_paths(tmp_path):
    _, everything = _collect(tmp_path / "all")
    _, capped = _collect(tmp_path / "capped", max_good_per_task=1)
    good = {}
    for t in read_jsonl(everything.dataset):
        if t.kind == "good":
            good.setdefault(t.task_id, []).append(t.meta["good_turns"])
    assert any(len(turns) > 1 and len(set(turns)) > 1 for turns in good.values())  # a real choice
    kept = {t.task_id: t.meta["good_turns"] for t in read_jsonl(capped.dataset) if t.kind == "good"}
    assert kept == {task: min(turns) for task, turns in good.items()}
    assert capped.stats["good_trajectories"] == len(kept) < everything.stats["good_trajectories"]


def _critiques(out_dir: Path) -> list[dict]:
    return [c for task in TASKS
            for c in json.loads((out_dir / "trees" / f"{task}.json").read_text())["critiques"].values()]


def test_unparsable_verdicts_count_as_uncertain_when_only_parsed(tmp_path, caplog):
    engine = ScriptedEngine(toy_policy(), judge=lambda c: "I cannot tell.")
    with caplog.at_level("WARNING", logger="agentr.search.collect"):
        _, result = _collect(tmp_path, engine=engine, verdict="parsed")
    stats = result.stats
    assert "cannot write its own verdicts" in caplog.text  # the user learns why t' is the end
    assert "0 verdicts were forced" in caplog.text
    critiques = _critiques(tmp_path)
    assert len(critiques) == stats["unparsed_verdicts"]  # the replies are kept for inspection
    assert all(c == {"verdict": "Uncertain", "source": "none", "reply": "I cannot tell."} for c in critiques)
    assert stats["verdict_sources"] == {"parsed": 0, "forced": 0, "none": len(critiques)}
    assert not any(c[0] == "force" for c in engine.calls)
    assert stats["unparsed_verdicts"] > 0
    assert stats["verdicts"]["Uncertain"] == stats["unparsed_verdicts"]
    assert stats["verdicts"]["Bad"] == 0
    # nothing judged Bad: every transition is the end of the bad path
    for t in read_jsonl(result.dataset):
        if t.kind == "revision":
            assert t.meta["transition_step"] == t.meta["bad_turns"]


def test_replay_environment_gives_the_same_dataset(tmp_path):
    _, cloned = _collect(tmp_path / "clone", env=CloneToyEnv)
    _, replayed = _collect(tmp_path / "replay", env=ToyEnv)
    assert cloned.dataset.read_bytes() == replayed.dataset.read_bytes()
    assert replayed.stats["replay_steps"] > 0 == cloned.stats["replay_steps"]


def test_seed_is_per_task_and_stable_across_processes():
    assert task_seed(0, "t1") != task_seed(1, "t1") and task_seed(0, "t1") != task_seed(0, "t2")
    code = "from agentr.search.task import task_seed; print(task_seed(0, 't1'))"
    for hashseed in ("1", "2"):
        out = subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONHASHSEED": hashseed},
                             capture_output=True, text=True, check=True).stdout
        assert int(out) == task_seed(0, "t1")


@pytest.mark.parametrize("kill_after", [0, 1, 3, 6, 9, 14, 20])
def test_resume_after_a_kill_gives_the_same_dataset(tmp_path, kill_after):
    _, reference = _collect(tmp_path / "ref", max_concurrent_trees=2)
    killed = ScriptedEngine(toy_policy(), judge_bad_on("noop", "lose", "half", "boom"), fail_after=kill_after)
    with pytest.raises(Killed):
        _collect(tmp_path / "run", engine=killed, max_concurrent_trees=2)
    assert not (tmp_path / "run" / "dataset.jsonl").exists()
    finished = sorted(p.name for p in (tmp_path / "run" / "tasks").glob("*.jsonl"))
    assert not list((tmp_path / "run").rglob("*.tmp"))  # no half-written file left behind
    engine, resumed = _collect(tmp_path / "run", max_concurrent_trees=2)
    assert resumed.stats["runs"][-1]["tasks_resumed"] == len(finished)
    assert resumed.dataset.read_bytes() == reference.dataset.read_bytes()
    assert resumed.stats["trees_searched"] == len(TASKS)
    for key in ("revision_trajectories", "good_trajectories", "env_steps", "verdicts", "tokens_generated"):
        assert resumed.stats[key] == reference.stats[key]
    # the resumed run searched only the unfinished tasks
    assert resumed.stats["runs"][-1]["trees_searched"] == len(TASKS) - len(finished)
    unfinished = [t for t in TASKS if f"{t}.jsonl" not in finished]
    expansions = [json.loads((tmp_path / "run" / "tasks" / f"{t}.stats.json").read_text())["expansions"]
                  for t in unfinished]
    assert sum(c[1] for c in engine.calls if c[0] == "expand") == sum(expansions)


def test_a_replay_of_a_finished_collection_keeps_its_statistics(tmp_path):
    _, first = _collect(tmp_path)
    assert first.stats["engine_calls"]["expand"] > 0 and len(first.stats["runs"]) == 1
    engine, replay = _collect(tmp_path)  # what a resumed fit does once Phase I is done
    assert not engine.calls
    for key in ("wall_seconds", "engine_calls", "runs"):
        assert replay.stats[key] == first.stats[key]
    _, grown = _collect(tmp_path, tasks=[*TASKS, "extra"])  # a second run that searches adds its own
    assert [r["trees_searched"] for r in grown.stats["runs"]] == [len(TASKS), 1]
    assert grown.stats["wall_seconds"] == pytest.approx(sum(r["wall_seconds"] for r in grown.stats["runs"]), abs=1e-3)
    assert grown.stats["engine_calls"]["expand"] == sum(r["engine_calls"]["expand"] for r in grown.stats["runs"])


KILLED_RUN = """
import os, signal, sys
from pathlib import Path
from search_fakes import CloneToyEnv, ScriptedEngine, judge_bad_on, toy_policy
from agentr.search.collect import collect
from agentr.search.config import SearchConfig

out_dir = Path(sys.argv[1])

class KilledEngine(ScriptedEngine):  # kill -9 once a task is finished: no cleanup runs
    def generate(self, conversations, sampling):
        if any((out_dir / "tasks").glob("*.jsonl")):
            os.kill(os.getpid(), signal.SIGKILL)
        return super().generate(conversations, sampling)

collect(KilledEngine(toy_policy(), judge_bad_on("noop", "lose", "half", "boom")),
        lambda: CloneToyEnv(need=2), [f"t{i}" for i in range(5)],
        SearchConfig(num_simulations=4, n_expand=4, max_depth=5, max_concurrent_trees=1), out_dir,
        progress=False)
"""


def test_a_run_killed_with_sigkill_keeps_its_time_in_the_statistics(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent),
                                                        os.environ.get("PYTHONPATH", "")])}
    killed = subprocess.run([sys.executable, "-c", KILLED_RUN, str(tmp_path)], env=env)
    assert killed.returncode == -9
    finished = len(list((tmp_path / "tasks").glob("*.jsonl")))
    assert finished >= 1 and not (tmp_path / "stats.json").exists()
    _, resumed = _collect(tmp_path, max_concurrent_trees=1)
    first, second = resumed.stats["runs"]
    assert first["trees_searched"] == finished and first["engine_calls"]["expand"] > 0
    assert first["wall_seconds"] > 0 and first["tasks_resumed"] == 0
    assert second["tasks_resumed"] == finished and second["trees_searched"] == len(TASKS) - finished
    assert resumed.stats["wall_seconds"] == pytest.approx(first["wall_seconds"] + second["wall_seconds"],
                                                          abs=1e-3)
    assert resumed.stats["engine_calls"]["expand"] == sum(r["engine_calls"]["expand"] for r in (first, second))


@pytest.mark.parametrize("include_good", [True, False])
def test_the_statistics_count_the_trajectories_of_a_torn_task_file(tmp_path, include_good):
    from collections import Counter

    _, whole = _collect(tmp_path, include_good=include_good)
    for path in (tmp_path / "tasks").glob("*.jsonl"):
        text = path.read_text()
        path.write_text(text[:-10])  # its last line torn (as a full disk leaves it)
    _, rebuilt = _collect(tmp_path, include_good=include_good)  # skips the torn lines
    data = list(read_jsonl(rebuilt.dataset))
    kinds = Counter(t.kind for t in data)
    stats = rebuilt.stats
    assert len(data) < whole.stats["revision_trajectories"] + whole.stats["good_trajectories"]
    assert (stats["revision_trajectories"], stats["good_trajectories"]) == (kinds["revision"], kinds["good"])
    steps = Counter(t.meta["transition_step"] for t in data if t.kind == "revision")
    assert stats["transition_step_histogram"] == dict(sorted(steps.items()))
    assert sum(stats["transition_sources"].values()) == kinds["revision"]
    assert f"{kinds['revision']} revision + {kinds['good']} good" in phase1_report(stats)


def test_resume_refuses_another_policy(tmp_path, tiny_model_dir):
    """A collection resumed from another model (same files, other weights) refuses to mix."""
    import shutil

    other = tmp_path / "other-model"
    shutil.copytree(tiny_model_dir, other)
    weights = other / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1  # the same shapes, one weight bit apart
    weights.write_bytes(bytes(data))
    engine = ScriptedEngine(toy_policy(), judge_bad_on("noop", "lose", "half", "boom"))
    engine.model_path = tiny_model_dir
    collect(engine, lambda: CloneToyEnv(need=2), TASKS[:1], SearchConfig(), tmp_path / "out", progress=False)
    engine.model_path = str(other)
    with pytest.raises(ProvenanceError, match=r"provenance\.model.*delete .*out"):
        collect(engine, lambda: CloneToyEnv(need=2), TASKS[:1], SearchConfig(), tmp_path / "out", progress=False)


def test_resume_refuses_other_settings(tmp_path):
    _collect(tmp_path, tasks=TASKS[:2])
    with pytest.raises(ProvenanceError, match=r"other settings.*changed: config\.beta\)"):
        _collect(tmp_path, tasks=TASKS[:2], beta=0.5)
    _, result = _collect(tmp_path, tasks=TASKS, max_concurrent_trees=3)  # more tasks, same data settings
    assert result.stats["runs"][-1]["tasks_resumed"] == 2


@pytest.mark.parametrize("first, changed, shapes_the_output", [
    ({"transition": "end"}, {"calibrate_verdicts": False}, False),  # no critique to calibrate
    ({"mode": "optimal"}, {"calibrate_verdicts": False, "verdict": "parsed", "beta": 0.5}, False),
    ({"verdict": "parsed"}, {"calibrate_verdicts": False}, False),  # no verdict is forced
    ({"verdict": "forced"}, {"critique_max_tokens": 7}, False),  # the verdict alone, no reasons
    ({"include_good": False}, {"max_good_per_task": 1}, False),
    ({}, {"calibrate_verdicts": False}, True),  # the model's forced verdicts
    ({"transition": "end"}, {"beta": 0.5}, True),
    ({"mode": "optimal"}, {"max_good_per_task": 1}, True),
])
def test_resume_compares_only_the_settings_that_shape_the_output(tmp_path, first, changed,
                                                                 shapes_the_output):
    _collect(tmp_path, tasks=TASKS[:2], **first)
    if shapes_the_output:
        with pytest.raises(ProvenanceError, match=rf"changed: config\.{next(iter(changed))}\)"):
            _collect(tmp_path, tasks=TASKS[:2], **first, **changed)
    else:
        _, result = _collect(tmp_path, tasks=TASKS, **first, **changed)
        assert result.stats["runs"][-1]["tasks_resumed"] == 2


# ---- TextCraft with a scripted policy ----------------------------------------------------------


def _textcraft_policy(expert: list[str]):
    """Follows the expert solution, but sometimes checks the inventory or gets a wrong item; once
    off the expert's track it never recovers."""

    def policy(conversation, n):
        done = [a for a in actions_so_far(conversation) if a != "inventory"]
        rng = content_rng(conversation)
        if done == expert[: len(done)] and len(done) < len(expert):
            options = [expert[len(done)], expert[len(done)], "inventory", "get 1 dirt"]
        else:
            options = ["inventory", "craft 1 stick using 2 dirt"]
        return [reply(rng.choice(options), thought="next") for _ in range(n)]

    return policy


def test_textcraft_revision_data_with_a_scripted_policy(tmp_path):
    env = textcraft.TextCraftEnv(min_depth=1, max_depth=1)
    task_ids = env.task_ids("train")[:3]
    expert = {t: env.expert_actions(t) for t in task_ids}
    assert all(1 <= len(e) <= 4 for e in expert.values())

    def policy(conversation, n):  # which task: the first observation names the goal
        for t, actions in expert.items():
            if conversation[3]["content"] == env.tasks.task(t).observation:
                return _textcraft_policy(actions)(conversation, n)
        raise AssertionError("unknown task")

    engine = ScriptedEngine(policy, judge_bad_on("get 1 dirt", "craft 1 stick using 2 dirt"))
    cfg = SearchConfig(num_simulations=6, n_expand=4, max_depth=6)
    result = collect(engine, lambda: textcraft.TextCraftEnv(min_depth=1, max_depth=1), task_ids, cfg,
                     tmp_path, alpha=1.0, progress=False)
    data = list(read_jsonl(result.dataset))
    revisions = [t for t in data if t.kind == "revision"]
    goods = [t for t in data if t.kind == "good"]
    assert revisions and goods
    for t in goods:  # replaying a good trajectory in a fresh env crafts the goal
        check = textcraft.TextCraftEnv(min_depth=1, max_depth=1)
        check.reset(t.task_id)
        rewards = [check.step(m["content"].split("Action: ")[-1])[1] for m in t.messages[4:] if m["role"] == "assistant"]
        assert rewards[-1] == 1.0
    for t in revisions:
        bad = _bad_actions(t)
        assert bad[-1] in ("get 1 dirt", "craft 1 stick using 2 dirt")  # t' is the first wrong step
        assert not any(a in ("get 1 dirt", "craft 1 stick using 2 dirt") for a in bad[t.meta["divergence_step"]:-1])
        assert t.messages[-2]["train"] and t.messages[-1]["content"].startswith("Crafted")


def test_collect_subcommand_runs_phase_one(tmp_path, monkeypatch, capsys):
    """`agentr collect ...` parses the nested search settings and writes the dataset."""
    import agentr.engines

    engines = []

    def fake_make_engine(config, model, **kwargs):
        assert (config.kind, model, config.max_model_len, config.kv_cache_gb) == (
            "hf", "some/model", 4096, 3)
        engines.append(ScriptedEngine(lambda conv, n: [reply("inventory")] * n))
        return engines[-1]

    monkeypatch.setattr(agentr.engines, "make_engine", fake_make_engine)
    from agentr.cli import main

    main(["collect", "--model", "some/model", "--engine.kind", "hf", "--engine.kv_cache_gb", "3",
          "--out_dir", str(tmp_path),
          "--num_tasks", "2", "--env_options", '{"min_depth": 1, "max_depth": 1}',
          "--search.num_simulations", "1", "--search.max_depth", "2", "--search.mode", "optimal",
          "--progress", "false"])
    printed = capsys.readouterr().out
    assert f"report:        {tmp_path / 'report.html'}" in printed
    assert f"dataset:       {tmp_path / 'dataset.jsonl'}" in printed
    assert json.loads((tmp_path / "stats.json").read_text())["env_steps"] > 0
    assert (tmp_path / "dataset.jsonl").exists() and (tmp_path / "report.html").exists()
    settings = json.loads((tmp_path / "collect.json").read_text())
    assert settings["config"]["num_simulations"] == 1 and settings["config"]["mode"] == "optimal"
    assert len(engines) == 1 and all(c[2].n == 4 for c in engines[0].calls)


# ---- verdict policies, transition sources, accuracy against ground truth ------------------------
BAD_ACTIONS = ("noop", "lose", "half", "boom")


def _transitions(result) -> list[tuple[str, int]]:
    return [(t.id, t.meta["transition_step"]) for t in read_jsonl(result.dataset) if t.kind == "revision"]


def test_replies_without_a_verdict_get_a_forced_one(tmp_path, caplog):
    _, parsed = _collect(tmp_path / "parsed")  # the verifier writes every verdict itself
    engine = ScriptedEngine(toy_policy(), judge=lambda c: "I cannot tell.", force=force_bad_on(*BAD_ACTIONS))
    with caplog.at_level("WARNING", logger="agentr.search.collect"):
        _, forced = _collect(tmp_path / "forced", engine=engine)
    stats = forced.stats
    critiques = _critiques(tmp_path / "forced")
    assert critiques and stats["verdict_sources"] == {"parsed": 0, "forced": len(critiques), "none": 0}
    assert f"{len(critiques)} verdicts were forced" in caplog.text
    for c in critiques:  # the reply is kept and the model's log-probabilities of the verdicts
        assert c["source"] == "forced" and c["reply"] == "I cannot tell."
        assert max(c["logprobs"], key=c["logprobs"].get) == c["verdict"] != "Uncertain"
    # each forced choice continues its own reply with the judgment label
    forced_batches = [b for b, c in zip(engine.batches, engine.calls) if c[0] == "force"]
    assert all(prefix == "I cannot tell.\nJudgment:" for batch in forced_batches for _, prefix in batch)
    assert stats["engine_calls"]["force"] == len(forced_batches) == stats["engine_calls"]["judge"]
    # the same verdicts as a verifier that writes them: the same transition points
    assert _transitions(forced) == _transitions(parsed)
    assert stats["verdicts"] == parsed.stats["verdicts"]


def _sure_of_good(*bad_actions: str):
    """Forced verdicts of a model that always finds Good most likely; after the given actions
    Bad is less unlikely than after any other step, the content-free one included."""
    def force(conversation, prefix, choices):
        bad = latest_action(conversation) in bad_actions
        return [{" Good": 0.0, " Bad": -1.0 if bad else -3.0, " Uncertain": -3.0}[c] for c in choices]
    return force


def test_calibration_finds_the_steps_a_model_sure_of_good_leans_bad_on(tmp_path):
    _, parsed = _collect(tmp_path / "parsed")  # a verifier that writes Bad for the bad actions
    runs = {}
    for calibrate in (False, True):
        engine = ScriptedEngine(toy_policy(), judge=lambda c: "I cannot tell.",
                                force=_sure_of_good(*BAD_ACTIONS))
        _, runs[calibrate] = _collect(tmp_path / str(calibrate), engine=engine,
                                      calibrate_verdicts=calibrate)
        conversations = [row if isinstance(row, list) else row[0] for b in engine.batches for row in b]
        baselines = [c for c in conversations if "Latest action: N/A" in c[0]["content"]]
        assert len(baselines) == (2 if calibrate else 0)  # its reasons, then its verdict: once
    # uncalibrated, every verdict is Good and t' is the end of every bad path
    assert runs[False].stats["verdicts"]["Bad"] == 0
    assert set(runs[False].stats["transition_sources"]) == {"end"}
    # calibrated, the verdicts and t' are those of the verifier that writes them
    assert runs[True].stats["verdicts"] == parsed.stats["verdicts"]
    assert _transitions(runs[True]) == _transitions(parsed)
    baseline = {"Good": 0.0, "Bad": -3.0, "Uncertain": -3.0}
    assert runs[True].stats["runs"][-1]["verdict_baseline"] == baseline
    assert runs[False].stats["runs"][-1]["verdict_baseline"] is None
    for c in _critiques(tmp_path / "True"):
        assert c["baseline"] == baseline and c["source"] == "forced"
    assert all("baseline" not in c for c in _critiques(tmp_path / "False"))


def test_forced_only_asks_for_the_verdict_without_reasons(tmp_path):
    from agentr.search.critique import FORCED_ASK

    _, parsed = _collect(tmp_path / "parsed")
    engine = ScriptedEngine(toy_policy(), judge=lambda c: pytest.fail("no reasons under verdict: forced"),
                            force=force_bad_on(*BAD_ACTIONS))
    _, forced = _collect(tmp_path / "forced", engine=engine, verdict="forced")
    batches = [b for b, c in zip(engine.batches, engine.calls) if c[0] == "force"]
    assert batches and not any(c[0] == "judge" for c in engine.calls)
    for conversation, prefix in (row for batch in batches for row in batch):
        assert conversation[0]["content"].endswith(FORCED_ASK) and prefix == "Judgment:"
    assert _transitions(forced) == _transitions(parsed)
    assert forced.stats["critique_tokens"] == 0 and forced.stats["unparsed_verdicts"] == 0


def test_accuracy_figures_are_absent_without_mistake_labels(tmp_path):
    _, result = _collect(tmp_path)
    assert "transition_accuracy" not in result.stats
    assert all("mistake_step" not in t.meta for t in read_jsonl(result.dataset))
    with pytest.raises(ValueError, match="transition 'oracle' needs an environment that labels mistakes"):
        _collect(tmp_path / "oracle", transition="oracle")
    assert not (tmp_path / "oracle" / "tasks").exists()  # refused before any search


def test_oracle_transition_is_the_first_labelled_mistake(tmp_path):
    _, result = _collect(tmp_path, env=LabelledToyEnv, transition="oracle")
    revisions = [t for t in read_jsonl(result.dataset) if t.kind == "revision"]
    assert revisions
    for t in revisions:
        after = _bad_actions(t)[t.meta["divergence_step"]:]
        # the toy labels every action but `good`: t' is the first of them after the divergence
        assert after[-1] in BAD_ACTIONS and all(a == "good" for a in after[:-1])
        assert t.meta["transition_step"] == t.meta["mistake_step"]
        assert t.meta["transition_source"] == "oracle"
    assert result.stats["transition_sources"] == {"oracle": len(revisions)}
    assert "model" not in result.stats["transition_accuracy"]


def _placement(steps, references):
    pairs = [(s, r) for s, r in zip(steps, references) if r is not None]
    return {"equal": sum(s == r for s, r in pairs) / len(pairs), "before": sum(s < r for s, r in pairs) / len(pairs),
            "after": sum(s > r for s, r in pairs) / len(pairs),
            "mean_distance": sum(abs(s - r) for s, r in pairs) / len(pairs)}


def test_accuracy_of_model_end_and_random_rules_on_the_same_pairs(tmp_path):
    # a verifier that is right only about `noop`: it misses lose/half/boom, so t' falls late
    engine = ScriptedEngine(toy_policy(), judge_bad_on("noop"))
    _, result = _collect(tmp_path, engine=engine, env=LabelledToyEnv)
    accuracy = result.stats["transition_accuracy"]
    revisions = [t for t in read_jsonl(result.dataset) if t.kind == "revision"]
    mistakes = [t.meta["mistake_step"] for t in revisions]
    per_task = [json.loads((tmp_path / "tasks" / f"{t}.stats.json").read_text()) for t in TASKS]
    assert mistakes == [m for s in per_task for m in s["mistake_steps"]]
    assert accuracy["pairs"] == len(revisions) and accuracy["pairs_with_mistake"] == sum(m is not None for m in mistakes)
    model = [t.meta["transition_step"] for t in revisions]
    end = [t.meta["bad_turns"] for t in revisions]
    random_steps = [r for s in per_task for r in s["random_steps"]]
    for rule, steps in (("model", model), ("end", end), ("random", random_steps)):
        assert accuracy[rule] == pytest.approx(_placement(steps, mistakes), abs=1e-4), rule
    assert accuracy["end"]["before"] == 0  # the end of the path never comes before a mistake
    assert accuracy["model"]["equal"] >= accuracy["end"]["equal"]
    assert any(s != e for s, e in zip(random_steps, end))
    assert all(t.meta["divergence_step"] < r <= t.meta["bad_turns"] for t, r in zip(revisions, random_steps))
    # a perfect verifier finds every labelled mistake
    _, perfect = _collect(tmp_path / "perfect", env=LabelledToyEnv)
    assert perfect.stats["transition_accuracy"]["model"]["equal"] == 1.0
    report = phase1_report(perfect.stats)  # what the end of Phase I prints
    assert "model: equal 100%, before 0%, after 0%, mean distance 0.00" in report
    assert f"verdicts: Good {perfect.stats['verdicts']['Good']}" in report


def test_placement_on_hand_built_pairs():
    from agentr.search.summary import placement, transition_accuracy

    assert placement([3, 2, 5, 4], [3, 4, 4, None]) == {
        "equal": 0.3333, "before": 0.3333, "after": 0.3333, "mean_distance": 1.0}
    assert placement([1], [None]) == {"equal": None, "before": None, "after": None, "mean_distance": None}
    tasks = [{"mistake_steps": [2, None], "transition_steps": [2, 3], "bad_path_ends": [4, 3], "random_steps": [1, 2]},
             {"mistake_steps": [1], "transition_steps": [3], "bad_path_ends": [3], "random_steps": [1]}]
    accuracy = transition_accuracy(tasks, "model")
    assert (accuracy["pairs"], accuracy["pairs_with_mistake"], accuracy["mean_mistake_step"]) == (3, 2, 1.5)
    assert accuracy["model"] == {"equal": 0.5, "before": 0.0, "after": 0.5, "mean_distance": 1.0}
    assert accuracy["end"] == {"equal": 0.0, "before": 0.0, "after": 1.0, "mean_distance": 2.0}
    assert accuracy["random"] == {"equal": 0.5, "before": 0.5, "after": 0.0, "mean_distance": 0.5}
    assert "model" not in transition_accuracy(tasks, "end")
    assert transition_accuracy([{"transition_steps": [1]}], "model") is None


def test_old_direct_revision_mode_names_the_setting_that_replaced_it():
    with pytest.raises(ValueError, match="transition: 'end'"):
        SearchConfig(mode="direct_revision")
    with pytest.raises(ValueError, match="SearchConfig.verdict must be one of"):
        SearchConfig(verdict="sometimes")
