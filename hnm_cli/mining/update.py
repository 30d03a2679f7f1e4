"""Incremental mining (`hnm mine --update`): what an edit of the corpus, queries or qrels can have changed, and
the rows of a full run on the edited data computed from that alone.

One module answers "what can this edit have changed": `plan_update` diffs what the earlier run saw (text hashes,
exclusion digests, its rows) against this run's, `unsupported` says which settings can be updated at all, and
`update_negatives` re-mines what the plan and the vectors say moved and merges the rest. The stage only reads
and writes files.

The merges themselves, and why they are exact, are `update_merge`'s.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from hnm_cli.choices import Fallback, Fill, Sampling, SearchIndex, Strategy
from hnm_cli.config import MineConfig
from hnm_cli.mining.blocks import mine_part, resolved_topk_window
from hnm_cli.mining.results import (
    Excluded,
    MiningStats,
    Negative,
    Pair,
    PairResult,
    RankingHead,
)
from hnm_cli.mining.strategies import Ids, Texts, mine_negatives, restat
from hnm_cli.mining.update_merge import (
    CHUNK,
    MergeInputs,
    Previous,
    UpdateCounts,
    merge_random,
    merge_rule,
    not_drifted,
)
from hnm_cli.mining.update_merge_topk import TopkDepth, merge_topk
from hnm_cli.search import HnswIndex, VectorSource

# ---------------------------------------------------------------------------------------------
# Which settings an update reproduces (an allow-list: anything not named here is refused)
# ---------------------------------------------------------------------------------------------

# Fields that decide no row here: where and in what blocks the work runs (the same bytes on every executor and
# block size), which pairs and exclusions the stage hands over (the plan diffs those), and knobs `merge_rule` and
# `merge_random` read from `params` themselves. Any value.
_ANY_VALUE = frozenset(
    {
        "split",
        "allow_eval_queries",
        "eval_splits",
        "exclude_query_duplicates",
        "exclude_twin_positives",
        "block_size",
        "query_block",
        "executor",
        "ray_address",
        "preset",
        "num_negatives",
        "c2_margin",
        "seed",
        # hnsw's search knobs: only read with index = "hnsw", which is refused below
        "candidate_k",
        "hnsw_m",
        "hnsw_ef_construction",
        "hnsw_ef_search",
    }
)


class _AnyValue(tuple[Any, ...]):
    """Every value is allowed: a knob the merge applies as the search does, or one the strategy never reads."""

    def __contains__(self, value: object) -> bool:
        return True


_EVERY_VALUE = _AnyValue()

# Fields the merge reproduces for some values only, per strategy. Every value here is tested against a cold
# mine (tests/test_update_core.py).
_RULE_VALUES: dict[str, tuple[Any, ...]] = {
    "index": (SearchIndex.EXACT,),  # hnsw's recall is measured, not proven: a cold run may differ from an exact merge
    "sampling_strategy": (Sampling.TOP,),
    "range_min": (0,),
    "range_max": (None,),
    "fallback": (Fallback.NONE, Fallback.NEXT),
    "fill": (Fill.EMPTY, Fill.SHORT),
    # A margin on the rule runs the false-negative controls' pool (`controls.active`), which no merge reproduces.
    "relative_margin": (None,),
    "absolute_margin": (None,),
}
# Random draws neither search nor fall back: `mine_negatives` applies no fallback to them, and none reads the window.
_RANDOM_VALUES: dict[str, tuple[Any, ...]] = {
    "index": (SearchIndex.EXACT, SearchIndex.HNSW),
    "fallback": (Fallback.NONE, Fallback.NEXT, Fallback.RANDOM),
    "fill": (Fill.EMPTY, Fill.SHORT),
    "relative_margin": _EVERY_VALUE,  # margins guard the rule and top-k only; random draws never read them
    "absolute_margin": _EVERY_VALUE,
}
# Top-k (the default recipe): the first picks of a ranked list, with filters that judge each document alone.
_TOPK_VALUES: dict[str, tuple[Any, ...]] = {
    "index": (SearchIndex.EXACT,),
    "sampling_strategy": (Sampling.TOP,),
    "range_min": (0,),
    "range_max": _EVERY_VALUE,
    "relative_margin": _EVERY_VALUE,
    "absolute_margin": _EVERY_VALUE,
    "max_score": _EVERY_VALUE,
    "min_score": _EVERY_VALUE,
    "fallback": (Fallback.NONE, Fallback.NEXT),  # neither adds documents to top-k's picks
    "fill": (Fill.EMPTY, Fill.SHORT),
}
SUPPORTED_STRATEGIES: dict[str, dict[str, tuple[Any, ...]]] = {
    Strategy.RULE: _RULE_VALUES,
    Strategy.TOPK: _TOPK_VALUES,
    Strategy.RANDOM: _RANDOM_VALUES,
}
# Why the strategies left out cannot be merged (the message of a refusal; any other strategy: "not on the list").
_WHY_NOT: dict[str, str] = {
    Strategy.BM25: "BM25's term statistics change with the corpus",
}


def unsupported(params: MineConfig) -> str | None:
    """Why `params` cannot be updated incrementally (then every pair is mined in full), or None.

    An allow-list: the strategy must be one of `SUPPORTED_STRATEGIES` with its listed values, every field of
    `_ANY_VALUE` may take any value, and every other field of the config (an option added after this list was
    written included) must hold its default.
    """
    strategy = params.strategy
    if strategy not in SUPPORTED_STRATEGIES:
        return _WHY_NOT.get(strategy, f"strategy '{strategy}' is not on the update's allow-list")
    allowed = SUPPORTED_STRATEGIES[strategy]
    for f in dataclasses.fields(params):
        value = getattr(params, f.name)
        if f.name == "strategy" or f.name in _ANY_VALUE:
            continue
        if f.name in allowed:
            if value not in allowed[f.name]:
                shown = ", ".join("absent" if v is None else str(v) for v in allowed[f.name])
                return f"{f.name} = {_shown(value)} (with strategy {strategy} it reproduces {shown} only)"
        elif f.default is dataclasses.MISSING or value != f.default:
            return f"{f.name} = {_shown(value)} is not on the update's allow-list (only its default is)"
    return None


def _shown(value: Any) -> str:
    return "absent" if value is None else str(value)


# ---------------------------------------------------------------------------------------------
# The plan: what the edit can have changed
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class UpdatePlan:
    """What an edit can have changed, from text hashes alone (vectors are checked later, by
    `update_merge.not_drifted`)."""

    previous: tuple[Previous | None, ...]  # per pair: its earlier row to merge from, or None (mine it in full)
    added_rows: np.ndarray  # corpus rows of documents that are new or whose text changed
    removed: int  # documents removed or changed since
    reordered: bool  # documents that stayed changed their order (ties are broken by row: ranks are recounted)
    pairs_new: int  # pairs the earlier run did not have
    pairs_inputs_changed: int  # query, positive or exclusions changed, or a pick was lost and no head kept
    max_positives_before: int = 0  # the most positives of a query then (top-k's list depth depends on it)
    docs_before: int = 0  # the corpus size then

    @property
    def removed_any(self) -> bool:
        return self.removed > 0 or self.reordered


def plan_update(
    old_docs: Mapping[str, str],
    old_queries: Mapping[str, Any],
    old_rows: Mapping[tuple[str, str], Sequence[Mapping[str, Any]]],
    new_docs: Mapping[str, str],
    new_queries: Mapping[str, Any],
    pair_ids: Sequence[tuple[str, str]],
    corpus_row: Mapping[str, int],
    old_heads: Mapping[str, tuple[Sequence[int], float]] | None = None,
) -> UpdatePlan:
    """Diff what the earlier run saw against this run's inputs.

    Args:
        old_docs, new_docs: document id -> hash of its exact text, in corpus-row order.
        old_queries, new_queries: query id -> anything that changes when the query's text or exclusions do
            (the stage: (text hash, exclusions digest)).
        old_rows: (query id, positive id) -> the earlier row's negatives as written (`doc_id`, `source`,
            `rank`, `d_qd`, `d_qp`, `d_pd`).
        pair_ids: this run's (query id, positive id) pairs, in order.
        corpus_row: this run's document id -> corpus row.
        old_heads: query id -> the head of its ranking then (top-k: corpus rows of the earlier run, best first,
            and the similarity of the last; `RankingHead`), where the earlier run kept one.
    """
    added = np.array([corpus_row[d] for d, h in new_docs.items() if old_docs.get(d) != h], dtype=np.int64)
    gone = {d for d, h in old_docs.items() if new_docs.get(d) != h}
    kept_rows = [corpus_row[d] for d in old_docs if d in corpus_row and d not in gone]
    reordered = any(b < a for a, b in zip(kept_rows, kept_rows[1:], strict=False))
    old_ids = list(old_docs)
    heads: dict[str, RankingHead | None] = {}

    def head_now(q: str) -> RankingHead | None:
        """The earlier head of `q` in this run's rows, -1 where the document is gone."""
        if old_heads is None or q not in old_heads:
            return None
        if q not in heads:
            rows, floor = old_heads[q]
            mapped = [-1 if old_ids[r] in gone else corpus_row[old_ids[r]] for r in rows]
            heads[q] = RankingHead(np.array(mapped, dtype=np.int64), floor)
        return heads[q]

    previous: list[Previous | None] = []
    new_pairs = changed = 0
    for q, d in pair_ids:
        negs = old_rows.get((q, d))
        if negs is None:
            new_pairs += 1
            previous.append(None)
            continue
        lost = sum(n["doc_id"] in gone for n in negs)
        if (
            q not in old_queries
            or old_queries[q] != new_queries[q]
            or old_docs.get(d) != new_docs[d]
            # a lost pick: what replaces it is not known, unless the query's head lists what ranked below it
            or (lost and head_now(q) is None)
        ):
            changed += 1
            previous.append(None)
        else:
            previous.append(
                Previous(
                    tuple(
                        Negative(corpus_row[n["doc_id"]], n["source"], n["rank"], n["d_qd"], n["d_qp"], n["d_pd"])
                        for n in negs
                        if n["doc_id"] not in gone
                    ),
                    head_now(q),
                    picks_lost=lost,
                )
            )
    positives_before: dict[str, int] = {}
    for q, _ in old_rows:
        positives_before[q] = positives_before.get(q, 0) + 1
    return UpdatePlan(
        tuple(previous),
        added,
        len(gone),
        reordered,
        new_pairs,
        changed,
        max_positives_before=max(positives_before.values(), default=0),
        docs_before=len(old_docs),
    )


# ---------------------------------------------------------------------------------------------
# The update
# ---------------------------------------------------------------------------------------------


def update_negatives(
    query_vecs: np.ndarray,
    corpus: VectorSource,
    pairs: Sequence[Pair],
    excluded: Excluded,
    params: MineConfig,
    plan: UpdatePlan,
    *,
    ids: Ids,
    index: HnswIndex | None = None,
    texts: Texts | None = None,
) -> tuple[list[PairResult], MiningStats, UpdateCounts]:
    """The results a full `mine_negatives` run would give, computing only what the edit can have changed.

    Args:
        query_vecs, corpus, pairs, excluded, params, index, texts, ids: as for `mine_negatives`.
        plan: `plan_update` for these pairs.

    Returns:
        (results, stats, counts). Search counters of reused pairs (C1 region sizes, rejections) are not
        recomputed: stats count what this run examined.
    """
    counts = UpdateCounts(
        documents_added=len(plan.added_rows),
        documents_removed_or_changed=plan.removed,
        pairs_new=plan.pairs_new,
        pairs_inputs_changed=plan.pairs_inputs_changed,
    )
    if len(plan.previous) != len(pairs):
        raise ValueError(f"the plan has {len(plan.previous)} pairs, the update {len(pairs)}")
    if (why := unsupported(params)) is not None:
        everything, stats = mine_negatives(
            query_vecs, corpus, pairs, excluded, params, index=index, texts=texts, ids=ids
        )
        counts.recomputed_in_full = why
        counts.pairs_remined = len(pairs)
        return everything, stats, counts
    previous = plan.previous
    candidates = [i for i, prev in enumerate(previous) if prev is not None]
    reuse = [
        i
        for lo in range(0, len(candidates), CHUNK)
        for i in not_drifted(query_vecs, corpus, pairs, previous, candidates[lo : lo + CHUNK])
    ]
    counts.pairs_drifted = len(candidates) - len(reuse)
    results: list[PairResult | None] = [None] * len(pairs)
    if reuse:
        qv = np.ascontiguousarray(query_vecs[[p.query_row for p in pairs]], dtype=np.float32)
        inp = MergeInputs(
            query_vecs, qv, corpus, pairs, excluded, params, previous, reuse, plan.added_rows, plan.removed_any, counts
        )
        if params.strategy == Strategy.RULE:
            merged = merge_rule(inp)
        elif params.strategy == Strategy.TOPK:
            drifted = counts.pairs_drifted
            merged = merge_topk(inp, reordered=plan.reordered, depth=_topk_depth(pairs, params, plan, corpus.n))
            counts.pairs_remined_with_their_query = len(reuse) - len(merged) - (counts.pairs_drifted - drifted)
        else:
            merged = merge_random(inp, ids)
        for i, r in merged.items():
            results[i] = r
    full = [i for i, r in enumerate(results) if r is None]
    if full:
        mined = _mine_in_full(query_vecs, corpus, pairs, full, excluded, params, index=index, texts=texts, ids=ids)
        for i, r in zip(full, mined, strict=True):
            results[i] = r
    counts.pairs_reused = len(pairs) - len(full)
    counts.pairs_remined = len(full)
    final = [r for r in results if r is not None]
    return final, restat(final, None, params.num_negatives), counts


def _topk_depth(pairs: Sequence[Pair], params: MineConfig, plan: UpdatePlan, n_docs: int) -> TopkDepth:
    """Top-k's window and list length over all of this run's pairs, and the earlier run's list length."""
    window, max_positives = resolved_topk_window(pairs, params)
    if params.range_max is None:  # the earlier window was resolved with its own most positives of a query
        window_before = window - max_positives + plan.max_positives_before
    else:
        window_before = window
    return TopkDepth(
        window=window,
        k_now=min(window + max_positives, n_docs),
        k_before=min(window_before + plan.max_positives_before, plan.docs_before),
    )


def _mine_in_full(
    query_vecs: np.ndarray,
    corpus: VectorSource,
    pairs: Sequence[Pair],
    full: Sequence[int],
    excluded: Excluded,
    params: MineConfig,
    *,
    index: HnswIndex | None,
    texts: Texts | None,
    ids: Ids,
) -> list[PairResult]:
    """The pairs `full` mined as the whole run mines them. Top-k's list depth depends on the most positives of any
    query of the run, so its subset is searched as deep as the whole run (`blocks.mine_part`, one block)."""
    if params.strategy == Strategy.TOPK:
        return mine_part(query_vecs, corpus, pairs, full, excluded, params)
    subset = [pairs[i] for i in full]
    return mine_negatives(query_vecs, corpus, subset, excluded, params, index=index, texts=texts, ids=ids)[0]
