"""Hard-negative selection on vectors: the paper's rule, dense top-k, random and BM25, behind one entry point."""

from __future__ import annotations

from hnm_cli.mining.results import (
    SOURCE_FALLBACK_NEXT,
    SOURCE_RANDOM,
    SOURCE_RULE,
    SOURCE_TOPK,
    AuditRecord,
    Excluded,
    MiningStats,
    Negative,
    Pair,
    PairResult,
)
from hnm_cli.mining.rule import mine_rule
from hnm_cli.mining.sampling import fill_distances, sample_random
from hnm_cli.mining.strategies import Texts, mine_negatives
from hnm_cli.mining.topk import mine_topk

__all__ = [
    "mine_negatives",
    "Texts",
    "Pair",
    "Negative",
    "PairResult",
    "AuditRecord",
    "MiningStats",
    "Excluded",
    "mine_rule",
    "mine_topk",
    "sample_random",
    "fill_distances",
    "SOURCE_RULE",
    "SOURCE_FALLBACK_NEXT",
    "SOURCE_TOPK",
    "SOURCE_RANDOM",
]
