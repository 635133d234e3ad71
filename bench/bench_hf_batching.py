"""The transformers engine in Phase I: seeded requests batched vs one request at a time.

Phase I seeds every expansion request on its own (`agentr.search.scheduler.expansion_seed`), so
that a tree's samples do not depend on its batch. The transformers engine draws each sample with
a generator of its own (`agentr.engines.hf_engine.GumbelSampler`), so it batches such requests;
this runs the same Phase I (`agentr.search.collect.collect`, same tasks, settings and seed) with
the engine's rows per `generate` call set to `--batch` and to 1, one after the other in one
process, and reports wall times, their ratio, and whether the two datasets are the same.

    python bench/bench_hf_batching.py                    # writes bench/results/hf_batching.md
    python bench/bench_hf_batching.py --tasks 2 --out -
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
import time
from pathlib import Path

from report import header, load_average, machine, write_report

from agentr.engines import EngineConfig, make_engine
from agentr.engines.models import SMOLLM2_ID
from agentr.envs.textcraft import TextCraftEnv
from agentr.search.collect import collect
from agentr.search.config import SearchConfig


def run(engine, rows: int, task_ids, config, seed: int) -> dict:
    engine.batch_size = rows
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        result = collect(engine, lambda: TextCraftEnv(min_depth=1, max_depth=1), task_ids, config, out,
                         seed=seed, progress=False)
        wall = time.perf_counter() - start
        dataset = Path(result.dataset).read_bytes()
    return {"wall": wall, "digest": hashlib.sha256(dataset).hexdigest()[:12],
            "tokens": result.stats["tokens_generated"], "expansions": result.stats["expansions"],
            "load": load_average()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=SMOLLM2_ID)
    parser.add_argument("--tasks", type=int, default=4)
    parser.add_argument("--batch", type=int, default=64, help="rows per generate call when batched")
    parser.add_argument("--num_simulations", type=int, default=2)
    parser.add_argument("--n_expand", type=int, default=4)
    parser.add_argument("--max_depth", type=int, default=4)
    parser.add_argument("--max_tokens", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="bench/results/hf_batching.md")
    args = parser.parse_args(argv)

    load_before = load_average()
    task_ids = TextCraftEnv(min_depth=1, max_depth=1).task_ids("train")[: args.tasks]
    config = SearchConfig(num_simulations=args.num_simulations, n_expand=args.n_expand,
                          max_depth=args.max_depth, max_tokens=args.max_tokens, transition="end",
                          max_concurrent_trees=len(task_ids))
    engine = make_engine(EngineConfig(kind="hf", max_model_len=2048), args.model, seed=args.seed)
    try:
        rows = {f"batched ({args.batch} rows per call)": run(engine, args.batch, task_ids, config, args.seed),
                "one request at a time": run(engine, 1, task_ids, config, args.seed)}
    finally:
        engine.close()
    (batched, b), (alone, a) = rows.items()
    lines = header("Phase I on the transformers engine: seeded requests batched vs alone",
                   "bench/bench_hf_batching.py", argv)
    lines += [f"{machine()}, CPU torch; load average before: {load_before}. {len(task_ids)} TextCraft "
              f"trees, {args.num_simulations} simulations x {args.n_expand} samples, depth {args.max_depth}, "
              f"{args.max_tokens} tokens, transition at the end (no critique).", "",
              "| schedule | wall s | expansions | tokens generated | dataset sha256 | load avg after |",
              "|---|---|---|---|---|---|"]
    for name, r in rows.items():
        lines.append(f"| {name} | {r['wall']:.1f} | {r['expansions']} | {r['tokens']} | {r['digest']} | {r['load']} |")
    summary = {"speedup_batched_vs_alone": a["wall"] / b["wall"], "same_dataset": a["digest"] == b["digest"]}
    lines += ["", "```", json.dumps(summary), "```"]
    write_report("\n".join(lines) + "\n", args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
