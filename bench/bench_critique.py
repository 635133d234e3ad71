"""Phase I cost and transition-point accuracy of each verdict policy, side by side.

One engine, one set of TextCraft depth-1 train tasks, the quickstart's search settings; Phase I
(`agentr.search.collect.collect`) runs once per setting, each into its own fresh directory:

- `transition: end`: no critique at all (Direct-Revision), the floor of Phase I wall time;
- `verdict: parsed`: the paper's critique, reasons then a parsed `Judgment:` line;
- `verdict: parsed_then_forced` (default): the same, plus one `Engine.choose` call for the
  replies without a verdict, calibrated against the content-free step (the default), and
  uncalibrated (`calibrate_verdicts: false`);
- `verdict: forced`: the verdict alone, by log-probability, no reasons, calibrated.

Expansions are sampled with the same seeds in every run, so with a seeded engine (vLLM on CPU
or the HF engine) the trees are the same and the wall-time difference is the critique's. The
table gives Phase I wall time, engine time per kind of call (expand / judge = reasons /
force = `choose`), verdicts by source, and the accuracy of t' against TextCraft's labelled
mistakes (`TextCraftEnv.label_mistakes`) for the model's rule, the end of the path and a random
step.

    python bench/bench_critique.py --adapter runs/quickstart/iteration_0/adapter --out bench/results/critique.md
    python bench/bench_critique.py --engine hf --model <tiny model dir> --tasks 1 --num_simulations 1 --out -
"""

from __future__ import annotations

import argparse
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

#: (row name, SearchConfig overrides), in the order of the table.
SETTINGS = (
    ("end (no critique)", {"transition": "end"}),
    ("parsed", {"verdict": "parsed"}),
    ("parsed_then_forced", {"verdict": "parsed_then_forced"}),
    ("parsed_then_forced, uncalibrated", {"verdict": "parsed_then_forced", "calibrate_verdicts": False}),
    ("forced", {"verdict": "forced"}),
)


def _rate(accuracy: dict | None, rule: str) -> str:
    figures = (accuracy or {}).get(rule)
    if not figures or figures["equal"] is None:
        return "-"
    return (f"{figures['equal']:.0%} / {figures['before']:.0%} / {figures['after']:.0%} / "
            f"{figures['mean_distance']:.2f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=SMOLLM2_ID)
    parser.add_argument("--adapter", default=None, help="LoRA adapter of the policy")
    parser.add_argument("--engine", default="auto", choices=["auto", "vllm", "hf"])
    parser.add_argument("--tasks", type=int, default=16, help="TextCraft train tasks (depth-1 goals)")
    parser.add_argument("--num_simulations", type=int, default=4)
    parser.add_argument("--n_expand", type=int, default=4)
    parser.add_argument("--max_depth", type=int, default=6)
    parser.add_argument("--max_tokens", type=int, default=40)
    parser.add_argument("--critique_max_tokens", type=int, default=64)
    parser.add_argument("--max_model_len", type=int, default=2048)
    parser.add_argument("--kv_cache_gb", type=float, default=None, help="vLLM KV cache (GB)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="bench/results/critique.md", help='markdown report ("-": print only)')
    args = parser.parse_args(argv)

    make_env = lambda: TextCraftEnv(min_depth=1, max_depth=1)  # noqa: E731
    task_ids = make_env().task_ids("train")[: args.tasks]
    base = dict(num_simulations=args.num_simulations, n_expand=args.n_expand, max_depth=args.max_depth,
                max_tokens=args.max_tokens, critique_max_tokens=args.critique_max_tokens,
                max_pairs_per_task=2, max_good_per_task=2, max_concurrent_trees=max(1, len(task_ids)))
    load_before = load_average()
    rows = []
    config = EngineConfig(kind=args.engine, max_model_len=args.max_model_len, kv_cache_gb=args.kv_cache_gb)
    with make_engine(config, args.model, adapter=args.adapter, seed=args.seed) as engine, \
            tempfile.TemporaryDirectory() as tmp:
        engine_name = type(engine).__name__
        for name, overrides in SETTINGS:
            start = time.perf_counter()
            stats = collect(engine, make_env, task_ids, SearchConfig(**base, **overrides),
                            Path(tmp) / name.split()[0], seed=args.seed, progress=False).stats
            wall = time.perf_counter() - start
            seconds, sources = stats["engine_seconds"], stats["verdict_sources"]
            accuracy = stats.get("transition_accuracy")
            rows.append(
                f"| {name} | {wall:.1f} | {seconds['expand']:.1f} | {seconds['judge']:.1f} | "
                f"{seconds['force']:.1f} | {sum(stats['verdicts'].values())} | {sources['parsed']} / "
                f"{sources['forced']} / {sources['none']} | {stats['revision_trajectories']} | "
                f"{(accuracy or {}).get('pairs_with_mistake', '-')} | {_rate(accuracy, 'model')} | "
                f"{_rate(accuracy, 'end')} | {_rate(accuracy, 'random')} |")
            print(name, json.dumps({k: stats.get(k) for k in ("engine_seconds", "verdict_sources",
                                                               "transition_accuracy")}), file=sys.stderr)
    settings = (f"{engine_name} ({args.engine}), {args.model}"
                f"{' + adapter ' + args.adapter if args.adapter else ''}; {len(task_ids)} TextCraft depth-1 "
                f"train tasks, all in flight; num_simulations={args.num_simulations}, n_expand={args.n_expand}, "
                f"max_depth={args.max_depth}, max_tokens={args.max_tokens}, "
                f"critique_max_tokens={args.critique_max_tokens}, seed {args.seed}; {machine()}, "
                f"load average before/after: {load_before} / {load_average()}.")
    report = "\n".join([
        *header("Phase I critique: cost and transition-point accuracy per verdict policy",
                "bench/bench_critique.py", argv),
        settings, "",
        "Accuracy columns: t' equal to / before / after the first labelled mistake, mean distance.", "",
        "| setting | Phase I wall s | expand s | judge s | force s | verdicts | parsed / forced / none "
        "| revisions | pairs with a mistake | model t' | end of path | random step |",
        "|" + "---|" * 12,
        *rows, ""])
    write_report(report, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
