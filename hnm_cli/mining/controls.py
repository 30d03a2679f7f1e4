"""False-negative controls: guards, a selection window and a random mix over a strategy's ranked candidates.

Every top-zone miner (the paper's rule, dense top-k, sentence-transformers' defaults) picks its negatives where
unlabelled positives concentrate: just above or around the labelled positive. This module is hnm's answer, one
place for all of it, usable on top of the rule and of top-k (issue 20):

- **ceiling** (positive-aware, NV-Retriever's TopK-PercPos and sentence-transformers' margins): drop D when
  s(Q,D) > s(Q,PD) * (1 - relative_margin) or s(Q,D) > s(Q,PD) - absolute_margin;
- **vote** (the ensemble as a false-negative detector): each member of the ensemble says whether it ranks D
  above PD for Q; drop D when any / a majority / every member does;
- **window**: the existing `range_min` / `range_max` / `sampling_strategy` over what the guards left;
- **mix**: `random_negatives` of the pair's `num_negatives` are seeded random documents (the reranker guide's
  "random negatives mixed in"), the rest hard.

Candidates a guard removed are kept as **suspected positives** (nearest first, up to `MAX_SUSPECTED` per pair),
so a user can review or relabel them. `fn_risk` measures the chosen negatives of any strategy.

The strategy runs first with a candidate pool of `candidate_k` documents (its own tests applied: the rule's C1/C2
and fill, top-k's bounds), in rank order; the controls only ever remove and select, so they cannot change which
documents a strategy considers, only which of them it keeps.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from hnm_cli.choices import Sampling, Strategy, Vote
from hnm_cli.config import MineConfig
from hnm_cli.mining.numerics import rowdot64
from hnm_cli.mining.results import SOURCE_RANDOM, Excluded, Negative, PairResult
from hnm_cli.mining.sampling import sample_random
from hnm_cli.search import VectorSource

GUARD_CEILING = "ceiling"
GUARD_VOTE = "vote"
MAX_SUSPECTED = 5  # per pair: enough to review the likely positives, bounded so a 1M-pair artifact stays small
# fn_risk: a negative at least this similar to the positive is counted as a near-duplicate of it.
NEAR_DUPLICATE_SIMILARITY = 0.95
PERCPOS_SHARE = 0.95  # fn_risk: "above 95% of the positive's score", NV-Retriever's threshold


@dataclass(frozen=True)
class Members:
    """The ensemble members' own vectors, row-aligned with the fused vectors the strategy mined on.

    ``queries[i]`` has one row per query row of the fused query vectors; ``corpus[i]`` is read through
    ``corpus_rows[i]`` (fused corpus row -> member corpus row; None when the orders are the same).
    """

    names: Sequence[str]
    queries: Sequence[np.ndarray]
    corpus: Sequence[VectorSource]
    corpus_rows: Sequence[np.ndarray | None]

    def similarities(self, query_row: int, rows: np.ndarray) -> np.ndarray:
        """[members, len(rows)] float64 similarity of each member's query vector to each corpus row."""
        out = np.empty((len(self.names), len(rows)), dtype=np.float64)
        for i, (qv, src, remap) in enumerate(zip(self.queries, self.corpus, self.corpus_rows, strict=True)):
            docs = src.take(rows if remap is None else remap[rows])
            out[i] = rowdot64(np.broadcast_to(qv[query_row], docs.shape), docs)
        return out


@dataclass
class ControlStats:
    """What the controls did: candidates each guard removed, and suspected positives written."""

    removed: dict[str, int] = field(default_factory=lambda: {GUARD_CEILING: 0, GUARD_VOTE: 0})
    suspected: int = 0
    random_mixed: int = 0


def active(p: MineConfig) -> bool:
    """True when `p` asks for a control this module applies (else the strategy's own path runs, unchanged)."""
    margins = p.relative_margin is not None or p.absolute_margin is not None
    return p.vote != Vote.NONE or p.random_negatives > 0 or (p.strategy == Strategy.RULE and margins)


def pool_params(p: MineConfig) -> MineConfig:
    """The strategy's settings for the candidate pool: `candidate_k` documents in rank order, no window, no guards.

    The pool is long enough for the window the controls select from (``range_max``, or ``range_min +
    num_negatives``) after the guards removed candidates.
    """
    need = p.range_min + p.num_negatives if p.range_max is None else p.range_max
    return replace(
        p,
        num_negatives=max(p.candidate_k, need),
        range_min=0,
        range_max=None,
        sampling_strategy=Sampling.TOP,
        relative_margin=None,
        absolute_margin=None,
        vote=Vote.NONE,
        random_negatives=0,
    )


def apply_controls(
    results: Sequence[PairResult],
    p: MineConfig,
    query_vecs: np.ndarray,
    corpus: VectorSource,
    excluded: Excluded,
    rng: np.random.Generator,
    *,
    members: Members | None = None,
    doc_keys: np.ndarray | None = None,
    query_keys: np.ndarray | None = None,
) -> tuple[list[PairResult], ControlStats]:
    """Guards, then the window, then the random mix, on every pair's ranked pool (pair order; seeded).

    Args:
        results: the strategy's pools (`pool_params`), each pair's candidates best first with distances.
        p: the user's settings (margins, vote, window, sampling, num_negatives, random_negatives, seed).
        query_vecs, corpus: the fused vectors (for distances the strategy did not compute).
        excluded: per query row, corpus rows that may never be negatives (for the random mix).
        rng: draws of the "random" window sampling, in pair order (one generator per run).
        members: the ensemble's own vectors; needed by `p.vote`.
        doc_keys, query_keys: id keys of the random mix's draws (`sampling.id_keys`), stable under corpus edits.

    Returns:
        (results with `negatives` selected and `suspected` set, what the controls removed).

    Raises:
        ValueError: a vote without members.
    """
    if p.vote != Vote.NONE and (members is None or not members.names):
        raise ValueError("vote needs the ensemble members' vectors")
    stats = ControlStats()
    hard = p.num_negatives - p.random_negatives
    need = p.range_min + hard if p.range_max is None else p.range_max
    out: list[PairResult] = []
    for r in results:
        pool = _with_distances(r, query_vecs, corpus)
        keep, suspected = _guard(pool.negatives, r, p, members, stats)
        window = keep[p.range_min : need]
        if p.sampling_strategy == Sampling.RANDOM and len(window) > hard:
            window = [window[j] for j in np.sort(rng.choice(len(window), size=hard, replace=False))]
        chosen = window[:hard]
        stats.suspected += len(suspected)
        out.append(replace(pool, negatives=chosen, suspected=suspected[:MAX_SUSPECTED]))
    if p.random_negatives:
        out = _mix_random(out, p, query_vecs, corpus, excluded, doc_keys, query_keys, stats)
    for r in out:
        r.fallback_used = any(n.source.startswith("fallback") for n in r.negatives)
    return out, stats


def _with_distances(r: PairResult, query_vecs: np.ndarray, corpus: VectorSource) -> PairResult:
    """`r` with d_pd computed where the strategy left it out (top-k keeps only d_qd and d_qp)."""
    if all(n.d_pd is not None and n.d_qd is not None and n.d_qp is not None for n in r.negatives):
        return r
    from hnm_cli.mining.sampling import fill_distances

    return fill_distances(query_vecs, corpus, [r])[0]


def _guard(
    cands: list[Negative], r: PairResult, p: MineConfig, members: Members | None, stats: ControlStats
) -> tuple[list[Negative], list[Negative]]:
    """Split a pool into (kept, suspected positives), both in rank order; a suspect's source names its guard."""
    if not cands:
        return [], []
    s_qd = np.array([1.0 - float(n.d_qd) for n in cands])  # type: ignore[arg-type]
    s_qp = 1.0 - float(cands[0].d_qp)  # type: ignore[arg-type]
    ceiling = np.zeros(len(cands), dtype=bool)
    if p.relative_margin is not None:
        ceiling |= s_qd > s_qp * (1.0 - p.relative_margin)
    if p.absolute_margin is not None:
        ceiling |= s_qd > s_qp - p.absolute_margin
    voted = np.zeros(len(cands), dtype=bool)
    if p.vote != Vote.NONE:
        assert members is not None
        rows = np.array([n.doc_row for n in cands] + [r.pair.positive_row], dtype=np.int64)
        sims = members.similarities(r.pair.query_row, rows)
        above = (sims[:, :-1] > sims[:, -1:]).sum(axis=0)  # members ranking D above PD
        voted = above >= vote_threshold(p.vote, len(members.names))
    stats.removed[GUARD_CEILING] += int(ceiling.sum())
    stats.removed[GUARD_VOTE] += int((voted & ~ceiling).sum())
    keep = [n for n, c, v in zip(cands, ceiling, voted, strict=True) if not (c or v)]
    suspected = [
        replace(n, source=GUARD_CEILING if c else GUARD_VOTE)
        for n, c, v in zip(cands, ceiling, voted, strict=True)
        if c or v
    ]
    return keep, suspected


def vote_threshold(vote: Vote, n_members: int) -> int:
    """How many members must rank D above PD for the vote to call D a likely positive."""
    if vote == Vote.ANY:
        return 1
    if vote == Vote.MAJORITY:
        return n_members // 2 + 1
    if vote == Vote.ALL:
        return n_members
    return n_members + 1  # none: never


def _mix_random(
    results: list[PairResult],
    p: MineConfig,
    query_vecs: np.ndarray,
    corpus: VectorSource,
    excluded: Excluded,
    doc_keys: np.ndarray | None,
    query_keys: np.ndarray | None,
    stats: ControlStats,
) -> list[PairResult]:
    """Append `p.random_negatives` seeded random documents to every pair, never one it already has or a suspect."""
    from hnm_cli.mining.sampling import fill_distances

    extra = p.random_negatives + p.num_negatives + MAX_SUSPECTED  # enough draws to skip what the pair already holds
    draws = sample_random(
        corpus.n,
        [r.pair for r in results],
        excluded,
        extra,
        p.seed,
        doc_keys=doc_keys,
        query_keys=query_keys,
    )
    draws = fill_distances(query_vecs, corpus, draws)
    out = []
    for r, d in zip(results, draws, strict=True):
        taken = {n.doc_row for n in r.negatives} | {n.doc_row for n in r.suspected or []}
        picks = [replace(n, source=SOURCE_RANDOM) for n in d.negatives if n.doc_row not in taken]
        picks = picks[: p.random_negatives]
        stats.random_mixed += len(picks)
        out.append(replace(r, negatives=[*r.negatives, *picks]))
    return out


def fn_risk(results: Sequence[PairResult], members: Members | None = None) -> dict[str, Any]:
    """False-negative risk of the chosen negatives: the shares that sit where unlabelled positives live.

    - ``above_positive``: s(Q,D) > s(Q,PD) (the rule's C1 zone);
    - ``above_percpos``: s(Q,D) > 0.95 s(Q,PD) (NV-Retriever's PercPos ceiling);
    - ``near_duplicate``: s(PD,D) >= 0.95;
    - ``members_disagree`` (with members): the members do not all agree whether D is above PD.
    Shares are over the negatives that have distances; ``negatives`` counts those.
    """
    n = above = percpos = near = disagree = 0
    for r in results:
        for neg in r.negatives:
            if neg.d_qd is None or neg.d_qp is None:
                continue
            n += 1
            s_qd, s_qp = 1.0 - neg.d_qd, 1.0 - neg.d_qp
            above += s_qd > s_qp
            percpos += s_qd > PERCPOS_SHARE * s_qp
            near += neg.d_pd is not None and 1.0 - neg.d_pd >= NEAR_DUPLICATE_SIMILARITY
        if members is not None and members.names and r.negatives:
            rows = np.array([x.doc_row for x in r.negatives] + [r.pair.positive_row], dtype=np.int64)
            sims = members.similarities(r.pair.query_row, rows)
            votes = (sims[:, :-1] > sims[:, -1:]).sum(axis=0)
            disagree += int(((votes > 0) & (votes < len(members.names))).sum())

    def share(k: int) -> float | None:
        return round(k / n, 6) if n else None

    risk: dict[str, Any] = {
        "negatives": n,
        "above_positive": share(above),
        "above_percpos": share(percpos),
        "near_duplicate": share(near),
    }
    if members is not None and members.names:
        risk["members"] = list(members.names)
        risk["members_disagree"] = share(disagree)
    return risk
