"""Generating with a LoRA adapter on vLLM-CPU: served as an adapter vs merged into the weights.

vLLM serves LoRA adapters on CPU through reference kernels that gather a copy of the adapter
weights for every token. The generation callback therefore merges adapters into the model on CPU
(`GenerationCallback(merge_lora=None)`), restarting the engine once per adapter. This benchmark
plays the same evaluation both ways, one after the other in one process:

- **served**: one engine on the base model with LoRA enabled; the adapter is loaded by path.
- **merged**: the adapter merged into a copy of the model (`merge_adapter`), and an engine on
  that copy without LoRA; the merge and the engine start are timed.

    python bench/bench_lora_serving.py --adapter runs/quickstart/iteration_0/adapter
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

from agentr.engines import make_engine
from agentr.engines.models import SMOLLM2_ID, merge_adapter
from agentr.envs import split_tasks
from agentr.evaluation import evaluate


def _load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def run(model: str, adapter: str | None, env_factory, tasks, args, **engine_kwargs) -> dict:
    start = time.perf_counter()
    with make_engine("vllm", model, adapter=adapter, max_model_len=2048, kv_cache_gb=args.kv_cache_gb,
                     **engine_kwargs) as engine:
        started = time.perf_counter() - start
        results = evaluate(engine, env_factory, tasks, max_turns=args.turns, max_tokens=args.max_tokens,
                           progress=False)
    timing = results["timing"]
    return {"start_s": started, "eval_s": timing["seconds"], "tok_s": timing["generated_tokens_per_s"],
            "tokens": timing["generated_tokens"], "success": results["metrics"]["success_rate"]}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=SMOLLM2_ID)
    parser.add_argument("--adapter", required=True, help="a PEFT LoRA adapter of --model")
    parser.add_argument("--max_lora_rank", type=int, default=16)
    parser.add_argument("--tasks", type=int, default=20, help="TextCraft depth-1 test tasks")
    parser.add_argument("--turns", type=int, default=6)
    parser.add_argument("--max_tokens", type=int, default=48)
    parser.add_argument("--kv_cache_gb", type=float, default=3)
    parser.add_argument("--out", default="bench/results/lora_serving.md", help="markdown file, or - for stdout only")
    args = parser.parse_args(argv)

    load_before = _load()
    env_factory, tasks = split_tasks("textcraft", "test", args.tasks, {"min_depth": 1, "max_depth": 1})
    served = run(args.model, args.adapter, env_factory, tasks, args,
                 enable_lora=True, max_lora_rank=args.max_lora_rank)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        merged_dir = merge_adapter(args.model, args.adapter, Path(tmp) / "merged")
        merge_s = time.perf_counter() - start
        merged = run(str(merged_dir), None, env_factory, tasks, args, enable_lora=False)
    merged["start_s"] += merge_s

    table = [
        "| mode | merge + engine start, s | evaluation, s | generated tok/s | generated tokens | success |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, r in (("adapter served by vLLM", served), ("adapter merged into the weights", merged)):
        table.append(f"| {name} | {r['start_s']:.1f} | {r['eval_s']:.1f} | {r['tok_s']:.1f} | "
                     f"{r['tokens']} | {r['success']:.0%} |")
    table.append(f"| **ratio merged / served** | | {served['eval_s'] / merged['eval_s']:.2f}x faster | "
                 f"{merged['tok_s'] / served['tok_s']:.2f}x | | |")
    command = "python bench/bench_lora_serving.py " + " ".join(argv if argv is not None else sys.argv[1:])
    report = "\n".join([
        "# LoRA on vLLM-CPU: served adapter vs merged weights",
        "",
        f"`{command.strip()}`",
        "",
        f"Model {args.model}, adapter {args.adapter}; TextCraft depth-1 test tasks {tasks[0]}..{tasks[-1]} "
        f"({len(tasks)}), {args.turns} turns, greedy, max_tokens={args.max_tokens}; "
        f"{os.cpu_count()} CPUs ({platform.processor() or platform.machine()}), "
        f"load average before/after: {load_before} / {_load()}.",
        "",
        *table,
        "",
        "Success rates can differ by an episode or two: merged bf16 weights round differently from "
        "the adapter applied at run time, and greedy decoding follows the first differing token.",
        "",
    ])
    print(report)
    if args.out != "-":
        os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
        with open(args.out, "w") as f:
            f.write(report)


if __name__ == "__main__":
    main()
