"""Phase I search throughput: agentr's batched search vs the official algorithm's schedule.

Both searches run the same MCTS (same `SearchTree` logic, `SearchConfig`, engine, model and
TextCraft tasks) in one process, one after the other:

- **agentr**: `agentr.search.collect.collect` with every task in flight at once: each round, the
  pending expansion of every tree goes out in ONE `engine.generate` call with n = n_expand; a
  child's environment is a cheap clone of its parent's (the last child takes the parent's own).
- **official schedule** (bytedance/Agent-R `mcts_raw.py`/`mcts_tc.py`): one tree at a time; each
  of the n_expand samples of an expansion is its own request (n = 1); before every sample the
  environment is reset and all actions of the path replayed (O(depth^2) env steps per path).

`transition: end` (Direct-Revision) is used so that neither side runs the verifier: this
measures search.
Trees differ between the two runs (sampling), so the table also reports work done (expansions,
samples, generated tokens) next to the rates.

    python bench/bench_search.py                       # vLLM (CPU build here), SmolLM2-135M
    python bench/bench_search.py --engine hf --tasks 4 --out bench/results/search.md
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from dataclasses import replace

from agentr.engines import make_engine
from agentr.engines.base import SamplingConfig
from agentr.engines.models import SMOLLM2_ID
from agentr.envs.textcraft import TextCraftEnv
from agentr.search.collect import collect, fit_conversation, task_seed
from agentr.search.config import SearchConfig
from agentr.search.mcts import SearchTree


class ReplayTree(SearchTree):
    """`SearchTree` with the official environment handling: every sample steps an environment
    that was reset and had the whole path replayed (no clones, no reuse of the parent's)."""

    def __init__(self, make_env, *args, **kwargs):
        self._make_env = make_env
        super().__init__(*args, **kwargs)

    def _clone(self, env):
        fresh = self._make_env()
        fresh.reset(self.task_id)
        for action in env.actions:
            fresh.step(action)
        self.counters.replay_steps += len(env.actions) + 1  # + the reset
        return fresh

    def expand(self, node, generations):
        # the official code re-creates the state for every sample, the last one included
        node.env = self._clone(node.env)
        return super().expand(node, generations)


def cpu_seconds() -> float | None:
    """CPU time (user + system) of this process and its children (vLLM's engine processes), or
    None without psutil. Unlike wall time it barely moves when other jobs share the machine."""
    try:
        import psutil
    except ImportError:
        return None
    me = psutil.Process()
    total = 0.0
    for process in [me, *me.children(recursive=True)]:
        try:
            times = process.cpu_times()
        except psutil.Error:
            continue
        total += times.user + times.system
    return total


def official_search(engine, make_env, task_ids, config: SearchConfig, seed: int) -> dict:
    """The sequential schedule; returns counters like `collect`'s stats."""
    sampling = SamplingConfig(n=1, temperature=config.temperature, max_tokens=config.max_tokens)
    limit = engine.max_model_len - config.max_tokens
    totals = dict(trees=0, expansions=0, samples=0, env_steps=0, replay_steps=0, tokens=0, requests=0)
    for task_id in task_ids:
        tree = ReplayTree(make_env, make_env(), task_id, config, random.Random(task_seed(seed, task_id)))
        while (node := tree.pending()) is not None:
            prompt = fit_conversation(engine, tree.conversation(node), limit)
            generations = []
            for i in range(config.n_expand):  # one request per sample
                s = replace(sampling, seed=(seed + totals["requests"]) % (2**31 - 1))
                generations.append(engine.generate([prompt], s)[0][0])
                totals["requests"] += 1
            tree.expand(node, generations)
        c = tree.counters
        totals["trees"] += 1
        for key, value in (("expansions", c.expansions), ("samples", c.samples), ("env_steps", c.env_steps),
                           ("replay_steps", c.replay_steps), ("tokens", c.tokens)):
            totals[key] += value
    return totals


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=SMOLLM2_ID)
    parser.add_argument("--adapter", default=None)
    parser.add_argument("--engine", default="auto", choices=["auto", "vllm", "hf"])
    parser.add_argument("--tasks", type=int, default=8, help="TextCraft train tasks (depth-1 goals)")
    parser.add_argument("--num_simulations", type=int, default=2)
    parser.add_argument("--n_expand", type=int, default=4)
    parser.add_argument("--max_depth", type=int, default=4)
    parser.add_argument("--max_tokens", type=int, default=32)
    parser.add_argument("--max_model_len", type=int, default=2048)
    parser.add_argument("--kv_cache_gb", type=float, default=None, help="vLLM KV cache (GB)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="write the markdown table here")
    args = parser.parse_args(argv)

    env_options = dict(min_depth=1, max_depth=1)
    make_env = lambda: TextCraftEnv(**env_options)  # noqa: E731
    task_ids = make_env().task_ids("train")[: args.tasks]
    config = SearchConfig(num_simulations=args.num_simulations, n_expand=args.n_expand,
                          max_depth=args.max_depth, max_tokens=args.max_tokens, transition="end",
                          max_concurrent_trees=max(1, len(task_ids)))
    engine_options = {"kv_cache_gb": args.kv_cache_gb} if args.kv_cache_gb else {}
    t0 = time.perf_counter()
    engine = make_engine(args.engine, args.model, max_model_len=args.max_model_len, seed=args.seed,
                         **engine_options)
    if args.adapter:
        engine.load_adapter(args.adapter)
    load_s = time.perf_counter() - t0
    engine_name = type(engine).__name__
    # warm-up (compilation, caches) outside both measurements
    engine.generate([[{"role": "user", "content": "Hello"}]], SamplingConfig(n=2, temperature=1.0, max_tokens=8))

    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        start, cpu = time.perf_counter(), cpu_seconds()
        result = collect(engine, make_env, task_ids, config, tmp, seed=args.seed, progress=False)
        wall = time.perf_counter() - start
        cpu = cpu_seconds() - cpu if cpu is not None else float("nan")
        s = result.stats
        rows["agentr (batched)"] = dict(
            wall=wall, cpu=cpu, trees=s["trees_searched"], expansions=s["expansions"], requests=sum(s["engine_calls"].values()),
            samples=s["expansions"] * config.n_expand, tokens=s["search_tokens"], env_steps=s["env_steps"],
            replay_steps=s["replay_steps"])
    start, cpu = time.perf_counter(), cpu_seconds()
    o = official_search(engine, make_env, task_ids, config, args.seed)
    wall = time.perf_counter() - start
    cpu = cpu_seconds() - cpu if cpu is not None else float("nan")
    rows["official schedule"] = dict(
        wall=wall, cpu=cpu, trees=o["trees"], expansions=o["expansions"], requests=o["requests"], samples=o["samples"],
        tokens=o["tokens"], env_steps=o["env_steps"], replay_steps=o["replay_steps"])
    engine.close()

    for r in rows.values():
        r["trees_per_min"] = 60 * r["trees"] / r["wall"]
        r["env_steps_per_s"] = r["env_steps"] / r["wall"]
        r["samples_per_s"] = r["samples"] / r["wall"]
        r["tokens_per_s"] = r["tokens"] / r["wall"]
        r["trees_per_cpu_min"] = 60 * r["trees"] / r["cpu"]
    a, b = rows["agentr (batched)"], rows["official schedule"]
    header = ("| schedule | wall s | trees | trees/min | env steps/s | expansions | engine calls | samples/s "
              "| gen tokens/s | env steps (+replayed) | CPU s | trees/CPU-min |")
    lines = [header, "|" + "---|" * 12]
    for name, r in rows.items():
        lines.append(f"| {name} | {r['wall']:.1f} | {r['trees']} | {r['trees_per_min']:.2f} | "
                     f"{r['env_steps_per_s']:.2f} | {r['expansions']} | {r['requests']} | "
                     f"{r['samples_per_s']:.2f} | {r['tokens_per_s']:.1f} | {r['env_steps']} (+{r['replay_steps']}) | "
                     f"{r['cpu']:.0f} | {r['trees_per_cpu_min']:.2f} |")
    ratios = {k: a[k] / b[k] if b[k] else float("nan")
              for k in ("trees_per_min", "env_steps_per_s", "samples_per_s", "tokens_per_s", "trees_per_cpu_min")}
    lines.append(f"| **ratio** | | | **{ratios['trees_per_min']:.1f}x** | **{ratios['env_steps_per_s']:.1f}x** "
                 f"| | | {ratios['samples_per_s']:.1f}x | {ratios['tokens_per_s']:.1f}x | | | "
                 f"{ratios['trees_per_cpu_min']:.1f}x |")
    settings = (f"engine {engine_name} ({args.engine}), model {args.model}"
                f"{' + adapter ' + args.adapter if args.adapter else ''}, {len(task_ids)} TextCraft train tasks "
                f"(depth-1 goals), num_simulations={config.num_simulations}, n_expand={config.n_expand}, "
                f"max_depth={config.max_depth}, max_tokens={config.max_tokens}, temperature={config.temperature}, "
                f"engine load {load_s:.0f} s (not counted)")
    table = "\n".join(lines)
    print(settings)
    print(table)
    print(json.dumps({"ratios": ratios}))
    try:
        load = "load average (1/5/15 min) at the end: " + " / ".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:
        load = ""
    print(load)
    if args.out:
        with open(args.out, "w") as f:
            f.write(f"Settings: {settings}.\n\nCommand: `python bench/bench_search.py {' '.join(argv or sys.argv[1:])}`\n\n"
                    f"{table}\n\n{load}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
