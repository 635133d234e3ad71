"""`agentr evaluate`: a model or adapter on a task split, with its table, results and report."""

from __future__ import annotations

import sys
from pathlib import Path

from agentr.engines.config import EngineConfig
from agentr.errors import SettingError, check_range
from agentr.evaluation import (
    EPISODES_FILE,
    REVISION_EPISODES_FILE,
    evaluate,
    read_episodes,
    revision_test,
)
from agentr.provenance import env_description, policy_provenance
from agentr.report import write_report
from agentr.run_lock import DirectoryLock


def format_table(rows: list[tuple[str, str]]) -> str:
    """A two-column text table."""
    width = max(len(k) for k, _ in rows)
    line = "-" * (width + 3 + max(len(v) for _, v in rows))
    return "\n".join([line, *(f"{k:<{width}} | {v}" for k, v in rows), line])


def format_metric(name: str, metrics: dict) -> str:
    """One metric of `episode_metrics` as text: its interval after it, where it has one."""
    value = metrics[name]
    if value is None:
        return "- (no episode used a revision turn)" if name == "recovery_rate" else "-"
    if isinstance(value, dict):
        return ", ".join(f"{n}: {v:.3f}" for n, v in value.items()) or "none"
    ci = metrics.get(f"{name}_ci")
    return f"{value:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else f"{value:.3f}"


def _result_rows(results: dict, prefix: str = "") -> list[tuple[str, str]]:
    m, t = results["metrics"], results["timing"]
    rows = [(f"{prefix}{k}", format_metric(k, m)) for k in m if not k.endswith("_ci")]
    methods = results.get("interval_method")
    if methods:
        rows.append((f"{prefix}intervals ({methods['confidence']})",
                     f"success_rate: {methods['success_rate']}; avg_reward: {methods['avg_reward']}"))
    episodes = (f"{results['num_episodes']} ({results['num_errors']} with errors, "
                f"{results['num_infrastructure_errors']} of them environment errors, not scored)")
    if "episodes_per_task" in results:
        episodes += (f", {results['episodes_per_task']} per task at temperature "
                     f"{results['settings']['temperature']}")
    rows += [(f"{prefix}episodes", episodes),
             (f"{prefix}wall time", f"{t['seconds']:.1f} s"),
             (f"{prefix}episodes/minute", f"{t['episodes_per_minute']:.2f}"),
             (f"{prefix}generated tokens/s", f"{t['generated_tokens_per_s']:.1f}")]
    if "sampled" in results:
        rows += _result_rows(results["sampled"], prefix=f"{prefix}sampled ")
    return rows


def read_reference(path: str) -> list:
    """The episodes of `--revision_from`, read before any model loads; `SettingError` when the
    file is missing or is not an `episodes.jsonl`."""
    try:
        return read_episodes(path)
    except OSError as error:
        raise SettingError(f"revision_from: cannot read {path} ({error.strerror})") from None
    except ValueError as error:
        raise SettingError(f"revision_from: {error}") from None


def evaluate_command(
    model: str,
    split: str = "test",
    env: str = "textcraft",
    adapter: str | None = None,
    engine: EngineConfig = EngineConfig(),
    max_turns: int = 100,
    num_tasks: int | None = None,
    out_dir: str = "runs/evaluate",
    temperature: float = 0.0,
    max_tokens: int = 128,
    max_concurrent: int | None = None,
    seed: int = 0,
    episodes_per_task: int = 0,
    sample_temperature: float = 1.0,
    revision_from: str | None = None,
    revision_max_turns: int = 50,
    max_error_rate: float = 0.1,
    revision_max_reward: float = 0.0,
    env_options: dict | None = None,
    progress: bool = True,
) -> None:
    """Evaluate a model (or a LoRA adapter on it) on a task split: success rate, reward, loops.

    Writes OUT_DIR/eval.json (metrics with 95% intervals, timing, settings, per-episode
    summary), OUT_DIR/episodes.jsonl (every episode) and OUT_DIR/report.html (see
    `agentr report`), and prints a table. With
    --episodes_per_task K, also plays K sampled episodes per task (reported apart, under
    "sampled"). With --revision_from, also runs the revision test on that file's failed
    episodes, those with reward at most --revision_max_reward (OUT_DIR/revision.json). One
    command at a time may write an OUT_DIR: a second is refused.

    Args:
        model: Hugging Face id, model directory or .gguf file.
        split: task split ("train" or "test").
        env: environment name (textcraft, sciworld, http, multitask) or "module:Class".
        adapter: LoRA adapter directory loaded on top of the model.
        engine: which engine generates, and how large (e.g. --engine.kind hf,
            --engine.max_model_len 2048, --engine.kv_cache_gb 3).
        max_turns: turn limit per episode (the paper's 100).
        num_tasks: evaluate only the first N tasks of the split.
        out_dir: where results and episodes go.
        temperature: 0 for greedy decoding (the paper's setting).
        max_tokens: tokens per reply.
        max_concurrent: live episodes at most (default: what the KV cache holds).
        seed: seed of sampling (each sampled episode's seed derives from it, its task and its
            index), of the revision test's cut points, and the engine's.
        episodes_per_task: sampled episodes per task, played beside the greedy ones (0: none).
        sample_temperature: temperature of the sampled episodes.
        revision_from: a reference model's episodes.jsonl: run the revision test on it.
        revision_max_turns: turns allowed after the cut in the revision test.
        max_error_rate: the largest share of episodes that may end in an environment error (a
            dead server): those are not scored, and above this share the command fails.
        revision_max_reward: the revision test continues the reference episodes whose final
            reward is at most this (default 0, the paper's failed trajectories; 0.99 would
            also take partial successes).
        env_options: keyword arguments of the environment, e.g. {"max_depth": 2} for TextCraft.
        progress: show a progress bar.
    """
    from agentr.engines import make_engine
    from agentr.envs import split_tasks

    for name, value in (("max_turns", max_turns), ("max_tokens", max_tokens),
                        ("revision_max_turns", revision_max_turns)):
        check_range(name, value, 1)
    check_range("num_tasks", num_tasks, 1, optional=True)
    check_range("max_concurrent", max_concurrent, 1, optional=True)
    check_range("temperature", temperature, 0)
    check_range("max_error_rate", max_error_rate, 0, 1)
    reference = read_reference(revision_from) if revision_from else None
    env_factory, task_ids = split_tasks(env, split, num_tasks, env_options)
    with DirectoryLock(out_dir), make_engine(engine, model, adapter=adapter, seed=seed) as policy:
        if not revision_from:  # a reused out_dir must not show an earlier run's revision test
            for name in ("revision.json", REVISION_EPISODES_FILE):
                (Path(out_dir) / name).unlink(missing_ok=True)
        provenance = {**policy_provenance(policy), "env": env_description(env, env_options),
                      "split": split}
        results = evaluate(policy, env_factory, task_ids, max_turns=max_turns,
                           temperature=temperature, max_tokens=max_tokens, seed=seed,
                           episodes_per_task=episodes_per_task,
                           sample_temperature=sample_temperature, max_concurrent=max_concurrent,
                           max_error_rate=max_error_rate, provenance=provenance, out_dir=out_dir,
                           progress=progress)
        rows = [("model", model), ("adapter", adapter or "-"), ("engine", type(policy).__name__),
                ("env / split", f"{env} / {split} ({len(task_ids)} tasks)")]
        rows += _result_rows(results)
        if revision_from:
            revision = revision_test(policy, env_factory, reference,
                                     max_turns=revision_max_turns, seed=seed,
                                     max_reward=revision_max_reward,
                                     max_tokens=max_tokens, max_concurrent=max_concurrent,
                                     max_error_rate=max_error_rate, provenance=provenance,
                                     out_dir=out_dir, progress=progress)
            rows += _result_rows(revision, prefix="revision ")
        report, _ = write_report(out_dir)
    print(format_table(rows))
    print(f"results: {Path(out_dir) / 'eval.json'}; episodes: "
          f"{Path(out_dir) / EPISODES_FILE}; report: {report}", file=sys.stderr)
