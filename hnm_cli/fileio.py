"""Writing and reading files safely, for every module that writes one: atomic writes, JSONL, `.npy`, digests,
stale-file removal. A foundation utility (it knows no artifact layout), so cores, artifacts and stages all use it.

Every file an hnm stage writes goes through `atomic_path`: it is written under a temporary name in the
same directory and `os.replace`d into place, so a killed process never leaves a half-written file under
a final name.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from hnm_cli.errors import CorruptArtifactError, DataError, HnmError

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
    except OSError as err:
        if err.filename is not None or err.errno is None:
            raise
        # A failed write() (disk full: ENOSPC; over a file size limit: EFBIG) names no file; say which one.
        raise OSError(err.errno, err.strerror or str(err), str(path)) from err
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


def save_npy(path: Path, array: np.ndarray, dtype: Any = np.float32) -> None:
    """Save an array as a C-contiguous `.npy` of `dtype` (float32 unless told) atomically.

    Raises:
        OSError: the file could not be written in full. `np.save` writes through C stdio and does not notice a
            short write (a full disk, a file size limit), so the size on disk is checked here.
    """
    array = np.ascontiguousarray(array, dtype=dtype)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, array, allow_pickle=False)
            fh.flush()
            os.fsync(fh.fileno())
            expected, written = fh.tell(), os.fstat(fh.fileno()).st_size
        if written != expected:
            raise OSError(errno.EFBIG, f"short write ({written} of {expected} bytes; disk full?)", str(path))


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


@contextlib.contextmanager
def recorded_file(path: Path) -> Iterator[None]:
    """Read a file a run wrote and its manifest vouches for (a state, a fit, a report) inside this block: any
    failure to parse it becomes one `CorruptArtifactError` naming the file.

    The cheap up-to-date check trusts a file whose size and mtime are as recorded, so bit rot that keeps both (or a
    hand edit that restores the mtime) reaches the reader: it must fail with one line, not a traceback.
    """
    hint = "--verify re-hashes every file of an artifact against its manifest; --force rebuilds it"
    try:
        yield
    except DataError as err:  # iter_jsonl's `path:line: malformed JSON`
        reason = err.message.removeprefix(str(path)).lstrip(":")
        raise CorruptArtifactError(f"{path} is damaged (line {reason})", hint=hint) from err
    except HnmError:
        raise
    except (OSError, ValueError, KeyError, TypeError, IndexError, AttributeError, EOFError) as err:
        reason = str(err).splitlines()[0][:120] if str(err) else type(err).__name__
        if isinstance(err, KeyError):
            reason = f"no field {err}"
        raise CorruptArtifactError(f"{path} is damaged ({reason})", hint=hint) from err


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def remove_path(path: Path) -> None:
    """Remove whatever is at `path`: a file or a symlink (never what it points to) is unlinked, a folder removed
    with its content; nothing there is fine. For a cache entry that must be rebuilt, whatever replaced it.

    Raises:
        OSError: it could not be removed (named).
    """
    path = Path(path)
    if path.is_symlink() or (path.exists() and not path.is_dir()):
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path)


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


def npy_layout(path: Path) -> tuple[tuple[int, ...], np.dtype[Any], int]:
    """Shape, dtype and byte offset of the data of a C-order `.npy` file, from its header; the file's size must
    hold exactly that much data (a truncated or padded shard is refused here, not misread later).

    Raises:
        DataError: not a .npy file, Fortran order, or a size that does not match the header.
    """
    try:
        with open(path, "rb") as fh:
            version = np.lib.format.read_magic(fh)
            reader = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, fortran, dtype = reader(fh)
            offset = fh.tell()
    except (ValueError, EOFError, OSError) as err:
        raise DataError(f"{path}: not a readable .npy file ({str(err).splitlines()[0][:100]})") from err
    if fortran:
        raise DataError(f"{path}: Fortran-ordered array; hnm vector shards are C-contiguous")
    expected = offset + int(np.prod(shape)) * np.dtype(dtype).itemsize
    actual = Path(path).stat().st_size
    if actual != expected:
        raise DataError(f"{path}: {actual} bytes, but its header describes {shape} ({expected} bytes); truncated?")
    return tuple(shape), np.dtype(dtype), offset


def write_npy_blocks(path: Path, rows: int, dim: int, blocks: Iterable[np.ndarray]) -> None:
    """Write a float32 (rows, dim) .npy from blocks atomically, never holding more than one block.

    The header is numpy's own v1.0 header, so the bytes equal `np.save` of the whole array.
    """
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.float32)), "fortran_order": False, "shape": (rows, dim)}
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.lib.format.write_array_header_1_0(fh, header)
        written = 0
        for block in blocks:
            fh.write(np.ascontiguousarray(block, dtype=np.float32).tobytes())
            written += len(block)
        if written != rows:
            raise RuntimeError(f"{path}: wrote {written} rows, expected {rows}")  # internal invariant
        fh.flush()
        os.fsync(fh.fileno())
