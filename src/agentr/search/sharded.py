"""Phase I over the ranks of a multi-GPU run: tasks claimed one at a time, one merged dataset.

Every rank searches with its own engine in the same output directory (on a filesystem all ranks
share; checked first). Tasks are not dealt out in advance: a rank about to start a task claims
it by creating `claims/<token>/<task>` exclusively, so a rank that drew easy tasks takes more of
them and all ranks finish at about the same time. A finished task is written as in a
single-process `collect` (its `tasks/<task>.jsonl` is the done mark), so a resumed run skips it,
whichever rank searched it; claims belong to one attempt (its token) and never block a resume.

The ranks then wait for one another on marker files (`agentr.ranks.Rendezvous`, no collective
timeout), and rank 0 writes `dataset.jsonl` and `stats.json` for all tasks, with the counters of
every rank merged. A rank that raises stops the others at their next task with its error.

Output directory: as `agentr.search.collect`'s, plus `ranks/` (this attempt's markers) and
`claims/` (removed when a new attempt starts).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path

from agentr.engines.base import Engine
from agentr.envs.base import Environment
from agentr.ranks import Ranks, Rendezvous, shared_token
from agentr.search.collect import CollectResult, collect, prepare_out_dir, write_dataset
from agentr.search.run_dir import task_filename
from agentr.search.scheduler import search_tasks
from agentr.search.config import SearchConfig


def collect_sharded(
    engine: Engine,
    make_env: Callable[[], Environment],
    task_ids: Sequence[str],
    config: SearchConfig,
    out_dir: str | Path,
    ranks: Ranks,
    *,
    iteration: int = 1,
    alpha: float = 0.5,
    seed: int = 0,
    provenance: dict | None = None,
    progress: bool = True,
) -> CollectResult:
    """`agentr.search.collect.collect` over `ranks`; every rank calls it with the same arguments
    but its own engine, and every rank gets the merged result. One rank: `collect` itself."""
    if ranks.world == 1:
        return collect(engine, make_env, task_ids, config, out_dir, iteration=iteration, alpha=alpha,
                       seed=seed, provenance=provenance, progress=progress)
    out_dir = Path(out_dir)
    settings = dict(iteration=iteration, alpha=alpha, seed=seed)
    token = shared_token(ranks, out_dir)
    markers, claims = out_dir / "ranks", out_dir / "claims"

    def prepare() -> None:  # every rank is past earlier attempts: their files can go
        shutil.rmtree(markers, ignore_errors=True)
        shutil.rmtree(claims, ignore_errors=True)
        prepare_out_dir(engine, make_env, task_ids, config, out_dir, provenance=provenance, **settings)

    prepared = Rendezvous(markers, f"{token}-prepare", ranks)
    if ranks.is_main:
        prepared.run(prepare)
    prepared.wait([0])
    (claims / token).mkdir(parents=True, exist_ok=True)

    searched = Rendezvous(markers, f"{token}-search", ranks)

    def claim(task_id: str) -> bool:  # raises another rank's failure: this rank stops at its next task
        return searched.claim(claims / token, task_filename(task_id))

    searched.run(lambda: search_tasks(engine, make_env, task_ids, config, out_dir, claim=claim,
                                      progress=progress and ranks.is_main,
                                      record=(token, ranks.rank), **settings))
    searched.wait()
    merged = Rendezvous(markers, f"{token}-merge", ranks)
    if ranks.is_main:
        merged.run(lambda: write_dataset(out_dir, task_ids, config, progress=progress, **settings))
    merged.wait([0])
    stats = json.loads((out_dir / "stats.json").read_text(encoding="utf-8"))
    return CollectResult(dataset=out_dir / "dataset.jsonl", trees=out_dir / "trees", stats=stats)
