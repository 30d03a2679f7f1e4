"""Shard naming, atomic writes and vector shard round trips."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from hnm_cli import fileio
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
    fileio.atomic_write_json(target, {"b": 1, "a": [1, 2]})
    assert target.read_text() == '{\n  "a": [\n    1,\n    2\n  ],\n  "b": 1\n}\n'
    assert [p.name for p in target.parent.iterdir()] == ["a.json"]


def test_failed_atomic_write_keeps_old_file_and_removes_tmp(tmp_path: Path):
    target = tmp_path / "rows.jsonl"
    fileio.write_jsonl(target, [{"x": 1}])

    def rows():
        yield {"x": 2}
        raise RuntimeError("killed mid-write")

    with pytest.raises(RuntimeError):
        fileio.write_jsonl(target, rows())
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
    fileio.save_npy(tmp_path / "vectors-00000.npy", np.zeros((2, 2)))
    with pytest.raises(IncompleteArtifactError, match="has no parallel ids-00000.jsonl"):
        vectors.list_vector_shards(tmp_path)


def test_remove_stale_files_keeps_current_outputs(tmp_path: Path):
    for name in ("rows-00000.jsonl", "rows-00001.jsonl", "rows-00002.jsonl", "notes.txt"):
        (tmp_path / name).write_text("x")
    removed = fileio.remove_stale_files(tmp_path, keep=["rows-00000.jsonl"], patterns=["rows-*.jsonl"])
    assert removed == ["rows-00001.jsonl", "rows-00002.jsonl"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt", "rows-00000.jsonl"]


def test_save_npy_notices_a_short_write(tmp_path: Path):
    """np.save writes through C stdio and misses a full disk; save_npy checks the size (RLIMIT_FSIZE as a full disk)."""
    import subprocess
    import sys

    script = (
        "import resource, signal, numpy as np\n"
        "from hnm_cli.fileio import save_npy\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (400, 400))\n"
        "try:\n"
        "    save_npy('v.npy', np.ones((20, 16)))\n"
        "except OSError as err:\n"
        "    print(err.filename, err.strerror)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.stdout == "v.npy short write (400 of 1408 bytes; disk full?)\n", done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # neither the file nor its temp


def test_non_finite_rows_and_non_float_shards_are_refused(tmp_path: Path):
    from hnm_cli.artifacts.vectors import open_vector_source
    from hnm_cli.errors import DataError

    x = np.eye(4, dtype=np.float32)
    x[2, 1] = np.nan
    vectors.write_vector_shard(tmp_path, 0, ["a", "b", "c", "d"], x)
    npy = tmp_path / "vectors-00000.npy"
    message = f"{npy}: row 2: the vector holds NaN or inf"
    with pytest.raises(DataError, match=message):
        list(open_vector_source(tmp_path).blocks(2))
    with pytest.raises(DataError, match=message):
        open_vector_source(tmp_path).take([3, 2])
    assert open_vector_source(tmp_path).take([3, 0]).shape == (2, 4)  # rows not asked for are not read
    with pytest.raises(DataError, match=message):
        vectors.read_vector_rows(npy, 1, 4)
    with pytest.raises(DataError, match=message):
        list(vectors.iter_vector_blocks(tmp_path, 3))
    np.save(npy, np.eye(4, dtype=np.int32))
    with pytest.raises(DataError, match="expected a 2-D float32 array, got shape \\(4, 4\\) of int32"):
        vectors.read_vector_rows(npy, 0, 4)
    np.save(npy, np.eye(4, dtype=np.float16))  # another float width: read with a cast
    assert vectors.read_vector_rows(npy, 0, 4).dtype == np.float32
    assert open_vector_source(tmp_path).take([1])[0, 1] == 1.0


def test_duplicate_ids_are_refused_with_both_lines(tmp_path: Path):
    from hnm_cli.errors import DataError

    vectors.write_vector_shard(tmp_path, 0, ["a", "b"], np.eye(2))
    vectors.write_vector_shard(tmp_path, 1, ["c", "a"], np.eye(2))
    with pytest.raises(
        DataError, match="ids-00001.jsonl:2: field 'id': duplicate id 'a' \\(also at ids-00000.jsonl:1\\)"
    ):
        vectors.read_ids(tmp_path)
