"""`hnm embed`: encode corpus and queries with one or several models into resumable vector shards.

Layout: `<out>/manifest.json` (stage "embed", lists every model) and, per model, a vector set
`<out>/<model>/{manifest.json (stage "embed-model"), corpus/, queries/}`, each part holding parallel shards
`vectors-NNNNN.npy` + `ids-NNNNN.jsonl` of `shard_size` rows in input order.

Resume: every finished shard leaves `<part>/.done/NNNNN.json` holding the shard fingerprint (the model
fingerprint + a digest of that shard's ids and texts). A rerun skips shards whose marker matches, so a run
killed at any point resumes at shard granularity and ends with the same bytes as an uninterrupted run.
`shard_id`/`num_shards` split the shards between processes (index % num_shards == shard_id); such partial
runs write no manifest, and a final run without them finds every shard done and writes the manifests.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from hnm_cli import inputs
from hnm_cli.artifacts.files import atomic_write_json, remove_stale_files
from hnm_cli.artifacts.guards import check_output_path
from hnm_cli.artifacts.manifest import (
    LOCK_NAME,
    MANIFEST_NAME,
    Manifest,
    begin_run,
    canonical_json,
    compute_fingerprint,
    file_input,
    is_up_to_date,
    output_entry,
    output_lock,
    skip_if_up_to_date,
    write_manifest,
)
from hnm_cli.artifacts.vectors import ids_name, vectors_name, write_vector_shard
from hnm_cli.config import EmbedConfig
from hnm_cli.encoding.encoders import Encoder, Kind, load_encoder
from hnm_cli.encoding.registry import ResolvedModel, resolve_model
from hnm_cli.errors import BusyError, ConfigError, DataError

log = logging.getLogger("hnm")

STAGE = "embed"
MODEL_STAGE = "embed-model"
DONE_DIR = ".done"
# Recorded in every manifest so downstream users know what text each document vector saw.
DOC_TEXT = "title + ' ' + text (BEIR convention; text alone when the title is empty)"
PART_KIND: dict[str, Kind] = {"corpus": "document", "queries": "query"}
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


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
        return [(lo, min(lo + shard_size, len(self.ids))) for lo in range(0, len(self.ids), shard_size)]


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

    def to_json(self) -> dict[str, Any]:
        return {k: round(v, 3) if isinstance(v, float) else v for k, v in self.__dict__.items()}


@dataclass
class _LazyEncoder:
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
class _Plan:
    """Everything decided before any heavy work: resolved models, params, fingerprints, input digests."""

    models: list[ResolvedModel]
    model_params: dict[str, dict[str, Any]]
    model_fps: dict[str, str]
    encoder_fps: dict[str, str]
    params: dict[str, Any]
    inputs: list[dict[str, Any]]
    fingerprint: str
    files: dict[str, list[Path]] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------
# Pure helpers
# ---------------------------------------------------------------------------------------------


def dedup_and_sort(texts: list[str]) -> tuple[list[str], np.ndarray]:
    """Unique texts, longest first, and for every input row the index of its text in that list.

    Encoding the unique list and taking `vectors[index]` restores input order; sorting by length keeps
    each batch's padding small. The sort is stable, so the result depends only on `texts`.
    """
    first: dict[str, int] = {}
    inverse_unsorted = np.empty(len(texts), dtype=np.int64)
    for i, text in enumerate(texts):
        inverse_unsorted[i] = first.setdefault(text, len(first))
    unique = list(first)
    order = sorted(range(len(unique)), key=lambda j: -len(unique[j]))
    rank = np.empty(len(unique), dtype=np.int64)
    rank[order] = np.arange(len(unique))
    return [unique[j] for j in order], rank[inverse_unsorted]


def shard_fingerprint(encoder_fp: str, ids: list[str], texts: list[str]) -> str:
    """Fingerprint of one shard: the encoder fingerprint plus a digest of the shard's ids and texts."""
    h = hashlib.sha256(encoder_fp.encode())
    h.update(canonical_json([ids, texts]))
    return "sha256:" + h.hexdigest()


def model_params(resolved: ResolvedModel, cfg: EmbedConfig) -> dict[str, Any]:
    """What determines a model's vectors (batch size and device do not, beyond float noise)."""
    spec = resolved.spec
    return {
        "name": spec.name,
        "source": spec.source,
        "engine": spec.engine,
        "weights": resolved.identity,
        "query_prompt": spec.query_prompt,
        "document_prompt": spec.document_prompt,
        "max_seq_length": spec.max_seq_length,
        "normalize": spec.normalize,
        "precision": cfg.precision,
        "doc_text": DOC_TEXT,
    }


def _layout_params(cfg: EmbedConfig) -> dict[str, Any]:
    return {"shard_size": cfg.shard_size, "on_empty": cfg.on_empty, "parts": list(cfg.parts)}


def _check_name(name: str) -> None:
    if not _SAFE_NAME.match(name) or name == MANIFEST_NAME:
        raise ConfigError(
            f"embed.models: model name {name!r} cannot be a folder name (use letters, digits, '.', '_' or '-')"
        )


# ---------------------------------------------------------------------------------------------
# Runner
# ---------------------------------------------------------------------------------------------


def plan(data_paths: inputs.DataPaths, cfg: EmbedConfig) -> _Plan:
    """Resolve models and digest inputs without reading records or importing torch.

    Raises:
        ConfigError: no model, a bad model name or spec, bad parts.
        InputError: an input path or a packaged model is missing.
    """
    if not cfg.models:
        raise ConfigError(
            "no model to embed with",
            hint="pass --model (e.g. --model pkg:all-MiniLM-L6-v2, a local folder, or hash:16) "
            "or list [[embed.models]] in the --config file",
        )
    bad_parts = [p for p in cfg.parts if p not in PART_KIND]
    if bad_parts or not cfg.parts:
        raise ConfigError(f"embed.parts must be a non-empty subset of corpus, queries; got {list(cfg.parts)}")
    models = []
    for spec in cfg.models:
        _check_name(spec.name)
        models.append(resolve_model(spec))
    where = {"corpus": data_paths.corpus, "queries": data_paths.queries}
    files = {part: inputs.resolve_jsonl_files(where[part], part) for part in cfg.parts}
    digests = [file_input(f, part) for part in cfg.parts for f in files[part]]
    layout = _layout_params(cfg)
    mparams = {m.name: model_params(m, cfg) for m in models}
    model_fps = {name: compute_fingerprint(MODEL_STAGE, p | layout, digests) for name, p in mparams.items()}
    encoder_fps = {name: compute_fingerprint("embed-encoder", p, []) for name, p in mparams.items()}
    params = {"models": list(mparams.values()), **layout}
    return _Plan(
        models=models,
        model_params=mparams,
        model_fps=model_fps,
        encoder_fps=encoder_fps,
        params=params,
        inputs=digests,
        fingerprint=compute_fingerprint(STAGE, params, digests),
        files=files,
    )


def run(
    data_paths: inputs.DataPaths,
    out: Path,
    cfg: EmbedConfig,
    *,
    shard_id: int | None = None,
    num_shards: int | None = None,
    force: bool = False,
    progress: bool = True,
    encoder_factory: Callable[..., Encoder] = load_encoder,
    verify: bool = False,
) -> Manifest:
    """Embed corpus and queries with every model of `cfg` into `out`.

    Args:
        data_paths: where corpus and queries are (`inputs.resolve_data`).
        out: the artifact directory.
        cfg: the resolved EmbedConfig (models, precision, shard_size, ...).
        shard_id: with `num_shards`, encode only the shards whose index % num_shards == shard_id and write
            no manifest (job-array style); a later run without them stitches the manifests.
        num_shards: how many processes split the shards.
        force: re-encode every shard even if the manifest or a shard marker says it is done.
        progress: show tqdm bars (rate, ETA) on stderr.
        encoder_factory: builds an Encoder from (ResolvedModel, precision=, device=); tests inject fakes.
        verify: re-hash every file of `out` in the up-to-date check (`--verify`), not only files whose mtime moved.

    Returns:
        The top-level Manifest (for a partial run: an unwritten one whose stats say what was done).

    Raises:
        ConfigError, InputError, DataError: bad options, missing inputs or models, bad records. Input
            errors are raised before anything is written.
    """
    out = Path(out)
    partial = shard_id is not None or num_shards is not None
    if partial:
        if shard_id is None or num_shards is None:
            raise ConfigError("--shard-id and --num-shards go together")
        if num_shards < 1 or not 0 <= shard_id < num_shards:
            raise ConfigError(
                f"--shard-id must be in [0, {num_shards}) and --num-shards >= 1; got {shard_id}/{num_shards}"
            )

    check_output_path(out, [data_paths.corpus, data_paths.queries])
    the_plan = plan(data_paths, cfg)
    if not partial and (m := skip_if_up_to_date(out, STAGE, the_plan.fingerprint, force=force, deep=verify)):
        return m
    # Job-array runs (--shard-id) write disjoint shards of one folder at once, each under its own lock; a full
    # run (which also stitches the manifests) needs the folder to itself.
    lock = LOCK_NAME if not partial else f"{LOCK_NAME}-shard-{shard_id}-of-{num_shards}"
    with output_lock(out, lock):
        _refuse_other_writers(out, lock)
        return _run_locked(the_plan, data_paths, out, cfg, shard_id, num_shards, force, progress, encoder_factory)


def _refuse_other_writers(out: Path, mine: str) -> None:
    """A full run and job-array runs must not write one folder at the same time."""
    for other in out.glob(f"{LOCK_NAME}*"):
        if other.name == mine:
            continue
        if mine != LOCK_NAME and other.name.startswith(f"{LOCK_NAME}-shard-"):
            continue  # sibling job-array runs write disjoint shards
        owner = _live_owner(other)
        if owner is not None:
            raise BusyError(f"{out} is being written by another hnm embed (pid {owner})", hint=f"or remove {other}")


def _live_owner(lock: Path) -> int | None:
    try:
        pid = int(lock.read_text().split()[0])
        os.kill(pid, 0)
    except (OSError, ValueError, IndexError):
        return None
    return pid


def _run_locked(
    the_plan: _Plan,
    data_paths: inputs.DataPaths,
    out: Path,
    cfg: EmbedConfig,
    shard_id: int | None,
    num_shards: int | None,
    force: bool,
    progress: bool,
    encoder_factory: Callable[..., Encoder],
) -> Manifest:
    partial = shard_id is not None
    parts = _read_parts(data_paths, cfg)  # validates every record before anything is written
    started = time.time()
    all_outputs: list[dict[str, Any]] = []
    model_stats: dict[str, Any] = {}
    for resolved in the_plan.models:
        model_dir = out / resolved.name

        def first_write(model_dir: Path = model_dir) -> None:
            begin_run(out)
            begin_run(model_dir)

        lazy = _LazyEncoder(resolved, cfg.precision, cfg.device, factory=encoder_factory, on_first_write=first_write)
        manifest = _embed_model(
            the_plan, resolved, parts, model_dir, cfg, lazy,
            shard_id=shard_id, num_shards=num_shards, force=force, progress=progress,
        )  # fmt: skip
        model_stats[resolved.name] = manifest.stats
        all_outputs += [{**o, "path": f"{resolved.name}/{o['path']}"} for o in manifest.outputs]

    if partial:
        done = sum(s["shards_encoded"] + s["shards_resumed"] for s in model_stats.values())
        log.info(
            "embed: shard %d/%d finished %d shard(s); run again without --shard-id to write the manifests",
            shard_id, num_shards, done,
        )  # fmt: skip
        return Manifest(
            stage=STAGE,
            fingerprint=the_plan.fingerprint,
            params=the_plan.params,
            inputs=the_plan.inputs,
            stats={"partial": True, "shard_id": shard_id, "num_shards": num_shards, "models": model_stats},
            path=out,
        )
    manifest = write_manifest(
        out,
        stage=STAGE,
        fingerprint=the_plan.fingerprint,
        params=the_plan.params,
        inputs=the_plan.inputs,
        outputs=all_outputs,
        stats={"models": model_stats, "model_names": [m.name for m in the_plan.models]},
        started=started,
    )
    log.info("embed: %d model(s) -> %s", len(the_plan.models), manifest.manifest_path)
    return manifest


def _read_parts(data_paths: inputs.DataPaths, cfg: EmbedConfig) -> dict[str, Part]:
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


def _embed_model(
    the_plan: _Plan,
    resolved: ResolvedModel,
    parts: dict[str, Part],
    model_dir: Path,
    cfg: EmbedConfig,
    lazy: _LazyEncoder,
    *,
    shard_id: int | None,
    num_shards: int | None,
    force: bool,
    progress: bool,
) -> Manifest:
    name = resolved.name
    fingerprint = the_plan.model_fps[name]
    partial = shard_id is not None
    if not partial and not force and (m := is_up_to_date(model_dir, fingerprint)) is not None:
        log.info("embed: %s up to date (%s)", name, m.manifest_path)
        return m
    started = time.time()
    batch_size = cfg.batch_size or resolved.spec.batch_size
    stats: dict[str, PartStats] = {}
    outputs: list[dict[str, Any]] = []
    dim: int | None = None
    for part in parts.values():
        pstats, part_outputs, part_dim = _embed_part(
            part, model_dir / part.name, the_plan.encoder_fps[name], cfg.shard_size, lazy, batch_size,
            shard_id=shard_id, num_shards=num_shards, force=force, progress=progress, label=name,
        )  # fmt: skip
        stats[part.name] = pstats
        outputs += [{**o, "path": f"{part.name}/{o['path']}"} for o in part_outputs]
        if part_dim is not None:
            if dim is not None and part_dim != dim:
                raise DataError(f"{model_dir}: corpus vectors have dim {dim} but queries have dim {part_dim}")
            dim = part_dim

    encode_s = sum(s.encode_seconds for s in stats.values())
    encoded = sum(s.rows_encoded for s in stats.values())
    summary = {
        "rows": sum(s.rows for s in stats.values()),
        "dim": dim,
        "docs_per_s": round(encoded / encode_s, 2) if encode_s > 0 else None,
        "encode_seconds": round(encode_s, 3),
        "load_seconds": round(lazy.load_seconds, 3),
        "shards_encoded": sum(s.shards_encoded for s in stats.values()),
        "shards_resumed": sum(s.shards_resumed for s in stats.values()),
        "duplicates_skipped": sum(s.duplicates_skipped for s in stats.values()),
        "empty_skipped": sum(s.empty_skipped for s in stats.values()),
        "batch_size": batch_size,
        "device": cfg.device,
        "parts": {k: v.to_json() for k, v in stats.items()},
    }
    params = the_plan.model_params[name] | _layout_params(cfg)
    if partial:
        return Manifest(MODEL_STAGE, fingerprint, params, the_plan.inputs, [], summary, path=model_dir)
    manifest = write_manifest(
        model_dir,
        stage=MODEL_STAGE,
        fingerprint=fingerprint,
        params=params,
        inputs=the_plan.inputs,
        outputs=outputs,
        stats=summary,
        started=started,
    )
    rate = f"{summary['docs_per_s']} docs/s" if summary["docs_per_s"] is not None else "nothing encoded"
    log.info(
        "embed: %s: %d rows, dim %s, %s, %d shard(s) encoded, %d resumed, %d duplicate(s) and %d empty skipped",
        name, summary["rows"], dim, rate, summary["shards_encoded"], summary["shards_resumed"],
        summary["duplicates_skipped"], summary["empty_skipped"],
    )  # fmt: skip
    return manifest


def _marker_ok(marker: Path, fingerprint: str, part_dir: Path) -> dict[str, Any] | None:
    """The marker's content if it matches `fingerprint` and its files exist with the recorded sizes."""
    if not marker.is_file():
        return None
    try:
        data = orjson.loads(marker.read_bytes())
    except orjson.JSONDecodeError:
        return None
    if data.get("fingerprint") != fingerprint:
        return None
    for rel, size in data.get("bytes", {}).items():
        path = part_dir / rel
        if not path.is_file() or path.stat().st_size != size:
            return None
    return dict(data)


def _embed_part(
    part: Part,
    part_dir: Path,
    encoder_fp: str,
    shard_size: int,
    lazy: _LazyEncoder,
    batch_size: int,
    *,
    shard_id: int | None,
    num_shards: int | None,
    force: bool,
    progress: bool,
    label: str,
) -> tuple[PartStats, list[dict[str, Any]], int | None]:
    from tqdm import tqdm

    partial = shard_id is not None
    ranges = part.shard_ranges(shard_size)
    mine = [k for k in range(len(ranges)) if not partial or k % num_shards == shard_id]  # type: ignore[operator]
    stats = PartStats(rows=len(part.ids), shards=len(ranges), empty_skipped=part.skipped_empty)
    part_dir.mkdir(parents=True, exist_ok=True)
    todo = []
    dim: int | None = None
    for k in mine:
        lo, hi = ranges[k]
        fp = shard_fingerprint(encoder_fp, part.ids[lo:hi], part.texts[lo:hi])
        marker = part_dir / DONE_DIR / f"{k:05d}.json"
        found = None if force else _marker_ok(marker, fp, part_dir)
        if found is not None:
            stats.shards_resumed += 1
            stats.duplicates_skipped += found["rows"] - found.get("unique", found["rows"])
            dim = found["dim"]
        else:
            todo.append((k, fp, marker))

    total = sum(ranges[k][1] - ranges[k][0] for k in mine)
    if todo:
        lazy.get()  # load before the bar starts, so the load time does not count against the rate
    bar = tqdm(
        total=total,
        initial=total - sum(ranges[k][1] - ranges[k][0] for k, _, _ in todo),
        unit="doc",
        desc=f"{label}/{part.name}",
        disable=not progress or not todo,
        file=sys.stderr,
        smoothing=0.1,
    )
    with bar:
        for k, fp, marker in todo:
            lo, hi = ranges[k]
            texts = part.texts[lo:hi]
            unique, index = dedup_and_sort(texts)
            encoder = lazy.get()
            t0 = time.perf_counter()
            blocks = []
            for b in range(0, len(unique), batch_size):
                batch = unique[b : b + batch_size]
                blocks.append(encoder.encode(batch, part.kind, batch_size))
                bar.update(len(batch))
            vectors = np.concatenate(blocks, axis=0) if blocks else np.zeros((0, encoder.dim), np.float32)
            if vectors.shape != (len(unique), encoder.dim):
                raise RuntimeError(
                    f"{label}: encoder returned {vectors.shape}, expected ({len(unique)}, {encoder.dim})"
                )
            rows = np.ascontiguousarray(vectors[index], dtype=np.float32)
            stats.encode_seconds += time.perf_counter() - t0
            bar.update(len(texts) - len(unique))
            files = write_vector_shard(part_dir, k, part.ids[lo:hi], rows)
            # The marker goes last: its presence means both shard files are complete.
            atomic_write_json(
                marker,
                {
                    "fingerprint": fp,
                    "rows": len(texts),
                    "unique": len(unique),
                    "dim": int(rows.shape[1]),
                    "bytes": {f: (part_dir / f).stat().st_size for f in files},
                },
            )
            stats.shards_encoded += 1
            stats.rows_encoded += len(texts)
            stats.unique_encoded += len(unique)
            stats.duplicates_skipped += len(texts) - len(unique)
            dim = int(rows.shape[1])

    if partial:
        return stats, [], dim
    keep = [f for k in range(len(ranges)) for f in (vectors_name(k), ids_name(k), f"{DONE_DIR}/{k:05d}.json")]
    remove_stale_files(
        part_dir,
        keep=keep,
        patterns=["vectors-*.npy", "ids-*.jsonl", f"{DONE_DIR}/*.json", ".*.tmp", f"{DONE_DIR}/.*.tmp"],
    )
    outputs = []
    for k, (lo, hi) in enumerate(ranges):
        outputs.append(output_entry(part_dir, vectors_name(k), rows=hi - lo, dim=dim))
        outputs.append(output_entry(part_dir, ids_name(k), rows=hi - lo))
    return stats, outputs, dim
