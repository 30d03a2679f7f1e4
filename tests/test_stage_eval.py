"""`hnm eval`: the CLI contract, the shared first stage, arms over seeds, RRF, validation and leakage errors, and
bad input (a failing eval leaves the existing artifact; a trained model folder is traced back to its mine split)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import orjson
import pytest
from conftest import one_error, snapshot, write_beir

from hnm_cli.artifacts.manifest import file_input, load_manifest, output_entry, write_manifest
from hnm_cli.artifacts.reranker import detect_model, folder_kind, parse_model_option
from hnm_cli.artifacts.vectors import VectorSetWriter
from hnm_cli.config import EvalConfig
from hnm_cli.errors import ArtifactMismatchError, LeakageError
from hnm_cli.evaluation.metrics import DEFAULT_METRICS, per_query_metrics
from hnm_cli.evaluation.rerank import rrf
from hnm_cli.inputs import resolve_data
from hnm_cli.stages import evaluate

# Every tiny query is judged in "test"; "train" holds other pairs for the leakage checks.
QRELS = {"train": [("q1", "d2")], "test": [("q1", "d1"), ("q2", "d3"), ("q3", "d5"), ("q4", "d7")]}
REPORT_KEYS = {
    "split",
    "queries",
    "skipped_queries",
    "first_stage",
    "metrics",
    "primary_metric",
    "baseline",
    "significance",
    "runs",
}


@pytest.fixture
def data(tmp_path: Path) -> Path:
    return write_beir(tmp_path / "data", qrels=QRELS)


@pytest.fixture(autouse=True)
def _drop_cli_log_handlers():
    """The CLI binds the 'hnm' logger to CliRunner's stderr, which closes; later runner calls must not log there."""
    yield
    import logging

    logging.getLogger("hnm").handlers.clear()


def _json(result) -> dict:
    return orjson.loads(result.stdout)


# ---------------------------------------------------------------------------------------------
# CLI contract
# ---------------------------------------------------------------------------------------------


def test_cli_json_on_stdout_and_up_to_date(cli, data: Path, tmp_path: Path) -> None:
    out = tmp_path / "eval"
    first = cli(
        "eval", "--data", data, "--out", out, "--model", "h=hash:16", "--fuse", "rrf", "-c", _tiny_cfg(tmp_path)
    )
    assert first.exit_code == 0, first.stderr
    report = _json(first)
    assert REPORT_KEYS <= set(report)
    assert list(report["runs"]) == ["first-stage", "h", "h+rrf"]
    assert report["metrics"] == list(DEFAULT_METRICS)
    assert report["queries"] == 4 and report["split"] == "test"
    assert set(report["first_stage"]) >= {"method", "top_k", "recall@20"}
    assert report["runs"]["h"]["kind"] == "bi-encoder"
    assert set(report["runs"]["h"]) >= {"mean", "std", "delta", "relative_delta", "p_value", "per_seed", "seeds"}
    assert "p_value" not in report["runs"]["first-stage"]  # the baseline is not compared with itself
    # BM25 finds each query's only positive at rank 1 on this corpus (distinctive words: mysql, vcn, ...).
    assert report["runs"]["first-stage"]["mean"]["mrr@10"] == 1.0
    manifest = load_manifest(out)
    assert manifest is not None and manifest.stage == "eval"
    fs = load_manifest(out / "first-stage")
    assert fs is not None and fs.stage == "eval-first-stage"
    mtimes = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}

    second = cli(
        "eval", "--data", data, "--out", out, "--model", "h=hash:16", "--fuse", "rrf", "-c", _tiny_cfg(tmp_path)
    )
    assert second.exit_code == 0
    assert "eval: up to date" in second.stderr
    assert _json(second) == report
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == mtimes

    tsv = cli("eval", "--data", data, "--out", out, "--model", "h=hash:16", "--fuse", "rrf", "-c", _tiny_cfg(tmp_path),
              "--format", "tsv")  # fmt: skip
    lines = tsv.stdout.splitlines()
    assert len(lines) == 3 * len(DEFAULT_METRICS)
    assert lines[1] == "first-stage\tmrr@10\t1.000000"


def _tiny_cfg(tmp_path: Path) -> Path:
    path = tmp_path / "eval.toml"
    path.write_text("[eval]\ntop_k = 20\ntrials = 200\n")
    return path


def test_cli_adding_a_model_reuses_the_first_stage(cli, data: Path, tmp_path: Path) -> None:
    out = tmp_path / "eval"
    assert cli("eval", "--data", data, "--out", out, "--quiet").exit_code == 0
    candidates = out / "first-stage" / "candidates.jsonl"
    before = candidates.stat().st_mtime_ns
    result = cli("eval", "--data", data, "--out", out, "--model", "hash:8")
    assert result.exit_code == 0, result.stderr
    assert "eval-first-stage: up to date" in result.stderr
    assert candidates.stat().st_mtime_ns == before
    assert list(_json(result)["runs"]) == ["first-stage", "hash-8"]


def test_cli_bad_enum_is_usage_error(cli, data: Path, tmp_path: Path) -> None:
    result = cli("eval", "--data", data, "--out", tmp_path / "e", "--fuse", "max")
    assert result.exit_code == 2


def test_cli_not_a_reranker_model(cli, data: Path, tmp_path: Path) -> None:
    bad = tmp_path / "plain-bert"
    bad.mkdir()
    (bad / "config.json").write_text('{"architectures": ["BertModel"]}')
    result = cli("eval", "--data", data, "--out", tmp_path / "e", "--model", f"bad={bad}")
    assert result.exit_code == 1
    assert result.stderr == (
        f"Error: --model bad: {bad} is not a cross-encoder or sentence-transformers model "
        "(no config_sentence_transformers.json, no *ForSequenceClassification config.json, "
        "no modules.json with Pooling)\n"
    )
    assert result.stdout == ""


def test_cli_run_with_unknown_doc_id(cli, data: Path, tmp_path: Path) -> None:
    run = tmp_path / "run.trec"
    run.write_text("q1 Q0 d1 1 2.0 bm25\nq1 Q0 nope 2 1.0 bm25\n")
    result = cli("eval", "--data", data, "--out", tmp_path / "e", "--first-stage", "run", "--run", run)
    assert result.exit_code == 1
    assert result.stderr == f"Error: {run}:2: doc id 'nope' is not in the corpus\n"


def test_cli_unknown_baseline(cli, data: Path, tmp_path: Path) -> None:
    result = cli("eval", "--data", data, "--out", tmp_path / "e", "--baseline", "rule")
    assert result.exit_code == 1
    assert result.stderr == "Error: --baseline 'rule' is not a run of this eval (runs: first-stage)\n"


def test_cli_dense_needs_vectors(cli, data: Path, tmp_path: Path) -> None:
    result = cli("eval", "--data", data, "--out", tmp_path / "e", "--first-stage", "dense")
    assert result.exit_code == 1
    assert result.stderr == (
        "Error: --first-stage dense needs --vectors DIR (a reduce artifact or an embed model folder)\n"
    )


# ---------------------------------------------------------------------------------------------
# Stage runner
# ---------------------------------------------------------------------------------------------


def _cfg(**kw) -> EvalConfig:
    return EvalConfig().merged(**{"top_k": 20, "trials": 200, **kw})


def test_user_run_first_stage_and_metrics(data: Path, tmp_path: Path) -> None:
    run = tmp_path / "run.jsonl"
    rows = [
        {"query_id": "q1", "candidates": [["d2", 3.0], ["d1", 2.0]]},  # positive d1 at rank 2
        {"query_id": "q2", "candidates": [["d3", 1.0]]},
        {"query_id": "q3", "candidates": [["d6", 1.0], ["d4", 0.5]]},  # positive d5 missing: a first-stage miss
        {"query_id": "zz", "candidates": [["d1", 1.0]]},  # not an evaluated query: ignored
    ]
    run.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    m = evaluate.run(resolve_data(data), tmp_path / "e", _cfg(first_stage="run"), run_file=run, progress=False)
    report = orjson.loads((m.path / "report.json").read_bytes())
    mean = report["runs"]["first-stage"]["mean"]
    assert mean["mrr@10"] == pytest.approx((0.5 + 1 + 0 + 0) / 4)  # q4 has no candidates at all
    assert mean["ndcg@10"] == pytest.approx((1 / math.log2(3) + 1) / 4)
    assert report["first_stage"]["recall@20"] == pytest.approx(0.5)
    per_query = [orjson.loads(line) for line in (m.path / "per-query.jsonl").read_bytes().splitlines()]
    assert [(r["run"], r["query_id"], r["mrr@10"]) for r in per_query] == [
        ("first-stage", "q1", 0.5),
        ("first-stage", "q2", 1.0),
        ("first-stage", "q3", 0.0),
        ("first-stage", "q4", 0.0),
    ]
    assert "| first-stage (baseline) | 1 | 0.3750 | 0.3750 | " in (m.path / "report.md").read_text()


def test_ignore_identical_ids_drops_the_query_itself_and_keeps_top_k(tmp_path: Path) -> None:
    # Quora/ArguAna layout: the corpus holds a document under the query's own id, ranked first.
    from conftest import TINY_CORPUS

    corpus = [*TINY_CORPUS, {"_id": "q1", "title": "", "text": "how do I create a managed mysql database"}]
    data = write_beir(tmp_path / "data", corpus=corpus, qrels=QRELS)
    run = tmp_path / "run.jsonl"
    rows = [{"query_id": "q1", "candidates": [["q1", 9.0], ["d2", 3.0], ["d1", 2.0]]}]
    run.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    kept = evaluate.run(
        resolve_data(data), tmp_path / "kept", _cfg(first_stage="run", top_k=2), run_file=run, progress=False
    )
    dropped = evaluate.run(
        resolve_data(data),
        tmp_path / "dropped",
        _cfg(first_stage="run", top_k=2, ignore_identical_ids=True),
        run_file=run,
        progress=False,
    )
    k_rep = orjson.loads((kept.path / "report.json").read_bytes())
    d_rep = orjson.loads((dropped.path / "report.json").read_bytes())
    # Without the option q1's positive d1 falls outside top-2 behind the query itself; with it, d1 is rank 2.
    assert k_rep["runs"]["first-stage"]["mean"]["mrr@10"] == pytest.approx(0.0)
    assert d_rep["runs"]["first-stage"]["mean"]["mrr@10"] == pytest.approx(0.5 / 4)
    fs = load_manifest(dropped.path / "first-stage")
    assert fs.stats["identical_ids_dropped"] == 1 and fs.params["ignore_identical_ids"] is True
    # Off (the default), the option is not in the params: reports made before it existed stay up to date.
    assert "ignore_identical_ids" not in kept.params
    assert "ignore_identical_ids" not in load_manifest(kept.path / "first-stage").params


def test_arm_over_seeds_and_rrf(data: Path, tmp_path: Path) -> None:
    cfg = _cfg(fuse="rrf")
    models = [("a", "hash:16"), ("a", "hash:32"), ("b", "hash:8")]
    m = evaluate.run(resolve_data(data), tmp_path / "e", cfg, models=models, progress=False)
    report = orjson.loads((m.path / "report.json").read_bytes())
    assert list(report["runs"]) == ["first-stage", "a", "b", "a+rrf", "b+rrf"]
    arm = report["runs"]["a"]
    assert arm["seeds"] == 2 and [s["source"] for s in arm["per_seed"]] == ["hash:16", "hash:32"]
    seed_mrr = [s["mean"]["mrr@10"] for s in arm["per_seed"]]
    assert arm["mean"]["mrr@10"] == pytest.approx(sum(seed_mrr) / 2)
    assert arm["std"]["mrr@10"] == pytest.approx(abs(seed_mrr[0] - seed_mrr[1]) / math.sqrt(2))
    fs = report["runs"]["first-stage"]["mean"]["mrr@10"]
    assert arm["delta"]["mrr@10"] == pytest.approx(arm["mean"]["mrr@10"] - fs)
    assert arm["relative_delta"]["mrr@10"] == pytest.approx((arm["mean"]["mrr@10"] - fs) / fs)
    assert 0 < arm["p_value"]["mrr@10"] <= 1
    # Every run reranks the same candidates, so recall@top_k cannot change.
    assert {r["mean"]["recall@100"] for r in report["runs"].values()} == {report["first_stage"]["recall@20"]}


def test_dense_first_stage_and_unknown_vector_id(data: Path, tmp_path: Path) -> None:
    vec = _vector_set(tmp_path / "vec", data, corpus_ids=[f"d{i}" for i in range(1, 9)])
    m = evaluate.run(resolve_data(data), tmp_path / "e", _cfg(first_stage="dense"), vectors=vec, progress=False)
    rows = [orjson.loads(line) for line in (m.path / "first-stage" / "candidates.jsonl").read_bytes().splitlines()]
    # Query q<i> is the unit vector e_<i>; doc d<j> is e_<j> + 0.1 * e_<j+1>: q1's best is d1, then d8 (0.1 on e_1).
    assert rows[0]["query_id"] == "q1" and [d for d, _ in rows[0]["candidates"][:2]] == ["d1", "d8"]
    report = orjson.loads((m.path / "report.json").read_bytes())
    # Positives' ranks: q1 d1 1; q2 d3 3 (zero score, tie broken by row after d2, d1); q3 d5 3; q4 d7 4.
    assert report["runs"]["first-stage"]["mean"]["mrr@10"] == pytest.approx((1 + 1 / 3 + 1 / 3 + 1 / 4) / 4)

    bad = _vector_set(tmp_path / "vec-bad", data, corpus_ids=["d1", "d2", "d3", "d4", "d5", "d6", "d7", "ghost"])
    with pytest.raises(ArtifactMismatchError) as err:
        evaluate.run(resolve_data(data), tmp_path / "e2", _cfg(first_stage="dense"), vectors=bad, progress=False)
    assert str(err.value) == f"{bad / 'corpus'}: row 7: doc id 'ghost' is not in the corpus"


def test_dense_first_stage_takes_every_vector_set_mine_takes(data: Path, tmp_path: Path) -> None:
    """`--vectors` of eval and of mine accept the same folders: a reduce output, an embed model folder and a
    top-level embed folder holding one model (eval used to refuse the last one)."""
    from artifact_builders import make_embed_artifact

    from hnm_cli.artifacts.vectors import load_vectors, resolve_vector_set

    reduced = _vector_set(tmp_path / "vec", data, corpus_ids=[f"d{i}" for i in range(1, 9)])
    (corpus_ids, docs), (query_ids, queries) = load_vectors(reduced / "corpus"), load_vectors(reduced / "queries")
    one = make_embed_artifact(
        tmp_path, {"m": (docs, queries)}, corpus_ids=corpus_ids, query_ids=query_ids, data=data, name="one"
    )
    candidates = []
    for i, vectors in enumerate([reduced, one / "m", one]):
        assert resolve_vector_set(vectors).path == (one / "m" if vectors == one else vectors)  # what mine takes
        m = evaluate.run(
            resolve_data(data), tmp_path / f"e{i}", _cfg(first_stage="dense"), vectors=vectors, progress=False
        )
        candidates.append((m.path / "first-stage" / "candidates.jsonl").read_bytes())
    assert candidates[0] == candidates[1] == candidates[2]


def _vector_set(out: Path, data: Path, corpus_ids: list[str]) -> Path:
    """A hand-made reduce-like vector set: doc d<j> = e_j + 0.1 e_(j+1 mod 8); queries as commented."""
    dim = 8
    docs = np.zeros((len(corpus_ids), dim), dtype=np.float32)
    for j in range(len(corpus_ids)):
        docs[j, j] = 1.0
        docs[j, (j + 1) % dim] = 0.1
    queries = np.zeros((4, dim), dtype=np.float32)
    queries[0, 0] = queries[1, 1] = 1.0  # q1 = e_1, q2 = e_2
    queries[2, 2:5] = [1.0, 0.2, 0.15]  # q3 prefers d3, d4 over its positive d5
    queries[3, 3:7] = [1.0, 0.3, 0.25, 0.2]  # q4 prefers d4, d5, d6 over its positive d7
    writer = VectorSetWriter(out)
    writer.add_shard("corpus", 0, corpus_ids, docs)
    writer.add_shard("queries", 0, ["q1", "q2", "q3", "q4"], queries)
    writer.finish(stage="reduce", params={}, inputs=[file_input(data / "corpus.jsonl", "corpus")])
    return out


def test_leakage_train_reranker_trained_on_eval_split(data: Path, tmp_path: Path) -> None:
    mine_dir = tmp_path / "mine"
    mine_dir.mkdir()
    row = {"query_id": "q2", "positive_id": "d3", "negatives": []}
    (mine_dir / "rows-00000.jsonl").write_bytes(orjson.dumps(row) + b"\n")
    for split, expected in [
        ("test", f"--model r: {tmp_path / 'tr'} was trained on the 'test' split, the split being evaluated"),
        ("train", f"--model r: {tmp_path / 'tr'} was trained on 1 of the 4 evaluated queries (e.g. 'q2')"),
    ]:
        write_manifest(mine_dir, stage="mine", fingerprint="x", params={"split": split}, inputs=[],
                       outputs=[output_entry(mine_dir, "rows-00000.jsonl")], stats={}, started=0.0)  # fmt: skip
        tr = _fake_train_artifact(tmp_path / "tr", mine_dir)
        with pytest.raises(LeakageError) as err:
            evaluate.run(resolve_data(data), tmp_path / "e", _cfg(), models=[("r", str(tr))], progress=False)
        assert str(err.value) == expected


def test_leakage_forced_overlap_recorded_by_train_reranker(data: Path, tmp_path: Path) -> None:
    tr = _fake_train_artifact(tmp_path / "tr", None, stats={"eval_split": "test", "eval_overlap": 3})
    with pytest.raises(LeakageError) as err:
        evaluate.run(resolve_data(data), tmp_path / "e", _cfg(), models=[("r", str(tr))], progress=False)
    assert str(err.value) == (
        f"--model r: {tr} was trained with 3 queries of the 'test' split (train-reranker --allow-eval-overlap)"
    )


def test_queries_dropped_by_drop_eval_overlap_are_no_leak(tmp_path: Path) -> None:
    # train-reranker --drop-eval-overlap left q2 (an evaluated query, by id or by text) out of training: its rows
    # are still in the mine artifact, but the model never saw them, so eval must accept it.
    from hnm_cli.artifacts.guards import check_eval_leakage
    from hnm_cli.artifacts.reranker import RerankerRef

    mine_dir = tmp_path / "mine"
    mine_dir.mkdir()
    row = {"query_id": "q2", "positive_id": "d3", "negatives": []}
    (mine_dir / "rows-00000.jsonl").write_bytes(orjson.dumps(row) + b"\n")
    write_manifest(mine_dir, stage="mine", fingerprint="x", params={"split": "train"}, inputs=[],
                   outputs=[output_entry(mine_dir, "rows-00000.jsonl")], stats={}, started=0.0)  # fmt: skip
    dropped = {"eval_split": "test", "eval_overlap": 0, "eval_overlap_dropped": 1, "dropped_query_ids": ["q2"]}
    tr = _fake_train_artifact(tmp_path / "tr", mine_dir, stats=dropped)
    ref = RerankerRef("r", str(tr), "cross-encoder", tr / "model", load_manifest(tr))
    assert check_eval_leakage([ref], "test", {"q1", "q2"}) == 0
    older = {"eval_split": "test", "eval_overlap": 1, "dropped_query_ids": ["q2"]}  # before eval_overlap_dropped
    tr = _fake_train_artifact(tmp_path / "older", mine_dir, stats=older)
    assert check_eval_leakage([RerankerRef("r", str(tr), "cross-encoder", tr / "model", load_manifest(tr))],
                              "test", {"q1", "q2"}) == 0  # fmt: skip
    kept = _fake_train_artifact(tmp_path / "kept", mine_dir, stats={"eval_split": "test", "eval_overlap": 0})
    with pytest.raises(LeakageError, match="was trained on 1 of the 2 evaluated queries"):
        check_eval_leakage([RerankerRef("r", str(kept), "cross-encoder", kept / "model", load_manifest(kept))],
                           "test", {"q1", "q2"})  # fmt: skip


def _fake_train_artifact(out: Path, mine_dir: Path | None, stats: dict | None = None) -> Path:
    (out / "model").mkdir(parents=True, exist_ok=True)
    (out / "model" / "config_sentence_transformers.json").write_text('{"model_type": "CrossEncoder"}')
    inputs = [{"role": "mined", "path": str(mine_dir), "stage": "mine", "sha256": "x"}] if mine_dir else []
    write_manifest(out, stage="train-reranker", fingerprint="y", params={}, inputs=inputs, outputs=[],
                   stats=stats or {}, started=0.0)  # fmt: skip
    return out


# ---------------------------------------------------------------------------------------------
# Pure helpers
# ---------------------------------------------------------------------------------------------


def test_rrf_hand_computed() -> None:
    a = {"q": {"x": 3.0, "y": 2.0, "z": 1.0}}
    b = {"q": {"z": 9.0, "x": 5.0, "y": 1.0}}
    fused = rrf([a, b], k=60)
    assert fused["q"] == pytest.approx({"x": 1 / 61 + 1 / 62, "y": 1 / 62 + 1 / 63, "z": 1 / 63 + 1 / 61})
    assert a == {"q": {"x": 3.0, "y": 2.0, "z": 1.0}}  # inputs untouched


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("rule=/runs/s0", ("rule", "/runs/s0")),
        ("pkg:all-MiniLM-L6-v2", ("all-MiniLM-L6-v2", "pkg:all-MiniLM-L6-v2")),
        ("/runs/reranker-rule", ("reranker-rule", "/runs/reranker-rule")),
        ("/runs/reranker-rule/model", ("reranker-rule", "/runs/reranker-rule/model")),
        ("hash:16", ("hash-16", "hash:16")),
    ],
)
def test_parse_model_option(value: str, expected: tuple[str, str]) -> None:
    assert parse_model_option(value) == expected


def test_folder_kind(tmp_path: Path) -> None:
    ce, bi, hf = tmp_path / "ce", tmp_path / "bi", tmp_path / "hf"
    for d in (ce, bi, hf):
        d.mkdir()
    (ce / "config.json").write_text('{"architectures": ["BertForSequenceClassification"]}')
    (bi / "modules.json").write_text('[{"type": "sentence_transformers.models.Pooling", "path": "1_Pooling"}]')
    (hf / "config.json").write_text('{"architectures": ["BertModel"]}')
    assert (folder_kind(ce), folder_kind(bi), folder_kind(hf)) == ("cross-encoder", "bi-encoder", None)
    assert detect_model("x", "pkg:all-MiniLM-L6-v2").kind == "bi-encoder"


def test_per_query_matches_metrics_module(data: Path, tmp_path: Path) -> None:
    m = evaluate.run(resolve_data(data), tmp_path / "e", _cfg(), models=[("h", "hash:16")], progress=False)
    rows = [orjson.loads(line) for line in (m.path / "per-query.jsonl").read_bytes().splitlines()]
    cands = {r["query_id"]: dict(map(tuple, r["candidates"])) for r in
             map(orjson.loads, (m.path / "first-stage" / "candidates.jsonl").read_bytes().splitlines())}  # fmt: skip
    qrels = {q: {d: 1} for q, d in QRELS["test"]}
    expected = per_query_metrics(qrels, cands)
    got = {r["query_id"]: {k: r[k] for k in DEFAULT_METRICS} for r in rows if r["run"] == "first-stage"}
    assert got == expected


# ---------------------------------------------------------------------------------------------
# End to end with real (tiny, offline) models
# ---------------------------------------------------------------------------------------------


@pytest.mark.slow  # imports torch and builds two tiny models: ~10 s on 2 cores
def test_end_to_end_bm25_with_tiny_bi_and_cross_encoder(cli, data: Path, tmp_path: Path) -> None:
    from conftest import TINY_CORPUS, TINY_QUERIES
    from sentence_transformers import CrossEncoder, SentenceTransformer
    from tiny_models import build_tiny_bert

    words = [d["title"] + " " + d["text"] for d in TINY_CORPUS] + [q["text"] for q in TINY_QUERIES]
    bi = build_tiny_bert(tmp_path / "bi", words=words)
    ce_dir = tmp_path / "ce"
    CrossEncoder(str(bi), num_labels=1).save(str(ce_dir))
    assert (folder_kind(bi), folder_kind(ce_dir)) == ("bi-encoder", "cross-encoder")

    out = tmp_path / "eval"
    result = cli("eval", "--data", data, "--out", out, "--model", f"bi={bi}", "--model", f"ce={ce_dir}",
                 "--fuse", "rrf", "--device", "cpu", "--quiet", "-c", _tiny_cfg(tmp_path))  # fmt: skip
    assert result.exit_code == 0, result.stderr
    report = _json(result)
    assert list(report["runs"]) == ["first-stage", "bi", "ce", "bi+rrf", "ce+rrf"]
    assert report["runs"]["ce"]["kind"] == "cross-encoder" and report["runs"]["bi"]["kind"] == "bi-encoder"

    # The bi-encoder run is the cosine of the model's own vectors: recompute q1's ranking directly.
    model = SentenceTransformer(str(bi), device="cpu")
    cands = orjson.loads((out / "first-stage" / "candidates.jsonl").read_bytes().splitlines()[0])
    docs = {d["_id"]: d["title"] + " " + d["text"] for d in TINY_CORPUS}
    ids = [d for d, _ in cands["candidates"]]
    q = model.encode(["how do I create a managed mysql database"], normalize_embeddings=True)
    dv = model.encode([docs[d] for d in ids], normalize_embeddings=True)
    order = [ids[i] for i in np.lexsort((np.arange(len(ids)), -(dv @ q[0])))]
    rank = order.index("d1") + 1
    per_query = [orjson.loads(line) for line in (out / "per-query.jsonl").read_bytes().splitlines()]
    got = next(r for r in per_query if r["run"] == "bi" and r["query_id"] == "q1")
    assert got["mrr@10"] == pytest.approx(1 / rank if rank <= 10 else 0.0)


def test_a_reranker_below_the_first_stage_is_flagged(cli, data: Path, tmp_path: Path) -> None:
    # hash:8 as a "reranker" reorders BM25's list at random: far below BM25 on nDCG@10 / MRR@10.
    args = ["eval", "--data", data, "--out", tmp_path / "e", "--model", "noise=hash:8", "--top-k", "8"]
    result = cli(*args)
    assert result.exit_code == 0, result.stderr
    warnings = [ln for ln in result.stderr.splitlines() if "ranks below the first stage" in ln]
    assert len(warnings) == 1 and warnings[0].startswith(
        "eval: warning: ranks below the first stage it reranks: noise ("
    )
    assert "| noise ⚠ below first stage |" in (tmp_path / "e" / "report.md").read_text()
    again = cli(*args)  # up to date: still said
    assert sum("ranks below the first stage" in ln for ln in again.stderr.splitlines()) == 1


# ---------------------------------------------------------------------------------------------
# A user's run file is read strictly; a dense first stage needs one dimension
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "{f}: no candidates (an empty run file)"),
        (b"q1 Q0 d1 1 2.0 t\nq1 Q0 d2 x 1.0 t\n", "{f}:2: field 'rank': expected an integer, got 'x'"),
        (b"q1 Q0 d1 1 nan t\n", "{f}:1: field 'score': not a finite number: 'nan'"),
        (b"q1 Q0 d1 1 2.0 t\n\x80\x81 binary\n", "{f}:2: invalid UTF-8 at byte 0 (not a text run file?)"),
        (b'{"query_id": "q1", "candidates": [["d1", true]]}\n', "{f}:1: field 'candidates': score of 'd1' is not a finite number"),
        (b'{"candidates": [["d1", 1.0]]}\n', "{f}:1: field 'query_id': expected a query id, got None"),
        (b"zz Q0 d1 1 2.0 t\n", "{f}: none of its 1 lines is for one of the 4 evaluated queries (e.g. 'q1'); is it a run of another split?"),
    ],
)  # fmt: skip
def test_run_file_errors_name_file_line_and_field(data: Path, tmp_path: Path, body: bytes, message: str) -> None:
    from hnm_cli.errors import DataError

    run = tmp_path / "run.txt"
    run.write_bytes(body)
    with pytest.raises(DataError) as err:
        evaluate.run(resolve_data(data), tmp_path / "e", _cfg(first_stage="run"), run_file=run, progress=False)
    assert str(err.value) == message.format(f=run)
    assert not (tmp_path / "e").exists()


def test_run_file_unknown_queries_and_duplicate_docs_warn_once(data: Path, tmp_path: Path, caplog) -> None:
    run = tmp_path / "run.txt"
    run.write_text("q1 Q0 d2 1 3.0 t\nqZ Q0 d1 1 1.0 t\nq1 Q0 d1 2 2.0 t\nqZ Q0 d2 2 0.5 t\nq1 Q0 d2 3 0.1 t\n")
    with caplog.at_level("WARNING", logger="hnm"):
        m = evaluate.run(resolve_data(data), tmp_path / "e", _cfg(first_stage="run"), run_file=run, progress=False)
    assert [r.getMessage() for r in caplog.records if "warning" in r.getMessage()] == [
        f"eval: warning: {run}: 2 line(s) name 1 query id(s) that are not in the queries (e.g. 'qZ' at line 2); "
        "ignored",
        f"eval: warning: {run}: 1 duplicate (query, doc) line(s) (e.g. 'q1' 'd2' at line 5, first at line 1); the "
        "last score is kept",
    ]
    rows = [orjson.loads(line) for line in (m.path / "first-stage" / "candidates.jsonl").read_bytes().splitlines()]
    assert rows[0] == {"query_id": "q1", "candidates": [["d1", 2.0], ["d2", 0.1]]}  # d2's last score


def test_dense_first_stage_with_queries_of_another_dimension(data: Path, tmp_path: Path) -> None:
    from hnm_cli.artifacts.vectors import open_vector_set
    from hnm_cli.evaluation.first_stage import DenseVectors, first_stage_candidates
    from hnm_cli.inputs import read_corpus, read_queries

    vec = tmp_path / "vec"
    writer = VectorSetWriter(vec)
    writer.add_shard("corpus", 0, [f"d{i}" for i in range(1, 9)], np.eye(8, dtype=np.float32))
    writer.add_shard("queries", 0, ["q1", "q2", "q3", "q4"], np.eye(4, 7, dtype=np.float32))
    writer.finish(stage="reduce", params={}, inputs=[])
    corpus, queries = read_corpus(data), read_queries(data)
    with pytest.raises(ArtifactMismatchError) as err:
        first_stage_candidates(
            "dense", corpus, queries, ["q1", "q2"], 5, vectors=DenseVectors(vec, *open_vector_set(vec))
        )
    assert str(err.value) == f"{vec}: query vectors have dimension 7 but corpus vectors 8; rebuild the vector set"


# Bad inputs and faults: the exit code, the one `Error:` line, the artifact in --out kept.


def test_failing_eval_leaves_the_existing_artifact(cli, world, tmp_path: Path) -> None:
    before = snapshot(world["eval"])
    bad = write_beir(tmp_path / "bad", corpus=[{"_id": "d1", "title": "t"}])  # no text field
    result = cli("eval", "--data", bad, "--out", world["eval"], "--top-k", "5")
    assert result.exit_code == 1
    assert "field 'text'" in one_error(result)
    assert snapshot(world["eval"]) == before


def test_eval_recognises_a_trained_artifact_from_its_model_folder(cli, world, tmp_path: Path) -> None:
    from artifact_builders import make_embed_artifact  # noqa: F401  (keeps the builders importable here)

    from hnm_cli.artifacts.manifest import write_manifest

    art = tmp_path / "trained"
    (art / "model").mkdir(parents=True)
    (art / "model" / "config_sentence_transformers.json").write_text('{"model_type": "SentenceTransformer"}')
    mine = tmp_path / "mined-on-test"
    write_manifest(mine, stage="mine", fingerprint="x", params={"split": "test"}, inputs=[], outputs=[], stats={},
                   started=0.0)  # fmt: skip
    write_manifest(art, stage="train-reranker", fingerprint="y", params={},
                   inputs=[{"role": "mined", "path": str(mine), "stage": "mine", "sha256": "z"}], outputs=[],
                   stats={}, started=0.0)  # fmt: skip
    result = cli("eval", "--data", world["data"], "--out", tmp_path / "ev", "--model", f"m={art / 'model'}")
    assert result.exit_code == 1
    assert "was trained on the 'test' split" in one_error(result)
