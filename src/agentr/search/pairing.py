"""Good paths, bad paths and the pairs that revision trajectories are built from.

A leaf path runs from the root to a terminal node without children; its reward is the leaf's
(clamped) environment reward. A path is good when `reward >= alpha`. A pair is any (good, bad)
with `r(good) - r(bad) > beta`; the two paths share the turns down to their lowest common
ancestor, whose depth is the pair's divergence step. All pairs of a tree are listed in a fixed
order, shuffled with the task's seeded random source, and capped.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from agentr.search.mcts import Node


@dataclass(eq=False)
class Pair:
    """A good and a bad leaf path (root first) and the depth of their lowest common ancestor."""

    good: list[Node]
    bad: list[Node]
    divergence: int

    @property
    def good_reward(self) -> float:
        return self.good[-1].reward

    @property
    def bad_reward(self) -> float:
        return self.bad[-1].reward


def leaf_paths(root: Node) -> list[list[Node]]:
    """Every root-to-terminal-leaf path, depth first in child order."""
    paths: list[list[Node]] = []
    stack: list[list[Node]] = [[root]]
    while stack:
        path = stack.pop()
        node = path[-1]
        if node.children:
            stack.extend(path + [child] for child in reversed(node.children))
        elif node.terminal and node.parent is not None:
            paths.append(path)
    return paths


def divergence_step(a: list[Node], b: list[Node]) -> int:
    """Depth of the lowest common ancestor of two paths from the same root (turns they share)."""
    depth = 0
    for x, y in zip(a[1:], b[1:]):
        if x is not y:
            break
        depth += 1
    return depth


def good_paths(paths: list[list[Node]], alpha: float) -> list[list[Node]]:
    """The paths with `reward >= alpha` (the official `>` would drop perfect paths at alpha 1)."""
    return [path for path in paths if path[-1].reward >= alpha]


def make_pairs(paths: list[list[Node]], alpha: float, beta: float, rng: random.Random,
               cap: int | None = None) -> tuple[list[Pair], int]:
    """The (good, bad) pairs of a tree, shuffled with `rng` and cut to `cap`.

    Returns the kept pairs and how many qualified before the cap.
    """
    pairs = [
        Pair(good=good, bad=bad, divergence=divergence_step(good, bad))
        for good in paths
        if good[-1].reward >= alpha
        for bad in paths
        if bad is not good and good[-1].reward - bad[-1].reward > beta
    ]
    found = len(pairs)
    rng.shuffle(pairs)
    if cap is not None:
        pairs = pairs[:cap]
    return pairs, found
