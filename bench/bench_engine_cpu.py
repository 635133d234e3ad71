"""vLLM-CPU's own settings against agentr's CPU defaults, side by side on the same requests.

vLLM-CPU runs its engine core in a process of its own, with KV-cache blocks of 128 tokens;
agentr runs it in the calling process, with blocks of 32 (see `agentr.engines.vllm_engine`).
The layout between the two (in process, blocks of 128) separates what each change gives.

Each layout runs in a fresh Python process, one after the other, with the same model
(SmolLM2-135M-Instruct), KV cache and requests: the headers of `--prompts` TextCraft tasks,
`--max_tokens` tokens each, sampled at temperature 1 with per-request seeds (the same draws in
every layout). Per layout:

- batched: all prompts in one `generate` call, the median of `--repeats` calls; batch 1:
  `--single` prompts one call each (generated tokens per second, after one warm-up call);
- what the engine leaves behind once closed: the process's CPU affinity and torch threads, and
  the speed of a float32 matmul loop after the engine against before it (training shares the
  process in `agentr fit`, so a layout that pinned the process would slow training);
- a second engine started after the first closed (merged-adapter restarts start one per stage)
  and the resident memory after each, with the peak over the run (children included).

    python bench/bench_engine_cpu.py                   # writes bench/results/engine_cpu.md
    python bench/bench_engine_cpu.py --prompts 8 --out -

The last line printed is JSON with `engine_speedup_vs_default` (agentr's batched tok/s over
vLLM-CPU's own settings') and `block_size_speedup` (agentr's over in process at blocks of 128).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import time

from report import header, load_average, machine, run_workers, write_report

#: name -> VLLMEngine settings: vLLM-CPU's own ("default"), the engine core in this process at
#: vLLM-CPU's block size, and agentr's CPU defaults ("in_process"). (Binding every core
#: explicitly, `cpu_threads`, measured the same as vLLM's own binding: bench/results/engine_cpu.md.)
LAYOUTS = {"default": dict(in_process=False, block_size=128),
           "in_process_block128": dict(in_process=True, block_size=128),
           "in_process": dict(in_process=True)}


def rss_gb() -> float:
    """This process's resident memory now, in GB."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e9


def peak_rss_gb() -> float:
    """The peak resident memory of this process and of its waited-for children, in GB."""
    kb = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
             resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
    return kb / 1e6


def matmul_seconds(repeats: int = 30) -> float:
    """Seconds for `repeats` 512x512 float32 matmuls with torch's threads as they are now."""
    import torch

    a = torch.randn(512, 512)
    torch.mm(a, a)
    start = time.perf_counter()
    for _ in range(repeats):
        torch.mm(a, a)
    return time.perf_counter() - start


def tokens_per_s(engine, conversations, sampling) -> float:
    before = engine.stats.generated_tokens
    start = time.perf_counter()
    engine.generate(conversations, sampling)
    return (engine.stats.generated_tokens - before) / (time.perf_counter() - start)


def worker(layout: str, args) -> dict:
    """One layout's measurements, in this (fresh) process."""
    import torch

    from agentr.agent import build_header
    from agentr.engines import SamplingConfig
    from agentr.engines.models import SMOLLM2_ID, resolve_model
    from agentr.engines.vllm_engine import VLLMEngine
    from agentr.envs.textcraft import TextCraftEnv

    env = TextCraftEnv()
    conversations = [build_header(env.instruction, env.reset(task))
                      for task in env.task_ids("train")[:args.prompts]]
    model = resolve_model(SMOLLM2_ID)
    threads_before, affinity_before = torch.get_num_threads(), sorted(os.sched_getaffinity(0))
    matmul_before = matmul_seconds()
    out: dict = {"layout": layout}
    rss = []
    for run in range(2):  # the second engine starts once the first has closed
        engine = VLLMEngine(model, max_model_len=1024, kv_cache_gb=args.kv_cache_gb, seed=0,
                            **LAYOUTS[layout])
        try:
            seeds = tuple(range(len(conversations)))
            sampling = SamplingConfig(temperature=1.0, max_tokens=args.max_tokens, request_seeds=seeds)
            engine.generate(conversations[:4], SamplingConfig(temperature=1.0, max_tokens=8,
                                                              request_seeds=(0, 1, 2, 3)))
            if run == 0:
                out["batched_tok_s"] = statistics.median(
                    tokens_per_s(engine, conversations, sampling) for _ in range(args.repeats))
                single = [tokens_per_s(engine, [c], SamplingConfig(
                    temperature=1.0, max_tokens=args.max_tokens, request_seeds=(i,)))
                    for i, c in enumerate(conversations[:args.single])]
                out["batch1_tok_s"] = sum(single) / len(single)
                out["replies"] = [g[0].text for g in engine.generate(conversations[:4], SamplingConfig(
                    temperature=1.0, max_tokens=16, request_seeds=(0, 1, 2, 3)))]
            else:
                out["second_engine_tok_s"] = tokens_per_s(engine, conversations, sampling)
        finally:
            engine.close()
        rss.append(rss_gb())
    out.update(
        rss_after_close_gb=rss, peak_rss_gb=peak_rss_gb(),
        threads=[threads_before, torch.get_num_threads()],
        affinity=[affinity_before, sorted(os.sched_getaffinity(0))],
        matmul_after_over_before=matmul_seconds() / matmul_before,
    )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--prompts", type=int, default=48)
    parser.add_argument("--single", type=int, default=6, help="prompts timed one call each")
    parser.add_argument("--repeats", type=int, default=3, help="batched calls timed (median)")
    parser.add_argument("--max_tokens", type=int, default=64)
    parser.add_argument("--kv_cache_gb", type=float, default=2)
    parser.add_argument("--worker", choices=list(LAYOUTS), help=argparse.SUPPRESS)
    parser.add_argument("--out", default="bench/results/engine_cpu.md")
    args = parser.parse_args(argv)
    if args.worker:
        print("RESULT " + json.dumps(worker(args.worker, args)), flush=True)
        return 0

    load_before = load_average()
    results = run_workers(__file__, LAYOUTS, argv)
    old, new = results["default"], results["in_process"]
    lines = header("vLLM-CPU: its own settings vs agentr's CPU defaults", "bench/bench_engine_cpu.py", argv)
    lines += [f"{machine()}; load average before/after: {load_before} / {load_average()}; "
              f"{args.prompts} TextCraft headers x {args.max_tokens} tokens, temperature 1, "
              f"per-request seeds; KV cache {args.kv_cache_gb} GB.", "",
              "| layout | batched tok/s | batch 1 tok/s | second engine tok/s | RSS after 1st / 2nd close (GB) "
              "| peak RSS (GB) | torch threads before/after | affinity before/after | matmul after/before |",
              "|---|---|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        lines.append(
            f"| {name} | {r['batched_tok_s']:.0f} | {r['batch1_tok_s']:.1f} | {r['second_engine_tok_s']:.0f} "
            f"| {r['rss_after_close_gb'][0]:.2f} / {r['rss_after_close_gb'][1]:.2f} | {r['peak_rss_gb']:.2f} "
            f"| {r['threads'][0]} / {r['threads'][1]} | {r['affinity'][0]} / {r['affinity'][1]} "
            f"| {r['matmul_after_over_before']:.2f} |")
    same = old["replies"] == new["replies"]
    lines += ["", f"Seeded replies identical in the default and agentr's layout: {same}.", ""]
    summary = {"engine_speedup_vs_default": new["batched_tok_s"] / old["batched_tok_s"],
               "block_size_speedup": new["batched_tok_s"] / results["in_process_block128"]["batched_tok_s"],
               "batch1_speedup_vs_default": new["batch1_tok_s"] / old["batch1_tok_s"],
               "seeded_replies_identical": same}
    lines += ["```", json.dumps(summary), "```"]
    write_report("\n".join(lines) + "\n", args.out)
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
