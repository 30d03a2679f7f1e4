"""PCA for the fused ensemble vectors: exact fit from streamed moments, projection (its `.npy` files are `hnm_cli.artifacts.fusion`'s).

The fit is the eigendecomposition of the sample covariance, accumulated block by block in float64
(`PcaAccumulator`), so fitting never needs the fit rows in one array: memory is O(dim^2), not
O(rows x dim). This is sklearn's `svd_solver="covariance_eigh"`, done with numpy so the stage needs
no sklearn import and the result does not depend on a solver's random state. Components are sign-fixed
(largest absolute loading positive), so two fits of the same data are bitwise comparable.

"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Cumulative ratios are sums of floats: a target of 0.95 (or 1.0) must count as reached when the sum is
# 0.95 minus rounding noise, otherwise k jumps by one (or to the full dimension) for no real reason.
_RATIO_TOL = 1e-9


@dataclass(frozen=True)
class PcaFit:
    """A fitted PCA. Arrays are float64; `components` is (k, dim) with orthonormal rows.

    Attributes:
        mean: (dim,) mean of the fit rows, subtracted before projecting.
        components: (k, dim) principal axes, by decreasing explained variance.
        explained_variance: (k,) variance along each kept axis (sample covariance, ddof=1).
        explained_variance_ratio: (k,) share of the total variance of the fit rows per kept axis.
    """

    mean: np.ndarray
    components: np.ndarray
    explained_variance: np.ndarray
    explained_variance_ratio: np.ndarray

    @property
    def n_components(self) -> int:
        """Number of kept components k."""
        return int(self.components.shape[0])

    @property
    def dim(self) -> int:
        """Input dimension."""
        return int(self.components.shape[1])

    @property
    def variance_reached(self) -> float:
        """Share of the total variance kept by the k components."""
        return float(np.sum(self.explained_variance_ratio))


def components_for_variance(ratios: np.ndarray, target: float) -> int:
    """Smallest k whose first k explained-variance ratios sum to at least `target`.

    Args:
        ratios: explained-variance ratios sorted in decreasing order (summing to about 1).
        target: the variance share to reach, in (0, 1].

    Returns:
        k in [1, len(ratios)]; len(ratios) when the target is never reached.
    """
    if not 0 < target <= 1:
        raise ValueError(f"variance target must be in (0, 1]; got {target!r}")
    cumulative = np.cumsum(np.asarray(ratios, dtype=np.float64))
    k = int(np.searchsorted(cumulative, target - _RATIO_TOL, side="left")) + 1
    return min(k, len(cumulative))


class PcaAccumulator:
    """Running first and second moments (float64) of rows added block by block.

    Only sum(x) and sum(x x^T) are kept, so memory is O(dim^2) whatever the number of rows.
    """

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self.n = 0
        self._sum = np.zeros(dim, dtype=np.float64)
        self._outer = np.zeros((dim, dim), dtype=np.float64)

    def add(self, block: np.ndarray) -> None:
        """Add the rows of a (rows, dim) block."""
        if block.ndim != 2 or block.shape[1] != self.dim:
            raise ValueError(f"expected a (rows, {self.dim}) block, got shape {block.shape}")
        if len(block) == 0:
            return
        b = np.asarray(block, dtype=np.float64)
        self.n += len(b)
        self._sum += b.sum(axis=0)
        self._outer += b.T @ b

    def mean(self) -> np.ndarray:
        """Mean of the rows added so far."""
        return self._sum / max(self.n, 1)

    def covariance(self) -> np.ndarray:
        """Sample covariance (ddof=1) of the rows added so far."""
        if self.n < 2:
            raise ValueError(f"PCA needs at least 2 rows; got {self.n}")
        mean = self.mean()
        cov = (self._outer - self.n * np.outer(mean, mean)) / (self.n - 1)
        sym: np.ndarray = (cov + cov.T) / 2  # exact symmetry for eigh
        return sym

    def fit(self, *, variance: float = 0.95, n_components: int | None = None) -> PcaFit:
        """Fit PCA on the accumulated rows.

        Args:
            variance: keep the smallest k reaching this explained-variance ratio (ignored if n_components).
            n_components: a fixed k instead of the variance target; at most min(rows, dim).

        Returns:
            The PcaFit.

        Raises:
            ValueError: fewer than 2 rows, or n_components out of range.
        """
        cov = self.covariance()
        eigvals, eigvecs = np.linalg.eigh(cov)  # ascending
        order = np.argsort(eigvals)[::-1]
        eigvals = np.clip(eigvals[order], 0.0, None)  # tiny negative values are rounding noise
        components = eigvecs[:, order].T
        total = float(np.sum(eigvals))
        ratios = eigvals / total if total > 0 else np.zeros_like(eigvals)
        if n_components is not None:
            limit = min(self.n, self.dim)
            if not 1 <= n_components <= limit:
                raise ValueError(f"n_components must be in [1, {limit}] (min of fit rows and dim); got {n_components}")
            k = n_components
        else:
            k = components_for_variance(ratios, variance)
        components = _fix_signs(components[:k])
        return PcaFit(
            mean=self.mean(),
            components=np.ascontiguousarray(components),
            explained_variance=eigvals[:k].copy(),
            explained_variance_ratio=ratios[:k].copy(),
        )


def _fix_signs(components: np.ndarray) -> np.ndarray:
    """Flip each component so its largest-magnitude loading is positive (eigenvector signs are arbitrary)."""
    idx = np.argmax(np.abs(components), axis=1)
    signs = np.sign(components[np.arange(len(components)), idx])
    signs[signs == 0] = 1.0
    fixed: np.ndarray = components * signs[:, None]
    return fixed


def sample_indices(n_rows: int, max_rows: int | None, seed: int) -> np.ndarray | None:
    """Sorted row indices of a seeded sample of `max_rows` rows, or None when all rows fit.

    Sorted so the rows can be picked in one sequential pass over the shards.
    """
    if max_rows is None or n_rows <= max_rows:
        return None
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n_rows, size=max_rows, replace=False))


def fit_pca(
    X: np.ndarray,
    *,
    variance: float = 0.95,
    n_components: int | None = None,
    max_rows: int | None = None,
    seed: int = 0,
    block_rows: int = 8192,
) -> PcaFit:
    """Fit PCA on the rows of an in-memory (or memory-mapped) matrix.

    Args:
        X: (rows, dim) array.
        variance: explained-variance target in (0, 1]; the smallest k reaching it is kept.
        n_components: a fixed k instead of the variance target.
        max_rows: fit on a seeded sample of this many rows when X has more.
        seed: seed of that sample (the fit itself is deterministic).
        block_rows: rows per accumulation block (bounds the float64 temporary).

    Returns:
        The PcaFit.
    """
    if not hasattr(X, "shape"):
        X = np.asarray(X)
    acc = PcaAccumulator(int(X.shape[1]))
    picked = sample_indices(len(X), max_rows, seed)
    if picked is None:
        for lo in range(0, len(X), block_rows):
            acc.add(X[lo : lo + block_rows])
    else:
        for lo in range(0, len(picked), block_rows):
            acc.add(X[picked[lo : lo + block_rows]])
    return acc.fit(variance=variance, n_components=n_components)


def l2_normalize(X: np.ndarray) -> np.ndarray:
    """Row-wise L2 normalisation to float32; all-zero rows stay zero (no NaN)."""
    X = np.asarray(X, dtype=np.float32)
    norms = np.linalg.norm(X, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    unit: np.ndarray = X / norms
    return unit


def transform(X: np.ndarray, fit: PcaFit) -> np.ndarray:
    """Project rows onto the kept components and L2-normalise: (rows, k) float32.

    The product runs in float32 (the stored vectors' precision); centring uses the float64 mean cast down.
    """
    X = np.asarray(X, dtype=np.float32)
    if X.ndim != 2 or X.shape[1] != fit.dim:
        raise ValueError(f"expected a (rows, {fit.dim}) array, got shape {X.shape}")
    projected = (X - fit.mean.astype(np.float32)) @ fit.components.astype(np.float32).T
    return l2_normalize(projected)
