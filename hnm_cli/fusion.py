"""Fusing an ensemble's vectors (Meghwani et al. 2025): per-model L2 normalisation, weights, balance, concatenation,
PCA fitted on a (sampled) set of rows, projection and re-normalisation.

The one implementation behind `hnm reduce` (which reads model parts from vector shards, block by block) and the
Python API's `mine_hard_negatives` (parts held in memory). Both walk the same blocks in the same order, so the same
vectors give the same bytes. Pure core: parts are anything with `rows`, `dim` and `read(lo, hi)`; no paths.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from hnm_cli.choices import Balance, FitOn
from hnm_cli.config import ReduceConfig
from hnm_cli.errors import ConfigError, DataError
from hnm_cli.pca import PcaAccumulator, PcaFit, l2_normalize, sample_indices, transform

# Weights bound so the ratio of two models' scales (square roots) stays within 1e6, well inside float32's 7 digits.
MIN_WEIGHT, MAX_WEIGHT = 1e-6, 1e6

Progress = Callable[[int], None]  # told how many rows were just processed


class Part(Protocol):
    """One model's corpus or queries, readable by global row range."""

    @property
    def rows(self) -> int: ...

    @property
    def dim(self) -> int: ...

    def read(self, lo: int, hi: int) -> np.ndarray: ...


class ArrayPart:
    """A `Part` held in memory as shards (row blocks in order), as `hnm embed` would have written them."""

    def __init__(self, shards: Sequence[np.ndarray]) -> None:
        self.shards = [np.asarray(s, dtype=np.float32) for s in shards if len(s)]
        if not self.shards:
            raise DataError("no vectors (zero rows)")
        dims = {int(s.shape[1]) for s in self.shards}
        if len(dims) != 1:
            raise DataError(f"vectors of different dimensions {sorted(dims)}")
        self.dim = dims.pop()
        self.bounds = np.cumsum([0, *(len(s) for s in self.shards)])
        self.rows = int(self.bounds[-1])

    def read(self, lo: int, hi: int) -> np.ndarray:
        """Rows [lo, hi) as float32, across shard boundaries."""
        pieces = []
        for s, start in zip(self.shards, self.bounds[:-1].tolist(), strict=True):
            a, b = max(lo, start), min(hi, start + len(s))
            if a < b:
                pieces.append(s[a - start : b - start])
        return pieces[0] if len(pieces) == 1 else np.concatenate(pieces, axis=0)

    def shard_ranges(self) -> list[tuple[int, int]]:
        """[start, stop) of each shard."""
        return list(zip(self.bounds[:-1].tolist(), self.bounds[1:].tolist(), strict=True))


class Fusion:
    """Builds fused blocks for one part across models.

    Weights: model m's normalised block is multiplied by sqrt(w_m) on both the query and the document
    side, so its term in the concatenated dot product is w_m * cos_m. After the final re-normalisation
    (no PCA) the fused cosine is the weighted mean sum(w_m cos_m) / sum(w_m); with PCA it is that
    similarity as seen through the kept components.
    """

    def __init__(self, parts: Sequence[Part], scales: Sequence[float]) -> None:
        self.parts = list(parts)
        self.scales = list(scales)
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

    def projected(
        self, lo: int, hi: int, fit: PcaFit | None, block_rows: int, progress: Progress
    ) -> Iterator[np.ndarray]:
        """Rows [lo, hi) fused and projected (or only re-normalised without a fit), `block_rows` at a time."""
        for a in range(lo, hi, block_rows):
            b = min(a + block_rows, hi)
            fused = self.block(a, b)
            yield transform(fused, fit) if fit is not None else l2_normalize(fused)
            progress(b - a)


def model_weights(cfg: ReduceConfig, available: Sequence[str], names: Sequence[str]) -> dict[str, float]:
    """Each fused model's weight (`reduce.weights`, default 1.0), after checking every weight names a model of
    `available` and is a number in [MIN_WEIGHT, MAX_WEIGHT]."""
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


def total_variance(part: Part, block_rows: int) -> float:
    """Total variance (trace of the covariance) of a model's L2-normalised vectors: 1 - ||mean||^2."""
    total = np.zeros(part.dim, dtype=np.float64)
    for lo in range(0, part.rows, block_rows):
        total += l2_normalize(part.read(lo, min(lo + block_rows, part.rows))).sum(axis=0, dtype=np.float64)
    mean = total / part.rows
    return float(1.0 - mean @ mean)


def model_scales(
    names: Sequence[str], weights: Mapping[str, float], corpus: Sequence[Part], cfg: ReduceConfig
) -> tuple[list[float], dict[str, float]]:
    """Each model's scale (sqrt of its weight, divided by the root of its total variance with balance =
    variance) and, with balance, those total variances."""
    scales = [math.sqrt(weights[n]) for n in names]
    model_variance: dict[str, float] = {}
    if cfg.balance == Balance.VARIANCE:
        # Equal footing before the weights: an anisotropic model (multilingual-e5's vectors share one narrow
        # cone) otherwise brings a sliver of the concatenation's variance and hardly shapes the PCA axes.
        for i, name in enumerate(names):
            model_variance[name] = total_variance(corpus[i], cfg.block_rows)
            scales[i] /= math.sqrt(max(model_variance[name], 1e-12))
    return scales, model_variance


@dataclass(frozen=True)
class Fitted:
    """A PCA fitted on fused rows, the moments it came from and whether the rows were a sample."""

    fit: PcaFit
    moments: PcaAccumulator
    sampled: bool


def fit_fusion(fusions: Mapping[str, Fusion], cfg: ReduceConfig, progress: Progress = lambda n: None) -> Fitted:
    """Accumulate moments of the (sampled) fit rows block by block and fit."""
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
            progress(hi - lo)
        offset += fusion.rows
    return Fitted(acc.fit(variance=cfg.variance, n_components=cfg.n_components), acc, picked is not None)


def model_shares(
    fit: PcaFit, acc: PcaAccumulator, names: Sequence[str], dims: Sequence[int]
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


def fuse_in_memory(
    parts: Mapping[str, Sequence[ArrayPart]], names: Sequence[str], weights: Mapping[str, float], cfg: ReduceConfig
) -> dict[str, list[np.ndarray]]:
    """What `hnm reduce` writes, in memory: for each part ("corpus", "queries"), the fused rows shard by shard
    (the first model's shards), from the same scales, fit and blocks as the stage."""
    scales, _ = model_scales(names, weights, parts["corpus"], cfg)
    fusions = {what: Fusion(model_parts, scales) for what, model_parts in parts.items()}
    fit = fit_fusion(fusions, cfg).fit if cfg.pca else None
    out: dict[str, list[np.ndarray]] = {}
    for what, fusion in fusions.items():
        first = parts[what][0]
        out[what] = [
            np.concatenate(list(fusion.projected(lo, hi, fit, cfg.block_rows, lambda n: None)), axis=0)
            for lo, hi in first.shard_ranges()
        ]
    return out
