"""Incremental mining (`hnm mine --update`): re-mine only what an edit of the corpus, queries or qrels can have
changed, with rows byte-identical to a full run on the edited data.

Why it is exact for the rule: whether a document passes for a pair depends only on three vectors (Q, PD, D), and
the pick is the `num_negatives` passing documents with the highest similarity (ties: lower row). If the pair's
query, positive and exclusions are unchanged and none of its picks was removed, documents that were there before
and lost can still not win, so the new picks are the best of (old picks + added documents that pass). Ranks
move with every document added above a pick (counted) or removed (recounted by a scan). Random draws are keyed
on (seed, query id, document id) (`sampling.sample_random`), so the same merge holds with "smallest key" for
"highest similarity". Everything else (a new pair, a changed query or positive, new exclusions, a lost pick,
vectors that drifted by a bit) is mined in full by `mine_negatives`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from hnm_cli.choices import Fallback, Fill, Sampling, Strategy
from hnm_cli.config import MineConfig
from hnm_cli.mining import rule_exact
from hnm_cli.mining.numerics import c2_passes, gather_dot64, make_negative, rowdot64
from hnm_cli.mining.results import (
    SOURCE_FALLBACK_NEXT,
    SOURCE_RANDOM,
    SOURCE_RULE,
    Excluded,
    MiningStats,
    Negative,
    Pair,
    PairResult,
)
from hnm_cli.mining.sampling import draw_keys, fill_distances
from hnm_cli.mining.strategies import Ids, Texts, mine_negatives, restat
from hnm_cli.search import HnswIndex, VectorSource


@dataclass(frozen=True)
class Previous:
    """A pair's row from the earlier run, its negatives' `doc_row` already mapped to the new corpus rows."""

    negatives: tuple[Negative, ...]


@dataclass
class UpdateCounts:
    """What the update reused and what it recomputed (stats.json and the manifest report it)."""

    pairs_reused: int = 0
    pairs_remined: int = 0
    pairs_drifted: int = 0  # reusable, but a vector differed by a bit: mined in full to stay exact
    pairs_changed_by_new_documents: int = 0
    ranks_recounted: int = 0
    documents_added: int = 0

    def to_json(self) -> dict[str, int]:
        """Plain dict for stats."""
        return dict(self.__dict__)


def unsupported(params: MineConfig) -> str | None:
    """Why `params` cannot be updated incrementally (then every pair is mined in full), or None."""
    if params.strategy == Strategy.TOPK:
        return "topk shares one candidate window per query, which every new document can move"
    if params.strategy == Strategy.BM25 or params.fallback == Fallback.BM25:
        return "BM25's term statistics change with the corpus"
    if params.strategy == Strategy.RULE:
        if params.sampling_strategy != Sampling.TOP or params.range_min:
            return "a sampled or offset window of the rule is not a plain top-k"
        if params.fallback == Fallback.RANDOM:
            return "the rule's random fallback"
    return None


def update_negatives(
    query_vecs: np.ndarray,
    corpus: VectorSource,
    pairs: Sequence[Pair],
    excluded: Excluded,
    params: MineConfig,
    previous: Sequence[Previous | None],
    added_rows: np.ndarray,
    *,
    removed_any: bool,
    ids: Ids,
    index: HnswIndex | None = None,
    texts: Texts | None = None,
) -> tuple[list[PairResult], MiningStats, UpdateCounts]:
    """The results a full `mine_negatives` run would give, computing only what the edit can have changed.

    Args:
        query_vecs, corpus, pairs, excluded, params, index, texts, ids: as for `mine_negatives`.
        previous: per pair, its earlier row (None: mine it in full).
        added_rows: corpus rows of documents that are new or whose text changed.
        removed_any: documents were removed or changed (ranks of kept picks are recounted), or reordered.

    Returns:
        (results, stats, counts). Search counters of reused pairs (C1 region sizes, rejections) are not
        recomputed: stats count what this run examined.
    """
    counts = UpdateCounts(documents_added=len(added_rows))
    if unsupported(params) is not None:
        everything, stats = mine_negatives(
            query_vecs, corpus, pairs, excluded, params, index=index, texts=texts, ids=ids
        )
        counts.pairs_remined = len(pairs)
        return everything, stats, counts
    qv = np.ascontiguousarray(query_vecs[[p.query_row for p in pairs]], dtype=np.float32)
    reuse = [i for i, prev in enumerate(previous) if prev is not None and not _drifted(qv[i], pairs[i], prev, corpus)]
    counts.pairs_drifted = sum(1 for p in previous if p is not None) - len(reuse)
    results: list[PairResult | None] = [None] * len(pairs)
    if reuse:
        merged = (
            _merge_rule(qv, corpus, pairs, excluded, params, previous, reuse, added_rows, removed_any, counts)
            if params.strategy == Strategy.RULE
            else _merge_random(corpus, pairs, excluded, params, previous, reuse, added_rows, ids, query_vecs, counts)
        )
        for i, r in merged.items():
            results[i] = r
    full = [i for i, r in enumerate(results) if r is None]
    if full:
        mined, _ = mine_negatives(
            query_vecs, corpus, [pairs[i] for i in full], excluded, params, index=index, texts=texts, ids=ids
        )
        for i, r in zip(full, mined, strict=True):
            results[i] = r
    counts.pairs_reused = len(pairs) - len(full)
    counts.pairs_remined = len(full)
    final = [r for r in results if r is not None]
    return final, restat(final, None, params.num_negatives), counts


def _drifted(q: np.ndarray, pair: Pair, prev: Previous, corpus: VectorSource) -> bool:
    """True when a vector moved since the earlier run: its recorded distances would not be reproduced."""
    if not prev.negatives:
        return False
    rows = np.array([n.doc_row for n in prev.negatives], dtype=np.int64)
    docs = corpus.take(rows)
    pd = corpus.take([pair.positive_row])
    s_qd = rowdot64(np.broadcast_to(q, docs.shape), docs)
    s_pd = rowdot64(np.broadcast_to(pd[0], docs.shape), docs)
    s_qp = float(rowdot64(q[None, :], pd)[0])
    for n, a, b in zip(prev.negatives, s_qd, s_pd, strict=True):
        if n.d_qd is not None and (n.d_qd, n.d_qp, n.d_pd) != (float(1.0 - a), float(1.0 - s_qp), float(1.0 - b)):
            return True
    return False


def _merge_rule(
    qv: np.ndarray,
    corpus: VectorSource,
    pairs: Sequence[Pair],
    excluded: Excluded,
    params: MineConfig,
    previous: Sequence[Previous | None],
    reuse: list[int],
    added: np.ndarray,
    removed_any: bool,
    counts: UpdateCounts,
) -> dict[int, PairResult]:
    m = params.num_negatives
    need = m  # top sampling from position 0: the window's first m (`unsupported` refuses the rest)
    margin = params.c2_margin
    out: dict[int, PairResult] = {}
    recount: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    docs_added = corpus.take(added) if len(added) else None
    for i in reuse:
        prev = previous[i]
        assert prev is not None
        pair = pairs[i]
        pd = corpus.take([pair.positive_row])[0]
        s_qp = float(rowdot64(qv[i][None, :], pd[None, :])[0])
        old = list(prev.negatives)
        rows_old = np.array([n.doc_row for n in old], dtype=np.int64)
        # The picks' similarities recomputed, not recovered as 1 - d_qd: that loses the last bit, and a pick would
        # then count itself among the documents above it when its rank is recounted.
        s_old = rowdot64(np.broadcast_to(qv[i], (len(old), qv.shape[1])), corpus.take(rows_old)) if old else np.empty(0)
        cand_rows, cand_s, cand_pd = rows_old, s_old, np.array([1.0 - float(n.d_pd) for n in old if n.d_pd is not None])
        fresh = np.empty(0, dtype=np.int64)
        if docs_added is not None:
            n_add = len(added)
            s_a = gather_dot64(
                np.broadcast_to(qv[i], (n_add, qv.shape[1])), np.arange(n_add), docs_added, np.arange(n_add)
            )
            s_ap = gather_dot64(
                np.broadcast_to(pd, (n_add, pd.shape[0])), np.arange(n_add), docs_added, np.arange(n_add)
            )
            banned = set(excluded.get(pair.query_row, ())) | {pair.positive_row}
            ok = c2_passes(s_a, s_ap, margin) & ~np.isin(added, np.fromiter(banned, np.int64, len(banned)))
            c1 = s_a > s_qp
            had_rule = any(n.source == SOURCE_RULE for n in old)
            if params.fallback == Fallback.NONE or (params.fill == Fill.EMPTY and had_rule):
                take = ok & c1
            elif params.fill == Fill.EMPTY and (ok & c1).any():
                # The pair had no document above its positive; now it does: the rule's own picks replace the fill.
                take = ok & c1
                cand_rows, cand_s, cand_pd = np.empty(0, np.int64), np.empty(0), np.empty(0)
            else:
                take = ok
            fresh = added[take]
            cand_rows = np.concatenate([cand_rows, fresh])
            cand_s = np.concatenate([cand_s, s_a[take]])
            cand_pd = np.concatenate([cand_pd, s_ap[take]])
        order = np.lexsort((cand_rows, -cand_s))[:need]
        exact_s = {int(cand_rows[j]): float(cand_s[j]) for j in order}
        chosen = []
        by_row = {n.doc_row: n for n in old}
        for j in order:
            row = int(cand_rows[j])
            source = SOURCE_RULE if cand_s[j] > s_qp else SOURCE_FALLBACK_NEXT
            if row in by_row:
                chosen.append(replace(by_row[row], source=source))
            else:
                chosen.append(make_negative(row, source, None, cand_s[j], s_qp, cand_pd[j]))
        if set(int(r) for r in fresh) & {n.doc_row for n in chosen}:
            counts.pairs_changed_by_new_documents += 1
        rule_negs = [n for n in chosen if n.source == SOURCE_RULE]
        new_rule = [n for n in rule_negs if n.doc_row not in by_row or by_row[n.doc_row].rank is None]
        if rule_negs and (removed_any or new_rule):
            recount[i] = (
                np.array([n.doc_row for n in rule_negs], dtype=np.int64),
                np.array([exact_s[n.doc_row] for n in rule_negs]),
            )
        elif rule_negs and docs_added is not None:
            # Added documents only: a pick moves down by the number of them ranked above it (ties: lower row).
            n_add = len(added)
            s_a = gather_dot64(
                np.broadcast_to(qv[i], (n_add, qv.shape[1])), np.arange(n_add), docs_added, np.arange(n_add)
            )
            chosen = [
                replace(n, rank=int(n.rank) + int(np.count_nonzero(
                    (s_a > exact_s[n.doc_row]) | ((s_a == exact_s[n.doc_row]) & (added < n.doc_row)))))
                if n.source == SOURCE_RULE and n.rank is not None else n
                for n in chosen
            ]  # fmt: skip
        out[i] = PairResult(
            pair, chosen, fallback_used=any(n.source == SOURCE_FALLBACK_NEXT for n in chosen), examined=len(cand_rows)
        )
    if recount:
        counts.ranks_recounted = len(recount)
        ranks = rule_exact.count_ranks(qv, recount, corpus, params.block_size, params.query_block)
        for i, rk in ranks.items():
            it = iter(rk)
            out[i].negatives = [
                replace(n, rank=int(next(it))) if n.source == SOURCE_RULE else n for n in out[i].negatives
            ]
    return out


def _merge_random(
    corpus: VectorSource,
    pairs: Sequence[Pair],
    excluded: Excluded,
    params: MineConfig,
    previous: Sequence[Previous | None],
    reuse: list[int],
    added: np.ndarray,
    ids: Ids,
    query_vecs: np.ndarray,
    counts: UpdateCounts,
) -> dict[int, PairResult]:
    doc_keys, query_keys = ids.keys()
    out: dict[int, PairResult] = {}
    for i in reuse:
        prev = previous[i]
        assert prev is not None
        pair = pairs[i]
        keys = draw_keys(params.seed, query_keys[pair.query_row], doc_keys)
        banned = set(excluded.get(pair.query_row, ())) | {pair.positive_row}
        fresh = np.array([r for r in added if int(r) not in banned], dtype=np.int64)
        old_rows = np.array([n.doc_row for n in prev.negatives], dtype=np.int64)
        cand = np.concatenate([old_rows, fresh])
        order = np.lexsort((cand, keys[cand]))[: params.num_negatives]
        chosen_rows = [int(cand[j]) for j in order]
        by_row = {n.doc_row: n for n in prev.negatives}
        if any(r not in by_row for r in chosen_rows):
            counts.pairs_changed_by_new_documents += 1
        negs = [by_row.get(r) or Negative(r, SOURCE_RANDOM, None, None, None, None) for r in chosen_rows]
        out[i] = PairResult(pair, negs)
    filled = fill_distances(query_vecs, corpus, [out[i] for i in reuse])
    return dict(zip(reuse, filled, strict=True))
