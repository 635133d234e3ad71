"""The run report: what `read_run` gathers, the page's structure and embedded data, the summary."""

from __future__ import annotations

import json
from html.parser import HTMLParser
from importlib import resources

import pytest
from report_run import make_run

from agentr.cli import main
from agentr.report import ReportLimits, format_summary, read_run, render, write_report

VOID = {"meta", "br", "input", "img", "hr", "link"}  # HTML void elements; SVG ones self-close


class Page(HTMLParser):
    """Checks that tags nest and close; collects ids, the data block and svg elements."""

    def __init__(self, text: str):
        super().__init__()
        self.open: list[str] = []
        self.ids: dict[str, str] = {}
        self.svg: list[tuple[str, dict]] = []
        self.cells: list[str] = []
        self.data = None
        self._in_data = False
        self.feed(text)
        self.close()
        assert not self.open, f"unclosed tags: {self.open}"

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if "id" in attrs:
            assert attrs["id"] not in self.ids, f"duplicate id {attrs['id']}"
            self.ids[attrs["id"]] = tag
        if tag in ("circle", "line", "polyline", "svg"):
            self.svg.append((tag, attrs))
        self._in_data = attrs.get("id") == "agentr-data"
        if tag not in VOID:
            self.open.append(tag)

    def handle_startendtag(self, tag, attrs):
        self.handle_starttag(tag, attrs)
        if tag not in VOID:
            self.open.pop()

    def handle_endtag(self, tag):
        assert self.open and self.open[-1] == tag, f"</{tag}> closes <{self.open[-1] if self.open else None}>"
        self.open.pop()

    def handle_data(self, data):
        if self._in_data:
            self.data = json.loads(data)
            self._in_data = False
        elif self.open and self.open[-1] == "td":
            self.cells.append(data)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return make_run(tmp_path_factory.mktemp("report"))


def _nodes(root: dict):
    stack = [(root, None)]
    while stack:
        node, parent = stack.pop()
        yield node, parent
        stack.extend((c, node) for c in node.get("children", []))


def _path(tree: dict, node_id: int) -> list[dict]:
    parents = {n["id"]: p for n, p in _nodes(tree["root"])}
    node = next(n for n, _ in _nodes(tree["root"]) if n["id"] == node_id)
    path = []
    while node is not None:
        path.append(node)
        node = parents[node["id"]]
    return path[::-1]


def test_report_page_has_every_section_and_the_run_data(run_dir):
    path, run = write_report(run_dir)
    assert path == run_dir / "report.html"
    page = Page(path.read_text())
    for section in ("curve", "trees", "trajectories", "episodes"):
        assert page.ids[section] == "section"
    assert page.ids["curve-chart"] == "svg" and page.ids["stage-table"] == "table"
    assert page.data == json.loads(json.dumps(run))  # the page embeds exactly what read_run gave
    assert [s["name"] for s in page.data["stages"]] == ["base", "iteration_1"]
    # the curve: one series per metric, success with its interval drawn at both stages (evaluate
    # writes a Wilson interval; the fixture replaces iteration_1's)
    series = {a["data-metric"] for t, a in page.svg if t == "polyline"}
    assert {"success_rate", "avg_reward", "repeat_fraction", "revision_rate"} <= series
    assert sum(a.get("class") == "ci" for t, a in page.svg if t == "line") == 2
    # the stage table shows success with its count and interval, and the recorded training time
    evaluation = json.loads((run_dir / "iteration_1" / "eval.json").read_text())
    successes = sum(e["success"] for e in evaluation["episodes"])
    rate = evaluation["metrics"]["success_rate"]
    assert f"{100 * rate:.0f}% ({successes}/{len(evaluation['episodes'])}) [10-70%]" in page.cells
    assert "1:15" in page.cells
    # every metric of eval.json, including fields this version does not know, with intervals
    assert f"{rate:.3g} [0.1, 0.7]" in page.cells and "1: 0.5" in page.cells and "f1ng3rpr1nt" in page.cells
    assert "<script>" in path.read_text() and "http" not in path.read_text().replace("http://www.w3.org/2000/svg", "")


def test_the_page_inlines_its_style_and_script_files(run_dir):
    """The CSS and JS are package files beside `agentr.report.page`, written into the page whole."""
    page = write_report(run_dir)[0].read_text()
    assets = resources.files("agentr.report")
    for name, tag in (("page.css", "style"), ("page.js", "script")):
        assert f"<{tag}>\n{assets.joinpath(name).read_text(encoding='utf-8')}</{tag}>" in page


def test_tree_nodes_carry_leaf_pair_and_verdict_marks(run_dir):
    phase1 = read_run(run_dir)["stages"][1]["phase1"]
    alpha = phase1["alpha"]
    assert alpha == 0.5 and len(phase1["trees"]) == len(phase1["tasks"]) == 4
    pairs_seen = 0
    for tree in phase1["trees"]:
        for node, parent in _nodes(tree["root"]):
            marks = set(node.get("marks", []))
            leaf = parent is not None and node["terminal"] and not node.get("children")
            assert ("good_leaf" in marks) == (leaf and node["reward"] >= alpha)
            assert ("bad_leaf" in marks) == (leaf and node["reward"] < alpha)
        for pair in tree["pairs"]:
            pairs_seen += 1
            good, bad = _path(tree, pair["good"]), _path(tree, pair["bad"])
            # the bad path of a pair is only worse by beta: it may still reach alpha
            assert "good_leaf" in good[-1]["marks"] and good[-1]["reward"] > bad[-1]["reward"]
            shared = next(i for i, (g, b) in enumerate(zip(good, bad)) if g is not b) - 1
            assert pair["divergence_step"] == shared and pair["divergence_node"] == bad[shared]["id"]
            assert "divergence" in bad[shared]["marks"]
            transition = bad[pair["transition_step"]]
            assert pair["transition_node"] == transition["id"] and "transition" in transition["marks"]
            # agent_r: t' is the first step judged Bad after the divergence, else the bad leaf
            judged = [n for n in bad[shared + 1:] if n.get("critique")]
            assert all(n["critique"]["verdict"] in ("Good", "Bad") and n["critique"]["reply"] for n in judged)
            first_bad = next((n for n in judged if n["critique"]["verdict"] == "Bad"), bad[-1])
            assert transition is first_bad
    assert pairs_seen == phase1["stats"]["revision_trajectories"] > 0


def test_trajectories_split_into_bad_prefix_revision_turn_and_good_suffix(run_dir):
    trajectories = read_run(run_dir)["stages"][1]["phase1"]["trajectories"]
    assert trajectories["total"] == sum(trajectories["counts"].values()) == len(trajectories["items"])
    revisions = [t for t in trajectories["items"] if t["kind"] == "revision"]
    assert revisions and trajectories["items"][: len(revisions)] == revisions  # revision ones first
    for t in revisions:
        parts = [m["part"] for m in t["messages"]]
        t_prime = t["meta"]["transition_step"]
        assert parts == ["bad"] * (2 * t_prime) + ["revision"] * 2 + ["good"] * (len(parts) - 2 * t_prime - 2)
        turn = t["messages"][2 * t_prime]
        assert turn["role"] == "assistant" and turn["train"] and t["meta"]["revision_signal"] in turn["content"]
        for m in t["messages"]:
            assert m.get("train", False) == (m["role"] == "assistant" and m["part"] != "bad")
    for t in trajectories["items"][len(revisions):]:
        assert t["kind"] == "good" and {m["part"] for m in t["messages"]} == {"good"}


def test_episodes_count_revision_turns_and_cover_every_outcome(run_dir):
    episodes = read_run(run_dir)["stages"][1]["episodes"]
    assert episodes["total"] == episodes["embedded"] == 6
    assert any(e["revision_turns"] for e in episodes["items"]) and any(not e["success"] for e in episodes["items"])
    for e in episodes["items"]:
        revision = [m for m in e["messages"] if m["part"] == "revision"]
        assert len(revision) == e["revision_turns"]
        assert all(m["role"] == "assistant" and m["content"].endswith("Action: revise") for m in revision)


def test_limits_cut_what_is_embedded_and_keep_the_most_informative_trees(run_dir):
    run = read_run(run_dir, ReportLimits(max_trees=1, max_trajectories=3, max_episodes=2, max_text=10))
    phase1 = run["stages"][1]["phase1"]
    assert len(phase1["tasks"]) == 4 and len(phase1["trees"]) == 1
    opened = [t for t in phase1["tasks"] if "tree" in t]
    assert len(opened) == 1 and opened[0]["revision"] > 0  # a tree that produced revision data
    assert len(phase1["trajectories"]["items"]) == 3 and phase1["trajectories"]["total"] > 3
    episodes = run["stages"][1]["episodes"]
    assert episodes["total"] == 6 and episodes["embedded"] == 2
    text = phase1["trajectories"]["items"][0]["messages"][0]["content"]
    assert text.startswith(text[:10]) and "more characters]" in text
    with pytest.raises(ValueError, match="max_trees must be an integer >= 0, got -1"):
        ReportLimits(max_trees=-1)


def test_report_of_collect_and_evaluate_directories(run_dir):
    collect_run = read_run(run_dir / "iteration_1" / "phase1")
    assert collect_run["kind"] == "collect" and "phase1" in collect_run["stages"][0]
    evaluate_run = read_run(run_dir / "base")
    assert evaluate_run["kind"] == "evaluate" and evaluate_run["stages"][0]["eval"]["num_episodes"] == 2
    with pytest.raises(ValueError, match="not an agentr run directory"):
        read_run(run_dir / "iteration_1" / "phase1" / "tasks")


def test_model_text_cannot_end_the_data_block():
    run = {"run_dir": "r", "kind": "fit", "limits": {}, "stages": [
        {"name": "base", "iteration": None, "episodes": {"items": [{"task_id": "</script><script>alert(1)</script>"}],
                                                         "total": 1, "embedded": 0}}]}
    page = Page(render(run))
    assert page.data == run


def test_report_command_and_summary(run_dir, tmp_path, capsys):
    out = tmp_path / "elsewhere.html"
    main(["report", str(run_dir), "--out", str(out), "--limits.max_trees", "2"])
    printed = capsys.readouterr().out
    assert Page(out.read_text()).data["limits"]["max_trees"] == 2
    lines = printed.splitlines()
    assert lines[0].split()[:2] == ["stage", "success"]
    base = next(line for line in lines if line.startswith("base "))
    iteration = next(line for line in lines if line.startswith("iteration_1 "))
    assert "0% (0/2)" in base and "[10-70%]" in iteration and "16 + 36" not in base
    stats = json.loads((run_dir / "iteration_1" / "phase1" / "stats.json").read_text())
    assert f"{stats['revision_trajectories']} + {stats['good_trajectories']}" in iteration
    assert "1:15" in iteration  # training.json's 75 s
    assert f"report:        {out}" in printed and f"run directory: {run_dir}" in printed
    assert format_summary(read_run(run_dir)).splitlines()[-1] == f"run directory: {run_dir}"


def test_summary_shows_sampled_success_recovery_and_repeats_of_the_sampled_episodes():
    greedy = {"metrics": {"success_rate": 0.2, "revision_rate": 0.0, "recovery_rate": None,
                          "repeat_fraction": 0.5},
              "intervals": {"success_rate": [0.08, 0.42]}, "num_episodes": 20, "num_successes": 4}
    sampled = {"metrics": {"success_rate": 0.35, "revision_rate": 0.6, "recovery_rate": 0.25,
                           "repeat_fraction": 0.125},
               "intervals": {"success_rate": [0.2, 0.5]}, "num_episodes": 40, "num_successes": 14}
    run = {"run_dir": "r", "stages": [{"name": "base", "eval": greedy},
                                      {"name": "iteration_1", "eval": {**greedy, "sampled": sampled}}]}
    lines = format_summary(run).splitlines()
    assert lines[0].split("  ")[:1] == ["stage"] and "recovery" in lines[0] and "repeats" in lines[0]
    base, iteration = lines[2], lines[3]
    assert "20% (4/20) [8-42%]" in base and "50%" not in base and "0.50" in base  # greedy alone
    assert "35% (14/40) [20-50%]" in iteration
    assert "60%" in iteration and "25%" in iteration and "0.12" in iteration  # of the sampled


def test_episodes_include_the_sampled_ones_and_embed_revised_conversations_first(tmp_path):
    from report_run import revising_policy
    from search_fakes import CloneToyEnv, ScriptedEngine

    from agentr.evaluation import evaluate

    tasks = [f"x{i}" for i in range(6)]
    evaluate(ScriptedEngine(revising_policy), lambda: CloneToyEnv(need=2), tasks, max_turns=4,
             episodes_per_task=2, out_dir=tmp_path / "eval", progress=False)
    episodes = read_run(tmp_path / "eval", ReportLimits(max_episodes=2))["stages"][0]["episodes"]
    items = episodes["items"]
    assert episodes["total"] == 6 + 12 and [i.get("sample") for i in items[:6]] == [None] * 6
    assert sorted((i["task_id"], i["sample"]) for i in items[6:]) == [(t, j) for t in tasks for j in (0, 1)]
    assert len({i["key"] for i in items}) == len(items)  # a link names one episode
    embedded = [i for i in items if "messages" in i]
    revised = [i for i in items if i["revision_turns"]]
    assert len(embedded) == 2 and revised  # the toy policy revises now and then
    assert all(i["revision_turns"] for i in embedded[:len(revised)])
