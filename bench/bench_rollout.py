"""Agent-loop throughput: agentr's batched runner vs a one-request-at-a-time loop.

Both modes play the same TextCraft test tasks with the same engine (one vLLM engine, the CPU
build here), the same model (SmolLM2-135M-Instruct), greedy decoding and the same turn limit,
one after the other in one process, each from a cold prefix cache:

- **batched**: `agentr.agent.run_episodes` with every episode live at once: each turn, all live
  episodes go to the engine in ONE `generate` call.
- **sequential**: the same loop with `max_concurrent=1`: one episode at a time, one request per
  engine call (how a simple agent loop, e.g. the official evaluation code, drives a model).

Greedy decoding makes both modes play nearly the same trajectories (reported: batching changes
bf16 rounding, which can flip a greedy token), so the work is about the same; generated tokens/s
compares the two directly.

The batched run is profiled (`agentr.timing.Profile`: engine calls, history truncation,
environment steps, idle batch places) and its requests recorded; the bare engine then replays
those requests in calls of the run's largest batch, from a cold prefix cache, and the table
gives the run's generated tok/s (over its wall time) as a share of the bare engine's.

`--threads_probe 1 2` adds a table for vLLM-CPU's thread binding: for each OpenMP thread count
(`VLLMEngine(cpu_threads=k)`), a fresh engine generates once for all task headers in one batch
and once for each header alone.

    python bench/bench_rollout.py                    # 16 tasks x 10 turns, writes bench/results/rollout.md
    python bench/bench_rollout.py --tasks 4 --turns 3 --out -
    python bench/bench_rollout.py --threads_probe 1 2
"""

from __future__ import annotations

import argparse
import time

from report import header, load_average, machine, write_report

from agentr.agent import build_header, run_episodes
from agentr.engines import EngineConfig, SamplingConfig, make_engine
from agentr.engines.models import SMOLLM2_ID
from agentr.envs.textcraft import TextCraftEnv
from agentr.timing import Profile


def run_mode(engine, tasks, turns, sampling, max_concurrent):
    calls = []
    generate = engine.generate

    def recording(conversations, s):
        calls.append([list(c) for c in conversations])
        return generate(conversations, s)

    engine.reset_prefix_cache()
    engine.generate = recording
    tokens0 = engine.stats.generated_tokens
    profile = Profile()
    start = time.perf_counter()
    try:
        episodes = run_episodes(engine, TextCraftEnv, tasks, max_turns=turns, sampling=sampling,
                                max_concurrent=max_concurrent, profile=profile)
    finally:
        del engine.generate
    seconds = time.perf_counter() - start
    tokens = engine.stats.generated_tokens - tokens0
    return {
        "episodes": episodes,
        "seconds": seconds,
        "episodes_per_min": 60 * len(episodes) / seconds,
        "tokens": tokens,
        "tokens_per_s": tokens / seconds,
        "calls": len(calls),
        "requests": calls,
        "max_batch": max(map(len, calls)),
        "turns": sum(e.turns for e in episodes),
        "profile": profile,
        "load": load_average(),
    }


def bare_replay(engine, calls: list[list], batch: int | None, sampling) -> dict:
    """The recorded requests again, engine alone, in calls of `batch` conversations (None: one
    call for all), from a cold prefix cache."""
    conversations = [c for call in calls for c in call]
    batch = batch or len(conversations)
    engine.reset_prefix_cache()
    tokens0, start = engine.stats.generated_tokens, time.perf_counter()
    for k in range(0, len(conversations), batch):
        engine.generate(conversations[k:k + batch], sampling)
    seconds = time.perf_counter() - start
    tokens = engine.stats.generated_tokens - tokens0
    return {"seconds": seconds, "tokens": tokens, "tokens_per_s": tokens / seconds}


def threads_probe(model: str, tasks: list[str], threads: list[int], max_tokens: int,
                  kv_cache_gb: float) -> list[str]:
    """Markdown rows: generated tok/s of one batch of all headers, and of one header at a time."""
    from agentr.engines.vllm_engine import VLLMEngine

    env = TextCraftEnv()
    headers = [build_header(env.instruction, env.reset(t)) for t in tasks]
    sampling = SamplingConfig(temperature=0.0, max_tokens=max_tokens)
    rows = ["| OpenMP threads (binding) | batch of all headers, tok/s | one header at a time, tok/s |",
            "|---|---:|---:|"]
    for k in threads:
        engine = VLLMEngine(model, max_model_len=4096, kv_cache_gb=kv_cache_gb, cpu_threads=k)
        try:
            engine.generate(headers[:1], sampling)  # warm-up
            rates = []
            for batches in ([headers], [[h] for h in headers]):
                engine.reset_prefix_cache()
                tokens0, start = engine.stats.generated_tokens, time.perf_counter()
                for batch in batches:
                    engine.generate(batch, sampling)
                rates.append((engine.stats.generated_tokens - tokens0) / (time.perf_counter() - start))
        finally:
            engine.close()
        rows.append(f"| {k} ({engine.cpu_bind}) | {rates[0]:.1f} | {rates[1]:.1f} |")
        print(rows[-1], flush=True)
    return rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=SMOLLM2_ID)
    parser.add_argument("--engine", default="vllm", choices=["vllm", "hf"])
    parser.add_argument("--tasks", type=int, default=16, help="TextCraft test tasks")
    parser.add_argument("--turns", type=int, default=10, help="turn limit per episode")
    parser.add_argument("--max_tokens", type=int, default=48, help="tokens per reply")
    parser.add_argument("--kv_cache_gb", type=float, default=4)
    parser.add_argument("--cpu_threads", type=int, default=None,
                        help="CPU threads of generation (EngineConfig.cpu_threads; default: vLLM's auto binding)")
    parser.add_argument("--threads_probe", type=int, nargs="*", default=[],
                        help="also probe these vLLM-CPU thread counts")
    parser.add_argument("--out", default="bench/results/rollout.md", help="markdown file, or - for stdout only")
    args = parser.parse_args(argv)

    load_before = load_average()
    engine = make_engine(EngineConfig(kind=args.engine, max_model_len=4096, kv_cache_gb=args.kv_cache_gb,
                                      cpu_threads=args.cpu_threads), args.model)
    tasks = TextCraftEnv().task_ids("test")[: args.tasks]
    sampling = SamplingConfig(temperature=0.0, max_tokens=args.max_tokens)
    engine.generate([[{"role": "user", "content": "hi"}]], sampling)  # warm-up
    try:
        batched = run_mode(engine, tasks, args.turns, sampling, max_concurrent=len(tasks))
        bare = bare_replay(engine, batched["requests"], batched["max_batch"], sampling)
        one_call = bare_replay(engine, batched["requests"], None, sampling)
        sequential = run_mode(engine, tasks, args.turns, sampling, max_concurrent=1)
    finally:
        engine.close()
    probe = (threads_probe(args.model, tasks, args.threads_probe, args.max_tokens, args.kv_cache_gb)
             if args.threads_probe else [])
    same = sum(a.messages == b.messages for a, b in zip(batched["episodes"], sequential["episodes"]))
    successes = sum(e.success for e in batched["episodes"])

    rows = [("batched (agentr)", batched), ("one request at a time", sequential)]
    table = [
        "| mode | wall s | episodes/min | generated tok/s | generated tokens | engine calls | max batch | load avg after |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for name, r in rows:
        table.append(f"| {name} | {r['seconds']:.1f} | {r['episodes_per_min']:.2f} | "
                     f"{r['tokens_per_s']:.1f} | {r['tokens']} | {r['calls']} | {r['max_batch']} | {r['load']} |")
    table.append(f"| **ratio batched / sequential** | {sequential['seconds'] / batched['seconds']:.2f}x faster | "
                 f"{batched['episodes_per_min'] / sequential['episodes_per_min']:.2f}x | "
                 f"{batched['tokens_per_s'] / sequential['tokens_per_s']:.2f}x | | | | |")
    report = "\n".join([
        *header("Agent loop: batched vs one request at a time", "bench/bench_rollout.py", argv),
        f"Engine: {type(engine).__name__} ({args.engine}"
        f"{', OpenMP binding ' + engine.cpu_bind if getattr(engine, 'cpu_bind', None) else ''}), "
        f"model {args.model}, TextCraft test tasks "
        f"{tasks[0]}..{tasks[-1]} ({len(tasks)}), {args.turns} turns, greedy, max_tokens={args.max_tokens}; "
        f"{machine()}, "
        f"load average before/after: {load_before} / {load_average()}.",
        "",
        *table,
        "",
        f"Same trajectories in both modes: {same}/{len(tasks)} (greedy). Turns played: "
        f"{batched['turns']} / {sequential['turns']}. Successes: {successes}/{len(tasks)}.",
        "",
        "Generation against the bare engine on the batched run's requests (same prompts, calls of "
        f"{batched['max_batch']}, cold prefix cache): batched run {batched['tokens_per_s']:.1f} tok/s, "
        f"bare engine {bare['tokens_per_s']:.1f} tok/s: **{batched['tokens_per_s'] / bare['tokens_per_s']:.0%}**; "
        f"bare engine with all {sum(map(len, batched['requests']))} requests in one call: "
        f"{one_call['tokens_per_s']:.1f} tok/s ({batched['tokens_per_s'] / one_call['tokens_per_s']:.0%}).",
        "",
        f"Where the time went, batched (wall {batched['seconds']:.1f} s):",
        "",
        batched["profile"].table(batched["seconds"]),
        "",
        *(["## vLLM-CPU threads", "", f"max_tokens={args.max_tokens}, greedy, cold prefix cache.",
           "", *probe, ""] if probe else []),
    ])
    write_report(report, args.out)


if __name__ == "__main__":
    main()
