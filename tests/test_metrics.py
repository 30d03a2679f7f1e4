"""Metric golden values computed by hand, immutability, and agreement with ranx on random runs."""

from __future__ import annotations

import copy
import math
import random

import pytest

from hnm_cli.evaluation.metrics import DEFAULT_METRICS, evaluate, parse_metric, per_query_metrics, ranked

QRELS = {
    "q1": {"a": 1, "b": 0, "c": 2},  # graded: c is more relevant than a; b judged non-relevant
    "q2": {"x": 1},
    "q3": {"y": 0},  # no relevant document: skipped
    "q4": {"z": 1},  # absent from the run: a first-stage miss, scores 0
}
RUN = {
    "q1": {"a": 0.5, "b": 0.9, "c": 0.1, "d": 0.7},  # order b, d, a, c
    "q2": {"x": 1.0, "w": 1.0},  # a tie: doc id breaks it, so w (rank 1) before x (rank 2)
    "q3": {"y": 3.0},
}
KEYS = ("mrr@3", "mrr@10", "ndcg@10", "map@100", "recall@2", "recall@10", "precision@4")


def test_hand_computed_values() -> None:
    got = per_query_metrics(QRELS, RUN, KEYS)
    assert sorted(got) == ["q1", "q2", "q4"]
    # q1: relevant a (rel 1) at rank 3 and c (rel 2) at rank 4.
    dcg = 1 / math.log2(4) + 2 / math.log2(5)
    idcg = 2 / math.log2(2) + 1 / math.log2(3)
    assert got["q1"] == pytest.approx(
        {
            "mrr@3": 1 / 3,
            "mrr@10": 1 / 3,
            "ndcg@10": dcg / idcg,
            "map@100": (1 / 3 + 2 / 4) / 2,
            "recall@2": 0.0,
            "recall@10": 1.0,
            "precision@4": 2 / 4,
        },
        abs=1e-12,
    )
    assert got["q1"]["ndcg@10"] == pytest.approx(0.5174418, abs=1e-7)
    # q2: the tie puts x at rank 2.
    assert got["q2"] == pytest.approx(
        {
            "mrr@3": 0.5,
            "mrr@10": 0.5,
            "ndcg@10": 1 / math.log2(3),
            "map@100": 0.5,
            "recall@2": 1.0,
            "recall@10": 1.0,
            "precision@4": 0.25,
        },
        abs=1e-12,
    )
    assert got["q4"] == {k: 0.0 for k in KEYS}


def test_evaluate_mean_skipped_missing() -> None:
    result = evaluate(QRELS, RUN, KEYS)
    assert result.skipped == ["q3"]
    assert result.missing == ["q4"]
    assert result.mean["mrr@10"] == pytest.approx((1 / 3 + 1 / 2 + 0) / 3, abs=1e-12)
    assert result.mean["recall@10"] == pytest.approx(2 / 3, abs=1e-12)


def test_inputs_not_mutated() -> None:
    qrels, run = copy.deepcopy(QRELS), copy.deepcopy(RUN)
    evaluate(qrels, run)
    assert qrels == QRELS and run == RUN


def test_ranked_tie_break_and_default_keys() -> None:
    assert ranked({"b": 1.0, "a": 1.0, "c": 2.0}) == ["c", "a", "b"]
    assert DEFAULT_METRICS == ("mrr@3", "mrr@10", "ndcg@10", "map@100", "recall@10", "recall@100")


@pytest.mark.parametrize("bad", ["mrr", "mrr@0", "hits@10", "ndcg@x"])
def test_parse_metric_rejects(bad: str) -> None:
    with pytest.raises(ValueError, match="unknown metric"):
        parse_metric(bad)


def test_empty_evaluation() -> None:
    result = evaluate({"q": {"d": 0}}, {})
    assert result.per_query == {} and result.skipped == ["q"]
    assert result.mean == {k: 0.0 for k in DEFAULT_METRICS}


def _random_case(seed: int) -> tuple[dict, dict]:
    rng = random.Random(seed)
    docs = [f"d{i}" for i in range(150)]
    qrels: dict[str, dict[str, int]] = {}
    run: dict[str, dict[str, float]] = {}
    for q in range(40):
        qid = f"q{q}"
        judged = rng.sample(docs, rng.randint(1, 8))
        qrels[qid] = {d: rng.randint(1, 3) for d in judged}
        retrieved = rng.sample(docs, 120)  # longer than every cutoff, so precision/recall conventions agree
        scores = rng.sample(range(100_000), len(retrieved))  # distinct: ranx breaks ties its own way
        run[qid] = {d: s / 1000.0 for d, s in zip(retrieved, scores, strict=True)}
    return qrels, run


@pytest.mark.slow  # importing ranx JIT-loads numba: ~6 s even with its cache warm
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_agrees_with_ranx(seed: int) -> None:
    ranx = pytest.importorskip("ranx")
    qrels, run = _random_case(seed)
    ours = per_query_metrics(qrels, run, DEFAULT_METRICS)
    names = {"mrr@3": "mrr@3", "mrr@10": "mrr@10", "ndcg@10": "ndcg@10", "map@100": "map@100"}
    names |= {"recall@10": "recall@10", "recall@100": "recall@100"}
    ref_qrels = ranx.Qrels(copy.deepcopy(qrels))
    ref_run = ranx.Run(copy.deepcopy(run))
    for key, ranx_key in names.items():
        ref = ranx.evaluate(ref_qrels, ref_run, ranx_key, return_mean=False)
        ref_by_q = dict(zip(ref_qrels.keys(), ref, strict=True))
        for qid, values in ours.items():
            assert values[key] == pytest.approx(float(ref_by_q[qid]), abs=1e-9), (key, qid)
