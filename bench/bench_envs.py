"""Environment latencies: TextCraft reset/step/clone (vs replay), over HTTP, and ScienceWorld steps.

python bench/bench_envs.py                 # prints a table, writes bench/results/envs.md
python bench/bench_envs.py --no-sciworld   # TextCraft and HTTP only
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import sys
import threading
import time
from pathlib import Path

from agentr.envs import HTTPEnvironment, TextCraftEnv
from agentr.envs.base import Environment
from agentr.envs.server import make_server


def timed(fn, repeat: int) -> list[float]:
    """Seconds per call of `fn`, `repeat` times."""
    out = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def row(name: str, seconds: list[float], note: str = "") -> tuple[str, str, str, str, str]:
    median = statistics.median(seconds)
    p90 = sorted(seconds)[max(0, math.ceil(0.9 * len(seconds)) - 1)]  # nearest rank
    unit = (lambda s: f"{s * 1e6:.1f} µs") if median < 1e-3 else (lambda s: f"{s * 1e3:.2f} ms")
    return name, unit(median), unit(p90), str(len(seconds)), note


def replay_clone(env: Environment) -> Environment:
    return Environment.clone(env)  # the base class's reset-and-replay fallback


def bench_textcraft(rows: list) -> None:
    env = TextCraftEnv(min_depth=1)
    ids = env.task_ids("train") + env.task_ids("test")
    from agentr.envs.textcraft import RecipeBook, TaskSet

    start = time.perf_counter()
    book = RecipeBook()
    load = time.perf_counter() - start
    rows.append(row("textcraft: load recipes (once per process)", [load]))
    tasks = TaskSet(book)  # cold: no first observation built yet
    rows.append(
        row(
            "textcraft: reset, first time per task (builds the text)",
            [timed(lambda t=t: tasks.task(t), 1)[0] for t in ids],
            f"{len(ids)} tasks",
        )
    )
    rows.append(
        row(
            "textcraft: reset (cached task)",
            [timed(lambda t=t: env.reset(t), 1)[0] for t in ids * 3],
        )
    )
    steps: list[float] = []
    for task_id in ids:
        env.reset(task_id)
        actions = ["inventory", "get 1 planks", "craft 1 x using 1 y", *env.expert_actions(task_id)]
        for action in actions:
            start = time.perf_counter()
            env.step(action)
            steps.append(time.perf_counter() - start)
    rows.append(row("textcraft: step (expert + invalid actions)", steps, f"{len(steps)} steps"))
    expert = [timed(lambda t=t: env.expert_actions(t), 1)[0] for t in ids]
    rows.append(row("textcraft: expert_actions (solver)", expert))
    deep = [t for t in ids if len(env.expert_actions(t)) >= 20][:10]
    for depth in (5, 20):
        clones, replays = [], []
        for task_id in deep:
            env.reset(task_id)
            for action in (env.expert_actions(task_id) * 2)[: depth - 1]:
                env.step(action)
            env.step("inventory")
            clones += timed(env.clone, 20)
            replays += timed(lambda: replay_clone(env), 20)
        rows.append(row(f"textcraft: clone() after {depth} steps", clones, "copies the inventory"))
        rows.append(row(f"textcraft: replay clone after {depth} steps", replays, "reset + replay"))


def bench_http(rows: list) -> None:
    server = make_server("textcraft", port=0)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        remote = HTTPEnvironment(server.url)
        ids = remote.task_ids("test")
        resets, steps = [], []
        for task_id in ids:
            resets += timed(lambda t=task_id: remote.reset(t), 1)
            for action in ["inventory", *remote.expert_actions(task_id)]:
                start = time.perf_counter()
                remote.step(action)
                steps.append(time.perf_counter() - start)
        rows.append(row("textcraft over HTTP (loopback): reset", resets))
        rows.append(row("textcraft over HTTP (loopback): step", steps, f"{len(steps)} steps"))
        rows.append(
            row(
                "textcraft over HTTP (loopback): clone",
                timed(remote.clone, 50),
                "server-side clone",
            )
        )
        remote.close()
    finally:
        server.shutdown()
        server.server_close()


def bench_sciworld(rows: list) -> None:
    from agentr.envs.sciworld import ScienceWorldEnv, find_java

    if find_java() is None:
        rows.append(("sciworld: skipped (no Java)", "", "", "", ""))
        return
    env = ScienceWorldEnv()
    rows.append(row("sciworld: start the JVM", timed(env.simulator, 1), "once per instance"))
    tasks = [
        "find-plant:225",
        "lifespan-longest-lived:93",
        "power-component:15",
        "chemistry-mix:24",
        "use-thermometer:405",
        "boil:21",
    ]
    resets, steps, gold = [], [], []
    for task_id in tasks:
        gold += timed(lambda t=task_id: env.expert_actions(t), 1)
    for _ in range(2):
        for task_id in tasks:
            resets += timed(lambda t=task_id: env.reset(t), 1)
            for action in env.expert_actions(task_id):
                start = time.perf_counter()
                _, _, done = env.step(action)
                steps.append(time.perf_counter() - start)
                if done:
                    break
    rows.append(row("sciworld: reset (load a variation + look around)", resets))
    rows.append(row("sciworld: step (gold paths)", steps, f"{len(steps)} steps"))
    rows.append(row("sciworld: expert_actions (gold path, uncached)", gold))
    env.reset(tasks[0])
    for action in env.expert_actions(tasks[0])[:5]:
        env.step(action)
    clones = []
    for _ in range(2):
        start = time.perf_counter()
        copy = env.clone()
        clones.append(time.perf_counter() - start)
        copy.close()
    rows.append(row("sciworld: replay clone after 5 steps", clones, "new JVM + reset + replay"))
    env.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-sciworld", action="store_true")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "envs.md"))
    args = parser.parse_args()
    rows: list = []
    bench_textcraft(rows)
    bench_http(rows)
    if not args.no_sciworld:
        bench_sciworld(rows)
    header = ("measurement", "median", "p90", "n", "note")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    table = "\n".join(lines)
    print(table)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    machine = (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}, {platform.system()}; load average {load:.1f} "
        "at the end"
    )
    text = (
        "# Environment latencies\n\n"
        f"`python bench/bench_envs.py` on {machine} ({time.strftime('%Y-%m-%d')}).\n\n"
        f"{table}\n\n"
        "Notes: TextCraft's `clone()` copies the inventory, so its cost does not grow with the\n"
        "episode, while reset-and-replay grows with every step. ScienceWorld steps call the\n"
        "simulator directly (the `scienceworld` package's own `step` also computes the\n"
        "valid-action list and more for its `info`, several times slower); its clone is\n"
        "reset-and-replay on a new instance, i.e. a new JVM. Timings on a shared machine vary\n"
        "with its load (above).\n"
    )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text, encoding="utf-8")
    print(f"\nwrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
