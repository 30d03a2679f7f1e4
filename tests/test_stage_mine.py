"""`hnm mine` stage and command: hand-built geometry with known answers, the CLI contract, bad inputs,
exclusions under every strategy and fallback, determinism, audit -> from-audit, exports and plots.

Geometry (unit vectors, three orthogonal 2-d planes, angles from the plane's query; cosine distance
d = 1 - cos(angle)). Documents of another plane are at distance 1 from a query, so they never pass C1.

    plane A (q1, positive d1 at 40deg): d2 at -20deg passes (C1 .060 < .234, C2 .060 < .500);
        d4 at 30deg fails C2 only (a near-paraphrase of d1); d8 at -35deg passes but ranks after d2.
    plane B (q2, positive d3 at 10deg, the top-1): nothing is closer than PD -> no negative;
        d7 at -50deg fails C1 only (and passes C2, so fallback "next" picks it).
    plane C (q3, positive d5 at 30deg): d6 at 25deg fails C2 only.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import orjson
import pytest
from artifact_builders import make_embed_artifact
from conftest import TINY_CORPUS, TINY_QUERIES, write_beir

from hnm_cli.artifacts.manifest import load_manifest
from hnm_cli.artifacts.vectors import resolve_vector_set
from hnm_cli.config import MineConfig
from hnm_cli.errors import ArtifactMismatchError, IncompleteArtifactError, LeakageError
from hnm_cli.inputs import resolve_data
from hnm_cli.stages import mine
from hnm_cli.stages.mine_outputs import summary_line

DIM = 6
PLANE = {"A": 0, "B": 2, "C": 4}
DOC_ANGLES = {  # doc id -> (plane, degrees from the plane's query)
    "d1": ("A", 40),
    "d2": ("A", -20),
    "d3": ("B", 10),
    "d4": ("A", 30),
    "d5": ("C", 30),
    "d6": ("C", 25),
    "d7": ("B", -50),
    "d8": ("A", -35),
}
QUERY_PLANES = {"q1": "A", "q2": "B", "q3": "C", "q4": "A"}


# The known answers below are the paper's rule itself: one negative, no fallback, no ceiling (the default recipe is
# the dense top 3 below 95% of the positive's score).
PAPER = {"strategy": "rule", "num_negatives": 1, "fallback": "none", "fill": "empty", "relative_margin": None}


def paper_config(**kw) -> MineConfig:
    return MineConfig(**{**PAPER, **kw})


def unit(plane: str, degrees: float) -> np.ndarray:
    v = np.zeros(DIM, dtype=np.float32)
    a = math.radians(degrees)
    v[PLANE[plane]], v[PLANE[plane] + 1] = math.cos(a), math.sin(a)
    return v


def corpus_vectors(angles=None, ids=None) -> np.ndarray:
    angles = angles or DOC_ANGLES
    ids = ids or [d["_id"] for d in TINY_CORPUS]
    return np.stack([unit(*angles[d]) for d in ids])


def query_vectors() -> np.ndarray:
    return np.stack([unit(QUERY_PLANES[q["_id"]], 0) for q in TINY_QUERIES])


@pytest.fixture
def setup(tmp_path: Path):
    """(data dir, vectors dir, out dir) for the tiny geometry."""
    data = write_beir(tmp_path / "data")
    embed = make_embed_artifact(tmp_path, {"m": (corpus_vectors(), query_vectors())}, data=data)
    return data, embed / "m", tmp_path / "mine"


def read_rows(out: Path) -> list[dict]:
    rows = []
    for path in sorted(out.glob("rows-*.jsonl")):
        rows += [orjson.loads(line) for line in path.read_bytes().splitlines()]
    return rows


def negatives(out: Path) -> dict[tuple[str, str], list[str]]:
    return {(r["query_id"], r["positive_id"]): [n["doc_id"] for n in r["negatives"]] for r in read_rows(out)}


def run(setup, progress=False, **kw):
    data, vectors, out = setup
    opts = {k: kw.pop(k) for k in ("audit", "export", "plot", "from_audit", "force") if k in kw}
    return mine.run(vectors, resolve_data(data), out, MineConfig(**PAPER).merged(**kw), progress=progress, **opts)


# ---------------------------------------------------------------------------------------------
# Known answers
# ---------------------------------------------------------------------------------------------


def test_rule_known_answer(setup):
    manifest = run(setup)
    out = setup[2]
    assert negatives(out) == {("q1", "d1"): ["d2"], ("q2", "d3"): [], ("q3", "d5"): []}
    row = read_rows(out)[0]
    neg = row["negatives"][0]
    assert (neg["source"], neg["rank"]) == ("rule", 1)
    assert neg["d_qd"] == pytest.approx(1 - math.cos(math.radians(20)), abs=1e-6)
    assert neg["d_qp"] == pytest.approx(1 - math.cos(math.radians(40)), abs=1e-6)
    assert neg["d_pd"] == pytest.approx(1 - math.cos(math.radians(60)), abs=1e-6)
    assert row["meta"] == {}
    stats = manifest.stats
    assert (stats["pairs"], stats["pairs_with_zero"], stats["selected"]) == (3, 2, 1)
    assert stats["selection_rate"] == pytest.approx(1 / 3)
    assert stats["rejected_c2"] == 2  # d4 for (q1, d1), d6 for (q3, d5)
    assert orjson.loads((out / "stats.json").read_bytes()) == {k: v for k, v in stats.items() if k != "seconds"}
    assert manifest.stage == "mine" and (out / "manifest.json").is_file()
    paths = [o["path"] for o in manifest.outputs]  # rows, stats, and the state an --update starts from
    assert paths == ["rows-00000.jsonl", "stats.json", "state/docs.jsonl", "state/queries.jsonl", "state/space.json"]


def test_rule_two_negatives_in_distance_order(setup):
    run(setup, num_negatives=2)
    assert negatives(setup[2])[("q1", "d1")] == ["d2", "d8"]
    assert [n["rank"] for n in read_rows(setup[2])[0]["negatives"]] == [1, 3]


def test_fallback_next_fills_the_top1_pair_with_a_c2_passing_doc(setup):
    manifest = run(setup, fallback="next")
    got = negatives(setup[2])
    assert got[("q2", "d3")] == ["d7"]
    assert read_rows(setup[2])[1]["negatives"][0]["source"] == "fallback-next"
    assert got[("q1", "d1")] == ["d2"]
    assert manifest.stats["fallback_pairs"] >= 1


def test_topk_and_percpos(setup):
    run(setup, strategy="topk")
    assert negatives(setup[2]) == {("q1", "d1"): ["d2"], ("q2", "d3"): ["d7"], ("q3", "d5"): ["d6"]}
    # TopK-PercPos: sim(Q,D) <= 0.95 sim(Q,PD) drops every same-plane doc of q1 (cos 20/30/35 > .95 cos 40).
    manifest = run(setup, strategy="topk", relative_margin=0.05, force=True)
    assert negatives(setup[2])[("q1", "d1")] == ["d3"]  # the first other-plane doc (sim 0), lowest row
    assert manifest.stats["rejected_by"] == {"relative_margin": 4}  # d2, d4, d8 for q1; d6 for q3
    assert "removed by relative_margin 4" in summary_line(manifest.stats, paper_config(strategy="topk"), 0.1, False)


def test_forced_remine_with_the_same_rows_keeps_the_digest(setup):
    # stats.json holds the mining time, so it differs on every run; downstream stages must not rerun for it.
    first = run(setup, plot=False)
    again = run(setup, force=True)
    assert (setup[2] / "stats.json").is_file() and again.digest == first.digest
    assert {o["path"]: o.get("downstream", True) for o in again.outputs}["stats.json"] is False


def test_ties_break_by_lower_row(tmp_path: Path):
    angles = dict(DOC_ANGLES, d8=("A", -20))  # d8 now has exactly d2's vector
    data = write_beir(tmp_path / "data")
    embed = make_embed_artifact(tmp_path, {"m": (corpus_vectors(angles), query_vectors())}, data=data)
    mine.run(embed / "m", resolve_data(data), tmp_path / "mine", paper_config(num_negatives=2), progress=False)
    assert negatives(tmp_path / "mine")[("q1", "d1")] == ["d2", "d8"]


def test_duplicate_text_of_a_positive_is_never_a_negative(tmp_path: Path):
    # d9 repeats d1's text (other case and spacing) and sits where the rule would pick it first.
    d1 = TINY_CORPUS[0]
    corpus = [*TINY_CORPUS, {"_id": "d9", "title": d1["title"].upper(), "text": "  " + d1["text"].replace(" ", "  ")}]
    angles = dict(DOC_ANGLES, d9=("A", -5))
    ids = [d["_id"] for d in corpus]
    data = write_beir(tmp_path / "data", corpus=corpus)
    embed = make_embed_artifact(tmp_path, {"m": (corpus_vectors(angles, ids), query_vectors())}, data=data)
    for strategy, fallback in [("rule", "none"), ("rule", "next"), ("topk", "none"), ("rule", "random")]:
        out = tmp_path / f"mine-{strategy}-{fallback}"
        cfg = paper_config(strategy=strategy, fallback=fallback, num_negatives=3)
        manifest = mine.run(embed / "m", resolve_data(data), out, cfg, progress=False)
        got = negatives(out)
        assert not {"d1", "d9"} & set(got[("q1", "d1")]), (strategy, fallback)
        assert all(pos not in negs for (_, pos), negs in got.items()), (strategy, fallback)
        assert manifest.stats["duplicates_excluded"] == 1
    assert negatives(tmp_path / "mine-rule-none")[("q1", "d1")] == ["d2", "d8"]


def test_document_equal_to_the_query_is_never_its_negative(tmp_path: Path):
    # Quora/ArguAna layout: the corpus holds the query itself (d9 under a title, d10 as the bare text). Both
    # sit nearer q1 than d1 and pass the rule; a reranker trained on them learns a text does not match itself.
    q1_text = next(q["text"] for q in TINY_QUERIES if q["_id"] == "q1")
    corpus = [
        *TINY_CORPUS,
        {"_id": "d9", "title": "A title", "text": q1_text.upper()},
        {"_id": "d10", "title": "", "text": " " + q1_text},
    ]
    angles = dict(DOC_ANGLES, d9=("A", -2), d10=("A", 1))
    ids = [d["_id"] for d in corpus]
    data = write_beir(tmp_path / "data", corpus=corpus)
    embed = make_embed_artifact(tmp_path, {"m": (corpus_vectors(angles, ids), query_vectors())}, data=data)
    for strategy in ("rule", "topk"):
        out = tmp_path / f"mine-{strategy}"
        manifest = mine.run(embed / "m", resolve_data(data), out, paper_config(strategy=strategy), progress=False)
        assert negatives(out)[("q1", "d1")] == ["d2"], strategy
        assert manifest.stats["query_duplicates_excluded"] == 2 and manifest.stats["duplicates_excluded"] == 0
    kept = mine.run(
        embed / "m", resolve_data(data), tmp_path / "kept", paper_config(exclude_query_duplicates=False), progress=False
    )
    assert negatives(tmp_path / "kept")[("q1", "d1")] == ["d10"]  # the opt-out really lets them through
    assert kept.stats["query_duplicates_excluded"] == 0


@pytest.mark.parametrize(
    ("strategy", "fallback"),
    [
        ("rule", "none"),
        ("rule", "next"),
        ("rule", "random"),
        ("rule", "bm25"),
        ("topk", "none"),
        ("random", "none"),
        ("bm25", "random"),
    ],
)
def test_no_positive_is_ever_a_negative(tmp_path: Path, strategy: str, fallback: str):
    # Random geometry, several positives per query: no positive of the query may appear, for any pair.
    rng = np.random.default_rng(7)
    corpus = [
        {"_id": f"d{i}", "title": "", "text": f"doc {i} " + " ".join(rng.choice(list("abcdefgh"), 5))}
        for i in range(60)
    ]
    queries = [{"_id": f"q{i}", "text": "query " + " ".join(rng.choice(list("abcdefgh"), 3))} for i in range(12)]
    qrels = {"train": [(f"q{i}", f"d{j}") for i in range(12) for j in rng.choice(60, 3, replace=False)]}
    data = write_beir(tmp_path / "data", corpus, queries, qrels)
    cv = rng.normal(size=(60, 8)).astype(np.float32)
    qv = rng.normal(size=(12, 8)).astype(np.float32)
    cv /= np.linalg.norm(cv, axis=1, keepdims=True)
    qv /= np.linalg.norm(qv, axis=1, keepdims=True)
    embed = make_embed_artifact(tmp_path, {"m": (cv, qv)}, data=data)
    cfg = paper_config(strategy=strategy, fallback=fallback, num_negatives=4, seed=3)
    mine.run(embed / "m", resolve_data(data), tmp_path / "mine", cfg, progress=False)
    pos: dict[str, set[str]] = {}
    for q, d in qrels["train"]:
        pos.setdefault(q, set()).add(d)
    rows = read_rows(tmp_path / "mine")
    assert len(rows) == 36
    assert all(not ({n["doc_id"] for n in r["negatives"]} & pos[r["query_id"]]) for r in rows)
    assert any(r["negatives"] for r in rows)


def test_random_and_bm25_strategies(setup):
    run(setup, strategy="random", num_negatives=2, seed=1)
    first = negatives(setup[2])
    assert all(len(v) == 2 for v in first.values())
    assert read_rows(setup[2])[0]["negatives"][0]["source"] == "random"
    assert read_rows(setup[2])[0]["negatives"][0]["d_qd"] is not None
    run(setup, strategy="random", num_negatives=2, seed=1, force=True)
    assert negatives(setup[2]) == first
    run(setup, strategy="random", num_negatives=2, seed=2)
    assert negatives(setup[2]) != first
    run(setup, strategy="bm25")
    got = negatives(setup[2])
    assert got[("q1", "d1")] == ["d2"]  # "mysql": the on-premise MySQL page, the managed one is the positive
    assert read_rows(setup[2])[0]["negatives"][0]["source"] == "bm25"


def test_hnsw_gives_the_same_negatives_as_exact(tmp_path: Path):
    rng = np.random.default_rng(0)
    n, nq, dim = 2000, 40, 16
    corpus = [{"_id": f"d{i}", "title": "", "text": f"document number {i}"} for i in range(n)]
    queries = [{"_id": f"q{i}", "text": f"query {i}"} for i in range(nq)]
    qrels = {"train": [(f"q{i}", f"d{j}") for i in range(nq) for j in rng.choice(n, 2, replace=False)]}
    data = write_beir(tmp_path / "data", corpus, queries, qrels)
    cv = rng.normal(size=(n, dim)).astype(np.float32)
    qv = cv[[int(d[1:]) for _, d in qrels["train"][::2]]] + 0.3 * rng.normal(size=(nq, dim)).astype(np.float32)
    cv /= np.linalg.norm(cv, axis=1, keepdims=True)
    qv /= np.linalg.norm(qv, axis=1, keepdims=True)
    embed = make_embed_artifact(tmp_path, {"m": (cv, qv)}, data=data)
    exact = mine.run(embed / "m", resolve_data(data), tmp_path / "exact", paper_config(num_negatives=3), progress=False)
    cfg = paper_config(
        num_negatives=3, index="hnsw", candidate_k=10, hnsw_m=8, hnsw_ef_construction=40, hnsw_ef_search=10
    )
    hnsw = mine.run(embed / "m", resolve_data(data), tmp_path / "hnsw", cfg, progress=False)
    assert read_rows(tmp_path / "hnsw") == read_rows(tmp_path / "exact")
    assert exact.stats["selected"] > 0
    assert (tmp_path / "hnsw" / "index" / "hnsw.bin").is_file()
    assert "index/hnsw.bin" in [o["path"] for o in hnsw.outputs]
    # The saved index is reused when the vectors and params match (forced rerun, same fingerprint).
    before = (tmp_path / "hnsw" / "index" / "hnsw.bin").stat().st_mtime_ns
    mine.run(embed / "m", resolve_data(data), tmp_path / "hnsw", cfg, force=True, progress=False)
    assert (tmp_path / "hnsw" / "index" / "hnsw.bin").stat().st_mtime_ns == before


# ---------------------------------------------------------------------------------------------
# Audit, from-audit, exports, plots
# ---------------------------------------------------------------------------------------------


def test_audit_then_from_audit_reproduces(setup, tmp_path: Path):
    data, vectors, out = setup
    manifest = run(setup, audit=True, num_negatives=2)
    audit_rows = [orjson.loads(x) for x in (out / "audit" / "rows-00000.jsonl").read_bytes().splitlines()]
    assert "audit/rows-00000.jsonl" in [o["path"] for o in manifest.outputs]
    assert set(audit_rows[0]) == {
        "query_id",
        "positive_id",
        "doc_id",
        "rank",
        "d_qd",
        "d_qp",
        "d_pd",
        "c1",
        "c2",
        "excluded",
        "selected",
    }
    by = {(r["query_id"], r["doc_id"]): r for r in audit_rows}
    assert (by["q1", "d4"]["c1"], by["q1", "d4"]["c2"], by["q1", "d4"]["selected"]) == (True, False, False)
    assert (by["q1", "d2"]["c1"], by["q1", "d2"]["c2"], by["q1", "d2"]["selected"]) == (True, True, True)
    assert ("q1", "d1") not in by  # PD itself is never a candidate
    assert [r["doc_id"] for r in audit_rows if r["selected"]] == ["d2", "d8"]

    again = tmp_path / "again"
    m2 = mine.run(vectors, resolve_data(data), again, paper_config(num_negatives=2), from_audit=out, progress=False)
    assert read_rows(again) == read_rows(out)
    assert m2.stats["selected"] == manifest.stats["selected"]
    # Fewer negatives and a similarity bound, still without any search.
    fewer = tmp_path / "fewer"
    mine.run(
        vectors, resolve_data(data), fewer, paper_config(num_negatives=1), from_audit=out / "audit", progress=False
    )
    assert negatives(fewer)[("q1", "d1")] == ["d2"]
    bounded = tmp_path / "bounded"
    cfg = paper_config(num_negatives=2, max_score=0.9)  # drops d2 (sim cos 20 = .94), keeps d8 (cos 35 = .82)
    mine.run(None, resolve_data(data), bounded, cfg, from_audit=out, progress=False)
    assert negatives(bounded)[("q1", "d1")] == ["d8"]


def test_from_audit_reproduces_the_rule_with_the_fill(setup, tmp_path: Path):
    # The rule with 3 negatives, fallback next, fill short (the default before issue 20): re-selecting from the
    # audit gives the rows a fresh run writes, fallback-next negatives (no rank) included.
    data, vectors, out = setup
    cfg = MineConfig(strategy="rule", relative_margin=None)
    mine.run(vectors, resolve_data(data), out, cfg, audit=True, progress=False)
    assert any(n["source"] == "fallback-next" for r in read_rows(out) for n in r["negatives"])
    again = tmp_path / "again"
    mine.run(vectors, resolve_data(data), again, cfg, from_audit=out, progress=False)
    assert read_rows(again) == read_rows(out)


def test_exports_load_with_datasets(setup, tmp_path: Path):
    datasets = pytest.importorskip("datasets")
    manifest = run(setup, export="triplet", num_negatives=2)
    path = setup[2] / "export" / "triplet.jsonl"
    ds = datasets.load_dataset("json", data_files=str(path), split="train", cache_dir=str(tmp_path / "cache"))
    assert ds.column_names == ["anchor", "positive", "negative"]
    assert ds[0] == {
        "anchor": TINY_QUERIES[0]["text"],
        "positive": f"{TINY_CORPUS[0]['title']} {TINY_CORPUS[0]['text']}",
        "negative": f"{TINY_CORPUS[1]['title']} {TINY_CORPUS[1]['text']}",
    }
    assert len(ds) == 2 and manifest.stats["export"]["rows"] == 2
    run(setup, export="labeled-list", num_negatives=2)
    assert not path.exists()  # the previous layout's file is stale and removed
    ds = datasets.load_dataset(
        "json",
        data_files=str(setup[2] / "export" / "labeled-list.jsonl"),
        split="train",
        cache_dir=str(tmp_path / "c2"),
    )
    assert ds.column_names == ["query", "docs", "labels"] and ds[0]["labels"] == [1, 0, 0]


def test_plots(setup):
    manifest = run(setup, plot=True, num_negatives=2)
    for name in ("pca.png", "margin_hist.png"):
        data = (setup[2] / "plots" / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
        assert f"plots/{name}" in [o["path"] for o in manifest.outputs]


# ---------------------------------------------------------------------------------------------
# Bad inputs: one Error line, no manifest left
# ---------------------------------------------------------------------------------------------


def test_qrels_query_without_vector(tmp_path: Path, cli):
    data = write_beir(tmp_path / "data")
    q_ids = ["q1", "q3", "q4"]
    qv = np.stack([unit(QUERY_PLANES[q], 0) for q in q_ids])
    embed = make_embed_artifact(tmp_path, {"m": (corpus_vectors(), qv)}, data=data, query_ids=q_ids)
    out = tmp_path / "mine"
    result = cli("mine", "--vectors", embed / "m", "--data", data, "--out", out)
    assert result.exit_code == 1
    qrels = data / "qrels" / "train.tsv"
    assert result.stderr == f"Error: {qrels}:3: field 'query-id': query id 'q2' has no vector in {embed / 'm'}\n"
    assert not (out / "manifest.json").exists()


def test_dimension_mismatch(tmp_path: Path, cli):
    data = write_beir(tmp_path / "data")
    embed = make_embed_artifact(tmp_path, {"m": (corpus_vectors(), np.ones((4, 4), dtype=np.float32) / 2)}, data=data)
    result = cli("mine", "--vectors", embed / "m", "--data", data, "--out", tmp_path / "mine")
    assert result.exit_code == 1
    assert result.stderr == (  # refused where the vector set is resolved, from the shards' headers
        f"Error: {embed / 'm'}: shards of different dimensions (corpus/vectors-00000.npy has dim 6, "
        f"queries/vectors-00000.npy has dim 4); the vector set is corrupt. Rebuild it: hnm embed ... --out {embed} "
        "--force\n"
    )
    assert not (tmp_path / "mine" / "manifest.json").exists()


def test_vectors_from_a_different_corpus(tmp_path: Path, cli):
    other = write_beir(tmp_path / "other", corpus=[{**d, "text": d["text"] + " (v2)"} for d in TINY_CORPUS])
    data = write_beir(tmp_path / "data")
    embed = make_embed_artifact(tmp_path, {"m": (corpus_vectors(), query_vectors())}, data=other)
    result = cli("mine", "--vectors", embed / "m", "--data", data, "--out", tmp_path / "mine")
    assert result.exit_code == 1
    lines = result.stderr.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(
        f"Error: {embed / 'm'} was built from a different corpus than {data / 'corpus.jsonl'} (sha256 "
    )
    assert not (tmp_path / "mine" / "manifest.json").exists()


def test_incomplete_vectors(setup, cli):
    data, vectors, out = setup
    (vectors / "manifest.json").unlink()
    result = cli("mine", "--vectors", vectors, "--data", data, "--out", out)
    assert result.exit_code == 1
    assert result.stderr == (
        f"Error: {vectors} is incomplete (no manifest.json). Rerun: hnm reduce --embeddings <embed dir> --out {vectors}\n"
    )
    with pytest.raises(IncompleteArtifactError):
        resolve_vector_set(vectors)


def test_leakage_guard(setup, cli):
    data, vectors, out = setup
    result = cli("mine", "--vectors", vectors, "--data", data, "--split", "test", "--out", out)
    assert result.exit_code == 1
    assert result.stderr == (
        "Error: split 'test' is an evaluation split (test, dev, validation): mining its queries leaks evaluation "
        "data into training; pass --allow-eval-queries to do it anyway\n"
    )
    assert not (out / "manifest.json").exists()
    with pytest.raises(LeakageError):
        run(setup, split="dev")
    result = cli("mine", "--vectors", vectors, "--data", data, "--split", "test", "--allow-eval-queries", "--out", out)
    assert result.exit_code == 0, result.stderr
    assert [r["query_id"] for r in read_rows(out)] == ["q4"]


def test_embed_dir_with_one_model_is_descended_and_two_models_refused(tmp_path: Path):
    data = write_beir(tmp_path / "data")
    one = make_embed_artifact(tmp_path, {"m": (corpus_vectors(), query_vectors())}, data=data, name="one")
    assert resolve_vector_set(one).path == one / "m"
    two = make_embed_artifact(
        tmp_path,
        {"a": (corpus_vectors(), query_vectors()), "b": (corpus_vectors(), query_vectors())},
        data=data,
        name="two",
    )
    with pytest.raises(ArtifactMismatchError) as err:
        resolve_vector_set(two)
    assert str(err.value) == (
        f"{two} holds 2 models (a, b): give one model folder (--vectors {two / 'a'}) or fuse them first with hnm reduce"
    )


def test_audit_needs_the_rule(setup):
    from hnm_cli.errors import ConfigError

    with pytest.raises(
        ConfigError, match="--audit records the rule's C1/C2 tests; it needs strategy 'rule', not 'topk'"
    ):
        run(setup, strategy="topk", audit=True)


# ---------------------------------------------------------------------------------------------
# CLI contract
# ---------------------------------------------------------------------------------------------


def test_cli_contract(setup, cli):
    data, vectors, out = setup
    args = ("mine", "--vectors", vectors, "--data", data, "--out", out, "--preset", "paper")
    first = cli(*args)
    assert first.exit_code == 0, first.stderr
    assert first.stdout == f"{out / 'manifest.json'}\n"
    summary = first.stderr.splitlines()[-1]
    assert summary.startswith("mine: rule on 3 pairs: 1 with >=1 negative (33.3%), 0 short, C1 rejected ")
    assert ", C2 rejected 2, " in summary and summary.endswith(" s")
    mtimes = {p.name: p.stat().st_mtime_ns for p in out.iterdir() if p.is_file()}

    second = cli(*args)
    assert second.exit_code == 0
    assert second.stdout == f"{out / 'manifest.json'}\n"
    assert second.stderr == f"mine: up to date ({out / 'manifest.json'})\n"
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir() if p.is_file()} == mtimes

    forced = cli(*args, "--force", "--quiet")
    assert forced.exit_code == 0 and forced.stderr == ""
    assert (out / "manifest.json").stat().st_mtime_ns != mtimes["manifest.json"]

    changed = cli(*args, "--num-negatives", "2")
    assert changed.exit_code == 0 and "up to date" not in changed.stderr
    assert load_manifest(out).params["num_negatives"] == 2


def test_cli_from_audit_needs_no_vectors(setup, cli, tmp_path: Path):
    data, vectors, out = setup
    paper = ("--preset", "paper")
    assert (
        cli("mine", "--vectors", vectors, "--data", data, "--out", out, *paper, "--num-negatives", "2").exit_code == 0
    )
    result = cli("mine", "--from-audit", out, "--data", data, "--out", tmp_path / "re")
    assert result.exit_code == 1
    assert result.stderr == f"Error: {out} was mined without --audit; rerun it with --audit\n"
    assert (
        cli(
            "mine", "--vectors", vectors, "--data", data, "--out", out, "--audit", *paper, "--num-negatives", "2"
        ).exit_code
        == 0
    )
    result = cli(
        "mine", "--from-audit", out / "audit", "--data", data, "--out", tmp_path / "re", *paper, "--num-negatives", "1"
    )
    assert result.exit_code == 0, result.stderr
    assert result.stderr.startswith("mine: rule from audit on 3 pairs: 1 with >=1 negative (33.3%), 0 short, ")
    assert negatives(tmp_path / "re")[("q1", "d1")] == ["d2"]
    result = cli("mine", "--from-audit", out, "--data", data, "--out", out)
    assert result.exit_code == 1
    assert result.stderr == f"Error: --out {out} is the input {out}; write the artifact to another folder\n"
    assert cli("mine", "--data", data, "--out", out).exit_code == 2


def test_cli_bad_enum_is_a_usage_error(setup, cli):
    data, vectors, out = setup
    result = cli("mine", "--vectors", vectors, "--data", data, "--out", out, "--strategy", "nearest")
    assert result.exit_code == 2


def test_cli_options_reach_the_config(setup, cli, tmp_path: Path):
    data, vectors, out = setup
    config = tmp_path / "c.toml"
    config.write_text('[mine]\nnum_negatives = 3\nstrategy = "topk"\n')
    result = cli(
        "mine", "--vectors", vectors, "--data", data, "--out", out, "-c", config, "--strategy", "rule",
        "--index", "hnsw", "--hnsw-m", "8", "--ef-construction", "50", "--ef-search", "20", "--candidate-k", "5",
        "--sampling-strategy", "random", "--fallback", "next", "--seed", "9", "--c2-margin", "0.1",
        "--export", "n-tuple", "--audit", "--relative-margin", "none",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    params = load_manifest(out).params
    assert params["relative_margin"] is None  # "none" cleared the default's ceiling
    assert (params["strategy"], params["num_negatives"], params["index"], params["hnsw_m"]) == ("rule", 3, "hnsw", 8)
    assert (params["hnsw_ef_construction"], params["hnsw_ef_search"], params["candidate_k"]) == (50, 20, 5)
    assert (params["sampling_strategy"], params["fallback"], params["seed"], params["c2_margin"]) == (
        "random", "next", 9, 0.1,
    )  # fmt: skip
    assert (params["export"], params["audit"]) == ("n-tuple", True)
    assert (out / "export" / "n-tuple.jsonl").is_file() and (out / "audit" / "rows-00000.jsonl").is_file()


def test_margin_words_on_the_command_line_and_in_a_config_file(setup, cli, tmp_path: Path):
    data, vectors, out = setup
    result = cli("mine", "--vectors", vectors, "--data", data, "--out", out, "--relative-margin", "lots")
    assert result.exit_code == 2 and "--relative-margin" in result.stderr and "'none'" in result.stderr
    assert not (out / "manifest.json").exists()
    config = tmp_path / "c.toml"
    config.write_text('[mine]\nrelative_margin = "none"\nabsolute_margin = 0.1\n')
    assert cli("mine", "--vectors", vectors, "--data", data, "--out", out, "-c", config).exit_code == 0
    params = load_manifest(out).params
    assert (params["strategy"], params["relative_margin"], params["absolute_margin"]) == ("topk", None, 0.1)
    again = tmp_path / "again"
    assert cli("mine", "--vectors", vectors, "--data", data, "--out", again, "--absolute-margin", "NONE").exit_code == 0
    assert (load_manifest(again).params["relative_margin"], load_manifest(again).params["absolute_margin"]) == (
        0.05, None,
    )  # fmt: skip


def test_stale_shards_are_removed(setup):
    out = setup[2]
    out.mkdir(parents=True)
    (out / "rows-00007.jsonl").write_text("{}\n")
    (out / "notes.txt").write_text("mine")
    run(setup)
    assert not (out / "rows-00007.jsonl").exists() and (out / "notes.txt").exists()
    assert not [p for p in out.rglob("*.tmp")]
    assert os.listdir(out)


# ---------------------------------------------------------------------------------------------
# Bounded memory (benchmark-style: RSS measured in a subprocess, not timed)
# ---------------------------------------------------------------------------------------------

MEMORY_ROWS, MEMORY_DIM = 200_000, 256
# The corpus vectors alone are 195 MiB, so loading them whole fails the budget; measured ~235 MiB with the rule alone
# and ~257 MiB with the default's fallback next + fill short, most of it the 200k corpus records (texts are needed
# for the duplicate-text exclusion and the exports).
MEMORY_BUDGET_MIB = 330


@pytest.mark.slow
def test_mining_a_200k_corpus_stays_within_an_rss_budget(tmp_path: Path):
    import subprocess
    import sys

    rng = np.random.default_rng(0)
    corpus = [{"_id": f"d{i}", "text": f"t{i}"} for i in range(MEMORY_ROWS)]
    queries = [{"_id": f"q{i}", "text": f"query {i}"} for i in range(300)]
    qrels = {"train": [(f"q{i}", f"d{i * 613}") for i in range(300)]}
    data = write_beir(tmp_path / "data", corpus, queries, qrels)
    cv = rng.standard_normal((MEMORY_ROWS, MEMORY_DIM), dtype=np.float32)
    cv /= np.linalg.norm(cv, axis=1, keepdims=True)
    qv = cv[[i * 613 for i in range(300)]] + 0.05 * rng.standard_normal((300, MEMORY_DIM), dtype=np.float32)
    qv /= np.linalg.norm(qv, axis=1, keepdims=True)
    embed = make_embed_artifact(tmp_path, {"m": (cv, qv)}, data=data, shard_rows=50_000)
    del cv, corpus
    # VmHWM, not ru_maxrss: on Linux ru_maxrss survives exec, so the child would report this big pytest process.
    code = (
        "import sys\n"
        "from hnm_cli.cli import app\n"
        "try:\n"
        "    app(sys.argv[1:], standalone_mode=False)\n"
        "finally:\n"
        "    hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM:')][0]\n"
        "    print(int(hwm.split()[1]) // 1024, file=sys.stderr)\n"
    )
    out = tmp_path / "mine"
    args = ["mine", "--vectors", str(embed / "m"), "--data", str(data), "--out", str(out), "--num-negatives", "5"]
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, check=True)
    peak_mib = int(proc.stderr.strip().splitlines()[-1])
    assert load_manifest(out).stats["pairs"] == 300
    assert peak_mib < MEMORY_BUDGET_MIB, proc.stderr
