"""Top-k's exact merge for `hnm mine --update` (the default strategy): a query whose pairs the edit cannot have
changed gets the rows of a cold run from its earlier picks and the added documents, without a search.

Why it is exact ("top" sampling from position 0, `update.unsupported` refuses the rest): whether a document is
valid for a query (not a positive or excluded, through the margins and score bounds) depends only on its own
similarity and the query's lowest positive similarity, and the picks are the first `num_negatives` valid documents
of the query's top-`k` list (ties: lower row). Top-k shares one list per query, so a query is merged whole or left
to be mined whole.

Two paths, by what the earlier run kept:

- **With the head of the query's ranking** (`Previous.head`, what a cold run listed): the head less the documents
  gone since is a prefix of today's ranking of the documents that stayed, and an added document joins it when it
  ranks above the head's last document. So that prefix, cut at `k`, lists today's first documents exactly: the
  picks are its first valid ones and the ranks their positions, with no search and no rank recount. When documents
  were removed the prefix can be shorter than `k`; then the query is merged only if it holds all `num_negatives`
  picks (otherwise the next one could lie below it, unseen), and mined in full if not.
- **Without a head** (an artifact mined before heads were kept, or documents that changed order, where ties by row
  can flip): with no pick removed, a document that was there before and lost still ranks below the picks, so the
  new picks are the best of (old picks + valid added documents), kept while their rank is within `k`. Ranks move
  with every added document above (counted) or, after a removal, are recounted by a scan. A query whose earlier
  list was short of picks is merged only when nothing was removed and the list did not get deeper.

The rule's and random's merges, the drift check and what both count (`Previous`, `UpdateCounts`) are
`update_merge`'s; `update` plans which queries come here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from hnm_cli.config import MineConfig
from hnm_cli.mining import rule_exact
from hnm_cli.mining.numerics import make_negative, rowdot64
from hnm_cli.mining.results import SOURCE_TOPK, Excluded, Negative, Pair, PairResult, RankingHead
from hnm_cli.mining.topk import topk_filters
from hnm_cli.mining.update_merge import MergeInputs, Previous, UpdateCounts, sims_to_added
from hnm_cli.search import VectorSource


@dataclass(frozen=True)
class TopkDepth:
    """How deep top-k looked, before and now: its window (``range_max``) and its list (`mine_topk`'s ``k``)."""

    window: int  # the first `window` valid candidates of the list form the window (resolved range_max)
    k_now: int  # this run's list length: window + most positives of a query, at most the corpus size
    k_before: int  # the earlier run's list length, from its pairs and corpus size


@dataclass(frozen=True)
class _Query:
    """One query's merge inputs: its pairs (by index), what the earlier run gave them, and today's similarities."""

    idx: list[int]
    previous: Previous  # its first pair's (every pair of a query shares its picks and head)
    qv: np.ndarray
    positives: np.ndarray  # its pairs' positive vectors, in pair order
    s_qp: np.ndarray  # and their similarities to the query
    ref: float  # the lowest of them: the ceiling's reference
    banned: np.ndarray  # rows never picked: its positives and exclusions
    s_added: np.ndarray  # float64 similarities to the added documents, in `added` order

    @property
    def earlier_rows(self) -> list[int]:
        return [n.doc_row for n in self.previous.negatives]


@dataclass
class _Picks:
    """A query's candidate picks in rank order, their ranks (None: to be recounted) and similarities."""

    rows: list[int]
    ranks: list[int | None]
    sims: np.ndarray


class _Drift:
    """A head whose last document no longer scores as recorded: a vector moved under an unchanged text."""


_DRIFT = _Drift()


def _earlier(previous: Sequence[Previous | None], i: int) -> tuple[Negative, ...]:
    prev = previous[i]
    assert prev is not None, "only pairs with an earlier row are merged"
    return prev.negatives


def _passes_filters(s: np.ndarray, ref: float, params: MineConfig) -> np.ndarray:
    """Which similarities every top-k filter keeps (`topk.topk_filters`, the search's own test)."""
    keep = np.ones(len(s), dtype=bool)
    for removes in topk_filters(s, ref, params.absolute_margin, params.relative_margin,
                                params.max_score, params.min_score).values():  # fmt: skip
        if removes is not None:
            keep &= ~removes
    return keep


def _query_rows(
    pairs: Sequence[Pair],
    query: _Query,
    picks: _Picks,
    corpus: VectorSource,
    examined: int,
    head: RankingHead | None,
) -> dict[int, PairResult]:
    """The rows of a query's pairs from its picks (all with a rank): one list per query, each pair with its own
    s(Q,PD) (the one computed for the ceiling's reference) and s(PD,D)."""
    n = len(picks.rows)
    docs = corpus.take(np.array(picks.rows, dtype=np.int64)) if n else np.empty((0, corpus.dim), dtype=np.float32)
    out: dict[int, PairResult] = {}
    for i, pd, s_qp_i in zip(query.idx, query.positives, query.s_qp, strict=True):
        s_pd = rowdot64(np.broadcast_to(pd, (n, corpus.dim)), docs) if n else np.empty(0)
        negs = [
            make_negative(row, SOURCE_TOPK, rank, s, s_qp_i, spd)
            for row, rank, s, spd in zip(picks.rows, picks.ranks, picks.sims, s_pd, strict=True)
        ]
        out[i] = PairResult(pairs[i], negs, examined=examined, head=head)
    return out


def _listed_now(
    qv1: np.ndarray, corpus: VectorSource, head: RankingHead, added: np.ndarray, s_a: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray, bool] | _Drift | None:
    """Today's first documents of a query's ranking from its earlier head: (rows, float64 similarities, whether
    they are all of the first `k`), `_DRIFT` when the head's vectors moved, None when a tie cannot be placed.

    The head's documents that stayed keep their order (`reordered` is handled by the caller), so with the added
    documents that rank above the head's last one they are a prefix of today's ranking.
    """
    here = head.rows >= 0
    rows = head.rows[here]
    s = rowdot64(np.broadcast_to(qv1, (len(rows), len(qv1))), corpus.take(rows)) if len(rows) else np.empty(0)
    last = int(head.rows[-1]) if len(head.rows) else -1
    # The search wrote the head in (similarity, row) order with the arithmetic used here: any other order, or a
    # last document that scores otherwise, means a vector moved.
    if (last >= 0 and s[-1] != head.floor) or np.any((s[1:] > s[:-1]) | ((s[1:] == s[:-1]) & (rows[1:] < rows[:-1]))):
        return _DRIFT
    if len(added):
        if last < 0 and np.any(s_a == head.floor):
            return None
        above = (s_a > head.floor) | ((s_a == head.floor) & (added < last))
        rows = np.concatenate([rows, added[above]])
        s = np.concatenate([s, s_a[above]])
        order = np.lexsort((rows, -s))
        rows, s = rows[order], s[order]
    return rows[:k], s[:k], len(rows) >= k


def _merge_from_head(
    pairs: Sequence[Pair],
    query: _Query,
    head: RankingHead,
    corpus: VectorSource,
    added: np.ndarray,
    params: MineConfig,
    depth: TopkDepth,
    counts: UpdateCounts,
) -> dict[int, PairResult] | None:
    """A query's rows from today's prefix of its ranking (`_listed_now`); None when it must be mined in full."""
    listed = _listed_now(query.qv, corpus, head, added, query.s_added, depth.k_now)
    if listed is None:
        return None  # a tie with a document that is gone: where the added one ranks is not known
    if isinstance(listed, _Drift):
        counts.pairs_drifted += len(query.idx)
        return None
    rows_now, s_now, complete = listed
    valid = ~np.isin(rows_now, query.banned) & _passes_filters(s_now, query.ref, params)
    window = np.flatnonzero(valid)[: depth.window]
    chosen = window[: params.num_negatives]
    if not complete and len(chosen) < params.num_negatives:
        return None  # the next pick may lie below what the earlier run listed
    old = set(query.earlier_rows)
    if query.previous.picks_lost:
        counts.pairs_changed_by_removed_documents += len(query.idx)
    elif any(int(rows_now[j]) not in old for j in chosen):
        counts.pairs_changed_by_new_documents += len(query.idx)
    new_head = RankingHead(rows_now, float(s_now[-1])) if len(rows_now) else None
    picks = _Picks([int(r) for r in rows_now[chosen]], [int(j) + 1 for j in chosen], s_now[chosen])
    return _query_rows(pairs, query, picks, corpus, len(window), new_head)


def _picks_without_head(
    query: _Query, corpus: VectorSource, added: np.ndarray, params: MineConfig, removed_any: bool
) -> _Picks:
    """A query's best `num_negatives` of (earlier picks + valid added documents), in rank order; a rank is None
    where it must be recounted by a scan (a new pick, or any pick after a removal)."""
    earlier = query.previous.negatives
    rows_old = np.array(query.earlier_rows, dtype=np.int64)
    dim = len(query.qv)
    s_old = (
        rowdot64(np.broadcast_to(query.qv, (len(rows_old), dim)), corpus.take(rows_old))
        if len(rows_old)
        else np.empty(0)
    )
    cand_rows, cand_s = rows_old, s_old
    s_a = query.s_added
    if len(added):
        ok = ~np.isin(added, query.banned) & _passes_filters(s_a, query.ref, params)
        cand_rows = np.concatenate([cand_rows, added[ok]])
        cand_s = np.concatenate([cand_s, s_a[ok]])
    order = np.lexsort((cand_rows, -cand_s))[: params.num_negatives]  # none below the first m can be picked
    by_row = {n.doc_row: n for n in earlier}
    rows = [int(cand_rows[j]) for j in order]
    sims = np.array([float(cand_s[j]) for j in order])
    ranks: list[int | None] = []
    for row, s in zip(rows, sims, strict=True):
        old_rank = by_row[row].rank if row in by_row else None
        if old_rank is None or removed_any:
            ranks.append(None)
        else:
            # Added documents only: a pick moves down by the number of them ranked above it (ties: lower row).
            ranks.append(int(old_rank) + int(np.count_nonzero((s_a > s) | ((s_a == s) & (added < row)))))
    return _Picks(rows, ranks, sims)


def _query_inputs(
    qv: np.ndarray,
    corpus: VectorSource,
    pairs: Sequence[Pair],
    idx: list[int],
    excluded: Excluded,
    previous: Previous,
    docs_added: np.ndarray | None,
) -> _Query:
    qv1 = qv[idx[0]]
    pos_rows = np.array([pairs[i].positive_row for i in idx], dtype=np.int64)
    positives = corpus.take(pos_rows)
    s_qp = rowdot64(np.broadcast_to(qv1, (len(idx), qv.shape[1])), positives)
    banned = set(excluded.get(pairs[idx[0]].query_row, ())) | set(pos_rows.tolist())
    return _Query(
        idx=idx,
        previous=previous,
        qv=qv1,
        positives=positives,
        s_qp=s_qp,
        ref=float(s_qp.min()),
        banned=np.fromiter(banned, np.int64, len(banned)),
        s_added=sims_to_added(qv1, docs_added) if docs_added is not None else np.empty(0),
    )


def merge_topk(inp: MergeInputs, *, reordered: bool, depth: TopkDepth) -> dict[int, PairResult]:
    """Top-k's rows of the queries whose pairs are all in `reuse`, by pair index; a query it cannot merge exactly is
    left out (the caller mines it in full). Why this is exact: the module's docstring.

    `reordered`: documents changed order since the earlier run (its heads cannot be trusted); `depth`: how deep
    top-k looked then and now."""
    qv, corpus, pairs, previous = inp.qv, inp.corpus, inp.pairs, inp.previous
    excluded, params, added, counts = inp.excluded, inp.params, inp.added, inp.counts
    out: dict[int, PairResult] = {}
    by_query: dict[int, list[int]] = {}
    for i, pair in enumerate(pairs):
        by_query.setdefault(pair.query_row, []).append(i)
    reusable = set(inp.reuse)
    docs_added = corpus.take(added) if len(added) else None
    without_head: dict[int, tuple[_Query, _Picks]] = {}  # by query row
    for q_row, idx in by_query.items():
        if not all(i in reusable for i in idx):
            continue
        old = [n.doc_row for n in _earlier(previous, idx[0])]
        if any([n.doc_row for n in _earlier(previous, i)] != old for i in idx):
            continue  # every pair of a query shares its picks; anything else was not written by top-k
        prev = previous[idx[0]]
        assert prev is not None
        head = None if reordered else prev.head
        if head is None:
            short = len(old) < params.num_negatives
            if prev.picks_lost or (short and (inp.removed_any or depth.k_now > depth.k_before)):
                continue
        query = _query_inputs(qv, corpus, pairs, idx, excluded, prev, docs_added)
        if head is not None:
            out.update(_merge_from_head(pairs, query, head, corpus, added, params, depth, counts) or {})
        else:
            without_head[q_row] = (query, _picks_without_head(query, corpus, added, params, inp.removed_any))
    out.update(_rows_without_head(qv, corpus, pairs, without_head, params, depth, counts))
    return out


def _rows_without_head(
    qv: np.ndarray,
    corpus: VectorSource,
    pairs: Sequence[Pair],
    merged: dict[int, tuple[_Query, _Picks]],
    params: MineConfig,
    depth: TopkDepth,
    counts: UpdateCounts,
) -> dict[int, PairResult]:
    """The rows of the queries merged without a head: the ranks a merge could not move are recounted in one scan
    for all of them, then each list is cut where its ranks pass `k`."""
    recount = {
        q.idx[0]: (np.array([p.rows[j] for j in todo], dtype=np.int64), p.sims[todo])
        for q, p in merged.values()
        if (todo := [j for j, r in enumerate(p.ranks) if r is None])
    }
    if recount:
        counts.ranks_recounted += sum(len(merged[pairs[i].query_row][0].idx) for i in recount)
        for i, rk in rule_exact.count_ranks(qv, recount, corpus, params.block_size, params.query_block).items():
            p = merged[pairs[i].query_row][1]
            it = iter(rk)
            p.ranks = [int(next(it)) if r is None else r for r in p.ranks]
    out: dict[int, PairResult] = {}
    for q, p in merged.values():
        # The list holds the first k documents: a candidate ranked below it is not there in a cold run (ranks grow
        # along `rows`, so the kept ones are a prefix).
        ranks = [r for r in p.ranks if r is not None and r <= depth.k_now]
        kept = len(ranks)
        if not set(p.rows[:kept]) <= set(q.earlier_rows):
            counts.pairs_changed_by_new_documents += len(q.idx)
        ranked = _Picks(p.rows[:kept], list(ranks), p.sims[:kept])
        out.update(_query_rows(pairs, q, ranked, corpus, len(p.rows), None))
    return out
