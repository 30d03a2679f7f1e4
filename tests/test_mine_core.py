"""mining.py: the PD-D rule on hand-built geometry, exact vs hnsw, top-k knobs, random, properties.

Angles are in degrees on the unit circle with Q at 0 degrees, so cosine distance grows with the angle
between two vectors and every right answer can be read off a sketch.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hnm_cli.mining import (
    SOURCE_FALLBACK_NEXT,
    SOURCE_RULE,
    AuditRecord,
    MiningStats,
    Negative,
    Pair,
    PairResult,
    fill_distances,
    mine_rule,
    mine_topk,
    sample_random,
)
from hnm_cli.search import HnswIndex, VectorSource, exact_topk

Q0 = np.array([[1.0, 0.0]], dtype=np.float32)


def circle(*degrees: float) -> np.ndarray:
    rad = np.radians(np.array(degrees, dtype=np.float64))
    return np.stack([np.cos(rad), np.sin(rad)], axis=1).astype(np.float32)


def cosd(a: float, b: float = 0.0) -> float:
    """Cosine distance between two circle points given in degrees."""
    return 1.0 - math.cos(math.radians(a - b))


def ap(value: float):
    """Distances come from float32 vectors: equal to the exact value within 1e-6."""
    return pytest.approx(value, abs=1e-6)


class ExactIndex(HnswIndex):
    """An 'hnsw' index that answers exactly, optionally hiding rows (from every query, or per query row of
    ``query_vecs``): makes widening and recall gaps deterministic."""

    def __init__(self, source, hide=None, hide_for=None, query_vecs=None) -> None:
        super().__init__(None, source.dim, source.n)
        self.source = source
        self.hide = hide or set()
        self.hide_for = hide_for or {}
        self.query_vecs = query_vecs
        self.calls: list[int] = []

    def search(self, queries, k, ef=None):
        self.calls.append(k)
        extra = len(self.hide) + max((len(v) for v in self.hide_for.values()), default=0)
        s, i = exact_topk(queries, self.source, min(self.source.n, k + extra))
        out_s, out_i = [], []
        for qv, ss, ii in zip(queries, s, i, strict=True):
            hidden = set(self.hide)
            if self.hide_for:
                (qr,) = np.flatnonzero((self.query_vecs == qv).all(axis=1))[:1]
                hidden |= self.hide_for.get(int(qr), set())
            keep = ~np.isin(ii, list(hidden))
            out_s.append(ss[keep][:k])
            out_i.append(ii[keep][:k])
        return np.stack(out_s), np.stack(out_i)


def rows_of(results: list[PairResult]) -> list[list[int]]:
    return [[n.doc_row for n in r.negatives] for r in results]


def both_paths(query_vecs, x, pairs, excluded, **kw):
    """Run the rule exactly and through the (exact-answering) hnsw path with tiny k; assert they agree."""
    src = VectorSource.from_array(x)
    exact, st_exact = mine_rule(query_vecs, src, pairs, excluded, **kw)
    via_index, _ = mine_rule(query_vecs, src, pairs, excluded, index=ExactIndex(src), **{"candidate_k": 1, **kw})
    assert rows_of(via_index) == rows_of(exact)
    assert [(r.c1_pass, r.c2_fail, r.excluded) for r in via_index] == [
        (r.c1_pass, r.c2_fail, r.excluded) for r in exact
    ]
    return exact, st_exact


# ---------------------------------------------------------------------------------------------
# The rule on hand-built geometry
# ---------------------------------------------------------------------------------------------

# Rows: 0 PD at 30, 1 at 10 (passes), 2 at 25 (C2 fails: 5 from PD), 3 at -40 (C1 fails), 4 at -20 (passes).
BASIC = circle(30, 10, 25, -40, -20)


def test_rule_takes_the_closest_passing_document() -> None:
    res, stats = both_paths(Q0, BASIC, [Pair(0, 0)], {0: {0}})
    (r,) = res
    assert r.negatives == [Negative(1, SOURCE_RULE, 1, ap(cosd(10)), ap(cosd(30)), ap(cosd(30, 10)))]
    assert (r.c1_pass, r.c2_fail, r.excluded, r.fallback_used) == (3, 1, 0, False)
    assert (stats.pairs, stats.selected, stats.pairs_with_zero, stats.rejected_c2) == (1, 1, 0, 1)


def test_rule_num_negatives_orders_by_distance_and_reports_ranks() -> None:
    res, stats = both_paths(Q0, BASIC, [Pair(0, 0)], {}, num_negatives=3)
    assert [(n.doc_row, n.rank) for n in res[0].negatives] == [(1, 1), (4, 2)]
    assert (stats.pairs_short, stats.pairs_with_zero, stats.selected) == (1, 0, 2)


def test_c1_only_violation_yields_nothing_and_fallback_next_takes_it() -> None:
    x = circle(30, -40)  # -40 passes C2 (70 from PD) but is farther from Q than PD
    res, stats = both_paths(Q0, x, [Pair(0, 0)], {})
    assert res[0].negatives == [] and res[0].c1_pass == 0
    assert stats.pairs_with_zero == 1 and stats.to_dict()["selection_rate"] == 0.0
    records: list[AuditRecord] = []
    res, stats = mine_rule(Q0, VectorSource.from_array(x), [Pair(0, 0)], {}, fallback="next", audit=records.append)
    assert [(n.doc_row, n.source, n.rank) for n in res[0].negatives] == [(1, SOURCE_FALLBACK_NEXT, None)]
    assert res[0].fallback_used and stats.fallback_pairs == 1 and stats.pairs_with_zero == 0
    assert [(a.doc_row, a.rank, a.c1, a.c2, a.excluded, a.selected) for a in records] == [
        (1, 2, False, True, False, False)
    ]


def test_c2_only_violation_yields_nothing_even_with_fallback_next() -> None:
    x = circle(30, 25)  # 25 is closer to Q than PD (C1 holds) but closer still to PD (C2 fails)
    res, _ = both_paths(Q0, x, [Pair(0, 0)], {})
    assert res[0].negatives == [] and (res[0].c1_pass, res[0].c2_fail) == (1, 1)
    records: list[AuditRecord] = []
    res, _ = mine_rule(Q0, VectorSource.from_array(x), [Pair(0, 0)], {}, fallback="next", audit=records.append)
    assert res[0].negatives == [] and not res[0].fallback_used
    assert [(a.doc_row, a.rank, a.c1, a.c2, a.selected) for a in records] == [(1, 1, True, False, False)]
    assert records[0].d_qd == ap(cosd(25)) and records[0].d_pd == ap(cosd(30, 25))


def test_ties_are_strict() -> None:
    # C1 tie: -30 is exactly as far from Q as PD at 30 (cos is even, so the float32 x-coordinates match).
    res, _ = both_paths(Q0, circle(30, -30), [Pair(0, 0)], {})
    assert res[0].negatives == [] and res[0].c1_pass == 0
    # C2 tie: Q = (1, 0), PD = (0, 1), D on the bisector: q.d and pd.d are the same sum in another order.
    c = np.float32(math.sqrt(0.5))
    x = np.array([[0, 1], [c, c]], dtype=np.float32)
    res, _ = both_paths(Q0, x, [Pair(0, 0)], {})
    assert res[0].negatives == [] and (res[0].c1_pass, res[0].c2_fail) == (1, 1)
    # ...and just off the bisector towards Q it passes.
    res, _ = both_paths(Q0, np.concatenate([x, circle(44)]), [Pair(0, 0)], {})
    assert rows_of(res) == [[2]]


def test_equal_candidates_break_ties_by_lower_row() -> None:
    x = circle(30, -50, 10, 50, 10)  # rows 2 and 4 are the same vector
    res, _ = both_paths(Q0, x, [Pair(0, 0)], {}, num_negatives=2)
    assert [(n.doc_row, n.rank) for n in res[0].negatives] == [(2, 1), (4, 2)]


def test_pd_top1_yields_nothing() -> None:
    x = circle(0, 5, -5, 90)
    res, stats = both_paths(Q0, x, [Pair(0, 0)], {}, num_negatives=2)
    assert res[0].negatives == [] and res[0].c1_pass == 0
    assert (stats.pairs_with_zero, stats.pairs_short, stats.candidates_examined) == (1, 1, 3)


def test_multi_positive_query_checks_c2_against_its_own_pd_and_excludes_other_positives() -> None:
    # Rows: 0 PD1 at 30, 1 PD2 at 10, 2 G at 8, 3 D at -15, 4 E at 28.
    x = circle(30, 10, 8, -15, 28)
    pairs = [Pair(0, 0), Pair(0, 1)]
    res, stats = both_paths(Q0, x, pairs, {0: {0, 1}}, num_negatives=2)
    # Pair (Q, PD1): PD2 (rank 2) would pass but is a positive; G passes (22 from PD1), D passes, E fails C2.
    assert [(n.doc_row, n.rank) for n in res[0].negatives] == [(2, 1), (3, 3)]
    assert (res[0].c1_pass, res[0].c2_fail, res[0].excluded) == (4, 1, 1)
    # Pair (Q, PD2): only G is closer to Q than PD2, and G is 2 degrees from PD2, so C2 fails.
    assert res[1].negatives == [] and (res[1].c1_pass, res[1].c2_fail, res[1].excluded) == (1, 1, 0)
    assert (stats.rejected_exclusion, stats.rejected_c2, stats.pairs_with_zero) == (1, 2, 1)


def test_excluded_duplicate_text_is_never_chosen() -> None:
    x = circle(30, 10, -20)  # row 1 is the best candidate but its text duplicates a positive
    res, _ = both_paths(Q0, x, [Pair(0, 0)], {0: {0, 1}})
    assert rows_of(res) == [[2]] and res[0].excluded == 1


def test_audit_lists_c1_region_and_window_in_rank_order() -> None:
    records: list[AuditRecord] = []
    mine_rule(Q0, VectorSource.from_array(BASIC), [Pair(0, 0)], {}, candidate_k=5, audit=records.append)
    got = [(a.doc_row, a.rank, a.c1, a.c2, a.excluded, a.selected) for a in records]
    assert got == [
        (1, 1, True, True, False, True),
        (4, 2, True, True, False, False),
        (2, 3, True, False, False, False),
        (3, 5, False, True, False, False),
    ]
    assert all(a.d_qp == ap(cosd(30)) for a in records)
    # The hnsw path reports the same records.
    again: list[AuditRecord] = []
    src = VectorSource.from_array(BASIC)
    mine_rule(Q0, src, [Pair(0, 0)], {}, candidate_k=5, audit=again.append, index=ExactIndex(src))
    assert again == records


def test_hnsw_widening_and_fallbacks_are_counted(monkeypatch) -> None:
    from hnm_cli.mining import rule_hnsw

    # Widen up to n here (the default n/16 would stop at once on these tiny corpora).
    monkeypatch.setattr(rule_hnsw, "MAX_K_FRACTION", 1.0)
    # PD at 30 is rank 4 of 5: k=1 -> 2 -> 4 still ends at PD, and 8 > n: one exact fallback, two widenings.
    src = VectorSource.from_array(BASIC)
    index = ExactIndex(src)
    res, stats = mine_rule(Q0, src, [Pair(0, 0)], {}, index=index, candidate_k=1)
    assert index.calls == [1, 2, 4] and (stats.hnsw_widenings, stats.exact_fallbacks) == (2, 1)
    assert rows_of(res) == [[1]]
    # PD rank 3 of 10: k=8 is the first list where the 3 documents down to PD fill at most half.
    x = circle(30, 10, -20, 60, 70, 80, 90, 100, 110, 120)
    src = VectorSource.from_array(x)
    index = ExactIndex(src)
    res, stats = mine_rule(Q0, src, [Pair(0, 0)], {}, index=index, candidate_k=1)
    assert index.calls == [1, 2, 4, 8] and (stats.hnsw_widenings, stats.exact_fallbacks) == (3, 0)
    assert rows_of(res) == [[1]]
    # A recall gap (the index never returns a document above PD... here: PD itself) falls back to exact.
    index = ExactIndex(src, hide={0})
    res2, stats = mine_rule(Q0, src, [Pair(0, 0)], {}, index=index, candidate_k=4)
    assert (stats.hnsw_widenings, stats.exact_fallbacks) == (0, 1) and rows_of(res2) == [[1]]
    # A hidden positive above PD is also a detected gap.
    res3, stats = mine_rule(Q0, src, [Pair(0, 0)], {0: {1}}, index=ExactIndex(src, hide={1}), candidate_k=4)
    assert stats.exact_fallbacks == 1 and rows_of(res3) == [[2]]


def test_rule_argument_errors() -> None:
    src = VectorSource.from_array(BASIC)
    with pytest.raises(ValueError, match="query vectors have dimension 3, corpus vectors 2"):
        mine_rule(np.ones((1, 3), np.float32), src, [Pair(0, 0)], {})
    with pytest.raises(ValueError, match=r"positive_row out of range 0..4"):
        mine_rule(Q0, src, [Pair(0, 5)], {})
    with pytest.raises(ValueError, match="fallback must be 'none' or 'next'"):
        mine_rule(Q0, src, [Pair(0, 0)], {}, fallback="bm25")
    assert mine_rule(Q0, src, [], {}) == ([], MiningStats())


def test_stats_to_dict() -> None:
    _, stats = mine_rule(Q0, VectorSource.from_array(BASIC), [Pair(0, 0), Pair(0, 3)], {}, candidate_k=3)
    d = stats.to_dict()
    # Pair (Q, row 3 at -40): C1 region = rows 1, 4, 2, 0; row 1 (10) is 50 from -40, passes.
    assert {k: d[k] for k in ("pairs", "pairs_with_negative", "pairs_with_zero", "selection_rate", "selected")} == {
        "pairs": 2,
        "pairs_with_negative": 2,
        "pairs_with_zero": 0,
        "selection_rate": 1.0,
        "selected": 2,
    }
    assert (d["candidates_examined"], d["rejected_c1"]) == (3 + 4, 0)
    assert sum(d["hist_margin"]["counts"]) == 2 and len(d["hist_margin"]["edges"]) == 41
    assert d["margin_mean"] == pytest.approx(((cosd(10) - cosd(30)) + (cosd(10) - cosd(40))) / 2, abs=1e-6)


# ---------------------------------------------------------------------------------------------
# Exact vs hnsw on a few thousand vectors
# ---------------------------------------------------------------------------------------------


def clustered(seed: int, n: int = 3000, dim: int = 32, n_pairs: int = 200):
    """Topic-clustered unit vectors and noisy queries whose positive ranks spread from 1 to hundreds."""
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((40, dim))
    x = centers[rng.integers(0, 40, n)] + 0.9 * rng.standard_normal((n, dim))
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    pos = rng.choice(n, n_pairs, replace=False)
    n_queries = n_pairs - 20  # the last 20 pairs reuse queries: multi-positive queries
    qrow = np.concatenate([np.arange(n_queries), rng.integers(0, n_queries, 20)])
    noise = rng.uniform(0.3, 1.2, (n_queries, 1)) * rng.standard_normal((n_queries, dim)) / np.sqrt(dim)
    q = x[pos[:n_queries]] + noise
    q = (q / np.linalg.norm(q, axis=1, keepdims=True)).astype(np.float32)
    pairs = [Pair(int(a), int(b)) for a, b in zip(qrow, pos, strict=True)]
    excluded: dict[int, set[int]] = {}
    for p in pairs:
        excluded.setdefault(p.query_row, set()).add(p.positive_row)
    for qr in range(0, n_queries, 7):  # pretend some documents duplicate a positive's text
        excluded[qr].add(int(rng.integers(0, n)))
    return x, q, pairs, excluded


def brute_rule(x, q, pairs, excluded, m):
    """Reference: the rule in float64 over every document, written the obvious way."""
    x64, q64 = x.astype(np.float64), q.astype(np.float64)
    out = []
    for p in pairs:
        sq = sum(x64[:, j] * q64[p.query_row, j] for j in range(x.shape[1]))
        sp = sum(x64[:, j] * x64[p.positive_row, j] for j in range(x.shape[1]))
        ok = (sq > sq[p.positive_row]) & (sq > sp)
        ok[list(excluded.get(p.query_row, ())) + [p.positive_row]] = False
        cand = np.flatnonzero(ok)
        out.append([int(c) for c in cand[np.lexsort((cand, -sq[cand]))][:m]])
    return out


@pytest.fixture(scope="module")
def thousands():
    x, q, pairs, excluded = clustered(0)
    src = VectorSource.from_array(x)
    index = HnswIndex.build(src, M=16, ef_construction=200, random_seed=0, num_threads=1)
    return x, q, pairs, excluded, src, index


def test_exact_rule_matches_brute_force_and_is_interesting(thousands) -> None:
    x, q, pairs, excluded, src, _ = thousands
    res, stats = mine_rule(q, src, pairs, excluded, num_negatives=2, block_rows=700, pair_block=64)
    assert rows_of(res) == brute_rule(x, q, pairs, excluded, 2)
    # The data exercises every branch: empty pairs, deep positives, C2 and exclusion rejections.
    assert 0 < stats.pairs_with_zero < stats.pairs
    assert max(r.c1_pass for r in res) > 100
    assert stats.rejected_c2 > 0 and stats.rejected_exclusion > 0


def brute_window(x, q, pairs, excluded, m, *, c1, c2_margin=0.0, range_min=0):
    """Reference for the windowed rule: the C2(+margin)-passing documents nearest first, C1 optional,
    positions range_min..range_min+m; written the obvious way in float64."""
    x64, q64 = x.astype(np.float64), q.astype(np.float64)
    out = []
    for p in pairs:
        sq = sum(x64[:, j] * q64[p.query_row, j] for j in range(x.shape[1]))
        sp = sum(x64[:, j] * x64[p.positive_row, j] for j in range(x.shape[1]))
        ok = (sq - sp > c2_margin) if c2_margin else (sq > sp)
        if c1:
            ok &= sq > sq[p.positive_row]
        ok[list(excluded.get(p.query_row, ())) + [p.positive_row]] = False
        cand = np.flatnonzero(ok)
        out.append([int(c) for c in cand[np.lexsort((cand, -sq[cand]))][range_min : range_min + m]])
    return out


@pytest.mark.parametrize("use_index", [False, True])
def test_fill_short_is_the_nearest_c2_passing_documents(thousands, use_index: bool) -> None:
    x, q, pairs, excluded, src, index = thousands
    kw = {"index": index, "candidate_k": 4} if use_index else {"block_rows": 700, "pair_block": 64}
    res, stats = mine_rule(q, src, pairs, excluded, num_negatives=3, fallback="next", fill="short", **kw)
    assert rows_of(res) == brute_window(x, q, pairs, excluded, 3, c1=False)
    # Labels: a negative above PD is the rule's own, one below comes from the fill.
    for r in res:
        for neg in r.negatives:
            assert neg.source == (SOURCE_RULE if neg.d_qd < neg.d_qp else SOURCE_FALLBACK_NEXT)
    assert stats.pairs_short == 0 < stats.fallback_pairs
    # fill="empty" leaves the short pairs short: only pairs without any rule negative are filled.
    empty_only, _ = mine_rule(q, src, pairs, excluded, num_negatives=3, fallback="next", **kw)
    strict = brute_rule(x, q, pairs, excluded, 3)
    for got, rule_rows, full in zip(
        rows_of(empty_only), strict, brute_window(x, q, pairs, excluded, 3, c1=False), strict=True
    ):
        assert got == (rule_rows or full)


def test_c2_margin_and_window_match_brute_force(thousands) -> None:
    x, q, pairs, excluded, src, _ = thousands
    res, _ = mine_rule(q, src, pairs, excluded, num_negatives=2, c2_margin=0.05, block_rows=700)
    assert rows_of(res) == brute_window(x, q, pairs, excluded, 2, c1=True, c2_margin=0.05)
    res, _ = mine_rule(
        q, src, pairs, excluded, num_negatives=2, c2_margin=0.02, fallback="next", fill="short", range_min=3
    )
    assert rows_of(res) == brute_window(x, q, pairs, excluded, 2, c1=False, c2_margin=0.02, range_min=3)
    # The margin changes picks, and every pick keeps it.
    base, _ = mine_rule(q, src, pairs, excluded, num_negatives=1)
    tight, stats = mine_rule(q, src, pairs, excluded, num_negatives=1, c2_margin=0.1)
    assert rows_of(tight) != rows_of(base) and stats.rejected_c2 > 0
    assert all(n.d_pd - n.d_qd > 0.1 for r in tight for n in r.negatives)


def test_random_window_sampling_is_seeded_and_inside_the_window(thousands) -> None:
    x, q, pairs, excluded, src, _ = thousands
    kw = {"num_negatives": 2, "fallback": "next", "fill": "short", "range_max": 10, "sampling_strategy": "random"}
    a, _ = mine_rule(q, src, pairs, excluded, rng=np.random.default_rng(5), **kw)
    b, _ = mine_rule(q, src, pairs, excluded, rng=np.random.default_rng(5), **kw)
    assert a == b
    window = brute_window(x, q, pairs, excluded, 10, c1=False)
    for got, allowed in zip(rows_of(a), window, strict=True):
        assert set(got) <= set(allowed) and len(got) == min(2, len(allowed))
        assert got == [r for r in allowed if r in got]  # rank order kept
    top, _ = mine_rule(q, src, pairs, excluded, **(kw | {"sampling_strategy": "top"}))
    assert rows_of(top) != rows_of(a)


@pytest.mark.parametrize(("candidate_k", "ef_search"), [(100, 200), (2, 200), (8, 64), (4, 8)])
def test_hnsw_gives_identical_negatives(thousands, candidate_k: int, ef_search: int) -> None:
    x, q, pairs, excluded, src, index = thousands
    exact, st_exact = mine_rule(q, src, pairs, excluded, num_negatives=2, candidate_k=candidate_k)
    approx, st_hnsw = mine_rule(
        q, src, pairs, excluded, num_negatives=2, index=index, candidate_k=candidate_k, ef_search=ef_search
    )
    assert approx == exact
    assert (st_exact.hnsw_widenings, st_exact.exact_fallbacks) == (0, 0)
    if candidate_k < 10:
        assert st_hnsw.hnsw_widenings > 0
    assert st_hnsw.to_dict() | {"hnsw_widenings": 0, "exact_fallbacks": 0} == st_exact.to_dict()


def test_hnsw_forced_fallback_on_recall_gap_is_identical(thousands) -> None:
    x, q, pairs, excluded, src, _ = thousands
    # The index loses the PD of 30 queries (only for that query: a document lost for another query above
    # its PD would be an undetectable gap, which no ANN check can see).
    hide_for = {p.query_row: {p.positive_row} for p in pairs[:30]}
    exact, _ = mine_rule(q, src, pairs, excluded, candidate_k=1000)
    approx, stats = mine_rule(
        q, src, pairs, excluded, index=ExactIndex(src, hide_for=hide_for, query_vecs=q), candidate_k=1000
    )
    assert approx == exact
    _, base = mine_rule(q, src, pairs, excluded, index=ExactIndex(src), candidate_k=1000)
    assert base.exact_fallbacks < stats.exact_fallbacks <= base.exact_fallbacks + 30


def test_rank_recount_when_too_many_documents_rank_above(thousands, monkeypatch) -> None:
    # With a tiny cap the scan drops the failing documents it keeps for ranks and recounts them instead.
    from hnm_cli.mining import rule_exact

    x, q, pairs, excluded, src, _ = thousands
    want, _ = mine_rule(q, src, pairs, excluded, num_negatives=2)
    monkeypatch.setattr(rule_exact, "RANK_CAP", 3)
    recounted: list[int] = []
    real = rule_exact.count_ranks

    def spy(qv, targets, *args):
        recounted.extend(targets)
        return real(qv, targets, *args)

    monkeypatch.setattr(rule_exact, "count_ranks", spy)
    got, _ = mine_rule(q, src, pairs, excluded, num_negatives=2, block_rows=500, pair_block=64)
    assert got == want
    assert recounted
    assert any(n.rank > 3 for i in recounted for n in got[i].negatives)


def test_audit_is_identical_between_paths(thousands) -> None:
    x, q, pairs, excluded, src, index = thousands
    a: list[AuditRecord] = []
    b: list[AuditRecord] = []
    ra, _ = mine_rule(q, src, pairs[:40], excluded, candidate_k=20, audit=a.append)
    rb, _ = mine_rule(q, src, pairs[:40], excluded, candidate_k=20, audit=b.append, index=ExactIndex(src))
    assert a == b and ra == rb
    assert sum(r.selected for r in a) == sum(len(r.negatives) for r in ra)
    assert all((r.c1 and r.c2 and not r.excluded) for r in a if r.selected)


def test_fallback_next_is_the_nearest_c2_passing_document(thousands) -> None:
    x, q, pairs, excluded, src, index = thousands
    res, stats = mine_rule(q, src, pairs, excluded, fallback="next", block_rows=500, pair_block=50)
    res_h, _ = mine_rule(q, src, pairs, excluded, fallback="next", index=index)
    assert res_h == res
    x64, q64 = x.astype(np.float64), q.astype(np.float64)
    used = [r for r in res if r.fallback_used]
    assert len(used) == stats.fallback_pairs > 0
    for r in used:
        p = r.pair
        sq, sp = x64 @ q64[p.query_row], x64 @ x64[p.positive_row]
        ok = sq > sp
        ok[list(excluded[p.query_row]) + [p.positive_row]] = False
        assert [n.doc_row for n in r.negatives] == [int(np.flatnonzero(ok)[np.argmax(sq[ok])])]
        assert r.negatives[0].source == SOURCE_FALLBACK_NEXT


# ---------------------------------------------------------------------------------------------
# Top-k with sentence-transformers' knobs (hand cases; the comparison with the library is in
# test_topk_matches_sentence_transformers, marked slow because it imports torch)
# ---------------------------------------------------------------------------------------------

# Rows: 0 PD at 20; 1..6 at 5, 10, 15, 25, 40, 60. Ranking: 1, 2, 3, PD, 4, 5, 6.
TOPK = circle(20, 5, 10, 15, 25, 40, 60)


def topk(**kw) -> list[tuple[int, int]]:
    res, _ = mine_topk(Q0, VectorSource.from_array(TOPK), [Pair(0, 0)], {}, **kw)
    return [(n.doc_row, n.rank) for n in res[0].negatives]


def test_topk_default_and_range() -> None:
    assert topk() == [(1, 1)]
    assert topk(num_negatives=2, range_min=1, range_max=3) == [(2, 2), (3, 3)]
    # range_max counts surviving candidates: PD is skipped, not counted.
    assert topk(num_negatives=4, range_max=4) == [(1, 1), (2, 2), (3, 3), (4, 5)]


def test_topk_score_filters_and_margins() -> None:
    cos = lambda a: math.cos(math.radians(a))  # noqa: E731
    assert topk(max_score=cos(12)) == [(3, 3)]
    assert topk(absolute_margin=cos(20) - cos(12)) == [(3, 3)]
    # relative 0.05: keep sim <= 0.95 * cos(20) = cos(26.8 degrees): row 4 at 25 is out, row 5 at 40 is in.
    assert topk(relative_margin=0.05) == [(5, 6)]
    res, stats = mine_topk(
        Q0, VectorSource.from_array(TOPK), [Pair(0, 0)], {}, num_negatives=6, range_max=10, min_score=cos(50)
    )
    assert [n.doc_row for n in res[0].negatives] == [1, 2, 3, 4, 5]
    assert stats.rejected_by == {"min_score": 1} and stats.pairs_short == 1


def test_topk_margin_uses_the_hardest_positive_and_shares_negatives() -> None:
    pairs = [Pair(0, 0), Pair(0, 3)]  # positives at 20 and 15: the margin is relative to 20
    res, _ = mine_topk(Q0, VectorSource.from_array(TOPK), pairs, {}, absolute_margin=0.0)
    assert rows_of(res) == [[4], [4]]
    assert res[0].negatives[0].d_pd == ap(cosd(25, 20))
    assert res[1].negatives[0].d_pd == ap(cosd(25, 15))


def test_topk_random_sampling_is_seeded_and_in_rank_order() -> None:
    a = topk(num_negatives=3, range_max=6, sampling_strategy="random", rng=np.random.default_rng(5))
    b = topk(num_negatives=3, range_max=6, sampling_strategy="random", rng=np.random.default_rng(5))
    assert a == b and len(a) == 3
    assert {r for r, _ in a} <= {1, 2, 3, 4, 5, 6} and [k for _, k in a] == sorted(k for _, k in a)
    draws = {
        tuple(topk(num_negatives=3, range_max=6, sampling_strategy="random", rng=np.random.default_rng(s)))
        for s in range(10)
    }
    assert len(draws) > 1


def test_topk_argument_errors() -> None:
    with pytest.raises(ValueError, match="range_min must be smaller than range_max, got range_min=3 and range_max=3"):
        topk(range_min=3, range_max=3)
    with pytest.raises(ValueError, match="Cannot mine 3 negatives per query: only 2 candidates remain"):
        topk(num_negatives=3, range_min=1, range_max=3)
    with pytest.raises(ValueError, match="sampling_strategy must be 'top' or 'random'"):
        topk(sampling_strategy="bottom")


def test_topk_hnsw_path(thousands) -> None:
    x, q, pairs, excluded, src, index = thousands
    exact, _ = mine_topk(q, src, pairs, excluded, num_negatives=3, relative_margin=0.05)
    approx, _ = mine_topk(q, src, pairs, excluded, num_negatives=3, relative_margin=0.05, index=index)
    same = np.mean([a.negatives == b.negatives for a, b in zip(exact, approx, strict=True)])
    assert same >= 0.95  # approximate by design: top-k does not promise coverage


# ---------------------------------------------------------------------------------------------
# Random and distances
# ---------------------------------------------------------------------------------------------


def test_sample_random_is_seeded_uniform_and_avoids_excluded() -> None:
    pairs = [Pair(0, 0), Pair(1, 5)]
    a = sample_random(10, pairs, {0: {1, 2, 3}}, 3, 0)
    b = sample_random(10, pairs, {0: {1, 2, 3}}, 3, 0)
    assert a == b and sample_random(10, pairs, {0: {1, 2, 3}}, 3, 1) != a
    assert all(n.source == "random" and n.rank is None and n.d_qd is None for r in a for n in r.negatives)
    assert not {n.doc_row for n in a[0].negatives} & {0, 1, 2, 3}
    assert len({n.doc_row for n in a[0].negatives}) == 3
    # Only 2 documents left: both come back.
    c = sample_random(4, [Pair(0, 0)], {0: {1}}, 3, 1)
    assert sorted(n.doc_row for n in c[0].negatives) == [2, 3]
    counts = np.zeros(10)
    for seed in range(2000):
        (r,) = sample_random(10, [Pair(0, 0)], {}, 1, seed)
        counts[r.negatives[0].doc_row] += 1
    assert counts[0] == 0 and counts[1:].min() > 170  # about 222 each


def test_random_draws_follow_ids_not_rows() -> None:
    from hnm_cli.mining.sampling import id_keys

    ids = [f"d{i}" for i in range(50)]
    base = sample_random(50, [Pair(0, 0)], {}, 4, 7, doc_keys=id_keys(ids), query_keys=id_keys(["q"]))
    picked = {ids[n.doc_row] for n in base[0].negatives}
    # The same documents shuffled, plus new ones: a pick stays unless a new document beats it.
    new_ids = ids[::-1] + [f"n{i}" for i in range(5)]
    again = sample_random(55, [Pair(0, new_ids.index("d0"))], {}, 4, 7, doc_keys=id_keys(new_ids),
                          query_keys=id_keys(["q"]))  # fmt: skip
    now = {new_ids[n.doc_row] for n in again[0].negatives}
    assert {d for d in now if d.startswith("d")} <= picked
    assert len(now - picked) == sum(d.startswith("n") for d in now)


def test_fill_distances() -> None:
    (r,) = sample_random(7, [Pair(0, 0)], {}, 2, 0)
    (f,) = fill_distances(Q0, VectorSource.from_array(TOPK), [r])
    angles = [20, 5, 10, 15, 25, 40, 60]
    for n in f.negatives:
        a = angles[n.doc_row]
        assert (n.d_qd, n.d_qp, n.d_pd) == (
            ap(cosd(a)),
            ap(cosd(20)),
            ap(cosd(a, 20)),
        )
    assert r.negatives[0].d_qd is None  # the input is not modified


# ---------------------------------------------------------------------------------------------
# Properties
# ---------------------------------------------------------------------------------------------


@st.composite
def small_problem(draw):
    n = draw(st.integers(2, 25))
    # Integer coordinates make exact duplicates and exact ties likely.
    coords = draw(st.lists(st.tuples(*[st.integers(-2, 2)] * 3), min_size=n, max_size=n))
    x = np.array([c if any(c) else (1, 0, 0) for c in coords], dtype=np.float64)
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    nq = draw(st.integers(1, 4))
    qc = draw(st.lists(st.tuples(*[st.integers(-2, 2)] * 3), min_size=nq, max_size=nq))
    q = np.array([c if any(c) else (0, 1, 0) for c in qc], dtype=np.float64)
    q = (q / np.linalg.norm(q, axis=1, keepdims=True)).astype(np.float32)
    pairs = draw(st.lists(st.builds(Pair, st.integers(0, nq - 1), st.integers(0, n - 1)), min_size=1, max_size=6))
    excluded: dict[int, set[int]] = {}
    for p in pairs:
        excluded.setdefault(p.query_row, set()).add(p.positive_row)
    for qr in range(nq):
        extra = draw(st.sets(st.integers(0, n - 1), max_size=3))
        excluded.setdefault(qr, set()).update(extra)
    m = draw(st.integers(1, 3))
    return x, q, pairs, excluded, m


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(small_problem(), st.integers(0, 2**16))
def test_property_no_excluded_document_is_ever_a_negative(problem, seed) -> None:
    x, q, pairs, excluded, m = problem
    src = VectorSource.from_array(x)
    rule, _ = mine_rule(q, src, pairs, excluded, num_negatives=m, fallback="next", block_rows=4, pair_block=2)
    via_index, _ = mine_rule(
        q, src, pairs, excluded, num_negatives=m, fallback="next", index=ExactIndex(src), candidate_k=1
    )
    top, _ = mine_topk(q, src, pairs, excluded, num_negatives=m, range_max=m + 4)
    sampled, _ = mine_topk(
        q,
        src,
        pairs,
        excluded,
        num_negatives=m,
        range_max=m + 4,
        sampling_strategy="random",
        rng=np.random.default_rng(seed),
    )
    rand = sample_random(len(x), pairs, excluded, m, seed)
    for results in (rule, via_index, top, sampled, rand):
        for r in results:
            banned = excluded[r.pair.query_row] | {r.pair.positive_row}
            rows = [n.doc_row for n in r.negatives]
            assert not set(rows) & banned
            assert len(rows) == len(set(rows)) <= m
    # The rule's exact answer (no fallback) is the brute-force one, ties included, on both paths.
    plain, _ = mine_rule(q, src, pairs, excluded, num_negatives=m)
    assert rows_of(plain) == brute_rule(x, q, pairs, excluded, m)
    assert rows_of(via_index) == rows_of(rule)


def test_determinism_under_a_seed(thousands) -> None:
    x, q, pairs, excluded, src, _ = thousands
    runs = [
        (
            mine_topk(
                q,
                src,
                pairs,
                excluded,
                num_negatives=3,
                range_max=30,
                sampling_strategy="random",
                rng=np.random.default_rng(42),
            )[0],
            sample_random(len(x), pairs, excluded, 3, 42),
            mine_rule(q, src, pairs, excluded, num_negatives=2)[0],
        )
        for _ in range(2)
    ]
    assert runs[0] == runs[1]


# ---------------------------------------------------------------------------------------------
# Against sentence-transformers itself
# ---------------------------------------------------------------------------------------------


class _VectorModel:
    """Just enough of a SentenceTransformer for mine_hard_negatives: texts map to fixed vectors."""

    def __init__(self, table: dict[str, np.ndarray]) -> None:
        import torch

        self.table = table
        self.device = torch.device("cpu")

    def _enc(self, texts, **_):
        return np.stack([self.table[t] for t in texts])

    encode_document = _enc
    encode_query = _enc

    def similarity(self, a, b):
        import torch

        return torch.as_tensor(np.asarray(a)) @ torch.as_tensor(np.asarray(b)).T

    def similarity_pairwise(self, a, b):
        import torch

        return (torch.as_tensor(np.asarray(a)) * torch.as_tensor(np.asarray(b))).sum(-1)


@pytest.mark.slow
@pytest.mark.parametrize(
    "knobs",
    [
        {},
        {"num_negatives": 3, "range_min": 2, "range_max": 15},
        {"num_negatives": 2, "relative_margin": 0.05},
        {"num_negatives": 2, "absolute_margin": 0.02, "max_score": 0.8},
        {"num_negatives": 4, "min_score": 0.3, "range_max": 40},
    ],
)
def test_topk_matches_sentence_transformers(knobs) -> None:
    from datasets import Dataset
    from sentence_transformers.util import mine_hard_negatives

    x, q, pairs, excluded = clustered(3, n=400, dim=16, n_pairs=60)
    excluded = {qr: {p.positive_row for p in pairs if p.query_row == qr} for qr in excluded}  # ids only
    docs = [f"doc{i}" for i in range(len(x))]
    queries = [f"query{i}" for i in range(len(q))]
    table = dict(zip(docs, x, strict=True)) | dict(zip(queries, q, strict=True))
    data = Dataset.from_dict(
        {"query": [queries[p.query_row] for p in pairs], "answer": [docs[p.positive_row] for p in pairs]}
    )
    theirs = mine_hard_negatives(
        data, _VectorModel(table), corpus=docs, output_format="triplet", verbose=False, **{"num_negatives": 1} | knobs
    )
    ours, _ = mine_topk(q, VectorSource.from_array(x), pairs, excluded, **{"num_negatives": 1} | knobs)
    want = sorted((r["query"], r["answer"], r["negative"]) for r in theirs)
    got = sorted(
        (queries[r.pair.query_row], docs[r.pair.positive_row], docs[n.doc_row]) for r in ours for n in r.negatives
    )
    assert len(want) >= 30 and got == want
