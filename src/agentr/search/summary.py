"""Phase I's statistics: totals over tasks, transition-point accuracy, the printed report.

Pure functions of the per-task counters (`Phase1Task.stats`). Transition-point accuracy: where
the environment labels mistakes (`Environment.label_mistakes`), every pair's first labelled
mistake after the divergence step is the reference, and "transition_accuracy" gives, for the
model's t' (under `transition: model`), for the end-of-path rule (Direct-Revision) and for a
uniformly random step after the divergence (seeded per task), on the same pairs, the fractions
of pairs whose t' equals the reference, lies before it or after it, and the mean absolute
distance (pairs whose bad path has no labelled mistake are left out and counted apart). Without
labels the key is absent.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from agentr.search.critique import VERDICT_SOURCES, VERDICTS
from agentr.trajectory import Trajectory


def placement(steps: Sequence[int], references: Sequence[int | None]) -> dict:
    """How transition points `steps` lie against `references` (the first labelled mistake of
    each pair; None: the pair's bad path has none, left out): the fractions of pairs where they
    are equal, before, after, and the mean absolute distance (all None without a pair)."""
    pairs = [(s, r) for s, r in zip(steps, references, strict=True) if r is not None]
    if not pairs:
        return dict.fromkeys(("equal", "before", "after", "mean_distance"))
    share = lambda hit: round(sum(map(hit, pairs)) / len(pairs), 4)  # noqa: E731
    return {
        "equal": share(lambda p: p[0] == p[1]),
        "before": share(lambda p: p[0] < p[1]),
        "after": share(lambda p: p[0] > p[1]),
        "mean_distance": round(sum(abs(s - r) for s, r in pairs) / len(pairs), 4),
    }


def transition_accuracy(per_task: list[dict], transition: str) -> dict | None:
    """The "transition_accuracy" figures of `stats.json` (see the module doc); None when no task
    has mistake labels."""
    labelled = [s for s in per_task if "mistake_steps" in s]
    if not labelled:
        return None
    gather = lambda key: [x for s in labelled for x in s[key]]  # noqa: E731
    mistakes = gather("mistake_steps")
    rules = {"end": gather("bad_path_ends"), "random": gather("random_steps")}
    if transition == "model":
        rules = {"model": gather("transition_steps"), **rules}
    found = [m for m in mistakes if m is not None]
    return {
        "pairs": len(mistakes),
        "pairs_with_mistake": len(found),
        "mean_mistake_step": round(sum(found) / len(found), 4) if found else None,
        **{rule: placement(steps, mistakes) for rule, steps in rules.items()},
    }


#: The per-task counters that hold one entry per critique walk, i.e. per revision trajectory,
#: in the order the task's file lists them.
PER_REVISION = ("divergence_steps", "transition_steps", "transition_sources", "bad_path_ends",
                "random_steps", "mistake_steps")


def counted_as_read(task_stats: dict, trajectories: Sequence[Trajectory]) -> dict:
    """A task's counters for the trajectories read from its file: fewer than it wrote when a
    torn last line was skipped, which takes the last of them (revisions come first, then good
    paths), so the per-revision entries beyond those read go too."""
    kinds = Counter(t.kind for t in trajectories)
    out = {**task_stats, "revision": kinds["revision"], "good": kinds["good"]}
    for key in PER_REVISION:
        if out.get(key) is not None:
            out[key] = out[key][:kinds["revision"]]
    return out


def summarize(per_task: list[dict], transition: str = "model") -> dict:
    """Totals over per-task stats (`transition`: the run's `SearchConfig.transition`)."""
    transitions = [t for s in per_task for t in s["transition_steps"]]
    offsets = [t - d for s in per_task for t, d in zip(s["transition_steps"], s["divergence_steps"])]
    total = lambda key: sum(s[key] for s in per_task)  # noqa: E731
    return {
        "trees_searched": len(per_task),
        "trees_with_good_path": sum(s["good_paths"] > 0 for s in per_task),
        "leaf_paths": total("leaf_paths"),
        "good_paths": total("good_paths"),
        "bad_paths": total("bad_paths"),
        "pairs_found": total("pairs_found"),
        "revision_trajectories": total("revision"),
        "good_trajectories": total("good"),
        "mean_transition_step": sum(transitions) / len(transitions) if transitions else None,
        "mean_steps_after_divergence": sum(offsets) / len(offsets) if offsets else None,
        "transition_step_histogram": dict(sorted(Counter(transitions).items())),
        "transition_sources": dict(sorted(Counter(x for s in per_task for x in s["transition_sources"]).items())),
        "verdicts": {v: sum(s["verdicts"][v] for s in per_task) for v in VERDICTS},
        "verdict_sources": {v: sum(s["verdict_sources"][v] for s in per_task) for v in VERDICT_SOURCES},
        "unparsed_verdicts": total("unparsed_verdicts"),
        "env_steps": total("env_steps"),
        "replay_steps": total("replay_steps"),
        "expansions": total("expansions"),
        "duplicates_dropped": total("duplicates"),
        "tokens_generated": total("search_tokens") + total("critique_tokens"),
        "search_tokens": total("search_tokens"),
        "critique_tokens": total("critique_tokens"),
        "critique_requests": total("critique_requests"),
        **({"transition_accuracy": accuracy}
           if (accuracy := transition_accuracy(per_task, transition)) is not None else {}),
    }


def phase1_report(stats: dict) -> str:
    """A few lines on a finished Phase I: trajectories, verdicts and where t' came from, and
    (with mistake labels) the transition-point accuracy of each rule."""
    sources = ", ".join(f"{k} {v}" for k, v in stats["verdict_sources"].items())
    verdicts = ", ".join(f"{k} {v}" for k, v in stats["verdicts"].items())
    lines = [
        f"Phase I: {stats['trees_searched']} trees, {stats['revision_trajectories']} revision + "
        f"{stats['good_trajectories']} good trajectories, {stats['wall_seconds']:.0f} s",
        f"  verdicts: {verdicts} (by source: {sources}"
        f"{'; forced ones calibrated' if stats.get('calibrate_verdicts') else ''})",
        f"  t' sources: {stats['transition_sources']}; t' histogram: "
        f"{stats['transition_step_histogram']}",
    ]
    accuracy = stats.get("transition_accuracy")
    if accuracy is not None:
        lines.append(f"  t' against the first labelled mistake ({accuracy['pairs_with_mistake']} of "
                     f"{accuracy['pairs']} pairs have one):")
        for rule in ("model", "end", "random"):
            if rule in accuracy and accuracy[rule]["equal"] is not None:
                a = accuracy[rule]
                lines.append(f"    {rule:>6}: equal {a['equal']:.0%}, before {a['before']:.0%}, "
                             f"after {a['after']:.0%}, mean distance {a['mean_distance']:.2f}")
    return "\n".join(lines)
