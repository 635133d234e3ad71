"""Evaluation: success rate, reward and loops on a split; the revision test; `agentr evaluate`.

`evaluate` plays one greedy episode per task with the batched agent loop (the headline
result) and, optionally, `episodes_per_task` sampled episodes per task (sampled evaluation: more
episodes, hence narrower intervals, where tasks are few). It writes, to `out_dir`:

    episodes.jsonl          every headline episode (an `agentr.agent.Episode` per line, not
                            an `agentr.trajectory.Trajectory`), appended as each one ends, so a
                            dead engine leaves the finished ones
    sampled_episodes.jsonl  every sampled episode (with `episodes_per_task`)
    eval.json               the results (only once everything finished; a run first removes
                            the eval.json of a previous one)

eval.json holds:

    metrics          `agentr.metrics.episode_metrics`: success_rate, success_rate_ci [low, high],
                     avg_reward, avg_reward_ci, loop_count, loop_count_by_length {"n": mean},
                     repeat_fraction, avg_turns, revision_rate, recovery_rate (null: no revision)
    interval_method  how each interval was computed (`agentr.metrics.interval_methods`)
    num_episodes, num_tasks, num_errors, num_infrastructure_errors, timing, settings
    fingerprint      what made the result (`agentr.provenance`): the digests of the model and
                     adapter, the environment and split, the tasks and the settings
    episodes         one summary per episode: task_id, reward, success, turns, done, loop_count,
                     loop_lengths, revision, error (sampled episodes also: sample, seed)
    sampled          the same keys for the sampled episodes, plus episodes_per_task (only with
                     `episodes_per_task`)

Sampled episode j of task t draws with its own seed, `sample_seed(seed, t, j)`, so a rerun
reproduces it whatever the other tasks or the batch.

Episodes that ended because the environment failed (`is_infrastructure_error`: a dead server,
a crashed simulator) are counted apart and left out of the metrics; when they are more than
`max_error_rate` of the episodes, the evaluation fails instead of reporting a result.

Replies are sampled with the stop strings `REPLY_STOP` by default and stored by the reply rule
of `agentr.agent.turn`, so the history the policy sees is the one training renders.

`revision_test` continues *failed* episodes of a reference model (an `episodes.jsonl` written
by `evaluate`) from a random, seeded cut point for at most 50 more turns and measures the
reward reached: the paper's test of whether a model recovers from a bad trajectory. A failed
episode is one whose final reward is at most `max_reward` (0 by default: the paper continues
the trajectories with reward 0; partial rewards are not failures). It writes `revision.json`
and `revision_episodes.jsonl`.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from agentr.agent.conversation import HEADER_LEN
from agentr.agent.rollout import EnvFactory, Episode, EpisodeStart, run_episodes
from agentr.agent.turn import REPLY_STOP
from agentr.engines.base import Engine, SamplingConfig
from agentr.engines.common import derive_seed
from agentr.envs.base import Environment
from agentr.errors import InfrastructureError, check_range
from agentr.jsonfiles import RecordAppender, read_records, write_json
from agentr.metrics import (
    RevisionReward,
    episode_metrics,
    has_revision,
    interval_methods,
    loop_count,
    loop_lengths,
)
from agentr.provenance import describe_env, policy_provenance, task_digest


#: Error prefixes of episodes stopped by a failing environment (not by the agent): see
#: `agentr.agent.rollout`. They are reported apart and never scored as failures.
INFRASTRUCTURE_ERRORS = ("environment:", "reset:", "replay:")
#: The files of episodes (`Episode` records, one per line) `evaluate` and `revision_test` write.
EPISODES_FILE, SAMPLED_EPISODES_FILE = "episodes.jsonl", "sampled_episodes.jsonl"
REVISION_EPISODES_FILE = "revision_episodes.jsonl"


def is_infrastructure_error(episode: Episode) -> bool:
    """The episode ended because the environment failed (a dead server, a crash), not the agent."""
    return episode.error is not None and episode.error.startswith(INFRASTRUCTURE_ERRORS)


def read_episodes(path: str | os.PathLike) -> list[Episode]:
    """The episodes of an `episodes.jsonl` file written by `evaluate` (a torn last line,
    left by a run killed mid-write, is skipped with a warning)."""
    episodes = []
    for lineno, record in read_records(path):
        try:
            episodes.append(Episode.from_dict(record))
        except TypeError as e:
            raise ValueError(f"{path}:{lineno}: not an episode record ({e})") from e
    return episodes


def evaluation_fingerprint(provenance: dict, task_ids: Sequence, *, max_turns: int,
                           temperature: float, max_tokens: int, stop: Sequence[str], seed: int,
                           success_threshold: float, episodes_per_task: int,
                           sample_temperature: float) -> dict:
    """What determines the result of `evaluate` (the keyword arguments are its own):
    `provenance` (the policy's weights, the environment and split), the tasks and the settings."""
    return {**provenance, "tasks": task_digest(task_ids),
            "settings": {"max_turns": max_turns, "temperature": temperature,
                         "max_tokens": max_tokens, "stop": list(stop), "seed": seed,
                         "success_threshold": success_threshold,
                         "episodes_per_task": episodes_per_task,
                         "sample_temperature": sample_temperature}}


def _check_infrastructure(episodes: Sequence[Episode], max_error_rate: float, provenance: dict) -> None:
    failed = [e for e in episodes if is_infrastructure_error(e)]
    if episodes and len(failed) > max_error_rate * len(episodes):
        raise InfrastructureError(
            f"{len(failed)} of {len(episodes)} episodes ended in an environment error, more than "
            f"max_error_rate={max_error_rate:g} of them, in environment "
            f"{describe_env(provenance.get('env'))}. No result was written: fix the environment "
            f"(is its server running?) and run again. First error: {failed[0].error}")


def _run_and_record(engine, env, starts, sampling: SamplingConfig, out_dir, jsonl_name: str,
                    settings: dict, **run_kwargs) -> tuple[list[Episode], dict]:
    """Run the episodes, appending each to `out_dir/jsonl_name` as it ends; return them with
    the results dict (metrics, counts, timing, settings, per-episode summaries)."""
    writer = RecordAppender(Path(out_dir) / jsonl_name if out_dir is not None else None)
    stats0 = (engine.stats.generated_tokens, engine.stats.prompt_tokens)
    start = time.perf_counter()
    try:
        episodes = run_episodes(engine, env, starts, sampling=sampling,
                                on_episode_end=lambda e: writer.append(e.to_dict()), **run_kwargs)
    finally:
        writer.close()
    seconds = time.perf_counter() - start
    generated = engine.stats.generated_tokens - stats0[0]
    scored = [e for e in episodes if not is_infrastructure_error(e)]
    results = {
        "metrics": episode_metrics(scored),
        "interval_method": interval_methods(scored),
        "num_episodes": len(episodes),
        "num_tasks": len({e.task_id for e in episodes}),
        "num_errors": sum(e.error is not None for e in episodes),
        "num_infrastructure_errors": sum(is_infrastructure_error(e) for e in episodes),
        "timing": {
            "seconds": seconds,
            "episodes_per_minute": 60 * len(episodes) / seconds if seconds else 0.0,
            "generated_tokens": generated,
            "prompt_tokens": engine.stats.prompt_tokens - stats0[1],
            "generated_tokens_per_s": generated / seconds if seconds else 0.0,
        },
        "settings": {**settings, "temperature": sampling.temperature,
                     "max_tokens": sampling.max_tokens, "stop": list(sampling.stop),
                     "seed": sampling.seed, "adapter": getattr(engine, "adapter_path", None),
                     "engine": type(engine).__name__},
        "episodes": [{**_summary(e), **e.meta} for e in episodes],
    }
    return episodes, results


def _summary(episode: Episode) -> dict:
    return {"task_id": episode.task_id, "reward": episode.reward, "success": episode.success,
            "turns": episode.turns, "done": episode.done, "loop_count": loop_count(episode.actions),
            "loop_lengths": {str(n): c for n, c in loop_lengths(episode.actions).items()},
            "revision": has_revision(episode), "error": episode.error}


def sample_seed(seed: int, task_id: str, sample: int) -> int:
    """The seed of sampled episode `sample` of task `task_id` in an evaluation seeded `seed`."""
    return derive_seed(seed, task_id, sample)


def _start_output(out_dir: str | os.PathLike | None, results_name: str) -> None:
    """Remove a previous run's results file first: a run killed before writing its own must not
    leave old results beside new trajectories."""
    if out_dir is not None:
        (Path(out_dir) / results_name).unlink(missing_ok=True)


def evaluate(
    engine: Engine,
    env: Environment | EnvFactory,
    task_ids: Sequence[str],
    *,
    max_turns: int = 100,
    temperature: float = 0.0,
    max_tokens: int = 128,
    stop: Sequence[str] = REPLY_STOP,
    seed: int = 0,
    episodes_per_task: int = 0,
    sample_temperature: float = 1.0,
    max_concurrent: int | None = None,
    success_threshold: float = 1.0,
    max_error_rate: float = 0.1,
    provenance: dict | None = None,
    out_dir: str | os.PathLike | None = None,
    progress: bool = True,
) -> dict:
    """Play one episode per task (and optionally sampled ones) and measure success, reward, loops.

    Args:
        engine: the policy (with its adapter already loaded).
        env: an environment factory, or an environment whose `spawn()` makes more.
        task_ids: the tasks, one episode each.
        max_turns: turn limit per episode (the paper's 100).
        temperature: 0 is greedy, as in the paper.
        max_tokens: tokens per reply.
        stop: stop strings of each reply.
        seed: sampling seed (matters only when temperature > 0), and the base of the sampled
            episodes' seeds.
        episodes_per_task: sampled episodes per task played after the headline ones, at
            `sample_temperature` (0: none); reported under "sampled".
        sample_temperature: temperature of the sampled episodes (> 0).
        max_concurrent: live episodes at most (default: what the engine's KV cache holds).
        success_threshold: final reward that counts as success.
        max_error_rate: the largest share of episodes that may end in an environment error
            (`is_infrastructure_error`); such episodes are left out of the metrics.
        provenance: what made the policy and the tasks (`agentr.provenance.policy_provenance`,
            environment, split), recorded in the results' "fingerprint" with the settings.
        out_dir: where `episodes.jsonl` and `eval.json` go (None: write nothing).
        progress: show a progress bar.

    Returns:
        The contents of eval.json (see the module docstring).

    Raises:
        ValueError: `episodes_per_task` < 0, or sampled episodes at a temperature <= 0.
        agentr.agent.RolloutError: the engine failed; finished episodes are in the JSONL file.
        agentr.errors.InfrastructureError: more than `max_error_rate` of the episodes ended in an
            environment error; `eval.json` is not written.
    """
    if episodes_per_task < 0:
        raise ValueError(f"episodes_per_task must be >= 0 (0: no sampled evaluation), got {episodes_per_task}")
    if episodes_per_task and sample_temperature <= 0:
        raise ValueError(f"sample_temperature must be > 0 for sampled evaluation, got {sample_temperature}")
    check_range("max_error_rate", max_error_rate, 0, 1)
    task_ids = [str(t) for t in task_ids]
    sampling = SamplingConfig(temperature=temperature, max_tokens=max_tokens, stop=tuple(stop),
                              seed=seed)
    provenance = provenance if provenance is not None else policy_provenance(engine)
    _start_output(out_dir, "eval.json")
    settings = {"max_turns": max_turns, "success_threshold": success_threshold}
    run = dict(max_turns=max_turns, max_concurrent=max_concurrent,
               success_threshold=success_threshold, progress=progress)
    episodes, results = _run_and_record(engine, env, task_ids, sampling, out_dir,
                                        EPISODES_FILE, settings, **run)
    _check_infrastructure(episodes, max_error_rate, provenance)
    if episodes_per_task:
        seeds = {(t, j): sample_seed(seed, t, j) for t in task_ids for j in range(episodes_per_task)}
        starts = [EpisodeStart(t, seed=s, meta={"sample": j, "seed": s}) for (t, j), s in seeds.items()]
        sampled_episodes, sampled = _run_and_record(
            engine, env, starts, replace(sampling, temperature=sample_temperature), out_dir,
            SAMPLED_EPISODES_FILE, settings, **run)
        _check_infrastructure(sampled_episodes, max_error_rate, provenance)
        results["sampled"] = {"episodes_per_task": episodes_per_task, **sampled}
    results["fingerprint"] = evaluation_fingerprint(
        provenance, task_ids, max_turns=max_turns, temperature=temperature, max_tokens=max_tokens,
        stop=stop, seed=seed, success_threshold=success_threshold,
        episodes_per_task=episodes_per_task, sample_temperature=sample_temperature)
    if out_dir is not None:
        write_json(Path(out_dir) / "eval.json", results, indent=2)
    return results


def revision_starts(reference: Sequence[Episode], seed: int = 0, num_tasks: int | None = None,
                    max_reward: float = 0.0) -> list[EpisodeStart]:
    """Cut points for the revision test: each failed reference episode (final reward at most
    `max_reward`, no error, >= 1 turn) keeps its first k turns, k drawn uniformly from
    1 .. turns-1 (1 for one-turn episodes)."""
    rng = random.Random(seed)
    starts = []
    for episode in reference:
        if episode.reward > max_reward or episode.error is not None or episode.turns < 1:
            continue
        cut = rng.randint(1, max(1, episode.turns - 1))
        starts.append(EpisodeStart(
            episode.task_id, prefix=episode.messages[:HEADER_LEN + 2 * cut],
            meta={"cut_turn": cut, "reference_turns": episode.turns,
                  "reference_reward": episode.reward}))
        if num_tasks is not None and len(starts) >= num_tasks:
            break
    return starts


def revision_test(
    engine: Engine,
    env: Environment | EnvFactory,
    reference: str | os.PathLike | Sequence[Episode],
    *,
    max_turns: int = 50,
    seed: int = 0,
    num_tasks: int | None = None,
    max_reward: float = 0.0,
    max_tokens: int = 128,
    max_concurrent: int | None = None,
    success_threshold: float = 1.0,
    max_error_rate: float = 0.1,
    out_dir: str | os.PathLike | None = None,
    progress: bool = True,
) -> dict:
    """Continue failed episodes of a reference model from a random cut; measure the reward.

    Args:
        reference: an `episodes.jsonl` written by `evaluate` (or its episodes).
        max_turns: turns the model may add after the cut (the paper's 50).
        seed: seeds the cut points.
        num_tasks: use only the first N failed episodes.
        max_error_rate: as in `evaluate`.
        max_reward: reference episodes whose final reward is at most this are the failed ones
            (the paper's: 0).

    Returns:
        {"metrics": {revision_reward, success_rate, loop_count, ...}, ...}; written to
        `out_dir/revision.json`, the episodes to `out_dir/revision_episodes.jsonl`.
    """
    if isinstance(reference, (str, os.PathLike)):
        reference = read_episodes(reference)
    check_range("max_error_rate", max_error_rate, 0, 1)
    starts = revision_starts(reference, seed=seed, num_tasks=num_tasks, max_reward=max_reward)
    _start_output(out_dir, "revision.json")
    episodes, results = _run_and_record(
        engine, env, starts, SamplingConfig(temperature=0.0, max_tokens=max_tokens, stop=REPLY_STOP),
        out_dir, REVISION_EPISODES_FILE,
        {"max_turns": max_turns, "cut_seed": seed, "max_reward": max_reward},
        max_turns=max_turns, max_concurrent=max_concurrent, success_threshold=success_threshold,
        progress=progress)
    _check_infrastructure(episodes, max_error_rate, {})
    episodes = [e for e in episodes if not is_infrastructure_error(e)]
    reward = RevisionReward()
    reward.update([e.reward for e in episodes])
    results["metrics"]["revision_reward"] = float(reward.compute()) if episodes else 0.0
    if out_dir is not None:
        write_json(Path(out_dir) / "revision.json", results, indent=2)
    return results
