"""False-negative risk of mined negatives, a bounded sample of pairs (most risky first, then seeded random), and
distance histograms over every row: all streamed, so a report of a million-pair mine holds a few thousand rows.

Distances are cosine distances (d = 1 - cosine similarity), as `hnm mine` records them. A negative is *risky* when
it scores above `PERCPOS` of the positive's similarity to the query (NV-Retriever's TopK-PercPos ceiling: above
it, unlabelled positives concentrate) or when it is a near-duplicate of the positive (s(PD,D) >= `NEAR_DUPLICATE`):
the thresholds and comparisons of `hnm mine`'s own `fn_risk` figures, so the page and stats.json agree.
"""

from __future__ import annotations

import hashlib
import heapq
import itertools
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from hnm_cli.mining.controls import NEAR_DUPLICATE_SIMILARITY, PERCPOS_SHARE

PERCPOS = PERCPOS_SHARE  # a negative scoring above this share of the positive's similarity: likely a positive
NEAR_DUPLICATE = NEAR_DUPLICATE_SIMILARITY  # s(PD,D) at least this: a paraphrase or copy of the positive

HIST_BINS = 40  # over distances 0..2 (cosine distance of any two vectors)
HIST_MAX = 2.0


def _num(value: Any) -> float | None:
    kind = type(value)  # exact types: a bool is not a distance, and this runs a few million times on a big run
    return float(value) if kind is float or kind is int else None


def negative_risk(neg: Mapping[str, Any]) -> tuple[float | None, list[str]]:
    """(risk, flags) of one mined negative or suspected positive.

    Args:
        neg: a row's negative, with `d_qd`, `d_qp`, `d_pd` (any may be null, e.g. BM25 or random negatives).

    Returns:
        risk: how far it is past the nearer of the two false-negative thresholds, in cosine similarity:
            max(s(Q,D) - PERCPOS * s(Q,PD), s(PD,D) - NEAR_DUPLICATE) with s = 1 - d; past 0 it is flagged, and the
            larger, the likelier a positive. None without distances.
        flags: `above-positive` (s(Q,D) > s(Q,PD)), `percpos` (s(Q,D) > PERCPOS * s(Q,PD)), `near-duplicate`
            (s(PD,D) >= NEAR_DUPLICATE), as `hnm mine`'s `fn_risk` counts them.
    """
    d_qd, d_qp, d_pd = _num(neg.get("d_qd")), _num(neg.get("d_qp")), _num(neg.get("d_pd"))
    flags: list[str] = []
    parts: list[float] = []
    if d_qd is not None and d_qp is not None:
        s_qd, s_qp = 1.0 - d_qd, 1.0 - d_qp
        if s_qd > s_qp:
            flags.append("above-positive")
        past = s_qd - PERCPOS * s_qp
        parts.append(past)
        if past > 0:
            flags.append("percpos")
    if d_pd is not None:
        twin = (1.0 - d_pd) - NEAR_DUPLICATE
        parts.append(twin)
        if twin >= 0:
            flags.append("near-duplicate")
    return (max(parts) if parts else None), flags


def is_risky(flags: list[str]) -> bool:
    """Whether a negative's flags make it a likely false negative (shown in red on the page)."""
    return "percpos" in flags or "near-duplicate" in flags


Assessed = list[tuple[float | None, list[str]]]  # negative_risk of each negative of a row, in order


def assess(row: Mapping[str, Any]) -> Assessed:
    """`negative_risk` of every negative of a row (computed once, shared by the sampler and the summary)."""
    return [negative_risk(n) for n in row.get("negatives") or []]


def pair_risk(row: Mapping[str, Any], assessed: Assessed | None = None) -> float:
    """A pair's sort key for "most risky first": its riskiest negative (-inf without any distance)."""
    risks = [r for r, _ in (assess(row) if assessed is None else assessed) if r is not None]
    return max(risks, default=float("-inf"))


def _seeded_key(seed: int, row: Mapping[str, Any]) -> int:
    """A pseudo-random key that depends only on the seed and the pair, not on the row order or the Python process."""
    text = f"{seed}\x00{row.get('query_id')}\x00{row.get('positive_id')}".encode()
    return int.from_bytes(hashlib.sha256(text).digest()[:8], "big")


@dataclass
class PairSample:
    """The pairs a page embeds: `risky` (most risky first) then `random` (seeded), and how many were left out."""

    risky: list[dict[str, Any]]
    random: list[dict[str, Any]]
    total: int

    @property
    def left_out(self) -> int:
        """Pairs of the artifact not in the sample."""
        return self.total - len(self.risky) - len(self.random)


class PairSampler:
    """Keeps at most `max_pairs` of a stream of mined rows: the `ceil(max_pairs / 2)` riskiest (pairs with suspected
    positives first), then a seeded random draw of the others. Memory is O(max_pairs), whatever the stream's length;
    the result depends on the seed and the rows, not on their order (ties broken by the seeded key)."""

    def __init__(self, max_pairs: int, seed: int = 0) -> None:
        if max_pairs < 0:
            raise ValueError("max_pairs must be >= 0")
        self.max_pairs = max_pairs
        self.n_risky = (max_pairs + 1) // 2
        self.seed = seed
        self.total = 0
        self._order = itertools.count()
        self._risky: list[tuple[tuple[bool, float, int], int, dict[str, Any]]] = []  # min-heap: least risky on top
        self._random: list[tuple[int, int, dict[str, Any]]] = []  # max-heap by key (negated): largest on top

    def add(self, row: dict[str, Any], assessed: Assessed | None = None) -> None:
        """Offer one row (a mined row as `artifacts.mined.iter_rows` yields it), with its `assess` if known."""
        self.total += 1
        if self.max_pairs == 0:
            return
        key = _seeded_key(self.seed, row)
        n = next(self._order)
        risk = (bool(row.get("suspected")), pair_risk(row, assessed), -key)
        if len(self._risky) < self.n_risky:
            heapq.heappush(self._risky, (risk, n, row))
        elif risk > self._risky[0][0]:
            heapq.heapreplace(self._risky, (risk, n, row))
        # The random part draws from rows outside the risky top, which is only known at the end: keep the
        # max_pairs smallest keys, enough to fill every slot whichever rows end up in the top.
        if len(self._random) < self.max_pairs:
            heapq.heappush(self._random, (-key, n, row))
        elif -key > self._random[0][0]:
            heapq.heapreplace(self._random, (-key, n, row))

    def result(self) -> PairSample:
        """The sample: risky pairs by decreasing risk, then random pairs in seeded order."""
        risky = sorted(self._risky, key=lambda t: t[0], reverse=True)
        chosen = {n for _, n, _ in risky}
        rest = sorted((-k, n, row) for k, n, row in self._random if n not in chosen)
        take = self.max_pairs - len(risky)
        return PairSample([r for _, _, r in risky], [r for _, _, r in rest[:take]], self.total)


def _hist_index(d: float) -> int:
    i = int(d * (HIST_BINS / HIST_MAX))
    return 0 if i < 0 else (HIST_BINS - 1 if i >= HIST_BINS else i)


@dataclass
class DistanceSummary:
    """Histograms of d(Q,D), d(Q,PD) and d(PD,D) and the false-negative-risk counts over every row of a mine
    artifact (not only the sample), accumulated row by row."""

    pairs: int = 0
    pairs_without_negative: int = 0
    pairs_with_suspected: int = 0
    suspected: int = 0
    negatives: int = 0
    with_distances: int = 0
    above_positive: int = 0
    percpos: int = 0
    near_duplicate: int = 0
    risky: int = 0
    sources: Counter[str] = field(default_factory=Counter)
    hist: dict[str, list[int]] = field(default_factory=lambda: {k: [0] * HIST_BINS for k in ("d_qd", "d_qp", "d_pd")})

    def add(self, row: Mapping[str, Any], assessed: Assessed | None = None) -> None:
        """Count one mined row (with its `assess` if known)."""
        self.pairs += 1
        negatives = row.get("negatives") or []
        suspected = row.get("suspected") or []
        self.pairs_without_negative += not negatives
        self.pairs_with_suspected += bool(suspected)
        self.suspected += len(suspected)
        d_qp_seen = False
        hist_qd, hist_qp, hist_pd = self.hist["d_qd"], self.hist["d_qp"], self.hist["d_pd"]
        for neg, (risk, flags) in zip(negatives, assess(row) if assessed is None else assessed, strict=True):
            self.negatives += 1
            self.sources[neg.get("source") or "?"] += 1
            if (d := _num(neg.get("d_qd"))) is not None:
                hist_qd[_hist_index(d)] += 1
            if (d := _num(neg.get("d_pd"))) is not None:
                hist_pd[_hist_index(d)] += 1
            if not d_qp_seen and (d := _num(neg.get("d_qp"))) is not None:
                hist_qp[_hist_index(d)] += 1  # one per pair: the positive is the same for all negatives
                d_qp_seen = True
            if risk is None:
                continue
            self.with_distances += 1
            self.above_positive += "above-positive" in flags
            self.percpos += "percpos" in flags
            self.near_duplicate += "near-duplicate" in flags
            self.risky += is_risky(flags)

    def to_json(self) -> dict[str, Any]:
        """Plain values for the page: counts, shares of the negatives with distances, and the histograms."""

        def share(n: int) -> float | None:
            return n / self.with_distances if self.with_distances else None

        return {
            "pairs": self.pairs,
            "pairs_without_negative": self.pairs_without_negative,
            "pairs_with_suspected": self.pairs_with_suspected,
            "suspected": self.suspected,
            "negatives": self.negatives,
            "with_distances": self.with_distances,
            "share_above_positive": share(self.above_positive),
            "share_percpos": share(self.percpos),
            "share_near_duplicate": share(self.near_duplicate),
            "share_risky": share(self.risky),
            "sources": dict(self.sources.most_common()),
            "hist_edges": [i * HIST_MAX / HIST_BINS for i in range(HIST_BINS + 1)],
            "hist": self.hist,
        }
