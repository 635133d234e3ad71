"""Confidence intervals and paired tests for evaluation results (pure functions, no torch).

- `wilson_interval`: a success rate over independent episodes (one per task, greedy). Unlike
  the normal interval it stays inside [0, 1] and is not empty at 0 or n successes.
- `cluster_bootstrap_interval`: a mean over episodes grouped by task, resampling whole tasks,
  because the episodes of one task are correlated (sampled evaluation draws several per task).
  With one episode per task it is the ordinary bootstrap. Also the paired interval of a
  difference: give it the per-episode differences of two runs, grouped by task.
- `mcnemar_exact_p`: the exact (binomial) McNemar test of two paired success columns.

Bootstrap intervals are percentile intervals over `BOOTSTRAP_RESAMPLES` resamples drawn from
a fixed seed, so the same results always give the same interval. A percentile interval
collapses to a point when every value is the same (all episodes failed, or two runs agree on
every episode): read 0/n with the Wilson interval of the tasks in mind.

Every interval contains its point estimate and lies in the range its values can take ([0, 1]
for a rate, [-1, 1] for a difference of rates), exactly: floating-point rounding (a Wilson
bound of 2.8e-17 at 0/n, a bootstrap bound an ulp past the mean) is clamped away, so that
`estimate - low` and `high - estimate` are never negative (as plotted error bars must be).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from statistics import NormalDist

#: Resamples of every bootstrap interval.
BOOTSTRAP_RESAMPLES = 2000

#: The confidence level of every interval agentr reports.
CONFIDENCE = 0.95


def _check_confidence(confidence: float) -> None:
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")


def _containing(low: float, high: float, estimate: float, floor: float,
                ceiling: float) -> tuple[float, float]:
    """(low, high) clamped into [floor, ceiling], then widened to hold `estimate` (which wins
    should rounding put it an ulp outside the range)."""
    return min(max(low, floor), estimate), max(min(high, ceiling), estimate)


def wilson_interval(successes: int, n: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """The Wilson score interval of a binomial proportion `successes / n`."""
    _check_confidence(confidence)
    if n < 1 or not 0 <= successes <= n:
        raise ValueError(f"need 0 <= successes <= n and n >= 1, got successes={successes}, n={n}")
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return _containing(centre - half, centre + half, p, 0.0, 1.0)


def cluster_bootstrap_interval(
    groups: Sequence[Sequence[float]],
    confidence: float = CONFIDENCE,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of all values, resampling whole groups.

    Each resample draws `len(groups)` groups with replacement and takes the mean over all
    their values (so a group weighs by its size, as in the point estimate). The interval lies
    within the values' range and contains the point estimate `sum(map(sum, groups)) / n`.
    """
    import numpy as np

    _check_confidence(confidence)
    if not groups or any(len(g) == 0 for g in groups):
        raise ValueError("a bootstrap interval needs at least one group, and no empty group")
    sums = np.array([float(sum(g)) for g in groups])
    sizes = np.array([len(g) for g in groups], dtype=float)
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(groups), size=(resamples, len(groups)))
    means = sums[picks].sum(axis=1) / sizes[picks].sum(axis=1)
    tail = (1 - confidence) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    # the estimate as callers compute it (`agentr.compare`), so that it lies inside exactly
    estimate = sum(map(sum, groups)) / sum(map(len, groups))
    floor, ceiling = min(map(min, groups)), max(map(max, groups))
    return _containing(float(low), float(high), float(estimate), float(floor), float(ceiling))


def mcnemar_exact_p(only_a: int, only_b: int) -> float:
    """Two-sided exact McNemar p-value from the discordant pairs.

    `only_a`: pairs where A succeeded and B failed; `only_b`: the reverse. Under the null both
    are equally likely, so min(only_a, only_b) is a Binomial(only_a + only_b, 1/2) tail.
    """
    if only_a < 0 or only_b < 0:
        raise ValueError(f"discordant counts must be >= 0, got {only_a} and {only_b}")
    n = only_a + only_b
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(only_a, only_b) + 1)) / 2**n
    return min(1.0, 2 * tail)
