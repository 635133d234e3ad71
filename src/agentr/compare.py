"""Paired comparison of two evaluations on the same tasks: `agentr compare A B`.

Two evaluations (eval.json files written by `agentr evaluate` or the `EvaluationCallback`)
are compared episode by episode, matched by task id (and sample index, for sampled
evaluation): their difference in success rate and average reward, A minus B, with a paired
bootstrap interval over tasks (the matched episodes of a task are resampled together), and,
where each task has one episode, the exact McNemar test of the success columns. A "difference"
whose interval excludes 0 (and whose p-value is small) is one the data can tell apart; two
evaluations that agree on every episode give exactly [0, 0] and p = 1.

`compare_paths` accepts eval.json files, stage directories holding one, or run directories
(every stage with an eval.json: base, iteration_0, iteration_1, ...), compared stage by stage.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from agentr.intervals import BOOTSTRAP_RESAMPLES, CONFIDENCE, cluster_bootstrap_interval, mcnemar_exact_p

PAIRED_METHOD = f"paired bootstrap over tasks ({BOOTSTRAP_RESAMPLES} resamples, percentile)"


def _key(episode: dict) -> tuple[str, int | None]:
    return str(episode["task_id"]), episode.get("sample")


def _index(episodes: list[dict], name: str) -> dict[tuple[str, int | None], dict]:
    indexed = {}
    for e in episodes:
        key = _key(e)
        if key in indexed:
            raise ValueError(f"{name}: task {key[0]!r} (sample {key[1]}) appears twice; cannot pair episodes")
        indexed[key] = e
    return indexed


def compare_episodes(a: list[dict], b: list[dict], seed: int = 0) -> dict:
    """The paired difference A - B of two lists of episode summaries (eval.json "episodes").

    Returns num_tasks, num_pairs, success_a, success_b, success_diff, success_diff_ci,
    reward_diff, reward_diff_ci, only_a / only_b (pairs where only A / only B succeeded),
    mcnemar_p (None unless every task has one episode) and interval_method.

    Raises:
        ValueError: the two lists do not hold the same (task, sample) episodes.
    """
    ia, ib = _index(a, "A"), _index(b, "B")
    if ia.keys() != ib.keys():
        only_a, only_b = sorted(ia.keys() - ib.keys()), sorted(ib.keys() - ia.keys())
        raise ValueError(
            f"A and B are not evaluations of the same episodes: {len(ia)} vs {len(ib)}; "
            f"only in A: {_sample_keys(only_a)}; only in B: {_sample_keys(only_b)} "
            "(compare evaluations of the same tasks, episodes_per_task and num_tasks)")
    if not ia:
        raise ValueError("A and B have no episodes to compare")
    keys = sorted(ia, key=lambda k: (k[0], -1 if k[1] is None else k[1]))
    success_diff: dict[str, list[float]] = {}
    reward_diff: dict[str, list[float]] = {}
    only_a = only_b = 0
    for key in keys:
        ea, eb = ia[key], ib[key]
        sa, sb = bool(ea["success"]), bool(eb["success"])
        only_a += sa and not sb
        only_b += sb and not sa
        success_diff.setdefault(key[0], []).append(float(sa) - float(sb))
        reward_diff.setdefault(key[0], []).append(float(ea["reward"]) - float(eb["reward"]))
    n = len(keys)
    one_per_task = len(success_diff) == n
    return {
        "num_tasks": len(success_diff),
        "num_pairs": n,
        "success_a": sum(bool(ia[k]["success"]) for k in keys) / n,
        "success_b": sum(bool(ib[k]["success"]) for k in keys) / n,
        "success_diff": sum(map(sum, success_diff.values())) / n,
        "success_diff_ci": list(cluster_bootstrap_interval(list(success_diff.values()), seed=seed)),
        "reward_diff": sum(map(sum, reward_diff.values())) / n,
        "reward_diff_ci": list(cluster_bootstrap_interval(list(reward_diff.values()), seed=seed)),
        "only_a": only_a,
        "only_b": only_b,
        "mcnemar_p": mcnemar_exact_p(only_a, only_b) if one_per_task else None,
        "interval_method": f"{CONFIDENCE:.0%} {PAIRED_METHOD}",
    }


def _sample_keys(keys: list, shown: int = 3) -> str:
    if not keys:
        return "none"
    text = ", ".join(k[0] if k[1] is None else f"{k[0]}#{k[1]}" for k in keys[:shown])
    return text + (f" and {len(keys) - shown} more" if len(keys) > shown else "")


def compare_results(a: dict, b: dict, seed: int = 0) -> dict:
    """{"greedy": paired difference of the headline episodes, "sampled": of the sampled ones
    (only when both evaluations have them)} of two eval.json contents."""
    out = {"greedy": compare_episodes(a["episodes"], b["episodes"], seed=seed)}
    if "sampled" in a and "sampled" in b:
        out["sampled"] = compare_episodes(a["sampled"]["episodes"], b["sampled"]["episodes"], seed=seed)
    return out


def _stage_order(name: str) -> tuple[int, int, str]:
    """base, then iteration_0, iteration_1, ... (numerically), then anything else."""
    if name == "base":
        return (0, 0, name)
    match = re.fullmatch(r"iteration_(\d+)", name)
    return (1, int(match.group(1)), name) if match else (2, 0, name)


def load_evaluations(path: str | os.PathLike) -> tuple[str, dict[str, dict]]:
    """("file" | "run", {stage: eval.json contents}) of an eval.json, a directory holding one,
    or a run directory (its stage directories with an eval.json, in stage order)."""
    path = Path(path)
    if path.is_dir() and (path / "eval.json").is_file():
        path = path / "eval.json"
    if path.is_file():
        return "file", {path.parent.name: _read(path)}
    if path.is_dir():
        stages = sorted((p.parent.name for p in path.glob("*/eval.json")), key=_stage_order)
        if stages:
            return "run", {s: _read(path / s / "eval.json") for s in stages}
        raise ValueError(f"{path}: no eval.json in it or in its stage directories (base/, iteration_k/)")
    raise ValueError(f"{path}: no such file or directory")


def _read(path: Path) -> dict:
    try:
        results = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not a JSON file ({e})") from e
    if not isinstance(results, dict) or "episodes" not in results:
        raise ValueError(f"{path}: not an evaluation (no per-episode summaries under 'episodes')")
    return results


def compare_paths(a: str | os.PathLike, b: str | os.PathLike, seed: int = 0) -> dict[str, dict]:
    """{stage: compare_results} of two evaluations or two runs (stage by stage, the stages both
    have). Raises ValueError for a file against a run, or runs without a stage in common."""
    kind_a, evals_a = load_evaluations(a)
    kind_b, evals_b = load_evaluations(b)
    if kind_a != kind_b:
        raise ValueError(f"compare two eval.json files or two run directories; got a {kind_a} "
                         f"({a}) and a {kind_b} ({b})")
    if kind_a == "file":
        (name_a, ra), (name_b, rb) = next(iter(evals_a.items())), next(iter(evals_b.items()))
        return {name_a if name_a == name_b else f"{name_a} vs {name_b}": compare_results(ra, rb, seed)}
    common = [s for s in evals_a if s in evals_b]
    if not common:
        raise ValueError(f"{a} ({', '.join(evals_a)}) and {b} ({', '.join(evals_b)}) have no "
                         "evaluated stage in common")
    out = {}
    for stage in common:
        try:
            out[stage] = compare_results(evals_a[stage], evals_b[stage], seed)
        except ValueError as e:
            raise ValueError(f"stage {stage}: {e}") from e
    return out


def format_points(diff: float, ci: list[float]) -> str:
    """A difference of rates in percentage points with its interval: "+5.0 [-10.0, +20.0]"."""
    return f"{100 * diff:+.1f} [{100 * ci[0]:+.1f}, {100 * ci[1]:+.1f}]"


def format_comparison(comparisons: dict[str, dict]) -> str:
    """A text table of `compare_paths`'s result, one row per stage and evaluation kind."""
    header = ("stage", "episodes", "success A", "success B", "A - B, points (95% CI)",
              "McNemar p", "reward A - B (95% CI)")
    rows = [header]
    for stage, kinds in comparisons.items():
        for kind, c in kinds.items():
            p = "-" if c["mcnemar_p"] is None else f"{c['mcnemar_p']:.3f}"
            rows.append((stage if kind == "greedy" else f"{stage} (sampled)",
                         f"{c['num_pairs']} on {c['num_tasks']} tasks",
                         f"{100 * c['success_a']:.1f}%", f"{100 * c['success_b']:.1f}%",
                         format_points(c["success_diff"], c["success_diff_ci"]), p,
                         f"{c['reward_diff']:+.3f} [{c['reward_diff_ci'][0]:+.3f}, "
                         f"{c['reward_diff_ci'][1]:+.3f}]"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = [" | ".join(v.ljust(w) for v, w in zip(r, widths)) for r in rows]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(lines)
