"""MCTS: UCT selection, expansion, terminal rules, backup, descents (the turn it plays:
tests/test_turn.py)."""

from __future__ import annotations

import math
import random

import pytest
from search_fakes import CloneToyEnv, ScriptedEngine, ToyEnv, reply, search_sequential, toy_policy

from agentr.engines.base import Generation, SamplingConfig
from agentr.search.config import SearchConfig
from agentr.search.mcts import Node, SearchTree, backup, select_child, uct


def _node_with_children(stats: list[tuple[int, float, bool]], parent_visits: int) -> Node:
    parent = Node(id=0, parent=None, depth=0, visits=parent_visits)
    for i, (n, w, terminal) in enumerate(stats, 1):
        parent.children.append(Node(id=i, parent=parent, depth=1, visits=n, value_sum=w, terminal=terminal))
    return parent


def _gens(*texts: str) -> list[Generation]:
    return [Generation(t, 3) for t in texts]


# ---- selection ------------------------------------------------------------------------------
def test_uct_formula():
    parent = _node_with_children([(4, 3.0, False)], parent_visits=10)
    child = parent.children[0]
    assert uct(child, 10, 0.25) == pytest.approx(0.75 + 0.25 * math.sqrt(math.log(10) / 4))


def test_select_prefers_higher_uct_and_exploration_matters():
    # A: N=9, W=4.5 -> 0.5 + 0.25*sqrt(ln10/9) = 0.626; B: N=1, W=0.4 -> 0.4 + 0.25*sqrt(ln10) = 0.779
    parent = _node_with_children([(9, 4.5, False), (1, 0.4, False)], parent_visits=10)
    a, b = parent.children
    assert select_child(parent, 0.25, random.Random(0)) is b
    assert select_child(parent, 0.0, random.Random(0)) is a  # pure exploitation picks A
    b.terminal = True  # terminal children are never selected
    assert select_child(parent, 0.25, random.Random(0)) is a


def test_unvisited_children_come_first_with_seeded_ties():
    parent = _node_with_children([(5, 5.0, False), (0, 0.0, False), (0, 0.0, False), (0, 0.0, True)], 5)
    best, u1, u2, terminal_unvisited = parent.children
    picks = set()
    for seed in range(20):
        pick = select_child(parent, 0.25, random.Random(seed))
        # the tie among the unvisited non-terminal children is the seeded rng's choice
        assert pick is random.Random(seed).choice([u1, u2])
        picks.add(pick.id)
    assert picks == {u1.id, u2.id}  # both unvisited children get picked across seeds


def test_equal_uct_scores_are_broken_by_the_rng():
    parent = _node_with_children([(2, 1.0, False), (2, 1.0, False), (4, 1.0, False)], 8)
    a, b, _ = parent.children
    picks = {select_child(parent, 0.25, random.Random(seed)).id for seed in range(20)}
    assert picks == {a.id, b.id}
    for seed in range(5):
        assert select_child(parent, 0.25, random.Random(seed)) is random.Random(seed).choice([a, b])


def test_all_terminal_children_make_the_node_terminal():
    parent = _node_with_children([(1, 1.0, True), (1, 0.0, True)], 2)
    assert select_child(parent, 0.25, random.Random(0)) is None
    assert parent.terminal


# ---- backup -------------------------------------------------------------------------------------
def test_backup_adds_along_the_path_and_propagates_terminal():
    root = Node(id=0, parent=None, depth=0)
    mid = Node(id=1, parent=root, depth=1)
    other = Node(id=2, parent=root, depth=1)
    root.children = [mid, other]
    leaf1 = Node(id=3, parent=mid, depth=2, reward=1.0, terminal=True)
    leaf2 = Node(id=4, parent=mid, depth=2, reward=0.5, terminal=False)
    mid.children = [leaf1, leaf2]
    backup(leaf1, 1.0)
    assert (leaf1.visits, mid.visits, root.visits, other.visits) == (1, 1, 1, 0)
    assert (mid.value_sum, root.value_sum) == (1.0, 1.0)
    assert not mid.terminal  # leaf2 is still open
    leaf2.terminal = True
    backup(leaf2, 0.5)
    assert (mid.visits, mid.value_sum, root.visits, root.value_sum) == (2, 1.5, 2, 1.5)
    assert mid.terminal and not root.terminal  # `other` is still open


# ---- expansion and terminal rules --------------------------------------------------------------
def _tree(env=None, **config) -> SearchTree:
    return SearchTree(env or CloneToyEnv(need=3), "t0", SearchConfig(**config), random.Random(0))


def test_expansion_drops_duplicate_replies():
    tree = _tree()
    root = tree.pending()
    assert root is tree.root
    children = tree.expand(root, _gens(reply("good"), reply("good"), "  " + reply("good") + "\n", reply("noop")))
    assert [c.action for c in children] == ["good", "noop"]
    assert tree.counters.duplicates == 2 and tree.counters.samples == 4
    assert [c.observation for c in children] == ["Progress 1/3.", "Nothing happens (noop)."]
    assert root.env is None and all(c.env is not None for c in children)  # state moved to the children
    assert children[0].env is not children[1].env


def test_terminal_rules_done_failure_and_depth():
    tree = _tree(max_depth=2)
    root = tree.pending()
    children = tree.expand(root, _gens(reply("half"), reply("boom"), reply("lose"), reply("noop")))
    half, boom, lose, noop = children
    assert half.terminal and half.done and half.reward == 0.5
    assert boom.terminal and boom.failed and boom.reward == 0.0  # negative reward clamped to 0
    assert lose.terminal and lose.done and lose.reward == 0.0
    assert not noop.terminal and noop.env is not None
    assert all(c.env is None for c in (half, boom, lose))  # terminal children release their env
    # terminal children were backed up at once: 3 visits, W = 0.5
    assert (root.visits, root.value_sum) == (3, 0.5)
    # the descent continues into the only open child; its children sit at max_depth = 2
    assert tree.pending() is noop
    deep = tree.expand(noop, _gens(reply("noop"), reply("good")))
    assert all(c.terminal and not c.done for c in deep)  # depth limit, env not done
    assert noop.terminal and root.terminal  # every child ended
    assert tree.pending() is None and tree.finished
    assert (root.visits, root.value_sum) == (5, 0.5)


def test_winning_child_is_terminal_with_reward_one():
    tree = SearchTree(CloneToyEnv(need=1), "t0", SearchConfig(), random.Random(0))
    (win,) = tree.expand(tree.pending(), _gens(reply("good")))
    assert win.terminal and win.done and win.reward == 1.0


def test_expand_requires_the_pending_node():
    tree = _tree()
    with pytest.raises(RuntimeError):
        tree.expand(Node(id=99, parent=None, depth=0), _gens("x"))


# ---- descents ----------------------------------------------------------------------------------------
def test_one_simulation_descends_to_a_terminal_frontier():
    # every reply is `noop` (never done): one descent expands depth 0..max_depth-1, then stops
    engine = ScriptedEngine(lambda conv, n: [reply("noop")] * n)
    tree = search_sequential(_tree(max_depth=3, num_simulations=1), engine, SamplingConfig(n=4))
    assert tree.simulations == 1 and tree.counters.expansions == 3
    assert [call[1] for call in engine.calls] == [1, 1, 1]  # one request per expansion
    assert all(call[2].n == 4 for call in engine.calls)  # with n samples in it
    assert tree.root.visits == 1 and tree.root.terminal  # a single child chain, all ended


def _check_invariants(node: Node) -> tuple[int, float]:
    """visits = terminal leaves below, value = their rewards; expanded terminal <=> all children terminal."""
    if not node.children:
        if node.terminal:
            assert (node.visits, node.value_sum) == (1, node.reward)
        else:
            assert (node.visits, node.value_sum) == (0, 0.0)
        return node.visits, node.value_sum
    visits = value = 0
    for child in node.children:
        v, w = _check_invariants(child)
        visits, value = visits + v, value + w
    assert node.visits == visits and node.value_sum == pytest.approx(value)
    if node.terminal:
        assert all(child.terminal for child in node.children)
    return visits, value


@pytest.mark.parametrize("env_class", [ToyEnv, CloneToyEnv])
def test_full_search_backs_up_every_terminal_leaf_once(env_class):
    engine = ScriptedEngine(toy_policy())
    tree = SearchTree(env_class(need=3), "t0", SearchConfig(num_simulations=6, max_depth=5), random.Random(1))
    search_sequential(tree, engine, SamplingConfig(n=4, temperature=1.0))
    assert 1 <= tree.simulations <= 6
    _check_invariants(tree.root)
    assert tree.root.visits > 0
    # a search stops early only when the root became terminal
    assert tree.simulations == 6 or tree.root.terminal


def test_replay_and_clone_give_the_same_tree():
    trees = []
    for env_class in (ToyEnv, CloneToyEnv):
        tree = SearchTree(env_class(need=3), "t0", SearchConfig(num_simulations=5, max_depth=6), random.Random(7))
        trees.append(search_sequential(tree, ScriptedEngine(toy_policy()), SamplingConfig(n=4)))
    replay, clone = trees
    assert replay.root.to_dict() == clone.root.to_dict()
    assert replay.counters.replay_steps > 0 and clone.counters.replay_steps == 0
    assert replay.counters.env_steps == clone.counters.env_steps


def test_more_simulations_grow_the_tree_deterministically():
    def run(sims, seed):
        tree = SearchTree(CloneToyEnv(need=4), "t0", SearchConfig(num_simulations=sims, max_depth=8), random.Random(seed))
        return search_sequential(tree, ScriptedEngine(toy_policy()), SamplingConfig(n=4))

    assert run(2, 0).num_nodes < run(8, 0).num_nodes
    assert run(8, 0).root.to_dict() == run(8, 0).root.to_dict()  # deterministic per seed
