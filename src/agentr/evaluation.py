"""Evaluation: success rate, reward and loops on a split; the revision test; `agentr evaluate`.

`evaluate` plays one greedy episode per task with the batched agent loop (the headline
result) and, optionally, `episodes_per_task` sampled episodes per task (sampled evaluation: more
episodes, hence narrower intervals, where tasks are few). Greedy and sampled episodes step
together, in one batch (each at its own temperature, a sampled one with its own seed), so the
engine runs batches twice as large; their "timing" is then that of the run they shared. A
headline at temperature > 0 draws with the run's seed, not per episode, so it plays first, alone.
It writes, to `out_dir`:

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

Over the ranks of a multi-GPU run (`ranks`: every rank calls `evaluate` with the same arguments
and its own engine), the episodes are shared out as Phase I's tasks are: a rank with room claims
the next unplayed episodes (`agentr.ranks.Rendezvous.claim`), greedy ones first, plays them
with its own engine and writes them to its own file; rank 0 then merges them, in task order,
into the files one process writes. eval.json is the same as one process's (greedy episodes do
not depend on who plays them, sampled ones draw with their own seeds), but for "timing", which
then also holds "episodes_per_rank". The ranks wait on marker files in `out_dir/ranks/`, which
keeps only the markers once merged; a rank that raises stops the others, with its error, when
their next episode ends. A headline run at temperature > 0 draws with the run's seed and turn,
so its episodes depend on the batch, over ranks as in one process.

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

import json
import os
import random
import shutil
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from agentr.agent.conversation import HEADER_LEN
from agentr.agent.rollout import (
    EnvFactory,
    Episode,
    EpisodeStart,
    RolloutError,
    default_max_concurrent,
    run_episodes,
)
from agentr.agent.turn import REPLY_STOP
from agentr.engines.base import Engine, SamplingConfig
from agentr.engines.common import derive_seed
from agentr.envs.base import Environment
from agentr.errors import InfrastructureError, check_range
from agentr.jsonfiles import RecordAppender, read_records, write_json, write_records
from agentr.metrics import (
    episode_metrics,
    has_revision,
    interval_methods,
    loop_count,
    loop_lengths,
)
from agentr.provenance import describe_env, policy_provenance, task_digest
from agentr.ranks import RankFailed, Ranks, Rendezvous, shared_token


#: Error prefixes of episodes stopped by a failing environment (not by the agent): see
#: `agentr.agent.rollout`. They are reported apart and never scored as failures.
INFRASTRUCTURE_ERRORS = ("environment:", "reset:", "replay:")
#: The files of episodes (`Episode` records, one per line) `evaluate` and `revision_test` write.
EPISODES_FILE, SAMPLED_EPISODES_FILE = "episodes.jsonl", "sampled_episodes.jsonl"
REVISION_EPISODES_FILE = "revision_episodes.jsonl"
#: Where the ranks of a multi-GPU evaluation leave their markers (in `out_dir`).
RANKS_DIR = "ranks"


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


def _check_infrastructure(episodes: Sequence[Episode], max_error_rate: float, provenance: dict,
                          written: Sequence[Path] = ()) -> None:
    """Raise `InfrastructureError` when too many `episodes` ended in an environment error,
    after removing the episode files `written`: a failed run leaves no partial output."""
    failed = [e for e in episodes if is_infrastructure_error(e)]
    if episodes and len(failed) > max_error_rate * len(episodes):
        for path in written:
            path.unlink(missing_ok=True)
        raise InfrastructureError(
            f"{len(failed)} of {len(episodes)} episodes ended in an environment error, more than "
            f"max_error_rate={max_error_rate:g} of them, in environment "
            f"{describe_env(provenance.get('env'))}. No result was written: fix the environment "
            f"(is its server running?) and run again. First error: {failed[0].error}")


def _run_and_record(engine, env, starts, sampling: SamplingConfig, out_dir, files: Sequence[str],
                    file_of: Callable[[Episode], int] = lambda episode: 0,
                    **run_kwargs) -> tuple[list[Episode], dict]:
    """Run the episodes, appending each as it ends to `out_dir/files[file_of(episode)]`;
    return them with the timing of the run (`_timing`)."""
    writers = [RecordAppender(Path(out_dir) / f if out_dir is not None else None) for f in files]
    stats0 = (engine.stats.generated_tokens, engine.stats.prompt_tokens)
    start = time.perf_counter()
    try:
        episodes = run_episodes(engine, env, starts, sampling=sampling,
                                on_episode_end=lambda e: writers[file_of(e)].append(e.to_dict()),
                                **run_kwargs)
    finally:
        for writer in writers:
            writer.close()
    return episodes, _timing(time.perf_counter() - start, len(episodes),
                             engine.stats.generated_tokens - stats0[0],
                             engine.stats.prompt_tokens - stats0[1])


def _run_pools_together(engine, env, pools: list[_Pool], out_dir, run: dict
                        ) -> list[tuple[list[Episode], dict]]:
    """The greedy headline episodes and the sampled ones (`_pools`) in one run, stepping in
    one batch: each episode plays at its pool's temperature, sampled ones with their own
    seeds, so every episode is what it would be in its pool alone, and the engine's batches
    are twice as large. Per pool: its episodes, and the timing of the run they shared."""
    starts = [replace(start, temperature=pool.sampling.temperature)
              for pool in pools for start in pool.starts]
    episodes, timing = _run_and_record(
        engine, env, starts, pools[0].sampling, out_dir, [pool.file for pool in pools],
        file_of=lambda episode: int("sample" in episode.meta), **run)  # `_pools`' meta
    timing["shared_by"] = [Path(pool.file).stem for pool in pools]
    played, first = [], 0
    for pool in pools:
        played.append((episodes[first:first + len(pool.starts)], timing))
        first += len(pool.starts)
    return played


def _timing(seconds: float, episodes: int, generated_tokens: int, prompt_tokens: int) -> dict:
    return {"seconds": seconds,
            "episodes_per_minute": 60 * episodes / seconds if seconds else 0.0,
            "generated_tokens": generated_tokens,
            "prompt_tokens": prompt_tokens,
            "generated_tokens_per_s": generated_tokens / seconds if seconds else 0.0}


def _results(episodes: Sequence[Episode], timing: dict, engine: Engine, sampling: SamplingConfig,
             settings: dict) -> dict:
    """The results of `episodes`: metrics, counts, `timing`, settings, per-episode summaries."""
    scored = [e for e in episodes if not is_infrastructure_error(e)]
    return {
        "metrics": episode_metrics(scored),
        "interval_method": interval_methods(scored),
        "num_episodes": len(episodes),
        "num_tasks": len({e.task_id for e in episodes}),
        "num_errors": sum(e.error is not None for e in episodes),
        "num_infrastructure_errors": sum(is_infrastructure_error(e) for e in episodes),
        "timing": timing,
        "settings": {**settings, "temperature": sampling.temperature,
                     "max_tokens": sampling.max_tokens, "stop": list(sampling.stop),
                     "seed": sampling.seed, "adapter": getattr(engine, "adapter_path", None),
                     "engine": type(engine).__name__},
        "episodes": [{**_summary(e), **e.meta} for e in episodes],
    }


def _summary(episode: Episode) -> dict:
    return {"task_id": episode.task_id, "reward": episode.reward, "success": episode.success,
            "turns": episode.turns, "done": episode.done, "loop_count": loop_count(episode.actions),
            "loop_lengths": {str(n): c for n, c in loop_lengths(episode.actions).items()},
            "revision": has_revision(episode), "error": episode.error}


def sample_seed(seed: int, task_id: str, sample: int) -> int:
    """The seed of sampled episode `sample` of task `task_id` in an evaluation seeded `seed`."""
    return derive_seed(seed, task_id, sample)


@dataclass(frozen=True)
class _Pool:
    """Episodes played alike: their starts, how their replies are drawn, the file they go to."""

    starts: list[EpisodeStart]
    sampling: SamplingConfig
    file: str


def _pools(task_ids: list[str], sampling: SamplingConfig, episodes_per_task: int,
           sample_temperature: float) -> list[_Pool]:
    """The greedy episodes (one per task), then the sampled ones (`episodes_per_task` per task,
    their meta saying which sample of their task they are, and its seed)."""
    pools = [_Pool([EpisodeStart(t) for t in task_ids], sampling, EPISODES_FILE)]
    if episodes_per_task:
        seeds = {(t, j): sample_seed(sampling.seed, t, j) for t in task_ids for j in range(episodes_per_task)}
        starts = [EpisodeStart(t, seed=s, meta={"sample": j, "seed": s}) for (t, j), s in seeds.items()]
        pools.append(_Pool(starts, replace(sampling, temperature=sample_temperature), SAMPLED_EPISODES_FILE))
    return pools


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
    ranks: Ranks | None = None,
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
        episodes_per_task: sampled episodes per task played beside the headline ones, at
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
        ranks: the ranks of a multi-GPU run, each calling `evaluate` with the same arguments but
            its own engine; they share the episodes out (see the module docstring) in `out_dir`,
            on a filesystem all of them mount, and every rank returns the merged results.
            None or one rank: this process plays every episode.

    Returns:
        The contents of eval.json (see the module docstring).

    Raises:
        ValueError: `episodes_per_task` < 0, or sampled episodes at a temperature <= 0.
        agentr.agent.RolloutError: the engine failed; finished episodes are in the JSONL file.
        agentr.errors.InfrastructureError: more than `max_error_rate` of the episodes ended in an
            environment error; `eval.json` is not written.
        agentr.ranks.RankFailed: over ranks, another rank raised (its error is the message).
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
    settings = {"max_turns": max_turns, "success_threshold": success_threshold}
    run = dict(max_turns=max_turns, max_concurrent=max_concurrent,
               success_threshold=success_threshold, progress=progress)
    pools = _pools(task_ids, sampling, episodes_per_task, sample_temperature)

    def score(pool: _Pool, episodes: list[Episode], timing: dict) -> dict:
        """A pool's results; raises when too many of its episodes ended in an environment error."""
        written = [Path(out_dir) / p.file for p in pools] if out_dir is not None else []
        _check_infrastructure(episodes, max_error_rate, provenance, written)
        return _results(episodes, timing, engine, pool.sampling, settings)

    def finish(parts: list[dict]) -> dict:
        """eval.json, from the results of each pool."""
        results = parts[0]
        if episodes_per_task:
            results["sampled"] = {"episodes_per_task": episodes_per_task, **parts[1]}
        results["fingerprint"] = evaluation_fingerprint(
            provenance, task_ids, max_turns=max_turns, temperature=temperature, max_tokens=max_tokens,
            stop=stop, seed=seed, success_threshold=success_threshold,
            episodes_per_task=episodes_per_task, sample_temperature=sample_temperature)
        if out_dir is not None:
            write_json(Path(out_dir) / "eval.json", results, indent=2)
        return results

    if ranks is not None and ranks.world > 1:
        if out_dir is None:
            raise ValueError("evaluating over ranks needs an out_dir that every rank shares")
        return _evaluate_over_ranks(engine, env, pools, run, ranks, Path(out_dir),
                                    lambda played: finish([score(p, *x) for p, x in zip(pools, played)]))
    _start_output(out_dir, "eval.json")
    if len(pools) > 1 and temperature == 0:  # see the module docstring
        return finish([score(pool, *played) for pool, played in
                       zip(pools, _run_pools_together(engine, env, pools, out_dir, run))])
    # each pool is scored before the next one plays: a dead environment fails the run at once
    return finish([score(pool, *_run_and_record(engine, env, pool.starts, pool.sampling, out_dir,
                                                [pool.file], **run))
                   for pool in pools])


def _evaluate_over_ranks(engine: Engine, env: Environment | EnvFactory, pools: list[_Pool], run: dict,
                         ranks: Ranks, out_dir: Path,
                         report: Callable[[list[tuple[list[Episode], dict]]], dict]) -> dict:
    """`evaluate`'s episodes shared out over `ranks` (see the module docstring): rank 0 merges
    them and `report`s every pool's (episodes, timing), which writes eval.json; every rank
    returns eval.json."""
    token = shared_token(ranks, out_dir)
    scratch = out_dir / RANKS_DIR
    claims = scratch / f"{token}.claims"

    def prepare() -> None:  # every rank is past earlier attempts: their files can go
        shutil.rmtree(scratch, ignore_errors=True)
        for name in ("eval.json", *(pool.file for pool in pools)):
            (out_dir / name).unlink(missing_ok=True)
        claims.mkdir(parents=True)

    prepared = Rendezvous(scratch, f"{token}-prepare", ranks)
    if ranks.is_main:
        prepared.run(prepare)
    prepared.wait([0])
    played = Rendezvous(scratch, f"{token}-play", ranks)
    run = {**run, "progress": run["progress"] and ranks.is_main}
    played.run(lambda: [_play_share(engine, env, pool, run, played, claims,
                                    _rank_file(scratch, token, ranks.rank, pool))
                        for pool in pools],
               result=lambda shares: shares)  # the done marker holds this rank's share of each pool
    shares = played.wait()  # per rank, per pool
    merged = Rendezvous(scratch, f"{token}-merge", ranks)

    def merge() -> None:
        per_pool = [_merge_pool(pool, [_rank_file(scratch, token, k, pool) for k in range(ranks.world)],
                                out_dir) for pool in pools]
        shutil.rmtree(claims)  # the per-rank files went in `_merge_pool`; the markers stay
        report([(episodes, _timing_over_ranks([share[p] for share in shares]))
                for p, episodes in enumerate(per_pool)])

    if ranks.is_main:
        merged.run(merge)
    merged.wait([0])
    return json.loads((out_dir / "eval.json").read_text(encoding="utf-8"))


def _rank_file(scratch: Path, token: str, rank: int, pool: _Pool) -> Path:
    """Where `rank` writes the episodes of `pool` it plays, before rank 0 merges them."""
    return scratch / f"{token}.rank{rank}.{pool.file}"


def _play_share(engine: Engine, env: Environment | EnvFactory, pool: _Pool, run: dict,
                rendezvous: Rendezvous, claims: Path, path: Path) -> dict:
    """Play the episodes of `pool` this rank claims, a batch at a time, writing each to `path`
    as {"index": its start's, "episode": ...}; return this rank's share: how many it played,
    the tokens, and the wall-clock times it began and ended (comparable across ranks)."""
    name = Path(pool.file).stem
    todo = deque(range(len(pool.starts)))
    size = _batch_size(engine, run["max_concurrent"], len(pool.starts), rendezvous.ranks.world)
    writer = RecordAppender(path)
    stats0 = (engine.stats.generated_tokens, engine.stats.prompt_tokens)
    began, count = time.time(), 0
    try:
        while batch := _claim_batch(todo, lambda i: rendezvous.claim(claims, f"{name}.{i}"), size):
            episodes = _run_claimed(engine, env, [pool.starts[i] for i in batch], pool.sampling,
                                    rendezvous.check, run)
            for index, episode in zip(batch, episodes):
                writer.append({"index": index, "episode": episode.to_dict()})
            count += len(batch)
    finally:
        writer.close()
    return {"episodes": count, "began": began, "ended": time.time(),
            "generated_tokens": engine.stats.generated_tokens - stats0[0],
            "prompt_tokens": engine.stats.prompt_tokens - stats0[1]}


def _batch_size(engine: Engine, max_concurrent: int | None, episodes: int, world: int) -> int:
    """Episodes a rank claims at once: as many as it plays together, but at most its even share,
    so that the first rank to claim does not take them all when they are few."""
    share = max(1, -(-episodes // world))
    return min(max_concurrent, share) if max_concurrent else default_max_concurrent(engine, share)


def _claim_batch(todo: deque, claim: Callable[[int], bool], size: int) -> list[int]:
    """The next (at most) `size` indices of `todo` that `claim` gives this rank; the others
    are another rank's."""
    batch = []
    while todo and len(batch) < size:
        index = todo.popleft()
        if claim(index):
            batch.append(index)
    return batch


def _run_claimed(engine: Engine, env: Environment | EnvFactory, starts: list[EpisodeStart],
                 sampling: SamplingConfig, check: Callable[[], None], run: dict) -> list[Episode]:
    """`run_episodes`, calling `check` as each episode ends: its `RankFailed` (another rank's
    error) stops the batch and is raised as such, not as this rank's `RolloutError`."""
    try:
        return run_episodes(engine, env, starts, sampling=sampling, on_episode_end=lambda _: check(),
                            **run)
    except RolloutError as error:
        if isinstance(error.__cause__, RankFailed):
            raise error.__cause__ from None
        raise


def _merge_pool(pool: _Pool, paths: list[Path], out_dir: Path) -> list[Episode]:
    """The episodes of `pool` from every rank's file (`paths`, removed), in start order,
    written to `out_dir/pool.file`."""
    played = {record["index"]: Episode.from_dict(record["episode"])
              for path in paths for _, record in read_records(path)}
    missing = [i for i in range(len(pool.starts)) if i not in played]
    if missing:
        raise RuntimeError(f"{len(missing)} episodes of {pool.file} were claimed but not recorded "
                           f"(starts {missing[:10]}) in {paths[0].parent}")
    episodes = [played[i] for i in range(len(pool.starts))]
    write_records(out_dir / pool.file, (e.to_dict() for e in episodes))
    for path in paths:
        path.unlink()
    return episodes


def _timing_over_ranks(shares: list[dict]) -> dict:
    """A pool's timing from every rank's share: from the first start to the last end of the
    ranks that played some of it, tokens summed; and the episodes each rank played."""
    active = [s for s in shares if s["episodes"]] or shares
    seconds = max(s["ended"] for s in active) - min(s["began"] for s in active)
    return {**_timing(seconds, sum(s["episodes"] for s in shares),
                      sum(s["generated_tokens"] for s in shares), sum(s["prompt_tokens"] for s in shares)),
            "episodes_per_rank": [s["episodes"] for s in shares]}


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
    provenance: dict | None = None,
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
        provenance: as in `evaluate`; recorded in the results' "fingerprint" with a digest of
            the reference episodes and the settings.

    Returns:
        {"metrics": {revision_reward, success_rate, loop_count, ...}, ...}; written to
        `out_dir/revision.json`, the episodes to `out_dir/revision_episodes.jsonl`.
    """
    if isinstance(reference, (str, os.PathLike)):
        reference = read_episodes(reference)
    check_range("max_error_rate", max_error_rate, 0, 1)
    starts = revision_starts(reference, seed=seed, num_tasks=num_tasks, max_reward=max_reward)
    _start_output(out_dir, "revision.json")
    sampling = SamplingConfig(temperature=0.0, max_tokens=max_tokens, stop=REPLY_STOP)
    episodes, timing = _run_and_record(
        engine, env, starts, sampling, out_dir, [REVISION_EPISODES_FILE], max_turns=max_turns,
        max_concurrent=max_concurrent, success_threshold=success_threshold, progress=progress)
    settings = {"max_turns": max_turns, "cut_seed": seed, "max_reward": max_reward}
    results = _results(episodes, timing, engine, sampling, settings)
    _check_infrastructure(episodes, max_error_rate, {},
                          [Path(out_dir) / REVISION_EPISODES_FILE] if out_dir is not None else [])
    episodes = [e for e in episodes if not is_infrastructure_error(e)]
    results["metrics"]["revision_reward"] = (sum(e.reward for e in episodes) / len(episodes)
                                             if episodes else 0.0)
    results["fingerprint"] = {
        **(provenance if provenance is not None else policy_provenance(engine)),
        "reference": task_digest([f"{e.task_id}\0{e.reward}\0{e.turns}" for e in reference]),
        "settings": {**settings, "max_tokens": max_tokens, "success_threshold": success_threshold,
                     "num_tasks": num_tasks}}
    if out_dir is not None:
        write_json(Path(out_dir) / "revision.json", results, indent=2)
    return results
