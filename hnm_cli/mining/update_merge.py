"""The exact merges of `hnm mine --update` (`mining.update` plans, these compute): for a pair the edit cannot
have changed, its earlier picks merged with the added documents give the rows of a cold run.

Why it is exact for the rule: whether a document passes for a pair depends only on three vectors (Q, PD, D), and
the pick is the `num_negatives` passing documents with the highest similarity (ties: lower row). If the pair's
query, positive and exclusions are unchanged and none of its picks was removed, documents that were there before
and lost can still not win, so the new picks are the best of (old picks + added documents that pass). Ranks
move with every document added above a pick (counted) or removed (recounted by a scan). Random draws are keyed
on (seed, query id, document id) (`sampling.sample_random`), so the same merge holds with "smallest key" for
"highest similarity". Everything else (a new pair, a changed query or positive, new exclusions, a lost pick,
a vector that moved although its text did not) is mined in full by `mine_negatives`.

Drift: a pair is reused only if its recorded distances are reproduced bit for bit by `sampling.fill_distances`
(`numerics.rowdot64`, the one function every strategy's distances come from, whatever batch or block a row
sat in). A pair whose query, positive or picks have other vectors than when it was mined (an encoder that
answers a text differently from one run to the next, a cache that was rebuilt) is mined again and counted as
drifted: the rows stay those of a cold run, and the stage says that drift cost work.

Top-k's merge (the default strategy) is `update_merge_topk`'s. `Previous`, `UpdateCounts` and `MergeInputs` are declared
here, where the merges read and count them, so the arrows go one way: `update` and `update_merge_topk` import this
module, never the reverse.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from hnm_cli.choices import Fallback, Fill
from hnm_cli.config import MineConfig
from hnm_cli.mining import rule_exact
from hnm_cli.mining.numerics import c2_passes, gather_dot64, make_negative, rowdot64
from hnm_cli.mining.results import (
    SOURCE_FALLBACK_NEXT,
    SOURCE_RANDOM,
    SOURCE_RULE,
    Excluded,
    Negative,
    Pair,
    PairResult,
    RankingHead,
)
from hnm_cli.mining.sampling import draw_keys, fill_distances
from hnm_cli.mining.strategies import Ids
from hnm_cli.search import VectorSource


@dataclass(frozen=True)
class Previous:
    """A pair's row from the earlier run, its negatives' `doc_row` already mapped to the new corpus rows, and
    (top-k) the head of its query's ranking then, mapped the same way with -1 where the document is gone
    (removed, or its text changed). Only a pair with a head can have lost picks (`picks_lost`, left out of
    `negatives`): the head says what ranked below them."""

    negatives: tuple[Negative, ...]
    head: RankingHead | None = None
    picks_lost: int = 0


@dataclass
class UpdateCounts:
    """What the update reused and what it recomputed, and why (stats.json and the manifest report it)."""

    pairs_reused: int = 0
    pairs_remined: int = 0  # = pairs_new + inputs_changed + drifted + remined_with_their_query, or all (in full)
    pairs_new: int = 0
    pairs_inputs_changed: int = 0
    pairs_drifted: int = 0  # unchanged texts, but a vector differed by a bit: mined in full to stay exact
    # top-k shares one list per query: a query is merged whole or mined whole (a sibling pair changed, or a removal
    # or a deeper list may bring a document from below what the earlier run listed)
    pairs_remined_with_their_query: int = 0
    pairs_changed_by_new_documents: int = 0
    pairs_changed_by_removed_documents: int = 0  # merged from their query's head after losing a pick
    ranks_recounted: int = 0
    documents_added: int = 0
    documents_removed_or_changed: int = 0
    recomputed_in_full: str | None = None  # why no pair could be reused (`unsupported`)

    def to_json(self) -> dict[str, Any]:
        """Plain dict for stats."""
        return dict(self.__dict__)


def _distances(negatives: Sequence[Negative]) -> list[tuple[float | None, float | None, float | None]]:
    return [(n.d_qd, n.d_qp, n.d_pd) for n in negatives]


# Pairs whose positives and earlier picks are read at once: one read per chunk instead of one per pair, and
# memory bounded by the chunk (at most 4 x 4096 rows with the default 3 negatives), not by the run.
CHUNK = 4096


class _Prefetched:
    """Rows of the corpus read once, served by corpus row number afterwards (the same float32 values)."""

    def __init__(self, corpus: VectorSource, rows: Sequence[int]) -> None:
        self.rows = np.unique(np.asarray(rows, dtype=np.int64))
        self.source = VectorSource([corpus.take(self.rows)])  # row k here = corpus row self.rows[k]

    @classmethod
    def of_pairs(
        cls, corpus: VectorSource, pairs: Sequence[Pair], previous: Sequence[Previous | None], idx: list[int]
    ) -> _Prefetched:
        """The positives and earlier picks of the pairs `idx`."""
        rows = [pairs[i].positive_row for i in idx]
        for i in idx:
            prev = previous[i]
            assert prev is not None
            rows += [n.doc_row for n in prev.negatives]
        return cls(corpus, rows)

    def local(self, rows: Sequence[int] | np.ndarray) -> np.ndarray:
        return np.searchsorted(self.rows, np.asarray(rows, dtype=np.int64))

    def take(self, rows: Sequence[int] | np.ndarray) -> np.ndarray:
        return self.source.take(self.local(rows))


def _in_chunks(
    corpus: VectorSource, pairs: Sequence[Pair], previous: Sequence[Previous | None], idx: list[int]
) -> Iterator[tuple[int, _Prefetched]]:
    """Each of `idx` with the prefetched rows of its chunk of `CHUNK` pairs."""
    for lo in range(0, len(idx), CHUNK):
        part = idx[lo : lo + CHUNK]
        near = _Prefetched.of_pairs(corpus, pairs, previous, part)
        for i in part:
            yield i, near


def sims_to_added(vector: np.ndarray, docs: np.ndarray) -> np.ndarray:
    """float64 similarities of one vector to every row of `docs` (the added documents), in the search's arithmetic."""
    n = len(docs)
    return gather_dot64(np.broadcast_to(vector, (n, len(vector))), np.arange(n), docs, np.arange(n))


def not_drifted(
    query_vecs: np.ndarray,
    corpus: VectorSource,
    pairs: Sequence[Pair],
    previous: Sequence[Previous | None],
    candidates: list[int],
) -> list[int]:
    """The candidates whose recorded distances are reproduced bit for bit; the others had a vector move since the
    earlier run (drift).

    Recomputed by `fill_distances`, the arithmetic every strategy records its distances with (`rowdot64` of the
    stored float32 vectors, whatever row or batch they sit in), so an unchanged pair compares equal. A pair
    that got no negative has no distance to compare and is never drift.
    """
    near = _Prefetched.of_pairs(corpus, pairs, previous, candidates)
    probe = []
    for i in candidates:
        prev = previous[i]
        assert prev is not None
        local = near.local([pairs[i].positive_row, *(n.doc_row for n in prev.negatives)])
        negs = [replace(n, doc_row=int(r)) for n, r in zip(prev.negatives, local[1:], strict=True)]
        probe.append(PairResult(Pair(pairs[i].query_row, int(local[0])), negs))
    now = fill_distances(query_vecs, near.source, probe)
    return [
        i
        for i, r in zip(candidates, now, strict=True)
        if _distances(r.negatives) == _distances(previous[i].negatives)  # type: ignore[union-attr]
    ]


@dataclass(frozen=True, eq=False)
class MergeInputs:
    """What every merge reads, gathered once by `update.update_negatives`: this run's pairs and vectors, the earlier
    run's rows, which pairs may be reused, and what the edit did to the corpus."""

    query_vecs: np.ndarray  # every query row, as `mine_negatives` gets them
    qv: np.ndarray  # pair i's query vector at row i (float32, contiguous)
    corpus: VectorSource
    pairs: Sequence[Pair]
    excluded: Excluded
    params: MineConfig
    previous: Sequence[Previous | None]
    reuse: list[int]  # the pairs the plan and the drift check left to merge, by index
    added: np.ndarray  # corpus rows of the documents added (or changed) since the earlier run
    removed_any: bool  # whether any document was removed (or changed) since
    counts: UpdateCounts  # what the merges count, filled in place


def merge_rule(inp: MergeInputs) -> dict[int, PairResult]:
    """The rule's rows of the pairs `reuse`: each earlier pick list merged with the `added` documents that pass,
    ranks moved by the added documents above a pick or, after a removal, recounted by a scan; by pair index."""
    qv, corpus, pairs, previous = inp.qv, inp.corpus, inp.pairs, inp.previous
    excluded, params, added, counts = inp.excluded, inp.params, inp.added, inp.counts
    m = params.num_negatives
    need = m  # top sampling from position 0: the window's first m (`unsupported` refuses the rest)
    margin = params.c2_margin
    out: dict[int, PairResult] = {}
    recount: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    docs_added = corpus.take(added) if len(added) else None
    for i, near in _in_chunks(corpus, pairs, previous, inp.reuse):
        prev = previous[i]
        assert prev is not None
        pair = pairs[i]
        pd = near.take([pair.positive_row])[0]
        s_qp = float(rowdot64(qv[i][None, :], pd[None, :])[0])
        old = list(prev.negatives)
        rows_old = np.array([n.doc_row for n in old], dtype=np.int64)
        # The picks' similarities recomputed, not recovered as 1 - d_qd: that loses the last bit, and a pick would
        # then count itself among the documents above it when its rank is recounted.
        s_old = rowdot64(np.broadcast_to(qv[i], (len(old), qv.shape[1])), near.take(rows_old)) if old else np.empty(0)
        cand_rows, cand_s, cand_pd = rows_old, s_old, np.array([1.0 - float(n.d_pd) for n in old if n.d_pd is not None])
        fresh = np.empty(0, dtype=np.int64)
        if docs_added is not None:
            s_a, s_ap = sims_to_added(qv[i], docs_added), sims_to_added(pd, docs_added)
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
        if rule_negs and (inp.removed_any or new_rule):
            recount[i] = (
                np.array([n.doc_row for n in rule_negs], dtype=np.int64),
                np.array([exact_s[n.doc_row] for n in rule_negs]),
            )
        elif rule_negs and docs_added is not None:
            # Added documents only: a pick moves down by the number of them ranked above it (ties: lower row);
            # `s_a` are this pair's similarities to them, computed above.
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


def merge_random(inp: MergeInputs, ids: Ids) -> dict[int, PairResult]:
    """Random rows of the pairs `reuse`: the smallest draw keys among the earlier picks and the `added` documents
    not excluded, with their distances filled; by pair index."""
    pairs, excluded, params, previous, reuse = inp.pairs, inp.excluded, inp.params, inp.previous, inp.reuse
    doc_keys, query_keys = ids.keys()
    out: dict[int, PairResult] = {}
    for i in reuse:
        prev = previous[i]
        assert prev is not None
        pair = pairs[i]
        keys = draw_keys(params.seed, query_keys[pair.query_row], doc_keys)
        banned = set(excluded.get(pair.query_row, ())) | {pair.positive_row}
        fresh = np.array([r for r in inp.added if int(r) not in banned], dtype=np.int64)
        old_rows = np.array([n.doc_row for n in prev.negatives], dtype=np.int64)
        cand = np.concatenate([old_rows, fresh])
        order = np.lexsort((cand, keys[cand]))[: params.num_negatives]
        chosen_rows = [int(cand[j]) for j in order]
        by_row = {n.doc_row: n for n in prev.negatives}
        if any(r not in by_row for r in chosen_rows):
            inp.counts.pairs_changed_by_new_documents += 1
        negs = [by_row.get(r) or Negative(r, SOURCE_RANDOM, None, None, None, None) for r in chosen_rows]
        out[i] = PairResult(pair, negs)
    filled = fill_distances(inp.query_vecs, inp.corpus, [out[i] for i in reuse])
    return dict(zip(reuse, filled, strict=True))
