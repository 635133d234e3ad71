"""`agentr collect`: Phase I alone."""

from __future__ import annotations

from agentr.engines.config import EngineConfig
from agentr.errors import check_range
from agentr.provenance import env_description
from agentr.run_lock import DirectoryLock
from agentr.search.collect import collect
from agentr.search.config import SearchConfig


def collect_command(
    model: str,
    env: str = "textcraft",
    out_dir: str = "runs/collect",
    split: str = "train",
    num_tasks: int | None = None,
    adapter: str | None = None,
    engine: EngineConfig = EngineConfig(),
    search: SearchConfig = SearchConfig(),
    alpha: float = 0.5,
    iteration: int = 1,
    seed: int = 0,
    env_options: dict | None = None,
    progress: bool = True,
) -> None:
    """Phase I alone: search tasks with a model, critique, splice, and write the dataset as JSONL.

    Writes OUT_DIR/dataset.jsonl (trajectories, see agentr.trajectory), OUT_DIR/trees/ (one
    search tree per task), OUT_DIR/tasks/ (per-task results), OUT_DIR/stats.json and
    OUT_DIR/report.html (see `agentr report`), and prints a summary. Running again with the
    same OUT_DIR resumes: finished tasks are skipped. One command at a time may write an OUT_DIR:
    a second is refused.

    Args:
        model: Hugging Face id, model directory or .gguf file of the policy.
        env: environment name (textcraft, sciworld, http, multitask) or "module:Class".
        out_dir: where the dataset, trees and stats go; an existing one is resumed.
        split: task split to search ("train" or "test").
        num_tasks: search only the first N tasks of the split.
        adapter: LoRA adapter directory loaded on top of the model.
        engine: which engine generates, and how large (e.g. --engine.kind hf,
            --engine.max_model_len 2048, --engine.kv_cache_gb 3).
        search: search, pairing and critique settings.
        alpha: reward threshold of good paths (`>=`).
        iteration: Agent-R iteration recorded in the trajectories.
        seed: base seed of all random choices (and the engine's).
        env_options: keyword arguments of the environment, e.g. {"max_depth": 1} for TextCraft.
        progress: show a progress bar.
    """
    from agentr.engines import make_engine
    from agentr.envs import split_tasks

    check_range("num_tasks", num_tasks, 1, optional=True)
    check_range("alpha", alpha, 0, 1, low_open=True)
    check_range("iteration", iteration, 0)
    env_factory, task_ids = split_tasks(env, split, num_tasks, env_options)
    from agentr.report import format_summary, write_report

    with DirectoryLock(out_dir), make_engine(engine, model, adapter=adapter, seed=seed) as policy:
        result = collect(policy, env_factory, task_ids, search, out_dir,
                         iteration=iteration, alpha=alpha, seed=seed, progress=progress,
                         provenance={"env": env_description(env, env_options), "split": split})
        report, run = write_report(out_dir)
    print(format_summary(run, report))
    print(f"dataset:       {result.dataset}")
