"""Agent-R against its baselines, from one warm start, with intervals and paired differences.

    python bench/experiments/compare_methods.py --dry_run          # the plan, nothing run
    python bench/experiments/compare_methods.py                     # run (resumable)
    python bench/experiments/compare_methods.py --report_only       # rebuild the tables

1. **Warm start** (`OUT/warm_start`): `agentr fit` on the base config (the quickstart by
   default) with `AgentRIterations.stop_after: 0`: the base model and the warm start are
   trained and evaluated, then the fit ends.
2. **Each method** (`OUT/<method>`): a copy of the warm start's `base/`, `iteration_0/` and
   `checkpoints/`, then `agentr fit` with the method's settings, which continues from the warm
   start's checkpoint for the same iterations: every method spends the same budget after the
   same start.
   - `agent_r`: Agent-R, the policy critiques its bad paths (model-chosen transition point);
   - `agent_r_oracle`: Agent-R with the oracle critic (`search.transition: oracle`), run only
     where `SearchConfig` has that setting (skipped with a message otherwise);
   - `direct_revision`: the transition point is the end of the bad path (the reference);
   - `optimal`: good trajectories only;
   - the warm start alone is the `warm_start` row (its `iteration_0`).
3. **Tables** (`OUT/results.md`, `OUT/results.json`): per method and iteration, greedy and
   sampled success with 95% intervals, revision and recovery rates, loop turns, and the paired
   difference against the reference (`agentr.compare`, matched by task and sample).

Every stage is evaluated greedily (the headline) and with `--episodes_per_task` sampled
episodes per task, so that differences of about 10 points can be resolved: the plan prints the
interval half-width the chosen sizes give. A killed script continues where it stopped when run
again with the same arguments (each `agentr fit` resumes; copies are made whole or not at all).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/report.py
from report import load_average, machine  # noqa: E402

from agentr.compare import compare_results, format_points  # noqa: E402
from agentr.jsonfiles import write_text  # noqa: E402
from agentr.intervals import wilson_interval  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
ITERATIONS_CALLBACK = "agentr.callbacks.AgentRIterations"
EVALUATION_CALLBACK = "agentr.callbacks.EvaluationCallback"
WARM_START = "warm_start"
#: What a method's run directory starts as: the warm start's finished stages and checkpoint.
BRANCHED = ("base", "iteration_0", "checkpoints")


@dataclass(frozen=True)
class Method:
    """A way to train after the warm start.

    Attributes:
        label: the name in the tables.
        overlays: config files applied over the base config (relative to the repository).
        search: `data.init_args.search` settings of the method.
        requires: a (SearchConfig field, value) the method needs; without it, it is skipped.
    """

    label: str
    overlays: tuple[str, ...] = ()
    search: dict = field(default_factory=dict)
    requires: tuple[str, str] | None = None


METHODS = {
    # the critique with written reasons, as in the recorded comparisons (the quickstart skips them)
    "agent_r": Method("Agent-R (model critique)", search={"verdict": "parsed_then_forced",
                                                          "critique_max_tokens": 64}),
    "agent_r_oracle": Method("Agent-R (oracle critic)", search={"transition": "oracle"},
                             requires=("transition", "oracle")),
    "direct_revision": Method("Direct-Revision", overlays=("configs/baselines/direct_revision.yaml",)),
    "optimal": Method("optimal-only (good trajectories)", overlays=("configs/baselines/optimal.yaml",)),
}


def unavailable(method: Method) -> str | None:
    """Why `method` cannot run with this agentr (None: it can)."""
    if method.requires is None:
        return None
    from agentr.search.config import SearchConfig

    name, value = method.requires
    hints = typing.get_type_hints(SearchConfig)
    if name not in hints:
        return f"SearchConfig has no `{name}` setting"
    allowed = typing.get_args(hints[name])
    if allowed and value not in allowed:
        return f"SearchConfig.{name} does not accept {value!r} (allowed: {', '.join(map(str, allowed))})"
    return None


# ---- configs ----------------------------------------------------------------------------------
def _callback(config: dict, class_path: str) -> dict:
    for callback in config.get("trainer", {}).get("callbacks", []):
        if callback.get("class_path") == class_path:
            return callback.setdefault("init_args", {})
    raise ValueError(f"the base config has no {class_path} in trainer.callbacks")


def run_config(base: dict, run_dir: Path, args: argparse.Namespace, search: dict | None = None,
               stop_after: int | None = None) -> dict:
    """The base config at the experiment's scale, writing to `run_dir`."""
    config = json.loads(json.dumps(base))  # a deep copy
    trainer = config.setdefault("trainer", {})
    trainer["default_root_dir"] = str(run_dir)
    logger = trainer.get("logger")
    if isinstance(logger, dict) and "save_dir" in logger.get("init_args", {}):
        logger["init_args"]["save_dir"] = str(run_dir)
    iterations = _callback(config, ITERATIONS_CALLBACK)
    if not iterations.get("warm_start"):
        raise ValueError("the base config has no warm start (AgentRIterations.warm_start): the "
                         "methods branch from it")
    iterations["iterations"] = args.iterations
    if args.epochs is not None:
        iterations["epochs"] = [args.epochs]
    if stop_after is not None:
        iterations["stop_after"] = stop_after
    evaluation = _callback(config, EVALUATION_CALLBACK)
    evaluation.update(num_tasks=args.eval_tasks, max_turns=args.max_turns,
                      episodes_per_task=args.episodes_per_task,
                      sample_temperature=args.sample_temperature)
    data = config.setdefault("data", {}).setdefault("init_args", {})
    data["num_tasks"] = args.tasks_per_iteration
    if search:
        data.setdefault("search", {}).update(search)
    return config


# ---- the plan ---------------------------------------------------------------------------------
@dataclass
class Step:
    """One thing the experiment does: a fit (a command) or a branch (a copy)."""

    run: str
    kind: str  # "fit" or "branch"
    done: bool
    command: list[str] = field(default_factory=list)
    config: dict | None = None


def final_stage(args: argparse.Namespace) -> str:
    return f"iteration_{args.iterations}"


def plan(args: argparse.Namespace, base: dict) -> tuple[list[Step], dict[str, str]]:
    """The steps still to do (with `done` ones marked) and {method: why it is skipped}."""
    out = Path(args.out_dir)
    warm = out / WARM_START
    steps = [Step(WARM_START, "fit", (warm / "iteration_0" / "eval.json").exists(),
                  _fit_command(out / f"{WARM_START}.yaml", ()),
                  run_config(base, warm, args, stop_after=0))]
    skipped = {}
    for name in args.methods:
        method = METHODS[name]
        why = unavailable(method)
        if why:
            skipped[name] = why
            continue
        run_dir = out / name
        steps.append(Step(name, "branch", run_dir.exists()))
        overlays = tuple(str(REPO / o) for o in method.overlays)
        steps.append(Step(name, "fit", (run_dir / final_stage(args) / "eval.json").exists(),
                          _fit_command(out / f"{name}.yaml", overlays),
                          run_config(base, run_dir, args, search=method.search)))
    return steps, skipped


def _fit_command(config_path: Path, overlays: tuple[str, ...]) -> list[str]:
    command = [sys.executable, "-m", "agentr.cli", "fit", "--config", str(config_path)]
    for overlay in overlays:
        command += ["--config", overlay]
    return command


def branch(warm: Path, run_dir: Path) -> None:
    """Copy the warm start's finished stages into `run_dir`, whole or not at all."""
    partial = run_dir.with_name(run_dir.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    for name in BRANCHED:
        if (warm / name).exists():  # base/ only where the base model was evaluated
            shutil.copytree(warm / name, partial / name)
    partial.rename(run_dir)


def power_note(args: argparse.Namespace, rate: float = 0.4) -> str:
    """What interval the evaluation sizes give, between independent and fully correlated samples."""
    episodes = args.eval_tasks * args.episodes_per_task
    def half(n):
        low, high = wilson_interval(round(rate * n), n)
        return 100 * (high - low) / 2
    note = f"greedy: {args.eval_tasks} episodes, +-{half(args.eval_tasks):.1f} points at {rate:.0%}"
    if episodes:
        note += (f"; sampled: {args.eval_tasks} tasks x {args.episodes_per_task} = {episodes} "
                 f"episodes, +-{half(episodes):.1f} points if a task's samples were independent, "
                 f"up to +-{half(args.eval_tasks):.1f} if they always agreed (paired differences "
                 "are narrower where methods agree)")
    return note


# ---- results ----------------------------------------------------------------------------------
def _stages(run_dir: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in sorted(run_dir.glob("iteration_*/eval.json"))}


def _rate(metrics: dict, name: str = "success_rate") -> str:
    ci = metrics.get(f"{name}_ci")
    value = f"{100 * metrics[name]:.1f}%"
    return f"{value} [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]" if ci else value


def build_results(out_dir: str | os.PathLike, methods: list[str], reference: str) -> dict:
    """The results of every finished stage and its paired difference against `reference` at the
    same iteration (the warm start against the reference's last iteration)."""
    out = Path(out_dir)
    runs = {WARM_START: {k: v for k, v in _stages(out / WARM_START).items() if k == "iteration_0"}}
    for name in methods:
        stages = _stages(out / name)
        runs[name] = {k: v for k, v in stages.items() if k != "iteration_0"}
    ref = runs.get(reference, {})
    rows = []
    for name, stages in runs.items():
        for stage, results in sorted(stages.items(), key=lambda kv: int(kv[0].split("_")[1])):
            against = max(ref, key=lambda s: int(s.split("_")[1])) if name == WARM_START and ref else stage
            row = {"method": name, "stage": stage, "results": _row_metrics(results)}
            if name != reference and against in ref:
                row["vs_reference"] = {"stage": against, **compare_results(results, ref[against])}
            rows.append(row)
    return {"reference": reference, "rows": rows}


def _row_metrics(results: dict) -> dict:
    row = {"greedy": results["metrics"], "num_episodes": results["num_episodes"],
           "interval_method": results.get("interval_method")}
    if "sampled" in results:
        row["sampled"] = results["sampled"]["metrics"]
        row["sampled_episodes"] = results["sampled"]["num_episodes"]
        row["sampled_interval_method"] = results["sampled"].get("interval_method")
    return row


def format_markdown(results: dict, labels: dict[str, str]) -> str:
    """The results table, one row per method and iteration."""
    ref = results["reference"]
    lines = [
        f"| method | stage | greedy success | sampled success | revision rate (recovery) | "
        f"loop turns | success - {labels.get(ref, ref)}, points | McNemar p (greedy) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in results["rows"]:
        r = row["results"]
        sampled = r.get("sampled")
        shown = sampled or r["greedy"]
        recovery = shown["recovery_rate"]
        revision = f"{100 * shown['revision_rate']:.1f}%" + (
            f" ({100 * recovery:.0f}%)" if recovery is not None else "")
        diff = p = "-"
        vs = row.get("vs_reference")
        if vs:
            paired = vs.get("sampled", vs["greedy"])
            diff = format_points(paired["success_diff"], paired["success_diff_ci"])
            if vs["stage"] != row["stage"]:
                diff += f" (vs {vs['stage']})"
            if vs["greedy"]["mcnemar_p"] is not None:
                p = f"{vs['greedy']['mcnemar_p']:.3f}"
        lines.append(" | ".join([
            f"| {labels.get(row['method'], row['method'])}", row["stage"], _rate(r["greedy"]),
            _rate(sampled) if sampled else "-", revision, f"{shown['loop_count']:.2f}", diff,
            f"{p} |"]))
    lines += ["", "Success rates with 95% intervals (greedy: Wilson; sampled: bootstrap over "
              "tasks). Differences: of the sampled episodes where there are any (else greedy), "
              "matched by task and sample, with a 95% paired bootstrap interval over tasks; "
              "McNemar's exact test on the greedy episodes. Revision rate (the share of episodes "
              "with a revision turn), recovery (the share of those that succeeded) and loop turns "
              "per episode: of the sampled episodes where there are any."]
    return "\n".join(lines)


def write_results(args: argparse.Namespace, skipped: dict[str, str], wall: dict[str, float]) -> str:
    methods = [m for m in args.methods if m not in skipped]
    results = build_results(args.out_dir, methods, args.reference)
    results.update(skipped=skipped, wall_seconds=wall, load_average=load_average(),
                   machine=machine(), command=" ".join(sys.argv))
    labels = {WARM_START: "warm start alone", **{k: m.label for k, m in METHODS.items()}}
    markdown = format_markdown(results, labels)
    out = Path(args.out_dir)
    write_text(out / "results.json", json.dumps(results, indent=2))
    write_text(out / "results.md", markdown + "\n")
    return markdown


# ---- main -------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default=str(REPO / "configs" / "quickstart.yaml"),
                        help="base fit config (it must have a warm start)")
    parser.add_argument("--out_dir", default="runs/compare_methods")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--reference", default="direct_revision", choices=list(METHODS),
                        help="the method every other is compared with")
    parser.add_argument("--iterations", type=int, default=2, help="Agent-R iterations per method")
    parser.add_argument("--epochs", type=int, default=None,
                        help="training epochs of every iteration (default: the base config's); "
                             "a finished run is not redone, so give another value its own --out_dir")
    parser.add_argument("--tasks_per_iteration", type=int, default=16, help="Phase I trees per iteration")
    parser.add_argument("--eval_tasks", type=int, default=30, help="held-out tasks per evaluation")
    parser.add_argument("--episodes_per_task", type=int, default=8, help="sampled episodes per task")
    parser.add_argument("--sample_temperature", type=float, default=1.0)
    parser.add_argument("--max_turns", type=int, default=12, help="turn limit of evaluation episodes")
    parser.add_argument("--dry_run", action="store_true", help="print the plan and the commands; run nothing")
    parser.add_argument("--report_only", action="store_true", help="only rebuild the tables from what is done")
    args = parser.parse_args(argv)
    for name in ("iterations", "epochs", "tasks_per_iteration", "eval_tasks", "max_turns"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1, got {getattr(args, name)}")
    if args.episodes_per_task < 0:
        parser.error(f"--episodes_per_task must be >= 0, got {args.episodes_per_task}")
    if args.reference not in args.methods:
        parser.error(f"--reference {args.reference} is not among --methods {' '.join(args.methods)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    base = yaml.safe_load(Path(args.config).read_text())
    steps, skipped = plan(args, base)
    out = Path(args.out_dir)
    for name, why in skipped.items():
        print(f"skipping {name} ({METHODS[name].label}): {why}", file=sys.stderr)
    if args.reference in skipped:
        raise SystemExit(f"the reference method {args.reference} cannot run: {skipped[args.reference]}")
    print(f"evaluation sizes: {power_note(args)}")
    if args.dry_run or args.report_only:
        for step in steps:
            status = "done" if step.done else "to do"
            what = " ".join(step.command) if step.kind == "fit" else \
                f"copy {', '.join(BRANCHED)} of {out / WARM_START} into {out / step.run}"
            print(f"[{status}] {step.run} {step.kind}: {what}")
        if args.report_only:
            print(write_results(args, skipped, _read_wall(out)))
        return 0
    start = time.perf_counter()
    wall = _read_wall(out)
    for step in steps:
        if step.done:
            continue
        if step.kind == "branch":
            branch(out / WARM_START, out / step.run)
            continue
        config_path = Path(step.command[step.command.index("--config") + 1])
        write_text(config_path, yaml.safe_dump(step.config, sort_keys=False))
        print(f"== {step.run}: {' '.join(step.command)}", flush=True)
        began = time.perf_counter()
        try:
            code = run_fit(step.command)
        finally:
            wall[step.run] = wall.get(step.run, 0.0) + time.perf_counter() - began
            write_text(out / "wall_seconds.json", json.dumps(wall, indent=2))
        if code != 0:
            raise SystemExit(f"{step.run}: agentr fit exited with {code}; run the same command "
                             "again to continue where it stopped")
    print(write_results(args, skipped, wall))
    elapsed = time.perf_counter() - start
    print(f"\nwall time of this invocation: {elapsed / 60:.1f} min; per run (all invocations): "
          + ", ".join(f"{k} {v / 60:.1f} min" for k, v in wall.items())
          + f"; load average {load_average()}; results: {out / 'results.md'}")
    return 0


def run_fit(command: list[str]) -> int:
    """Run one `agentr fit` in its own process (a fresh engine and memory for each run)."""
    return subprocess.run(command).returncode


def _read_wall(out: Path) -> dict[str, float]:
    path = out / "wall_seconds.json"
    return json.loads(path.read_text()) if path.exists() else {}


if __name__ == "__main__":
    sys.exit(main())
