"""PNG plots of a mining run: the paper's Figure 2 (PCA of queries, positives, negatives) and a margin histogram.

matplotlib is imported inside each function with the non-interactive Agg backend, so importing this
module costs nothing and no display is ever needed. Files are written atomically.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from hnm_cli.fileio import atomic_path


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def pca_2d(points: np.ndarray) -> np.ndarray:
    """Project rows of `points` onto their first two principal components (SVD, deterministic sign).

    Args:
        points: (n, d) float array, n >= 1.

    Returns:
        (n, 2) float64 array (a zero column when the data has rank < 2).
    """
    x = np.asarray(points, dtype=np.float64)
    x = x - x.mean(axis=0, keepdims=True)
    _, _, vt = np.linalg.svd(x, full_matrices=False)
    comps = np.zeros((2, x.shape[1]))
    comps[: min(2, len(vt))] = vt[:2]
    # SVD signs are arbitrary; fix them so the same data always draws the same picture.
    for i in range(2):
        j = int(np.argmax(np.abs(comps[i]))) if comps[i].any() else 0
        if comps[i, j] < 0:
            comps[i] = -comps[i]
    projected: np.ndarray = x @ comps.T
    return projected


def plot_pca(
    path: Path,
    queries: np.ndarray,
    positives: np.ndarray,
    negatives: np.ndarray,
    *,
    title: str = "Queries, positives and mined negatives (first two PCA components)",
) -> None:
    """Scatter the first two PCA components of queries, positives and selected negatives (paper Figure 2).

    The PCA is fitted on the union of the plotted points, so the three groups share one projection.

    Args:
        path: the PNG to write.
        queries: (nq, d) query vectors.
        positives: (np, d) positive document vectors.
        negatives: (nn, d) selected negative vectors (may be empty).
        title: figure title.
    """
    plt = _pyplot()
    groups = [("queries", queries, "tab:blue", "o"), ("positives", positives, "tab:green", "^")]
    groups.append(("hard negatives", negatives, "tab:red", "x"))
    nonempty = [g for g in groups if len(g[1])]
    proj = pca_2d(np.concatenate([np.asarray(g[1], dtype=np.float64) for g in nonempty], axis=0))
    fig, ax = plt.subplots(figsize=(7, 6), dpi=110)
    start = 0
    for label, vecs, color, marker in nonempty:
        part = proj[start : start + len(vecs)]
        start += len(vecs)
        ax.scatter(part[:, 0], part[:, 1], s=14, c=color, marker=marker, alpha=0.7, label=f"{label} ({len(vecs)})")
    ax.set_xlabel("PC 1")
    ax.set_ylabel("PC 2")
    ax.set_title(title, fontsize=10)
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    _save(fig, plt, path)


def plot_margin_hist(path: Path, margins: np.ndarray, *, bins: int = 40) -> None:
    """Histogram of d(Q,D) - d(Q,PD) for the selected negatives (negative = closer to Q than the positive).

    Args:
        path: the PNG to write.
        margins: 1-d array of margins (may be empty: the plot then says so).
        bins: histogram bins.
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    margins = np.asarray(margins, dtype=np.float64)
    if len(margins):
        ax.hist(margins, bins=bins, color="tab:red", alpha=0.8)
        ax.axvline(0.0, color="black", linewidth=1, linestyle="--")
    else:
        ax.text(0.5, 0.5, "no negatives selected", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("d(Q,D) - d(Q,PD)  (cosine distance)")
    ax.set_ylabel("negatives")
    ax.set_title(f"Margin of selected negatives (n={len(margins)})", fontsize=10)
    fig.tight_layout()
    _save(fig, plt, path)


PLOT_MAX_PAIRS = 2000  # points beyond this make Figure 2 an unreadable blob; a seeded sample is drawn


def write_mining_plots(
    folder: Path,
    rows: list[dict[str, Any]],
    query_vecs: np.ndarray,
    corpus: Any,
    query_row: dict[str, int],
    corpus_row: dict[str, int],
    *,
    title: str,
    seed: int,
) -> list[str]:
    """`pca.png` (queries, positives and negatives of mine rows, the paper's Figure 2) and `margin_hist.png`
    in `folder`; returns their paths relative to its parent. More than PLOT_MAX_PAIRS rows: a seeded sample."""
    chosen = rows
    if len(rows) > PLOT_MAX_PAIRS:
        pick = np.sort(np.random.default_rng(seed).choice(len(rows), PLOT_MAX_PAIRS, replace=False))
        chosen = [rows[i] for i in pick]
    q_rows = sorted({query_row[r["query_id"]] for r in chosen})
    p_rows = sorted({corpus_row[r["positive_id"]] for r in chosen})
    n_rows = sorted({corpus_row[n["doc_id"]] for r in chosen for n in r["negatives"]})
    dim = query_vecs.shape[1]
    plot_pca(
        folder / "pca.png",
        query_vecs[q_rows],
        corpus.take(p_rows),
        corpus.take(n_rows) if n_rows else np.zeros((0, dim), dtype=np.float32),
        title=title,
    )
    margins = [n["d_qd"] - n["d_qp"] for r in rows for n in r["negatives"] if n["d_qd"] is not None]
    plot_margin_hist(folder / "margin_hist.png", np.asarray(margins))
    return [f"{folder.name}/pca.png", f"{folder.name}/margin_hist.png"]


def _save(fig: Any, plt: Any, path: Path) -> None:
    with atomic_path(Path(path)) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
