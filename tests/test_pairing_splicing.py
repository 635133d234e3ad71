"""Pairing and splicing on a hand-built tree."""

from __future__ import annotations

import random

import pytest

from agentr.agent.conversation import build_header
from agentr.search.mcts import Node
from agentr.search.pairing import divergence_step, good_paths, leaf_paths, make_pairs
from agentr.search.splicing import REVISION_SIGNALS, draw_signal, good_conversation, splice

HEADER = build_header("Commands: good, noop.", "Task t0: win.")


def _child(parent: Node, name: str, reward: float = 0.0, terminal: bool = False) -> Node:
    node = Node(id=len(_ALL), parent=parent, depth=parent.depth + 1, reply=f"Thought: t\nAction: {name}",
                action=name, observation=f"obs {name}", reward=reward, terminal=terminal)
    _ALL.append(node)
    parent.children.append(node)
    return node


_ALL: list[Node] = []


@pytest.fixture
def tree() -> dict[str, Node]:
    """root -a-> A -b-> B -w1-> W1 (1.0)
                   |        -l1-> L1 (0.0)
                   -c-> C -d-> D -l2-> L2 (0.25)
                              -w2-> W2 (0.75)
             -e-> E (0.0, terminal)
             -f-> F (open: never expanded, not a leaf path)"""
    _ALL.clear()
    root = Node(id=0, parent=None, depth=0, observation="Task t0: win.")
    _ALL.append(root)
    a = _child(root, "a")
    b = _child(a, "b")
    w1 = _child(b, "w1", 1.0, True)
    l1 = _child(b, "l1", 0.0, True)
    c = _child(a, "c")
    d = _child(c, "d")
    l2 = _child(d, "l2", 0.25, True)
    w2 = _child(d, "w2", 0.75, True)
    e = _child(root, "e", 0.0, True)
    f = _child(root, "f")
    return dict(root=root, a=a, b=b, c=c, d=d, w1=w1, l1=l1, l2=l2, w2=w2, e=e, f=f)


def _leaf(path):
    return path[-1].action


def test_leaf_paths_are_root_to_terminal_leaf(tree):
    paths = leaf_paths(tree["root"])
    assert [_leaf(p) for p in paths] == ["w1", "l1", "l2", "w2", "e"]
    assert all(p[0] is tree["root"] for p in paths)
    assert [n.action for n in paths[0]] == [None, "a", "b", "w1"]


def test_good_uses_greater_or_equal(tree):
    paths = leaf_paths(tree["root"])
    assert [_leaf(p) for p in good_paths(paths, 0.75)] == ["w1", "w2"]
    assert [_leaf(p) for p in good_paths(paths, 1.0)] == ["w1"]  # alpha 1.0 keeps perfect paths
    assert good_paths(paths, 1.01) == []


def test_divergence_is_the_lowest_common_ancestor(tree):
    by_leaf = {_leaf(p): p for p in leaf_paths(tree["root"])}
    assert divergence_step(by_leaf["w1"], by_leaf["l1"]) == 2  # share a, b
    assert divergence_step(by_leaf["w1"], by_leaf["l2"]) == 1  # share a
    assert divergence_step(by_leaf["w1"], by_leaf["e"]) == 0  # share the root only


def test_pairs_respect_alpha_and_beta(tree):
    paths = leaf_paths(tree["root"])
    pairs, found = make_pairs(paths, alpha=0.75, beta=0.25, rng=random.Random(0))
    got = sorted((_leaf(p.good), _leaf(p.bad), p.divergence) for p in pairs)
    # w1 (1.0) vs l1 0.0, l2 0.25, e 0.0 (w2: 1.0 - 0.75 = 0.25 is not > beta);
    # w2 (0.75) vs l1, e (0.75 - 0.25 = 0.5 > beta: l2 too)
    assert got == sorted([("w1", "l1", 2), ("w1", "l2", 1), ("w1", "e", 0),
                          ("w2", "l1", 1), ("w2", "l2", 3), ("w2", "e", 0)])
    assert found == 6
    for pair in pairs:  # the shared prefix is exactly the first `divergence` turns
        d = pair.divergence
        assert pair.good[: d + 1] == pair.bad[: d + 1]
        assert pair.good[d + 1] is not pair.bad[d + 1]
    pairs, _ = make_pairs(paths, alpha=1.0, beta=0.25, rng=random.Random(0))
    assert sorted(_leaf(p.bad) for p in pairs) == ["e", "l1", "l2"]  # only w1 is good at alpha 1
    pairs, _ = make_pairs(paths, alpha=0.75, beta=0.8, rng=random.Random(0))
    assert sorted(_leaf(p.bad) for p in pairs) == ["e", "l1"]  # 1.0 - 0.25 = 0.75 is not > 0.8


def test_pairs_are_shuffled_by_the_seed_and_capped(tree):
    paths = leaf_paths(tree["root"])
    order = lambda seed, cap=None: [(_leaf(p.good), _leaf(p.bad))  # noqa: E731
                                    for p in make_pairs(paths, 0.75, 0.25, random.Random(seed), cap)[0]]
    assert order(3) == order(3)
    assert len({tuple(order(s)) for s in range(10)}) > 1  # the seed changes the order
    assert order(3, cap=2) == order(3)[:2]
    pairs, found = make_pairs(paths, 0.75, 0.25, random.Random(3), cap=2)
    assert (len(pairs), found) == (2, 6)


def test_splice_has_exactly_the_right_turns_and_flags(tree):
    by_leaf = {_leaf(p): p for p in leaf_paths(tree["root"])}
    good, bad = by_leaf["w2"], by_leaf["l1"]  # share `a` (divergence 1); bad = a b l1, good = a c d w2
    messages = splice(HEADER, bad, good, divergence=1, transition=2, signal="I went wrong.")
    expected = [
        ("system", HEADER[0]["content"], False),
        ("user", "Commands: good, noop.", False),
        ("assistant", "OK", False),
        ("user", "Task t0: win.", False),
        ("assistant", "Thought: t\nAction: a", False),   # shared prefix: context
        ("user", "obs a", False),
        ("assistant", "Thought: t\nAction: b", False),   # bad step t' = 2: kept, not trained
        ("user", "obs b", False),
        ("assistant", "Thought: I went wrong.\nAction: revise", True),  # revision turn: trained
        ("user", "OK.", False),
        ("assistant", "Thought: t\nAction: c", True),    # good suffix from divergence+1: trained
        ("user", "obs c", False),
        ("assistant", "Thought: t\nAction: d", True),
        ("user", "obs d", False),
        ("assistant", "Thought: t\nAction: w2", True),
        ("user", "obs w2", False),
    ]
    assert [(m["role"], m["content"], m["train"]) for m in messages] == expected
    # transition at the end of the bad path keeps the whole bad path
    full = splice(HEADER, bad, good, divergence=1, transition=3, signal="s")
    assert [m["content"] for m in full[4:10:2]] == ["Thought: t\nAction: a", "Thought: t\nAction: b",
                                                    "Thought: t\nAction: l1"]
    assert full[10]["content"] == "Thought: s\nAction: revise"
    assert sum(m["train"] for m in full) == 1 + 3  # revision turn + 3 good-suffix turns


def test_splice_rejects_inconsistent_steps(tree):
    by_leaf = {_leaf(p): p for p in leaf_paths(tree["root"])}
    good, bad = by_leaf["w1"], by_leaf["l1"]
    with pytest.raises(ValueError):
        splice(HEADER, bad, good, divergence=2, transition=2, signal="s")  # t' must be after t
    with pytest.raises(ValueError):
        splice(HEADER, bad, good, divergence=2, transition=4, signal="s")  # past the bad path
    with pytest.raises(ValueError):
        splice(HEADER, by_leaf["l2"], good, divergence=2, transition=3, signal="s")  # share 1 turn only


def test_good_conversation_trains_every_assistant_turn(tree):
    path = leaf_paths(tree["root"])[0]
    messages = good_conversation(HEADER, path)
    assert len(messages) == 4 + 2 * 3
    assert [m["train"] for m in messages] == [False] * 4 + [True, False] * 3
    assert all(m["role"] == "assistant" for m in messages if m["train"])


def test_revision_signals():
    assert 8 <= len(REVISION_SIGNALS) <= 12 and len(set(REVISION_SIGNALS)) == len(REVISION_SIGNALS)
    assert all("\n" not in s and "Action" not in s for s in REVISION_SIGNALS)
    assert draw_signal(random.Random(5)) == draw_signal(random.Random(5))
    assert len({draw_signal(random.Random(s)) for s in range(50)}) > 5
