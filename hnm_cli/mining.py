"""Pure hard-negative selection: the paper's PD-D rule, dense top-k (sentence-transformers' knobs), random.

Everything here works on corpus ROW INDICES (0..n-1 in `VectorSource` order) and query-vector rows; the
stage maps them to ids, reads files and writes outputs. Vectors are L2-normalised float32, so cosine
distance is ``d = 1 - dot``. Decisions (C1, C2, thresholds, ties) are made on similarities recomputed in
float64 from the stored float32 vectors, so the exact and hnsw paths agree bit for bit.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence, Set
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hnm_cli.search import DEFAULT_BLOCK_ROWS, HnswIndex, VectorSource

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
    distances; `to_dict` turns them into histograms.
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

    def add(self, result: PairResult, num_negatives: int) -> None:
        """Fold one pair's result into the totals."""
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready stats: counts, ``selection_rate`` (pairs with >= 1 negative / pairs) and histograms
        ``{"edges": [...], "counts": [...]}`` under ``hist_margin`` and ``hist_ratio``."""
        raise NotImplementedError


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
    audit: Callable[[AuditRecord], None] | None = None,
) -> tuple[list[PairResult], MiningStats]:
    """The paper's rule: D passes iff C1 d(Q,D) < d(Q,PD) and C2 d(Q,D) < d(PD,D) (strict), not excluded.

    For each pair, the ``num_negatives`` passing documents with the smallest d(Q,D) are taken (ties: lower
    row first). PD itself and every row in ``excluded[pair.query_row]`` never pass. A pair whose PD is the
    query's top-1 has an empty C1 region and gets nothing (unless ``fallback="next"``).

    Exact path (``index=None``): one blocked scan over the corpus keeps a streaming best-``num_negatives``
    per pair; exact without any k. HNSW path: searches ``candidate_k`` neighbours and doubles k until the
    returned list reaches below PD's similarity and contains PD; a query it cannot prove covered (k would
    reach n, or PD missing although the list already reaches below it) is scanned exactly. The two paths
    return identical results.

    Args:
        query_vecs: [nq, dim] float32 query vectors; ``Pair.query_row`` indexes them.
        source: Corpus vectors; ``Pair.positive_row`` and the results index them.
        pairs: The (Q, PD) pairs; each pair is its own result, in the same order.
        excluded: For each query row, the corpus rows that may never be negatives (all positives of Q by id,
            documents whose normalised text equals a positive's). Missing keys mean nothing excluded.
        num_negatives: Negatives per pair (the paper: 1).
        index: An HnswIndex over ``source``, or None for the exact scan.
        ef_search: hnsw ef for the first search (raised to k when widening).
        candidate_k: First hnsw search width, and the size of the audit window.
        block_rows: Corpus rows per matrix product (exact scan).
        pair_block: Pairs per matrix product (exact scan); memory ~ pair_block x block_rows x 4 bytes.
        fallback: "none" (the paper) or "next": pairs the rule leaves empty get the nearest non-excluded
            documents that pass C2 only, with source "fallback-next".
        audit: Called once per examined candidate (the C1 region plus the top ``candidate_k`` window), after
            selection, in pair order then rank order.

    Returns:
        ``(results, stats)``: one PairResult per pair, in input order, and the totals.

    Raises:
        ValueError: on a dimension mismatch, a row out of range, or a bad argument.
    """
    raise NotImplementedError


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
) -> tuple[list[PairResult], MiningStats]:
    """Dense top-k negatives with sentence-transformers' ``mine_hard_negatives`` knobs (source "topk").

    Candidates are the query's dense ranking with PD and the excluded rows removed. Of those, ranks
    ``range_min`` .. ``range_max`` (0-based over the filtered ranking, end exclusive; None = 100 deep,
    widened to cover ``range_min + num_negatives``) are kept, then the score filters: similarity
    ``<= max_score``, ``>= min_score``, ``<= pos_score - absolute_margin``, ``<= pos_score * (1 -
    relative_margin)`` (pos_score = sim(Q, PD)). ``sampling_strategy="top"`` takes the first
    ``num_negatives`` survivors, "random" samples them uniformly with ``rng`` (then sorts them by rank).

    Args:
        query_vecs: [nq, dim] float32 query vectors.
        source: Corpus vectors.
        pairs: (Q, PD) pairs; margins are relative to each pair's own PD.
        excluded: Rows that may never be negatives, per query row.
        num_negatives: Negatives per pair.
        range_min: Skip this many top candidates.
        range_max: Consider only candidates up to this rank (exclusive).
        max_score: Drop candidates with similarity above this.
        min_score: Drop candidates with similarity below this.
        absolute_margin: Keep only ``sim(Q,D) <= sim(Q,PD) - absolute_margin``.
        relative_margin: Keep only ``sim(Q,D) <= sim(Q,PD) * (1 - relative_margin)`` (0.05: TopK-PercPos).
        sampling_strategy: "top" or "random".
        rng: Needed for "random"; defaults to ``np.random.default_rng(0)``.
        index: Optional HnswIndex for the candidate search (approximate; exact scan when None).
        ef_search: hnsw ef.
        block_rows: Corpus rows per matrix product.

    Returns:
        ``(results, stats)`` as in `mine_rule` (C1/C2 counters stay 0; ``examined`` = candidates in range).
    """
    raise NotImplementedError


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
    raise NotImplementedError


def fill_distances(query_vecs: np.ndarray, source: VectorSource, results: Sequence[PairResult]) -> list[PairResult]:
    """Return copies of ``results`` whose negatives have d_qd, d_qp and d_pd computed (float64).

    For strategies that do not compute distances (random, BM25); ``rank`` is left as it is.
    """
    raise NotImplementedError
