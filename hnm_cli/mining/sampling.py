"""Negatives that need no similarity search: seeded random draws, and distances filled in afterwards."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from hnm_cli.mining.numerics import rowdot64
from hnm_cli.mining.results import SOURCE_RANDOM, Excluded, Negative, Pair, PairResult
from hnm_cli.search import VectorSource


def sample_random(
    n_docs: int,
    pairs: Sequence[Pair],
    excluded: Excluded,
    num_negatives: int,
    rng: np.random.Generator,
) -> list[PairResult]:
    """Seeded uniform negatives over corpus rows minus PD and ``excluded[query_row]`` (source "random").

    Draws without replacement within a pair; fewer than ``num_negatives`` only when the corpus has too few
    candidates. Distances are None (use `fill_distances`).
    """
    if num_negatives < 1:
        raise ValueError(f"num_negatives must be >= 1, got {num_negatives}")
    results = []
    for p in pairs:
        if not 0 <= p.positive_row < n_docs:
            raise ValueError(f"pair {p}: positive_row out of range 0..{n_docs - 1}")
        banned = set(excluded.get(p.query_row, ())) | {p.positive_row}
        allowed = n_docs - sum(1 for r in banned if 0 <= r < n_docs)
        want = min(num_negatives, allowed)
        chosen: list[int] = []
        if want > 0 and allowed <= 4 * want:
            # Few candidates left: draw from the explicit list rather than rejection-sample.
            pool = np.setdiff1d(np.arange(n_docs, dtype=np.int64), np.fromiter(banned, np.int64, len(banned)))
            chosen = [int(x) for x in rng.choice(pool, size=want, replace=False)]
        else:
            seen = set(banned)
            while len(chosen) < want:
                for x in rng.integers(0, n_docs, size=2 * (want - len(chosen))):
                    x = int(x)
                    if x not in seen and len(chosen) < want:
                        seen.add(x)
                        chosen.append(x)
        negs = [Negative(r, SOURCE_RANDOM, None, None, None, None) for r in chosen]
        results.append(PairResult(p, negs))
    return results


def fill_distances(query_vecs: np.ndarray, source: VectorSource, results: Sequence[PairResult]) -> list[PairResult]:
    """Return copies of ``results`` whose negatives have d_qd, d_qp and d_pd computed (float64).

    For strategies that do not compute distances (random, BM25); ``rank`` is left as it is.
    """
    query_vecs = np.ascontiguousarray(query_vecs, dtype=np.float32)
    out = []
    for r in results:
        if not r.negatives:
            out.append(replace(r, negatives=[]))
            continue
        rows = np.array([neg.doc_row for neg in r.negatives], dtype=np.int64)
        docs = source.take(rows)
        pd_vec = source.take([r.pair.positive_row])[0]
        q = query_vecs[r.pair.query_row]
        s_qd = rowdot64(np.broadcast_to(q, docs.shape), docs)
        s_pd = rowdot64(np.broadcast_to(pd_vec, docs.shape), docs)
        s_qp = float(rowdot64(q[None, :], pd_vec[None, :])[0])
        negs = [
            replace(neg, d_qd=float(1.0 - a), d_qp=float(1.0 - s_qp), d_pd=float(1.0 - b))
            for neg, a, b in zip(r.negatives, s_qd, s_pd, strict=True)
        ]
        out.append(replace(r, negatives=negs))
    return out
