"""The Python API: stage functions behave like the CLI, in-memory mining agrees with `hnm mine`, no side effects."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import orjson
import pytest

import hnm_cli as hnm
from hnm_cli.artifacts.vectors import load_vectors
from hnm_cli.errors import ConfigError, DataError


def _rows(mine_dir: Path) -> list[dict]:
    return [orjson.loads(x) for x in (mine_dir / "rows-00000.jsonl").read_bytes().splitlines()]


def test_stage_functions_write_the_cli_artifacts_and_skip_when_up_to_date(tiny_data: Path, tmp_path: Path) -> None:
    embed = hnm.embed(tiny_data, tmp_path / "embed", models=["hash:16"])
    assert embed.stage == "embed" and (tmp_path / "embed" / "hash-16" / "corpus").is_dir()
    mined = hnm.mine(tmp_path / "embed", tiny_data, tmp_path / "mine", strategy="topk", num_negatives=2)
    assert mined.stats["pairs"] == 3
    again = hnm.mine(tmp_path / "embed", tiny_data, tmp_path / "mine", strategy="topk", num_negatives=2)
    assert again.up_to_date
    with pytest.raises(ConfigError, match="mine.strategy must be one of"):
        hnm.mine(tmp_path / "embed", tiny_data, tmp_path / "m2", strategy="magic")


@pytest.mark.parametrize(
    "options", [{"strategy": "topk", "num_negatives": 2}, {"num_negatives": 2, "fallback": "next", "fill": "short"}]
)
def test_in_memory_mining_picks_what_hnm_mine_picks(tiny_data: Path, tmp_path: Path, options: dict) -> None:
    from conftest import TINY_CORPUS, TINY_QRELS, TINY_QUERIES

    hnm.embed(tiny_data, tmp_path / "embed", models=["hash:16"])
    hnm.mine(tmp_path / "embed", tiny_data, tmp_path / "mine", **options)
    c_ids, c_vecs = load_vectors(tmp_path / "embed" / "hash-16" / "corpus")
    q_ids, q_vecs = load_vectors(tmp_path / "embed" / "hash-16" / "queries")
    corpus = {d["_id"]: d["title"] + " " + d["text"] for d in TINY_CORPUS}
    queries = {q["_id"]: q["text"] for q in TINY_QUERIES}
    assert c_ids == list(corpus) and q_ids == list(queries)
    got = hnm.mine_hard_negatives(
        queries, corpus, TINY_QRELS["train"], query_vectors=q_vecs, corpus_vectors=c_vecs, **options
    )
    want = _rows(tmp_path / "mine")
    assert [(r["query_id"], r["positive_id"]) for r in got] == [(r["query_id"], r["positive_id"]) for r in want]
    for a, b in zip(got, want, strict=True):
        assert [(n["doc_id"], n["source"], n["rank"]) for n in a["negatives"]] == [
            (n["doc_id"], n["source"], n["rank"]) for n in b["negatives"]
        ]
        assert np.allclose([n["d_qd"] for n in a["negatives"]], [n["d_qd"] for n in b["negatives"]], atol=1e-6)


def test_in_memory_mining_encodes_and_returns_layouts() -> None:
    queries = ["deploy mysql on the cloud", "what is a vcn"]
    corpus = ["MySQL on the managed cloud", "MySQL on-premise", "VCN overview", "VNIC overview", "bananas"]
    triplets = hnm.mine_hard_negatives(
        queries, corpus, [(0, 0), (1, 2)], models=["hash:16", "hash:8"], strategy="topk", output_format="triplet"
    )
    # one row per negative, 3 per pair by default (sentence-transformers' triplet layout and count)
    assert len(triplets) == 2 * 3 and set(triplets[0]) == {"anchor", "positive", "negative"}
    assert triplets[0]["anchor"] == queries[0] and triplets[0]["positive"] == corpus[0]
    ds = hnm.mine_hard_negatives(queries, corpus, {"0": ["0"]}, models=["hash:16"], num_negatives=1, as_dataset=True)
    assert ds.column_names == ["query_id", "positive_id", "negatives", "meta"]
    with pytest.raises(DataError, match="unknown document id '9'"):
        hnm.mine_hard_negatives(queries, corpus, [(0, 9)], models=["hash:16"])


def test_library_calls_leave_logging_and_environment_alone(tiny_data: Path, tmp_path: Path) -> None:
    env = dict(os.environ)
    hnm_logger = logging.getLogger("hnm")
    before = (list(logging.getLogger().handlers), list(hnm_logger.handlers), hnm_logger.level, hnm_logger.propagate)
    hnm.embed(tiny_data, tmp_path / "embed", models=["hash:16"])
    hnm.mine_hard_negatives(["q"], ["a", "b"], [(0, 0)], models=["hash:8"], strategy="random")
    after = (list(logging.getLogger().handlers), list(hnm_logger.handlers), hnm_logger.level, hnm_logger.propagate)
    assert after == before
    assert dict(os.environ) == env
