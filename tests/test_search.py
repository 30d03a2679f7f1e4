"""search.py: VectorSource over shards, exact blocked top-k (values and tie order), the hnsw wrapper."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from hnm_cli.artifacts.vectors import open_vector_source, write_vector_shard
from hnm_cli.errors import DataError
from hnm_cli.search import HnswIndex, VectorSource, exact_topk


def unit(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    x = rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def write_shards(folder: Path, x: np.ndarray, sizes: list[int]) -> Path:
    assert sum(sizes) == len(x)
    start = 0
    for shard, size in enumerate(sizes):
        write_vector_shard(folder, shard, [f"d{i}" for i in range(start, start + size)], x[start : start + size])
        start += size
    return folder


def brute_topk(q: np.ndarray, x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    scores = q @ x.T
    order = np.lexsort((np.broadcast_to(np.arange(len(x)), scores.shape), -scores), axis=-1)[:, :k]
    return np.take_along_axis(scores, order, 1), order


def test_source_from_dir_rows_blocks_and_take(tmp_path: Path) -> None:
    x = unit(np.random.default_rng(0), 23, 4)
    src = open_vector_source(write_shards(tmp_path, x, [5, 0, 11, 7]))
    assert (src.n, src.dim, len(src)) == (23, 4, 23)
    blocks = list(src.blocks(4))
    # Blocks never span shards: 5 -> 4+1, 11 -> 4+4+3, 7 -> 4+3.
    assert [(start, len(b)) for start, b in blocks] == [(0, 4), (4, 1), (5, 4), (9, 4), (13, 3), (16, 4), (20, 3)]
    assert np.array_equal(np.concatenate([b for _, b in blocks]), x)
    assert all(b.dtype == np.float32 and not isinstance(b, np.memmap) for _, b in blocks)
    rows = [22, 0, 5, 5, 16, 4]
    assert np.array_equal(src.take(rows), x[rows])
    assert src.take([]).shape == (0, 4)
    with pytest.raises(IndexError, match="row 23 out of range 0..22"):
        src.take([1, 23])


def test_source_from_array_and_dimension_mismatch(tmp_path: Path) -> None:
    x = unit(np.random.default_rng(1), 6, 3)
    src = VectorSource.from_array(x.astype(np.float64))
    assert (src.n, src.dim) == (6, 3)
    assert src.take([2]).dtype == np.float32
    write_vector_shard(tmp_path, 0, ["a"], np.ones((1, 3), np.float32))
    write_vector_shard(tmp_path, 1, ["b"], np.ones((1, 4), np.float32))
    with pytest.raises(DataError, match="vectors-00001.npy: dimension 4, but the first shard has 3"):
        open_vector_source(tmp_path)


def test_source_from_dir_with_zero_rows_is_an_error(tmp_path: Path) -> None:
    write_vector_shard(tmp_path, 0, [], np.zeros((0, 3), np.float32))
    with pytest.raises(DataError, match="no vector shards"):
        open_vector_source(tmp_path)


@pytest.mark.parametrize("block_rows", [1, 7, 64, 10_000])
def test_exact_topk_matches_brute_force(tmp_path: Path, block_rows: int) -> None:
    rng = np.random.default_rng(2)
    x = unit(rng, 300, 16)
    q = unit(rng, 9, 16)
    src = open_vector_source(write_shards(tmp_path, x, [100, 150, 50]))
    scores, idx = exact_topk(q, src, 12, block_rows=block_rows)
    ref_scores, ref_idx = brute_topk(q, x, 12)
    assert idx.dtype == np.int64 and scores.dtype == np.float32
    assert np.array_equal(idx, ref_idx)
    np.testing.assert_allclose(scores, ref_scores, atol=1e-6)


@pytest.mark.parametrize("query_block", [1, 4, 9, 100])
def test_exact_topk_query_blocks_change_nothing(tmp_path: Path, query_block: int) -> None:
    # Query blocking bounds memory (10k queries x a 16k-row block was ~2.8 GB at once); results must not move.
    rng = np.random.default_rng(5)
    # Small integers: every dot product is exact in float32 whatever BLAS kernel a block size picks, and
    # there are many exact ties, so the tie order (lower row first) is exercised too.
    x = rng.integers(-3, 4, (200, 8)).astype(np.float32)
    q = rng.integers(-3, 4, (9, 8)).astype(np.float32)
    src = open_vector_source(write_shards(tmp_path, x, [120, 80]))
    s_all, i_all = exact_topk(q, src, 15, block_rows=64, query_block=10_000)
    s_blk, i_blk = exact_topk(q, src, 15, block_rows=64, query_block=query_block)
    assert np.array_equal(i_blk, i_all) and np.array_equal(s_blk, s_all)
    with pytest.raises(ValueError, match="query_block"):
        exact_topk(q, src, 1, query_block=0)


def test_exact_topk_ties_lower_row_first_and_k_clipped() -> None:
    # Rows 1, 3 and 4 tie with score 1; row 2 scores 0; row 0 scores -1.
    x = np.array([[-1, 0], [1, 0], [0, 1], [1, 0], [1, 0]], np.float32)
    src = VectorSource.from_array(x)
    q = np.array([[1, 0]], np.float32)
    for block_rows in (1, 2, 5):
        s, i = exact_topk(q, src, 2, block_rows=block_rows)
        assert i.tolist() == [[1, 3]] and s.tolist() == [[1.0, 1.0]]
    s, i = exact_topk(q, src, 50, block_rows=2)
    assert i.tolist() == [[1, 3, 4, 2, 0]]
    assert s.tolist() == [[1.0, 1.0, 1.0, 0.0, -1.0]]


def test_exact_topk_rejects_dimension_mismatch() -> None:
    src = VectorSource.from_array(np.eye(3, dtype=np.float32))
    with pytest.raises(ValueError, match=r"queries have shape \(1, 2\), corpus dimension is 3"):
        exact_topk(np.ones((1, 2), np.float32), src, 1)


def test_hnsw_deterministic_save_load_and_recall(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    x = unit(rng, 1500, 16)
    q = unit(rng, 40, 16)
    src = open_vector_source(write_shards(tmp_path / "vec", x, [700, 800]))
    a = HnswIndex.build(src, M=16, ef_construction=100, random_seed=7, num_threads=1, block_rows=256)
    b = HnswIndex.build(src, M=16, ef_construction=100, random_seed=7, num_threads=1, block_rows=256)
    sa, ia = a.search(q, 10, ef=64)
    sb, ib = b.search(q, 10, ef=64)
    assert np.array_equal(ia, ib) and np.array_equal(sa, sb)
    # Scores are similarities (1 - ip distance), sorted descending.
    np.testing.assert_allclose(sa, np.take_along_axis(q @ x.T, ia, 1), atol=1e-5)
    assert (np.diff(sa, axis=1) <= 0).all()
    _, exact = exact_topk(q, src, 10)
    recall = np.mean([len(set(r) & set(e)) / 10 for r, e in zip(ia, exact, strict=True)])
    assert recall >= 0.95
    a.save(tmp_path / "index.bin")
    loaded = HnswIndex.load(tmp_path / "index.bin", dim=16, n=1500)
    sl, il = loaded.search(q, 10, ef=64)
    assert np.array_equal(il, ia)
    with pytest.raises(DataError, match="hnsw index holds 1500 vectors, expected 1499"):
        HnswIndex.load(tmp_path / "index.bin", dim=16, n=1499)
