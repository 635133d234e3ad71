"""The batched agent loop: many episodes at once, one engine call per turn for all of them.

Every live episode of a batch steps together: the engine gets one batch of conversations per
turn (so vLLM schedules them together and shares their prefixes), then each reply is parsed and
its action sent to that episode's environment. Finished episodes make room for waiting ones, up
to `max_concurrent` live episodes, which bounds the KV cache the batch needs.

Each reply is played by the rules of one turn (`agentr.agent.turn`: the reply rule, what
reaches the environment, the revision action, failure), the same as in search and training data.
The conversation starts with `build_header(env.instruction, first_observation)`.

- Before each turn the history is truncated with `truncate_history` to the engine's
  `max_model_len` minus the reply budget (`max_tokens`): the oldest turns after the header go
  first. The episode keeps its full, untruncated conversation.
- An episode ends when the environment says done, or after `max_turns` turns of this run.

Episodes can also start from a conversation prefix (the revision test continues a failed
trajectory from a cut point): the environment is reset and the prefix's actions are replayed.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace

from agentr.agent.conversation import HEADER_LEN, build_header, truncate_history
from agentr.agent.turn import REVISION_ACTION, play, read_reply
from agentr.engines.base import Engine, SamplingConfig
from agentr.engines.common import request_seed
from agentr.envs.base import Environment
from agentr.timing import NO_PROFILE, Profile

log = logging.getLogger(__name__)

#: Live episodes at once when neither the caller nor the engine's KV-cache size says otherwise.
DEFAULT_MAX_CONCURRENT = 32

EnvFactory = Callable[[], Environment]


@dataclass
class Episode:
    """One played episode.

    Attributes:
        task_id: the environment's task.
        messages: the whole conversation, header included, never truncated; the replies as
            stored by the reply rule.
        actions: one per turn: the command sent (or the revision action, answered by the loop).
        rewards: one per turn: the environment's reward after it (negative clamped to 0).
        reward: the final reward (the last turn's; 0 without turns).
        success: `reward >= success_threshold`.
        turns: assistant turns, the replayed prefix included.
        start_turn: turns replayed from a given prefix (0 for a fresh episode).
        done: the environment ended the episode (otherwise: turn limit, or an error).
        error: why the episode stopped abnormally (None when it finished normally).
        env: the environment's name.
        revision_action: the environment's revision action (its revision turns' action).
        meta: anything the caller attached (e.g. the revision test's cut point).
    """

    task_id: str
    messages: list[dict] = field(default_factory=list)
    actions: list[str] = field(default_factory=list)
    rewards: list[float] = field(default_factory=list)
    reward: float = 0.0
    success: bool = False
    turns: int = 0
    start_turn: int = 0
    done: bool = False
    error: str | None = None
    env: str = ""
    revision_action: str = REVISION_ACTION
    meta: dict = field(default_factory=dict)

    @property
    def finished(self) -> bool:
        """It ran to its end (environment done or turn limit), without an error."""
        return self.error is None

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Episode:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


@dataclass
class EpisodeStart:
    """An episode to run: a task, optionally continued from a conversation prefix.

    `prefix` is a conversation (header included) whose assistant turns are replayed in the
    environment; the episode continues after its last assistant turn. `seed` seeds this
    episode's sampling alone: its turn k draws with `request_seed(seed, k)`, whichever
    episodes share the batch (either every start of a run that samples has a seed or none).
    `temperature` replaces the run's for this episode (0: greedy), so that greedy and sampled
    episodes step together, in one batch.
    """

    task_id: str
    prefix: list[dict] | None = None
    meta: dict = field(default_factory=dict)
    seed: int | None = None
    temperature: float | None = None


class RolloutError(RuntimeError):
    """The run stopped (e.g. the engine died). `finished` holds the episodes that had ended,
    `unfinished` those still running (marked with the error)."""

    def __init__(self, message: str, finished: list[Episode], unfinished: list[Episode]):
        super().__init__(message)
        self.finished = finished
        self.unfinished = unfinished


@dataclass
class _Live:
    index: int
    episode: Episode
    env: Environment
    seed: int | None = None
    new_turns: int = 0
    #: Turns already dropped from the front of the history to fit the context (they stay dropped).
    dropped: int = 0

    def prompt(self, count_tokens, limit: int) -> list[dict]:
        """The conversation truncated to `limit` tokens (`truncate_history`'s rule). It resumes
        from the turns dropped last time, so a long episode costs one count per turn, not one
        per dropped turn."""
        messages = self.episode.messages
        kept = messages[:HEADER_LEN] + messages[HEADER_LEN + 2 * self.dropped:]
        prompt = truncate_history(kept, count_tokens, limit)
        self.dropped += (len(kept) - len(prompt)) // 2
        return prompt


class _EnvPool:
    """Environments for the live episodes, reused across episodes and closed at the end."""

    def __init__(self, env: Environment | EnvFactory):
        if isinstance(env, Environment):
            self._make = env.spawn
        elif callable(env):
            self._make = env
        else:
            raise TypeError(f"expected an Environment or a factory of them, got {type(env).__name__}")
        self._idle: list[Environment] = []
        self._all: list[Environment] = []

    def take(self) -> Environment:
        if self._idle:
            return self._idle.pop()
        try:
            env = self._make()
        except NotImplementedError as e:
            raise TypeError(
                "running episodes concurrently needs one environment per episode: pass a "
                "factory (e.g. `lambda: MyEnv(...)`) or an environment that implements spawn()"
            ) from e
        self._all.append(env)
        return env

    def give(self, env: Environment, reusable: bool = True) -> None:
        if reusable:
            self._idle.append(env)
        else:
            self._all.remove(env)
            _close_quietly(env)

    def close(self) -> None:
        for env in self._all:
            _close_quietly(env)
        self._all, self._idle = [], []


def _close_quietly(env: Environment) -> None:
    try:
        env.close()
    except Exception as error:  # closing must not hide the run's own outcome
        log.warning("closing %s failed: %s", type(env).__name__, error)


def default_max_concurrent(engine: Engine, num_episodes: int) -> int:
    """Live episodes the engine's KV cache holds even if every one reaches `max_model_len`.

    Engines that do not report their KV-cache size (the HF engine) get `DEFAULT_MAX_CONCURRENT`.
    """
    kv_tokens = getattr(engine, "kv_cache_tokens", None)
    bound = DEFAULT_MAX_CONCURRENT if not kv_tokens else max(1, kv_tokens // engine.max_model_len)
    return max(1, min(bound, num_episodes))


def run_episodes(
    engine: Engine,
    env: Environment | EnvFactory,
    tasks: Sequence[str | EpisodeStart],
    *,
    max_turns: int = 100,
    sampling: SamplingConfig | None = None,
    max_concurrent: int | None = None,
    success_threshold: float = 1.0,
    on_episode_end: Callable[[Episode], None] | None = None,
    progress: bool = False,
    profile: Profile | None = None,
) -> list[Episode]:
    """Play one episode per task, all live episodes stepping together.

    Args:
        engine: generates the replies; one `generate` call per turn for all live episodes.
        env: a factory of environments, or an environment whose `spawn()` makes more (one per
            live episode; they are reused across episodes and closed at the end).
        tasks: task ids, or `EpisodeStart`s (task id + conversation prefix to continue).
        max_turns: turns generated per episode in this run (a replayed prefix does not count).
        sampling: how replies are drawn (default: greedy, 128 tokens). `n` must be 1. With a
            seed, turn k of the run draws with seed `seed + k`; starts with their own seeds
            override it (see `EpisodeStart`).
        max_concurrent: live episodes at most (default: `default_max_concurrent`).
        success_threshold: final reward at which an episode counts as a success.
        on_episode_end: called with each episode as it ends (e.g. to write it to disk).
        progress: show a progress bar over episodes.
        profile: filled with the seconds of "prompts" (truncating histories), "engine.generate",
            "env.step", "env.reset" (starts and prefix replays), and the counters "turns",
            "requests", "idle_slot_seconds" (free places of `max_concurrent` times each call's
            seconds) and the engine's "engine.prompt_tokens", "engine.cached_prompt_tokens",
            "engine.generated_tokens", "engine.render_seconds".

    Returns:
        The episodes, in the order of `tasks`.

    Raises:
        RolloutError: the engine failed; the episodes that had ended are in `.finished` (and
            were passed to `on_episode_end`).
    """
    sampling = sampling or SamplingConfig(temperature=0.0, max_tokens=128)
    if sampling.n != 1:
        raise ValueError(f"an agent plays one reply per turn; got SamplingConfig(n={sampling.n})")
    if max_turns < 1:
        raise ValueError(f"max_turns must be >= 1, got {max_turns}")
    prompt_limit = engine.max_model_len - sampling.max_tokens
    if prompt_limit <= 0:
        raise ValueError(
            f"max_tokens={sampling.max_tokens} leaves no room for a prompt in "
            f"max_model_len={engine.max_model_len}")
    starts = [t if isinstance(t, EpisodeStart) else EpisodeStart(str(t)) for t in tasks]
    temperatures = [sampling.temperature if s.temperature is None else s.temperature for s in starts]
    episode_seeds = {s.seed is not None for s, t in zip(starts, temperatures) if t > 0}
    if len(episode_seeds) > 1:
        raise ValueError("either every EpisodeStart of a run that samples has a seed or none has")
    own_temperatures = any(s.temperature is not None for s in starts)
    max_concurrent = max_concurrent or default_max_concurrent(engine, len(starts))
    prof = profile or NO_PROFILE
    stats0 = replace(engine.stats)
    pending = deque(enumerate(starts))
    live: list[_Live] = []
    results: dict[int, Episode] = {}
    pool = _EnvPool(env)
    bar = _progress_bar(len(starts)) if progress else None

    def finish(item: _Live, error: str | None = None) -> None:
        episode = item.episode
        episode.error = error
        episode.reward = max(0.0, episode.rewards[-1]) if episode.rewards else 0.0
        episode.success = episode.reward >= success_threshold
        results[item.index] = episode
        pool.give(item.env, reusable=error is None or error.startswith("context"))
        if on_episode_end is not None:
            on_episode_end(episode)
        if bar is not None:
            bar.update(1)

    step = 0
    try:
        while pending or live:
            while pending and len(live) < max_concurrent:
                index, start = pending.popleft()
                with prof.phase("env.reset"):
                    item = _start(index, start, pool.take())
                if item.episode.done or item.episode.error:
                    finish(item, item.episode.error)
                else:
                    live.append(item)
            prompts, batch = [], []
            with prof.phase("prompts"):
                for item in live:
                    try:
                        prompts.append(item.prompt(engine.count_tokens, prompt_limit))
                        batch.append(item)
                    except ValueError as error:
                        finish(item, f"context: {error}")
            live = batch
            if not live:
                continue
            if episode_seeds == {True}:  # a greedy episode's seed draws nothing
                turn_sampling = replace(sampling, request_seeds=tuple(
                    0 if item.seed is None else request_seed(item.seed, item.new_turns) for item in live))
            elif sampling.seed is not None:
                turn_sampling = replace(sampling, seed=sampling.seed + step)
            else:
                turn_sampling = sampling
            if own_temperatures:
                turn_sampling = replace(turn_sampling, request_temperatures=tuple(
                    temperatures[item.index] for item in live))
            with prof.phase("engine.generate"):
                generated_at = time.perf_counter()
                generations = engine.generate(prompts, turn_sampling)
            prof.count("requests", len(prompts))
            prof.count("idle_slot_seconds",
                       (max_concurrent - len(prompts)) * (time.perf_counter() - generated_at))
            step += 1
            still_live = []
            for item, samples in zip(live, generations):
                with prof.phase("env.step"):
                    error = _play_turn(item, samples[0].text, samples[0].finish_reason)
                prof.count("turns")
                if error is not None or item.episode.done or item.new_turns >= max_turns:
                    finish(item, error)
                else:
                    still_live.append(item)
            live = still_live
    except Exception as error:
        unfinished = []
        for item in live:
            item.episode.error = f"run stopped: {type(error).__name__}: {error}"
            unfinished.append(item.episode)
        finished = [results[i] for i in sorted(results)]
        raise RolloutError(
            f"the rollout stopped after {len(finished)} of {len(starts)} episodes "
            f"({type(error).__name__}: {error}); the finished episodes are kept",
            finished, unfinished) from error
    finally:
        pool.close()
        if bar is not None:
            bar.close()
        for name in ("prompt_tokens", "cached_prompt_tokens", "generated_tokens", "render_seconds"):
            prof.count(f"engine.{name}", getattr(engine.stats, name) - getattr(stats0, name))
    return [results[i] for i in range(len(starts))]


def _start(index: int, start: EpisodeStart, env: Environment) -> _Live:
    """Reset `env` for the task and replay the prefix's turns, if any."""
    episode = Episode(task_id=start.task_id, env=getattr(env, "name", ""), meta=dict(start.meta))
    item = _Live(index, episode, env, seed=start.seed)
    try:
        observation = env.reset(start.task_id)
    except Exception as error:
        episode.error = f"reset: {type(error).__name__}: {error}"
        return item
    episode.revision_action = env.revision_action
    if not start.prefix:
        episode.messages = build_header(env.instruction, observation)
        return item
    prefix = [dict(m) for m in start.prefix]
    if len(prefix) < HEADER_LEN:
        episode.error = f"prefix has {len(prefix)} messages, fewer than the {HEADER_LEN}-message header"
        return item
    episode.messages = prefix[:HEADER_LEN]
    for i in range(HEADER_LEN, len(prefix)):
        if prefix[i].get("role") != "assistant":
            continue  # observations are re-created by the environment
        error = _play_turn(item, prefix[i]["content"], replayed=True)
        if error is not None:
            episode.error = f"replay: {error}"
            return item
        stored = prefix[i + 1]["content"] if i + 1 < len(prefix) else None
        if stored is not None and stored != episode.messages[-1]["content"]:
            log.warning("task %s: replayed observation differs from the prefix's at turn %d",
                        start.task_id, episode.turns)
        if episode.done:
            break
    episode.start_turn = episode.turns
    return item


def _play_turn(item: _Live, text: str, finish_reason: str = "stop",
               replayed: bool = False) -> str | None:
    """Play one sampled reply in the episode; return an error text if the env failed."""
    episode = item.episode
    try:
        turn = play(item.env, read_reply(text, finish_reason),
                    episode.rewards[-1] if episode.rewards else 0.0)
    except Exception as error:
        return f"environment: {type(error).__name__}: {error}"
    episode.messages.extend(turn.messages())
    episode.actions.append(turn.action)
    episode.rewards.append(turn.reward)
    episode.turns += 1
    episode.done = turn.done
    if not replayed:
        item.new_turns += 1
    return None


def _progress_bar(total: int):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="episodes", unit="ep")
