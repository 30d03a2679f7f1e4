"""Pure hard-negative selection: the paper's PD-D rule, dense top-k (sentence-transformers' knobs), random.

Everything here works on corpus ROW INDICES (0..n-1 in `VectorSource` order) and query-vector rows; the
stage maps them to ids, reads files and writes outputs. Vectors are L2-normalised float32, so cosine
distance is ``d = 1 - dot``. Decisions (C1, C2, thresholds, ties) are those of float64 similarities of the
stored float32 vectors, summed in a fixed order (float32 block products decide only where they are farther
than a proven error bound from the boundary), so the exact and hnsw paths agree bit for bit.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence, Set
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from hnm_cli.search import DEFAULT_BLOCK_ROWS, DEFAULT_QUERY_BLOCK, HnswIndex, VectorSource, exact_topk

__all__ = [
    "Pair",
    "Negative",
    "PairResult",
    "AuditRecord",
    "MiningStats",
    "mine_rule",
    "mine_topk",
    "sample_random",
    "fill_distances",
    "SOURCE_RULE",
    "SOURCE_FALLBACK_NEXT",
    "SOURCE_TOPK",
    "SOURCE_RANDOM",
]

SOURCE_RULE = "rule"
SOURCE_FALLBACK_NEXT = "fallback-next"
SOURCE_TOPK = "topk"
SOURCE_RANDOM = "random"

# Histogram bins of the stats: d(Q,D) - d(Q,PD) lies in [-2, 2]; d(Q,D) / d(PD,D) in [0, inf) (rule: < 1).
MARGIN_BINS = np.linspace(-1.0, 1.0, 41)
RATIO_BINS = np.linspace(0.0, 2.0, 41)


@dataclass(frozen=True)
class Pair:
    """One labelled (query, positive) pair: a row of the query vectors and a corpus row."""

    query_row: int
    positive_row: int


@dataclass(frozen=True)
class Negative:
    """A selected negative for one pair.

    Attributes:
        doc_row: Corpus row of the negative.
        source: Which strategy chose it: "rule", "fallback-next", "topk", "random" (the stage adds "bm25"
            and "fallback-random" / "fallback-bm25").
        rank: 1-based rank of the document in the query's dense ranking over the whole corpus (ties: lower
            row first), or None where the strategy does not know it.
        d_qd: Cosine distance query-negative, or None if not computed (see `fill_distances`).
        d_qp: Cosine distance query-positive, or None.
        d_pd: Cosine distance positive-negative, or None.
    """

    doc_row: int
    source: str
    rank: int | None
    d_qd: float | None
    d_qp: float | None
    d_pd: float | None


@dataclass
class PairResult:
    """Negatives chosen for one pair plus the per-pair counts behind the stats.

    Attributes:
        pair: The pair.
        negatives: Chosen negatives, best first (smallest d(Q,D) for rule/topk).
        c1_pass: Documents other than PD with d(Q,D) < d(Q,PD) (the C1 region), excluded ones included.
        c2_fail: Non-excluded documents of the C1 region that fail C2 (d(Q,D) >= d(PD,D)).
        excluded: Excluded documents (positives of Q, duplicates of a positive) inside the C1 region.
        examined: Candidates looked at: the C1 region, or the top ``candidate_k`` window if that is larger.
        fallback_used: True if the negatives came from the fallback, not from the strategy itself.
    """

    pair: Pair
    negatives: list[Negative]
    c1_pass: int = 0
    c2_fail: int = 0
    excluded: int = 0
    examined: int = 0
    fallback_used: bool = False


@dataclass(frozen=True)
class AuditRecord:
    """One examined candidate of the rule with its three distances and the outcome of every test.

    ``c1``/``c2`` are the raw conditions; ``excluded`` is the exclusion test; ``selected`` says whether it
    became a negative (with the rule, not a fallback). ``rank`` is its 1-based rank for the query.
    """

    query_row: int
    positive_row: int
    doc_row: int
    rank: int
    d_qd: float
    d_qp: float
    d_pd: float
    c1: bool
    c2: bool
    excluded: bool
    selected: bool


@dataclass
class MiningStats:
    """Totals over all pairs (what the manifest and stats.json report).

    ``margins`` holds d(Q,D) - d(Q,PD) and ``ratios`` d(Q,D) / d(PD,D) of every selected negative that has
    distances; `to_dict` turns them into histograms. ``rejected_c1`` counts examined candidates (see
    ``PairResult.examined``) that fail C1. ``hnsw_widenings`` counts hnsw re-searches with a doubled k and
    ``exact_fallbacks`` the queries scanned exactly because hnsw could not prove coverage (both per query).
    ``rejected_by`` (topk) counts candidates removed by each filter, as sentence-transformers reports them.
    """

    pairs: int = 0
    pairs_with_zero: int = 0
    pairs_short: int = 0
    selected: int = 0
    candidates_examined: int = 0
    rejected_c1: int = 0
    rejected_c2: int = 0
    rejected_exclusion: int = 0
    hnsw_widenings: int = 0
    exact_fallbacks: int = 0
    fallback_pairs: int = 0
    margins: list[float] = field(default_factory=list)
    ratios: list[float] = field(default_factory=list)

    rejected_by: dict[str, int] = field(default_factory=dict)

    def add(self, result: PairResult, num_negatives: int) -> None:
        """Fold one pair's result into the totals.

        ``pairs_short`` counts pairs with fewer than ``num_negatives`` negatives, zero included (as
        sentence-transformers' "could not find enough negatives"); ``pairs_with_zero`` those with none.
        """
        got = len(result.negatives)
        self.pairs += 1
        self.pairs_with_zero += got == 0
        self.pairs_short += got < num_negatives
        self.selected += got
        self.candidates_examined += result.examined
        self.rejected_c1 += int(max(result.examined - result.c1_pass, 0))
        self.rejected_c2 += result.c2_fail
        self.rejected_exclusion += result.excluded
        self.fallback_pairs += result.fallback_used
        for neg in result.negatives:
            if neg.d_qd is None or neg.d_qp is None:
                continue
            self.margins.append(neg.d_qd - neg.d_qp)
            if neg.d_pd is not None and neg.d_pd > 0:
                self.ratios.append(neg.d_qd / neg.d_pd)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready stats: counts, ``selection_rate`` (pairs with >= 1 negative / pairs) and histograms
        ``{"edges": [...], "counts": [...]}`` under ``hist_margin`` and ``hist_ratio``.

        Values outside the bin range are counted in the first or last bin.
        """

        def hist(values: list[float], edges: np.ndarray) -> dict[str, Any]:
            clipped = np.clip(np.asarray(values, dtype=np.float64), edges[0], edges[-1])
            counts, _ = np.histogram(clipped, bins=edges)
            return {"edges": [round(float(e), 6) for e in edges], "counts": [int(c) for c in counts]}

        with_neg = self.pairs - self.pairs_with_zero
        out: dict[str, Any] = {
            "pairs": self.pairs,
            "pairs_with_negative": with_neg,
            "pairs_with_zero": self.pairs_with_zero,
            "pairs_short": self.pairs_short,
            "selection_rate": round(with_neg / self.pairs, 6) if self.pairs else 0.0,
            "selected": self.selected,
            "candidates_examined": self.candidates_examined,
            "rejected_c1": self.rejected_c1,
            "rejected_c2": self.rejected_c2,
            "rejected_exclusion": self.rejected_exclusion,
            "hnsw_widenings": self.hnsw_widenings,
            "exact_fallbacks": self.exact_fallbacks,
            "fallback_pairs": self.fallback_pairs,
            "rejected_by": dict(sorted(self.rejected_by.items())),
            "margin_mean": round(float(np.mean(self.margins)), 6) if self.margins else None,
            "hist_margin": hist(self.margins, MARGIN_BINS),
            "hist_ratio": hist(self.ratios, RATIO_BINS),
        }
        return out


Excluded = Mapping[int, Set[int]]


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
    fallback: str = "none",
    fill: str = "empty",
    c2_margin: float = 0.0,
    range_min: int = 0,
    range_max: int | None = None,
    sampling_strategy: str = "top",
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
    if fallback not in ("none", "next"):
        raise ValueError(f"fallback must be 'none' or 'next' here, got {fallback!r} (the stage does random/bm25)")
    if fill not in ("empty", "short"):
        raise ValueError(f"fill must be 'empty' or 'short', got {fill!r}")
    if sampling_strategy not in ("top", "random"):
        raise ValueError(f"sampling_strategy must be 'top' or 'random', got {sampling_strategy!r}")
    if candidate_k < 1 or block_rows < 1 or pair_block < 1:
        raise ValueError("candidate_k, block_rows and pair_block must be >= 1")
    if range_min < 0 or c2_margin < 0:
        raise ValueError("range_min and c2_margin must be >= 0")
    query_vecs = np.ascontiguousarray(query_vecs, dtype=np.float32)
    _check_inputs(query_vecs, source, pairs, num_negatives)
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
    s_qp = _rowdot64(qv, pv)
    excl_keys = _excluded_keys(pairs, excluded, n)

    windows: dict[int, np.ndarray] = {}
    if index is None:
        cands: dict[int, _Cands] = {}
        todo = np.arange(len(pairs), dtype=np.int64)
    else:
        cands, windows, todo = _hnsw_c1(
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
        cands.update(_scan_c1(qv, pv, s_qp, prows, excl_keys, todo, source, block_rows, pair_block, keep, c2_margin))
        if audit is not None:
            uq = np.unique(qrows[todo])
            _, top = exact_topk(query_vecs[uq], source, candidate_k, block_rows, pair_block)
            windows.update({int(qr): top[j] for j, qr in enumerate(uq)})

    results: list[PairResult] = []
    window_size = min(candidate_k, n) - 1
    for i, pair in enumerate(pairs):
        c = cands[i]
        pos = np.flatnonzero(c.passing(c2_margin))[:need]
        negs = [_negative(c.rows[j], SOURCE_RULE, int(j) + 1, c.s_qd[j], s_qp[i], c.s_pd[j]) for j in pos]
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
            np.array([1.0 - neg.d_qd for neg in r.negatives]),
        )
        for i, r in enumerate(results)
        if r.negatives and not cands[i].rank_exact
    }
    if recount:
        # Exact s64 values of the chosen documents, for the counting scan (1 - d_qd would round).
        for i, (rows, _) in recount.items():
            docs = source.take(rows)
            recount[i] = (rows, _rowdot64(np.broadcast_to(qv[i], docs.shape), docs))
        ranks = _count_ranks(qv, recount, source, block_rows, pair_block)
        for i, rk in ranks.items():
            results[i].negatives = [replace(neg, rank=int(k)) for neg, k in zip(results[i].negatives, rk, strict=True)]

    if fallback == "next":
        lacking = [
            i for i, r in enumerate(results) if (len(r.negatives) < need if fill == "short" else not r.negatives)
        ]
        if lacking:
            todo_next = np.array(lacking, dtype=np.int64)
            nxt = _scan_next(qv, pv, prows, excl_keys, todo_next, source, block_rows, pair_block, need, c2_margin)
            for i in lacking:
                rows, s_qd, s_pd = nxt[i]
                # The rule's own negatives head this list (same order, same float64 values): keep them as they are.
                have = {neg.doc_row: neg for neg in results[i].negatives}
                negs = [
                    have.get(int(r)) or _negative(r, SOURCE_FALLBACK_NEXT, None, a, s_qp[i], b)
                    for r, a, b in zip(rows, s_qd, s_pd, strict=True)
                ]
                results[i].fallback_used = any(neg.source == SOURCE_FALLBACK_NEXT for neg in negs)
                results[i].negatives = negs

    for r in results:
        window = r.negatives[range_min:need]
        if sampling_strategy == "random" and len(window) > m:
            window = [window[j] for j in np.sort(rng.choice(len(window), size=m, replace=False))]
        r.negatives = window[:m]
        r.fallback_used = any(neg.source == SOURCE_FALLBACK_NEXT for neg in r.negatives)

    if audit is not None:
        for i, pair in enumerate(pairs):
            _emit_audit(
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


def mine_topk(
    query_vecs: np.ndarray,
    source: VectorSource,
    pairs: Sequence[Pair],
    excluded: Excluded,
    *,
    num_negatives: int = 1,
    range_min: int = 0,
    range_max: int | None = None,
    max_score: float | None = None,
    min_score: float | None = None,
    absolute_margin: float | None = None,
    relative_margin: float | None = None,
    sampling_strategy: str = "top",
    rng: np.random.Generator | None = None,
    index: HnswIndex | None = None,
    ef_search: int = 200,
    block_rows: int = DEFAULT_BLOCK_ROWS,
    query_block: int = DEFAULT_QUERY_BLOCK,
) -> tuple[list[PairResult], MiningStats]:
    """Dense top-k negatives with sentence-transformers' ``mine_hard_negatives`` knobs (source "topk").

    Follows sentence-transformers 6.2 (``util/hard_negatives.py``) knob for knob. Pairs are grouped by
    query; each query retrieves its top ``range_max + max_positives`` documents (``max_positives`` = most
    positives of any query in ``pairs``), in float64 similarity order, ties lower row first. PD, the query's
    other positives and ``excluded[query_row]`` are removed, then the filters, each removing a candidate
    when: ``sim + absolute_margin > pos``; ``sim > pos - |pos| * relative_margin``; ``sim > max_score``;
    ``sim < min_score``, where ``pos`` is the query's LOWEST positive similarity (all its pairs share one
    candidate list, as in sentence-transformers). Of the survivors, in order, positions ``range_min`` ..
    ``range_max`` (end exclusive) form the window; "top" takes its first ``num_negatives``, "random"
    samples them uniformly with ``rng`` and keeps them in rank order. ``range_max=None`` means
    ``range_min + num_negatives + max_positives``, or ``range_min + 10 * num_negatives + max_positives``
    when a margin or ``max_score`` is set.

    Args:
        query_vecs: [nq, dim] float32 query vectors.
        source: Corpus vectors.
        pairs: (Q, PD) pairs; every pair of a query gets the query's negatives.
        excluded: Rows that may never be negatives, per query row.
        num_negatives: Negatives per pair.
        range_min: Skip this many top candidates.
        range_max: Consider only candidates up to this rank (exclusive).
        max_score: Drop candidates with similarity above this.
        min_score: Drop candidates with similarity below this.
        absolute_margin: Keep only ``sim(Q,D) + absolute_margin <= pos``.
        relative_margin: Keep only ``sim(Q,D) <= pos - |pos| * relative_margin`` (= pos * (1 - margin) for
            pos >= 0; 0.05 is NV-Retriever's TopK-PercPos).
        sampling_strategy: "top" or "random".
        rng: Needed for "random"; defaults to ``np.random.default_rng(0)``.
        index: Optional HnswIndex for the candidate search (approximate; exact scan when None).
        ef_search: hnsw ef.
        block_rows: Corpus rows per matrix product.
        query_block: Queries per matrix product (exact scan); memory ~ query_block x block_rows x 16 bytes.

    Returns:
        ``(results, stats)`` as in `mine_rule` (C1/C2 counters stay 0; ``examined`` = candidates in the
        window; ``stats.rejected_by`` = candidates each filter removed).

    Raises:
        ValueError: on the argument combinations sentence-transformers rejects (range_min >= range_max,
            num_negatives larger than the window) and on bad shapes or rows.
    """
    if sampling_strategy not in ("top", "random"):
        raise ValueError(f"sampling_strategy must be 'top' or 'random', got {sampling_strategy!r}")
    query_vecs = np.ascontiguousarray(query_vecs, dtype=np.float32)
    _check_inputs(query_vecs, source, pairs, num_negatives)
    if range_min < 0:
        raise ValueError(f"range_min must be non-negative, got range_min={range_min}.")
    rng = rng if rng is not None else np.random.default_rng(0)
    n, m = source.n, num_negatives
    stats = MiningStats()
    if not pairs:
        return [], stats

    # Group pairs by query as sentence-transformers does: one candidate list per query, shared by its pairs.
    by_query: dict[int, list[int]] = {}
    for i, p in enumerate(pairs):
        by_query.setdefault(p.query_row, []).append(i)
    max_positives = max(len({pairs[i].positive_row for i in idx}) for idx in by_query.values())
    if range_max is None:
        filtered = absolute_margin is not None or relative_margin is not None or max_score is not None
        # sentence-transformers' default: room for 10x the negatives when filters may drop candidates.
        range_max = range_min + (m * 10 if filtered else m) + max_positives
    if range_min >= range_max:
        raise ValueError(
            f"range_min must be smaller than range_max, got range_min={range_min} and range_max={range_max}."
        )
    if m > range_max - range_min:
        raise ValueError(
            f"Cannot mine {m} negatives per query: only {range_max - range_min} candidates remain after "
            f"skipping the first range_min={range_min} of range_max={range_max}."
        )

    qrows = list(by_query)
    k = min(range_max + max_positives, n)
    if index is None:
        _, top = exact_topk(query_vecs[qrows], source, k, block_rows, query_block)
    else:
        _, top = index.search(query_vecs[qrows], k, ef=max(ef_search, k))

    prows = np.array([p.positive_row for p in pairs], dtype=np.int64)
    pv = source.take(prows)
    s_qp = _rowdot64(query_vecs[[p.query_row for p in pairs]], pv)
    rejected = dict.fromkeys(("absolute_margin", "relative_margin", "max_score", "min_score"), 0)
    results: list[PairResult] = [PairResult(p, []) for p in pairs]
    for j, qr in enumerate(qrows):
        got = top[j]
        docs = source.take(got)
        s = _rowdot64(np.broadcast_to(query_vecs[qr], docs.shape), docs)
        order = np.lexsort((got, -s))  # float64 order; ties: lower row first
        got, docs, s = got[order], docs[order], s[order]
        ranks = np.arange(1, len(got) + 1)
        pair_idx = by_query[qr]
        banned = {pairs[i].positive_row for i in pair_idx} | set(excluded.get(qr, ()))
        valid = ~np.isin(got, np.fromiter(banned, dtype=np.int64, count=len(banned)))
        # The margins compare with the query's hardest (lowest-scoring) positive, as sentence-transformers.
        ref = float(min(s_qp[i] for i in pair_idx))
        filters = {
            "absolute_margin": None if absolute_margin is None else s + absolute_margin > ref,
            "relative_margin": None if relative_margin is None else s > ref - abs(ref) * relative_margin,
            "max_score": None if max_score is None else s > max_score,
            "min_score": None if min_score is None else s < min_score,
        }
        for name, removed in filters.items():
            if removed is not None:
                rejected[name] += int((valid & removed).sum())
                valid &= ~removed
        window = np.flatnonzero(valid)[:range_max][range_min:]
        if sampling_strategy == "top":
            chosen = window[:m]
        else:
            chosen = np.sort(rng.choice(window, size=min(m, len(window)), replace=False))
        for i in pair_idx:
            s_pd = _rowdot64(np.broadcast_to(pv[i], (len(chosen), source.dim)), docs[chosen])
            results[i].negatives = [
                _negative(got[c], SOURCE_TOPK, int(ranks[c]), s[c], s_qp[i], spd)
                for c, spd in zip(chosen, s_pd, strict=True)
            ]
            results[i].examined = int(len(window))
    stats.rejected_by = {k_: v for k_, v in rejected.items() if v}
    for r in results:
        stats.add(r, m)
    return results, stats


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
        s_qd = _rowdot64(np.broadcast_to(q, docs.shape), docs)
        s_pd = _rowdot64(np.broadcast_to(pd_vec, docs.shape), docs)
        s_qp = float(_rowdot64(q[None, :], pd_vec[None, :])[0])
        negs = [
            replace(neg, d_qd=float(1.0 - a), d_qp=float(1.0 - s_qp), d_pd=float(1.0 - b))
            for neg, a, b in zip(r.negatives, s_qd, s_pd, strict=True)
        ]
        out.append(replace(r, negatives=negs))
    return out


# ---------------------------------------------------------------------------------------------
# Internals
# ---------------------------------------------------------------------------------------------

_DOT_CHUNK = 8192
_COVER_FRACTION = 0.5
# hnsw ef floor for the rule: below about 64, hnsw misses top neighbours often enough to change negatives
# (0.5% of pairs at ef 8-16 on 3000 x 32 clustered vectors; none from 64 up), and the rule needs coverage.
_MIN_EF = 64
# Widening stops when k would pass this share of the corpus; such queries are scanned exactly.
_MAX_K_FRACTION = 1 / 16
# Failing C1 documents kept per pair for the ranks before falling back to a recount scan.
_RANK_CAP = 4096
# Rows of the score matrix turned into candidate lists at once: bounds memory when C1 regions are huge.
_CAND_ROWS = 32


def _rowdot64(a: np.ndarray, b: np.ndarray) -> np.ndarray:
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


def _gather_dot64(a: np.ndarray, ai: np.ndarray, b: np.ndarray, bi: np.ndarray) -> np.ndarray:
    """``_rowdot64(a[ai], b[bi])`` gathered in chunks, so memory stays bounded for many candidates."""
    out = np.empty(len(ai), dtype=np.float64)
    for lo in range(0, len(ai), _DOT_CHUNK):
        hi = lo + _DOT_CHUNK
        out[lo:hi] = _rowdot64(a[ai[lo:hi]], b[bi[lo:hi]])
    return out


def _c2(s_qd: np.ndarray, s_pd: np.ndarray, c2_margin: float) -> np.ndarray:
    """C2 on float64 similarities: d(Q,D) + margin < d(PD,D), i.e. s(Q,D) - s(PD,D) > margin.

    At margin 0 this is the paper's strict ``s_qd > s_pd``, written so, bit for bit."""
    return s_qd > s_pd if c2_margin == 0 else (s_qd - s_pd) > c2_margin


def _screen_eps(dim: int) -> float:
    """Slack for float32 screening before the float64 decision: float32 dot products of unit vectors are
    off by at most about dim * 2**-24; four times that, and never below 1e-4."""
    return max(1e-4, 4.0 * dim * 2.0**-24)


def _check_inputs(query_vecs: np.ndarray, source: VectorSource, pairs: Sequence[Pair], num_negatives: int) -> None:
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


def _excluded_keys(pairs: Sequence[Pair], excluded: Excluded, n: int) -> np.ndarray:
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


def _in_sorted(keys: np.ndarray, sorted_keys: np.ndarray) -> np.ndarray:
    if len(sorted_keys) == 0:
        return np.zeros(len(keys), dtype=bool)
    pos = np.searchsorted(sorted_keys, keys)
    pos[pos == len(sorted_keys)] = 0
    return sorted_keys[pos] == keys


@dataclass
class _Cands:
    """C1-region candidates of one pair, sorted by (similarity desc, row asc).

    With pruning, only the prefix up to the ``num_negatives``-th passing document is kept: nothing below it
    can be selected or change a selected document's rank. The counts always cover the whole region.
    """

    rows: np.ndarray
    s_qd: np.ndarray
    s_pd: np.ndarray
    excl: np.ndarray
    c1_pass: int = 0
    c2_fail: int = 0
    excluded: int = 0
    rank_exact: bool = True  # False: the documents above were too many to keep; ranks come from a recount

    def passing(self, c2_margin: float = 0.0) -> np.ndarray:
        return ~self.excl & _c2(self.s_qd, self.s_pd, c2_margin)


@dataclass
class _ScanState:
    """Streaming C1-region state of one pair in the exact scan, keyed on float32 similarities.

    ``passing`` is already exact (float64 wherever float32 was within ``eps`` of a boundary). Pruning drops
    documents more than ``2 * eps`` below the ``keep``-th passing one: even in float64 they rank below
    ``keep`` passing documents, so they can neither be chosen nor sit above a chosen one. Until ``keep``
    documents pass, failing ones are kept for the ranks, up to ``_RANK_CAP``; past that they are dropped
    (``overflow``) and the ranks of the chosen documents are recounted in a second scan.
    """

    rows: list[np.ndarray] = field(default_factory=list)
    s32: list[np.ndarray] = field(default_factory=list)
    passing: list[np.ndarray] = field(default_factory=list)
    size: int = 0
    c1_pass: int = 0
    c2_fail: int = 0
    excluded: int = 0
    overflow: bool = False

    def add(self, rows: np.ndarray, s32: np.ndarray, passing: np.ndarray, keep: int | None, eps: float) -> None:
        if self.overflow:
            rows, s32, passing = rows[passing], s32[passing], passing[passing]
        # Copies, not views: a view would keep the whole slice's candidate arrays alive.
        self.rows.append(rows.copy())
        self.s32.append(s32.copy())
        self.passing.append(passing.copy())
        self.size += len(rows)
        if keep is not None and (len(self.rows) >= 8 or self.size > _RANK_CAP):
            self.prune(keep, eps)  # merge and prune in batches, not on every block

    def prune(self, keep: int | None, eps: float) -> None:
        if not self.rows:
            self.rows, self.s32, self.passing = [np.empty(0, np.int64)], [np.empty(0)], [np.empty(0, bool)]
            return
        r, s, p = np.concatenate(self.rows), np.concatenate(self.s32), np.concatenate(self.passing)
        if keep is not None:
            ps = s[p]
            if len(ps) >= keep:
                tau = np.partition(ps, len(ps) - keep)[len(ps) - keep]  # keep-th largest passing similarity
                sel = s >= tau - 2 * eps
                r, s, p = r[sel], s[sel], p[sel]
            if len(r) > _RANK_CAP:
                self.overflow = True
                r, s, p = r[p], s[p], p[p]
        self.rows, self.s32, self.passing = [r], [s], [p]
        self.size = len(r)


def _scan_c1(
    qv: np.ndarray,
    pv: np.ndarray,
    s_qp: np.ndarray,
    prows: np.ndarray,
    excl_keys: np.ndarray,
    todo: np.ndarray,
    source: VectorSource,
    block_rows: int,
    pair_block: int,
    keep: int | None,
    c2_margin: float = 0.0,
) -> dict[int, _Cands]:
    """Exact blocked scan: the C1 region of every pair in ``todo`` (pruned to ``keep`` passing unless None).

    Two float32 matrix products per block (Q.D and PD.D) decide C1 and C2 wherever they are farther than
    ``eps`` from the boundary; the few candidates within ``eps`` are decided on float64 similarities from
    `_rowdot64`, as are the kept candidates at the end: the same numbers the hnsw path computes, so both
    paths take the same decisions and report the same distances.
    """
    n = source.n
    eps = _screen_eps(source.dim)
    todo = np.sort(np.asarray(todo, dtype=np.int64))
    state = {int(i): _ScanState() for i in todo}
    lo32 = (s_qp - eps).astype(np.float32)
    for start, block in source.blocks(block_rows):
        for c0 in range(0, len(todo), pair_block):
            pc = todo[c0 : c0 + pair_block]
            scores = qv[pc] @ block.T
            for r0 in range(0, len(pc), _CAND_ROWS):
                _scan_rows(
                    scores[r0 : r0 + _CAND_ROWS],
                    pc[r0 : r0 + _CAND_ROWS],
                    start,
                    block,
                    qv,
                    pv,
                    s_qp,
                    lo32,
                    prows,
                    excl_keys,
                    n,
                    eps,
                    state,
                    keep,
                    c2_margin,
                )
            del scores

    out: dict[int, _Cands] = {}
    for i, st in state.items():
        st.prune(keep, eps)
        rows = st.rows[0]
        docs = source.take(rows)
        s_qd = _rowdot64(np.broadcast_to(qv[i], docs.shape), docs)
        s_pd = _rowdot64(np.broadcast_to(pv[i], docs.shape), docs)
        excl = _in_sorted(i * n + rows, excl_keys)
        order = np.lexsort((rows, -s_qd))
        c = _Cands(rows[order], s_qd[order], s_pd[order], excl[order])
        c.c1_pass, c.c2_fail, c.excluded = st.c1_pass, st.c2_fail, st.excluded
        c.rank_exact = not st.overflow
        out[i] = c
    return out


def _scan_rows(
    scores: np.ndarray,
    pc: np.ndarray,
    start: int,
    block: np.ndarray,
    qv: np.ndarray,
    pv: np.ndarray,
    s_qp: np.ndarray,
    lo32: np.ndarray,
    prows: np.ndarray,
    excl_keys: np.ndarray,
    n: int,
    eps: float,
    state: dict[int, _ScanState],
    keep: int | None,
    c2_margin: float = 0.0,
) -> None:
    """One slice of `_scan_c1`: Q.D scores of pairs ``pc`` against one corpus block -> candidate updates."""
    pi, cj = np.nonzero(scores > lo32[pc, None])
    if len(pi) == 0:
        return
    s_qd = scores[pi, cj].astype(np.float64)
    gp = pc[pi]
    rows = start + cj.astype(np.int64)
    # C1 on float32 where it is clear, float64 within eps of d(Q,PD).
    c1 = s_qd > s_qp[gp] + eps
    near = np.flatnonzero(~c1)
    if len(near):
        c1[near] = _gather_dot64(qv, gp[near], block, cj[near]) > s_qp[gp[near]]
    c1 &= rows != prows[gp]
    gp, rows, cj, s_qd = gp[c1], rows[c1], cj[c1], s_qd[c1]
    if len(gp) == 0:
        return
    # C2 needs PD.D for these candidates: one more matrix product when they are many.
    if len(gp) > len(pc) * 64:
        s_pd = (pv[pc] @ block.T)[np.searchsorted(pc, gp), cj].astype(np.float64)
    else:
        s_pd = _gather_dot64(pv, gp, block, cj)
    c2 = s_qd > s_pd + c2_margin + eps
    near = np.flatnonzero(np.abs(s_qd - s_pd - c2_margin) <= eps)
    if len(near):
        c2[near] = _c2(
            _gather_dot64(qv, gp[near], block, cj[near]), _gather_dot64(pv, gp[near], block, cj[near]), c2_margin
        )
    excl = _in_sorted(gp * n + rows, excl_keys)
    passing = c2 & ~excl
    # gp is ascending (np.nonzero walks row-major and pc is sorted): split it into runs per pair.
    uniq, first = np.unique(gp, return_index=True)
    bounds = [*first[1:], len(gp)]
    for g, lo, hi in zip(uniq, first, bounds, strict=True):
        st = state[int(g)]
        st.c1_pass += int(hi - lo)
        st.excluded += int(excl[lo:hi].sum())
        st.c2_fail += int((~c2[lo:hi] & ~excl[lo:hi]).sum())
        st.add(rows[lo:hi], s_qd[lo:hi], passing[lo:hi], keep, eps)


def _count_ranks(
    qv: np.ndarray,
    targets: dict[int, tuple[np.ndarray, np.ndarray]],
    source: VectorSource,
    block_rows: int,
    pair_block: int,
) -> dict[int, np.ndarray]:
    """1-based ranks of given documents in their pair's query ranking, by a counting scan.

    ``targets[i] = (rows, s64)``: documents of pair i and their float64 similarities. A document D' counts
    above D when s(D') > s(D), or equal with a lower row; float32 decides where it is clear.
    """
    eps = _screen_eps(source.dim)
    todo = np.array(sorted(targets), dtype=np.int64)
    counts = {int(i): np.zeros(len(targets[int(i)][0]), dtype=np.int64) for i in todo}
    for start, block in source.blocks(block_rows):
        for c0 in range(0, len(todo), pair_block):
            pc = todo[c0 : c0 + pair_block]
            scores = qv[pc] @ block.T
            for r, i in enumerate(pc):
                rows, s64 = targets[int(i)]
                row_scores = scores[r]
                for j, (t_row, t) in enumerate(zip(rows, s64, strict=True)):
                    counts[int(i)][j] += int(np.count_nonzero(row_scores > t + eps))
                    near = np.flatnonzero(np.abs(row_scores - t) <= eps)
                    if len(near):
                        s_near = _rowdot64(np.broadcast_to(qv[i], (len(near), block.shape[1])), block[near])
                        above = (s_near > t) | ((s_near == t) & (start + near < t_row))
                        counts[int(i)][j] += int(np.count_nonzero(above))
            del scores
    return {i: c + 1 for i, c in counts.items()}


def _scan_next(
    qv: np.ndarray,
    pv: np.ndarray,
    prows: np.ndarray,
    excl_keys: np.ndarray,
    todo: np.ndarray,
    source: VectorSource,
    block_rows: int,
    pair_block: int,
    m: int,
    c2_margin: float = 0.0,
) -> dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Exact blocked scan for ``fallback="next"``: per pair the ``m`` non-excluded documents (not PD) with
    the highest similarity to Q that pass C2, as (rows, s_qd, s_pd) sorted best first."""
    n = source.n
    eps = _screen_eps(source.dim)
    slack = m + 16  # float32 screening may let a few C2 near-ties through; the float64 check removes them
    todo = np.sort(np.asarray(todo, dtype=np.int64))
    best: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {
        int(i): (np.empty(0, np.int64), np.empty(0), np.empty(0)) for i in todo
    }
    excl_pair = excl_keys // n
    excl_row = excl_keys % n
    for start, block in source.blocks(block_rows):
        b = len(block)
        for c0 in range(0, len(todo), pair_block):
            pc = todo[c0 : c0 + pair_block]
            s_q = qv[pc] @ block.T
            s_p = pv[pc] @ block.T
            s_q[~(s_q > s_p + c2_margin - eps)] = -np.inf
            del s_p
            local = prows[pc] - start
            inside = (local >= 0) & (local < b)
            s_q[np.flatnonzero(inside), local[inside]] = -np.inf
            sel = (excl_row >= start) & (excl_row < start + b) & np.isin(excl_pair, pc)
            if sel.any():
                s_q[np.searchsorted(pc, excl_pair[sel]), excl_row[sel] - start] = -np.inf
            k = min(slack, b)
            cols = np.argpartition(-s_q, k - 1, axis=1)[:, :k] if k < b else np.tile(np.arange(b), (len(pc), 1))
            vals = np.take_along_axis(s_q, cols, 1)
            del s_q
            pi, ci = np.nonzero(np.isfinite(vals))
            if len(pi) == 0:
                continue
            gp = pc[pi]
            cj = cols[pi, ci]
            s_qd = _gather_dot64(qv, gp, block, cj)
            s_pd = _gather_dot64(pv, gp, block, cj)
            ok = _c2(s_qd, s_pd, c2_margin)
            gp, cj, s_qd, s_pd = gp[ok], cj[ok], s_qd[ok], s_pd[ok]
            for g in np.unique(gp):
                at = gp == g
                r0, q0, p0 = best[int(g)]
                r = np.concatenate([r0, start + cj[at].astype(np.int64)])
                q = np.concatenate([q0, s_qd[at]])
                p = np.concatenate([p0, s_pd[at]])
                order = np.lexsort((r, -q))[:m]
                best[int(g)] = (r[order], q[order], p[order])
    return best


def _negative(row: int, source: str, rank: int | None, s_qd: float, s_qp: float, s_pd: float) -> Negative:
    return Negative(int(row), source, rank, float(1.0 - s_qd), float(1.0 - s_qp), float(1.0 - s_pd))


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
    above = arr[_rowdot64(np.broadcast_to(q, docs.shape), docs) > thr]
    return bool(np.isin(above, got).all())


def _hnsw_c1(
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
) -> tuple[dict[int, _Cands], dict[int, np.ndarray], np.ndarray]:
    """hnsw candidates per pair, widening k until every PD of the query is returned and the list reaches
    below the deepest PD; returns (complete C1 candidates per covered pair, the search window per covered
    query row, pair indices left to the exact scan)."""
    n = source.n
    eps = _screen_eps(source.dim)
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
            sims, labels = index.search(qv_all[pending], k, ef=max(ef_search, _MIN_EF, k))
        except RuntimeError:
            # hnswlib cannot fill k results (k near n, or a sparse graph): scan these queries exactly.
            fallback.extend(pending)
            break
        again = []
        for j, qr in enumerate(pending):
            got = labels[j]
            has_pd = bool(np.isin(prows[by_query[qr]], got).all())
            # "Reached" asks for more than PD inside the list: the C1 region must fill at most
            # _COVER_FRACTION of it. hnsw recall is highest at the top of a result list, so a list that
            # runs well past PD rarely misses a document above PD (undetectable otherwise).
            above = int(np.count_nonzero(sims[j] >= thr[qr] - eps))
            reached = len(got) >= n or above <= _COVER_FRACTION * len(got)
            if has_pd and reached and _known_rows_returned(qv_all[qr], excluded.get(qr), got, thr[qr], source):
                covered[qr] = got
            elif reached:
                fallback.append(qr)  # recall gap: the list went past PD without returning it
            else:
                again.append(qr)
        if not again:
            break
        if 2 * k > max(n * _MAX_K_FRACTION, candidate_k):
            # An hnsw search for k neighbours visits about k * M vectors: past n/16 that costs as much as
            # scanning the corpus for the query, and the batched exact scan is cheaper still.
            fallback.extend(again)
            break
        k *= 2
        stats.hnsw_widenings += len(again)
        pending = again
    stats.exact_fallbacks += len(fallback)

    cands: dict[int, _Cands] = {}
    windows: dict[int, np.ndarray] = {}
    for qr, got in covered.items():
        docs = source.take(got)
        s_qd_all = _rowdot64(np.broadcast_to(qv_all[qr], docs.shape), docs)
        order = np.lexsort((got, -s_qd_all))
        got, docs, s_qd_all = got[order], docs[order], s_qd_all[order]
        windows[qr] = got[:candidate_k]
        for i in by_query[qr]:
            c1 = (s_qd_all > s_qp[i]) & (got != prows[i])
            rows, s_qd = got[c1], s_qd_all[c1]
            s_pd = _rowdot64(np.broadcast_to(pv[i], (len(rows), docs.shape[1])), docs[c1])
            excl = _in_sorted(i * n + rows, excl_keys)
            c = _Cands(rows, s_qd, s_pd, excl)
            c.c1_pass = int(len(rows))
            c.excluded = int(excl.sum())
            c.c2_fail = int((~excl & ~_c2(s_qd, s_pd, c2_margin)).sum())
            cands[i] = c
    left = np.array(sorted(i for qr in fallback for i in by_query[qr]), dtype=np.int64)
    return cands, windows, left


def _emit_audit(
    audit: Callable[[AuditRecord], None],
    pair: Pair,
    c: _Cands,
    window: np.ndarray,
    result: PairResult,
    q: np.ndarray,
    p: np.ndarray,
    s_qp: float,
    source: VectorSource,
    i: int,
    excl_keys: np.ndarray,
    c2_margin: float = 0.0,
) -> None:
    """Report the C1 region plus the search window of one pair, in rank order (PD itself left out)."""
    n = source.n
    extra = np.setdiff1d(window, np.concatenate([c.rows, [pair.positive_row]]))
    docs = source.take(extra)
    s_qd_x = _rowdot64(np.broadcast_to(q, docs.shape), docs)
    s_pd_x = _rowdot64(np.broadcast_to(p, docs.shape), docs)
    rows = np.concatenate([c.rows, extra, [pair.positive_row]])
    s_qd = np.concatenate([c.s_qd, s_qd_x, [s_qp]])
    s_pd = np.concatenate([c.s_pd, s_pd_x, [1.0]])
    order = np.lexsort((rows, -s_qd))
    excl = _in_sorted(i * n + rows, excl_keys)
    chosen = {neg.doc_row for neg in result.negatives if neg.source == SOURCE_RULE}
    for rank, j in enumerate(order, 1):
        row = int(rows[j])
        if row == pair.positive_row:
            continue
        audit(
            AuditRecord(
                query_row=pair.query_row,
                positive_row=pair.positive_row,
                doc_row=row,
                rank=rank,
                d_qd=float(1.0 - s_qd[j]),
                d_qp=float(1.0 - s_qp),
                d_pd=float(1.0 - s_pd[j]),
                c1=bool(s_qd[j] > s_qp),
                c2=bool(_c2(s_qd[j : j + 1], s_pd[j : j + 1], c2_margin)[0]),
                excluded=bool(excl[j]),
                selected=row in chosen,
            )
        )
