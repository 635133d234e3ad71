"""Where t' would fall under other forced-verdict rules, re-scored from a Phase I run's trees.

Every forced verdict in `trees/<task>.json` keeps the log-probabilities of Good / Bad / Uncertain
and, when calibrated, the content-free prior they were judged against. A pair whose walk judged
every step of its bad path (no step was judged Bad, so the walk reached the end) can therefore be
walked again under any rule without the engine. For each rule the table gives the verdicts it
calls Bad and, against the environment's first labelled mistake after the divergence
(`mistake_steps` of `tasks/<task>.stats.json`), where t' falls: equal, before, after, and the
mean distance; the end of the path (Direct-Revision) and the first step after the divergence
are the two fixed rules to compare with.

    python bench/rescore_verdicts.py RUN/phase1 [RUN2/phase1 ...] --out bench/results/critique.md
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Callable
from pathlib import Path

from report import write_report

from agentr.search.critique import VERDICTS, calibrated_choice

BAD = VERDICTS.index("Bad")
#: (name, rule): a rule says whether a step's forced verdict is Bad, from the step's
#: log-probabilities and the prior (both in `VERDICTS` order).
Rule = Callable[[list[float], list[float]], bool]


def _argmax(values: list[float]) -> int:
    return max(range(len(values)), key=lambda i: (values[i], -i))


RULES: tuple[tuple[str, Rule], ...] = (
    ("most likely verdict (calibrate_verdicts: false)", lambda lp, prior: _argmax(lp) == BAD),
    ("three-way calibration: largest gain over the prior",
     lambda lp, prior: _argmax([a - b for a, b in zip(lp, prior)]) == BAD),
    ("Bad-or-not calibration (calibrate_verdicts: true)",
     lambda lp, prior: calibrated_choice(lp, prior) == BAD),
    ("first step after the divergence", lambda lp, prior: True),
    ("end of the bad path (Direct-Revision)", lambda lp, prior: False),
)


def _paths(root: dict) -> dict[int, list[dict]]:
    """Node id -> the path from the root to it."""
    out, stack = {}, [(root, [root])]
    while stack:
        node, path = stack.pop()
        out[node["id"]] = path
        stack.extend((child, path + [child]) for child in node.get("children", []))
    return out


def fully_judged_pairs(run: Path) -> list[dict]:
    """The pairs of `run` whose bad-path steps after the divergence all have a forced verdict
    with a prior: {"steps": {step: (logprobs, prior)}, "end", "mistake"}."""
    pairs = []
    for tree_file in sorted((run / "trees").glob("*.json")):
        tree = json.loads(tree_file.read_text())
        stats = json.loads((run / "tasks" / f"{tree_file.stem}.stats.json").read_text())
        paths = _paths(tree["root"])
        for pair, mistake in zip(tree["pairs"], stats.get("mistake_steps") or []):
            bad = paths[pair["bad"]]
            steps = {}
            for step in range(pair["divergence_step"] + 1, len(bad)):
                critique = tree["critiques"].get(str(bad[step]["id"]), {})
                if "logprobs" not in critique or "baseline" not in critique:
                    break
                steps[step] = ([critique["logprobs"][v] for v in VERDICTS],
                               [critique["baseline"][v] for v in VERDICTS])
            else:
                pairs.append({"steps": steps, "end": len(bad) - 1, "mistake": mistake})
    return pairs


def placement(pairs: list[dict], rule: Rule) -> dict:
    """Bad verdicts of `rule` over the pairs' steps, and where its t' falls against the mistakes."""
    labelled = [p for p in pairs if p["mistake"] is not None]
    offsets = []
    for pair in labelled:
        transition = next((k for k, (lp, prior) in sorted(pair["steps"].items()) if rule(lp, prior)),
                          pair["end"])
        offsets.append(transition - pair["mistake"])
    judged = [s for p in pairs for s in p["steps"].values()]
    n = len(offsets) or math.nan
    return {"bad": sum(rule(*s) for s in judged), "judged": len(judged), "pairs": len(offsets),
            "equal": sum(o == 0 for o in offsets) / n, "before": sum(o < 0 for o in offsets) / n,
            "after": sum(o > 0 for o in offsets) / n, "distance": sum(map(abs, offsets)) / n}


def table(run: Path) -> list[str]:
    pairs = fully_judged_pairs(run)
    stats = json.loads((run / "stats.json").read_text())
    prior = {v: round(x, 2) for v, x in (stats["runs"][-1].get("verdict_baseline") or {}).items()}
    lines = [f"`{run}`: verdict `{stats['verdict']}`, {len(pairs)} pairs with every step judged; "
             f"prior {prior}", "",
             "| rule | Bad verdicts | t' = mistake | before | after | mean distance |",
             "|---|---|---|---|---|---|"]
    for name, rule in RULES:
        p = placement(pairs, rule)
        lines.append(f"| {name} | {p['bad']}/{p['judged']} | {p['equal']:.0%} | {p['before']:.0%} | "
                     f"{p['after']:.0%} | {p['distance']:.2f} |")
    return lines + [""]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="Phase I run directories")
    parser.add_argument("--out", default="-", help='markdown file to write ("-": print only)')
    args = parser.parse_args(argv)
    lines = ["# Forced verdicts re-scored under other rules", ""]
    for run in args.runs:
        lines += table(run)
    write_report("\n".join(lines), args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
