"""`hnm report`: the page data on hand-made and tiny artifacts (risk, sample, summaries, sections), the runner and
the command on a tiny pipeline run, and the size of the page of a synthetic million-pair mine artifact.

The page in a real browser is tests/test_report_browser.py.
"""

from __future__ import annotations

import random
import re
import time
from pathlib import Path

import orjson
import pytest
from artifact_builders import make_mine_artifact

from hnm_cli.artifacts.evaluation import read_candidates, read_rankings
from hnm_cli.artifacts.manifest import file_input
from hnm_cli.artifacts.mined import iter_rows, mined_row, negative_record
from hnm_cli.reporting import sections
from hnm_cli.reporting.evaluation_section import evaluation_section, shown_query_ids, wins_and_losses
from hnm_cli.reporting.risk import DistanceSummary, PairSampler, negative_risk, pair_risk


def neg(doc: str, d_qd: float | None, d_qp: float | None, d_pd: float | None, source: str = "rule") -> dict:
    return negative_record(doc, source, 1, d_qd, d_qp, d_pd)


# ---------------------------------------------------------------------------------------------
# Risk of one negative (hand-computed)
# ---------------------------------------------------------------------------------------------


def test_risk_above_the_positive_and_past_percpos() -> None:
    # s(Q,D) = 0.8, s(Q,PD) = 0.7: 0.8 - 0.95 * 0.7 = 0.135 past the ceiling; s(PD,D) = 0.5 is far below 0.95
    risk, flags = negative_risk(neg("d", 0.2, 0.3, 0.5))
    assert risk == pytest.approx(0.135)
    assert flags == ["above-positive", "percpos"]


def test_risk_of_a_near_duplicate_below_the_positive() -> None:
    # s(Q,D) = 0.5 < 0.665: not past the ceiling (-0.165); s(PD,D) = 0.96: 0.01 past the near-duplicate line
    risk, flags = negative_risk(neg("d", 0.5, 0.3, 0.04))
    assert risk == pytest.approx(0.01)
    assert flags == ["near-duplicate"]


def test_risk_of_a_safe_negative_is_negative_and_unflagged() -> None:
    risk, flags = negative_risk(neg("d", 0.6, 0.2, 0.7))  # 0.4 - 0.76 = -0.36; 0.3 - 0.95 = -0.65
    assert risk == pytest.approx(-0.36)
    assert flags == []


def test_risk_when_the_query_does_not_resemble_its_positive() -> None:
    # s(Q,PD) = -0.2: the ceiling is 0.95 * -0.2 = -0.19, and s(Q,D) = -0.1 is 0.09 past it (as hnm mine's fn_risk)
    risk, flags = negative_risk(neg("d", 1.1, 1.2, 1.5))
    assert risk == pytest.approx(0.09)
    assert flags == ["above-positive", "percpos"]


def test_risk_without_distances() -> None:
    assert negative_risk(neg("d", None, None, None, source="bm25")) == (None, [])
    assert pair_risk(mined_row("q", "p", [], None)) == float("-inf")


# ---------------------------------------------------------------------------------------------
# The bounded sample: most risky first, then seeded random
# ---------------------------------------------------------------------------------------------


def _rows(n: int) -> list[dict]:
    rng = random.Random(7)
    rows = []
    for i in range(n):
        d_qp = 0.3
        negs = [neg(f"d{i}-{j}", rng.uniform(0.1, 0.9), d_qp, rng.uniform(0.3, 1.2)) for j in range(2)]
        rows.append(mined_row(f"q{i}", f"p{i}", negs, None))
    return rows


def test_sample_keeps_the_riskiest_then_a_seeded_draw_independent_of_row_order() -> None:
    rows = _rows(50)
    sampler = PairSampler(10, seed=3)
    for row in rows:
        sampler.add(row)
    sample = sampler.result()
    assert (len(sample.risky), len(sample.random), sample.total, sample.left_out) == (5, 5, 50, 40)
    by_risk = sorted(rows, key=pair_risk, reverse=True)
    assert [r["query_id"] for r in sample.risky] == [r["query_id"] for r in by_risk[:5]]
    assert not {r["query_id"] for r in sample.random} & {r["query_id"] for r in sample.risky}

    shuffled = rows[:]
    random.Random(1).shuffle(shuffled)
    again = PairSampler(10, seed=3)
    for row in shuffled:
        again.add(row)
    assert again.result() == sample  # order of the rows does not matter
    other = PairSampler(10, seed=4)
    for row in rows:
        other.add(row)
    assert [r["query_id"] for r in other.result().random] != [r["query_id"] for r in sample.random]


def test_sample_puts_pairs_with_suspected_positives_first_and_keeps_all_of_a_small_run() -> None:
    rows = _rows(6)
    rows[4]["suspected"] = [{"doc_id": "s1", "score": 0.97, "guard": "percpos"}]
    sampler = PairSampler(100)
    for row in rows:
        sampler.add(row)
    sample = sampler.result()
    assert sample.risky[0]["query_id"] == "q4"
    assert (len(sample.risky) + len(sample.random), sample.left_out) == (6, 0)
    none = PairSampler(0)
    none.add(rows[0])
    assert (none.result().total, none.result().left_out) == (1, 1)


def test_distance_summary_counts_every_row() -> None:
    rows = [
        mined_row("q1", "p1", [neg("a", 0.2, 0.3, 0.5), neg("b", 0.5, 0.3, 0.05)], None),
        mined_row("q2", "p2", [], None) | {"suspected": [{"doc_id": "x"}, {"doc_id": "y"}]},
        mined_row("q3", "p3", [neg("c", None, None, None, source="random")], None),
    ]
    summary = DistanceSummary()
    for row in rows:
        summary.add(row)
    data = summary.to_json()
    assert (data["pairs"], data["negatives"], data["with_distances"], data["pairs_without_negative"]) == (3, 3, 2, 1)
    assert (data["suspected"], data["pairs_with_suspected"]) == (2, 1)
    assert data["share_above_positive"] == 0.5 and data["share_percpos"] == 0.5
    assert data["share_near_duplicate"] == 0.5 and data["share_risky"] == 1.0
    assert data["sources"] == {"rule": 2, "random": 1}
    assert sum(data["hist"]["d_qd"]) == 2 and sum(data["hist"]["d_pd"]) == 2
    assert sum(data["hist"]["d_qp"]) == 1  # once per pair: both negatives share the positive
    assert data["hist"]["d_qd"][4] == 1  # 0.2 in [0.2, 0.25)


# ---------------------------------------------------------------------------------------------
# Sections
# ---------------------------------------------------------------------------------------------


def _view(rel: str, stage: str, inputs: list[dict], digest: str, states: list[str], **extra) -> sections.ArtifactView:
    manifest = {"stage": stage, "inputs": inputs, "params": extra.get("params", {}), "stats": {"seconds": 1.5},
                "outputs": [{"path": "x", "bytes": 10}], "fingerprint": "sha256:" + "f" * 64}  # fmt: skip
    return sections.ArtifactView(rel, manifest, digest, extra.get("problem"), states)


def test_pipeline_links_stages_by_digest_and_says_what_is_stale() -> None:
    reduce = _view("reduce", "reduce", [{"role": "corpus", "path": "c.jsonl", "sha256": "1" * 64}], "D-red", ["ok"])
    mine = _view("mine", "mine", [{"role": "vectors", "path": "/elsewhere/reduce", "stage": "reduce",
                                   "sha256": "D-red"}, {"role": "qrels", "path": "q.tsv", "sha256": "2" * 64}],
                 "D-mine", ["ok", "changed"])  # fmt: skip
    evaluation = _view("eval", "eval", [{"role": "corpus", "path": "c.jsonl", "sha256": "1" * 64}], "D-ev",
                       ["missing"], params={"models": [{"name": "tuned", "identity": "D-tr", "source": "r"}]})  # fmt: skip
    train = _view("reranker", "train-reranker", [], "D-tr", [], problem="model/x: missing")
    cards = sections.pipeline_section([evaluation, mine, reduce, train])["artifacts"]
    assert [c["stage"] for c in cards] == ["reduce", "mine", "train-reranker", "eval"]
    by = {c["stage"]: c for c in cards}
    assert by["mine"]["inputs"][0]["link"] == reduce.anchor and by["mine"]["inputs"][0]["link_rel"] == "reduce"
    assert [c["status"] for c in cards] == ["up to date", "stale", "stale", "unknown"]
    assert by["mine"]["notes"] == ["input qrels (q.tsv) changed"]
    assert by["train-reranker"]["notes"] == ["output model/x: missing"]
    assert by["eval"]["inputs"][-1]["link"] == train.anchor  # the reranker it scored, by identity


def test_wins_and_losses_against_the_baseline() -> None:
    per_query = [
        {"run": "base", "query_id": "a", "mrr@10": 1.0}, {"run": "tuned", "query_id": "a", "mrr@10": 0.5},
        {"run": "base", "query_id": "b", "mrr@10": 0.2}, {"run": "tuned", "query_id": "b", "mrr@10": 1.0},
        {"run": "base", "query_id": "c", "mrr@10": 0.5}, {"run": "tuned", "query_id": "c", "mrr@10": 0.5},
        {"run": "base", "query_id": "d", "mrr@10": 0.5}, {"run": "tuned", "query_id": "d", "mrr@10": 0.0},
    ]  # fmt: skip
    wl = wins_and_losses(per_query, ["base", "tuned"], "base", "mrr@10")
    assert list(wl) == ["tuned"]
    t = wl["tuned"]
    assert (t["wins"], t["losses"], t["ties"]) == (1, 2, 1)
    assert t["deltas"] == [-0.5, -0.5, 0.0, 0.8]
    assert [q for q, *_ in t["worst"]] == ["a", "d"] and [q for q, *_ in t["best"]] == ["b"]

    report = {"metrics": ["mrr@10"], "primary_metric": "mrr@10", "baseline": "base",
              "first_stage": {"method": "bm25", "top_k": 5, "recall@5": 0.75},
              "runs": {"base": {"kind": "bi-encoder", "seeds": 1, "mean": {"mrr@10": 0.55}},
                       "tuned": {"kind": "bi-encoder", "seeds": 1, "mean": {"mrr@10": 0.5},
                                 "delta": {"mrr@10": -0.05}, "p_value": {"mrr@10": 0.6}}}}  # fmt: skip
    assert shown_query_ids(per_query, report) == {"a", "b", "d"}
    rankings = {"base": {"a": [("x1", 3.0), ("x2", 1.0)]}, "tuned": {"a": [("x2", 2.0), ("x1", 1.0)]}}
    section = evaluation_section(
        _view("eval", "eval", [], "E", []), report, per_query, rankings=rankings,
        qrels={"a": {"x1": 1, "x9": 0}}, queries={"a": "query a"}, docs={"x1": "the answer", "x2": "a look-alike"},
    )  # fmt: skip
    assert section["first_stage"]["ceiling"] == 0.75
    shown = {q["query_id"]: q for q in section["wins_losses"]["tuned"]["queries"]}
    a = shown["a"]
    assert (a["kind"], a["query"], a["delta"]) == ("loss", "query a", -0.5)
    assert [d["doc_id"] for d in a["relevant"]] == ["x1"]
    assert [(d["doc_id"], d["relevance"]) for d in a["top_before"]] == [("x1", 1), ("x2", 0)]
    assert [(d["doc_id"], d["relevance"]) for d in a["top_after"]] == [("x2", 0), ("x1", 1)]
    assert shown["b"]["top_before"] is None  # not in the rankings given: shown as "not recorded"


def test_mining_section_reads_suspected_rows_and_recorded_risk_figures() -> None:
    row = mined_row("q1", "p1", [neg("n1", 0.2, 0.3, 0.5)], None)
    row["suspected"] = [negative_record("s1", "ceiling", 1, 0.1, 0.3, 0.4), {"no": "doc id"}]
    sampler, summary = PairSampler(10), DistanceSummary()
    sampler.add(row)
    summary.add(row)
    stats = {"pairs": 1, "rejected_c1": 4, "rejected_by": {"percpos": 2},
             "guards": {"removed": {"ceiling": 3, "vote": 0}, "suspected": 1, "random_mixed": 0, "pool": 10},
             "fn_risk": {"negatives": 1, "above_positive": 0.5, "members_disagree": 0.25}}  # fmt: skip
    section = sections.mining_section(
        _view("mine", "mine", [], "M", [], params={"strategy": "rule", "fallback": None}), stats, summary,
        sampler.result(), queries={"q1": "a query"}, docs={"p1": "x" * 1000, "n1": "neg"},
    )  # fmt: skip
    assert section["settings"] == {"strategy": "rule"}
    assert [(g["name"], g["removed"]) for g in section["guards"]] == [
        ("rejected_c1", 4), ("rejected_by.percpos", 2), ("guards.removed.ceiling", 3), ("guards.removed.vote", 0)]  # fmt: skip
    assert section["recorded_risk"] == [("negatives", 1), ("above_positive", 0.5), ("members_disagree", 0.25)]
    pair = section["browser"]["pairs"][0]
    [suspect] = pair["suspected"]  # the entry without a doc id is not shown
    assert (suspect["doc_id"], suspect["source"], suspect["flags"]) == ("s1", "ceiling", ["above-positive", "percpos"])
    assert suspect["risk"] == pytest.approx(0.9 - 0.95 * 0.7)
    assert pair["risky"] and pair["negatives"][0]["flags"] == ["above-positive", "percpos"]
    assert len(section["browser"]["docs"]["p1"]) <= sections.TEXT_CHARS + 2  # cut, with an ellipsis
    assert section["browser"]["queries"] == {"q1": "a query"} and "s1" not in section["browser"]["docs"]


# ---------------------------------------------------------------------------------------------
# The runner and the command on a tiny run
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def tiny_run(cli, tiny_data: Path, tmp_path: Path) -> Path:
    runs = tmp_path / "runs"
    steps = [
        ("embed", "--data", tiny_data, "--out", runs / "embed", "--model", "hash:16", "--model", "hash:8", "-q"),
        ("reduce", "--embeddings", runs / "embed", "--out", runs / "reduce", "--n-components", "6", "-q"),
        ("mine", "--vectors", runs / "reduce", "--data", tiny_data, "--out", runs / "mine", "--num-negatives", "2",
         "--strategy", "rule", "--fallback", "next", "--fill", "short", "--relative-margin", "0.05", "-q"),
        ("mine", "--vectors", runs / "embed" / "hash-16", "--data", tiny_data, "--out", runs / "mine-topk",
         "--strategy", "topk", "--num-negatives", "2", "-q"),
        ("eval", "--data", tiny_data, "--out", runs / "eval", "--top-k", "5", "-q"),
    ]  # fmt: skip
    for step in steps:
        result = cli(*step)
        assert result.exit_code == 0, result.stderr
    return runs


def test_report_of_a_tiny_run(cli, tiny_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "page" / "r.html"
    result = cli("report", tiny_run, "--out", out)
    assert result.exit_code == 0, result.stderr
    assert result.stdout.strip() == str(out)
    assert "report: 5 artifacts" in result.stderr
    html = out.read_text(encoding="utf-8")
    for section in ("pipeline", "vectors", "mining", "evaluation"):
        assert f"<section id='{section}'>" in html
    assert "<section id='training'>" not in html  # no train-reranker artifact: no section
    assert "<h3>Side by side</h3>" in html  # two mine artifacts
    # Self-contained: nothing is fetched (the SVG namespace is a name, not a request).
    assert not re.search(r"""(src|href)\s*=\s*['"]?(https?:)?//""", html)
    assert "<link" not in html and "@import" not in html
    data = orjson.loads(re.search(r"<script type='application/json' id='hnm-data'>(.*?)</script>", html, re.S)[1])
    first = data["browsers"][0]
    assert first["total"] == 3 and first["left_out"] == 0 and len(first["pairs"]) == 3
    assert first["queries"]["q1"] == "how do I create a managed mysql database"
    assert "Deploy MySQL on the managed service" in first["docs"]["d1"]
    assert len(data["browsers"]) == 2
    # the rule ran with a false-negative control: its guard's count, mine's own risk figures, its suspected rows
    assert "guards.removed.ceiling" in html and "False-negative risk recorded by hnm mine" in html
    mined_rows = [row for _, row in iter_rows(tiny_run / "mine")]
    assert any(row.get("suspected") for row in mined_rows)
    shown = {p["query_id"]: p for p in first["pairs"]}
    for row in mined_rows:
        assert [x["doc_id"] for x in shown[row["query_id"]]["suspected"]] == [
            x["doc_id"] for x in row.get("suspected", [])
        ]

    # eval keeps each run's top documents per query (what the per-query view shows before/after)
    rankings = read_rankings(tiny_run / "eval")
    candidates = read_candidates(tiny_run / "eval")
    assert rankings is not None and set(rankings) == {"first-stage"} and set(rankings["first-stage"]) == {"q4"}
    top = rankings["first-stage"]["q4"]
    assert sorted(top, key=lambda t: (-t[1], t[0])) == top and sorted(top) == sorted(candidates["q4"])[:10]

    default = cli("report", tiny_run, "--max-pairs", "1")
    assert default.exit_code == 0 and default.stdout.strip() == str(tiny_run / "report.html")
    small = orjson.loads(
        re.search(r"id='hnm-data'>(.*?)</script>", (tiny_run / "report.html").read_text(), re.S)[1]  # type: ignore[index]
    )
    assert [(b["left_out"], len(b["pairs"])) for b in small["browsers"]] == [(2, 1), (2, 1)]


def test_report_of_one_artifact_and_what_changed_since(cli, tiny_run: Path, tiny_data: Path, tmp_path: Path) -> None:
    (tiny_data / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\n")
    out = tmp_path / "mine.html"
    result = cli("report", tiny_run / "mine", "--out", out)
    assert result.exit_code == 0, result.stderr
    html = out.read_text()
    assert "<section id='mining'>" in html and "<section id='vectors'>" not in html
    assert "input qrels" in html and "changed" in html and "stale" in html
    beside = cli("report", tiny_run / "mine")  # never written into the artifact's own folder
    assert beside.exit_code == 0 and beside.stdout.strip() == str(tiny_run / "report-mine.html")
    assert (tiny_run / "report-mine.html").is_file() and not (tiny_run / "mine" / "report.html").exists()


def test_report_errors(cli, tmp_path: Path, tiny_run: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    result = cli("report", empty)
    assert result.exit_code == 1 and result.stderr.startswith("Error: ") and "no finished hnm artifact" in result.stderr
    missing = cli("report", tmp_path / "nope")
    assert missing.exit_code == 1 and "is not a directory" in missing.stderr
    (tiny_run / "mine" / "rows-00000.jsonl").write_text('{"query_id": "q1"}\n')
    corrupt = cli("report", tiny_run, "--out", tmp_path / "x.html")
    assert corrupt.exit_code == 1 and "rows-00000.jsonl" in corrupt.stderr
    assert not (tmp_path / "x.html").exists()


def test_texts_from_data_when_the_recorded_paths_are_gone(cli, tiny_run: Path, tiny_data: Path, tmp_path: Path) -> None:
    moved = tmp_path / "moved-data"
    tiny_data.rename(moved)
    gone = cli("report", tiny_run, "--out", tmp_path / "a.html")
    assert gone.exit_code == 0, gone.stderr
    assert "texts not shown" in (tmp_path / "a.html").read_text()
    given = cli("report", tiny_run, "--out", tmp_path / "b.html", "--data", moved)
    assert given.exit_code == 0, given.stderr
    html = (tmp_path / "b.html").read_text()
    assert "texts not shown" not in html and "how do I create a managed mysql database" in html


# ---------------------------------------------------------------------------------------------
# A million pairs: the page stays a few MB
# ---------------------------------------------------------------------------------------------

WORDS = "network volume backup policy instance subnet firewall storage object lifecycle cluster region key".split()


@pytest.mark.slow
def test_a_million_pair_run_gives_a_page_of_a_few_mb(cli, tmp_path: Path) -> None:
    rng = random.Random(0)
    n_docs, n_queries, per_query = 50_000, 250_000, 4  # 1,000,000 pairs
    data = tmp_path / "data"
    data.mkdir()

    def text(n: int) -> str:
        return " ".join(rng.choice(WORDS) for _ in range(n))

    with open(data / "corpus.jsonl", "wb") as fh:
        for i in range(n_docs):
            fh.write(orjson.dumps({"_id": f"d{i}", "title": text(4), "text": text(rng.randint(40, 160))}) + b"\n")
    with open(data / "queries.jsonl", "wb") as fh:
        for i in range(n_queries):
            fh.write(orjson.dumps({"_id": f"q{i}", "text": text(8)}) + b"\n")

    def shards():
        rows = []
        for q in range(n_queries):
            for k in range(per_query):
                d_qp = rng.uniform(0.2, 0.6)
                negs = [negative_record(f"d{rng.randrange(n_docs)}", "rule", j + 1, rng.uniform(0.1, d_qp), d_qp,
                                        rng.uniform(0.05, 1.0)) for j in range(3)]  # fmt: skip
                rows.append(mined_row(f"q{q}", f"d{(q * per_query + k) % n_docs}", negs, None))
                if len(rows) == 10_000:
                    yield rows
                    rows = []
        if rows:
            yield rows

    inputs = [file_input(data / "corpus.jsonl", "corpus"), file_input(data / "queries.jsonl", "queries")]
    mine_dir = make_mine_artifact(tmp_path / "run" / "mine", shards(), stats={"pairs": 1_000_000}, inputs=inputs)
    started = time.perf_counter()
    result = cli("report", tmp_path / "run", "--out", tmp_path / "big.html")
    seconds = time.perf_counter() - started
    assert result.exit_code == 0, result.stderr
    size = (tmp_path / "big.html").stat().st_size
    print(f"1M-pair report: {size / 1e6:.2f} MB in {seconds:.1f} s")  # the numbers for the README/closing note
    assert size < 3_000_000
    html = (tmp_path / "big.html").read_text()
    assert "999,000 of 1,000,000 pairs left out" in html
    assert mine_dir.is_dir()
