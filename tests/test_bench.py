"""Benchmark helpers (bench/): the pure pieces that decide numbers, and a slow end-to-end quick grid."""

from __future__ import annotations

import sys
from pathlib import Path

import orjson
import pytest
from conftest import REPO, write_beir

sys.path.insert(0, str(REPO / "bench"))

import common  # noqa: E402
import incremental  # noqa: E402
import quality  # noqa: E402
import synth  # noqa: E402

# ---------------------------------------------------------------------------------------------
# Formatting
# ---------------------------------------------------------------------------------------------


def test_fmt_mean_std_gain_p():
    assert common.fmt_mean_std([0.5, 0.6]) == "0.550 ± 0.071 (n=2)"
    assert common.fmt_mean_std([0.25]) == "0.250 (n=1)"
    assert common.fmt_mean_std([]) == "-"
    assert common.fmt_gain(0.55, 0.5) == "+10.0%"
    assert common.fmt_gain(0.45, 0.5) == "-10.0%"
    assert common.fmt_gain(0.5, 0.0) == "-"
    assert common.fmt_gain(None, 0.5) == "-"
    assert common.fmt_p(0.0004) == "<0.001"
    assert common.fmt_p(0.04321) == "0.043"
    assert common.fmt_p(None) == "-"


def test_markdown_table_escapes_pipes():
    table = common.markdown_table(["a", "b"], [[1, "x|y"]])
    assert table == "| a | b |\n|---|---|\n| 1 | x\\|y |"


def test_replace_section_inserts_then_replaces_only_its_own_block():
    text = common.BENCH_MD_HEADER
    text = common.replace_section(text, "quality", "Q1")
    text = common.replace_section(text, "speed", "S1")
    text = common.replace_section(text, "quality", "Q2")
    assert "<!-- quality:begin -->\nQ2\n<!-- quality:end -->" in text
    assert "<!-- speed:begin -->\nS1\n<!-- speed:end -->" in text
    assert "Q1" not in text
    assert text.index("quality:begin") < text.index("speed:begin")


def test_update_bench_files_keeps_the_other_section(tmp_path):
    md, js = tmp_path / "B.md", tmp_path / "B.json"
    common.update_bench_files(md, js, "speed", "speed body", {"x": 1})
    common.update_bench_files(md, js, "quality", "quality body", {"y": 2})
    assert orjson.loads(js.read_bytes()) == {"speed": {"x": 1}, "quality": {"y": 2}}
    text = md.read_text()
    assert "speed body" in text and "quality body" in text


# ---------------------------------------------------------------------------------------------
# Corpus sampling
# ---------------------------------------------------------------------------------------------

DOCS = [f"d{i}" for i in range(40)]
TRAIN = {f"t{i}": [f"d{i}"] for i in range(10)} | {"both": ["d30"]}
TEST = {f"e{i}": [f"d{10 + i}", f"d{20 + i}"] for i in range(5)} | {"both": ["d31"]}


def test_sample_ids_is_seeded_and_keeps_every_positive():
    docs, train_q, test_q = common.sample_ids(DOCS, TRAIN, TEST, n_docs=15, n_train=3, n_test=2, seed=7)
    again = common.sample_ids(DOCS, TRAIN, TEST, n_docs=15, n_train=3, n_test=2, seed=7)
    assert (docs, train_q, test_q) == again
    assert len(docs) == 15 and len(train_q) == 3 and len(test_q) == 2
    assert "both" not in train_q  # a query of both splits is only ever a test query
    kept = set(docs)
    assert all(d in kept for q in train_q for d in TRAIN[q])
    assert all(d in kept for q in test_q for d in TEST[q])
    assert docs == [d for d in DOCS if d in kept]  # corpus order preserved
    other = common.sample_ids(DOCS, TRAIN, TEST, n_docs=15, n_train=3, n_test=2, seed=8)
    assert other != (docs, train_q, test_q)


def test_sample_ids_exceeds_n_docs_only_for_positives():
    docs, train_q, test_q = common.sample_ids(DOCS, TRAIN, TEST, n_docs=1, n_train=2, n_test=2, seed=0)
    assert len(docs) == 2 * 1 + 2 * 2  # the positives alone


def test_sample_beir_writes_a_valid_folder_and_skips_a_rerun(tmp_path):
    from hnm_cli.inputs import read_corpus, read_queries
    from hnm_cli.qrels import read_qrels

    src = write_beir(tmp_path / "src")
    summary = common.sample_beir(src, tmp_path / "dst", n_docs=5, n_train=2, n_test=1, seed=0)
    assert (summary["docs"], summary["train_queries"], summary["test_queries"]) == (5, 2, 1)
    corpus, queries = read_corpus(tmp_path / "dst"), read_queries(tmp_path / "dst")
    assert len(corpus) == 5 and len(queries) == 3
    train = read_qrels(tmp_path / "dst" / "qrels" / "train.tsv", query_ids=queries, doc_ids=corpus)
    test = read_qrels(tmp_path / "dst" / "qrels" / "test.tsv", query_ids=queries, doc_ids=corpus)
    assert len(train) == 2 and test == {"q4": {"d7": 1}}
    mtime = (tmp_path / "dst" / "corpus.jsonl").stat().st_mtime_ns
    assert common.sample_beir(src, tmp_path / "dst", n_docs=5, n_train=2, n_test=1, seed=0) == summary
    assert (tmp_path / "dst" / "corpus.jsonl").stat().st_mtime_ns == mtime


# ---------------------------------------------------------------------------------------------
# sentence-transformers output -> mine rows
# ---------------------------------------------------------------------------------------------


def test_st_triplets_to_rows_maps_texts_back_to_ids():
    doc_text = {"p1": "alpha", "p2": "beta", "n1": "gamma", "n1dup": "gamma", "n2": "delta", "p3": "eps"}
    query_text = {"q1": "what", "q2": "who"}
    pairs = [("q1", "p1"), ("q1", "p2"), ("q2", "p3")]
    # The miner's triplets: q1 got two negatives for each of its positives, q2 none.
    anchors = ["what", "what", "what", "what"]
    positives = ["alpha", "alpha", "beta", "beta"]
    negatives = ["gamma", "delta", "gamma", "delta"]
    scores = [[0.9, 0.8], [0.9, 0.5], [0.7, 0.8], [0.7, 0.5]]
    rows = common.st_triplets_to_rows(anchors, positives, negatives, pairs, query_text, doc_text, scores=scores)
    assert [(r["query_id"], r["positive_id"]) for r in rows] == pairs
    assert [n["doc_id"] for n in rows[0]["negatives"]] == ["n1", "n2"]  # first id of a duplicated text
    assert rows[0]["negatives"][0] == {
        "doc_id": "n1",
        "source": "st-mine-hard-negatives",
        "rank": 1,
        "d_qd": pytest.approx(0.2),
        "d_qp": pytest.approx(0.1),
        "d_pd": None,
    }
    assert [n["rank"] for n in rows[1]["negatives"]] == [1, 2]
    assert rows[2]["negatives"] == []


def test_st_triplets_to_rows_refuses_foreign_output():
    with pytest.raises(ValueError, match="matches no non-positive corpus id"):
        common.st_triplets_to_rows(["q"], ["a"], ["zzz"], [("q1", "p1")], {"q1": "q"}, {"p1": "a"})


# ---------------------------------------------------------------------------------------------
# Aggregation over per-(arm, seed) evaluations
# ---------------------------------------------------------------------------------------------


def _fake_eval(directory: Path, run: str, values: dict[str, float], fused: dict[str, float] | None = None) -> None:
    """An eval artifact with `run`'s per-query values (and `run+rrf`'s, given `fused`), every metric the same."""
    directory.mkdir(parents=True)
    (directory / "manifest.json").write_text("{}")
    runs = [(run, values)] + ([(f"{run}+rrf", fused)] if fused is not None else [])
    rows = [
        {"run": r, "query_id": q, "mrr@3": v, "mrr@10": v, "ndcg@10": v} for r, vals in runs for q, v in vals.items()
    ]
    (directory / "per-query.jsonl").write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))


def _keep_first_stage_and_paper(tmp_path: Path, family: str) -> tuple[quality.Settings, list[str]]:
    """Settings for a one-seed `paper` grid of `family`, with the faked first stage and paper s0 evals kept as cells
    under <tmp>/res; returns the settings and their argv."""
    argv = ["--data", str(tmp_path / "scifact"), "--work", str(tmp_path / "work"), "--results", str(tmp_path / "res"),
            "--seeds", "1", "--arms", "paper", "--families", family]  # fmt: skip
    s = quality.parse_args(argv)
    state = quality.State(s.work, s)
    paper, fs = quality.ARM_BY_KEY["paper"], quality.ARM_BY_KEY["first-stage"]
    quality._keep_cell(s, state, None, fs, None, "m", s.work / "eval" / "first-stage", {"eval": "eval:first-stage"})
    quality._keep_cell(s, state, family, paper, 0, "m", s.work / "eval" / family / "paper" / "s0", {"train": "t"})
    return s, argv


def test_aggregate_mean_std_over_seeds_and_paired_tests(tmp_path):
    _fake_eval(tmp_path / "eval" / "first-stage", "first-stage", {"a": 0.5, "b": 0.5})
    _fake_eval(tmp_path / "eval" / "bi" / "paper" / "s0", "paper", {"a": 1.0, "b": 0.5})
    _fake_eval(tmp_path / "eval" / "bi" / "paper" / "s1", "paper", {"a": 0.5, "b": 0.5})
    _fake_eval(tmp_path / "eval" / "bi" / "st-default" / "s0", "st-default", {"a": 0.5, "b": 0.5})
    s = quality.parse_args(["--data", str(tmp_path), "--work", str(tmp_path), "--no-results", "--seeds", "2",
                            "--arms", "st-default,paper"])  # fmt: skip
    agg = quality.aggregate(s, None)
    rows = agg["families"]["bi"]
    assert agg["test_queries"] == 2
    assert rows["paper"]["seeds_done"] == 2
    assert rows["paper"]["mean"]["ndcg@10"] == pytest.approx(0.625)  # seed means 0.75 and 0.5
    assert rows["paper"]["std"]["ndcg@10"] == pytest.approx(0.1767767)
    assert rows["st-default"]["seeds_done"] == 1
    # Per-query seed means (a: 0.75, b: 0.5) against st-default (0.5, 0.5): delta 0.125.
    assert rows["paper"]["vs_st_default"]["delta"]["ndcg@10"] == pytest.approx(0.125)
    assert rows["paper"]["vs_first_stage"]["relative_delta"]["mrr@10"] == pytest.approx(0.25)
    assert 0 < rows["paper"]["vs_st_default"]["p_value"]["ndcg@10"] <= 1
    assert "vs_st_default" not in rows["st-default"]
    assert "vs_first_stage" not in rows["first-stage"]


def test_aggregate_reports_nothing_for_missing_evaluations(tmp_path):
    s = quality.parse_args(["--data", str(tmp_path), "--work", str(tmp_path), "--no-results", "--seeds", "5",
                            "--arms", "random", "--families", "cross"])  # fmt: skip
    agg = quality.aggregate(s, None)
    assert agg["test_queries"] is None
    assert agg["families"]["cross"]["random"]["seeds_done"] == 0
    assert agg["families"]["cross"]["random"]["mean"] is None


def test_cells_are_kept_and_read_back_only_with_the_same_settings(tmp_path):
    """A finished cell survives the work dir (a new machine) and is ignored once any setting changed."""
    _fake_eval(tmp_path / "work" / "eval" / "first-stage", "first-stage", {"a": 0.5, "b": 0.25})
    _fake_eval(tmp_path / "work" / "eval" / "bi" / "paper" / "s0", "paper", {"a": 1.0, "b": 0.5})
    s, argv = _keep_first_stage_and_paper(tmp_path, "bi")
    assert (tmp_path / "res" / "bi" / "paper" / "s0.json").is_file()
    import shutil

    shutil.rmtree(tmp_path / "work" / "eval")  # a new machine: only the committed cells are left
    rows = quality.aggregate(s, "m")["families"]["bi"]
    assert rows["paper"]["mean"]["ndcg@10"] == pytest.approx(0.75)
    assert rows["first-stage"]["mean"]["ndcg@10"] == pytest.approx(0.375)
    # Another budget is another cell: the kept one is not used for it.
    s2 = quality.parse_args([*argv, "--max-steps", "7"])
    assert quality.aggregate(s2, "m")["families"]["bi"]["paper"]["seeds_done"] == 0


def test_the_cross_family_is_kept_and_reported_alone_and_fused(tmp_path):
    """The cross-encoder is used fused with its first stage (issue 21): its cell keeps both runs, the report has a
    table for each, and a cell measured before the family fused is measured again (its identity lacks `fuse`)."""
    _fake_eval(tmp_path / "work" / "eval" / "first-stage", "first-stage", {"a": 0.5, "b": 0.5})
    _fake_eval(tmp_path / "work" / "eval" / "cross" / "paper" / "s0", "paper", {"a": 0.25, "b": 0.25},
               fused={"a": 1.0, "b": 0.5})  # fmt: skip
    s, _ = _keep_first_stage_and_paper(tmp_path, "cross")
    cell = orjson.loads((tmp_path / "res" / "cross" / "paper" / "s0.json").read_bytes())
    assert cell["identity"]["fuse"] == "rrf" and cell["rrf_per_query"]["a"]["ndcg@10"] == 1.0
    import shutil

    shutil.rmtree(tmp_path / "work" / "eval")  # a new machine: only the committed cells are left
    agg = quality.aggregate(s, "m")["families"]
    assert list(agg) == ["cross", "cross+rrf"]
    assert agg["cross"]["paper"]["mean"]["ndcg@10"] == pytest.approx(0.25)
    assert agg["cross+rrf"]["paper"]["mean"]["ndcg@10"] == pytest.approx(0.75)
    assert agg["cross+rrf"]["paper"]["vs_first_stage"]["delta"]["ndcg@10"] == pytest.approx(0.25)
    assert agg["cross+rrf"]["first-stage"]["mean"]["ndcg@10"] == pytest.approx(0.5)
    body = quality.render_quality(s, s.data, "m", quality.aggregate(s, "m"), {"machine": {}})
    assert "fused with the first stage by RRF" in body
    # The bi-encoder family is reported alone only, and its cells carry no fusion.
    assert [v for v, _, _ in quality.family_views(["bi", "cross"])] == ["bi", "cross", "cross+rrf"]
    paper = quality.ARM_BY_KEY["paper"]
    ident = quality.cell_identity(s, "bi", paper, 0, "m")
    assert "fuse" not in ident and quality.cell_identity(s, "cross", paper, 0, "m")["fuse"] == "rrf"


def test_only_seeds_splits_a_grid_and_refuses_seeds_outside_it(tmp_path):
    s = quality.parse_args(["--data", str(tmp_path), "--seeds", "3", "--only-seeds", "1,2"])
    assert s.extra["only_seeds"] == (1, 2) and s.seeds == 3
    with pytest.raises(SystemExit):
        quality.parse_args(["--data", str(tmp_path), "--seeds", "3", "--only-seeds", "3"])
    with pytest.raises(SystemExit):
        quality.parse_args(["--data", str(tmp_path), "--only-seeds", "one"])


def test_quick_defaults_and_arm_selection(tmp_path):
    s = quality.parse_args(["--data", str(tmp_path), "--quick"])
    assert s.arms == ("first-stage", "random", "hnm-default") and s.seeds == 1 and s.max_steps == 20
    assert s.embed_precision == "fp32"
    s = quality.parse_args(["--data", str(tmp_path), "--arms", "bm25,paper", "--embed-precision", "bf16"])
    # The table keeps arm-number order; the grid runs the arms in the order given.
    assert s.arms == ("first-stage", "paper", "bm25") and s.run_order == ("bm25", "paper") and s.seeds == 3
    assert s.embed_precision == "bf16"
    assert quality.parse_args(["--data", str(tmp_path)]).run_order[:2] == ("st-default", "hnm-default")
    assert s.work == (REPO / "runs" / "bench" / tmp_path.name).resolve()
    with pytest.raises(SystemExit):
        quality.parse_args(["--data", str(tmp_path), "--arms", "nope"])


# ---------------------------------------------------------------------------------------------
# Synthetic corpora
# ---------------------------------------------------------------------------------------------


def test_synthetic_vector_set_is_seeded_and_accepted_by_hnm_mine(tmp_path, cli):
    from hnm_cli.artifacts.vectors import load_vectors

    synth.make_synthetic(tmp_path / "a", n_docs=300, n_queries=20, dim=8, seed=3)
    synth.make_synthetic(tmp_path / "b", n_docs=300, n_queries=20, dim=8, seed=3)
    ids_a, vec_a = load_vectors(tmp_path / "a" / "vectors" / "corpus")
    ids_b, vec_b = load_vectors(tmp_path / "b" / "vectors" / "corpus")
    assert ids_a == ids_b and (vec_a == vec_b).all() and vec_a.shape == (300, 8)
    assert list(synth.positive_rows(300, 4)) == [0, 75, 150, 225]
    result = cli(
        "mine",
        "--vectors",
        tmp_path / "a" / "vectors",
        "--data",
        tmp_path / "a" / "data",
        "--out",
        tmp_path / "m",
        "-q",
    )
    assert result.exit_code == 0, result.stderr
    stats = orjson.loads((tmp_path / "m" / "stats.json").read_bytes())
    assert stats["pairs"] == 20


# ---------------------------------------------------------------------------------------------
# Slow: the real thing on tiny inputs
# ---------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_st_arm_writes_a_mine_artifact_train_reranker_accepts(tmp_path, tiny_data, cli):
    import st_arm

    assert cli("embed", "--data", tiny_data, "--out", tmp_path / "embed", "--model", "hash:16", "-q").exit_code == 0
    manifest = st_arm.run(tmp_path / "embed" / "hash-16", tiny_data, "train", tmp_path / "st")
    assert manifest.stage == "mine" and manifest.params["strategy"] == "st-mine-hard-negatives"
    rows = [orjson.loads(line) for line in (tmp_path / "st" / "rows-00000.jsonl").read_bytes().splitlines()]
    assert [(r["query_id"], r["positive_id"]) for r in rows] == [("q1", "d1"), ("q2", "d3"), ("q3", "d5")]
    assert all(len(r["negatives"]) == 3 for r in rows)  # the default num_negatives over an 8-doc corpus
    assert all(n["doc_id"] != r["positive_id"] for r in rows for n in r["negatives"])
    again = st_arm.run(tmp_path / "embed" / "hash-16", tiny_data, "train", tmp_path / "st")
    assert again.up_to_date


@pytest.mark.slow
def test_quality_quick_grid_end_to_end_and_resume(tmp_path, tiny_data):
    from conftest import TINY_CORPUS, TINY_QUERIES
    from tiny_models import build_tiny_bert

    words = [f"{d['title']} {d['text']}" for d in TINY_CORPUS] + [q["text"] for q in TINY_QUERIES]
    base = build_tiny_bert(tmp_path / "tinybert", words=words)
    argv = [
        "--data", str(tiny_data), "--work", str(tmp_path / "work"), "--quick", "--arms", "paper", "--families", "bi",
        "--embed-model", "hash:16", "--first-stage-model", "hash-16", "--base-model", str(base),
        "--max-steps", "2", "--batch-size", "2", "--sample-docs", "8", "--sample-train", "3", "--sample-test", "1",
        "--md", str(tmp_path / "B.md"), "--json", str(tmp_path / "B.json"),
    ]  # fmt: skip
    assert quality.main(argv) == 0
    blob = orjson.loads((tmp_path / "B.json").read_bytes())["quality-quick"]
    rows = blob["results"]["families"]["bi"]
    assert rows["paper"]["seeds_done"] == 1 and rows["first-stage"]["seeds_done"] == 1
    assert blob["mode"] == "quick"
    text = (tmp_path / "B.md").read_text()
    assert "QUICK MODE" in text and "| 4 | paper:" in text
    state = orjson.loads((tmp_path / "work" / "state.json").read_bytes())
    assert state["steps"]["train:bi:paper:s0"]["status"] == "done"
    work_seconds = state["steps"]["train:bi:paper:s0"]["work_seconds"]
    # A rerun finds every artifact up to date and keeps the time of the run that did the work.
    assert quality.main(argv) == 0
    state = orjson.loads((tmp_path / "work" / "state.json").read_bytes())
    assert state["steps"]["train:bi:paper:s0"]["up_to_date"] is True
    assert state["steps"]["train:bi:paper:s0"]["work_seconds"] == work_seconds


# ---------------------------------------------------------------------------------------------
# bench/incremental.py: the three nights' edits and the numbers it reports
# ---------------------------------------------------------------------------------------------


def _beir_ids(folder: Path, name: str) -> list[str]:
    return [orjson.loads(line)["_id"] for line in (folder / name).read_bytes().splitlines() if line.strip()]


def test_incremental_edits_touch_a_seeded_share_and_never_a_positive(tmp_path):
    corpus = [{"_id": f"d{i}", "title": "", "text": f"text {i}"} for i in range(200)]
    queries = [{"_id": f"q{i}", "text": f"query {i}"} for i in range(100)]
    qrels = {"train": [(f"q{i}", f"d{i}") for i in range(90)], "test": [(f"q{i}", f"d{i}") for i in range(90, 100)]}
    src = write_beir(tmp_path / "src", corpus, queries, qrels)
    before = incremental.yesterday(src, tmp_path / "y", fraction=0.02, split="train", seed=0)
    assert before == {"docs": 200, "new_docs": 4, "train_queries": 90, "new_queries": 2}
    kept = set(_beir_ids(tmp_path / "y", "corpus.jsonl"))
    assert len(kept) == 196 and {f"d{i}" for i in range(100)} <= kept  # positives all stay
    ch = incremental.changed(src, tmp_path / "c", fraction=0.02, seed=0)
    texts = [orjson.loads(line)["text"] for line in (tmp_path / "c" / "corpus.jsonl").read_bytes().splitlines()]
    assert ch == {"docs": 200, "changed_docs": 4} and sum(t.endswith(incremental.CHANGED) for t in texts) == 4
    assert incremental.changed(src, tmp_path / "c2", fraction=0.02, seed=0) == ch  # seeded
    assert (tmp_path / "c" / "corpus.jsonl").read_bytes() == (tmp_path / "c2" / "corpus.jsonl").read_bytes()
    de = incremental.deleted(src, tmp_path / "d", fraction=0.02, seed=0)
    left = set(_beir_ids(tmp_path / "d", "corpus.jsonl"))
    assert de == {"docs": 200, "deleted_docs": 4} and len(left) == 196 and {f"d{i}" for i in range(100)} <= left
    assert (tmp_path / "d" / "qrels" / "test.tsv").read_bytes() == (src / "qrels" / "test.tsv").read_bytes()


def test_incremental_speedups_reuse_and_report():
    sec = lambda *xs: {s: {"seconds": x, "command": "hnm"} for s, x in zip(incremental.STAGES, xs, strict=True)}  # noqa: E731
    table = incremental.speedups(sec(2.0, 0.5, 1.5), sec(100.0, 0.5, 3.5))
    assert table["embed"] == {"incremental": 2.0, "full": 100.0, "speedup": 50.0}
    assert table["total"] == {"incremental": 4.0, "full": 104.0, "speedup": 26.0}
    assert incremental.reuse_share({"pairs_reused": 95, "pairs_remined": 5}) == 0.95
    assert incremental.reuse_share({"pairs_reused": 0, "pairs_remined": 0, "recomputed_in_full": "x"}) == 0.0
    update = {"pairs_reused": 95, "pairs_remined": 5, "pairs_new": 1, "pairs_inputs_changed": 2, "pairs_drifted": 2}
    night = lambda: {"stages": table, "update": update, "rows_identical_to_cold_mine": True, "pairs": 100,  # noqa: E731
                     "edit": {"docs": 1000}}  # fmt: skip
    result = {
        "models": ["(configs/default.toml)"],
        "mine_args": "",
        "fraction": 0.01,
        "datasets": {"tiny": {"machine": common.machine_info(),
                              "nights": {e: night() for e in incremental.EDITS}, "full": sec(100.0, 0.5, 3.5),
                              "fixed": {"process_start": 1.2, "model_load": 9.5},
                              "max_abs_vector_diff_vs_full": 1e-4, "rows_differing_from_full_path": 0}},
    }  # fmt: skip
    args = incremental.parse_args(["--data", "/tmp/x", "/tmp/y"])
    assert args.model == [] and [p.name for p in args.data] == ["x", "y"]
    md = incremental.render(result, args)
    assert "| new | 2.0 | 0.5 | 1.5 | **4.0** | 104.0 | **26.0x** | 95.0% | 95 reused / 5 mined again (1 new, " in md
    assert "2 drift) | yes |" in md and "model load 9.5 s" in md and "--data /tmp/x /tmp/y`" in md


def test_incremental_keeps_each_finished_dataset_and_remeasures_when_a_setting_changes(tmp_path, monkeypatch):
    measured: list[str] = []

    def fake_run_dataset(a, data, log):
        measured.append(data.name)
        return {"nights": {}, "full": {}, "fixed": {}, "value": len(measured)}

    monkeypatch.setattr(incremental, "run_dataset", fake_run_dataset)
    base = ["--data", str(tmp_path / "a"), str(tmp_path / "b"), "--work", str(tmp_path / "w"),
            "--results", str(tmp_path / "cells")]  # fmt: skip
    first = incremental.run(incremental.parse_args(base))
    assert measured == ["a", "b"] and sorted(p.name for p in (tmp_path / "cells").iterdir()) == ["a.json", "b.json"]
    assert first["datasets"]["a"]["machine"]["cores"] and first["datasets"]["a"]["value"] == 1
    again = incremental.run(incremental.parse_args(base))  # both read back: nothing measured
    assert measured == ["a", "b"] and again["datasets"]["b"]["value"] == 2
    (tmp_path / "cells" / "b.json").unlink()  # a dataset measured in another session is missing here
    incremental.run(incremental.parse_args(base))
    assert measured == ["a", "b", "b"]
    incremental.run(incremental.parse_args([*base, "--fraction", "0.02"]))  # another edit size: both again
    assert measured == ["a", "b", "b", "a", "b"]
    incremental.run(incremental.parse_args([*base, "--no-results"]))
    assert measured[-2:] == ["a", "b"] and len(measured) == 7


def test_incremental_config_digest_follows_only_the_stages_it_runs(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text("[mine]\nnum_negatives = 3\n[train_reranker]\nepochs = 1\n")
    before = incremental.config_digest(cfg)
    cfg.write_text("# a comment\n[mine]\nnum_negatives = 3  # same value\n[train_reranker]\nepochs = 5\n")
    assert incremental.config_digest(cfg) == before  # another stage's setting: the nights' numbers still hold
    cfg.write_text("[mine]\nnum_negatives = 4\n[train_reranker]\nepochs = 5\n")
    assert incremental.config_digest(cfg) != before
