"""`mine_negatives`: the one entry point of mining. Every strategy and every fallback, on plain inputs.

Inputs are in-memory or memory-mapped vectors and row indices (`Pair`), never paths: the `hnm mine` stage, the
Python API and the benchmark all call this one function. Strategies: the paper's rule (with hnm's window, fill
and margin options), dense top-k with sentence-transformers' knobs, seeded random, BM25. Fallbacks for pairs a
strategy leaves empty: "next" (inside the rule), "random", "bm25".
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np

from hnm_cli.choices import Fallback, Strategy
from hnm_cli.config import MineConfig
from hnm_cli.mining import controls
from hnm_cli.mining.blocks import BlockRunner, mine_in_blocks
from hnm_cli.mining.controls import Members
from hnm_cli.mining.results import AuditRecord, Excluded, MiningStats, Negative, Pair, PairResult
from hnm_cli.mining.rule import mine_rule
from hnm_cli.mining.sampling import fill_distances, id_keys, sample_random
from hnm_cli.mining.topk import mine_topk
from hnm_cli.search import HnswIndex, VectorSource

SOURCE_BM25 = Strategy.BM25.value


@dataclass(frozen=True)
class Texts:
    """What BM25 reads: corpus texts in corpus-row order, query texts in query-row order."""

    corpus: Sequence[str]
    queries: Sequence[str]


@dataclass(frozen=True)
class Ids:
    """Corpus ids in corpus-row order and query ids in query-row order: random draws are keyed on them."""

    corpus: Sequence[str]
    queries: Sequence[str]

    def keys(self) -> tuple[np.ndarray, np.ndarray]:
        """(document keys, query keys) for `sampling.sample_random`."""
        return id_keys(self.corpus), id_keys(self.queries)


def mine_negatives(
    query_vecs: np.ndarray,
    corpus: VectorSource,
    pairs: Sequence[Pair],
    excluded: Excluded,
    params: MineConfig,
    *,
    index: HnswIndex | None = None,
    texts: Texts | None = None,
    ids: Ids | None = None,
    audit: Callable[[AuditRecord], None] | None = None,
    runner: BlockRunner | None = None,
    members: Members | None = None,
) -> tuple[list[PairResult], MiningStats]:
    """Mine negatives for every pair with `params.strategy`, then its fallback; results in pair order.

    Args:
        query_vecs: [nq, dim] float32 L2-normalised query vectors; `Pair.query_row` indexes them.
        corpus: corpus vectors; `Pair.positive_row` and the results index them.
        pairs: the labelled (query, positive) pairs.
        excluded: per query row, corpus rows that may never be negatives (`exclusions.build_exclusions`).
        params: the mining knobs (`MineConfig`: strategy, num_negatives, window, fallback, seed, ...).
        index: an hnsw index over `corpus` for the rule and top-k (exact search when None).
        texts: needed by the bm25 strategy and fallback.
        ids: the ids random draws are keyed on (stable under corpus edits); None: row numbers stand in.
        audit: called with every examined candidate of the rule (strategy "rule" only).
        runner: an executor (`hnm_cli.executors`) that mines the rule's and top-k's exact search in blocks of
            pairs on its workers (`mining.blocks`): the same results, bit for bit. None, an hnsw ``index``, and
            the random and BM25 strategies (no corpus scan) run here. Fallbacks always run here, after the merge.
        members: the ensemble members' own vectors (`controls.Members`): needed by ``params.vote``, and used for
            the members' disagreement in the false-negative-risk figures.

    With a false-negative control (`controls.active`: a vote, a random mix, or margins on the rule), the strategy
    first mines a ranked pool of ``candidate_k`` candidates per pair, which `controls.apply_controls` guards,
    windows and mixes; a "random"/"bm25" fallback then fills the pairs left empty.

    Returns:
        (results, stats); stats are recomputed from the final results, keeping the search counters.

    Raises:
        ValueError: bad shapes, rows or argument combinations (the stage validates user input first).
    """
    p = params
    if controls.active(p):
        return _mine_controlled(query_vecs, corpus, pairs, excluded, p, index, texts, ids, audit, runner, members)
    rng = np.random.default_rng(p.seed)
    stats: MiningStats | None = None
    if runner is not None and index is None and p.strategy in (Strategy.RULE, Strategy.TOPK):
        results, stats = mine_in_blocks(query_vecs, corpus, pairs, excluded, p, rng, runner, audit=audit)
    elif p.strategy == Strategy.RULE:
        results, stats = mine_rule(
            query_vecs,
            corpus,
            pairs,
            excluded,
            num_negatives=p.num_negatives,
            index=index,
            ef_search=p.hnsw_ef_search,
            candidate_k=p.candidate_k,
            block_rows=p.block_size,
            pair_block=p.query_block,
            fallback=Fallback.NEXT if p.fallback == Fallback.NEXT else Fallback.NONE,
            fill=p.fill,
            c2_margin=p.c2_margin,
            range_min=p.range_min,
            range_max=p.range_max,
            sampling_strategy=p.sampling_strategy,
            rng=rng,
            audit=audit,
        )
    elif p.strategy == Strategy.TOPK:
        results, stats = mine_topk(
            query_vecs,
            corpus,
            pairs,
            excluded,
            num_negatives=p.num_negatives,
            range_min=p.range_min,
            range_max=p.range_max,
            max_score=p.max_score,
            min_score=p.min_score,
            absolute_margin=p.absolute_margin,
            relative_margin=p.relative_margin,
            sampling_strategy=p.sampling_strategy,
            rng=rng,
            index=index,
            ef_search=p.hnsw_ef_search,
            block_rows=p.block_size,
            query_block=p.query_block,
        )
    elif p.strategy == Strategy.RANDOM:
        results = fill_distances(query_vecs, corpus, _random(corpus.n, pairs, excluded, p, ids))
    elif p.strategy == Strategy.BM25:
        results = fill_distances(
            query_vecs, corpus, bm25_negatives(_need(texts), pairs, excluded, p.num_negatives, source=SOURCE_BM25)
        )
    else:
        raise ValueError(f"unknown strategy {p.strategy!r}")
    if p.fallback in (Fallback.RANDOM, Fallback.BM25) and p.strategy.value != p.fallback.value:
        results = apply_fallback(results, p, query_vecs, corpus, excluded, texts, ids)
    final = restat(results, stats, p.num_negatives)
    final.fn_risk = controls.fn_risk(results, members)
    return results, final


def _mine_controlled(
    query_vecs: np.ndarray,
    corpus: VectorSource,
    pairs: Sequence[Pair],
    excluded: Excluded,
    p: MineConfig,
    index: HnswIndex | None,
    texts: Texts | None,
    ids: Ids | None,
    audit: Callable[[AuditRecord], None] | None,
    runner: BlockRunner | None,
    members: Members | None,
) -> tuple[list[PairResult], MiningStats]:
    """The strategy's ranked pool, then the false-negative controls, then a random/bm25 fallback (see above)."""
    if audit is not None:
        raise ValueError("an audit records the rule's own selection; it cannot be combined with vote, "
                         "random_negatives or margins on the rule")  # fmt: skip
    if p.strategy not in (Strategy.RULE, Strategy.TOPK):
        raise ValueError(f"vote, random_negatives and margins work on the rule and topk, not on {p.strategy}")
    pool_p = controls.pool_params(p)
    if pool_p.fallback in (Fallback.RANDOM, Fallback.BM25):
        pool_p = replace(pool_p, fallback=Fallback.NONE)  # filled after the controls, where pairs end up empty
    pools, pool_stats = mine_negatives(
        query_vecs, corpus, pairs, excluded, pool_p, index=index, texts=texts, ids=ids, runner=runner
    )
    doc_keys, query_keys = ids.keys() if ids is not None else (None, None)
    results, cstats = controls.apply_controls(
        pools,
        p,
        query_vecs,
        corpus,
        excluded,
        np.random.default_rng(p.seed),
        members=members,
        doc_keys=doc_keys,
        query_keys=query_keys,
    )
    if p.fallback in (Fallback.RANDOM, Fallback.BM25):
        results = apply_fallback(results, p, query_vecs, corpus, excluded, texts, ids)
    final = restat(results, pool_stats, p.num_negatives)
    final.guards = {"removed": dict(cstats.removed), "suspected": cstats.suspected, "random_mixed": cstats.random_mixed,
                    "pool": pool_p.num_negatives}  # fmt: skip
    final.fn_risk = controls.fn_risk(results, members)
    return results, final


def _need(texts: Texts | None) -> Texts:
    if texts is None:
        raise ValueError("BM25 needs the corpus and query texts")
    return texts


def restat(results: Sequence[PairResult], stats: MiningStats | None, num_negatives: int) -> MiningStats:
    """Stats recomputed from the final results (after a fallback), keeping the search-level counters."""
    new = MiningStats()
    for r in results:
        new.add(r, num_negatives)
    if stats is not None:
        # Search-level counters are not per pair: carry them over.
        new.hnsw_widenings = stats.hnsw_widenings
        new.exact_fallbacks = stats.exact_fallbacks
        new.rejected_by = dict(stats.rejected_by)
    return new


def _random(n: int, pairs: Sequence[Pair], excluded: Excluded, p: MineConfig, ids: Ids | None) -> list[PairResult]:
    doc_keys, query_keys = ids.keys() if ids is not None else (None, None)
    return sample_random(n, pairs, excluded, p.num_negatives, p.seed, doc_keys=doc_keys, query_keys=query_keys)


def apply_fallback(
    results: list[PairResult],
    params: MineConfig,
    query_vecs: np.ndarray,
    corpus: VectorSource,
    excluded: Excluded,
    texts: Texts | None,
    ids: Ids | None = None,
) -> list[PairResult]:
    """Give pairs left empty by the strategy random or BM25 negatives (source `fallback-random|bm25`)."""
    empty = [i for i, r in enumerate(results) if not r.negatives]
    if not empty:
        return results
    pairs = [results[i].pair for i in empty]
    if params.fallback == Fallback.RANDOM:
        filled = _random(corpus.n, pairs, excluded, params, ids)
        filled = [replace(r, negatives=[replace(n, source="fallback-random") for n in r.negatives]) for r in filled]
    else:
        filled = bm25_negatives(_need(texts), pairs, excluded, params.num_negatives, source="fallback-bm25")
    filled = fill_distances(query_vecs, corpus, filled)
    results = list(results)
    for i, r in zip(empty, filled, strict=True):
        results[i] = replace(results[i], negatives=r.negatives, fallback_used=bool(r.negatives))
    return results


def bm25_negatives(texts: Texts, pairs: Sequence[Pair], excluded: Excluded, k: int, *, source: str) -> list[PairResult]:
    """Top-`k` BM25 documents per query (minus its exclusions and PD), shared by all pairs of the query."""
    from hnm_cli.bm25 import BM25Index

    index = BM25Index(list(texts.corpus))
    qrows = sorted({p.query_row for p in pairs})
    exclude = [excluded.get(q, set()) for q in qrows]
    scores, idx = index.search([texts.queries[q] for q in qrows], k, exclude=exclude)
    per_query = {
        q: [
            Negative(int(j), source, rank + 1, None, None, None)
            for rank, j in enumerate(idx[i])
            # A zero score shares no term with the query: not a lexical hard negative, just an arbitrary doc.
            if j >= 0 and scores[i, rank] > 0
        ]
        for i, q in enumerate(qrows)
    }
    out = []
    for p in pairs:
        negs = [n for n in per_query[p.query_row] if n.doc_row != p.positive_row]
        out.append(PairResult(pair=p, negatives=negs, examined=len(negs)))
    return out
