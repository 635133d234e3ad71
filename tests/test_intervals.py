"""Intervals and paired tests (`agentr.intervals`), against hand computations."""

from __future__ import annotations

import math
import random

import pytest

from agentr.compare import compare_episodes
from agentr.intervals import cluster_bootstrap_interval, mcnemar_exact_p, wilson_interval

Z95 = 1.959963984540054  # the 97.5% quantile of the standard normal


def wilson_by_formula(k: int, n: int) -> tuple[float, float]:
    p = k / n
    denominator = 1 + Z95**2 / n
    centre = p + Z95**2 / (2 * n)
    spread = Z95 * math.sqrt(p * (1 - p) / n + Z95**2 / (4 * n**2))
    return (centre - spread) / denominator, (centre + spread) / denominator


@pytest.mark.parametrize("k, n", [(5, 20), (0, 20), (20, 20), (1, 3), (37, 100)])
def test_wilson_matches_the_formula(k, n):
    assert wilson_interval(k, n) == pytest.approx(wilson_by_formula(k, n), abs=1e-12)


def test_wilson_5_of_20_by_hand():
    # p = 0.25, z^2 = 3.8415: centre (0.25 + 0.09604) / 1.19207 = 0.29030; half-width
    # 1.95996 * sqrt(0.009375 + 0.0024010) / 1.19207 = 0.17837
    low, high = wilson_interval(5, 20)
    assert low == pytest.approx(0.1119, abs=1e-4) and high == pytest.approx(0.4687, abs=1e-4)


def test_wilson_is_narrower_with_more_episodes_and_never_empty():
    assert wilson_interval(0, 20)[0] == 0.0 and wilson_interval(0, 20)[1] > 0.1
    small, large = wilson_interval(5, 20), wilson_interval(50, 200)
    assert large[1] - large[0] < small[1] - small[0]
    wider = wilson_interval(5, 20, confidence=0.99)
    assert wider[0] < small[0] and wider[1] > small[1]


@pytest.mark.parametrize("confidence", [0.9, 0.95, 0.99])
def test_wilson_lies_in_the_unit_interval_and_contains_the_rate_for_every_count(confidence):
    # unclamped, rounding gives e.g. 0/10 -> low 2.8e-17 > 0 and 13/13 -> high 0.9999999999999999 < 1:
    # a negative error bar, which matplotlib refuses
    outside = []
    for n in range(1, 201):
        for k in range(n + 1):
            low, high = wilson_interval(k, n, confidence)
            if not 0.0 <= low <= k / n <= high <= 1.0:
                outside.append((k, n, low, high))
    assert outside == []


@pytest.mark.parametrize("k, n", [(-1, 5), (6, 5), (0, 0)])
def test_wilson_rejects_bad_counts(k, n):
    with pytest.raises(ValueError, match="successes"):
        wilson_interval(k, n)


def test_bootstrap_of_constant_values_is_that_value():
    assert cluster_bootstrap_interval([[0.0], [0.0], [0.0]]) == (0.0, 0.0)
    assert cluster_bootstrap_interval([[1.0, 1.0], [1.0]]) == (1.0, 1.0)


def random_groups(rng: random.Random, values: list[float]) -> list[list[float]]:
    """1 to 6 groups (tasks) of 1 to 4 values drawn from `values`."""
    return [[rng.choice(values) for _ in range(rng.randint(1, 4))] for _ in range(rng.randint(1, 6))]


def mean(groups: list[list[float]]) -> float:
    """The point estimate, computed as `agentr.compare` does."""
    return sum(map(sum, groups)) / sum(map(len, groups))


def test_bootstrap_of_successes_lies_in_the_unit_interval_and_contains_the_rate():
    rng = random.Random(0)
    cases = [random_groups(rng, [0.0, 1.0]) for _ in range(200)]
    cases += [[[v] * size for size in sizes] for v in (0.0, 1.0) for sizes in ([1], [1, 3], [2, 2, 4])]
    for groups in cases:
        low, high = cluster_bootstrap_interval(groups)
        assert 0.0 <= low <= mean(groups) <= high <= 1.0, groups


def test_bootstrap_contains_its_estimate_despite_rounding():
    # rewards like 0.1 or 1/3 are not exact in binary: resample means and the estimate round
    # differently, and unclamped the interval misses the estimate or the values' range by an ulp
    rng = random.Random(1)
    cases = [[[v] * rng.randint(1, 4) for _ in range(rng.randint(1, 10))] for v in (0.1, 0.3, 0.7, 1 / 3)
             for _ in range(25)]
    cases += [random_groups(rng, [0.1, 0.3, 1 / 3, 0.7]) for _ in range(100)]
    for groups in cases:
        low, high = cluster_bootstrap_interval(groups)
        estimate, values = mean(groups), [v for g in groups for v in g]
        assert min(*values, estimate) <= low <= estimate <= high <= max(*values, estimate), groups


def paired(a: list[bool], b: list[bool], rewards_a: list[float], samples: int = 1, seed: int = 0) -> dict:
    """`compare_episodes` of outcomes `a` and `b` (`samples` consecutive outcomes per task);
    A's rewards are `rewards_a`, B's its successes."""
    def summaries(successes, rewards):
        return [{"task_id": str(i // samples), "sample": i % samples, "success": s, "reward": r}
                for i, (s, r) in enumerate(zip(successes, rewards))]
    return compare_episodes(summaries(a, rewards_a), summaries(b, [float(s) for s in b]), seed=seed)


@pytest.mark.parametrize("n, samples", [(1, 1), (2, 1), (3, 1), (5, 1), (4, 2), (6, 3), (20, 1), (20, 4)])
def test_paired_differences_lie_in_minus_one_to_one_and_contain_the_difference(n, samples):
    rng = random.Random(n * samples)
    none, every = [False] * n, [True] * n
    cases = [(every, none), (none, every), (none, none), (every, every)]
    cases += [([rng.random() < 0.5 for _ in range(n)], [rng.random() < 0.5 for _ in range(n)])
              for _ in range(10)]
    for a, b in cases:
        rewards = [rng.choice([0.0, 0.1, 1 / 3, 1.0]) for _ in a]
        c = paired(a, b, rewards, samples)
        for key in ("success_diff", "reward_diff"):
            low, high = c[f"{key}_ci"]
            assert -1.0 <= low <= c[key] <= high <= 1.0, (key, a, b, rewards)


def test_bootstrap_seed_chooses_the_resamples():
    # 40 tasks with distinct values: the resample means take thousands of values, so two
    # seeds' 2.5% and 97.5% quantiles coinciding would be a coincidence of both streams
    values = [i / 40 for i in range(40)]
    groups = [[v] for v in values]
    assert cluster_bootstrap_interval(groups, seed=1) != cluster_bootstrap_interval(groups, seed=2)
    assert cluster_bootstrap_interval(groups, seed=1) == cluster_bootstrap_interval(groups, seed=1)
    # and `agentr.compare` hands its seed on
    outcomes = [v >= 0.5 for v in values]
    by_seed = [paired(outcomes, outcomes, values, seed=seed)["reward_diff_ci"] for seed in (1, 2, 1)]
    assert by_seed[0] != by_seed[1] and by_seed[0] == by_seed[2]


def binomial_quantile(n: int, p: float, q: float) -> int:
    """Smallest k with P(Binomial(n, p) <= k) >= q."""
    total = 0.0
    for k in range(n + 1):
        total += math.comb(n, k) * p**k * (1 - p) ** (n - k)
        if total >= q:
            return k
    return n


def test_bootstrap_of_zero_one_values_follows_the_binomial():
    # 30 ones among 100 single-episode groups: a resample's mean is Binomial(100, 0.3) / 100,
    # so the percentile interval is (close to) that distribution's 2.5% and 97.5% quantiles.
    groups = [[1.0]] * 30 + [[0.0]] * 70
    low, high = cluster_bootstrap_interval(groups, resamples=20000)
    assert low == pytest.approx(binomial_quantile(100, 0.3, 0.025) / 100, abs=0.011)
    assert high == pytest.approx(binomial_quantile(100, 0.3, 0.975) / 100, abs=0.011)


def test_bootstrap_resamples_whole_groups():
    # Two tasks, four episodes each, all alike within a task: only 3 resample means exist
    # (0, 0.5, 1), so the interval spans them; resampled by episode it would be much narrower.
    low, high = cluster_bootstrap_interval([[1.0] * 4, [0.0] * 4])
    assert (low, high) == (0.0, 1.0)
    assert cluster_bootstrap_interval([[1.0] * 4, [0.0] * 4], seed=1) == (0.0, 1.0)


def test_bootstrap_is_seeded():
    groups = [[0.0, 1.0], [1.0], [0.0], [0.5, 0.5, 1.0]]
    assert cluster_bootstrap_interval(groups, seed=3) == cluster_bootstrap_interval(groups, seed=3)
    with pytest.raises(ValueError, match="empty group"):
        cluster_bootstrap_interval([[1.0], []])


def test_mcnemar_exact_by_hand():
    assert mcnemar_exact_p(0, 0) == 1.0
    assert mcnemar_exact_p(5, 0) == pytest.approx(2 / 32)  # 2 * P(X <= 0), X ~ Bin(5, 1/2)
    assert mcnemar_exact_p(0, 5) == pytest.approx(2 / 32)
    assert mcnemar_exact_p(3, 3) == 1.0  # capped: the two tails overlap
    # 8 vs 2 discordant pairs: 2 * (1 + 10 + 45) / 1024
    assert mcnemar_exact_p(8, 2) == pytest.approx(2 * 56 / 1024)
    with pytest.raises(ValueError):
        mcnemar_exact_p(-1, 2)
