"""Exact float64 similarities and the checks shared by every strategy.

Decisions (C1, C2, thresholds, ties) are those of float64 similarities of the stored float32 vectors, summed in
a fixed order (float32 block products decide only where they are farther than a proven error bound from the
boundary), so the exact and hnsw paths agree bit for bit.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from hnm_cli.mining.results import Excluded, Negative, Pair
from hnm_cli.search import VectorSource

_DOT_CHUNK = 8192


def rowdot64(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise dot products in float64 of two [N, dim] arrays, bit-identical wherever a row sits.

    The products are summed by a fixed binary tree of elementwise additions (dim zero-padded to a power
    of two; adding 0.0 is exact). Matrix products and ``sum(axis=1)`` may order the additions differently
    depending on the batch shape and memory layout, and the exact and hnsw paths see the same (Q, D)
    pair in different batches: decisions and reported distances must not depend on that.
    """
    n, dim = a.shape
    out = np.empty(n, dtype=np.float64)
    width = 1 << max(dim - 1, 0).bit_length()
    for lo in range(0, n, _DOT_CHUNK):
        hi = min(lo + _DOT_CHUNK, n)
        prod = np.zeros((hi - lo, width), dtype=np.float64)
        np.multiply(a[lo:hi], b[lo:hi], out=prod[:, :dim], dtype=np.float64)
        while width > 1:
            width //= 2
            prod = prod[:, :width] + prod[:, width:]
        out[lo:hi] = prod[:, 0]
        width = 1 << max(dim - 1, 0).bit_length()
    return out


def gather_dot64(a: np.ndarray, ai: np.ndarray, b: np.ndarray, bi: np.ndarray) -> np.ndarray:
    """``rowdot64(a[ai], b[bi])`` gathered in chunks, so memory stays bounded for many candidates."""
    out = np.empty(len(ai), dtype=np.float64)
    for lo in range(0, len(ai), _DOT_CHUNK):
        hi = lo + _DOT_CHUNK
        out[lo:hi] = rowdot64(a[ai[lo:hi]], b[bi[lo:hi]])
    return out


def c2_passes(s_qd: np.ndarray, s_pd: np.ndarray, c2_margin: float) -> np.ndarray:
    """C2 on float64 similarities: d(Q,D) + margin < d(PD,D), i.e. s(Q,D) - s(PD,D) > margin.

    At margin 0 this is the paper's strict ``s_qd > s_pd``, written so, bit for bit."""
    return s_qd > s_pd if c2_margin == 0 else (s_qd - s_pd) > c2_margin


def screen_eps(dim: int) -> float:
    """Slack for float32 screening before the float64 decision: float32 dot products of unit vectors are
    off by at most about dim * 2**-24; four times that, and never below 1e-4."""
    return max(1e-4, 4.0 * dim * 2.0**-24)


def check_inputs(query_vecs: np.ndarray, source: VectorSource, pairs: Sequence[Pair], num_negatives: int) -> None:
    if query_vecs.ndim != 2:
        raise ValueError(f"query vectors have shape {query_vecs.shape}, expected [rows, dim]")
    if query_vecs.shape[1] != source.dim:
        raise ValueError(f"query vectors have dimension {query_vecs.shape[1]}, corpus vectors {source.dim}")
    if num_negatives < 1:
        raise ValueError(f"num_negatives must be >= 1, got {num_negatives}")
    nq, n = len(query_vecs), source.n
    for p in pairs:
        if not 0 <= p.query_row < nq:
            raise ValueError(f"pair {p}: query_row out of range 0..{nq - 1}")
        if not 0 <= p.positive_row < n:
            raise ValueError(f"pair {p}: positive_row out of range 0..{n - 1}")


def excluded_keys(pairs: Sequence[Pair], excluded: Excluded, n: int) -> np.ndarray:
    """Sorted unique ``pair_index * n + row`` keys of every excluded (pair, row); vectorised lookups."""
    keys: list[np.ndarray] = []
    for i, p in enumerate(pairs):
        rows = excluded.get(p.query_row)
        if rows:
            arr = np.fromiter(rows, dtype=np.int64, count=len(rows))
            arr = arr[(arr >= 0) & (arr < n)]
            keys.append(i * n + arr)
    if not keys:
        return np.empty(0, dtype=np.int64)
    return np.unique(np.concatenate(keys))


def in_sorted(keys: np.ndarray, sorted_keys: np.ndarray) -> np.ndarray:
    if len(sorted_keys) == 0:
        return np.zeros(len(keys), dtype=bool)
    pos = np.searchsorted(sorted_keys, keys)
    pos[pos == len(sorted_keys)] = 0
    found: np.ndarray = sorted_keys[pos] == keys
    return found


def make_negative(row: int, source: str, rank: int | None, s_qd: float, s_qp: float, s_pd: float) -> Negative:
    return Negative(int(row), source, rank, float(1.0 - s_qd), float(1.0 - s_qp), float(1.0 - s_pd))


def known(distance: float | None) -> float:
    """A distance the strategy always computes (the rule's, top-k's); None here is a bug, not bad input."""
    assert distance is not None
    return distance
