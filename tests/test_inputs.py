"""Input validation: every bad record names file, line and field, also through the CLI (a broken gzip corpus,
qrels scores that are not integer grades, conflicting qrels rows)."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import pytest
from conftest import mine_args, one_error, write_beir

from hnm_cli import inputs
from hnm_cli.errors import DataError, InputError
from hnm_cli.qrels import positives, read_qrels


def _corpus(tmp_path: Path, body: bytes) -> Path:
    path = tmp_path / "corpus.jsonl"
    path.write_bytes(body)
    return path


def test_beir_folder_reads_ids_text_and_keeps_unknown_fields(tmp_path: Path):
    folder = write_beir(tmp_path / "d", corpus=[{"_id": "a", "title": "T", "text": "body", "lang": "en"}])
    corpus = inputs.read_corpus(folder)
    doc = corpus["a"]
    assert (doc.doc_id, doc.title, doc.text, doc.meta, doc.full_text) == (
        "a",
        "T",
        "body",
        {"lang": "en"},
        "T body",
    )


def test_plain_jsonl_shards_with_doc_id_and_gzip(tmp_path: Path):
    shard_dir = tmp_path / "shards"
    shard_dir.mkdir()
    (shard_dir / "part-00000.jsonl").write_text('{"doc_id": "x", "text": "one"}\n')
    with gzip.open(shard_dir / "part-00001.jsonl.gz", "wt") as fh:
        fh.write('{"doc_id": 7, "text": "two"}\n')
    corpus = inputs.read_corpus(shard_dir)
    assert corpus.ids == ["x", "7"]
    assert corpus["7"].title == ""


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            b'{"_id": "a", "text": "ok"}\n{"_id": "b", "text": "x"\n',
            "{f}:2: malformed JSON (unexpected end of data)",
        ),
        (b'{"title": "t", "text": "x"}\n', "{f}:1: field '_id': missing id (expected one of _id, doc_id)"),
        (b'{"_id": "a", "text": 3}\n', "{f}:1: field 'text': expected a string, got int"),
        (b'{"_id": "a"}\n', "{f}:1: field 'text': missing"),
        (
            b'{"_id": "a", "text": "x"}\n\n{"_id": "a", "text": "y"}\n',
            "{f}:3: field '_id': duplicate id 'a' (first at {f}:1)",
        ),
        (
            b'{"_id": "a", "text": "  "}\n',
            "{f}:1: field 'text': empty text for id 'a' (use --on-empty skip to drop)",
        ),
        (b'{"_id": "a", "text": "caf\xe9"}\n', "{f}:1: invalid UTF-8 at byte 25"),
        (b"[1, 2]\n", "{f}:1: expected a JSON object, got list"),
        (b'{"_id": ["a"], "text": "x"}\n', "{f}:1: field '_id': id must be a string, got list"),
    ],
)
def test_bad_records_name_file_line_and_field(tmp_path: Path, body: bytes, message: str):
    path = _corpus(tmp_path, body)
    with pytest.raises(DataError) as err:
        inputs.read_corpus(path)
    assert str(err.value) == message.format(f=path)


def test_empty_text_can_be_skipped_with_a_count(tmp_path: Path):
    path = _corpus(tmp_path, b'{"_id": "a", "text": ""}\n{"_id": "b", "text": "x"}\n')
    corpus = inputs.read_corpus(path, on_empty="skip")
    assert (corpus.ids, corpus.skipped_empty) == (["b"], 1)


def test_qrels_unknown_ids_and_header(tmp_path: Path):
    folder = write_beir(tmp_path / "d")
    corpus, queries = inputs.read_corpus(folder), inputs.read_queries(folder)
    qrels = read_qrels(inputs.resolve_qrels_file(folder, "train"), query_ids=queries, doc_ids=corpus)
    assert qrels == {"q1": {"d1": 1}, "q2": {"d3": 1}, "q3": {"d5": 1}}
    bad = tmp_path / "bad.tsv"
    bad.write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\nq1\tnope\t1\n")
    with pytest.raises(DataError) as err:
        read_qrels(bad, query_ids=queries, doc_ids=corpus)
    assert str(err.value) == f"{bad}:3: field 'corpus-id': unknown document id 'nope' (not in corpus)"
    bad.write_text("query-id\tcorpus-id\tscore\nqX\td1\t1\n")
    with pytest.raises(DataError, match=r":2: field 'query-id': unknown query id 'qX'"):
        read_qrels(bad, query_ids=queries, doc_ids=corpus)
    bad.write_text("q1\td1\t1\n")
    with pytest.raises(DataError, match=r":1: expected a header line"):
        read_qrels(bad)
    with pytest.raises(InputError, match="no qrels for split 'dev'"):
        inputs.resolve_qrels_file(folder, "dev")


def test_positives_and_duplicate_text_hash():
    assert positives({"q": {"a": 1, "b": 0, "c": 2}, "r": {"x": 0}}) == {"q": ["a", "c"]}
    assert inputs.text_hash("Hello   World") == inputs.text_hash("hello world")


@pytest.mark.parametrize("stem", ["corpus", "queries"])
def test_a_beir_folder_never_reads_the_other_file_in_place_of_a_missing_one(tmp_path: Path, stem: str):
    folder = write_beir(tmp_path / "d")
    other = "queries" if stem == "corpus" else "corpus"
    (folder / f"{stem}.jsonl").unlink()
    with pytest.raises(InputError) as err:
        inputs.resolve_jsonl_files(folder, stem)
    assert str(err.value) == (
        f"{folder} is a BEIR folder (it has {other}.jsonl, qrels/) but has no {stem}.jsonl or {stem}.jsonl.gz"
    )
    (folder / f"{stem}.jsonl").symlink_to(os.devnull)
    with pytest.raises(InputError, match=rf"^{folder / stem}.jsonl is a character device; expected a JSONL file$"):
        inputs.resolve_jsonl_files(folder, stem)
    (folder / f"{stem}.jsonl").unlink()
    (folder / f"{stem}.jsonl").write_bytes(b"")
    with pytest.raises(InputError, match=r"corpus.jsonl is empty|queries.jsonl is empty"):
        (inputs.read_corpus if stem == "corpus" else inputs.read_queries)(folder)


def test_conflicting_qrels_rows_keep_the_last_grade_with_one_warning(tmp_path: Path, caplog):
    path = tmp_path / "qrels.tsv"
    path.write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\nq1\td1\t1\nq1\td2\t1\nq1\td1\t0\nq2\td2\t2\nq2\td2\t1\n")
    with caplog.at_level("WARNING", logger="hnm"):
        assert read_qrels(path) == {"q1": {"d1": 0, "d2": 1}, "q2": {"d2": 1}}
    assert [r.getMessage() for r in caplog.records] == [
        f"qrels: warning: {path}: 2 row(s) give a (query, doc) pair another score than an earlier row "
        "(e.g. 'q1' 'd1': 1 at line 2, 0 at line 5); the last score is kept"
    ]


# Through the CLI: the exit code and the one `Error:` line naming the file (and line, field).


def test_truncated_or_fake_gzip_corpus(cli, tmp_path: Path) -> None:
    data = write_beir(tmp_path / "gz")
    raw = (data / "corpus.jsonl").read_bytes()
    (data / "corpus.jsonl").unlink()
    (data / "corpus.jsonl.gz").write_bytes(gzip.compress(raw)[:-20])
    result = cli("embed", "--data", data, "--out", tmp_path / "e", "--model", "hash:8")
    assert result.exit_code == 1
    assert one_error(result).startswith(f"Error: {data}/corpus.jsonl.gz: not a readable gzip file")
    (data / "corpus.jsonl.gz").write_bytes(raw)  # plain text under a .gz name
    result = cli("embed", "--data", data, "--out", tmp_path / "e", "--model", "hash:8")
    assert result.exit_code == 1
    assert "not a readable gzip file" in one_error(result)


def _qrels(folder: Path, body: str) -> Path:
    (folder / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\n" + body)
    return folder


@pytest.mark.parametrize("score", ["inf", "nan", "0.5", "1e3", "yes"])
def test_qrels_scores_must_be_integer_grades(cli, world, score: str) -> None:
    _qrels(world["data"], f"q1\td1\t{score}\n")
    result = cli(*mine_args(world, "--force"))
    assert result.exit_code == 1
    assert one_error(result) == (
        f"Error: {world['data']}/qrels/train.tsv:2: field 'score': expected an integer relevance grade, got '{score}'"
    )


def test_conflicting_qrels_rows_warn_once_and_keep_the_last(cli, world) -> None:
    qrels = world["data"] / "qrels" / "train.tsv"
    qrels.write_text(qrels.read_text() + "q1\td1\t0\nq2\td3\t0\n")
    result = cli(*mine_args(world, "--force", "-q"))
    assert result.exit_code == 0, result.stderr
    warnings = [ln for ln in result.stderr.splitlines() if "qrels" in ln]
    assert warnings == [
        f"qrels: warning: {qrels}: 2 row(s) give a (query, doc) pair another score than an earlier row "
        "(e.g. 'q1' 'd1': 1 at line 2, 0 at line 5); the last score is kept"
    ]
