"""Leakage check of `hnm eval`: a train-reranker model must not have been trained on the evaluated queries.

Reads the model's upstream mine artifact (its manifest and row shards); no other side effect than a warning log.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from hnm_cli.artifacts.files import iter_jsonl
from hnm_cli.artifacts.manifest import Manifest, load_manifest
from hnm_cli.errors import LeakageError
from hnm_cli.evaluation.rerank import RerankerRef

log = logging.getLogger("hnm")


def mine_manifest(artifact: Manifest) -> Manifest | None:
    """The mine manifest a train-reranker artifact was trained from, or None when none is recorded or it has no manifest.

    Args:
        artifact: the train-reranker manifest.

    Returns:
        The upstream mine manifest (from its `inputs`), or None.
    """
    for entry in artifact.inputs:
        if entry.get("stage") == "mine" or entry.get("role") == "mined":
            return load_manifest(Path(entry["path"]))
    return None


def check_leakage(refs: Sequence[RerankerRef], split: str, eval_qids: set[str]) -> int:
    """Refuse a train-reranker artifact trained on the evaluation split or on any evaluated query.

    Two checks, from the artifact's upstream mine manifest: its split name, and the query ids of its rows.
    A model given as a plain folder cannot be checked (that is the user's explicit choice).

    Args:
        refs: the classified models; only train-reranker artifacts are checked.
        split: the split being evaluated.
        eval_qids: the evaluated query ids (empty: check the split names only).

    Returns:
        The number of artifacts whose training data could not be located (logged as a warning).

    Raises:
        LeakageError: the model was trained on the evaluation split or on evaluated queries.
    """
    unchecked = 0
    for ref in refs:
        if ref.artifact is None:
            continue
        # train-reranker records its own overlap check (it can be forced); an overlap with this split is final.
        stats = ref.artifact.stats
        if stats.get("eval_split") == split and stats.get("eval_overlap"):
            raise LeakageError(
                f"--model {ref.name}: {ref.source} was trained with {stats['eval_overlap']} queries of the "
                f"'{split}' split (train-reranker --allow-eval-overlap)",
                hint="evaluate on a split the model never saw (--split), or retrain without the overlap",
            )
        mine = mine_manifest(ref.artifact)
        if mine is None:
            unchecked += 1
            log.warning(
                "eval: cannot check %s for leakage (its mine artifact is not readable); "
                "make sure it was not trained on '%s' queries",
                ref.source,
                split,
            )
            continue
        if mine.params.get("split") == split:
            raise LeakageError(
                f"--model {ref.name}: {ref.source} was trained on the '{split}' split, the split being evaluated",
                hint="evaluate on a split the model never saw (--split), or train on another split",
            )
        seen = {row.get("query_id") for shard in sorted(mine.path.glob("rows-*.jsonl")) for row in iter_jsonl(shard)}
        overlap = sorted(q for q in seen if q in eval_qids)
        if overlap:
            raise LeakageError(
                f"--model {ref.name}: {ref.source} was trained on {len(overlap)} of the {len(eval_qids)} "
                f"evaluated queries (e.g. '{overlap[0]}')",
                hint="mine and train on a split disjoint from the evaluation split",
            )
    return unchecked
