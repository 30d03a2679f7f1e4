"""The paper's PD-D rule (Meghwani et al. 2025) with hnm's window, fill and margin options."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace

import numpy as np

from hnm_cli.choices import Fallback, Fill, Sampling
from hnm_cli.mining import rule_exact
from hnm_cli.mining.audit import emit_audit
from hnm_cli.mining.numerics import check_inputs, excluded_keys, known, make_negative, rowdot64
from hnm_cli.mining.results import (
    SOURCE_FALLBACK_NEXT,
    SOURCE_RULE,
    AuditRecord,
    Excluded,
    MiningStats,
    Pair,
    PairResult,
)
from hnm_cli.mining.rule_exact import Candidates
from hnm_cli.mining.rule_hnsw import hnsw_c1
from hnm_cli.search import DEFAULT_BLOCK_ROWS, HnswIndex, VectorSource, exact_topk


def mine_rule(
    query_vecs: np.ndarray,
    source: VectorSource,
    pairs: Sequence[Pair],
    excluded: Excluded,
    *,
    num_negatives: int = 1,
    index: HnswIndex | None = None,
    ef_search: int = 200,
    candidate_k: int = 100,
    block_rows: int = DEFAULT_BLOCK_ROWS,
    pair_block: int = 1024,
    fallback: Fallback = Fallback.NONE,
    fill: Fill = Fill.EMPTY,
    c2_margin: float = 0.0,
    range_min: int = 0,
    range_max: int | None = None,
    sampling_strategy: Sampling = Sampling.TOP,
    rng: np.random.Generator | None = None,
    audit: Callable[[AuditRecord], None] | None = None,
) -> tuple[list[PairResult], MiningStats]:
    """The paper's rule: D passes iff C1 d(Q,D) < d(Q,PD) and C2 d(Q,D) < d(PD,D) (strict), not excluded.

    For each pair, the ``num_negatives`` passing documents with the smallest d(Q,D) are taken (ties: lower
    row first). PD itself and every row in ``excluded[pair.query_row]`` never pass. A pair whose PD is the
    query's top-1 has an empty C1 region and gets nothing (unless ``fallback="next"``).

    Exact path (``index=None``): one blocked scan over the corpus keeps a streaming best-``num_negatives``
    per pair; exact without any k. HNSW path: searches ``candidate_k`` neighbours and doubles k until the
    documents at or above the query's deepest PD fill at most half of the returned list and every PD of the
    query is in it. A query is scanned exactly instead when k would pass n/16, or when the list is deep
    enough but misses a PD or an excluded row that ranks above PD (a detected recall gap). Candidates are
    then judged on recomputed similarities, never on hnsw's distances, so whenever hnsw returned every
    document above PD the two paths return identical results (measured: identical on 3000 x 32 clustered
    vectors for every ef >= 64 tried; ANN recall is not a proof, so ``index=None`` is the exact reference).

    Args:
        query_vecs: [nq, dim] float32 query vectors; ``Pair.query_row`` indexes them.
        source: Corpus vectors; ``Pair.positive_row`` and the results index them.
        pairs: The (Q, PD) pairs; each pair is its own result, in the same order.
        excluded: For each query row, the corpus rows that may never be negatives (all positives of Q by id,
            documents whose normalised text equals a positive's). Missing keys mean nothing excluded.
        num_negatives: Negatives per pair (the paper: 1).
        index: An HnswIndex over ``source``, or None for the exact scan.
        ef_search: hnsw ef (raised to k when widening, and never below 64: lower values lose neighbours
            above PD, which the rule cannot detect).
        candidate_k: First hnsw search width, and the size of the audit window.
        block_rows: Corpus rows per matrix product (exact scan).
        pair_block: Pairs per matrix product (exact scan); memory ~ pair_block x block_rows x 4 bytes.
        fallback: "none" (the paper) or "next": pairs the rule leaves empty get the nearest non-excluded
            documents that pass C2 only, with source "fallback-next".
        fill: Which pairs the "next" fallback fills: "empty" (no rule negative) or "short" (fewer than the
            window asks for). The C1-passing documents head the C2-passing list in similarity order, so a
            filled pair gets the nearest C2-passing documents: its rule negatives, then fallback-next ones.
        c2_margin: C2 with a margin, against false negatives: D must satisfy d(PD,D) - d(Q,D) > c2_margin
            (0: the paper's strict C2).
        range_min: Skip this many of a pair's passing documents (nearest first) before selecting.
        range_max: The selection window ends at this position of the passing list (exclusive); None means
            ``range_min + num_negatives``.
        sampling_strategy: "top" takes the window's first ``num_negatives``; "random" samples them with
            ``rng`` (kept in rank order).
        rng: Needed for "random"; defaults to ``np.random.default_rng(0)``.
        audit: Called once per examined candidate (the C1 region plus the top ``candidate_k`` window), after
            selection, in pair order then rank order.

    Returns:
        ``(results, stats)``: one PairResult per pair, in input order, and the totals.

    Raises:
        ValueError: on a dimension mismatch, a row out of range, or a bad argument.
    """
    if fallback not in (Fallback.NONE, Fallback.NEXT):
        raise ValueError(f"fallback must be 'none' or 'next' here, got '{fallback}' (random/bm25: mine_negatives)")
    fill, sampling_strategy = Fill(fill), Sampling(sampling_strategy)  # ValueError on any other word
    if candidate_k < 1 or block_rows < 1 or pair_block < 1:
        raise ValueError("candidate_k, block_rows and pair_block must be >= 1")
    if range_min < 0 or c2_margin < 0:
        raise ValueError("range_min and c2_margin must be >= 0")
    query_vecs = np.ascontiguousarray(query_vecs, dtype=np.float32)
    check_inputs(query_vecs, source, pairs, num_negatives)
    if index is not None and (index.n != source.n or index.dim != source.dim):
        raise ValueError(f"hnsw index has {index.n} x {index.dim} vectors, corpus {source.n} x {source.dim}")
    n, m = source.n, num_negatives
    # The selection window over a pair's passing documents, nearest first.
    need = range_min + m if range_max is None else range_max
    if need - range_min < m:
        raise ValueError(f"the window range_min={range_min}..range_max={range_max} holds fewer than {m} negatives")
    rng = rng if rng is not None else np.random.default_rng(0)
    stats = MiningStats()
    if not pairs:
        return [], stats
    qrows = np.array([p.query_row for p in pairs], dtype=np.int64)
    prows = np.array([p.positive_row for p in pairs], dtype=np.int64)
    qv = query_vecs[qrows]
    pv = source.take(prows)
    s_qp = rowdot64(qv, pv)
    excl_keys = excluded_keys(pairs, excluded, n)

    windows: dict[int, np.ndarray] = {}
    if index is None:
        cands: dict[int, Candidates] = {}
        todo = np.arange(len(pairs), dtype=np.int64)
    else:
        cands, windows, todo = hnsw_c1(
            query_vecs,
            qrows,
            pv,
            s_qp,
            prows,
            excl_keys,
            source,
            index,
            ef_search,
            candidate_k,
            stats,
            excluded,
            c2_margin,
        )
    if len(todo):
        # With an audit the whole C1 region is kept (it is written out); otherwise only what can matter.
        keep = None if audit is not None else need
        cands.update(
            rule_exact.scan_c1(qv, pv, s_qp, prows, excl_keys, todo, source, block_rows, pair_block, keep, c2_margin)
        )
        if audit is not None:
            uq = np.unique(qrows[todo])
            _, top = exact_topk(query_vecs[uq], source, candidate_k, block_rows, pair_block)
            windows.update({int(qr): top[j] for j, qr in enumerate(uq)})

    results: list[PairResult] = []
    window_size = min(candidate_k, n) - 1
    for i, pair in enumerate(pairs):
        c = cands[i]
        pos = np.flatnonzero(c.passing(c2_margin))[:need]
        negs = [make_negative(c.rows[j], SOURCE_RULE, int(j) + 1, c.s_qd[j], s_qp[i], c.s_pd[j]) for j in pos]
        results.append(
            PairResult(
                pair,
                negs,
                c1_pass=c.c1_pass,
                c2_fail=c.c2_fail,
                excluded=c.excluded,
                examined=max(c.c1_pass, window_size),
            )
        )

    recount = {
        i: (
            np.array([neg.doc_row for neg in r.negatives], dtype=np.int64),
            np.array([1.0 - known(neg.d_qd) for neg in r.negatives]),
        )
        for i, r in enumerate(results)
        if r.negatives and not cands[i].rank_exact
    }
    if recount:
        # Exact s64 values of the chosen documents, for the counting scan (1 - d_qd would round).
        for i, (rows, _) in recount.items():
            docs = source.take(rows)
            recount[i] = (rows, rowdot64(np.broadcast_to(qv[i], docs.shape), docs))
        ranks = rule_exact.count_ranks(qv, recount, source, block_rows, pair_block)
        for i, rk in ranks.items():
            results[i].negatives = [replace(neg, rank=int(k)) for neg, k in zip(results[i].negatives, rk, strict=True)]

    if fallback == Fallback.NEXT:
        lacking = [
            i for i, r in enumerate(results) if (len(r.negatives) < need if fill == Fill.SHORT else not r.negatives)
        ]
        if lacking:
            todo_next = np.array(lacking, dtype=np.int64)
            nxt = rule_exact.scan_next(
                qv, pv, prows, excl_keys, todo_next, source, block_rows, pair_block, need, c2_margin
            )
            for i in lacking:
                rows, s_qd, s_pd = nxt[i]
                # The rule's own negatives head this list (same order, same float64 values): keep them as they are.
                have = {neg.doc_row: neg for neg in results[i].negatives}
                negs = [
                    have.get(int(r)) or make_negative(r, SOURCE_FALLBACK_NEXT, None, a, s_qp[i], b)
                    for r, a, b in zip(rows, s_qd, s_pd, strict=True)
                ]
                results[i].fallback_used = any(neg.source == SOURCE_FALLBACK_NEXT for neg in negs)
                results[i].negatives = negs

    select_window(results, range_min, need, m, sampling_strategy, rng)

    if audit is not None:
        for i, pair in enumerate(pairs):
            emit_audit(
                audit,
                pair,
                cands[i],
                windows[int(qrows[i])],
                results[i],
                qv[i],
                pv[i],
                s_qp[i],
                source,
                i,
                excl_keys,
                c2_margin,
            )

    for r in results:
        stats.add(r, m)
    return results, stats


def select_window(
    results: Sequence[PairResult], range_min: int, need: int, m: int, sampling: Sampling, rng: np.random.Generator
) -> None:
    """Cut each pair's passing list to its window ``[range_min, need)`` and take ``m`` of it, in pair order.

    "random" draws from ``rng`` once per pair whose window holds more than ``m`` (kept in rank order), so the
    draws depend on the pairs' order only: `hnm_cli.mining.blocks` calls this on the merged results of
    blocks mined elsewhere and gets the draws of one `mine_rule` call.
    """
    for r in results:
        window = r.negatives[range_min:need]
        if sampling == Sampling.RANDOM and len(window) > m:
            window = [window[j] for j in np.sort(rng.choice(len(window), size=m, replace=False))]
        r.negatives = window[:m]
        r.fallback_used = any(neg.source == SOURCE_FALLBACK_NEXT for neg in r.negatives)
