"""Phase I search throughput: agentr's batched search vs the official algorithm's schedule.

Both searches run the same MCTS (same `SearchTree` logic, `SearchConfig`, engine, model and
TextCraft tasks) in one process, one after the other:

- **agentr**: `agentr.search.collect.collect` with every task in flight at once: each round, the
  pending expansion of every tree goes out in ONE `engine.generate` call with n = n_expand; a
  child's environment is a cheap clone of its parent's (the last child takes the parent's own).
- **official schedule** (bytedance/Agent-R `mcts_raw.py`/`mcts_tc.py`): one tree at a time; each
  of the n_expand samples of an expansion is its own request (n = 1); before every sample the
  environment is reset and all actions of the path replayed (O(depth^2) env steps per path).

`transition: end` (Direct-Revision) is the default, so that neither side runs the verifier:
this measures search. `--critique` turns the model's critique on for the batched side
(`transition: model`; the official schedule has no batched verifier to compare with), and
`--quickstart` takes configs/quickstart.yaml's Phase I settings (16 trees, 4 simulations x 4
samples, depth 6, 40 tokens, critique on).
Trees differ between the two runs (sampling), so the table also reports work done (expansions,
samples, generated tokens) next to the rates.

`--in_flight 4 16` runs the batched side once per bound on the trees in flight
(`max_concurrent_trees`; default: all tasks at once). Each batched run is profiled
(`agentr.timing.Profile`: engine calls, prompt building, environment steps and clones, trees
waiting on others) and its engine requests recorded; then the bare engine replays the same
requests, in calls of the run's largest batch, from a cold prefix cache: the ratio of the
run's generated tok/s (over its wall time) to the bare engine's says how much of the engine
the search uses.

    python bench/bench_search.py                       # vLLM (CPU build here), SmolLM2-135M
    python bench/bench_search.py --quickstart --in_flight 4 8 16 --out bench/results/search.md
    python bench/bench_search.py --engine hf --tasks 4 --out -
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from dataclasses import replace

from report import load_average, machine

from agentr.engines import EngineConfig, make_engine
from agentr.engines.base import SamplingConfig
from agentr.engines.models import SMOLLM2_ID
from agentr.envs.textcraft import TextCraftEnv
from agentr.search.collect import collect
from agentr.search.scheduler import fit_conversation
from agentr.search.task import task_seed
from agentr.search.config import SearchConfig
from agentr.search.mcts import SearchTree
from agentr.timing import Profile


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


class Recorder:
    """Wraps `engine.generate` to keep every call's conversations and sampling."""

    def __init__(self, engine):
        self.engine, self.calls = engine, []
        self._generate = engine.generate

    def __enter__(self):
        def recording(conversations, sampling):
            self.calls.append(([list(c) for c in conversations], sampling))
            return self._generate(conversations, sampling)

        self.engine.generate = recording
        return self

    def __exit__(self, *exc):
        del self.engine.generate


def bare_replay(engine, calls: list, batch: int | None) -> dict:
    """The recorded requests again, engine alone: calls of the same sampling packed into
    batches of `batch` conversations (None: one call for all, which the engine schedules
    continuously up to its `max_num_seqs`), from a cold prefix cache. Returns seconds and
    tokens."""
    if hasattr(engine, "reset_prefix_cache"):
        engine.reset_prefix_cache()
    groups: dict = {}
    for conversations, sampling in calls:
        groups.setdefault(replace(sampling, seed=None, request_seeds=None), []).extend(conversations)
    tokens0, start = engine.stats.generated_tokens, time.perf_counter()
    for sampling, conversations in groups.items():
        size = batch or len(conversations)
        for k in range(0, len(conversations), size):
            engine.generate(conversations[k:k + size], replace(sampling, seed=k))
    seconds = time.perf_counter() - start
    tokens = engine.stats.generated_tokens - tokens0
    return {"seconds": seconds, "tokens": tokens, "tokens_per_s": tokens / seconds}


def batched_search(engine, make_env, task_ids, config: SearchConfig, seed: int) -> dict:
    """One profiled, recorded `collect` run from a cold prefix cache."""
    if hasattr(engine, "reset_prefix_cache"):
        engine.reset_prefix_cache()
    profile = Profile()
    with tempfile.TemporaryDirectory() as tmp, Recorder(engine) as recorder:
        start, cpu = time.perf_counter(), cpu_seconds()
        result = collect(engine, make_env, task_ids, config, tmp, seed=seed, progress=False,
                         profile=profile)
        wall = time.perf_counter() - start
        cpu = cpu_seconds() - cpu if cpu is not None else float("nan")
    s = result.stats
    return dict(
        wall=wall, cpu=cpu, trees=s["trees_searched"], expansions=s["expansions"],
        requests=sum(s["engine_calls"].values()), samples=s["expansions"] * config.n_expand,
        tokens=s["search_tokens"], all_tokens=s["tokens_generated"], env_steps=s["env_steps"],
        replay_steps=s["replay_steps"], profile=profile, calls=recorder.calls,
        max_batch=max((len(c) for c, _ in recorder.calls), default=1))


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
    parser.add_argument("--critique", action="store_true",
                        help="batched side with the model's critique (transition: model)")
    parser.add_argument("--quickstart", action="store_true",
                        help="configs/quickstart.yaml's Phase I: 16 tasks, 4 x 4, depth 6, 40 tokens, critique")
    parser.add_argument("--in_flight", type=int, nargs="*", default=None,
                        help="max_concurrent_trees of the batched runs (default: all tasks)")
    parser.add_argument("--skip_official", action="store_true", help="batched runs only")
    parser.add_argument("--max_model_len", type=int, default=2048)
    parser.add_argument("--kv_cache_gb", type=float, default=None, help="vLLM KV cache (GB)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="write the markdown report here")
    args = parser.parse_args(argv)
    if args.quickstart:
        args.tasks, args.num_simulations, args.n_expand, args.max_depth = 16, 4, 4, 6
        args.max_tokens, args.critique = 40, True
        args.kv_cache_gb = args.kv_cache_gb or 3

    load_before = load_average()
    env_options = dict(min_depth=1, max_depth=1)
    make_env = lambda: TextCraftEnv(**env_options)  # noqa: E731
    task_ids = make_env().task_ids("train")[: args.tasks]
    config = SearchConfig(num_simulations=args.num_simulations, n_expand=args.n_expand,
                          max_depth=args.max_depth, max_tokens=args.max_tokens,
                          transition="model" if args.critique else "end",
                          critique_max_tokens=64, max_concurrent_trees=max(1, len(task_ids)))
    in_flight = args.in_flight or [len(task_ids)]
    t0 = time.perf_counter()
    engine = make_engine(EngineConfig(kind=args.engine, max_model_len=args.max_model_len,
                                      kv_cache_gb=args.kv_cache_gb), args.model, seed=args.seed)
    if args.adapter:
        engine.load_adapter(args.adapter)
    load_s = time.perf_counter() - t0
    engine_name = type(engine).__name__
    # warm-up (compilation, caches) outside both measurements
    engine.generate([[{"role": "user", "content": "Hello"}]], SamplingConfig(n=2, temperature=1.0, max_tokens=8))

    rows, bare, one_call, loads = {}, {}, {}, {}
    for width in in_flight:
        name = f"agentr (batched, {width} in flight)"
        rows[name] = batched_search(engine, make_env, task_ids,
                                    replace(config, max_concurrent_trees=width), args.seed)
        bare[name] = bare_replay(engine, rows[name]["calls"], rows[name]["max_batch"])
        one_call[name] = bare_replay(engine, rows[name]["calls"], None)
        loads[name] = load_average()
        print(f"{name}: {rows[name]['wall']:.1f} s, load {loads[name]}", flush=True)
    if not args.skip_official:
        start, cpu = time.perf_counter(), cpu_seconds()
        o = official_search(engine, make_env, task_ids, replace(config, transition="end"), args.seed)
        wall = time.perf_counter() - start
        cpu = cpu_seconds() - cpu if cpu is not None else float("nan")
        rows["official schedule"] = dict(
            wall=wall, cpu=cpu, trees=o["trees"], expansions=o["expansions"], requests=o["requests"],
            samples=o["samples"], tokens=o["tokens"], all_tokens=o["tokens"], env_steps=o["env_steps"],
            replay_steps=o["replay_steps"])
        loads["official schedule"] = load_average()
    engine.close()

    for r in rows.values():
        r["trees_per_min"] = 60 * r["trees"] / r["wall"]
        r["env_steps_per_s"] = r["env_steps"] / r["wall"]
        r["samples_per_s"] = r["samples"] / r["wall"]
        r["tokens_per_s"] = r["all_tokens"] / r["wall"]
        r["trees_per_cpu_min"] = 60 * r["trees"] / r["cpu"]
    header = ("| schedule | wall s | trees | trees/min | env steps/s | expansions | engine calls | samples/s "
              "| gen tokens/s (all) | env steps (+replayed) | CPU s | trees/CPU-min | load avg after |")
    lines = [header, "|" + "---|" * 13]
    for name, r in rows.items():
        lines.append(f"| {name} | {r['wall']:.1f} | {r['trees']} | {r['trees_per_min']:.2f} | "
                     f"{r['env_steps_per_s']:.2f} | {r['expansions']} | {r['requests']} | "
                     f"{r['samples_per_s']:.2f} | {r['tokens_per_s']:.1f} | {r['env_steps']} (+{r['replay_steps']}) | "
                     f"{r['cpu']:.0f} | {r['trees_per_cpu_min']:.2f} | {loads[name]} |")
    ratios = {}
    if "official schedule" in rows:
        b = rows["official schedule"]
        for name in bare:
            a = rows[name]
            ratios[name] = {k: a[k] / b[k] if b[k] else float("nan")
                            for k in ("trees_per_min", "env_steps_per_s", "samples_per_s", "trees_per_cpu_min")}
            lines.append(f"| **ratio, {width_of(name)} in flight / official** | | | "
                         f"**{ratios[name]['trees_per_min']:.1f}x** | {ratios[name]['env_steps_per_s']:.1f}x "
                         f"| | | {ratios[name]['samples_per_s']:.1f}x | | | | "
                         f"{ratios[name]['trees_per_cpu_min']:.1f}x | |")
    side = ["| batched run | its gen tok/s (wall) | bare engine, same requests in calls of the run's largest batch: tok/s | ratio "
            "| bare engine, all requests in one call: tok/s | ratio |",
            "|---|---:|---:|---:|---:|---:|"]
    for name, b in bare.items():
        r, c = rows[name], one_call[name]
        side.append(f"| {name} (largest batch {r['max_batch']}) | {r['tokens_per_s']:.1f} | {b['tokens_per_s']:.1f} | "
                    f"**{r['tokens_per_s'] / b['tokens_per_s']:.0%}** | {c['tokens_per_s']:.1f} | "
                    f"{r['tokens_per_s'] / c['tokens_per_s']:.0%} |")
    settings = (f"engine {engine_name} ({args.engine}), model {args.model}"
                f"{' + adapter ' + args.adapter if args.adapter else ''}, {len(task_ids)} TextCraft train tasks "
                f"(depth-1 goals), num_simulations={config.num_simulations}, n_expand={config.n_expand}, "
                f"max_depth={config.max_depth}, max_tokens={config.max_tokens}, temperature={config.temperature}, "
                f"transition={config.transition} (official: end), engine load {load_s:.0f} s (not counted); "
                f"{machine()}; load average (1/5/15 min) before: {load_before}")
    report = [f"Settings: {settings}.", "",
              f"Command: `python bench/bench_search.py {' '.join(argv if argv is not None else sys.argv[1:])}`",
              "", "\n".join(lines), "", "Generation against the bare engine on the same requests:", "",
              "\n".join(side), ""]
    for name, r in rows.items():
        if "profile" in r:
            report += [f"Where the time went, {name} (wall {r['wall']:.1f} s):", "",
                       r["profile"].table(r["wall"]), ""]
    report.append(f"load average (1/5/15 min) at the end: {load_average()}")
    text = "\n".join(report)
    print(text)
    print(json.dumps({"ratios": ratios,
                      "bare_ratio": {n: rows[n]["tokens_per_s"] / b["tokens_per_s"] for n, b in bare.items()},
                      "one_call_ratio": {n: rows[n]["tokens_per_s"] / c["tokens_per_s"]
                                         for n, c in one_call.items()},
                      "load_average": load_average()}))
    if args.out and args.out != "-":
        with open(args.out, "w") as f:
            f.write(text + "\n")
    return 0


def width_of(name: str) -> str:
    return name.split(", ")[1].split(" ")[0]


if __name__ == "__main__":
    sys.exit(main())
