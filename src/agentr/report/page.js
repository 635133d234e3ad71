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
