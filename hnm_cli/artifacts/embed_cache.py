"""The embedding cache of one model folder of an embed artifact: vectors keyed by the exact text encoded.

    <out>/<model>/.cache/meta.json                  the encoder fingerprint the entries belong to
    <out>/<model>/.cache/seg-<digest>.json          one segment: rows, dim, sha256 of its two arrays (written last)
    <out>/<model>/.cache/seg-<digest>.keys.npy      uint8 [rows, 16]: blake2b-128 of "<kind>\\0<text>"
    <out>/<model>/.cache/seg-<digest>.vectors.npy   float32 [rows, dim]

(`<digest>`: blake2b-64 of the segment's keys and vectors, so the same entries give the same files.)

Why in the artifact and not in `$HNM_CACHE_DIR`: the entries are only valid for the model folder's encoder
fingerprint (weights, prompts, max length, precision, backend), the nightly run writes the same `--out`, and
deleting the artifact deletes its cache; a shared cache would grow with every corpus a machine ever saw.
Bounded: after a full run, a cache holding more than twice the entries the folder needs (plus a slack) is
compacted to exactly those. Integrity: a segment whose arrays do not match the sha256 in its json is dropped
with a warning and its texts are encoded again; an entry is never used unverified.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hnm_cli.fileio import atomic_write_bytes, file_sha256, remove_path, save_npy

log = logging.getLogger("hnm")

CACHE_DIR = ".cache"  # hidden: not part of the vector-set layout that mine and eval read
KEY_BYTES = 16
_COMPACT_SLACK = 1024


def text_key(kind: str, text: str) -> bytes:
    """The cache key of a text as encoded for `kind` ("query" or "document": prompts differ)."""
    return hashlib.blake2b(f"{kind}\0{text}".encode(), digest_size=KEY_BYTES).digest()


class EmbeddingCache:
    """Read and extend the cache of one model folder (see the module docstring)."""

    def __init__(self, model_dir: Path, encoder_fp: str, *, fresh: bool = False, dim: int | None = None) -> None:
        self.dir = Path(model_dir) / CACHE_DIR
        self.encoder_fp = encoder_fp
        self.dim = dim  # the encoder's dimension where known (an earlier run's shards): other segments are dropped
        self.index: dict[bytes, tuple[int, int]] = {}
        self.segments: list[tuple[str, np.ndarray]] = []  # (segment id, memmapped vectors)
        self.pending_keys: list[bytes] = []
        self.pending_vectors: list[np.ndarray] = []
        self.dropped = 0  # entries of damaged segments left out
        # Nothing is written or deleted before `flush`, which runs once every shard is encoded: a run that fails
        # earlier (a model that does not load, an interrupt) leaves the cache of the folder as it was.
        self._restart = fresh  # --force: encode everything again, and cache what this run encodes
        if not fresh:
            self._load()

    # -- reading ------------------------------------------------------------------------------

    def _load(self) -> None:
        if self.dir.is_symlink() or (self.dir.exists() and not self.dir.is_dir()):
            # A link would send the cache's writes (and its compaction's deletes) outside the artifact.
            log.warning("embed: %s is not a folder (a file or a link); starting the cache afresh", self.dir)
            self._restart = True
            return
        meta = self.dir / "meta.json"
        try:
            owner = json.loads(meta.read_text()).get("encoder_fp") if meta.is_file() else None
        except (OSError, ValueError):
            owner = None
        if owner != self.encoder_fp:
            if self.dir.exists():
                log.info("embed: %s: cache of another encoder setting; starting it afresh", self.dir)
            self._restart = True
            return
        descs = sorted(self.dir.glob("seg-*.json"))
        if self.dim is None:  # unknown: the dimension most entries have (a stray segment must not decide it)
            dims: dict[int, int] = {}
            for desc in descs:
                info = self._info(desc)
                if isinstance(info.get("dim"), int) and isinstance(info.get("rows"), int):
                    dims[info["dim"]] = dims.get(info["dim"], 0) + info["rows"]
            self.dim = max(dims, key=lambda d: (dims[d], -d)) if dims else None
        for desc in descs:
            seg = desc.name[: -len(".json")]
            problem = self._check(seg, desc)
            if problem is not None:
                log.warning("embed: %s/%s is damaged (%s); its texts are encoded again", self.dir, seg, problem)
                self.dropped += self._rows_of(desc)
                self._delete(seg)
                continue
            keys = np.load(self.dir / f"{seg}.keys.npy")
            vectors = np.load(self.dir / f"{seg}.vectors.npy", mmap_mode="r")
            number = len(self.segments)
            self.segments.append((seg, vectors))
            for row, key in enumerate(keys):
                self.index[key.tobytes()] = (number, row)

    def _check(self, seg: str, desc: Path) -> str | None:
        try:
            info = json.loads(desc.read_text())
            for part in ("keys", "vectors"):
                path = self.dir / f"{seg}.{part}.npy"
                if file_sha256(path) != info["sha256"][part]:
                    return f"{path.name}: sha256 differs"
            keys = np.load(self.dir / f"{seg}.keys.npy", mmap_mode="r")
            vectors = np.load(self.dir / f"{seg}.vectors.npy", mmap_mode="r")
        except (OSError, ValueError, KeyError, TypeError) as err:
            return f"unreadable: {str(err).splitlines()[0][:80]}"
        if keys.shape != (info["rows"], KEY_BYTES) or vectors.shape != (info["rows"], info.get("dim")):
            return "shapes do not match"
        if vectors.dtype != np.float32:
            return "not float32 vectors"
        if self.dim is not None and vectors.shape[1] != self.dim:
            return f"vectors of dimension {vectors.shape[1]}, the encoder's is {self.dim}"
        # Served vectors skip the encoder: a NaN, an inf or a zero row would reach the shards unseen.
        if not np.isfinite(vectors).all() or not np.asarray(vectors).any(axis=1).all():
            return "a vector holds NaN or inf, or is all zeros"
        return None

    @staticmethod
    def _info(desc: Path) -> dict[str, Any]:
        try:
            info = json.loads(desc.read_text())
        except (OSError, ValueError):
            return {}
        return info if isinstance(info, dict) else {}

    @classmethod
    def _rows_of(cls, desc: Path) -> int:
        rows = cls._info(desc).get("rows", 0)
        return rows if isinstance(rows, int) else 0

    def _delete(self, seg: str) -> None:
        for suffix in (".json", ".keys.npy", ".vectors.npy"):
            (self.dir / f"{seg}{suffix}").unlink(missing_ok=True)

    def lookup(self, keys: Sequence[bytes]) -> tuple[np.ndarray, np.ndarray | None]:
        """(found mask, float32 vectors of the found keys in order, or None when none is found)."""
        where = [self.index.get(k) for k in keys]
        found = np.array([w is not None for w in where], dtype=bool)
        if not found.any():
            return found, None
        rows = [self.segments[w[0]][1][w[1]] for w in where if w is not None]
        return found, np.ascontiguousarray(np.stack(rows), dtype=np.float32)

    # -- writing ------------------------------------------------------------------------------

    def add(self, keys: Sequence[bytes], vectors: np.ndarray) -> None:
        """Queue new entries; they are written as one segment by `flush`."""
        for key, vector in zip(keys, vectors, strict=True):
            if key not in self.index:
                self.pending_keys.append(key)
                self.pending_vectors.append(vector)

    def flush(self) -> None:
        """Write the queued entries as a new segment (arrays first, its json with their sha256 last).

        A cache that cannot be written (disk full) is only a cache: one warning, no partial segment left, the
        entries dropped; the run goes on.
        """
        if not self.pending_keys:
            return
        # In key order: shards reach the cache in the order they finish (any order on Ray), the files must not.
        order = sorted(range(len(self.pending_keys)), key=self.pending_keys.__getitem__)
        pending = [self.pending_keys[i] for i in order]
        keys = np.frombuffer(b"".join(pending), dtype=np.uint8).reshape(-1, KEY_BYTES)
        vectors = np.stack([self.pending_vectors[i] for i in order]).astype(np.float32)
        seg = _segment_name(keys, vectors)
        self.pending_keys, self.pending_vectors = [], []
        try:
            if self._restart:  # the old cache (another encoder setting, --force, not a folder) goes only now
                remove_path(self.dir)
                self.dir.mkdir(parents=True, exist_ok=True)
                atomic_write_bytes(self.dir / "meta.json", json.dumps({"encoder_fp": self.encoder_fp}).encode())
                self._restart = False
            self._write(seg, keys, vectors)
        except OSError as err:
            self._write_failed(seg, err)
            return
        number = len(self.segments)
        self.segments.append((seg, np.load(self.dir / f"{seg}.vectors.npy", mmap_mode="r")))
        for row, key in enumerate(pending):
            self.index[key] = (number, row)

    def _write_failed(self, seg: str, err: OSError) -> None:
        self._delete(seg)
        where = f"{err.filename}: " if err.filename else ""
        log.warning("embed: cannot write the embedding cache (%s%s); these vectors are not cached", where, err.strerror)

    def _write(self, seg: str, keys: np.ndarray, vectors: np.ndarray) -> None:
        save_npy(self.dir / f"{seg}.keys.npy", keys, dtype=np.uint8)
        save_npy(self.dir / f"{seg}.vectors.npy", vectors)
        info: dict[str, Any] = {
            "rows": int(len(keys)),
            "dim": int(vectors.shape[1]),
            "sha256": {p: file_sha256(self.dir / f"{seg}.{p}.npy") for p in ("keys", "vectors")},
        }
        atomic_write_bytes(self.dir / f"{seg}.json", json.dumps(info).encode())

    def compact(self, live: set[bytes]) -> int:
        """Keep only the `live` keys when the cache holds more than twice as many; return entries removed."""
        self.flush()
        if len(self.index) <= 2 * len(live) + _COMPACT_SLACK:
            return 0
        keep = [k for k in self.index if k in live]
        if not keep:
            return 0
        _, vectors = self.lookup(keep)
        assert vectors is not None
        old = [seg for seg, _ in self.segments]
        keys = np.frombuffer(b"".join(keep), dtype=np.uint8).reshape(-1, KEY_BYTES)
        seg = _segment_name(keys, vectors)
        try:
            self._write(seg, keys, vectors)
        except OSError as err:
            self._write_failed(seg, err)  # the old segments stay: still valid, only larger than needed
            return 0
        removed = len(self.index) - len(keep)
        self.segments = [(seg, np.load(self.dir / f"{seg}.vectors.npy", mmap_mode="r"))]
        self.index = {k: (0, i) for i, k in enumerate(keep)}
        for name in old:
            if name != seg:  # the same entries as an old segment give the same name: that one is the new one
                self._delete(name)
        return removed


def _segment_name(keys: np.ndarray, vectors: np.ndarray) -> str:
    """A segment's name from its content: the same entries give the same files, whichever executor or process
    wrote them (a Ray run's artifact is byte for byte a local run's), and a rewrite is harmless."""
    digest = hashlib.blake2b(keys.tobytes(), digest_size=8)
    digest.update(np.ascontiguousarray(vectors, dtype=np.float32).tobytes())
    return f"seg-{digest.hexdigest()}"
