"""Mining split into blocks of pairs that run anywhere (`hnm_cli.executors`), merged into one call's results.

Why blocks merge exactly: the rule and dense top-k compute a pair's negatives (top-k: a query's, shared by its
pairs) from that pair, the whole corpus and the exclusions, nothing else. So results mined block by block and put
back in pair order are the results of one call, provided each block sees the same numbers:

- decisions and reported distances are float64 similarities summed in a fixed order (`numerics.rowdot64`),
  whatever batch a pair sits in; float32 matrix products only screen candidates, with a proven margin;
- blocks start at multiples of ``query_block`` pairs (rule) or queries (top-k), the chunks one call multiplies
  at once, so each block's screening products have the rows and shapes of one call's and give the same floats;
- top-k's search depth and window are resolved over all pairs first (`topk.topk_window`) and handed to every
  block;
- no seeded draw is made in a block. With ``sampling_strategy="random"`` a block returns each pair's whole
  selection window, and the merge samples the windows from the run's one rng in pair (top-k: query) order,
  which is the order and the rng one call draws in. The random and BM25 strategies, and the random/BM25
  fallbacks, need no corpus scan and stay with the caller (`strategies.mine_negatives`), after the merge.
- the audit: a block collects its records; the merge fixes their ``selected`` flag after sampling and emits
  them in pair order, as one call does.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol, TypeVar

import numpy as np

from hnm_cli.choices import Fallback, Sampling, Strategy
from hnm_cli.config import MineConfig
from hnm_cli.mining.numerics import check_inputs
from hnm_cli.mining.results import SOURCE_RULE, AuditRecord, Excluded, MiningStats, Pair, PairResult
from hnm_cli.mining.rule import mine_rule, select_window
from hnm_cli.mining.topk import mine_topk, sample_window, topk_window
from hnm_cli.search import VectorSource

S = TypeVar("S")
T = TypeVar("T")
R = TypeVar("R")

# Blocks per worker: more than one, so a slow block does not leave the other workers idle at the end.
BLOCKS_PER_WORKER = 4


class BlockRunner(Protocol):
    """What mining needs of an executor (`hnm_cli.executors.Runner` is one)."""

    @property
    def workers(self) -> int:
        """How many units can run at once."""
        ...

    def map(
        self, setup: Callable[[], S], work: Callable[[S, T], R], items: Sequence[T], *, label: str, unit: str = ...
    ) -> list[R]:
        """``[work(state, item) for item in items]`` with ``state = setup()`` once per worker, in item order."""
        ...


@dataclass(frozen=True)
class BlockJob:
    """Everything a worker needs, sent once per worker; ``corpus`` pickles as its shard paths when memmapped."""

    query_vecs: np.ndarray
    corpus: VectorSource
    pairs: tuple[Pair, ...]
    excluded: Excluded
    params: MineConfig
    audit: bool = False
    # top-k: resolved over all pairs (`topk_window`), so every block searches and windows like the whole call.
    range_max: int | None = None
    max_positives: int | None = None


@dataclass(frozen=True)
class Block:
    """One unit of work: pair indices (ascending) into `BlockJob.pairs`."""

    index: int
    rows: np.ndarray

    def __str__(self) -> str:
        return f"block {self.index} (pairs {int(self.rows[0])}-{int(self.rows[-1])})"


@dataclass
class BlockResult:
    """What a worker sends back: one PairResult per pair of the block, the search counters, audit records."""

    rows: np.ndarray
    results: list[PairResult]
    stats: MiningStats
    audit: list[AuditRecord] = field(default_factory=list)


def plan_blocks(pairs: Sequence[Pair], params: MineConfig, workers: int) -> list[Block]:
    """Blocks of about ``BLOCKS_PER_WORKER`` per worker, cut at the chunks one call multiplies at once.

    Rule: runs of whole ``query_block``-pair chunks in pair order. Top-k: every pair of runs of whole
    ``query_block``-query chunks of the queries in first-seen order (a query's pairs share one candidate list).
    """
    if not pairs:
        return []
    chunk = params.query_block
    if params.strategy == Strategy.TOPK:
        by_query: dict[int, list[int]] = {}
        for i, p in enumerate(pairs):
            by_query.setdefault(p.query_row, []).append(i)
        groups = list(by_query.values())
    else:
        groups = [[i] for i in range(len(pairs))]
    chunks = math.ceil(len(groups) / chunk)
    per_block = math.ceil(chunks / max(1, workers * BLOCKS_PER_WORKER)) * chunk
    blocks = []
    for b, lo in enumerate(range(0, len(groups), per_block)):
        rows = np.sort(np.fromiter((i for g in groups[lo : lo + per_block] for i in g), dtype=np.int64))
        blocks.append(Block(b, rows))
    return blocks


def mine_in_blocks(
    query_vecs: np.ndarray,
    corpus: VectorSource,
    pairs: Sequence[Pair],
    excluded: Excluded,
    params: MineConfig,
    rng: np.random.Generator,
    runner: BlockRunner,
    *,
    audit: Callable[[AuditRecord], None] | None = None,
) -> tuple[list[PairResult], MiningStats]:
    """`mine_rule` / `mine_topk` for ``params`` over blocks run by ``runner``: the one-call results, in pair order.

    Exact search only (an hnsw index lives in the caller's process). Arguments are checked here, before any
    block is sent, so a bad argument fails as in one call.

    Raises:
        ValueError: bad shapes, rows or argument combinations (as `mine_rule` / `mine_topk`).
    """
    job = _job(query_vecs, corpus, pairs, excluded, params, audit=audit is not None)
    # The core's own argument checks, with the real settings and no pairs: a bad argument fails here, once.
    _strategy(job, [], None, defer_sampling=False)
    blocks = plan_blocks(pairs, params, runner.workers)
    parts = runner.map(_JobState(job), mine_block, blocks, label=f"mine {params.strategy}", unit="block")
    return merge_blocks(job, parts, rng, audit)


def mine_part(
    query_vecs: np.ndarray,
    corpus: VectorSource,
    pairs: Sequence[Pair],
    part: Sequence[int],
    excluded: Excluded,
    params: MineConfig,
) -> list[PairResult]:
    """The results of the pairs `part` (indices into `pairs`) as one call over all `pairs` gives them: one block,
    run here (`hnm mine --update` re-mines some pairs of a run this way). "top" sampling only: a random window is
    drawn from the whole call's rng, in `merge_blocks`."""
    if params.sampling_strategy != Sampling.TOP:
        raise ValueError("mine_part selects with sampling_strategy 'top' only")
    job = _job(query_vecs, corpus, pairs, excluded, params, audit=False)
    results, _ = _strategy(job, [pairs[i] for i in part], None, defer_sampling=False)
    return results


def resolved_topk_window(pairs: Sequence[Pair], params: MineConfig) -> tuple[int, int]:
    """Top-k's window (``range_max``) and the most positives of a query, resolved over all of a call's `pairs`."""
    filtered = params.absolute_margin is not None or params.relative_margin is not None or params.max_score is not None
    return topk_window(pairs, params.num_negatives, params.range_min, params.range_max, filtered=filtered)


def _job(
    query_vecs: np.ndarray,
    corpus: VectorSource,
    pairs: Sequence[Pair],
    excluded: Excluded,
    params: MineConfig,
    *,
    audit: bool,
) -> BlockJob:
    """The job every block of one call shares, top-k's depth resolved over all of its pairs."""
    if params.strategy not in (Strategy.RULE, Strategy.TOPK):
        raise ValueError(f"blocks mine the rule and top-k only, not {params.strategy!r}")
    query_vecs = np.ascontiguousarray(query_vecs, dtype=np.float32)
    check_inputs(query_vecs, corpus, pairs, params.num_negatives)
    job = BlockJob(query_vecs, corpus, tuple(pairs), excluded, params, audit=audit)
    if params.strategy == Strategy.TOPK and pairs:
        range_max, max_positives = resolved_topk_window(pairs, params)
        job = replace(job, range_max=range_max, max_positives=max_positives)
    return job


@dataclass(frozen=True)
class _JobState:
    """The runner's per-worker ``setup``: hands the job to the worker (it travels once per worker)."""

    job: BlockJob

    def __call__(self) -> BlockJob:
        return self.job


def mine_block(job: BlockJob, block: Block) -> BlockResult:
    """Mine one block (in a worker): the strategy on the block's pairs, no seeded draw (see the module doc)."""
    records: list[AuditRecord] = []
    pairs = [job.pairs[int(i)] for i in block.rows]
    results, stats = _strategy(job, pairs, records.append if job.audit else None, defer_sampling=True)
    return BlockResult(block.rows, results, stats, records)


def _strategy(
    job: BlockJob, pairs: Sequence[Pair], audit: Callable[[AuditRecord], None] | None, *, defer_sampling: bool
) -> tuple[list[PairResult], MiningStats]:
    p = job.params
    random = defer_sampling and p.sampling_strategy == Sampling.RANDOM
    if p.strategy == Strategy.RULE:
        need = p.range_min + p.num_negatives if p.range_max is None else p.range_max
        return mine_rule(
            job.query_vecs,
            job.corpus,
            pairs,
            job.excluded,
            # "random" samples later, in the merge: here every pair keeps its whole window [range_min, need).
            num_negatives=need - p.range_min if random else p.num_negatives,
            range_max=need if random else p.range_max,
            sampling_strategy=Sampling.TOP if defer_sampling else p.sampling_strategy,
            candidate_k=p.candidate_k,
            block_rows=p.block_size,
            pair_block=p.query_block,
            fallback=Fallback.NEXT if p.fallback == Fallback.NEXT else Fallback.NONE,
            fill=p.fill,
            c2_margin=p.c2_margin,
            range_min=p.range_min,
            audit=audit,
        )
    range_max = job.range_max if job.range_max is not None else p.range_max
    window = range_max - p.range_min if range_max is not None else p.num_negatives
    return mine_topk(
        job.query_vecs,
        job.corpus,
        pairs,
        job.excluded,
        num_negatives=window if random else p.num_negatives,
        range_min=p.range_min,
        range_max=range_max,
        max_score=p.max_score,
        min_score=p.min_score,
        absolute_margin=p.absolute_margin,
        relative_margin=p.relative_margin,
        sampling_strategy=Sampling.TOP if defer_sampling else p.sampling_strategy,
        block_rows=p.block_size,
        query_block=p.query_block,
        max_positives=job.max_positives,
    )


def merge_blocks(
    job: BlockJob,
    parts: Sequence[BlockResult],
    rng: np.random.Generator,
    audit: Callable[[AuditRecord], None] | None = None,
) -> tuple[list[PairResult], MiningStats]:
    """Block results back in pair order, the random sampling drawn from ``rng`` as one call draws, the audit emitted.

    Returns:
        ``(results, stats)``: stats hold the search-level counters summed over blocks (the caller recomputes
        the per-pair totals from the final results, `strategies.restat`).
    """
    p = job.params
    slots: list[PairResult | None] = [None] * len(job.pairs)
    stats = MiningStats()
    for part in parts:
        for i, r in zip(part.rows, part.results, strict=True):
            slots[int(i)] = r
        stats.hnsw_widenings += part.stats.hnsw_widenings
        stats.exact_fallbacks += part.stats.exact_fallbacks
        for k, v in part.stats.rejected_by.items():
            stats.rejected_by[k] = stats.rejected_by.get(k, 0) + v
    missing = [i for i, r in enumerate(slots) if r is None]
    if missing:
        raise ValueError(f"no block returned pair {missing[0]}")
    results = [r for r in slots if r is not None]
    if p.sampling_strategy == Sampling.RANDOM:
        if p.strategy == Strategy.RULE:
            select_window(results, 0, _rule_window(p), p.num_negatives, Sampling.RANDOM, rng)
        else:
            _sample_topk(job.pairs, results, p.num_negatives, rng)
    if audit is not None:
        for part in parts:
            for rec in _final_selection(part, job.pairs, results, fix=p.sampling_strategy == Sampling.RANDOM):
                audit(rec)
    for r in results:
        stats.add(r, p.num_negatives)
    return results, stats


def _rule_window(p: MineConfig) -> int:
    """Length of the rule's selection window ``[range_min, need)``."""
    need = p.range_min + p.num_negatives if p.range_max is None else p.range_max
    return need - p.range_min


def _sample_topk(pairs: Sequence[Pair], results: list[PairResult], m: int, rng: np.random.Generator) -> None:
    """Top-k's "random" sampling on whole windows: one draw per query in first-seen order, shared by its pairs."""
    by_query: dict[int, list[int]] = {}
    for i, pair in enumerate(pairs):
        by_query.setdefault(pair.query_row, []).append(i)
    for idx in by_query.values():
        window = results[idx[0]].negatives  # every pair of the query has the same window (its own s_pd)
        chosen = sample_window(np.arange(len(window), dtype=np.int64), m, rng)
        for i in idx:
            negs = results[i].negatives
            results[i].negatives = [negs[int(c)] for c in chosen]


def _final_selection(
    part: BlockResult, pairs: Sequence[Pair], results: Sequence[PairResult], *, fix: bool
) -> Iterator[AuditRecord]:
    """A block's audit records in order, ``selected`` recomputed from the final negatives when sampling ran after.

    A pair's records are consecutive, carry its (query row, positive row) and strictly increasing ranks: that is
    how they are matched to the pair (two equal pairs in a row get the second run of records).
    """
    if not fix:
        yield from part.audit
        return
    recs = part.audit
    j = 0
    for i in part.rows:
        pair = pairs[int(i)]
        chosen = {n.doc_row for n in results[int(i)].negatives if n.source == SOURCE_RULE}
        last = 0
        while j < len(recs) and (recs[j].query_row, recs[j].positive_row) == (pair.query_row, pair.positive_row):
            if recs[j].rank <= last:
                break
            last = recs[j].rank
            yield replace(recs[j], selected=recs[j].doc_row in chosen)
            j += 1
    if j != len(recs):
        raise ValueError(f"{len(recs) - j} audit record(s) of {part} match no pair")


__all__ = [
    "Block",
    "BlockJob",
    "BlockResult",
    "BlockRunner",
    "merge_blocks",
    "mine_block",
    "mine_in_blocks",
    "plan_blocks",
]
