"""Sharded artifacts on disk: naming, atomic writes, parallel `vectors-NNNNN.npy` + `ids-NNNNN.jsonl`.

Every file an hnm stage writes goes through `atomic_path`: it is written under a temporary name in the
same directory and `os.replace`d into place, so a killed process never leaves a half-written file under
a final name. Vector shards are float32, C-contiguous `.npy` files readable with `np.load(mmap_mode="r")`;
row i of `vectors-k.npy` belongs to the id on line i of `ids-k.jsonl` (each line `{"id": "..."}`).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from hnm_cli.errors import DataError, IncompleteArtifactError

SHARD_DIGITS = 5
_SHARD_RE = re.compile(r"^(vectors|ids|rows)-(\d{5})\.(npy|jsonl)$")


def vectors_name(shard: int) -> str:
    """File name of vector shard `shard` (`vectors-00000.npy`)."""
    return f"vectors-{shard:0{SHARD_DIGITS}d}.npy"


def ids_name(shard: int) -> str:
    """File name of the id shard parallel to `vectors_name(shard)`."""
    return f"ids-{shard:0{SHARD_DIGITS}d}.jsonl"


def rows_name(shard: int) -> str:
    """File name of a JSONL record shard (`rows-00000.jsonl`), used by mine and eval outputs."""
    return f"rows-{shard:0{SHARD_DIGITS}d}.jsonl"


# ---------------------------------------------------------------------------------------------
# Atomic writes
# ---------------------------------------------------------------------------------------------


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success rename it over `path`, on failure delete it.

    The temporary name ends in `.tmp` and carries the pid, so two processes never share one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())


def atomic_write_json(path: Path, obj: Any) -> None:
    """Write one JSON document (pretty-printed, sorted keys) atomically."""
    atomic_write_bytes(path, orjson.dumps(obj, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n")


def write_jsonl(path: Path, rows: Iterable[Any]) -> int:
    """Write rows as JSONL atomically; return the number of rows written."""
    n = 0
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            for row in rows:
                fh.write(orjson.dumps(row, option=orjson.OPT_SERIALIZE_NUMPY))
                fh.write(b"\n")
                n += 1
            fh.flush()
            os.fsync(fh.fileno())
    return n


def save_npy(path: Path, array: np.ndarray) -> None:
    """Save a float32 C-contiguous array as .npy atomically."""
    array = np.ascontiguousarray(array, dtype=np.float32)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, array, allow_pickle=False)
            fh.flush()
            os.fsync(fh.fileno())


def iter_jsonl(path: Path) -> Iterator[Any]:
    """Stream the JSON values of an hnm-written JSONL file (trusted input; see inputs.py for user data)."""
    with open(path, "rb") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                yield orjson.loads(line)
            except orjson.JSONDecodeError as err:
                raise DataError(f"{path}:{lineno}: malformed JSON ({err})") from err


# ---------------------------------------------------------------------------------------------
# Digests
# ---------------------------------------------------------------------------------------------


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------
# Vector shards
# ---------------------------------------------------------------------------------------------


def write_vector_shard(directory: Path, shard: int, ids: list[str], vectors: np.ndarray) -> list[str]:
    """Write one parallel shard pair; return the two file names (relative to `directory`).

    The .npy is written before the ids file, so a shard counts as present only once both exist.
    """
    if len(ids) != len(vectors):
        raise ValueError(f"shard {shard}: {len(ids)} ids but {len(vectors)} vectors")
    directory = Path(directory)
    save_npy(directory / vectors_name(shard), vectors)
    write_jsonl(directory / ids_name(shard), ({"id": i} for i in ids))
    return [vectors_name(shard), ids_name(shard)]


def list_vector_shards(directory: Path) -> list[tuple[Path, Path]]:
    """Sorted (vectors, ids) path pairs in `directory`; raises if a pair is broken."""
    directory = Path(directory)
    if not directory.is_dir():
        raise IncompleteArtifactError(f"{directory} does not exist or is not a directory")
    pairs = []
    for npy in sorted(directory.glob("vectors-*.npy")):
        shard = npy.name[len("vectors-") : -len(".npy")]
        ids = directory / f"ids-{shard}.jsonl"
        if not ids.exists():
            raise IncompleteArtifactError(f"{npy} has no parallel {ids.name}")
        pairs.append((npy, ids))
    return pairs


def read_ids(directory: Path) -> list[str]:
    """All ids of a vector directory, in row order across shards."""
    out: list[str] = []
    for _, ids_path in list_vector_shards(directory):
        out.extend(row["id"] for row in iter_jsonl(ids_path))
    return out


def open_vector_shards(directory: Path) -> list[np.ndarray]:
    """Memory-mapped (read-only) arrays of every shard; nothing is read into RAM yet."""
    return [np.load(npy, mmap_mode="r") for npy, _ in list_vector_shards(directory)]


def vector_dim(directory: Path) -> int:
    """Dimension of the vectors in `directory` (from the first shard's header)."""
    shards = open_vector_shards(directory)
    if not shards:
        raise DataError(f"{directory}: no vector shards (zero rows)")
    return int(shards[0].shape[1])


def load_vectors(directory: Path) -> tuple[list[str], np.ndarray]:
    """Ids and all vectors of a directory as one in-RAM float32 array (small sets only)."""
    ids = read_ids(directory)
    shards = open_vector_shards(directory)
    if not shards:
        return ids, np.zeros((0, 0), dtype=np.float32)
    vectors = np.concatenate([np.asarray(s, dtype=np.float32) for s in shards], axis=0)
    if len(ids) != len(vectors):
        raise DataError(f"{directory}: {len(ids)} ids but {len(vectors)} vector rows")
    return ids, vectors


def iter_vector_blocks(directory: Path, block_rows: int) -> Iterator[tuple[int, np.ndarray]]:
    """Yield (first_row, float32 block) over all shards, at most `block_rows` rows at a time.

    Reads through memory maps, so peak memory is one block, not the whole directory.
    """
    start = 0
    for shard in open_vector_shards(directory):
        for lo in range(0, len(shard), block_rows):
            block = np.asarray(shard[lo : lo + block_rows], dtype=np.float32)
            yield start + lo, block
        start += len(shard)


def npy_layout(path: Path) -> tuple[tuple[int, ...], np.dtype[Any], int]:
    """Shape, dtype and byte offset of the data of a C-order `.npy` file, from its header only."""
    with open(path, "rb") as fh:
        version = np.lib.format.read_magic(fh)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read_header(fh)
        if fortran:
            raise DataError(f"{path}: Fortran-ordered array; hnm vector shards are C-contiguous")
        return tuple(shape), np.dtype(dtype), fh.tell()


def read_vector_rows(path: Path, start: int, stop: int) -> np.ndarray:
    """Rows [start, stop) of a 2-D `.npy` as a fresh float32 array, read with plain file I/O.

    Unlike slicing a memmap, the pages read are never mapped into the process, so a pass over a large
    file block by block keeps resident memory (RSS) at one block instead of growing with the file.
    """
    shape, dtype, offset = npy_layout(path)
    if len(shape) != 2:
        raise DataError(f"{path}: expected a 2-D array, got shape {shape}")
    stop = min(stop, shape[0])
    count = max(stop - start, 0) * shape[1]
    with open(path, "rb") as fh:
        fh.seek(offset + start * shape[1] * dtype.itemsize)
        data = np.fromfile(fh, dtype=dtype, count=count)
    if data.size != count:
        raise DataError(f"{path}: truncated (expected {shape[0]} rows of {shape[1]})")
    return data.reshape(-1, shape[1]).astype(np.float32, copy=False)


def remove_stale_files(directory: Path, keep: Iterable[str], patterns: Iterable[str]) -> list[str]:
    """Delete files matching `patterns` that the current run did not produce; return their names."""
    directory = Path(directory)
    keep_set = set(keep)
    removed = []
    for pattern in patterns:
        for path in directory.glob(pattern):
            rel = path.relative_to(directory).as_posix()
            if rel not in keep_set and path.is_file():
                path.unlink()
                removed.append(rel)
    return sorted(removed)
