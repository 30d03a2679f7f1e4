"""The fusion a reduce artifact applied: `<out>/fusion.json` (models, their dims, the scales as applied, whether a
PCA followed) and the fit in `<out>/pca/*.npy` (float64 mean, components, explained variance and its ratio; plain
`.npy`, never pickle).

`hnm reduce` writes both; `hnm reduce --fit-from` reads them back to project new data exactly as the earlier run
did, and `artifacts.vectors.space_key` reads them to tell whether two vector sets share a space.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import orjson

from hnm_cli.artifacts.manifest import Manifest, require_artifact
from hnm_cli.choices import Stage
from hnm_cli.errors import ConfigError
from hnm_cli.fileio import atomic_write_json, recorded_file, save_npy
from hnm_cli.pca import PcaFit

FUSION_FILE = "fusion.json"
PCA_DIR = "pca"
FIT_FILES = ("mean.npy", "components.npy", "explained_variance.npy", "explained_variance_ratio.npy")
STALE_PATTERNS = [f"{PCA_DIR}/*.npy", FUSION_FILE]


def save_fit(directory: Path, fit: PcaFit) -> list[str]:
    """Write the fit as four float64 `.npy` files (atomically, no pickle); return their names."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    arrays = (fit.mean, fit.components, fit.explained_variance, fit.explained_variance_ratio)
    for name, array in zip(FIT_FILES, arrays, strict=True):
        save_npy(directory / name, array, dtype=np.float64)  # float64: the fit keeps its exactness
    return list(FIT_FILES)


def load_fit(directory: Path, dim: int | None = None) -> PcaFit:
    """Read a fit written by `save_fit` (pickle disabled), checking that its arrays fit together.

    Args:
        directory: the folder of the fit's `.npy` files.
        dim: the input dimension the fit must take, when known.

    Raises:
        ValueError: an unreadable file, shapes that do not fit together (or `dim`), or a value that is not finite.
    """
    directory = Path(directory)
    arrays = []
    for name in FIT_FILES:
        try:
            arrays.append(np.load(directory / name, allow_pickle=False))
        # numpy's header parser raises what its tokenizer raises (SyntaxError, tokenize.TokenError) on a damaged
        # header: any failure to read the file is a bad file.
        except Exception as err:
            raise ValueError(f"{name}: {str(err).splitlines()[0][:100] or type(err).__name__}") from err
    mean, components, ev, ratio = arrays
    k = components.shape[0] if components.ndim == 2 else -1
    d = mean.shape[0] if mean.ndim == 1 else -1
    if k < 1 or components.shape[1] != d or ev.shape != (k,) or ratio.shape != (k,) or dim not in (None, d):
        raise ValueError(
            f"shapes mean {mean.shape}, components {components.shape}, explained variance {ev.shape}, ratio "
            f"{ratio.shape} do not make one fit" + (f" of dimension {dim}" if dim is not None else "")
        )
    if not all(np.isfinite(a).all() for a in (mean, components, ev, ratio)):
        raise ValueError("a value that is not finite")
    return PcaFit(mean=mean, components=components, explained_variance=ev, explained_variance_ratio=ratio)


def write_fit(out: Path, fit: PcaFit) -> list[str]:
    """Write `<out>/pca/*.npy`; return the paths relative to `out`."""
    return [f"{PCA_DIR}/{f}" for f in save_fit(Path(out) / PCA_DIR, fit)]


def read_variance_ratios(out: Path) -> list[float] | None:
    """The PCA's explained variance ratio per component of a reduce artifact, or None when it fitted no PCA.

    Raises:
        ValueError: a fit that cannot be read (see `load_fit`).
    """
    if not (Path(out) / PCA_DIR / FIT_FILES[3]).is_file():
        return None
    return [float(r) for r in load_fit(Path(out) / PCA_DIR).explained_variance_ratio]


def write_fusion(out: Path, names: list[str], dims: list[int], scales: list[float], pca: bool) -> str:
    """Write `<out>/fusion.json` (the scales include weights and balance); return its path relative to `out`."""
    atomic_write_json(Path(out) / FUSION_FILE, {"models": names, "dims": dims, "scales": scales, "pca": pca})
    return FUSION_FILE


def fusion_text(out: Path) -> str | None:
    """The text of `<out>/fusion.json`, or None for an artifact written before it existed."""
    path = Path(out) / FUSION_FILE
    return path.read_text() if path.is_file() else None


@dataclass(frozen=True)
class Frozen:
    """An earlier reduce artifact's fusion, reused as is (`--fit-from`)."""

    path: Path
    manifest: Manifest
    scales: tuple[float, ...]
    dims: list[int]
    fit: PcaFit | None


def load_frozen(path: Path, names: list[str], *, deep: bool = False) -> Frozen:
    """The fusion of the reduce artifact at `path`, which must fuse the same models.

    Raises:
        IncompleteArtifactError / ArtifactMismatchError / CorruptArtifactError: not a usable reduce artifact.
        ConfigError: it fused other models, or (written before fusion.json existed) balanced its models by
            variance, whose scales it did not record.
        CorruptArtifactError: its fusion.json or PCA fit is damaged or does not fit together.
    """
    manifest = require_artifact(path, Stage.REDUCE, fix=f"hnm reduce --embeddings <embed dir> --out {path}", deep=deep)
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
    with recorded_file(Path(path) / PCA_DIR):
        fit = load_fit(Path(path) / PCA_DIR) if pca else None
    if fit is not None and sum(dims) != fit.mean.shape[0]:
        with recorded_file(recorded if recorded.is_file() else manifest.manifest_path):
            raise ValueError(f"model dims {dims} add up to {sum(dims)}; its PCA fit takes {fit.mean.shape[0]}")
    return Frozen(Path(path), manifest, scales, dims, fit)
