"""The files of a Phase I run directory (the layout is in `agentr.search.collect`)."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import quote

from agentr.errors import ProvenanceError
from agentr.jsonfiles import write_json
from agentr.provenance import changed_keys
from agentr.search.task import Phase1Task
from agentr.trajectory import write_jsonl_atomic


def task_filename(task_id: str) -> str:
    """`task_id` made safe as a file name."""
    return quote(str(task_id), safe="") or "_"


def check_run_settings(out_dir: Path, settings: dict) -> None:
    path = out_dir / "collect.json"
    if path.exists():
        previous = json.loads(path.read_text())
        if previous != settings:
            raise ProvenanceError(
                f"{out_dir} holds Phase I data made with other settings or from another model, "
                f"adapter, environment or split (changed: {', '.join(changed_keys(previous, settings))}); "
                f"resume with the same ones, or start afresh: delete {out_dir} or write elsewhere "
                "(--out_dir of `agentr collect`, trainer.default_root_dir of `agentr fit`)"
            )
    else:
        write_json(path, settings, indent=2)


def run_history(stats_path: Path, this_run: dict) -> list[dict]:
    """The runs recorded in stats.json, plus `this_run` unless it searched nothing."""
    runs = []
    if stats_path.exists():
        runs = json.loads(stats_path.read_text()).get("runs", [])
    if this_run["trees_searched"] or not runs:  # a replay of finished tasks is no new run
        runs.append(this_run)
    return runs


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
