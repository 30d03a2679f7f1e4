"""Candidate search over corpus vectors with bounded memory: exact blocked top-k and an hnswlib index.

Vectors are L2-normalised float32, so cosine similarity is the dot product and cosine distance is
``1 - dot``. Corpus vectors stay on disk (vector shards) and are streamed in blocks; nothing here loads a
whole corpus into RAM. Pure core: no printing, no logging configuration, paths only where an index is
saved or loaded.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["VectorSource", "exact_topk", "HnswIndex", "DEFAULT_BLOCK_ROWS"]

DEFAULT_BLOCK_ROWS = 16384


class VectorSource:
    """Row-addressable corpus vectors, either on-disk shards or one in-memory array.

    Rows are numbered 0..n-1 across shards in shard order (the order of ``shards.read_ids``).
    """

    def __init__(self, shards: Sequence[np.ndarray], paths: Sequence[Path] | None = None) -> None:
        """Wrap already-opened 2-D float32 arrays (memmaps or in-memory), all of one dimension.

        Args:
            shards: The parts, in row order. Empty parts are allowed and skipped.
            paths: The .npy file of each part when it is a memmap; blocks are then read with plain file
                reads so the pages do not stay resident in this process.
        """
        raise NotImplementedError

    @classmethod
    def from_dir(cls, directory: Path) -> VectorSource:
        """Open the vector shards of a directory (``vectors-NNNNN.npy``) as memmaps; reads no data.

        Raises:
            DataError: if the shards disagree on dimension or hold no rows.
        """
        raise NotImplementedError

    @classmethod
    def from_array(cls, array: np.ndarray) -> VectorSource:
        """Wrap an in-memory [n, dim] array (converted to float32, C-contiguous)."""
        raise NotImplementedError

    @property
    def n(self) -> int:
        """Number of rows."""
        raise NotImplementedError

    @property
    def dim(self) -> int:
        """Vector dimension."""
        raise NotImplementedError

    def blocks(self, block_rows: int = DEFAULT_BLOCK_ROWS) -> Iterator[tuple[int, np.ndarray]]:
        """Yield ``(first_row, float32 block)`` with at most ``block_rows`` rows each, in row order.

        Blocks never span two shards. Peak memory is one block.
        """
        raise NotImplementedError

    def take(self, indices: Sequence[int] | np.ndarray) -> np.ndarray:
        """Gather rows (any order, repeats allowed) as a new float32 [len(indices), dim] array.

        Reads only the requested rows. Raises IndexError for an index outside 0..n-1.
        """
        raise NotImplementedError


def exact_topk(
    queries: np.ndarray, source: VectorSource, k: int, block_rows: int = DEFAULT_BLOCK_ROWS
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k by dot product: blocked matrix products with a streaming per-query merge.

    Peak memory is about ``len(queries) * (block_rows + k)`` scores, independent of the corpus size.

    Args:
        queries: [nq, dim] float32 query vectors.
        source: The corpus.
        k: Neighbours per query; clipped to ``source.n``.
        block_rows: Corpus rows per matrix product.

    Returns:
        ``(scores, indices)``, both [nq, min(k, n)]: similarities in descending order (float32) and corpus
        row indices (int64). Equal scores are ordered by lower row first, so results are deterministic.
    """
    raise NotImplementedError


class HnswIndex:
    """An hnswlib inner-product index over a VectorSource; similarity = 1 - hnswlib's ip distance."""

    def __init__(self, index: Any, dim: int, n: int) -> None:
        """Wrap a built or loaded ``hnswlib.Index`` (use `build` or `load`)."""
        self._index = index
        self.dim = dim
        self.n = n

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
        raise NotImplementedError

    def save(self, path: Path) -> None:
        """Write the index to ``path`` atomically."""
        raise NotImplementedError

    @classmethod
    def load(cls, path: Path, dim: int, n: int) -> HnswIndex:
        """Load an index saved by `save` for ``n`` vectors of dimension ``dim``."""
        raise NotImplementedError

    def search(self, queries: np.ndarray, k: int, ef: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Approximate top-k. ``ef`` defaults to ``k`` and is raised to at least ``k``.

        Returns:
            ``(scores, indices)`` [nq, min(k, n)]: similarities (1 - distance) in descending order, rows.
        """
        raise NotImplementedError
