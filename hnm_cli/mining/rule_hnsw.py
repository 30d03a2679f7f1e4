"""The rule through an hnsw index: widen the search until it provably reaches below the positive, else hand the
query to the exact scan. Candidates are judged on recomputed float64 similarities, never on hnsw's distances.
"""

from __future__ import annotations

from collections.abc import Set

import numpy as np

from hnm_cli.mining.numerics import c2_passes, in_sorted, rowdot64, screen_eps
from hnm_cli.mining.results import Excluded, MiningStats
from hnm_cli.mining.rule_exact import Candidates
from hnm_cli.search import HnswIndex, VectorSource

COVER_FRACTION = 0.5
# hnsw ef floor for the rule: below about 64, hnsw misses top neighbours often enough to change negatives
# (0.5% of pairs at ef 8-16 on 3000 x 32 clustered vectors; none from 64 up), and the rule needs coverage.
MIN_EF = 64
# Widening stops when k would pass this share of the corpus; such queries are scanned exactly.
MAX_K_FRACTION = 1 / 16


def _known_rows_returned(
    q: np.ndarray, rows: Set[int] | None, got: np.ndarray, thr: float, source: VectorSource
) -> bool:
    """Every excluded row (positives, duplicates) that ranks above the deepest PD must be in ``got``.

    These are the only documents whose similarity we know to compute without a scan; one of them missing
    proves a recall gap in the hnsw result, so the query is scanned exactly instead.
    """
    if not rows:
        return True
    arr = np.fromiter(rows, dtype=np.int64, count=len(rows))
    arr = arr[(arr >= 0) & (arr < source.n)]
    docs = source.take(arr)
    above = arr[rowdot64(np.broadcast_to(q, docs.shape), docs) > thr]
    return bool(np.isin(above, got).all())


def hnsw_c1(
    qv_all: np.ndarray,
    qrows: np.ndarray,
    pv: np.ndarray,
    s_qp: np.ndarray,
    prows: np.ndarray,
    excl_keys: np.ndarray,
    source: VectorSource,
    index: HnswIndex,
    ef_search: int,
    candidate_k: int,
    stats: MiningStats,
    excluded: Excluded,
    c2_margin: float = 0.0,
) -> tuple[dict[int, Candidates], dict[int, np.ndarray], np.ndarray]:
    """hnsw candidates per pair, widening k until every PD of the query is returned and the list reaches
    below the deepest PD; returns (complete C1 candidates per covered pair, the search window per covered
    query row, pair indices left to the exact scan)."""
    n = source.n
    eps = screen_eps(source.dim)
    by_query: dict[int, list[int]] = {}
    for i, qr in enumerate(qrows):
        by_query.setdefault(int(qr), []).append(i)
    thr = {qr: float(min(s_qp[i] for i in idx)) for qr, idx in by_query.items()}
    covered: dict[int, np.ndarray] = {}
    fallback: list[int] = []
    pending = sorted(by_query)
    k = min(candidate_k, n)
    while pending:
        try:
            sims, labels = index.search(qv_all[pending], k, ef=max(ef_search, MIN_EF, k))
        except RuntimeError:
            # hnswlib cannot fill k results (k near n, or a sparse graph): scan these queries exactly.
            fallback.extend(pending)
            break
        again = []
        for j, qr in enumerate(pending):
            got = labels[j]
            has_pd = bool(np.isin(prows[by_query[qr]], got).all())
            # "Reached" asks for more than PD inside the list: the C1 region must fill at most
            # COVER_FRACTION of it. hnsw recall is highest at the top of a result list, so a list that
            # runs well past PD rarely misses a document above PD (undetectable otherwise).
            above = int(np.count_nonzero(sims[j] >= thr[qr] - eps))
            reached = len(got) >= n or above <= COVER_FRACTION * len(got)
            if has_pd and reached and _known_rows_returned(qv_all[qr], excluded.get(qr), got, thr[qr], source):
                covered[qr] = got
            elif reached:
                fallback.append(qr)  # recall gap: the list went past PD without returning it
            else:
                again.append(qr)
        if not again:
            break
        if 2 * k > max(n * MAX_K_FRACTION, candidate_k):
            # An hnsw search for k neighbours visits about k * M vectors: past n/16 that costs as much as
            # scanning the corpus for the query, and the batched exact scan is cheaper still.
            fallback.extend(again)
            break
        k *= 2
        stats.hnsw_widenings += len(again)
        pending = again
    stats.exact_fallbacks += len(fallback)

    cands: dict[int, Candidates] = {}
    windows: dict[int, np.ndarray] = {}
    for qr, got in covered.items():
        docs = source.take(got)
        s_qd_all = rowdot64(np.broadcast_to(qv_all[qr], docs.shape), docs)
        order = np.lexsort((got, -s_qd_all))
        got, docs, s_qd_all = got[order], docs[order], s_qd_all[order]
        windows[qr] = got[:candidate_k]
        for i in by_query[qr]:
            c1 = (s_qd_all > s_qp[i]) & (got != prows[i])
            rows, s_qd = got[c1], s_qd_all[c1]
            s_pd = rowdot64(np.broadcast_to(pv[i], (len(rows), docs.shape[1])), docs[c1])
            excl = in_sorted(i * n + rows, excl_keys)
            c = Candidates(rows, s_qd, s_pd, excl)
            c.c1_pass = int(len(rows))
            c.excluded = int(excl.sum())
            c.c2_fail = int((~excl & ~c2_passes(s_qd, s_pd, c2_margin)).sum())
            cands[i] = c
    left = np.array(sorted(i for qr in fallback for i in by_query[qr]), dtype=np.int64)
    return cands, windows, left
