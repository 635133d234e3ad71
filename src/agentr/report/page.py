"""The report page: one self-contained HTML file built from `read_run`'s dict.

The learning curve (an SVG chart) and the per-stage tables are written here as static HTML, so
they show even where scripts are off. The browsable parts (each iteration's tasks and search
trees, the training trajectories, the evaluation episodes) are drawn by the page's inline
script from the run's data, embedded once as JSON in `<script type="application/json"
id="agentr-data">`; a tree is built only when its task is opened. Nothing is fetched at view
time.
"""

from __future__ import annotations

import html
import json
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
        f"<style>{STYLE}</style></head><body>{''.join(body)}"
        f"<script type='application/json' id='agentr-data'>{data}</script>"
        f"<script>{SCRIPT}</script></body></html>\n"
    )


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
    evaluated = [s for s in stages if "eval" in s]
    if not evaluated:
        return ""
    keys: list[str] = []
    for stage in evaluated:
        e = stage["eval"]
        keys += [k for k in [*e["metrics"], *e["extra"]] if k not in keys]
    head = "".join(f"<th>{_e(s['name'])}</th>" for s in evaluated)
    rows = []
    for key in keys:
        cells = []
        for stage in evaluated:
            e = stage["eval"]
            text = _plain(e["metrics"].get(key, e["extra"].get(key)))
            if key in e["intervals"]:
                text += f" [{_plain(e['intervals'][key][0])}, {_plain(e['intervals'][key][1])}]"
            cells.append(f"<td>{_e(text)}</td>")
        rows.append(f"<tr><th>{_e(key)}</th>{''.join(cells)}</tr>")
    if any("fingerprint" in s["eval"] for s in evaluated):
        cells = "".join(f"<td>{_e(_plain(s['eval'].get('fingerprint')))}</td>" for s in evaluated)
        rows.append(f"<tr><th>fingerprint</th>{cells}</tr>")
    return (f"<details><summary>Evaluation metrics (eval.json)</summary><table id='evaluation-table'>"
            f"<thead><tr><th></th>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table></details>")


def phase1_table(stages: list[dict]) -> str:
    """Every numeric Phase I statistic per iteration (whatever stats.json holds)."""
    with_phase1 = [s for s in stages if "phase1" in s]
    if not with_phase1:
        return ""
    keys: list[str] = []
    for stage in with_phase1:
        keys += [k for k, v in stage["phase1"]["stats"].items() if k not in keys and not isinstance(v, str)]
    head = "".join(f"<th>{_e(s['name'])}</th>" for s in with_phase1)
    rows = []
    for key in keys:
        cells = "".join(f"<td>{_e(_plain(s['phase1']['stats'].get(key)))}</td>" for s in with_phase1)
        rows.append(f"<tr><th>{_e(key)}</th>{cells}</tr>")
    if any("fingerprint" in s["phase1"] for s in with_phase1):
        cells = "".join(f"<td>{_e(_plain(s['phase1'].get('fingerprint')))}</td>" for s in with_phase1)
        rows.append(f"<tr><th>fingerprint</th>{cells}</tr>")
    return (f"<details><summary>Phase I statistics (stats.json)</summary><table id='phase1-table'>"
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


STYLE = """
body{font:14px/1.45 system-ui,sans-serif;margin:0 auto;max-width:1200px;padding:0 16px 48px;color:#222}
h1{font-size:20px;margin:16px 0 4px}h2{font-size:17px;border-bottom:1px solid #ddd;padding-bottom:4px;margin-top:28px}
nav a{margin-right:14px}.muted{color:#666}
table{border-collapse:collapse;margin:8px 0;font-size:13px}td,th{border:1px solid #ddd;padding:3px 7px;text-align:left;vertical-align:top}
th{background:#f5f5f5}tr.clickable{cursor:pointer}tr.clickable:hover,tr.selected{background:#eef4ff}
svg text{font-size:11px;fill:#444}svg .grid{stroke:#eee}svg .series{stroke-width:2}svg .ci{stroke-width:6;opacity:.35}
.toolbar{margin:8px 0;display:flex;gap:12px;flex-wrap:wrap;align-items:center}
.split{display:flex;gap:16px;align-items:flex-start}.split>div{min-width:0}.list{flex:0 0 430px;max-height:560px;overflow:auto}
.detail{flex:1;max-height:700px;overflow:auto}
ul.tree,ul.tree ul{list-style:none;margin:0;padding-left:18px}ul.tree{padding-left:0}
ul.tree li{position:relative;border-left:1px solid #ccc;padding:2px 0 2px 10px}
ul.tree li:last-child{border-left-color:transparent}
ul.tree li::before{content:"";position:absolute;left:-1px;top:0;width:9px;height:13px;border-left:1px solid #ccc;border-bottom:1px solid #ccc}
.node{display:inline-block;border:1px solid #bbb;border-radius:4px;padding:0 5px;cursor:pointer;background:#fff;font-size:12px}
.node.good_leaf{border:2px solid #2ca02c;background:#eaf7ea}.node.bad_leaf{border:2px solid #d62728;background:#fbeaea}
.node.on-path{box-shadow:0 0 0 3px #ffd54f}.node.selected{outline:2px solid #1f77b4}
.node .stat{color:#666;margin-left:6px}.mark{font-weight:bold;margin-left:4px}
.mark.divergence{color:#1f77b4}.mark.transition{color:#ff7f0e}
.verdict{font-size:11px;border-radius:3px;padding:0 4px;margin-left:4px;color:#fff;background:#888}
.verdict.Good{background:#2ca02c}.verdict.Bad{background:#d62728}.verdict.Uncertain{background:#999}
.msg{border:1px solid #ddd;border-radius:5px;margin:6px 0;padding:4px 8px;white-space:pre-wrap;word-break:break-word;font-size:13px}
.msg .role{font-size:11px;color:#666;display:block}
.msg.assistant{background:#fafafa}.part{padding:0 4px;border-radius:3px}
.part.bad,.msg.bad{border-left:5px solid #d62728}.part.revision,.msg.revision{border-left:5px solid #ff7f0e;background:#fff4e5}
.part.good,.msg.good{border-left:5px solid #2ca02c}
.trained,.msg.trained .role::after{color:#1f77b4;font-weight:bold}.msg.trained .role::after{content:" · trained"}
.note{background:#fff8e1;border:1px solid #f0d98a;padding:4px 8px;border-radius:4px;margin:6px 0}
pre{white-space:pre-wrap;word-break:break-word;background:#f7f7f7;padding:6px;border-radius:4px;font-size:12px}
"""

SCRIPT = r"""
(function () {
  "use strict";
  var run = JSON.parse(document.getElementById("agentr-data").textContent);
  function el(tag, attrs, children) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) {
      if (k === "text") node.textContent = attrs[k];
      else if (k === "cls") node.className = attrs[k];
      else if (k.slice(0, 2) === "on") node.addEventListener(k.slice(2), attrs[k]);
      else node.setAttribute(k, attrs[k]);
    });
    (children || []).forEach(function (c) { if (c) node.appendChild(typeof c === "string" ? document.createTextNode(c) : c); });
    return node;
  }
  function num(v, digits) { return v === null || v === undefined ? "-" : (typeof v === "number" ? +v.toFixed(digits === undefined ? 3 : digits) + "" : String(v)); }
  function clear(node) { while (node.firstChild) node.removeChild(node.firstChild); return node; }
  function select(options, onchange) {
    var s = el("select", {onchange: function () { onchange(s.value); }});
    options.forEach(function (o) { s.appendChild(el("option", {value: o[0], text: o[1]})); });
    return s;
  }
  function cutNote(shown, total, what, setting) {
    return shown < total ? el("p", {cls: "note", text: "Showing " + shown + " of " + total + " " + what +
      " (report limit " + setting + "=" + run.limits[setting] + "; agentr report --" + setting + " N for more)."}) : null;
  }
  function conversation(messages) {
    return el("div", {}, messages.map(function (m) {
      var cls = "msg " + m.role + " " + (m.part || "") + (m.train ? " trained" : "");
      return el("div", {cls: cls}, [el("span", {cls: "role", text: m.role + (m.part && m.part !== "turn" ? " · " + m.part : "")}), m.content]);
    }));
  }
  function table(head, rows, onclick) {
    var body = el("tbody");
    rows.forEach(function (r, i) {
      var tr = el("tr", {cls: onclick && r.click !== false ? "clickable" : ""}, r.cells.map(function (c) { return el("td", {text: c}); }));
      tr.agentrKey = r.key;
      if (onclick && r.click !== false) tr.addEventListener("click", function () {
        Array.prototype.forEach.call(body.children, function (x) { x.classList.remove("selected"); });
        tr.classList.add("selected"); onclick(i);
      });
      body.appendChild(tr);
    });
    return el("table", {}, [el("thead", {}, [el("tr", {}, head.map(function (h) { return el("th", {text: h}); }))]), body]);
  }
  // Select entry `index` of a view's `menu` and show it.
  function choose(menu, show, index) { menu.value = String(index); show(index); }
  // A view's opener: select stage `name` in `menu`, show it, click the row whose key is `key`.
  function opener(stages, menu, show, body) {
    return function (name, key) {
      var index = stages.map(function (s) { return s.name; }).indexOf(name);
      if (index < 0) return;
      choose(menu, show, index);
      Array.prototype.forEach.call(body.querySelectorAll("tr"), function (tr) {
        if (tr.agentrKey === key) tr.click();
      });
      body.parentNode.closest("section").scrollIntoView();
    };
  }

  // ---- search trees ------------------------------------------------------------------------
  var phase1Stages = run.stages.filter(function (s) { return s.phase1; });
  function drawTree(tree, detail) {
    var byId = {}, parent = {}, elements = {};
    (function walk(n, p) { byId[n.id] = n; parent[n.id] = p; (n.children || []).forEach(function (c) { walk(c, n); }); })(tree.root, null);
    function pathTo(id) { var out = []; for (var n = byId[id]; n; n = parent[n.id]) out.push(n.id); return out; }
    function showNode(n) {
      Object.keys(elements).forEach(function (k) { elements[k].classList.remove("selected"); });
      elements[n.id].classList.add("selected");
      var items = [el("h4", {text: "node #" + n.id + " (depth " + n.depth + ")"}),
        el("p", {text: "action: " + (n.action === undefined ? "(root)" : n.action) + " · reward " + num(n.reward) +
          " · N " + n.N + " · W " + num(n.W) + (n.terminal ? " · terminal" : "") + (n.failed ? " · failed" : "") +
          ((n.marks || []).length ? " · " + n.marks.join(", ") : "")})];
      if (n.response !== undefined) items.push(el("h5", {text: "reply"}), el("pre", {text: n.response}));
      items.push(el("h5", {text: "observation"}), el("pre", {text: n.observation || ""}));
      if (n.critique) {
        var c = n.critique;
        items.push(el("h5", {}, ["verifier ", el("span", {cls: "verdict " + c.verdict, text: c.verdict})]));
        Object.keys(c).forEach(function (k) { if (k !== "verdict" && k !== "reply") items.push(el("p", {text: k + ": " + (typeof c[k] === "object" ? JSON.stringify(c[k]) : c[k])})); });
        items.push(el("pre", {text: c.reply}));
      }
      clear(detail).appendChild(el("div", {}, items));
    }
    function nodeElement(n) {
      var label = [n.action === undefined ? "root" : "#" + n.id + " " + (n.action === null ? "(no action)" : n.action)];
      var box = el("span", {cls: "node " + (n.marks || []).join(" "), "data-node": n.id,
        title: "reward " + num(n.reward) + ", N " + n.N + ", W " + num(n.W)}, label.concat([
        el("span", {cls: "stat", text: "r " + num(n.reward, 2) + " · N " + n.N + " · W " + num(n.W, 2)}),
        (n.marks || []).indexOf("divergence") >= 0 ? el("span", {cls: "mark divergence", title: "divergence step", text: "\u25c6"}) : null,
        (n.marks || []).indexOf("transition") >= 0 ? el("span", {cls: "mark transition", title: "transition point t'", text: "\u2702 t'"}) : null,
        n.critique ? el("span", {cls: "verdict " + n.critique.verdict, text: n.critique.verdict}) : null]));
      box.addEventListener("click", function (e) { e.stopPropagation(); showNode(n); });
      elements[n.id] = box;
      var li = el("li", {}, [box]);
      if (n.children && n.children.length) li.appendChild(el("ul", {}, n.children.map(nodeElement)));
      return li;
    }
    var pairs = el("div", {}, tree.pairs.map(function (p) {
      return el("div", {}, [el("a", {href: "#", text: "pair " + (p.index + 1), onclick: function (e) {
        e.preventDefault();
        Object.keys(elements).forEach(function (k) { elements[k].classList.remove("on-path"); });
        pathTo(p.good).concat(pathTo(p.bad)).forEach(function (id) { if (elements[id]) elements[id].classList.add("on-path"); });
      }}), ": good leaf #" + p.good + ", bad leaf #" + p.bad + ", divergence step " + p.divergence_step +
        (p.divergence_node !== undefined ? " (#" + p.divergence_node + ")" : "") + ", transition t' " + p.transition_step +
        (p.transition_node !== undefined ? " (#" + p.transition_node + ")" : "") + (p.trajectory ? " \u2192 " + p.trajectory : "")]);
    }));
    return el("div", {}, [el("h4", {text: "task " + tree.task_id + " (alpha " + tree.alpha + ")"}),
      tree.pairs.length ? pairs : el("p", {cls: "muted", text: "No pair was spliced from this tree."}),
      el("ul", {cls: "tree"}, [nodeElement(tree.root)])]);
  }
  function treesView() {
    var root = clear(document.getElementById("trees-view"));
    if (!phase1Stages.length) { root.appendChild(el("p", {cls: "muted", text: "This run has no Phase I."})); return; }
    var body = el("div");
    function show(index) {
      var p = phase1Stages[index].phase1, treeBox = el("div", {cls: "detail"}), nodeBox = el("div", {cls: "detail"});
      var rows = p.tasks.map(function (t) {
        return {key: String(t.task_id), cells: [t.task_id, num(t.nodes), num(t.good_paths) + " / " + num(t.bad_paths), num(t.best_reward, 2),
          num(t.revision) + " + " + num(t.good), t.tree === undefined ? "not embedded" : "open"], click: t.tree !== undefined};
      });
      clear(body).appendChild(el("div", {}, [
        el("p", {text: p.tasks.length + " tasks, mode " + p.mode + ", alpha " + p.alpha}),
        cutNote(p.trees.length, p.tasks.length, "trees", "max_trees"),
        el("div", {cls: "split"}, [el("div", {cls: "list"}, [table(["task", "nodes", "good / bad paths", "best reward", "kept", "tree"], rows,
          function (i) { clear(nodeBox); clear(treeBox).appendChild(drawTree(p.trees[p.tasks[i].tree], nodeBox)); })]),
          el("div", {cls: "detail"}, [treeBox, nodeBox])])]));
    }
    var menu = select(phase1Stages.map(function (s, i) { return [i, s.name]; }), function (v) { show(+v); });
    root.appendChild(el("div", {cls: "toolbar"}, [el("label", {text: "iteration "}), menu]));
    root.appendChild(body);
    choose(menu, show, phase1Stages.length - 1);  // every view opens on the latest stage
    return opener(phase1Stages, menu, show, body);
  }

  // ---- training trajectories ---------------------------------------------------------------
  function trajectorySets() {
    return run.stages.map(function (s) { return [s.name, s.phase1 ? s.phase1.trajectories : s.trajectories]; })
      .filter(function (x) { return x[1]; });
  }
  function trajectoriesView() {
    var root = clear(document.getElementById("trajectories-view")), sets = trajectorySets();
    if (!sets.length) { root.appendChild(el("p", {cls: "muted", text: "No training data in this run."})); return; }
    var body = el("div"), state = {set: 0, kind: ""};
    function show(index) {
      if (index !== undefined) state.set = index;
      var set = sets[state.set][1], detail = el("div", {cls: "detail"});
      var items = set.items.filter(function (t) { return !state.kind || t.kind === state.kind; });
      var rows = items.map(function (t) {
        var m = t.meta || {};
        return {key: t.id, cells: [t.id, t.kind, m.divergence_step === undefined ? "-" : m.divergence_step,
          m.transition_step === undefined ? "-" : m.transition_step,
          t.messages.filter(function (x) { return x.train; }).length]};
      });
      clear(body).appendChild(el("div", {}, [
        el("p", {text: Object.keys(set.counts).map(function (k) { return set.counts[k] + " " + k; }).join(", ")}),
        cutNote(set.items.length, set.total, "trajectories", "max_trajectories"),
        el("div", {cls: "split"}, [el("div", {cls: "list"}, [table(["id", "kind", "t", "t'", "trained turns"], rows, function (i) {
          var t = items[i];
          clear(detail).appendChild(el("div", {}, [el("h4", {text: t.id}),
            el("p", {cls: "muted", text: Object.keys(t.meta || {}).map(function (k) { return k + ": " + t.meta[k]; }).join(" · ")}),
            conversation(t.messages)]));
        })]), detail])]));
    }
    var kinds = [["", "all kinds"], ["revision", "revision"], ["good", "good"], ["expert", "expert"]];
    var menu = select(sets.map(function (s, i) { return [i, s[0]]; }), function (v) { show(+v); });
    root.appendChild(el("div", {cls: "toolbar"}, [el("label", {text: "stage "}), menu,
      select(kinds, function (v) { state.kind = v; show(); })]));
    root.appendChild(body);
    choose(menu, show, sets.length - 1);
    return opener(sets.map(function (s) { return {name: s[0]}; }), menu, show, body);
  }

  // ---- evaluation episodes -----------------------------------------------------------------
  function episodesView() {
    var root = clear(document.getElementById("episodes-view"));
    var stages = run.stages.filter(function (s) { return s.episodes; });
    if (!stages.length) { root.appendChild(el("p", {cls: "muted", text: "No stage of this run was evaluated."})); return; }
    var body = el("div"), state = {stage: 0, failures: false, revised: false};
    function show(index) {
      if (index !== undefined) state.stage = index;
      var e = stages[state.stage].episodes, detail = el("div", {cls: "detail"});
      var items = e.items.filter(function (x) { return (!state.failures || !x.success) && (!state.revised || x.revision_turns > 0); });
      var rows = items.map(function (x) {
        return {key: x.key || String(x.task_id), cells: [x.task_id, x.sample === undefined ? "greedy" : "sample " + x.sample,
          x.success ? "yes" : "no", num(x.reward, 2), num(x.turns), num(x.loop_count), num(x.revision_turns), x.error || ""],
          click: !!x.messages};
      });
      function open(i) {
        var label = "task " + items[i].task_id + (items[i].sample === undefined ? "" : ", sample " + items[i].sample);
        clear(detail).appendChild(el("div", {}, [el("h4", {text: label}), conversation(items[i].messages)]));
      }
      clear(body).appendChild(el("div", {}, [
        el("p", {text: items.length + " of " + e.total + " episodes match"}),
        cutNote(e.embedded, e.total, "conversations", "max_episodes"),
        el("div", {cls: "split"}, [el("div", {cls: "list"}, [table(["task", "episode", "success", "reward", "turns", "loop turns",
          "revision turns", "error"], rows, open)]), detail])]));
      // open an episode with a revision turn where there is one: the reflection the run is about
      var revised = items.findIndex(function (x) { return x.revision_turns > 0 && x.messages; });
      if (revised >= 0) open(revised);
    }
    function box(label, key) {
      var c = el("input", {type: "checkbox", onchange: function () { state[key] = c.checked; show(); }});
      return el("label", {}, [c, " " + label]);
    }
    var menu = select(stages.map(function (s, i) { return [i, s.name]; }), function (v) { show(+v); });
    root.appendChild(el("div", {cls: "toolbar"}, [el("label", {text: "stage "}), menu,
      box("failures only", "failures"), box("with a revision turn", "revised")]));
    root.appendChild(body);
    choose(menu, show, stages.length - 1);
    return opener(stages, menu, show, body);
  }

  // Links into the page: #tree=<stage>/<task id>, #trajectory=<stage>/<id>, #episode=<stage>/<task id>
  var views = {tree: treesView(), trajectory: trajectoriesView(), episode: episodesView()};
  function openHash() {
    var m = /^#(tree|trajectory|episode)=([^/]+)\/(.+)$/.exec(decodeURIComponent(location.hash));
    if (m && views[m[1]]) views[m[1]](m[2], m[3]);
  }
  window.addEventListener("hashchange", openHash);
  openHash();
})();
"""
