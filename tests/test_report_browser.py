"""The report page's script, run in headless Chromium: each view draws its rows, and a node's
verdict shows its log-probabilities as numbers.

The page is opened with a probe script appended after its own: the probe clicks through the
views as a reader would and writes what it saw into the DOM, which Chromium dumps.
"""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess

import pytest
from report_run import make_run

from agentr.report import write_report

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium is not installed (Debian: apt-get install chromium); "
                             "the report's script is not run")

#: Counts each view's rows, opens every embedded tree and clicks each node with a verdict (the
#: node panel's lines), and opens the first trajectory and episode (their messages).
PROBE = r"""
<script>
(function () {
  var out = {errors: window.agentrErrors, rows: {}, verdicts: [], messages: {}};
  try { browse(out); } catch (e) { out.errors.push("probe: " + e.message); }
  var probe = document.createElement("pre");
  probe.id = "probe";
  probe.textContent = JSON.stringify(out);
  document.body.appendChild(probe);
})();
function browse(out) {
  function rows(view) { return document.querySelectorAll("#" + view + " tbody tr"); }
  function texts(nodes) { return Array.prototype.map.call(nodes, function (n) { return n.textContent; }); }
  ["trees-view", "trajectories-view", "episodes-view"].forEach(function (v) { out.rows[v] = rows(v).length; });
  Array.prototype.forEach.call(document.querySelectorAll("#trees-view tbody tr.clickable"), function (tr) {
    tr.click();
    var panel = document.querySelector("#trees-view .split > .detail > .detail:last-child");
    Array.prototype.forEach.call(document.querySelectorAll("#trees-view .node"), function (node) {
      if (!node.querySelector(".verdict")) return;
      node.click();
      out.verdicts.push({task: tr.firstChild.textContent, node: +node.getAttribute("data-node"),
                         shown: panel.querySelector("h5 .verdict").textContent, lines: texts(panel.querySelectorAll("p"))});
    });
  });
  ["trajectories-view", "episodes-view"].forEach(function (v) {
    rows(v)[0].click();
    out.messages[v] = texts(document.querySelectorAll("#" + v + " .msg"));
  });
}
</script>
"""
#: Collects the page's uncaught errors, from before its own script runs.
CATCH_ERRORS = """<script>window.agentrErrors = [];
addEventListener("error", function (e) { window.agentrErrors.push(e.message); });</script>"""


def _browse(page: str, tmp_path) -> dict:
    """What the probe saw on `page` (HTML text) in headless Chromium."""
    path = tmp_path / "probed.html"
    path.write_text(page.replace("<head>", "<head>" + CATCH_ERRORS, 1).replace("</body>", PROBE + "</body>"),
                    encoding="utf-8")
    # as root (CI containers) Chromium runs only without its sandbox
    dom = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                          f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom", path.as_uri()],
                         capture_output=True, text=True, timeout=120, check=True).stdout
    found = re.search(r'<pre id="probe">(.*?)</pre>', dom, re.DOTALL)
    assert found, "the probe wrote nothing"
    seen = json.loads(html.unescape(found.group(1)))
    assert seen["errors"] == [], seen["errors"]
    return seen


def _critiques(phase1: dict) -> dict[tuple[str, int], dict]:
    """(task id, node id) -> critique, over the embedded trees."""
    out = {}
    for tree in phase1["trees"]:
        stack = [tree["root"]]
        while stack:
            node = stack.pop()
            stack.extend(node.get("children", []))
            if "critique" in node:
                out[(str(tree["task_id"]), node["id"])] = node["critique"]
    return out


def test_each_view_draws_its_rows_and_a_verdict_shows_its_numbers(tmp_path):
    path, run = write_report(make_run(tmp_path, verdict="forced"))
    seen = _browse(path.read_text(encoding="utf-8"), tmp_path)
    stage = run["stages"][-1]  # every view opens on the latest stage
    phase1 = stage["phase1"]
    assert seen["rows"] == {"trees-view": len(phase1["tasks"]),
                            "trajectories-view": len(phase1["trajectories"]["items"]),
                            "episodes-view": len(stage["episodes"]["items"])}
    # an opened trajectory or episode shows each of its messages (after the role label)
    for view, items in (("trajectories-view", phase1["trajectories"]["items"]),
                        ("episodes-view", stage["episodes"]["items"])):
        messages = items[0]["messages"]
        assert len(seen["messages"][view]) == len(messages)
        assert all(shown.endswith(m["content"]) for shown, m in zip(seen["messages"][view], messages))

    critiques = _critiques(phase1)
    assert len(seen["verdicts"]) == len(critiques) > 0
    for verdict in seen["verdicts"]:
        critique = critiques[(verdict["task"], verdict["node"])]
        assert verdict["shown"] == critique["verdict"]
        assert "[object Object]" not in " ".join(verdict["lines"]), verdict["lines"]
        lines = dict(line.split(": ", 1) for line in verdict["lines"][1:] if ": " in line)
        # the forced verdict's log-probabilities and calibration baseline, as numbers
        assert json.loads(lines["logprobs"]) == critique["logprobs"]
        assert json.loads(lines["baseline"]) == critique["baseline"]
        assert lines["source"] == "forced"
