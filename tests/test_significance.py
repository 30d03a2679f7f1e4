"""Paired significance tests on cases with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from hnm_cli.evaluation.significance import bootstrap_test, paired_test, randomization_test

TESTS = [randomization_test, bootstrap_test]


@pytest.mark.parametrize("test", TESTS)
def test_identical_runs_give_one(test) -> None:
    a = np.linspace(0, 1, 40)
    assert test(a, a.copy(), trials=500, seed=3) == 1.0
    assert test([], [], trials=10) == 1.0


@pytest.mark.parametrize("test", TESTS)
def test_big_consistent_gain_is_significant(test) -> None:
    rng = np.random.default_rng(0)
    b = rng.uniform(0, 0.5, 60)
    a = b + 0.3 + rng.uniform(0, 0.05, 60)
    # No resample reaches the observed difference: the smallest p the estimator can report.
    assert test(a, b, trials=2000, seed=1) == pytest.approx(1 / 2001)
    assert test(b, a, trials=2000, seed=1) == pytest.approx(1 / 2001)  # two-sided


def test_exact_enumeration_small_n() -> None:
    # 3 queries, all +1: only the all-plus and all-minus sign patterns reach |mean| = 1 -> 2/8.
    assert randomization_test([1, 1, 1], [0, 0, 0]) == 0.25
    # differences 1, 2, 3, -0.5 (sum 5.5): |sum| >= 5.5 only for (+,+,+,-), (+,+,+,+) and their negations -> 4/16.
    assert randomization_test([1, 2, 3, 0], [0, 0, 0, 0.5]) == 0.25


def test_agrees_with_scipy_exact_permutation() -> None:
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(5)
    a, b = rng.uniform(0, 1, 10), rng.uniform(0, 1, 10)

    def mean_diff(x, y, axis=-1):
        return np.mean(x - y, axis=axis)

    ref = stats.permutation_test((a, b), mean_diff, permutation_type="samples", n_resamples=np.inf)
    assert randomization_test(a, b) == pytest.approx(ref.pvalue, abs=1e-12)


@pytest.mark.parametrize("test", TESTS)
def test_seeded_and_no_effect(test) -> None:
    rng = np.random.default_rng(7)
    a, b = rng.uniform(0, 1, 200), rng.uniform(0, 1, 200)
    p = test(a, b, trials=3000, seed=11)
    assert p == test(a, b, trials=3000, seed=11)
    assert 0.05 < p <= 1.0


def test_paired_test_dispatch_and_errors() -> None:
    assert paired_test([1, 1, 1], [0, 0, 0], method="randomization") == 0.25
    with pytest.raises(ValueError, match="unknown significance test 'ttest'"):
        paired_test([1], [0], method="ttest")
    with pytest.raises(ValueError, match="equal length"):
        randomization_test([1, 2], [1])
