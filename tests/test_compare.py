"""Paired comparison of evaluations (`agentr.compare`, `agentr compare`), on hand-built episodes."""

from __future__ import annotations

import json
import math

import pytest

from agentr.compare import compare_episodes, compare_paths, format_comparison
from agentr.intervals import mcnemar_exact_p


def episodes(successes: list[bool], samples: int | None = None) -> list[dict]:
    """One summary per outcome; with `samples`, consecutive outcomes are samples of one task."""
    out = []
    for i, s in enumerate(successes):
        e = {"task_id": str(i if samples is None else i // samples), "success": s, "reward": float(s)}
        if samples is not None:
            e["sample"] = i % samples
        out.append(e)
    return out


def write_eval(path, successes, sampled=None, samples=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {"metrics": {}, "episodes": episodes(successes)}
    if sampled is not None:
        data["sampled"] = {"episodes": episodes(sampled, samples)}
    path.write_text(json.dumps(data))
    return path


def test_identical_runs_differ_by_exactly_zero():
    outcomes = [True, False, True, True, False]
    c = compare_episodes(episodes(outcomes), episodes(outcomes))
    assert c["success_diff"] == 0 and c["success_diff_ci"] == [0.0, 0.0]
    assert c["reward_diff_ci"] == [0.0, 0.0]
    assert c["mcnemar_p"] == 1.0 and c["only_a"] == c["only_b"] == 0


def test_a_known_difference_gives_the_expected_interval():
    # 100 tasks: A wins 30 that B loses, both win 20, both lose 50. The per-task differences are
    # 30 ones and 70 zeros, so the paired bootstrap mean is Binomial(100, 0.3)/100: its 95%
    # range is 0.3 +- 1.96 * sqrt(0.3 * 0.7 / 100) = [0.21, 0.39] to within the lattice step.
    a = [True] * 50 + [False] * 50
    b = [False] * 30 + [True] * 20 + [False] * 50
    c = compare_episodes(episodes(a), episodes(b))
    assert c["success_a"] == 0.5 and c["success_b"] == 0.2
    assert c["success_diff"] == pytest.approx(0.3)
    half = 1.959964 * math.sqrt(0.3 * 0.7 / 100)
    low, high = c["success_diff_ci"]
    assert low == pytest.approx(0.3 - half, abs=0.015) and high == pytest.approx(0.3 + half, abs=0.015)
    assert (c["only_a"], c["only_b"]) == (30, 0)
    assert c["mcnemar_p"] == pytest.approx(mcnemar_exact_p(30, 0)) and c["mcnemar_p"] < 1e-8
    # swapping A and B mirrors the difference
    swapped = compare_episodes(episodes(b), episodes(a))
    assert swapped["success_diff"] == pytest.approx(-0.3)
    assert swapped["success_diff_ci"] == pytest.approx([-high, -low], abs=0.015)


def test_sampled_episodes_pair_by_task_and_sample_and_get_no_mcnemar():
    # 2 tasks x 3 samples; A wins every sample of task 0, B none; task 1 the same for both.
    a = episodes([True, True, True, False, True, False], samples=3)
    b = episodes([False, False, False, False, True, False], samples=3)
    c = compare_episodes(a, b)
    assert c["num_tasks"] == 2 and c["num_pairs"] == 6
    assert c["success_diff"] == pytest.approx(0.5)
    # resampling tasks: means of the per-task differences (1 and 0) are 0, 0.5 or 1
    assert c["success_diff_ci"] == [0.0, 1.0]
    assert c["mcnemar_p"] is None


def test_mismatched_tasks_are_refused():
    with pytest.raises(ValueError, match=r"only in A: 2; only in B: none"):
        compare_episodes(episodes([True, False, True]), episodes([True, False]))
    with pytest.raises(ValueError, match="appears twice"):
        compare_episodes(episodes([True]) * 2, episodes([True]))


def test_runs_compare_stage_by_stage(tmp_path, capsys):
    from agentr.cli import main

    for stage in ("base", "iteration_10", "iteration_2"):
        write_eval(tmp_path / "a" / stage / "eval.json", [True, True, False], [True, False] * 3, 2)
        write_eval(tmp_path / "b" / stage / "eval.json", [False, True, False], [True, False] * 3, 2)
    write_eval(tmp_path / "b" / "iteration_3" / "eval.json", [True])  # only in B: skipped
    comparisons = compare_paths(tmp_path / "a", tmp_path / "b")
    assert list(comparisons) == ["base", "iteration_2", "iteration_10"]
    assert comparisons["base"]["greedy"]["success_diff"] == pytest.approx(1 / 3)
    assert comparisons["base"]["sampled"]["success_diff_ci"] == [0.0, 0.0]
    assert "iteration_2 (sampled)" in format_comparison(comparisons)

    out = tmp_path / "cmp.json"
    main(["compare", str(tmp_path / "a" / "base"), str(tmp_path / "b" / "base" / "eval.json"),
          "--out", str(out)])
    printed = capsys.readouterr().out
    assert "+33.3" in printed and "McNemar" in printed
    saved = json.loads(out.read_text())
    assert saved["stages"]["base"]["greedy"]["only_a"] == 1


def test_compare_refuses_what_it_cannot_pair(tmp_path):
    from agentr.cli import main

    write_eval(tmp_path / "a" / "base" / "eval.json", [True])
    write_eval(tmp_path / "c" / "other" / "eval.json", [True])
    with pytest.raises(ValueError, match="two eval.json files or two run directories"):
        compare_paths(tmp_path / "a", tmp_path / "a" / "base" / "eval.json")
    with pytest.raises(ValueError, match="no evaluated stage in common"):
        compare_paths(tmp_path / "a", tmp_path / "c")
    with pytest.raises(ValueError, match="no eval.json"):
        compare_paths(tmp_path, tmp_path / "missing")
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(ValueError, match="not an evaluation"):
        compare_paths(tmp_path / "bad.json", tmp_path / "a" / "base")
    with pytest.raises(SystemExit, match="agentr compare: .*no evaluated stage in common"):
        main(["compare", str(tmp_path / "a"), str(tmp_path / "c")])
