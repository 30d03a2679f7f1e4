"""Paired significance tests over per-query scores: randomization (sign-flip) and bootstrap, seeded.

Both tests take two equally long sequences of per-query values of one metric (system A and system B on the
same queries, in the same order) and return a two-sided p-value for "the mean difference is zero".
They are pure and deterministic under a seed, so a report can be reproduced exactly.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from hnm_cli.choices import Significance

_CHUNK = 1000  # trials per vectorised block: bounds memory at _CHUNK x n_queries floats


def _differences(a: Sequence[float], b: Sequence[float]) -> np.ndarray:
    x = np.asarray(a, dtype=np.float64)
    y = np.asarray(b, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"paired tests need two 1-D sequences of equal length; got {x.shape} and {y.shape}")
    return x - y


def randomization_test(a: Sequence[float], b: Sequence[float], *, trials: int = 10_000, seed: int = 0) -> float:
    """Two-sided paired randomization test (Fisher's sign-flip test, as in Smucker et al. 2007).

    Under the null hypothesis the label of each query's pair is exchangeable, so each per-query difference
    keeps or flips its sign with probability 1/2. When 2**n <= trials every sign pattern is enumerated
    (an exact test); otherwise `trials` patterns are drawn and the p-value is (hits + 1) / (trials + 1),
    which never reports an impossible p = 0.

    Args:
        a: per-query values of system A.
        b: per-query values of system B, same queries and order.
        trials: random sign patterns to draw (default 10,000).
        seed: seed of the sign draws.

    Returns:
        The p-value in (0, 1]; exactly 1.0 when all differences are zero (identical systems) or there are none.
    """
    d = _differences(a, b)
    n = len(d)
    observed = abs(d.mean()) if n else 0.0
    if n == 0 or observed == 0.0:
        return 1.0
    # A relative tolerance keeps float noise in the sums from turning a tie into a miss.
    threshold = observed - 1e-12 * max(1.0, observed)
    if 2**n <= trials:
        patterns = ((np.arange(2**n)[:, None] >> np.arange(n)) & 1) * 2 - 1
        means = np.abs(patterns @ d) / n
        return float(np.count_nonzero(means >= threshold) / len(means))
    rng = np.random.default_rng(seed)
    hits = 0
    done = 0
    while done < trials:
        size = min(_CHUNK, trials - done)
        signs = rng.integers(0, 2, size=(size, n), dtype=np.int8) * 2 - 1
        hits += int(np.count_nonzero(np.abs(signs @ d) / n >= threshold))
        done += size
    return (hits + 1) / (trials + 1)


def bootstrap_test(a: Sequence[float], b: Sequence[float], *, trials: int = 10_000, seed: int = 0) -> float:
    """Two-sided paired bootstrap test (Sakai 2006; the shift method of Efron & Tibshirani).

    Resamples the queries with replacement and asks how often the mean of the differences, shifted so that
    the null hypothesis (mean 0) holds, is at least as far from 0 as the observed mean.

    Args:
        a: per-query values of system A.
        b: per-query values of system B, same queries and order.
        trials: bootstrap samples (default 10,000).
        seed: seed of the resampling.

    Returns:
        The p-value (hits + 1) / (trials + 1); exactly 1.0 when all differences are zero or there are none.
    """
    d = _differences(a, b)
    n = len(d)
    observed = abs(d.mean()) if n else 0.0
    if n == 0 or observed == 0.0:
        return 1.0
    threshold = observed - 1e-12 * max(1.0, observed)
    shifted = d - d.mean()
    rng = np.random.default_rng(seed)
    hits = 0
    done = 0
    while done < trials:
        size = min(_CHUNK, trials - done)
        idx = rng.integers(0, n, size=(size, n))
        hits += int(np.count_nonzero(np.abs(shifted[idx].mean(axis=1)) >= threshold))
        done += size
    return (hits + 1) / (trials + 1)


def paired_test(
    a: Sequence[float],
    b: Sequence[float],
    *,
    method: Significance = Significance.RANDOMIZATION,
    trials: int = 10_000,
    seed: int = 0,
) -> float:
    """Dispatch to `randomization_test` or `bootstrap_test` by name.

    Raises:
        ValueError: an unknown method.
    """
    if method == Significance.RANDOMIZATION:
        return randomization_test(a, b, trials=trials, seed=seed)
    if method == Significance.BOOTSTRAP:
        return bootstrap_test(a, b, trials=trials, seed=seed)
    raise ValueError(f"unknown significance test {method!r}; expected randomization or bootstrap")
