"""exports.py layouts: exact records, and every layout loads with `datasets.load_dataset("json")`."""

from __future__ import annotations

from pathlib import Path

import pytest

from hnm_cli.artifacts.exports import LAYOUTS, ExportCounts, export_rows
from hnm_cli.fileio import write_jsonl

Q = {"q1": "query one", "q2": "query two"}
D = {"p1": "pos one", "p2": "pos two", "p3": "pos three", "n1": "neg one", "n2": "neg two", "n3": "neg three"}
ROWS = [
    {"query_id": "q1", "positive_id": "p1", "negatives": [{"doc_id": "n1"}, {"doc_id": "n2"}]},
    {"query_id": "q1", "positive_id": "p2", "negatives": [{"doc_id": "n1"}]},
    {"query_id": "q2", "positive_id": "p3", "negatives": []},
]


def test_triplet():
    counts = ExportCounts()
    out = list(export_rows(ROWS, "triplet", Q, D, num_negatives=2, counts=counts))
    assert out == [
        {"anchor": "query one", "positive": "pos one", "negative": "neg one"},
        {"anchor": "query one", "positive": "pos one", "negative": "neg two"},
        {"anchor": "query one", "positive": "pos two", "negative": "neg one"},
    ]
    assert (counts.rows, counts.pairs_used, counts.pairs_skipped_empty) == (3, 2, 1)


def test_n_tuple_skips_short_pairs():
    counts = ExportCounts()
    out = list(export_rows(ROWS, "n-tuple", Q, D, num_negatives=2, counts=counts))
    assert out == [{"anchor": "query one", "positive": "pos one", "negative_1": "neg one", "negative_2": "neg two"}]
    assert (counts.pairs_skipped_short, counts.pairs_skipped_empty) == (1, 1)


def test_labeled_pair_dedups_per_query():
    out = list(export_rows(ROWS, "labeled-pair", Q, D, num_negatives=2))
    assert [(r["passage"], r["label"]) for r in out] == [
        ("pos one", 1),
        ("neg one", 0),
        ("neg two", 0),
        ("pos two", 1),
    ]
    assert {r["query"] for r in out} == {"query one"}


def test_labeled_list():
    out = list(export_rows(ROWS, "labeled-list", Q, D, num_negatives=2))
    assert out == [
        {"query": "query one", "docs": ["pos one", "neg one", "neg two"], "labels": [1, 0, 0]},
        {"query": "query one", "docs": ["pos two", "neg one"], "labels": [1, 0]},
    ]


def test_unknown_layout():
    with pytest.raises(ValueError, match="unknown export layout 'pairs'"):
        list(export_rows(ROWS, "pairs", Q, D, num_negatives=1))


EXPECTED_COLUMNS = {
    "triplet": ["anchor", "positive", "negative"],
    "n-tuple": ["anchor", "positive", "negative_1", "negative_2"],
    "labeled-pair": ["query", "passage", "label"],
    "labeled-list": ["query", "docs", "labels"],
}


@pytest.mark.parametrize("layout", LAYOUTS)
def test_loads_with_datasets(tmp_path: Path, layout: str):
    datasets = pytest.importorskip("datasets")
    path = tmp_path / f"{layout}.jsonl"
    n = write_jsonl(path, export_rows(ROWS, layout, Q, D, num_negatives=2))
    ds = datasets.load_dataset("json", data_files=str(path), split="train", cache_dir=str(tmp_path / "cache"))
    assert ds.column_names == EXPECTED_COLUMNS[layout]
    assert len(ds) == n
