"""What mining produces: pairs, negatives, per-pair results, audit records and the run's statistics.

Everything works on corpus ROW INDICES (0..n-1 in `VectorSource` order) and query-vector rows; the stage maps
them to ids. Distances are cosine distances ``d = 1 - dot`` of L2-normalised vectors.
"""

from __future__ import annotations

from collections.abc import Mapping, Set
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hnm_cli.choices import Strategy

SOURCE_RULE = Strategy.RULE.value
SOURCE_FALLBACK_NEXT = "fallback-next"
SOURCE_TOPK = Strategy.TOPK.value
SOURCE_RANDOM = Strategy.RANDOM.value

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


@dataclass(frozen=True, eq=False)
class RankingHead:
    """The first documents of a query's dense ranking, as top-k's exact search listed them: what lets `hnm mine
    --update` merge the query after documents were removed without searching again (`update_merge_topk.merge_topk`).

    Every document that ranks above the last one listed is listed (the rows are a prefix of the ranking), so a
    removed document that is not here ranked below all of them and cannot have moved a pick or a rank.
    """

    rows: np.ndarray  # corpus rows, best first (float64 similarity, ties: lower row first)
    floor: float  # the float64 similarity of the last one (`numerics.rowdot64`, bit for bit)

    def __eq__(self, other: object) -> bool:  # arrays compare element-wise; two heads are equal as lists
        if not isinstance(other, RankingHead):
            return NotImplemented
        return bool(np.array_equal(self.rows, other.rows)) and self.floor == other.floor

    __hash__ = None  # type: ignore[assignment]


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
        suspected: Candidates a false-negative guard removed as likely positives (`mining.controls`), nearest
            first, each with the guard's name as its source; None when no guard ran.
        head: Top-k's exact search only: the head of the query's ranking the picks came from (shared by the
            query's pairs; `hnm mine --update` keeps it in the artifact's state); None otherwise.
    """

    pair: Pair
    negatives: list[Negative]
    c1_pass: int = 0
    c2_fail: int = 0
    excluded: int = 0
    examined: int = 0
    fallback_used: bool = False
    suspected: list[Negative] | None = None
    head: RankingHead | None = None


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
    # False-negative controls (`mining.controls`): candidates each guard removed, suspects kept, randoms mixed in;
    # None when no control ran. `fn_risk`: the risk figures of the chosen negatives (every strategy).
    guards: dict[str, Any] | None = None
    fn_risk: dict[str, Any] | None = None

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
            **({"guards": self.guards} if self.guards is not None else {}),
            **({"fn_risk": self.fn_risk} if self.fn_risk is not None else {}),
        }
        return out


# For each query row, the corpus rows that may never be its negatives.
Excluded = Mapping[int, Set[int]]
