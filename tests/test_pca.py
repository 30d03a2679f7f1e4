"""The PCA core against plain numpy SVD: variance target, components, projection, persistence, sampling."""

from __future__ import annotations

import numpy as np
import pytest

from hnm_cli.artifacts.fusion import FIT_FILES, load_fit, save_fit
from hnm_cli.pca import (
    PcaAccumulator,
    components_for_variance,
    fit_pca,
    l2_normalize,
    sample_indices,
    transform,
)


def _data(rows: int = 200, dim: int = 12, seed: int = 1) -> np.ndarray:
    """Anisotropic data: axis scales fall off geometrically, so the spectrum has a clear order."""
    rng = np.random.default_rng(seed)
    scales = 0.7 ** np.arange(dim)
    mixing = np.linalg.qr(rng.normal(size=(dim, dim)))[0]
    return (rng.normal(size=(rows, dim)) * scales) @ mixing.T + rng.normal(size=dim)


def _numpy_svd(X: np.ndarray):
    centred = X - X.mean(axis=0)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    var = s**2 / (len(X) - 1)
    return vt, var, var / var.sum()


def test_components_for_variance_smallest_k_reaching_target():
    ratios = np.array([0.5, 0.3, 0.15, 0.05])
    assert components_for_variance(ratios, 0.5) == 1
    assert components_for_variance(ratios, 0.51) == 2
    assert components_for_variance(ratios, 0.8) == 2
    assert components_for_variance(ratios, 0.95) == 3  # 0.5+0.3+0.15 is 0.95 up to float rounding
    assert components_for_variance(ratios, 0.96) == 4
    assert components_for_variance(ratios, 1.0) == 4
    with pytest.raises(ValueError):
        components_for_variance(ratios, 0.0)


def test_variance_target_picks_numpy_k_and_matches_svd():
    X = _data()
    vt, var, ratio = _numpy_svd(X)
    expected_k = int(np.argmax(np.cumsum(ratio) >= 0.9)) + 1
    fit = fit_pca(X, variance=0.9)
    assert fit.n_components == expected_k
    assert 1 < expected_k < X.shape[1]
    np.testing.assert_allclose(fit.mean, X.mean(axis=0), rtol=0, atol=1e-12)
    np.testing.assert_allclose(fit.explained_variance, var[:expected_k], rtol=1e-9)
    np.testing.assert_allclose(fit.explained_variance_ratio, ratio[:expected_k], rtol=1e-9)
    assert fit.variance_reached == pytest.approx(float(ratio[:expected_k].sum()), rel=1e-12)
    # Same axes up to sign.
    dots = np.abs(np.sum(fit.components * vt[:expected_k], axis=1))
    np.testing.assert_allclose(dots, np.ones(expected_k), atol=1e-9)
    np.testing.assert_allclose(fit.components @ fit.components.T, np.eye(expected_k), atol=1e-12)


def test_fixed_n_components_and_its_limits():
    X = _data(rows=30, dim=8)
    assert fit_pca(X, n_components=5).n_components == 5
    assert fit_pca(X, n_components=8, variance=0.1).n_components == 8  # n_components wins over variance
    with pytest.raises(ValueError, match=r"n_components must be in \[1, 8\]"):
        fit_pca(X, n_components=9)


def test_signs_are_fixed_largest_loading_positive():
    fit = fit_pca(_data(), n_components=6)
    idx = np.argmax(np.abs(fit.components), axis=1)
    assert np.all(fit.components[np.arange(6), idx] > 0)


def test_transform_equals_numpy_projection_then_normalisation():
    X = _data()
    fit = fit_pca(X, n_components=4)
    vt, _, _ = _numpy_svd(X)
    signs = np.sign(np.sum(fit.components * vt[:4], axis=1))
    expected = (X - X.mean(axis=0)) @ (vt[:4] * signs[:, None]).T
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    got = transform(X.astype(np.float32), fit)
    assert got.dtype == np.float32 and got.shape == (200, 4)
    np.testing.assert_allclose(got, expected, atol=2e-5)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), np.ones(200), atol=1e-6)


def test_full_rank_projection_preserves_centred_cosines():
    X = _data(rows=50, dim=6)
    fit = fit_pca(X, variance=1.0)
    assert fit.n_components == 6
    centred = l2_normalize(X - X.mean(axis=0))
    got = transform(X, fit)
    np.testing.assert_allclose(got @ got.T, centred @ centred.T, atol=1e-5)


def test_accumulator_blocks_equal_one_shot():
    X = _data()
    acc = PcaAccumulator(12)
    for lo in range(0, 200, 37):
        acc.add(X[lo : lo + 37])
    acc.add(np.zeros((0, 12)))
    assert acc.n == 200
    np.testing.assert_allclose(acc.covariance(), np.cov(X, rowvar=False), atol=1e-12)
    one = fit_pca(X, variance=0.95, block_rows=1000)
    many = acc.fit(variance=0.95)
    np.testing.assert_allclose(many.components, one.components, atol=1e-10)
    with pytest.raises(ValueError, match="at least 2 rows"):
        PcaAccumulator(3).fit()


def test_save_load_round_trip_plain_npy(tmp_path):
    fit = fit_pca(_data(), variance=0.9)
    assert save_fit(tmp_path / "pca", fit) == list(FIT_FILES)
    assert sorted(p.name for p in (tmp_path / "pca").iterdir()) == sorted(FIT_FILES)  # no leftover .tmp
    back = load_fit(tmp_path / "pca")
    for name in ("mean", "components", "explained_variance", "explained_variance_ratio"):
        a, b = getattr(fit, name), getattr(back, name)
        assert b.dtype == np.float64
        np.testing.assert_array_equal(a, b)
    # Plain arrays: loadable with pickle disabled by anything that reads .npy.
    assert np.load(tmp_path / "pca" / "components.npy", allow_pickle=False).shape == fit.components.shape


def test_sampling_is_seeded_and_sorted():
    assert sample_indices(100, 100, 0) is None
    assert sample_indices(100, None, 0) is None
    a = sample_indices(1000, 50, seed=3)
    assert len(a) == 50 and np.all(np.diff(a) > 0)
    np.testing.assert_array_equal(a, sample_indices(1000, 50, seed=3))
    assert not np.array_equal(a, sample_indices(1000, 50, seed=4))


def test_fit_on_sample_is_deterministic_and_uses_only_sampled_rows():
    X = _data(rows=500)
    a = fit_pca(X, n_components=3, max_rows=100, seed=7)
    b = fit_pca(X, n_components=3, max_rows=100, seed=7)
    np.testing.assert_array_equal(a.components, b.components)
    picked = sample_indices(500, 100, 7)
    np.testing.assert_allclose(a.mean, X[picked].mean(axis=0), atol=1e-12)
    assert not np.allclose(a.mean, fit_pca(X, n_components=3, max_rows=100, seed=8).mean)


def test_l2_normalize_keeps_zero_rows_zero():
    out = l2_normalize(np.array([[3.0, 4.0], [0.0, 0.0]]))
    np.testing.assert_array_equal(out, np.array([[0.6, 0.8], [0.0, 0.0]], dtype=np.float32))
