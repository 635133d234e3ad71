"""The report page: one self-contained HTML file built from `read_run`'s dict.

The learning curve (an SVG chart) and the per-stage tables are written here as static HTML, so
they show even where scripts are off. The browsable parts (each iteration's tasks and search
trees, the training trajectories, the evaluation episodes) are drawn by the page's inline
script from the run's data, embedded once as JSON in `<script type="application/json"
id="agentr-data">`; a tree is built only when its task is opened. Nothing is fetched at view
time. The page's style and script are files beside this module (`page.css`, `page.js`, shipped
as package data), inlined into the page.
"""

from __future__ import annotations

import html
import json
from collections.abc import Callable
from importlib import resources
from datetime import datetime, timezone

from agentr.report.summary import format_seconds, kept_text, percent, stage_times, success_text

#: Series of the learning curve: metric key in eval.json -> legend label, colour.
CURVE = {
    "success_rate": ("success rate", "#1f77b4"),
    "avg_reward": ("average reward", "#2ca02c"),
    "repeat_fraction": ("repeated actions", "#d62728"),
    "revision_rate": ("revision rate", "#9467bd"),
}


def render(run: dict) -> str:
    """The whole page for `run` (a `read_run` result)."""
    stages = run["stages"]
    title = f"agentr report: {run['run_dir']}"
    body = [
        f"<header><h1>{_e(title)}</h1><p class='muted'>{_e(run['kind'])} run, "
        f"{len(stages)} stage(s); written {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC</p>"
        "<nav><a href='#curve'>Learning curve</a> <a href='#trees'>Search trees</a> "
        "<a href='#trajectories'>Training trajectories</a> <a href='#episodes'>Evaluation episodes</a></nav>"
        "</header>",
        "<section id='curve'><h2>Learning curve</h2>",
        learning_curve_svg(stages),
        stage_table(stages),
        evaluation_table(stages),
        phase1_table(stages),
        "</section>",
        "<section id='trees'><h2>Search trees</h2><p class='muted'>Per iteration, every task "
        "Phase I searched; open one to draw its tree. Legend: <span class='node good_leaf'>good "
        "leaf</span> <span class='node bad_leaf'>bad leaf</span> <span class='mark divergence'>"
        "&#9670; divergence</span> <span class='mark transition'>&#9986; transition t'</span> "
        "<span class='verdict Bad'>verdict</span>. Click a node for its reply, observation and "
        "the verifier's judgement.</p><div id='trees-view'></div></section>",
        "<section id='trajectories'><h2>Training trajectories</h2><p class='muted'>"
        "<span class='part bad'>bad prefix</span> <span class='part revision'>revision turn</span> "
        "<span class='part good'>good suffix</span>; <span class='trained'>trained</span> turns "
        "carry the loss.</p><div id='trajectories-view'></div></section>",
        "<section id='episodes'><h2>Evaluation episodes</h2><div id='episodes-view'></div></section>",
        "<noscript><p>The trees, trajectories and episodes are drawn by this page's script; "
        "enable JavaScript to browse them.</p></noscript>",
    ]
    data = json.dumps(run, ensure_ascii=False, separators=(",", ":")).replace("<", "\\u003c")
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<meta name='viewport' content='width=device-width, initial-scale=1'><title>{_e(title)}</title>"
        f"<style>\n{_asset('page.css')}</style></head><body>{''.join(body)}"
        f"<script type='application/json' id='agentr-data'>{data}</script>"
        f"<script>\n{_asset('page.js')}</script></body></html>\n"
    )


def _asset(name: str) -> str:
    """The text of a file shipped beside this module (package data: the page's CSS and JS)."""
    return resources.files(__package__).joinpath(name).read_text(encoding="utf-8")


def _e(value) -> str:
    return html.escape(str(value), quote=True)


def learning_curve_svg(stages: list[dict]) -> str:
    """Rates per stage on one [0, 1] axis, success with its interval as an error bar."""
    evaluated = [s for s in stages if "eval" in s]
    if not evaluated:
        return "<p class='muted'>No stage of this run was evaluated.</p>"
    width, height, left, right, top, bottom = 720, 280, 48, 170, 16, 40
    plot_w, plot_h = width - left - right, height - top - bottom
    step = plot_w / max(1, len(evaluated) - 1)
    x = lambda i: left + (i * step if len(evaluated) > 1 else plot_w / 2)  # noqa: E731
    y = lambda v: top + plot_h * (1 - max(0.0, min(1.0, v)))  # noqa: E731
    parts = [f"<svg id='curve-chart' xmlns='http://www.w3.org/2000/svg' viewBox='0 0 {width} {height}' "
             f"width='{width}' height='{height}' role='img' aria-label='learning curve'>"]
    for tick in (0, 0.25, 0.5, 0.75, 1.0):
        parts.append(f"<line x1='{left}' x2='{left + plot_w}' y1='{y(tick):.1f}' y2='{y(tick):.1f}' class='grid'/>"
                     f"<text x='{left - 6}' y='{y(tick) + 4:.1f}' text-anchor='end'>{tick:g}</text>")
    for i, stage in enumerate(evaluated):
        parts.append(f"<text x='{x(i):.1f}' y='{height - bottom + 18}' text-anchor='middle'>{_e(stage['name'])}</text>")
    for row, (key, (label, colour)) in enumerate(CURVE.items()):
        points = [(i, s["eval"]["metrics"][key]) for i, s in enumerate(evaluated) if key in s["eval"]["metrics"]]
        if not points:
            continue
        if key == "success_rate":
            for i, stage in enumerate(evaluated):
                interval = stage["eval"]["intervals"].get(key)
                if interval:
                    parts.append(f"<line class='ci' x1='{x(i):.1f}' x2='{x(i):.1f}' y1='{y(interval[0]):.1f}' "
                                 f"y2='{y(interval[1]):.1f}' stroke='{colour}'/>")
        path = " ".join(f"{x(i):.1f},{y(v):.1f}" for i, v in points)
        parts.append(f"<polyline class='series' data-metric='{key}' points='{path}' stroke='{colour}' fill='none'/>")
        for i, v in points:
            parts.append(f"<circle cx='{x(i):.1f}' cy='{y(v):.1f}' r='4' fill='{colour}'>"
                         f"<title>{_e(evaluated[i]['name'])}: {_e(label)} {v:.3f}</title></circle>")
        ly = top + 14 + 20 * row
        parts.append(f"<line x1='{width - right + 16}' x2='{width - right + 36}' y1='{ly - 4}' y2='{ly - 4}' "
                     f"stroke='{colour}' stroke-width='3'/><text x='{width - right + 42}' y='{ly}'>{_e(label)}</text>")
    parts.append("</svg>")
    return "".join(parts)


def stage_table(stages: list[dict]) -> str:
    head = ["stage", "success", "avg reward", "repeated actions", "loop turns", "revision rate",
            "avg turns", "Phase I kept (revision + good)", "Phase I", "training", "evaluation"]
    rows = []
    for stage in stages:
        metrics = stage.get("eval", {}).get("metrics", {})
        number = lambda k: f"{metrics[k]:.2f}" if k in metrics else "-"  # noqa: E731
        times = stage_times(stage)
        cells = [stage["name"], success_text(stage["eval"]) if "eval" in stage else "-",
                 number("avg_reward"), number("repeat_fraction"), number("loop_count"),
                 percent(metrics.get("revision_rate")), number("avg_turns"), kept_text(stage),
                 format_seconds(times["phase1"]), format_seconds(times["train"]), format_seconds(times["eval"])]
        rows.append("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in cells) + "</tr>")
    return ("<table id='stage-table'><thead><tr>" + "".join(f"<th>{_e(h)}</th>" for h in head)
            + "</tr></thead><tbody>" + "".join(rows) + "</tbody></table>")


def evaluation_table(stages: list[dict]) -> str:
    """Every metric of every evaluation (whatever eval.json holds), intervals beside values."""
    def cell(e: dict, key: str) -> str:
        text = _plain(e["metrics"].get(key, e["extra"].get(key)))
        if key in e["intervals"]:
            text += f" [{_plain(e['intervals'][key][0])}, {_plain(e['intervals'][key][1])}]"
        return text

    return _stage_record_table(stages, "eval", lambda e: [*e["metrics"], *e["extra"]], cell,
                               "Evaluation metrics (eval.json)", "evaluation-table")


def phase1_table(stages: list[dict]) -> str:
    """Every numeric Phase I statistic per iteration (whatever stats.json holds)."""
    return _stage_record_table(stages, "phase1",
                               lambda p: [k for k, v in p["stats"].items() if not isinstance(v, str)],
                               lambda p, key: _plain(p["stats"].get(key)),
                               "Phase I statistics (stats.json)", "phase1-table")


def _stage_record_table(stages: list[dict], record: str, keys: Callable[[dict], list[str]],
                        cell: Callable[[dict, str], str], summary: str, table_id: str) -> str:
    """A folded table of one record of the stages that have it (`stage[record]`): a row per key
    any of them has (`keys(record)`, first seen first), a column per stage, the record's
    fingerprint last; "" when no stage has the record."""
    having = [s for s in stages if record in s]
    if not having:
        return ""
    names: list[str] = []
    for stage in having:
        names += [k for k in keys(stage[record]) if k not in names]
    head = "".join(f"<th>{_e(s['name'])}</th>" for s in having)
    rows = []
    for key in names:
        cells = "".join(f"<td>{_e(cell(s[record], key))}</td>" for s in having)
        rows.append(f"<tr><th>{_e(key)}</th>{cells}</tr>")
    if any("fingerprint" in s[record] for s in having):
        cells = "".join(f"<td>{_e(_plain(s[record].get('fingerprint')))}</td>" for s in having)
        rows.append(f"<tr><th>fingerprint</th>{cells}</tr>")
    return (f"<details><summary>{summary}</summary><table id='{table_id}'>"
            f"<thead><tr><th></th>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table></details>")


def _plain(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3g}"
    if isinstance(value, dict):
        return ", ".join(f"{k}: {_plain(v)}" for k, v in value.items())
    if isinstance(value, list):
        return ", ".join(_plain(v) for v in value)
    return str(value)
