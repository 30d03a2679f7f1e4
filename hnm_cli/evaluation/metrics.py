"""Pure ranking metrics over dict-of-dict qrels and runs (ir_measures / ranx shapes), never mutating inputs.

Conventions (those of trec_eval and ranx, which the tests check to 1e-9):
  * qrels: {query_id: {doc_id: relevance}}; a document is relevant when relevance > 0. Queries without any
    relevant document are skipped (their count is reported), as trec_eval does.
  * run: {query_id: {doc_id: score}}. A query in the qrels but absent from the run scores 0 on every metric:
    in a reranking evaluation that is a first-stage miss, not a query to drop.
  * Ranking: score descending, ties broken by doc id ascending (a deterministic order that does not depend on
    dict insertion order). ranx breaks ties differently, so compare with it on distinct scores.
  * nDCG uses the graded gain `rel` (trec_eval's and ranx's `ndcg`, Järvelin & Kekäläinen) with a log2
    discount; the ideal ranking is the qrels sorted by relevance.
  * MAP@k divides by the total number of relevant documents (trec_eval `map_cut`), not by min(k, R).
  * Keys are lowercase `name@k`: `mrr@3`, `mrr@10`, `ndcg@10`, `map@100`, `recall@10`, `recall@100`,
    `precision@10`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

Qrels = Mapping[str, Mapping[str, int]]
Run = Mapping[str, Mapping[str, float]]

#: The metrics every eval reports, in report order; `mrr@10` is the primary metric.
DEFAULT_METRICS: tuple[str, ...] = ("mrr@3", "mrr@10", "ndcg@10", "map@100", "recall@10", "recall@100")
PRIMARY_METRIC = "mrr@10"


def ranked(scores: Mapping[str, float]) -> list[str]:
    """Doc ids ordered by score descending, then doc id ascending (the tie-break every metric here uses)."""
    return sorted(scores, key=lambda d: (-scores[d], d))


def _relevant(judged: Mapping[str, int]) -> dict[str, int]:
    return {d: r for d, r in judged.items() if r > 0}


def reciprocal_rank(ranking: list[str], rel: Mapping[str, int], k: int) -> float:
    """1 / rank of the first relevant document within the top k, else 0."""
    for i, doc in enumerate(ranking[:k], 1):
        if doc in rel:
            return 1.0 / i
    return 0.0


def ndcg(ranking: list[str], rel: Mapping[str, int], k: int) -> float:
    """Normalised DCG at k with gain = relevance and discount log2(rank + 1)."""
    dcg = sum(rel.get(doc, 0) / math.log2(i + 1) for i, doc in enumerate(ranking[:k], 1))
    ideal = sorted(rel.values(), reverse=True)[:k]
    idcg = sum(g / math.log2(i + 1) for i, g in enumerate(ideal, 1))
    return dcg / idcg if idcg > 0 else 0.0


def average_precision(ranking: list[str], rel: Mapping[str, int], k: int) -> float:
    """Sum of precision at each relevant hit within the top k, divided by the number of relevant documents."""
    hits = 0
    total = 0.0
    for i, doc in enumerate(ranking[:k], 1):
        if doc in rel:
            hits += 1
            total += hits / i
    return total / len(rel) if rel else 0.0


def recall(ranking: list[str], rel: Mapping[str, int], k: int) -> float:
    """Fraction of the relevant documents found in the top k."""
    return sum(1 for doc in ranking[:k] if doc in rel) / len(rel) if rel else 0.0


def precision(ranking: list[str], rel: Mapping[str, int], k: int) -> float:
    """Relevant documents in the top k divided by k (trec_eval's P@k: a short list still divides by k)."""
    return sum(1 for doc in ranking[:k] if doc in rel) / k


_FUNCS: dict[str, Callable[[list[str], Mapping[str, int], int], float]] = {
    "mrr": reciprocal_rank,
    "ndcg": ndcg,
    "map": average_precision,
    "recall": recall,
    "precision": precision,
}


def parse_metric(key: str) -> tuple[str, int]:
    """Split `ndcg@10` into ("ndcg", 10).

    Raises:
        ValueError: an unknown metric name or a cutoff that is not a positive integer.
    """
    name, sep, cut = key.partition("@")
    if name not in _FUNCS or not sep or not cut.isdigit() or int(cut) < 1:
        raise ValueError(f"unknown metric {key!r}; expected one of {', '.join(_FUNCS)} with @k, e.g. ndcg@10")
    return name, int(cut)


@dataclass(frozen=True)
class Evaluation:
    """Metrics of one run: per-query values, their means, and the queries left out.

    Attributes:
        per_query: {query_id: {metric: value}} for every query with at least one relevant document.
        mean: {metric: mean over per_query} (0.0 for every metric when no query is judged).
        skipped: query ids in the qrels without any relevant document (sorted).
        missing: judged query ids absent from the run (they score 0; sorted).
    """

    per_query: dict[str, dict[str, float]]
    mean: dict[str, float]
    skipped: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)


def per_query_metrics(qrels: Qrels, run: Run, metrics: Iterable[str] = DEFAULT_METRICS) -> dict[str, dict[str, float]]:
    """Per-query metric values for every query of `qrels` that has a relevant document.

    Args:
        qrels: {query_id: {doc_id: relevance}}; relevance > 0 means relevant.
        run: {query_id: {doc_id: score}}; a judged query missing here scores 0.
        metrics: metric keys such as `mrr@10`.

    Returns:
        {query_id: {metric: value}}, queries in sorted order.
    """
    parsed = [(key, *parse_metric(key)) for key in metrics]
    out: dict[str, dict[str, float]] = {}
    for qid in sorted(qrels):
        rel = _relevant(qrels[qid])
        if not rel:
            continue
        ranking = ranked(run.get(qid, {}))
        out[qid] = {key: _FUNCS[name](ranking, rel, k) for key, name, k in parsed}
    return out


def evaluate(qrels: Qrels, run: Run, metrics: Iterable[str] = DEFAULT_METRICS) -> Evaluation:
    """Per-query values and means of `metrics` for `run` against `qrels`.

    Args:
        qrels: {query_id: {doc_id: relevance}}.
        run: {query_id: {doc_id: score}}.
        metrics: metric keys such as `mrr@10`, `ndcg@10`, `map@100`, `recall@100`, `precision@10`.

    Returns:
        An Evaluation with per-query values, means, skipped (no relevant doc) and missing (not in the run) ids.
    """
    metrics = tuple(metrics)
    per_query = per_query_metrics(qrels, run, metrics)
    skipped = sorted(q for q in qrels if q not in per_query)
    missing = sorted(q for q in per_query if q not in run)
    return Evaluation(per_query=per_query, mean=mean_metrics(per_query, metrics), skipped=skipped, missing=missing)


def mean_metrics(per_query: Mapping[str, Mapping[str, float]], metrics: Iterable[str]) -> dict[str, float]:
    """Mean of each metric over the queries of `per_query` (0.0 when there are none)."""
    n = len(per_query)
    return {key: (sum(v[key] for v in per_query.values()) / n if n else 0.0) for key in metrics}
