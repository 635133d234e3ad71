"""The report at paper scale: build time and page size of `agentr report` on a synthetic run.

Writes a fit-shaped run directory with `--iterations` iterations of `--trees` search trees
shaped like the paper's (8 simulations x 4 samples, `--depth` turns deep, observations of
`--observation_chars` characters), a dataset of 3 trajectories per tree and an evaluation of
`--episodes` episodes per stage, then times `read_run` + `render` with the default
`ReportLimits` and with every tree embedded.

    python bench/bench_report.py --out bench/results/report.md
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from report import header, load_average, machine, write_report  # noqa: E402

from agentr.report import ReportLimits, read_run, render  # noqa: E402


def _text(rng: random.Random, chars: int) -> str:
    return "".join(rng.choice("abcdefgh ") for _ in range(chars))


def synthetic_tree(rng: random.Random, task: str, depth: int, obs: int) -> dict:
    ids = iter(range(1_000_000))
    root = {"id": next(ids), "depth": 0, "N": 0, "W": 0.0, "reward": 0.0, "terminal": False,
            "observation": _text(rng, obs), "children": []}
    for _ in range(8):  # simulations
        node = root
        for d in range(1, depth + 1):
            if not node["children"]:
                node["children"] = [{"id": next(ids), "depth": d, "N": 1, "W": 0.0, "terminal": d == depth,
                                     "reward": float(d == depth and rng.random() < 0.3),
                                     "response": f"Thought: {_text(rng, 120)}\nAction: act {d}",
                                     "action": f"act {d}", "observation": _text(rng, obs), "children": []}
                                    for _ in range(4)]
            node = rng.choice(node["children"])
    return {"task_id": task, "env": "bench", "header": [], "root": root,
            "critiques": {"1": {"verdict": "Bad", "reply": _text(rng, 200)}}, "pairs": []}


def make_run(root: Path, iterations: int, trees: int, depth: int, obs: int, episodes: int) -> int:
    rng = random.Random(0)
    turn = lambda: [{"role": "assistant", "content": _text(rng, 150)}, {"role": "user", "content": _text(rng, obs)}]  # noqa: E731
    header_messages = [{"role": "system", "content": "s"}, {"role": "user", "content": "i"},
                       {"role": "assistant", "content": "OK"}, {"role": "user", "content": "o"}]
    size = 0
    for stage in ["base"] + [f"iteration_{k}" for k in range(1, iterations + 1)]:
        out = root / stage
        out.mkdir(parents=True)
        with open(out / "episodes.jsonl", "w") as f:
            for i in range(episodes):
                f.write(json.dumps({"task_id": str(i), "messages": header_messages + sum((turn() for _ in range(depth)), []),
                                    "actions": ["act"] * depth, "reward": 0.0, "success": False, "turns": depth}) + "\n")
        (out / "eval.json").write_text(json.dumps({"metrics": {"success_rate": 0.3}, "num_episodes": episodes,
                                                   "timing": {"seconds": 60.0}, "episodes": []}))
        if stage == "base":
            continue
        phase1 = out / "phase1"
        (phase1 / "trees").mkdir(parents=True)
        (phase1 / "tasks").mkdir()
        with open(phase1 / "dataset.jsonl", "w") as dataset:
            for t in range(trees):
                tree = json.dumps(synthetic_tree(rng, str(t), depth, obs))
                size += len(tree)
                (phase1 / "trees" / f"{t}.json").write_text(tree)
                (phase1 / "tasks" / f"{t}.stats.json").write_text(json.dumps(
                    {"task_id": str(t), "nodes": tree.count('"id"'), "revision": 2, "good": 1, "good_paths": 1}))
                for k in range(3):
                    dataset.write(json.dumps({"id": f"bench/{t}/{k}", "task_id": str(t), "kind": "revision",
                                              "messages": header_messages + sum((turn() for _ in range(depth)), []),
                                              "meta": {"transition_step": depth // 2}}) + "\n")
        (phase1 / "stats.json").write_text(json.dumps({"trees_searched": trees, "alpha": 0.5, "wall_seconds": 1.0}))
    return size


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=3)
    parser.add_argument("--trees", type=int, default=1000)
    parser.add_argument("--depth", type=int, default=15)
    parser.add_argument("--observation_chars", type=int, default=400)
    parser.add_argument("--episodes", type=int, default=200)
    parser.add_argument("--out", default="-")
    args = parser.parse_args(argv)
    load_before = load_average()
    with tempfile.TemporaryDirectory() as tmp:
        trees_bytes = make_run(Path(tmp), args.iterations, args.trees, args.depth, args.observation_chars, args.episodes)
        rows = []
        for name, limits in [("default limits", ReportLimits()),
                             ("every tree embedded", ReportLimits(max_trees=args.trees))]:
            start = time.perf_counter()
            page = render(read_run(tmp, limits))
            rows.append(f"| {name} | {limits.max_trees} | {time.perf_counter() - start:.1f} | {len(page.encode()) / 1e6:.1f} |")
    lines = header("The report at paper scale", "bench/bench_report.py", argv)
    lines += [f"{args.iterations} iterations x {args.trees} trees ({args.depth} turns deep, 8 simulations x 4 samples, "
              f"observations of {args.observation_chars} characters; {trees_bytes / 1e6:.0f} MB of tree files), "
              f"{args.episodes} episodes per stage; {machine()}, load average before/after: "
              f"{load_before} / {load_average()}.", "",
              "| report | trees per iteration | read + render, s | page, MB |", "|---|---:|---:|---:|", *rows, ""]
    write_report("\n".join(lines), args.out)


if __name__ == "__main__":
    main()
