"""Dense top-k negatives with sentence-transformers' `mine_hard_negatives` knobs, knob for knob."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from hnm_cli.choices import Sampling
from hnm_cli.mining.numerics import check_inputs, make_negative, rowdot64
from hnm_cli.mining.results import SOURCE_TOPK, Excluded, MiningStats, Pair, PairResult, RankingHead
from hnm_cli.search import DEFAULT_BLOCK_ROWS, DEFAULT_QUERY_BLOCK, HnswIndex, VectorSource, exact_topk


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
    sampling_strategy: Sampling = Sampling.TOP,
    rng: np.random.Generator | None = None,
    index: HnswIndex | None = None,
    ef_search: int = 200,
    block_rows: int = DEFAULT_BLOCK_ROWS,
    query_block: int = DEFAULT_QUERY_BLOCK,
    max_positives: int | None = None,
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
        max_positives: The most positives of any query; None: counted over ``pairs``. Pass it (and the resolved
            ``range_max``, see `topk_window`) when ``pairs`` are a block of a larger call, so the block
            searches as deep as the whole call would.

    Returns:
        ``(results, stats)`` as in `mine_rule` (C1/C2 counters stay 0; ``examined`` = candidates in the
        window; ``stats.rejected_by`` = candidates each filter removed; ``head`` = the query's list, exact
        search only).

    Raises:
        ValueError: on the argument combinations sentence-transformers rejects (range_min >= range_max,
            num_negatives larger than the window) and on bad shapes or rows.
    """
    if sampling_strategy not in tuple(Sampling):
        raise ValueError(f"sampling_strategy must be 'top' or 'random', got {sampling_strategy!r}")
    query_vecs = np.ascontiguousarray(query_vecs, dtype=np.float32)
    check_inputs(query_vecs, source, pairs, num_negatives)
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
    filtered = absolute_margin is not None or relative_margin is not None or max_score is not None
    range_max, counted = topk_window(pairs, m, range_min, range_max, filtered=filtered)
    max_positives = counted if max_positives is None else max_positives

    qrows = list(by_query)
    k = min(range_max + max_positives, n)
    if index is None:
        _, top = exact_topk(query_vecs[qrows], source, k, block_rows, query_block)
    else:
        _, top = index.search(query_vecs[qrows], k, ef=max(ef_search, k))

    prows = np.array([p.positive_row for p in pairs], dtype=np.int64)
    pv = source.take(prows)
    s_qp = rowdot64(query_vecs[[p.query_row for p in pairs]], pv)
    rejected = dict.fromkeys(("absolute_margin", "relative_margin", "max_score", "min_score"), 0)
    results: list[PairResult] = [PairResult(p, []) for p in pairs]
    for j, qr in enumerate(qrows):
        got = top[j]
        docs = source.take(got)
        s = rowdot64(np.broadcast_to(query_vecs[qr], docs.shape), docs)
        order = np.lexsort((got, -s))  # float64 order; ties: lower row first
        got, docs, s = got[order], docs[order], s[order]
        ranks = np.arange(1, len(got) + 1)
        pair_idx = by_query[qr]
        banned = {pairs[i].positive_row for i in pair_idx} | set(excluded.get(qr, ()))
        valid = ~np.isin(got, np.fromiter(banned, dtype=np.int64, count=len(banned)))
        # The margins compare with the query's hardest (lowest-scoring) positive, as sentence-transformers.
        ref = float(min(s_qp[i] for i in pair_idx))
        filters = topk_filters(s, ref, absolute_margin, relative_margin, max_score, min_score)
        for name, removed in filters.items():
            if removed is not None:
                rejected[name] += int((valid & removed).sum())
                valid &= ~removed
        window = np.flatnonzero(valid)[:range_max][range_min:]
        chosen = window[:m] if sampling_strategy == Sampling.TOP else sample_window(window, m, rng)
        # An exact list is a prefix of the ranking (hnsw's may miss a document): only that one is worth keeping.
        head = RankingHead(got, float(s[-1])) if index is None and len(got) else None
        for i in pair_idx:
            results[i].head = head
            s_pd = rowdot64(np.broadcast_to(pv[i], (len(chosen), source.dim)), docs[chosen])
            results[i].negatives = [
                make_negative(got[c], SOURCE_TOPK, int(ranks[c]), s[c], s_qp[i], spd)
                for c, spd in zip(chosen, s_pd, strict=True)
            ]
            results[i].examined = int(len(window))
    stats.rejected_by = {k_: v for k_, v in rejected.items() if v}
    for r in results:
        stats.add(r, m)
    return results, stats


def topk_filters(
    s: np.ndarray,
    ref: float,
    absolute_margin: float | None,
    relative_margin: float | None,
    max_score: float | None,
    min_score: float | None,
) -> dict[str, np.ndarray | None]:
    """Per filter, which of the similarities `s` it removes (None: the filter is off); `ref` is the query's lowest
    positive similarity. One function for the search and for `hnm mine --update`'s merge, so both decide alike."""
    return {
        "absolute_margin": None if absolute_margin is None else s + absolute_margin > ref,
        "relative_margin": None if relative_margin is None else s > ref - abs(ref) * relative_margin,
        "max_score": None if max_score is None else s > max_score,
        "min_score": None if min_score is None else s < min_score,
    }


def topk_window(
    pairs: Sequence[Pair], num_negatives: int, range_min: int, range_max: int | None, *, filtered: bool
) -> tuple[int, int]:
    """``(range_max, max_positives)`` as `mine_topk` resolves them over ``pairs``.

    ``max_positives`` is the most positives of any query; ``range_max=None`` becomes ``range_min +
    num_negatives + max_positives``, or ``range_min + 10 * num_negatives + max_positives`` when ``filtered``
    (a margin or ``max_score`` is set: sentence-transformers' room for filters that drop candidates).

    Raises:
        ValueError: as sentence-transformers does, when ``range_min >= range_max`` or the window holds fewer
            than ``num_negatives`` candidates.
    """
    positives: dict[int, set[int]] = {}
    for p in pairs:
        positives.setdefault(p.query_row, set()).add(p.positive_row)
    max_positives = max((len(v) for v in positives.values()), default=0)
    m = num_negatives
    if range_max is None:
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
    return range_max, max_positives


def sample_window(window: np.ndarray, m: int, rng: np.random.Generator) -> np.ndarray:
    """``sampling_strategy="random"``: ``m`` of a query's window positions (all if fewer), in rank order.

    One draw from ``rng`` per query, whatever the window's length (an empty one included), so the draws depend
    on the queries' order only (`hnm_cli.mining.blocks` replays them on the merged results of blocks).
    """
    chosen: np.ndarray = np.sort(rng.choice(window, size=min(m, len(window)), replace=False))
    return chosen
