"""The shard work of `hnm embed` for one model: which shards of a part are still to do (resume markers), which rows
the embedding cache already holds, encoding the rest here or on an executor's workers, and writing each shard and
then its marker as it is done. `stages/embed.py` plans the run and writes the manifests around it.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hnm_cli import executors, inputs
from hnm_cli.artifacts.embed_cache import EmbeddingCache, text_key
from hnm_cli.artifacts.embed_markers import STALE_PATTERNS as MARKER_PATTERNS
from hnm_cli.artifacts.embed_markers import marker_name, read_marker, shard_fingerprint, write_marker
from hnm_cli.artifacts.manifest import output_entry
from hnm_cli.artifacts.output_dir import LOCK_NAME, lock_owner
from hnm_cli.artifacts.vectors import ids_name, vectors_name, write_vector_shard
from hnm_cli.choices import Engine
from hnm_cli.config import EmbedConfig
from hnm_cli.encoding.encoders import Encoder, Kind, load_encoder
from hnm_cli.encoding.registry import ResolvedModel
from hnm_cli.encoding.runtime import encode_texts, shard_ranges
from hnm_cli.errors import BusyError
from hnm_cli.fileio import remove_stale_files

log = logging.getLogger("hnm")


@dataclass
class Part:
    """One input part (corpus or queries) as the rows to encode, in input order."""

    name: str
    kind: Kind
    ids: list[str]
    texts: list[str]
    skipped_empty: int = 0

    def shard_ranges(self, shard_size: int) -> list[tuple[int, int]]:
        """[start, stop) row ranges of the shards."""
        return shard_ranges(len(self.ids), shard_size)


@dataclass
class PartStats:
    """What happened to one part of one model in this run."""

    rows: int = 0
    shards: int = 0
    shards_encoded: int = 0
    shards_resumed: int = 0
    rows_encoded: int = 0
    unique_encoded: int = 0
    duplicates_skipped: int = 0
    empty_skipped: int = 0
    encode_seconds: float = 0.0
    rows_from_cache: int = 0  # rows of re-written shards whose vectors came from the embedding cache

    def to_json(self) -> dict[str, Any]:
        return {k: round(v, 3) if isinstance(v, float) else v for k, v in self.__dict__.items()}


@dataclass
class LazyEncoder:
    """Loads the model only when a shard actually needs encoding (a resumed or stitching run never does)."""

    resolved: ResolvedModel
    precision: str
    device: str
    factory: Callable[..., Encoder] = load_encoder
    # Called once the model has loaded, before its first shard is written: where the run starts to change the
    # artifact (old manifests removed). A model that fails to load leaves the existing artifact as it was.
    on_first_write: Callable[[], None] = lambda: None
    encoder: Encoder | None = None
    load_seconds: float = 0.0

    def get(self) -> Encoder:
        if self.encoder is None:
            started = time.perf_counter()
            log.info("embed: loading %s (%s)", self.resolved.name, self.resolved.spec.source)
            self.encoder = self.factory(self.resolved, precision=self.precision, device=self.device)
            self.load_seconds = time.perf_counter() - started
            self.on_first_write()
        return self.encoder


@dataclass
class PartWork:
    """One part of one model: its shards, the ones this run must encode, and what happened so far."""

    part: Part
    part_dir: Path
    ranges: list[tuple[int, int]]
    mine: list[int]  # the shards this process is responsible for (all of them unless --shard-id)
    stats: PartStats
    todo: list[tuple[int, str]]  # (shard index, shard fingerprint)
    dim: int | None = None
    cache: EmbeddingCache | None = None  # vectors by text, from earlier runs into this folder


def _from_cache(work: PartWork, k: int) -> tuple[list[bytes], np.ndarray | None, np.ndarray, list[str]]:
    """Shard k's keys, the vectors the cache has for it (rows in shard order, None if none), the mask of rows it
    lacks, and their texts (what still has to be encoded)."""
    lo, hi = work.ranges[k]
    texts = work.part.texts[lo:hi]
    keys = [text_key(work.part.kind, t) for t in texts]
    if work.cache is None:
        return keys, None, np.ones(len(texts), dtype=bool), texts
    found, vectors = work.cache.lookup(keys)
    missing = ~found
    return keys, vectors, missing, [t for t, m in zip(texts, missing, strict=True) if m]


def _merge_cached(
    work: PartWork, keys: list[bytes], cached: np.ndarray | None, missing: np.ndarray, encoded: np.ndarray | None
) -> tuple[np.ndarray, int]:
    """A shard's rows from its cached and its newly encoded vectors, and how many came from the cache; the new
    ones join the cache."""
    if cached is None:
        assert encoded is not None
        rows = encoded
    else:
        rows = np.empty((len(keys), cached.shape[1]), dtype=np.float32)
        rows[~missing] = cached
        if encoded is not None and len(encoded):
            rows[missing] = encoded
    if work.cache is not None and encoded is not None and len(encoded):
        work.cache.add([k for k, m in zip(keys, missing, strict=True) if m], encoded)
    return np.ascontiguousarray(rows, dtype=np.float32), int((~missing).sum())


def plan_part(
    part: Part,
    part_dir: Path,
    encoder_fp: str,
    shard_size: int,
    *,
    shard_id: int | None,
    num_shards: int | None,
    force: bool,
    deep: bool = False,
    recorded: dict[str, dict[str, Any]] | None = None,
) -> PartWork:
    """The part's shards, with those whose marker matches counted as resumed and the rest left to do."""
    partial = shard_id is not None
    ranges = part.shard_ranges(shard_size)
    mine = [k for k in range(len(ranges)) if not partial or k % num_shards == shard_id]  # type: ignore[operator]
    work = PartWork(part, part_dir, ranges, mine, PartStats(rows=len(part.ids), shards=len(ranges)), [])
    work.stats.empty_skipped = part.skipped_empty
    for k in mine:
        lo, hi = ranges[k]
        fp = shard_fingerprint(encoder_fp, part.ids[lo:hi], part.texts[lo:hi])
        marker = part_dir / marker_name(k)
        found = None if force else read_marker(marker, fp, part_dir, deep=deep, recorded=recorded)
        if found is not None:
            work.stats.shards_resumed += 1
            work.stats.duplicates_skipped += found["rows"] - found.get("unique", found["rows"])
            work.dim = found["dim"]
        else:
            work.todo.append((k, fp))
    return work


def _merged(
    work: PartWork,
    keys: list[bytes],
    cached: np.ndarray | None,
    missing: np.ndarray,
    encoded: np.ndarray | None,
    unique: int,
) -> tuple[np.ndarray, int, int]:
    """`_write_shard`'s (rows, unique, from_cache) for a shard assembled from the cache and new vectors.

    `unique` counts the shard's distinct texts, wherever their vectors came from: the encoder's count covers only
    the texts the cache lacked (0 for a shard rebuilt from the cache alone), and a resumed run reads it back.
    """
    rows, from_cache = _merge_cached(work, keys, cached, missing, encoded)
    return rows, len(set(keys)) if cached is not None else unique, from_cache


def _write_shard(work: PartWork, k: int, fp: str, rows: np.ndarray, unique: int, from_cache: int = 0) -> None:
    """Write shard ``k`` and then its marker; count it (``from_cache`` of its rows were not encoded)."""
    lo, hi = work.ranges[k]
    files = write_vector_shard(work.part_dir, k, work.part.ids[lo:hi], rows)
    # The marker goes last: its presence means both shard files are complete.
    write_marker(work.part_dir, k, fp, rows=hi - lo, unique=unique, dim=int(rows.shape[1]), files=files)
    stats = work.stats
    stats.shards_encoded += 1
    encoded = hi - lo - from_cache
    stats.rows_from_cache += from_cache
    stats.rows_encoded += encoded
    stats.unique_encoded += unique
    stats.duplicates_skipped += encoded - unique
    work.dim = int(rows.shape[1])


def encode_here(work: PartWork, lazy: LazyEncoder, batch_size: int, *, progress: bool, label: str) -> None:
    """Encode the part's remaining shards in this process (the local executor), with a bar of rows."""
    from tqdm import tqdm

    part, ranges = work.part, work.ranges
    total = sum(ranges[k][1] - ranges[k][0] for k in work.mine)
    planned = [(k, fp, *_from_cache(work, k)) for k, fp in work.todo]
    if any(texts for *_, texts in planned):
        lazy.get()  # load before the bar starts, so the load time does not count against the rate
    bar = tqdm(
        total=total,
        initial=total - sum(ranges[k][1] - ranges[k][0] for k, _ in work.todo),
        unit="doc",
        desc=f"{label}/{part.name}",
        disable=not progress or not work.todo,
        file=sys.stderr,
        smoothing=0.1,
    )
    with bar:
        for k, fp, keys, cached, missing, texts in planned:
            lo, hi = ranges[k]
            encoded, unique = None, 0
            if texts:
                encoder = lazy.get()
                t0 = time.perf_counter()
                encoded, unique = encode_texts(encoder, texts, part.kind, batch_size, label, on_batch=bar.update)
                work.stats.encode_seconds += time.perf_counter() - t0
            else:
                lazy.on_first_write()  # everything cached: still the moment the artifact starts to change
            bar.update(hi - lo - unique)
            _write_shard(work, k, fp, *_merged(work, keys, cached, missing, encoded, unique))


@dataclass(frozen=True)
class _ShardUnit:
    """One shard to encode on a worker: its texts travel with it, its vectors come back."""

    model: str
    part: str
    shard: int
    lo: int
    hi: int
    kind: Kind
    texts: list[str]
    batch_size: int

    def __str__(self) -> str:
        return f"{self.model}/{self.part} shard {self.shard:05d} (rows {self.lo}-{self.hi - 1})"


@dataclass(frozen=True)
class _WorkerEncoder:
    """A worker's ``setup``: load the model once, with the local run's torch thread count.

    ``threads`` is what torch uses in the hnm process that asked (Ray starts workers with OMP_NUM_THREADS=1), so a
    worker's matrix products split their work as a local run's do.
    """

    resolved: ResolvedModel
    precision: str
    device: str
    factory: Callable[..., Encoder]
    threads: int | None

    def __call__(self) -> Encoder:
        encoder = self.factory(self.resolved, precision=self.precision, device=self.device)
        if self.threads is not None and "torch" in sys.modules:
            import torch

            torch.set_num_threads(self.threads)  # a worker process of ours: its global setting is ours to set
        return encoder


def _encode_unit(encoder: Encoder, unit: _ShardUnit) -> tuple[np.ndarray, int, float]:
    """On a worker: one shard's rows, its unique-text count and the seconds encoding took."""
    t0 = time.perf_counter()
    rows, unique = encode_texts(encoder, unit.texts, unit.kind, unit.batch_size, unit.model)
    return rows, unique, time.perf_counter() - t0


def _local_torch_threads(resolved: ResolvedModel) -> int | None:
    """torch's intra-op thread count in this process (a local run's), or None for encoders without torch."""
    if resolved.engine == Engine.HASH:
        return None  # numpy only: no need to import torch here
    try:
        import torch
    except ImportError:
        return None
    return int(torch.get_num_threads())


def encode_on_workers(
    works: list[PartWork],
    resolved: ResolvedModel,
    cfg: EmbedConfig,
    lazy: LazyEncoder,
    session: executors.Session,
    batch_size: int,
) -> None:
    """Encode every part's remaining shards on the session's workers; write each shard here as it comes back.

    A shard is written (vectors, ids, then its marker) as soon as it arrives, so a driver killed midway leaves
    finished shards with markers, as a local run does, and the rerun skips them.
    """
    units = [
        (work, k, fp, *_from_cache(work, k))
        for work in works
        for k, fp in work.todo
    ]  # fmt: skip
    if not units:
        return
    for work, k, fp, keys, cached, missing, texts in units:
        if not texts:  # every row cached: nothing for a worker to do
            lazy.on_first_write()
            _write_shard(work, k, fp, *_merged(work, keys, cached, missing, None, 0))
    units = [u for u in units if u[6]]
    if not units:
        return
    items = [
        _ShardUnit(resolved.name, w.part.name, k, *w.ranges[k], w.part.kind, texts, batch_size)
        for w, k, _, _, _, _, texts in units
    ]  # fmt: skip
    threads = _local_torch_threads(resolved)
    setup = _WorkerEncoder(resolved, cfg.precision, cfg.device, lazy.factory, threads)
    runner = session.runner()
    first = True
    for i, (rows, unique, seconds) in runner.imap(
        setup, _encode_unit, items, label=f"embed {resolved.name}", unit="shard", cpus_per_worker=threads or 1
    ):
        if first:
            lazy.on_first_write()  # the old manifests go only once a worker has produced a shard
            first = False
        work, k, fp, keys, cached, missing, _ = units[i]
        work.stats.encode_seconds += seconds
        _write_shard(work, k, fp, *_merged(work, keys, cached, missing, rows, unique))


def finish_part(work: PartWork, *, partial: bool) -> tuple[PartStats, list[dict[str, Any]], int | None]:
    """After every shard is written: stale files removed and the outputs listed (a partial run lists none)."""
    if partial:
        return work.stats, [], work.dim
    ranges, part_dir = work.ranges, work.part_dir
    part_dir.mkdir(parents=True, exist_ok=True)  # made only now: a part with no rows still has its folder
    keep = [f for k in range(len(ranges)) for f in (vectors_name(k), ids_name(k), marker_name(k))]
    remove_stale_files(
        part_dir,
        keep=keep,
        patterns=["vectors-*.npy", "ids-*.jsonl", ".*.tmp", *MARKER_PATTERNS],
    )
    outputs = []
    for k, (lo, hi) in enumerate(ranges):
        outputs.append(output_entry(part_dir, vectors_name(k), rows=hi - lo, dim=work.dim))
        outputs.append(output_entry(part_dir, ids_name(k), rows=hi - lo))
    return work.stats, outputs, work.dim


def read_parts(data_paths: inputs.DataPaths, cfg: EmbedConfig) -> dict[str, Part]:
    parts: dict[str, Part] = {}
    on_empty = cfg.on_empty  # validated by EmbedConfig
    if "corpus" in cfg.parts:
        corpus = inputs.read_corpus(data_paths.corpus, on_empty=on_empty)
        docs = list(corpus.items.values())
        parts["corpus"] = Part(
            "corpus", "document", [d.doc_id for d in docs], [d.full_text for d in docs], corpus.skipped_empty
        )
    if "queries" in cfg.parts:
        queries = inputs.read_queries(data_paths.queries, on_empty=on_empty)
        qs = list(queries.items.values())
        parts["queries"] = Part(
            "queries", "query", [q.query_id for q in qs], [q.text for q in qs], queries.skipped_empty
        )
    return parts


def refuse_other_writers(out: Path, mine: str) -> None:
    """A full run and job-array runs must not write one folder at the same time."""
    for other in out.glob(f"{LOCK_NAME}*"):
        if other.name == mine:
            continue
        if mine != LOCK_NAME and other.name.startswith(f"{LOCK_NAME}-shard-"):
            continue  # sibling job-array runs write disjoint shards
        owner = lock_owner(other)
        if owner is not None:
            raise BusyError(f"{out} is being written by another hnm embed (pid {owner[0]})", hint=f"or remove {other}")
