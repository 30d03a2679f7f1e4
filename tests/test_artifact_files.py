"""Shard naming, atomic writes and vector shard round trips."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from hnm_cli.artifacts import files, vectors
from hnm_cli.errors import IncompleteArtifactError


def test_names_are_zero_padded_and_sort_in_shard_order():
    names = [vectors.vectors_name(i) for i in (0, 2, 10, 100)]
    assert names == ["vectors-00000.npy", "vectors-00002.npy", "vectors-00010.npy", "vectors-00100.npy"]
    assert sorted(names) == names
    assert vectors.ids_name(7) == "ids-00007.jsonl"
    assert files.rows_name(3) == "rows-00003.jsonl"


def test_atomic_write_leaves_no_tmp_file(tmp_path: Path):
    target = tmp_path / "sub" / "a.json"
    files.atomic_write_json(target, {"b": 1, "a": [1, 2]})
    assert target.read_text() == '{\n  "a": [\n    1,\n    2\n  ],\n  "b": 1\n}\n'
    assert [p.name for p in target.parent.iterdir()] == ["a.json"]


def test_failed_atomic_write_keeps_old_file_and_removes_tmp(tmp_path: Path):
    target = tmp_path / "rows.jsonl"
    files.write_jsonl(target, [{"x": 1}])

    def rows():
        yield {"x": 2}
        raise RuntimeError("killed mid-write")

    with pytest.raises(RuntimeError):
        files.write_jsonl(target, rows())
    assert target.read_text() == '{"x":1}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["rows.jsonl"]


def test_vector_shards_round_trip_through_memmap(tmp_path: Path):
    rng = np.random.default_rng(0)
    a = rng.standard_normal((3, 4)).astype(np.float64)  # stored as float32 whatever comes in
    b = rng.standard_normal((5, 4)).astype(np.float32)
    vectors.write_vector_shard(tmp_path, 0, ["a0", "a1", "a2"], a)
    vectors.write_vector_shard(tmp_path, 1, [f"b{i}" for i in range(5)], b)
    mm = vectors.open_vector_shards(tmp_path)
    assert [m.dtype for m in mm] == [np.float32, np.float32]
    assert all(m.flags["C_CONTIGUOUS"] for m in mm)
    ids, vecs = vectors.load_vectors(tmp_path)
    assert ids == ["a0", "a1", "a2", "b0", "b1", "b2", "b3", "b4"]
    np.testing.assert_array_equal(vecs, np.concatenate([a.astype(np.float32), b]))
    assert vectors.vector_dim(tmp_path) == 4
    blocks = list(vectors.iter_vector_blocks(tmp_path, 2))
    assert [(start, len(block)) for start, block in blocks] == [(0, 2), (2, 1), (3, 2), (5, 2), (7, 1)]


def test_broken_shard_pair_is_reported(tmp_path: Path):
    files.save_npy(tmp_path / "vectors-00000.npy", np.zeros((2, 2)))
    with pytest.raises(IncompleteArtifactError, match="has no parallel ids-00000.jsonl"):
        vectors.list_vector_shards(tmp_path)


def test_remove_stale_files_keeps_current_outputs(tmp_path: Path):
    for name in ("rows-00000.jsonl", "rows-00001.jsonl", "rows-00002.jsonl", "notes.txt"):
        (tmp_path / name).write_text("x")
    removed = files.remove_stale_files(tmp_path, keep=["rows-00000.jsonl"], patterns=["rows-*.jsonl"])
    assert removed == ["rows-00001.jsonl", "rows-00002.jsonl"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt", "rows-00000.jsonl"]
