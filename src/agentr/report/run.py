"""Read a run directory into one JSON-ready dict: what the report page and the summary show.

Three kinds of directory are understood:

- a fit run (`trainer.default_root_dir`): `base/`, `iteration_<k>/` with `eval.json`,
  `episodes.jsonl`, `training.json`, `phase1/` (an `agentr collect` directory) or, for the
  warm start, `data.jsonl`;
- an `agentr collect` out_dir (`stats.json`, `trees/`, `tasks/`, `dataset.jsonl`);
- an `agentr evaluate` out_dir (`eval.json`, `episodes.jsonl`).

Fields other agentr versions add are carried through untouched where they are scalars or small
lists (new metrics, intervals given as `<metric>_ci: [lo, hi]`, fingerprints, verdict sources);
files or fields that are absent are left out, never guessed.

The amount embedded is bounded by `ReportLimits` (whole conversations and trees are what make
a paper-scale run large); every cut list says how many items it had in full.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path

from agentr.agent.conversation import HEADER_LEN
from agentr.agent.turn import REVISION_ACTION, is_revision, parse_action
from agentr.evaluation import EPISODES_FILE, SAMPLED_EPISODES_FILE


@dataclass
class ReportLimits:
    """How much of a run the report embeds (0: none of that kind).

    A paper-scale tree (8 simulations x 4 samples, 15-30 turns deep) holds a few hundred nodes,
    each with a reply and an observation, so trees dominate the page's size; the defaults keep
    a three-iteration paper-scale report within tens of megabytes.

    Attributes:
        max_trees: search trees per iteration; trees that produced revision trajectories come
            first, then those with a good path, then the rest, each group in task order.
        max_trajectories: training trajectories per iteration (revision ones first).
        max_episodes: evaluation episodes per stage whose conversations are embedded; the list
            of every episode's outcome is always complete.
        max_text: characters kept of each message, observation and verifier reply.
    """

    max_trees: int = 30
    max_trajectories: int = 100
    max_episodes: int = 50
    max_text: int = 1000

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if not isinstance(value, int) or value < 0:
                raise ValueError(f"ReportLimits.{name} must be an integer >= 0, got {value!r}")


def read_run(run_dir: str | Path, limits: ReportLimits | None = None) -> dict:
    """Everything the report shows of `run_dir` (see the module doc for what is read)."""
    run_dir = Path(run_dir)
    limits = limits or ReportLimits()
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run directory {run_dir} does not exist")
    if _is_collect_dir(run_dir):
        kind, stages = "collect", [_read_stage(run_dir, "phase1", None, limits, phase1=run_dir)]
    elif (run_dir / "eval.json").exists():
        kind, stages = "evaluate", [_read_stage(run_dir, "evaluation", None, limits)]
    else:
        kind, stages = "fit", []
        if (run_dir / "base").is_dir():
            stages.append(_read_stage(run_dir / "base", "base", None, limits))
        iterations = [p for p in run_dir.glob("iteration_*") if p.is_dir() and _iteration_number(p) is not None]
        for path in sorted(iterations, key=_iteration_number):
            stages.append(_read_stage(path, path.name, _iteration_number(path), limits, phase1=path / "phase1"))
        if not stages:
            raise ValueError(f"{run_dir} is not an agentr run directory (it has no base/, iteration_<k>/, "
                             "eval.json, trees/ or collect.json)")
    return {"run_dir": str(run_dir), "kind": kind, "limits": asdict(limits), "stages": stages}


def _is_collect_dir(path: Path) -> bool:
    return (path / "trees").is_dir() or (path / "collect.json").exists()


def _iteration_number(path: Path) -> int | None:
    match = re.fullmatch(r"iteration_(\d+)", path.name)
    return int(match.group(1)) if match else None


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None


def _cut(text, limit: int):
    """`text` cut to `limit` characters, saying how much was left out."""
    if not isinstance(text, str) or len(text) <= limit:
        return text
    return text[:limit] + f" … [{len(text) - limit} more characters]"


def _scalars(data: dict, limit: int = 2000) -> dict:
    """The entries of `data` small enough for a table cell (at most `limit` characters of JSON),
    whatever their type: numbers, text, short lists, small (nested) dicts."""
    return {k: v for k, v in data.items() if len(json.dumps(v, ensure_ascii=False)) <= limit}


# ---- stages ----------------------------------------------------------------------------------
def _read_stage(path: Path, name: str, iteration: int | None, limits: ReportLimits,
                phase1: Path | None = None) -> dict:
    stage: dict = {"name": name, "iteration": iteration}
    results = _read_json(path / "eval.json")
    if results is not None:
        stage["eval"] = _eval_summary(results)
        stage["episodes"] = _read_episodes(path, results, limits)
    training = _read_json(path / "training.json")
    if training is not None:
        stage["training"] = _scalars(training)
    if phase1 is not None and _is_collect_dir(phase1):
        stage["phase1"] = _read_phase1(phase1, limits)
    elif (path / "data.jsonl").exists():  # the warm start's expert demonstrations
        stage["trajectories"] = _read_trajectories(path / "data.jsonl", limits)
    return stage


def _eval_summary(results: dict) -> dict:
    metrics = results.get("metrics", {})
    summary = {
        "metrics": {k: v for k, v in metrics.items() if isinstance(v, (int, float))},
        "intervals": {k[: -len("_ci")]: v for k, v in metrics.items()
                      if k.endswith("_ci") and isinstance(v, list) and len(v) == 2},
        "extra": {k: v for k, v in metrics.items()
                  if not isinstance(v, (int, float)) and not k.endswith("_ci")},
        "num_episodes": results.get("num_episodes"),
        "num_successes": sum(bool(e.get("success")) for e in results.get("episodes", [])),
        "seconds": results.get("timing", {}).get("seconds"),
        "settings": _scalars(results.get("settings", {})),
    }
    if "fingerprint" in results:
        summary["fingerprint"] = results["fingerprint"]
    if "sampled" in results:
        summary["sampled"] = _eval_summary(results["sampled"])
    return summary


def _messages(messages: list[dict], limit: int, parts: list[str]) -> list[dict]:
    """The messages after the header, cut to `limit`, each with its part of the trajectory."""
    out = []
    for m, part in zip(messages[HEADER_LEN:], parts):
        item = {"role": m.get("role"), "content": _cut(m.get("content", ""), limit), "part": part}
        if m.get("train"):
            item["train"] = True
        out.append(item)
    return out


def _read_episodes(stage_dir: Path, results: dict, limits: ReportLimits) -> dict:
    """Every episode's outcome, greedy then sampled (`sample` set), and the conversations of the
    first `max_episodes`, those with a revision turn first (what a reader looks for)."""
    summaries = {e.get("task_id"): e for e in results.get("episodes", [])}
    items = []
    for name, sampled in ((EPISODES_FILE, False), (SAMPLED_EPISODES_FILE, True)):
        path = stage_dir / name
        if not path.exists():
            continue
        with open(path, encoding="utf-8") as f:
            for line in f:
                if not line.strip():
                    continue
                episode = json.loads(line)
                item = {k: episode.get(k) for k in ("task_id", "reward", "success", "turns", "error")}
                if sampled:
                    item["sample"] = (episode.get("meta") or {}).get("sample")
                else:
                    item.update({k: v for k, v in summaries.get(item["task_id"], {}).items()
                                 if k not in item and isinstance(v, (int, float, str, bool))})
                revision_action = episode.get("revision_action", REVISION_ACTION)
                item["revision_turns"] = sum(is_revision(a, revision_action) for a in episode.get("actions", []))
                item["key"] = str(item["task_id"]) + (f"#{item['sample']}" if sampled else "")
                item["_episode"] = episode
                items.append(item)
    if not items:  # conversations lost; the outcomes are still in eval.json
        items = [{**e, "revision_turns": None, "key": str(e.get("task_id"))} for e in results.get("episodes", [])]
    for item in sorted((i for i in items if "_episode" in i), key=lambda i: not i["revision_turns"])[:limits.max_episodes]:
        episode = item["_episode"]
        revision_action = episode.get("revision_action", REVISION_ACTION)
        messages = episode.get("messages", [])
        parts = [_episode_part(m, revision_action) for m in messages[HEADER_LEN:]]
        item["messages"] = _messages(messages, limits.max_text, parts)
    for item in items:
        item.pop("_episode", None)
    # greedy before sampled, each in task order (the files hold episodes as they ended)
    items.sort(key=lambda e: ("sample" in e, _natural_key(str(e.get("task_id"))), e.get("sample") or 0))
    return {"items": items, "total": len(items), "embedded": sum("messages" in i for i in items)}


def _episode_part(message: dict, revision_action: str) -> str:
    if message.get("role") == "assistant" and is_revision(parse_action(message.get("content", "")),
                                                          revision_action):
        return "revision"
    return "turn"


# ---- Phase I ---------------------------------------------------------------------------------
def _read_phase1(path: Path, limits: ReportLimits) -> dict:
    stats = _read_json(path / "stats.json") or {}
    settings = _read_json(path / "collect.json") or {}
    alpha = stats.get("alpha", settings.get("alpha"))
    tasks = []
    for stats_path in (path / "tasks").glob("*.stats.json"):
        task = _read_json(stats_path)
        task["_tree"] = path / "trees" / stats_path.name.replace(".stats.json", ".json")
        tasks.append(task)
    tasks.sort(key=lambda t: _natural_key(str(t.get("task_id"))))
    # the most informative trees first: with revision trajectories, with a good path, the rest
    ranked = sorted(range(len(tasks)), key=lambda i: (not tasks[i].get("revision"),
                                                      not tasks[i].get("good_paths"), i))
    chosen = set(ranked[: limits.max_trees])
    trees = []
    task_rows = []
    for i, task in enumerate(tasks):
        tree_path = task.pop("_tree")
        row = {k: task.get(k) for k in ("task_id", "nodes", "leaf_paths", "good_paths", "bad_paths",
                                        "best_reward", "revision", "good", "seconds")}
        if i in chosen and tree_path.exists():
            row["tree"] = len(trees)
            trees.append(read_tree(tree_path, alpha, limits.max_text))
        task_rows.append(row)
    dataset = path / "dataset.jsonl"
    phase1 = {
        "stats": _scalars(stats),
        "alpha": alpha,
        "mode": stats.get("mode", settings.get("config", {}).get("mode")),
        "tasks": task_rows,
        "trees": trees,
        "trajectories": _read_trajectories(dataset, limits) if dataset.exists() else None,
    }
    if "fingerprint" in settings:
        phase1["fingerprint"] = settings["fingerprint"]
    return phase1


def _natural_key(text: str) -> list:
    return [int(s) if s.isdigit() else s for s in re.split(r"(\d+)", text)]


def read_tree(path: Path, alpha: float | None, max_text: int = 2000) -> dict:
    """One `trees/<task>.json` with every node marked for drawing.

    Each node gets `marks`: "good_leaf" / "bad_leaf" (a terminal leaf whose reward is >= alpha
    or not), "divergence" and "transition" (a pair's lowest common ancestor and its transition
    point t' on the bad path, when the tree records its pairs), and `critique` (the verifier's
    reply and verdict) when the node was judged.
    """
    tree = json.loads(path.read_text(encoding="utf-8"))
    nodes: dict[int, dict] = {}
    parents: dict[int, dict | None] = {}
    stack = [(tree["root"], None)]
    while stack:
        node, parent = stack.pop()
        nodes[node["id"]], parents[node["id"]] = node, parent
        node["marks"] = []
        for key in ("response", "observation"):
            if key in node:
                node[key] = _cut(node[key], max_text)
        stack.extend((child, node) for child in node.get("children", []))
        if not node.get("children") and node.get("terminal") and parent is not None and alpha is not None:
            node["marks"].append("good_leaf" if node.get("reward", 0.0) >= alpha else "bad_leaf")
    for key, critique in (tree.get("critiques") or {}).items():
        node = nodes.get(int(key))
        if node is not None:
            node["critique"] = {k: _cut(v, max_text) for k, v in critique.items()}
    pairs = []
    for index, pair in enumerate(tree.get("pairs") or []):
        bad = _path_to(nodes.get(pair.get("bad")), parents)
        marks = {"divergence": pair.get("divergence_step"), "transition": pair.get("transition_step")}
        entry = dict(pair, index=index)
        for mark, depth in marks.items():
            if isinstance(depth, int) and 0 <= depth < len(bad):
                bad[depth]["marks"].append(mark)
                entry[f"{mark}_node"] = bad[depth]["id"]
        pairs.append(entry)
    for node in nodes.values():
        node["marks"] = sorted(set(node["marks"]))
        if not node["marks"]:
            del node["marks"]
    out = {"task_id": tree.get("task_id"), "env": tree.get("env"), "root": tree["root"],
           "pairs": pairs, "alpha": alpha}
    return out


def _path_to(node: dict | None, parents: dict) -> list[dict]:
    """The nodes from the root to `node` (empty for None)."""
    path = []
    while node is not None:
        path.append(node)
        node = parents[node["id"]]
    return path[::-1]


# ---- training trajectories -------------------------------------------------------------------
def _read_trajectories(path: Path, limits: ReportLimits) -> dict:
    """The first `max_trajectories` trajectories (revision ones first) with their parts marked."""
    revision, other, counts = [], [], {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            record = json.loads(line)
            kind = record.get("kind")
            counts[kind] = counts.get(kind, 0) + 1
            bucket = revision if kind == "revision" else other
            if len(bucket) < limits.max_trajectories:
                bucket.append(record)
    kept = (revision + other)[: limits.max_trajectories]
    items = []
    for record in kept:
        messages = record.get("messages", [])
        meta = record.get("meta", {})
        items.append({"id": record.get("id"), "task_id": record.get("task_id"), "kind": record.get("kind"),
                      "meta": _scalars({k: _cut(v, limits.max_text) for k, v in meta.items()}),
                      "messages": _messages(messages, limits.max_text, _trajectory_parts(record))})
    return {"items": items, "total": sum(counts.values()), "counts": counts}


def _trajectory_parts(record: dict) -> list[str]:
    """Per message after the header: "bad" (the bad prefix), "revision" (the revision turn and
    its answer) or "good" (the good suffix, or a whole good/expert trajectory)."""
    count = len(record.get("messages", [])) - HEADER_LEN
    t = record.get("meta", {}).get("transition_step")
    if record.get("kind") != "revision" or not isinstance(t, int):
        return ["good"] * count
    return ["bad"] * (2 * t) + ["revision"] * 2 + ["good"] * max(0, count - 2 * t - 2)
