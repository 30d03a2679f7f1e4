"""`hnm reduce`: fuse an embed artifact's models into one vector set (normalise, weight, concatenate, PCA).

Memory stays flat in the corpus size: the PCA fit accumulates float64 moments (O(dim^2)) over a seeded
sample of at most `max_fit_rows` rows, and both passes read the input shards block by block with plain
file I/O (not memmap slices, whose touched pages would stay resident) and write output shards block by
block. The output has the shape of one embed model folder (`corpus/`, `queries/`, `manifest.json`), plus
the fit in `pca/*.npy`, so `mine` and `eval` read either.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hnm_cli.artifacts.fusion import STALE_PATTERNS as FUSION_PATTERNS
from hnm_cli.artifacts.fusion import Frozen, load_frozen, write_fit, write_fusion
from hnm_cli.artifacts.guards import check_output_path
from hnm_cli.artifacts.manifest import (
    MANIFEST_NAME,
    Manifest,
    artifact_input,
    compute_fingerprint,
    inside_artifact,
    output_entry,
    require_artifact,
    write_manifest,
)
from hnm_cli.artifacts.output_dir import Staging, output_lock, skip_if_up_to_date
from hnm_cli.artifacts.vectors import VectorPart, check_vector_files, ids_name, iter_shard_ids, vectors_name
from hnm_cli.choices import FitOn, Stage
from hnm_cli.config import ReduceConfig
from hnm_cli.errors import ArtifactMismatchError, CorruptArtifactError, DataError, InputError
from hnm_cli.fileio import remove_stale_files, write_jsonl, write_npy_blocks
from hnm_cli.fusion import Fusion, fit_fusion, model_scales, model_shares, model_weights
from hnm_cli.pca import PcaFit

log = logging.getLogger("hnm")

STAGE = Stage.REDUCE
PARTS = ("corpus", "queries")
STALE_PATTERNS = [f"{p}/{g}" for p in PARTS for g in ("vectors-*.npy", "ids-*.jsonl")] + FUSION_PATTERNS


# ---------------------------------------------------------------------------------------------
# The runner
# ---------------------------------------------------------------------------------------------


def _embedded_models(embed_dir: Path, top: Manifest) -> list[str]:
    """Model names in the embed artifact, in the order embed recorded them."""
    listed = [m["name"] for m in top.params.get("models", []) if isinstance(m, dict) and m.get("name")]
    for name in listed:
        if not isinstance(name, str) or not inside_artifact(name) or len(Path(name).parts) != 1:
            raise CorruptArtifactError(
                f"{top.manifest_path}: model name {name!r} is not a folder of the artifact; rebuild it with --force"
            )
    if listed:
        return listed
    return sorted(p.name for p in embed_dir.iterdir() if (p / MANIFEST_NAME).is_file())


def _select_models(available: list[str], wanted: list[str] | None, embed_dir: Path) -> list[str]:
    if not wanted:
        return available
    unknown = [m for m in wanted if m not in available]
    if unknown:
        raise InputError(f"{embed_dir} has no model {unknown[0]!r} (embedded: {', '.join(available)})")
    return [m for m in available if m in set(wanted)]  # embed's order: the result must not depend on flag order


def _source_records(top: Manifest, model_manifests: list[Manifest]) -> list[dict[str, Any]]:
    """The corpus/queries file records embed hashed, so mine and eval can check they get the same corpus."""
    seen, out = set(), []
    for manifest in [top, *model_manifests]:
        for rec in manifest.inputs:
            key = (rec.get("role"), rec.get("path"), rec.get("sha256"))
            if rec.get("role") in PARTS and key not in seen:
                seen.add(key)
                out.append(rec)
    return out


def _check_same_ids(embed_dir: Path, names: list[str], parts: list[VectorPart], what: str) -> None:
    """Every model must hold the same ids in the same order; streamed, so no id list is kept."""
    first = parts[0]
    if len(parts) == 1:
        for _ in first.iter_ids():  # still check that each ids file matches its vector shard
            pass
    for name, part in zip(names[1:], parts[1:], strict=True):
        if part.rows != first.rows:
            raise ArtifactMismatchError(
                f"{part.directory}: {part.rows} {what} rows but {first.directory} has {first.rows}; "
                f"model {name!r} was embedded from a different {what}. Rerun: hnm embed --out {embed_dir} --force"
            )
        for row, (a, b) in enumerate(zip(first.iter_ids(), part.iter_ids(), strict=True)):
            if a != b:
                raise ArtifactMismatchError(
                    f"{part.directory}: row {row} has id {b!r} but {first.directory} has {a!r}; "
                    f"model {name!r} was embedded from a different {what} order. Rerun: hnm embed --out {embed_dir} --force"
                )


def _open_parts(embed_dir: Path, names: list[str]) -> dict[str, list[VectorPart]]:
    parts: dict[str, list[VectorPart]] = {}
    for what in PARTS:
        present = [(embed_dir / n / what).is_dir() for n in names]
        if not any(present):
            if what == "corpus":
                raise DataError(f"{embed_dir}: no model has a corpus/ folder")
            continue
        if not all(present):
            missing = names[present.index(False)]
            raise ArtifactMismatchError(f"{embed_dir / missing}: no {what}/ folder, but other models have one")
        parts[what] = [VectorPart(embed_dir / n / what) for n in names]
    for i, name in enumerate(names):
        dims = {parts[w][i].dim for w in parts}
        if len(dims) != 1:
            raise DataError(f"{embed_dir / name}: corpus and queries have different dimensions {sorted(dims)}")
    return parts


def _progress(total: int, desc: str, enabled: bool) -> Any:
    from tqdm.auto import tqdm

    # disable=None: bars only on a terminal, so captured stderr (tests, cron logs) stays clean.
    return tqdm(total=total, desc=desc, unit="rows", disable=True if not enabled else None, leave=False)


def _write_part(
    out: Path, what: str, fusion: Fusion, fit: PcaFit | None, block_rows: int, progress: bool
) -> list[dict[str, Any]]:
    """Transform one part shard by shard (the first model's shard boundaries) and write it."""
    first: VectorPart = fusion.parts[0]  # type: ignore[assignment]  # the stage fuses VectorParts
    dim_out = fit.n_components if fit is not None else fusion.dim
    outputs = []
    with _progress(fusion.rows, f"reduce: {what}", progress) as bar:
        for shard in first.shards:
            vec_rel, ids_rel = f"{what}/{vectors_name(shard.number)}", f"{what}/{ids_name(shard.number)}"
            blocks = fusion.projected(shard.start, shard.start + shard.rows, fit, block_rows, bar.update)
            write_npy_blocks(out / vec_rel, shard.rows, dim_out, blocks)
            write_jsonl(out / ids_rel, ({"id": id_} for _, id_ in iter_shard_ids(shard.vectors, shard.ids)))
            outputs += [
                output_entry(out, vec_rel, rows=shard.rows, dim=dim_out),
                output_entry(out, ids_rel, rows=shard.rows),
            ]
    return outputs


def run(
    embed_dir: Path,
    out: Path,
    cfg: ReduceConfig,
    *,
    models: list[str] | None = None,
    fit_from: Path | None = None,
    force: bool = False,
    progress: bool = True,
    verify: bool = False,
) -> Manifest:
    """Fuse the models of an embed artifact into one vector set with (optional) PCA.

    Args:
        embed_dir: the `hnm embed` artifact (stage "embed").
        out: artifact directory to write.
        cfg: resolved reduce config (variance / n_components, pca, weights, fit_on, max_fit_rows, seed).
        models: restrict to these embedded models (default: all, in embed's order).
        fit_from: an earlier reduce artifact whose fusion (scales and PCA fit) is applied instead of fitting
            anew, so vectors of unchanged documents keep their exact values (incremental updates).
        force: rerun even when up to date.
        progress: show tqdm bars on stderr (only when stderr is a terminal).
        verify: re-hash every file of the embed artifact and of `out` (`--verify`), not only changed ones.

    Returns:
        The written (or up-to-date) manifest. A failing run leaves an existing artifact in `out` as it was.

    Raises:
        IncompleteArtifactError: no embed artifact or model manifest at `embed_dir`.
        ArtifactMismatchError: models hold different corpus/query ids or order.
        InputError: `models` names a model that is not in the artifact.
        ConfigError: weights for unknown models, n_components too large, fit_on without queries.
        DataError: broken shards.
    """
    embed_dir, out = Path(embed_dir), Path(out)
    fix = f"hnm embed --data DATA --out {embed_dir}"
    check_output_path(out, [embed_dir, fit_from])
    top = require_artifact(embed_dir, Stage.EMBED, fix=fix, deep=verify)
    available = _embedded_models(embed_dir, top)
    names = _select_models(available, models, embed_dir)
    weights = model_weights(cfg, available, names)
    model_manifests = [
        check_vector_files(require_artifact(embed_dir / n, Stage.EMBED_MODEL, fix=fix, deep=verify), fix) for n in names
    ]

    frozen = load_frozen(fit_from, names, deep=verify) if fit_from is not None else None
    params = cfg.to_params() | {"models": names, "weights": weights}
    if frozen is not None:
        # The fit's own settings no longer shape the output: the frozen fusion (an input, below) does.
        params = {"models": names, "fit": "frozen", "block_rows": cfg.block_rows}
    inputs = [
        artifact_input(top, "embeddings"),
        *(artifact_input(m, f"vectors:{n}") for n, m in zip(names, model_manifests, strict=True)),
        *_source_records(top, model_manifests),
        *([artifact_input(frozen.manifest, "fit")] if frozen is not None else []),
    ]
    fingerprint = compute_fingerprint(STAGE, params, inputs)
    if (done := skip_if_up_to_date(out, STAGE, fingerprint, force=force, deep=verify)) is not None:
        return done
    with output_lock(out), Staging(out) as staging:
        written, stats, fit, rows = _reduce(embed_dir, staging.dir, cfg, names, weights, progress, frozen)
        started = staging.commit()
    remove_stale_files(out, keep=[o["path"] for o in written], patterns=STALE_PATTERNS)
    manifest = write_manifest(
        out,
        stage=STAGE,
        fingerprint=fingerprint,
        params=params,
        inputs=inputs,
        outputs=written,
        stats=stats,
        started=started,
    )
    variance = f"{100 * fit.variance_reached:.1f}% variance" if fit is not None else "no PCA"
    log.info(
        "reduce: %d model%s, %d -> %d dims (%s), corpus %d rows, queries %d rows",
        len(names),
        "" if len(names) == 1 else "s",
        stats["concat_dim"],
        stats["dim"],
        variance,
        rows["corpus"],
        rows["queries"],
    )
    return manifest


def _reduce(
    embed_dir: Path,
    out: Path,
    cfg: ReduceConfig,
    names: list[str],
    weights: dict[str, float],
    progress: bool,
    frozen: Frozen | None = None,
) -> tuple[list[dict[str, Any]], dict[str, Any], PcaFit | None, dict[str, int]]:
    """Fit (or, with `frozen`, reuse a fit) and write the fused vector set into `out` (the staging folder);
    return (outputs, stats, fit, rows)."""
    parts = _open_parts(embed_dir, names)
    for what, model_parts in parts.items():
        _check_same_ids(embed_dir, names, model_parts, what)
    if frozen is None:
        scales, model_variance = model_scales(names, weights, parts["corpus"], cfg)
    else:
        scales, model_variance = list(frozen.scales), {}
    fusions = {what: Fusion(model_parts, scales) for what, model_parts in parts.items()}
    dims = fusions["corpus"].dims
    concat_dim = sum(dims)
    written: list[dict[str, Any]] = []
    stats: dict[str, Any] = {
        "models": names,
        "input_dims": dict(zip(names, dims, strict=True)),
        "concat_dim": concat_dim,
    }
    if model_variance:
        stats["model_total_variance"] = {n: round(v, 6) for n, v in model_variance.items()}
    if frozen is not None and frozen.dims != dims:
        raise ArtifactMismatchError(
            f"--fit-from {frozen.path}: its models have dims {frozen.dims}, these embeddings {dims}; refit"
        )
    fit: PcaFit | None = None
    if frozen is not None:
        fit = frozen.fit
        if fit is not None:
            written += [output_entry(out, rel) for rel in write_fit(out, fit)]
            stats |= {"components": fit.n_components, "variance_reached": round(fit.variance_reached, 6)}
        stats["fit_from"] = str(frozen.path)
    elif cfg.pca:
        fit_rows = sum(f.rows for w, f in fusions.items() if w == "corpus" or cfg.fit_on == FitOn.CORPUS_QUERIES)
        with _progress(fit_rows, "reduce: fit", progress) as bar:
            fitted = fit_fusion(fusions, cfg, bar.update)
        fit, acc = fitted.fit, fitted.moments
        written += [output_entry(out, rel) for rel in write_fit(out, fit)]
        kept_share, input_share = model_shares(fit, acc, names, dims)
        stats |= {
            "components": fit.n_components,
            "variance_reached": round(fit.variance_reached, 6),
            "model_variance_share": kept_share,
            "model_input_variance_share": input_share,
            "fit_rows": acc.n,
            "fit_sampled": fitted.sampled,
        }
    for what, fusion in fusions.items():
        written += _write_part(out, what, fusion, fit, cfg.block_rows, progress)
    dim_out = fit.n_components if fit is not None else concat_dim
    # The fusion as applied (scales include weights and balance): what `--fit-from` needs to project new data
    # exactly as this run did. A report, not data: out of the downstream digest.
    written.append(output_entry(out, write_fusion(out, names, dims, scales, fit is not None), downstream=False))
    rows = {what: fusions[what].rows if what in fusions else 0 for what in PARTS}
    stats |= {"dim": dim_out, "corpus_rows": rows["corpus"], "queries_rows": rows["queries"]}
    return written, stats, fit, rows
