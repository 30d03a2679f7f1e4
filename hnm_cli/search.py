"""Candidate search over corpus vectors with bounded memory: exact blocked top-k and an hnswlib index.

Vectors are L2-normalised float32, so cosine similarity is the dot product and cosine distance is
``1 - dot``. Corpus vectors stay on disk (vector shards) and are streamed in blocks; nothing here loads a
whole corpus into RAM. Pure core: no printing, no logging configuration, paths only where an index is
saved or loaded.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hnm_cli.errors import DataError
from hnm_cli.fileio import atomic_path

__all__ = ["VectorSource", "require_finite", "exact_topk", "HnswIndex", "DEFAULT_BLOCK_ROWS", "DEFAULT_QUERY_BLOCK"]

DEFAULT_BLOCK_ROWS = 16384
# Queries scored against one corpus block at a time: the score matrix and argpartition's int64 indices are
# query_block x block_rows each (~270 MB at the defaults), whatever the number of queries.
DEFAULT_QUERY_BLOCK = 1024


def require_finite(rows: np.ndarray, where: object, row_numbers: int | np.ndarray = 0) -> np.ndarray:
    """`rows` (2-D) after checking that every value is finite and no row is all zeros: a NaN or inf vector would
    make every similarity with it NaN and silently reorder a search, a zero vector would match nothing.
    `row_numbers` is the row of `rows[0]` in `where`, or the row of each.

    Raises:
        DataError: `<where>: row <r>: ...` for the first row holding NaN or inf, or all zeros.
    """
    finite = np.isfinite(rows)
    if not finite.all():
        bad = int(np.flatnonzero(~finite.reshape(len(rows), -1).all(axis=1))[0])
        row = bad + row_numbers if isinstance(row_numbers, int) else int(row_numbers[bad])
        raise DataError(f"{where}: row {row}: the vector holds NaN or inf; the vector set is corrupt (rebuild it)")
    # An all-zero vector has no direction: its cosine with everything is 0, so a search through it finds nothing
    # and says nothing (a block weighted to nothing, an encoder that returned zeros).
    nonzero = rows.reshape(len(rows), -1).any(axis=1)
    if rows.size and not nonzero.all():
        bad = int(np.flatnonzero(~nonzero)[0])
        row = bad + row_numbers if isinstance(row_numbers, int) else int(row_numbers[bad])
        raise DataError(f"{where}: row {row}: the vector is all zeros; the vector set is corrupt (rebuild it)")
    return rows


class VectorSource:
    """Row-addressable corpus vectors, either on-disk shards or one in-memory array.

    Rows are numbered 0..n-1 across shards in shard order (the order of ``artifacts.vectors.read_ids``).
    """

    def __init__(self, shards: Sequence[np.ndarray], paths: Sequence[Path] | None = None) -> None:
        """Wrap already-opened 2-D float32 arrays (memmaps or in-memory), all of one dimension.

        Args:
            shards: The parts, in row order. Empty parts are allowed and skipped.
            paths: The .npy file of each part when it is a memmap; blocks are then read with plain file
                reads so the pages do not stay resident in this process.
        """
        if paths is not None and len(paths) != len(shards):
            raise ValueError(f"{len(shards)} shards but {len(paths)} paths")
        parts: list[np.ndarray] = []
        part_paths: list[Path | None] = []
        dim: int | None = None
        for i, shard in enumerate(shards):
            if shard.ndim != 2:
                raise ValueError(f"vector part {i} has shape {shard.shape}, expected [rows, dim]")
            if dim is None:
                dim = int(shard.shape[1])
            elif int(shard.shape[1]) != dim:
                where = paths[i] if paths is not None else f"part {i}"
                raise DataError(f"{where}: dimension {shard.shape[1]}, but the first shard has {dim}")
            if len(shard) == 0:
                continue
            parts.append(shard)
            part_paths.append(Path(paths[i]) if paths is not None else None)
        self._parts = parts
        self._paths = part_paths
        self._dim = dim if dim is not None else 0
        # starts[i] = first global row of part i; starts[-1] = n.
        self._starts = np.concatenate([[0], np.cumsum([len(p) for p in parts])]).astype(np.int64)

    @classmethod
    def from_array(cls, array: np.ndarray) -> VectorSource:
        """Wrap an in-memory [n, dim] array (converted to float32, C-contiguous)."""
        return cls([np.ascontiguousarray(array, dtype=np.float32)])

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickle memmapped shards as their paths, in-memory parts as data.

        A worker process (`hnm_cli.executors`) then reopens the same files instead of receiving a copy of the
        corpus: the vectors travel only when they were never on disk.
        """
        if self._parts and all(self._readable(i) for i in range(len(self._parts))):
            return (_reopen, ([str(p) for p in self._paths],))
        return (VectorSource, ([np.asarray(p) for p in self._parts],))

    @property
    def n(self) -> int:
        """Number of rows."""
        return int(self._starts[-1])

    @property
    def dim(self) -> int:
        """Vector dimension."""
        return self._dim

    def __len__(self) -> int:
        return self.n

    def _where(self, part: int) -> object:
        return self._paths[part] if self._paths[part] is not None else f"vector part {part}"

    def _read(self, part: int, lo: int, hi: int) -> np.ndarray:
        """Rows lo..hi of one part as a fresh float32 array (refused if a row holds NaN or inf)."""
        arr = self._parts[part]
        path = self._paths[part]
        offset = getattr(arr, "offset", None)
        if (
            path is not None
            and offset is not None
            and arr.dtype == np.float32
            and arr.flags.c_contiguous
            and isinstance(arr, np.memmap)
        ):
            # A plain read instead of touching the memmap: mapped pages would stay resident (and count in
            # RSS) for the rest of the scan, so a full pass would hold the whole corpus.
            count = (hi - lo) * self._dim
            with open(path, "rb") as fh:
                out = np.fromfile(fh, dtype=np.float32, count=count, offset=offset + lo * self._dim * 4)
            if out.size != count:
                raise DataError(f"{path}: truncated vector shard (expected {len(arr)} rows)")
            return require_finite(out.reshape(hi - lo, self._dim), path, lo)
        return require_finite(np.array(arr[lo:hi], dtype=np.float32, order="C"), self._where(part), lo)

    def blocks(self, block_rows: int = DEFAULT_BLOCK_ROWS) -> Iterator[tuple[int, np.ndarray]]:
        """Yield ``(first_row, float32 block)`` with at most ``block_rows`` rows each, in row order.

        Blocks never span two shards. Peak memory is one block.
        """
        if block_rows < 1:
            raise ValueError(f"block_rows must be >= 1, got {block_rows}")
        for part, arr in enumerate(self._parts):
            start = int(self._starts[part])
            for lo in range(0, len(arr), block_rows):
                hi = min(lo + block_rows, len(arr))
                yield start + lo, self._read(part, lo, hi)

    def take(self, indices: Sequence[int] | np.ndarray) -> np.ndarray:
        """Gather rows (any order, repeats allowed) as a new float32 [len(indices), dim] array.

        Reads only the requested rows. Raises IndexError for an index outside 0..n-1, DataError for a row that
        holds NaN or inf.
        """
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        out = np.empty((len(idx), self._dim), dtype=np.float32)
        if len(idx) == 0:
            return out
        if idx.min() < 0 or idx.max() >= self.n:
            bad = idx[(idx < 0) | (idx >= self.n)][0]
            raise IndexError(f"row {bad} out of range 0..{self.n - 1}")
        part_of = np.searchsorted(self._starts, idx, side="right") - 1
        for part in np.unique(part_of):
            sel = np.flatnonzero(part_of == part)
            local = idx[sel] - self._starts[part]
            if self._readable(int(part)):
                out[sel] = self._pread_rows(int(part), local)
            else:
                out[sel] = require_finite(np.asarray(self._parts[part][local]), self._where(int(part)), local)
        return out

    def _readable(self, part: int) -> bool:
        """Whether a part is a float32 C-order .npy memmap that plain file reads can serve."""
        arr = self._parts[part]
        return (
            self._paths[part] is not None
            and isinstance(arr, np.memmap)
            and arr.dtype == np.float32
            and arr.flags.c_contiguous
        )

    def _pread_rows(self, part: int, local: np.ndarray) -> np.ndarray:
        """Rows of one memmapped part by positioned reads, one per run of consecutive rows.

        Indexing the memmap instead would fault pages in with kernel readahead: 200 random rows of a
        200k x 256 shard left ~150 MB resident.
        """
        arr = self._parts[part]
        row_bytes = self._dim * 4
        base = int(arr.offset)  # type: ignore[attr-defined]  # a np.memmap (from_dir), not a plain array
        uniq, inverse = np.unique(local, return_inverse=True)
        buf = np.empty((len(uniq), self._dim), dtype=np.float32)
        view = memoryview(buf).cast("B")  # type: ignore[arg-type]  # numpy arrays are buffers; the stubs lag
        # Split the sorted rows into runs of consecutive rows: one read each.
        breaks = np.flatnonzero(np.diff(uniq) != 1) + 1
        starts = np.concatenate([[0], breaks])
        ends = np.concatenate([breaks, [len(uniq)]])
        path = self._paths[part]
        assert path is not None  # _readable() checked it
        fd = os.open(path, os.O_RDONLY)
        try:
            for a, b in zip(starts.tolist(), ends.tolist(), strict=True):
                want = (b - a) * row_bytes
                got = os.preadv(fd, [view[a * row_bytes : b * row_bytes]], base + int(uniq[a]) * row_bytes)
                if got != want:
                    raise DataError(f"{self._paths[part]}: truncated vector shard")
        finally:
            os.close(fd)
        return require_finite(buf, path, uniq)[inverse.reshape(-1)]


def _reopen(paths: list[str]) -> VectorSource:
    """The `VectorSource` of these `.npy` shards, memmapped again (the other end of `VectorSource.__reduce__`)."""
    # Opened and checked (`artifacts.vectors.open_shard`) where the source was made; a memmap again here.
    return VectorSource([np.load(p, mmap_mode="r") for p in paths], [Path(p) for p in paths])


def _topk_rows(scores: np.ndarray, cols: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-row top-k of ``scores`` [m, c] with column ids ``cols`` (shared [c] or per-row [m, c]).

    Order: score descending, then id ascending; exact under ties (a boundary tie keeps the lower ids).
    """
    m, c = scores.shape
    full_cols = np.broadcast_to(cols, (m, c)) if cols.ndim == 1 else cols
    if k >= c:
        order = np.lexsort((full_cols, -scores), axis=-1)
        return np.take_along_axis(scores, order, 1), np.take_along_axis(full_cols, order, 1)
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    top_s = np.take_along_axis(scores, part, 1)
    top_c = np.take_along_axis(full_cols, part, 1)
    kth = top_s.min(axis=1)
    # argpartition breaks ties arbitrarily: where more columns equal the k-th score than were kept,
    # redo that row so the lowest ids win (rare; only exact ties reach this).
    n_eq_all = (scores == kth[:, None]).sum(axis=1)
    n_eq_kept = (top_s == kth[:, None]).sum(axis=1)
    for r in np.flatnonzero(n_eq_all > n_eq_kept):
        gt = np.flatnonzero(scores[r] > kth[r])
        eq = np.flatnonzero(scores[r] == kth[r])
        eq = eq[np.argsort(full_cols[r, eq], kind="stable")][: k - len(gt)]
        keep = np.concatenate([gt, eq])
        top_s[r] = scores[r, keep]
        top_c[r] = full_cols[r, keep]
    order = np.lexsort((top_c, -top_s), axis=-1)
    return np.take_along_axis(top_s, order, 1), np.take_along_axis(top_c, order, 1)


def exact_topk(
    queries: np.ndarray,
    source: VectorSource,
    k: int,
    block_rows: int = DEFAULT_BLOCK_ROWS,
    query_block: int = DEFAULT_QUERY_BLOCK,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k by dot product: blocked matrix products with a streaming per-query merge.

    Peak working memory is about ``min(len(queries), query_block) * (block_rows + k) * 16`` bytes, independent
    of the corpus size and of the number of queries (plus the [nq, k] result itself).

    Args:
        queries: [nq, dim] float32 query vectors.
        source: The corpus.
        k: Neighbours per query; clipped to ``source.n``.
        block_rows: Corpus rows per matrix product.
        query_block: Queries per pass over the corpus (the corpus is read once per pass; memmapped shards
            stay in the page cache between passes).

    Returns:
        ``(scores, indices)``, both [nq, min(k, n)]: similarities in descending order (float32) and corpus
        row indices (int64). Equal scores are ordered by lower row first, so results are deterministic.
    """
    q = np.ascontiguousarray(queries, dtype=np.float32)
    if q.ndim != 2 or q.shape[1] != source.dim:
        raise ValueError(f"queries have shape {q.shape}, corpus dimension is {source.dim}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if query_block < 1:
        raise ValueError(f"query_block must be >= 1, got {query_block}")
    k = min(k, source.n)
    if len(q) > query_block:
        parts = [
            _exact_topk_block(q[lo : lo + query_block], source, k, block_rows) for lo in range(0, len(q), query_block)
        ]
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
    return _exact_topk_block(q, source, k, block_rows)


def _exact_topk_block(q: np.ndarray, source: VectorSource, k: int, block_rows: int) -> tuple[np.ndarray, np.ndarray]:
    best_s = np.empty((len(q), 0), dtype=np.float32)
    best_i = np.empty((len(q), 0), dtype=np.int64)
    if len(q) == 0:
        return np.empty((0, k), np.float32), np.empty((0, k), np.int64)
    for start, block in source.blocks(block_rows):
        scores = q @ block.T
        s, i = _topk_rows(scores, np.arange(start, start + len(block), dtype=np.int64), k)
        del scores
        best_s, best_i = _topk_rows(np.concatenate([best_s, s], 1), np.concatenate([best_i, i], 1), k)
    return best_s, best_i


class HnswIndex:
    """An hnswlib inner-product index over a VectorSource; similarity = 1 - hnswlib's ip distance."""

    def __init__(self, index: Any, dim: int, n: int) -> None:
        """Wrap a built or loaded ``hnswlib.Index`` (use `build` or `load`)."""
        self._index = index
        self.dim = dim
        self.n = n
        self.num_threads = 1

    @classmethod
    def build(
        cls,
        source: VectorSource,
        *,
        M: int = 32,  # noqa: N803 (hnswlib's name)
        ef_construction: int = 200,
        random_seed: int = 0,
        num_threads: int = 1,
        block_rows: int = DEFAULT_BLOCK_ROWS,
    ) -> HnswIndex:
        """Build an index over every row of ``source``, adding ``block_rows`` rows at a time (label = row).

        ``num_threads=1`` with a fixed ``random_seed`` gives a reproducible graph.
        """
        import hnswlib

        index = hnswlib.Index(space="ip", dim=source.dim)
        index.init_index(max_elements=max(source.n, 1), ef_construction=ef_construction, M=M, random_seed=random_seed)
        for start, block in source.blocks(block_rows):
            labels = np.arange(start, start + len(block), dtype=np.int64)
            index.add_items(block, labels, num_threads=num_threads)
        out = cls(index, source.dim, source.n)
        out.num_threads = num_threads
        return out

    def save(self, path: Path) -> None:
        """Write the index to ``path`` atomically."""
        with atomic_path(Path(path)) as tmp:
            self._index.save_index(str(tmp))

    @classmethod
    def load(cls, path: Path, dim: int, n: int) -> HnswIndex:
        """Load an index saved by `save` for ``n`` vectors of dimension ``dim``.

        Raises:
            DataError: if the file cannot be read or holds a different number of vectors.
        """
        import hnswlib

        index = hnswlib.Index(space="ip", dim=dim)
        try:
            index.load_index(str(path), max_elements=max(n, 1))
        except (RuntimeError, OSError) as err:
            raise DataError(f"{path}: cannot load the hnsw index ({err})") from err
        if index.get_current_count() != n:
            raise DataError(f"{path}: hnsw index holds {index.get_current_count()} vectors, expected {n}")
        return cls(index, dim, n)

    def search(self, queries: np.ndarray, k: int, ef: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Approximate top-k. ``ef`` defaults to ``k`` and is raised to at least ``k``.

        Returns:
            ``(scores, indices)`` [nq, min(k, n)]: similarities (1 - distance) in descending order, rows.
            Equal similarities are ordered by lower row first.

        Raises:
            RuntimeError: from hnswlib when the graph cannot return k results (k close to n, tiny ef/M).
        """
        q = np.ascontiguousarray(queries, dtype=np.float32)
        if q.ndim != 2 or q.shape[1] != self.dim:
            raise ValueError(f"queries have shape {q.shape}, index dimension is {self.dim}")
        k = min(k, self.n)
        if len(q) == 0:
            return np.empty((0, k), np.float32), np.empty((0, k), np.int64)
        self._index.set_ef(max(ef or k, k))
        labels, dist = self._index.knn_query(q, k=k, num_threads=self.num_threads)
        scores = (1.0 - dist).astype(np.float32)
        labels = labels.astype(np.int64)
        order = np.lexsort((labels, -scores), axis=-1)
        return np.take_along_axis(scores, order, 1), np.take_along_axis(labels, order, 1)
