"""The files of a Phase I run directory (the layout is in `agentr.search.collect`)."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import quote

from agentr.errors import ProvenanceError
from agentr.jsonfiles import write_json
from agentr.provenance import changed_keys
from agentr.search.config import output_settings
from agentr.search.task import Phase1Task
from agentr.trajectory import write_jsonl_atomic


def task_filename(task_id: str) -> str:
    """`task_id` made safe as a file name."""
    return quote(str(task_id), safe="") or "_"


def check_run_settings(out_dir: Path, settings: dict) -> None:
    """Record `settings` (the search's under "config") in `out_dir/collect.json`, or raise
    `ProvenanceError` when the run there was made with others. Only the search settings that
    shape the output are recorded and compared (`output_settings`), so a run written by an
    older agentr, which recorded them all, resumes too."""
    settings = _shaping(settings)
    path = out_dir / "collect.json"
    if path.exists():
        previous = _shaping(json.loads(path.read_text()))
        if previous != settings:
            raise ProvenanceError(
                f"{out_dir} holds Phase I data made with other settings or from another model, "
                f"adapter, environment or split (changed: {', '.join(changed_keys(previous, settings))}); "
                f"resume with the same ones, or start afresh: delete {out_dir} or write elsewhere "
                "(--out_dir of `agentr collect`, trainer.default_root_dir of `agentr fit`)"
            )
    else:
        write_json(path, settings, indent=2)


def _shaping(settings: dict) -> dict:
    """`settings` with its search settings (if any) reduced to those that shape the output."""
    if "config" not in settings:
        return settings
    return {**settings, "config": output_settings(settings["config"])}


#: Where each run of the search keeps its counters, one file per run and rank.
RUNS_DIR = "runs"


def run_record_path(out_dir: Path, run: str, rank: int = 0) -> Path:
    """The file of rank `rank`'s counters in run `run` (rewritten as its tasks finish)."""
    return out_dir / RUNS_DIR / f"{run}.{rank}.json"


def run_history(out_dir: Path) -> list[dict]:
    """stats.json's "runs": one entry per run of the search, oldest first, its ranks merged,
    from the run records, so that a killed run keeps the time and calls of the tasks it
    finished. A run that called no engine (a replay of finished tasks) is no new run, unless
    there is no other. The runs of a stats.json written before run records existed come first."""
    by_run: dict[str, list[dict]] = {}
    for path in sorted((out_dir / RUNS_DIR).glob("*.json")):
        record = json.loads(path.read_text())
        by_run.setdefault(record["run"], []).append(record)
    runs = sorted((_merged(records) for records in by_run.values()), key=lambda r: r["started"])
    searched = [r for r in runs if any(r["engine_calls"].values())]
    stats_path = out_dir / "stats.json"
    older = json.loads(stats_path.read_text()).get("runs", []) if stats_path.exists() else []
    return [r for r in older if "run" not in r] + (searched or runs[-1:])


def _merged(records: list[dict]) -> dict:
    """One run's entry from its ranks' records; its rates are over the longest wall time."""
    wall = max(r["wall_seconds"] for r in records)
    trees = sum(r["trees_searched"] for r in records)
    steps = sum(r["env_steps"] for r in records)
    total = lambda key: {k: sum(r[key][k] for r in records) for k in records[0][key]}  # noqa: E731
    return {
        "run": records[0]["run"],
        "started": min(r["started"] for r in records),
        "tasks_resumed": min(r["tasks_resumed"] for r in records),
        "trees_searched": trees,
        "wall_seconds": round(wall, 3),
        "trees_per_minute": round(60 * trees / wall, 3) if wall > 0 else None,
        "env_steps_per_second": round(steps / wall, 3) if wall > 0 else None,
        "engine_calls": total("engine_calls"),
        "engine_seconds": {k: round(v, 3) for k, v in total("engine_seconds").items()},
        "ranks": len(records),
        "verdict_baseline": next((r["verdict_baseline"] for r in records if r["verdict_baseline"]),
                                 None),
    }


def write_task(job: Phase1Task, tasks_dir: Path, trees_dir: Path) -> dict:
    """Write one finished task: tree, stats, then its trajectories (the done mark)."""
    name = task_filename(job.task_id)
    trajectories = job.trajectories()
    stats = job.stats(trajectories)
    revisions = [t for t in trajectories if t.kind == "revision"]  # one per walk, in walk order
    pairs = [{"good": walk.pair.good[-1].id, "bad": walk.pair.bad[-1].id,
              "divergence_step": walk.pair.divergence, "transition_step": walk.transition,
              "transition_source": walk.source, "trajectory": revision.id} for walk, revision in zip(job.critique.walks, revisions)]
    tree = {"task_id": job.task_id, "env": job.tree.env_name, "header": job.tree.header,
            "root": job.tree.root.to_dict(),
            "critiques": {i: v.to_dict() for i, v in job.critique.critiques.items()},
            "pairs": pairs}
    write_json(trees_dir / f"{name}.json", tree, separators=(",", ":"))
    write_json(tasks_dir / f"{name}.stats.json", stats)
    write_jsonl_atomic(tasks_dir / f"{name}.jsonl", trajectories)
    return stats
