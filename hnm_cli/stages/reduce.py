"""`hnm reduce`: fuse an embed artifact's models into one vector set (normalise, weight, concatenate, PCA).

Memory stays flat in the corpus size: the PCA fit accumulates float64 moments (O(dim^2)) over a seeded
sample of at most `max_fit_rows` rows, and both passes read the input shards block by block with plain
file I/O (not memmap slices, whose touched pages would stay resident) and write output shards block by
block. The output has the shape of one embed model folder (`corpus/`, `queries/`, `manifest.json`), plus
the fit in `pca/*.npy`, so `mine` and `eval` read either.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from hnm_cli.artifacts.files import atomic_path, atomic_write_json, recorded_file, remove_stale_files, write_jsonl
from hnm_cli.artifacts.guards import check_output_path
from hnm_cli.artifacts.manifest import (
    MANIFEST_NAME,
    Manifest,
    Staging,
    artifact_input,
    compute_fingerprint,
    inside_artifact,
    output_entry,
    output_lock,
    require_artifact,
    skip_if_up_to_date,
    write_manifest,
)
from hnm_cli.artifacts.vectors import (
    check_vector_files,
    ids_name,
    iter_shard_ids,
    list_vector_shards,
    read_vector_rows,
    vector_layout,
    vectors_name,
)
from hnm_cli.choices import Balance, FitOn
from hnm_cli.config import ReduceConfig
from hnm_cli.errors import ArtifactMismatchError, ConfigError, CorruptArtifactError, DataError, InputError
from hnm_cli.pca import PcaAccumulator, PcaFit, l2_normalize, sample_indices, save_fit, transform

log = logging.getLogger("hnm")

STAGE = "reduce"
PARTS = ("corpus", "queries")
FUSION_FILE = "fusion.json"
# Weights bound so the ratio of two models' scales (square roots) stays within 1e6, well inside float32's 7 digits.
MIN_WEIGHT, MAX_WEIGHT = 1e-6, 1e6
STALE_PATTERNS = [f"{p}/{g}" for p in PARTS for g in ("vectors-*.npy", "ids-*.jsonl")] + ["pca/*.npy", FUSION_FILE]


@dataclass(frozen=True)
class _Frozen:
    """An earlier reduce artifact's fusion, reused as is (`--fit-from`)."""

    path: Path
    manifest: Manifest
    scales: tuple[float, ...]
    dims: list[int]
    fit: PcaFit | None


def load_frozen(path: Path, names: list[str], *, deep: bool = False) -> _Frozen:
    """The fusion of the reduce artifact at `path`, which must fuse the same models.

    Raises:
        IncompleteArtifactError / ArtifactMismatchError / CorruptArtifactError: not a usable reduce artifact.
        ConfigError: it fused other models, or (written before fusion.json existed) balanced its models by
            variance, whose scales it did not record.
    """
    from hnm_cli.pca import load_fit

    manifest = require_artifact(path, STAGE, fix=f"hnm reduce --embeddings <embed dir> --out {path}", deep=deep)
    if manifest.params.get("models") != names:
        raise ConfigError(
            f"--fit-from {path} fused the models {manifest.params.get('models')}, these embeddings have {names}"
        )
    recorded = Path(path) / FUSION_FILE
    if recorded.is_file():
        with recorded_file(recorded):
            info = orjson.loads(recorded.read_bytes())
            scales, dims, pca = tuple(float(x) for x in info["scales"]), [int(d) for d in info["dims"]], info["pca"]
            if len(scales) != len(names) or len(dims) != len(names) or not all(map(math.isfinite, scales)):
                raise ValueError(f"{len(scales)} scales and {len(dims)} dims for {len(names)} models")
    else:
        if manifest.params.get("balance", "none") != "none":
            raise ConfigError(f"--fit-from {path} balanced its models but did not record the scales; refit it once")
        weights = manifest.params.get("weights", {})
        scales = tuple(math.sqrt(float(weights.get(n, 1.0))) for n in names)
        dims = [int(d) for d in manifest.stats.get("input_dims", {}).values()]
        pca = bool(manifest.params.get("pca", True))
    with recorded_file(Path(path) / "pca"):
        fit = load_fit(Path(path) / "pca") if pca else None
    if fit is not None and sum(dims) != fit.mean.shape[0]:
        with recorded_file(recorded if recorded.is_file() else manifest.manifest_path):
            raise ValueError(f"model dims {dims} add up to {sum(dims)}; its PCA fit takes {fit.mean.shape[0]}")
    return _Frozen(Path(path), manifest, scales, dims, fit)


# ---------------------------------------------------------------------------------------------
# Reading one model's part (corpus/ or queries/) by global row range
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Shard:
    number: int  # from the file name, so output shard k comes from input shard k
    vectors: Path
    ids: Path
    start: int  # first global row
    rows: int


class _Part:
    """The shards of one model's corpus/ or queries/, readable as one (rows, dim) matrix."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.shards: list[_Shard] = []
        dims = set()
        start = 0
        for npy, ids in list_vector_shards(directory):
            shape, _, _ = vector_layout(npy)  # 2-D, float
            if shape[0] == 0:
                continue  # zero-row shards are skipped (house rule)
            dims.add(shape[1])
            self.shards.append(_Shard(int(npy.stem.split("-")[1]), npy, ids, start, shape[0]))
            start += shape[0]
        if not self.shards:
            raise DataError(f"{directory}: no vector shards (zero rows)")
        if len(dims) != 1:
            raise DataError(f"{directory}: shards have different dimensions {sorted(dims)}")
        self.rows = start
        self.dim = dims.pop()

    def read(self, lo: int, hi: int) -> np.ndarray:
        """Rows [lo, hi) as float32, across shard boundaries."""
        pieces = []
        for s in self.shards:
            a, b = max(lo, s.start), min(hi, s.start + s.rows)
            if a < b:
                pieces.append(read_vector_rows(s.vectors, a - s.start, b - s.start))
        return pieces[0] if len(pieces) == 1 else np.concatenate(pieces, axis=0)

    def iter_ids(self) -> Iterator[str]:
        """Every id in row order, checking each record and each ids file against its vector shard's row count."""
        for s in self.shards:
            for _, id_ in iter_shard_ids(s.vectors, s.ids):
                yield id_


# ---------------------------------------------------------------------------------------------
# Fusion: per-model L2 normalisation, weights, concatenation
# ---------------------------------------------------------------------------------------------


class _Fusion:
    """Builds fused blocks for one part across models.

    Weights: model m's normalised block is multiplied by sqrt(w_m) on both the query and the document
    side, so its term in the concatenated dot product is w_m * cos_m. After the final re-normalisation
    (no PCA) the fused cosine is the weighted mean sum(w_m cos_m) / sum(w_m); with PCA it is that
    similarity as seen through the kept components.
    """

    def __init__(self, parts: list[_Part], scales: list[float]) -> None:
        self.parts = parts
        self.scales = scales
        self.dims = [p.dim for p in parts]
        self.dim = sum(self.dims)
        self.rows = parts[0].rows

    def block(self, lo: int, hi: int) -> np.ndarray:
        out = np.empty((hi - lo, self.dim), dtype=np.float32)
        col = 0
        for part, scale, d in zip(self.parts, self.scales, self.dims, strict=True):
            out[:, col : col + d] = l2_normalize(part.read(lo, hi)) * np.float32(scale)
            col += d
        return out


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


def _resolve_weights(cfg: ReduceConfig, available: list[str], names: list[str]) -> dict[str, float]:
    for model, weight in cfg.weights.items():
        if model not in available:
            raise ConfigError(f"reduce.weights: unknown model {model!r} (embedded: {', '.join(available)})")
        if not isinstance(weight, int | float) or isinstance(weight, bool) or not weight > 0:
            raise ConfigError(f"reduce.weights.{model} must be a number > 0; got {weight!r}")
        if not MIN_WEIGHT <= weight <= MAX_WEIGHT:
            # Vectors are float32 (7 digits): a block scaled by sqrt(1e-300) underflows to zeros, one scaled far
            # above the others swamps them; either way a model silently vanishes from the fused vectors.
            raise ConfigError(
                f"reduce.weights.{model} = {weight!r} makes a model's block vanish in float32 vectors; "
                f"give a weight in [{MIN_WEIGHT:g}, {MAX_WEIGHT:g}]"
            )
    return {m: float(cfg.weights.get(m, 1.0)) for m in names}


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


def _check_same_ids(embed_dir: Path, names: list[str], parts: list[_Part], what: str) -> None:
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


def _open_parts(embed_dir: Path, names: list[str]) -> dict[str, list[_Part]]:
    parts: dict[str, list[_Part]] = {}
    for what in PARTS:
        present = [(embed_dir / n / what).is_dir() for n in names]
        if not any(present):
            if what == "corpus":
                raise DataError(f"{embed_dir}: no model has a corpus/ folder")
            continue
        if not all(present):
            missing = names[present.index(False)]
            raise ArtifactMismatchError(f"{embed_dir / missing}: no {what}/ folder, but other models have one")
        parts[what] = [_Part(embed_dir / n / what) for n in names]
    for i, name in enumerate(names):
        dims = {parts[w][i].dim for w in parts}
        if len(dims) != 1:
            raise DataError(f"{embed_dir / name}: corpus and queries have different dimensions {sorted(dims)}")
    return parts


def _progress(total: int, desc: str, enabled: bool) -> Any:
    from tqdm.auto import tqdm

    # disable=None: bars only on a terminal, so captured stderr (tests, cron logs) stays clean.
    return tqdm(total=total, desc=desc, unit="rows", disable=True if not enabled else None, leave=False)


def _fit(fusions: dict[str, _Fusion], cfg: ReduceConfig, progress: bool) -> tuple[PcaFit, PcaAccumulator, bool]:
    """Accumulate moments of the (sampled) fit rows block by block and fit. Returns (fit, moments, sampled)."""
    fit_parts = ["corpus"] if cfg.fit_on == FitOn.CORPUS else ["corpus", "queries"]
    if "queries" in fit_parts and "queries" not in fusions:
        raise ConfigError("reduce.fit_on is 'corpus+queries' but the embed artifact has no queries")
    total = sum(fusions[p].rows for p in fit_parts)
    picked = sample_indices(total, cfg.max_fit_rows, cfg.seed)
    n_fit = total if picked is None else len(picked)
    dim = fusions["corpus"].dim
    if cfg.n_components is not None and cfg.n_components > min(n_fit, dim):
        raise ConfigError(f"reduce.n_components={cfg.n_components} exceeds min(fit rows, dim) = {min(n_fit, dim)}")
    if n_fit < 2:
        raise DataError(f"reduce: PCA needs at least 2 fit rows; got {n_fit}")
    acc = PcaAccumulator(dim)
    offset = 0
    with _progress(total, "reduce: fit", progress) as bar:
        for part in fit_parts:
            fusion = fusions[part]
            for lo in range(0, fusion.rows, cfg.block_rows):
                hi = min(lo + cfg.block_rows, fusion.rows)
                if picked is None:
                    acc.add(fusion.block(lo, hi))
                else:
                    a, b = np.searchsorted(picked, [offset + lo, offset + hi])
                    if b > a:  # blocks without a sampled row are not even read
                        acc.add(fusion.block(lo, hi)[picked[a:b] - offset - lo])
                bar.update(hi - lo)
            offset += fusion.rows
    return acc.fit(variance=cfg.variance, n_components=cfg.n_components), acc, picked is not None


def _total_variance(part: _Part, block_rows: int) -> float:
    """Total variance (trace of the covariance) of a model's L2-normalised corpus vectors: 1 - ||mean||^2."""
    total = np.zeros(part.dim, dtype=np.float64)
    for lo in range(0, part.rows, block_rows):
        total += l2_normalize(part.read(lo, min(lo + block_rows, part.rows))).sum(axis=0, dtype=np.float64)
    mean = total / part.rows
    return float(1.0 - mean @ mean)


def _write_npy_blocks(path: Path, rows: int, dim: int, blocks: Iterator[np.ndarray]) -> None:
    """Write a float32 (rows, dim) .npy from blocks, never holding more than one block.

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


def _write_part(
    out: Path, what: str, fusion: _Fusion, fit: PcaFit | None, block_rows: int, progress: bool
) -> list[dict[str, Any]]:
    """Transform one part shard by shard (the first model's shard boundaries) and write it."""
    first = fusion.parts[0]
    dim_out = fit.n_components if fit is not None else fusion.dim
    outputs = []

    def blocks(shard: _Shard, bar: Any) -> Iterator[np.ndarray]:
        for lo in range(shard.start, shard.start + shard.rows, block_rows):
            hi = min(lo + block_rows, shard.start + shard.rows)
            fused = fusion.block(lo, hi)
            yield transform(fused, fit) if fit is not None else l2_normalize(fused)
            bar.update(hi - lo)

    with _progress(fusion.rows, f"reduce: {what}", progress) as bar:
        for shard in first.shards:
            vec_rel, ids_rel = f"{what}/{vectors_name(shard.number)}", f"{what}/{ids_name(shard.number)}"
            _write_npy_blocks(out / vec_rel, shard.rows, dim_out, blocks(shard, bar))
            write_jsonl(out / ids_rel, ({"id": id_} for _, id_ in iter_shard_ids(shard.vectors, shard.ids)))
            outputs += [
                output_entry(out, vec_rel, rows=shard.rows, dim=dim_out),
                output_entry(out, ids_rel, rows=shard.rows),
            ]
    return outputs


def _model_shares(
    fit: PcaFit, acc: PcaAccumulator, names: list[str], dims: list[int]
) -> tuple[dict[str, float], dict[str, float]]:
    """Each model's share of the kept variance and of the input variance.

    Kept: sum_j ev_j * ||c_j restricted to the model's columns||^2 / sum_j ev_j (rows of C are unit vectors,
    so the shares add up to 1). Input: the model's block of the covariance trace over the whole trace.
    """
    loadings = fit.components**2
    weighted = fit.explained_variance @ loadings
    diag = np.diag(acc.covariance())
    kept, given = {}, {}
    col = 0
    total_kept, total_in = float(weighted.sum()) or 1.0, float(diag.sum()) or 1.0
    for name, d in zip(names, dims, strict=True):
        kept[name] = round(float(weighted[col : col + d].sum()) / total_kept, 6)
        given[name] = round(float(diag[col : col + d].sum()) / total_in, 6)
        col += d
    return kept, given


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
    top = require_artifact(embed_dir, "embed", fix=fix, deep=verify)
    available = _embedded_models(embed_dir, top)
    names = _select_models(available, models, embed_dir)
    weights = _resolve_weights(cfg, available, names)
    model_manifests = [
        check_vector_files(require_artifact(embed_dir / n, "embed-model", fix=fix, deep=verify), fix) for n in names
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
    frozen: _Frozen | None = None,
) -> tuple[list[dict[str, Any]], dict[str, Any], PcaFit | None, dict[str, int]]:
    """Fit (or, with `frozen`, reuse a fit) and write the fused vector set into `out` (the staging folder);
    return (outputs, stats, fit, rows)."""
    parts = _open_parts(embed_dir, names)
    for what, model_parts in parts.items():
        _check_same_ids(embed_dir, names, model_parts, what)
    scales = [math.sqrt(weights[n]) for n in names] if frozen is None else list(frozen.scales)
    model_variance: dict[str, float] = {}
    if cfg.balance == Balance.VARIANCE and frozen is None:
        # Equal footing before the weights: an anisotropic model (multilingual-e5's vectors share one narrow
        # cone) otherwise brings a sliver of the concatenation's variance and hardly shapes the PCA axes.
        for i, name in enumerate(names):
            model_variance[name] = _total_variance(parts["corpus"][i], cfg.block_rows)
            scales[i] /= math.sqrt(max(model_variance[name], 1e-12))
    fusions = {what: _Fusion(model_parts, scales) for what, model_parts in parts.items()}
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
            written += [output_entry(out, f"pca/{f}") for f in save_fit(out / "pca", fit)]
            stats |= {"components": fit.n_components, "variance_reached": round(fit.variance_reached, 6)}
        stats["fit_from"] = str(frozen.path)
    elif cfg.pca:
        fit, acc, sampled = _fit(fusions, cfg, progress)
        written += [output_entry(out, f"pca/{f}") for f in save_fit(out / "pca", fit)]
        kept_share, input_share = _model_shares(fit, acc, names, dims)
        stats |= {
            "components": fit.n_components,
            "variance_reached": round(fit.variance_reached, 6),
            "model_variance_share": kept_share,
            "model_input_variance_share": input_share,
            "fit_rows": acc.n,
            "fit_sampled": sampled,
        }
    for what, fusion in fusions.items():
        written += _write_part(out, what, fusion, fit, cfg.block_rows, progress)
    dim_out = fit.n_components if fit is not None else concat_dim
    # The fusion as applied (scales include weights and balance): what `--fit-from` needs to project new data
    # exactly as this run did. A report, not data: out of the downstream digest.
    atomic_write_json(out / FUSION_FILE, {"models": names, "dims": dims, "scales": scales, "pca": fit is not None})
    written.append(output_entry(out, FUSION_FILE, downstream=False))
    rows = {what: fusions[what].rows if what in fusions else 0 for what in PARTS}
    stats |= {"dim": dim_out, "corpus_rows": rows["corpus"], "queries_rows": rows["queries"]}
    return written, stats, fit, rows
