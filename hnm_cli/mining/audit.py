"""The audit trail of the rule: every examined candidate of a pair with its three distances and test outcomes,
and the re-selection of negatives from it without a search (`hnm mine --from-audit`)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from hnm_cli.choices import Fallback, Fill, Sampling
from hnm_cli.config import MineConfig
from hnm_cli.mining.numerics import c2_passes, in_sorted, rowdot64
from hnm_cli.mining.results import SOURCE_FALLBACK_NEXT, SOURCE_RULE, AuditRecord, Negative, Pair, PairResult
from hnm_cli.mining.rule_exact import Candidates
from hnm_cli.search import VectorSource


def emit_audit(
    audit: Callable[[AuditRecord], None],
    pair: Pair,
    c: Candidates,
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
    s_qd_x = rowdot64(np.broadcast_to(q, docs.shape), docs)
    s_pd_x = rowdot64(np.broadcast_to(p, docs.shape), docs)
    rows = np.concatenate([c.rows, extra, [pair.positive_row]])
    s_qd = np.concatenate([c.s_qd, s_qd_x, [s_qp]])
    s_pd = np.concatenate([c.s_pd, s_pd_x, [1.0]])
    order = np.lexsort((rows, -s_qd))
    excl = in_sorted(i * n + rows, excl_keys)
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
                c2=bool(c2_passes(s_qd[j : j + 1], s_pd[j : j + 1], c2_margin)[0]),
                excluded=bool(excl[j]),
                selected=row in chosen,
            )
        )


def select_from_audit(
    records: Iterable[Mapping[str, Any]],
    pair_ids: Sequence[tuple[str, str]],
    corpus_row: Mapping[str, int],
    query_row: Mapping[str, int],
    params: MineConfig,
    *,
    audited_c2_margin: float = 0.0,
) -> list[PairResult]:
    """Re-apply the rule to audited candidates: C1 and C2 and not excluded, plus `params`' score bounds and window.

    The audit holds the whole C1 region of every pair, so any `num_negatives` gives what a fresh search would.
    `max_score`/`min_score` bound sim(Q,D) = 1 - d(Q,D). C2 is the recorded outcome when `params.c2_margin`
    equals the audited run's, else recomputed from the distances. Fallback "next" (and `fill`) use the audited
    top `candidate_k` window; the caller applies a "random"/"bm25" fallback as in a normal run.

    Raises:
        KeyError: with the first (query id, positive id) pair that has no audited candidates.
    """
    by_pair: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for rec in records:
        by_pair.setdefault((rec["query_id"], rec["positive_id"]), []).append(rec)
    missing = [p for p in pair_ids if p not in by_pair]
    if missing:
        raise KeyError(missing[0])

    def in_bounds(rec: Mapping[str, Any]) -> bool:
        sim = 1.0 - rec["d_qd"]
        if params.max_score is not None and sim > params.max_score:
            return False
        return not (params.min_score is not None and sim < params.min_score)

    def c2(rec: Mapping[str, Any]) -> bool:
        if params.c2_margin == audited_c2_margin:
            return bool(rec["c2"])
        return bool(rec["d_pd"] - rec["d_qd"] > params.c2_margin)

    m = params.num_negatives
    need = params.range_min + m if params.range_max is None else params.range_max
    rng = np.random.default_rng(params.seed)
    results = []
    for q, d in pair_ids:
        recs = sorted(by_pair[(q, d)], key=lambda r: r["rank"])
        passing = [(r, SOURCE_RULE) for r in recs if r["c1"] and c2(r) and not r["excluded"] and in_bounds(r)]
        c1_region = [r for r in recs if r["c1"]]
        lacking = len(passing) < need if params.fill == Fill.SHORT else not passing
        if lacking and params.fallback == Fallback.NEXT:
            passing = [
                (r, SOURCE_RULE if r["c1"] else SOURCE_FALLBACK_NEXT)
                for r in recs
                if c2(r) and not r["excluded"] and r["doc_id"] != d and in_bounds(r)
            ]
        window = passing[params.range_min : need]
        if params.sampling_strategy == Sampling.RANDOM and len(window) > m:
            window = [window[j] for j in np.sort(rng.choice(len(window), size=m, replace=False))]
        # A fallback-next negative carries no rank, as in a fresh run (which does not count ranks outside C1).
        negs = [
            Negative(
                corpus_row[r["doc_id"]], source, r["rank"] if source == SOURCE_RULE else None,
                r["d_qd"], r["d_qp"], r["d_pd"],
            )
            for r, source in window[:m]
        ]  # fmt: skip
        results.append(
            PairResult(
                pair=Pair(query_row[q], corpus_row[d]),
                negatives=negs,
                c1_pass=len(c1_region),
                c2_fail=sum(1 for r in c1_region if not r["excluded"] and not r["c2"]),
                excluded=sum(1 for r in c1_region if r["excluded"]),
                examined=len(recs),
                fallback_used=any(n.source == SOURCE_FALLBACK_NEXT for n in negs),
            )
        )
    return results
