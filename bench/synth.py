"""Synthetic corpora for the scale benchmark: a BEIR folder plus an `hnm embed`-style vector set, no encoder.

Geometry (so that mining has real work to do rather than a positive that is always rank 1): documents sit in
clusters of `cluster` documents, `doc = normalize(center + a * g)`; query i belongs to the cluster of its positive
and shares only a small part (`link`) of the positive's own noise, so the positive usually ranks among the
first few documents of its cluster and the rule's C1 region is non-empty for many pairs. Seeded: the same
arguments always give the same bytes.

    python bench/synth.py --docs 100000 --queries 10000 --dim 384 --out runs/bench/speed/synth-100k

Writes `<out>/data/{corpus.jsonl, queries.jsonl, qrels/train.tsv}` and `<out>/vectors/{manifest.json,
corpus/, queries/}` (manifest stage "embed-model", whose inputs are the corpus/queries digests, so `hnm mine
--vectors <out>/vectors --data <out>/data` accepts it). Skips the work when `<out>/vectors/manifest.json`
records the same settings.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np
import orjson

SHARD_ROWS = 100_000


def positive_rows(n_docs: int, n_queries: int) -> np.ndarray:
    """Positive document row of each query: spread evenly over the corpus (so over the clusters)."""
    return (np.arange(n_queries, dtype=np.int64) * n_docs) // n_queries


def make_synthetic(
    out: Path,
    *,
    n_docs: int,
    n_queries: int,
    dim: int = 384,
    cluster: int = 100,
    a: float = 0.5,
    link: float = 0.1,
    seed: int = 0,
) -> dict[str, Any]:
    """Write the synthetic BEIR folder and vector set; return the settings (see the module docstring)."""
    from hnm_cli.artifacts.manifest import file_input, load_manifest
    from hnm_cli.artifacts.vectors import VectorSetWriter
    from hnm_cli.fileio import atomic_write_bytes

    out = Path(out)
    settings = {
        "docs": n_docs,
        "queries": n_queries,
        "dim": dim,
        "cluster": cluster,
        "a": a,
        "link": link,
        "seed": seed,
    }
    vec_dir, data = out / "vectors", out / "data"
    old = load_manifest(vec_dir)
    if old is not None and old.params.get("synthetic") == settings:
        return settings
    rng = np.random.default_rng(seed)
    n_clusters = (n_docs + cluster - 1) // cluster
    centers = rng.standard_normal((n_clusters, dim), dtype=np.float32) / np.sqrt(dim)
    pos = positive_rows(n_docs, n_queries)

    data.mkdir(parents=True, exist_ok=True)
    with open(data / "corpus.jsonl", "wb") as fh:
        for i in range(n_docs):
            fh.write(orjson.dumps({"_id": f"d{i}", "title": "", "text": f"synthetic document {i}"}) + b"\n")
    atomic_write_bytes(
        data / "queries.jsonl",
        b"".join(orjson.dumps({"_id": f"q{i}", "text": f"query {i}"}) + b"\n" for i in range(n_queries)),
    )
    qrels = "query-id\tcorpus-id\tscore\n" + "".join(f"q{i}\td{p}\t1\n" for i, p in enumerate(pos))
    atomic_write_bytes(data / "qrels" / "train.tsv", qrels.encode())

    # Document noise is drawn block by block; the positives' noise is kept for their queries.
    pos_noise: dict[int, np.ndarray] = {}
    pos_set = {int(p): i for i, p in enumerate(pos)}
    writer = VectorSetWriter(vec_dir)
    for shard, lo in enumerate(range(0, n_docs, SHARD_ROWS)):
        hi = min(lo + SHARD_ROWS, n_docs)
        c = centers[np.arange(lo, hi) // cluster]
        g = rng.standard_normal((hi - lo, dim), dtype=np.float32) / np.sqrt(dim)
        for r in range(lo, hi):
            if r in pos_set:
                pos_noise[r] = g[r - lo].copy()
        x = c + a * g
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        writer.add_shard("corpus", shard, [f"d{i}" for i in range(lo, hi)], x)
    h = rng.standard_normal((n_queries, dim), dtype=np.float32) / np.sqrt(dim)
    g_pos = np.stack([pos_noise[int(p)] for p in pos])
    q = centers[pos // cluster] + a * (link * g_pos + np.sqrt(1 - link**2) * h)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    writer.add_shard("queries", 0, [f"q{i}" for i in range(n_queries)], q)

    inputs = [file_input(data / "corpus.jsonl", "corpus"), file_input(data / "queries.jsonl", "queries")]
    params = {"name": "synthetic", "source": "bench/synth.py", "dim": dim, "synthetic": settings}
    writer.finish(stage="embed-model", params=params, inputs=inputs)
    return settings


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--docs", type=int, required=True)
    ap.add_argument("--queries", type=int, default=10_000)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    settings = make_synthetic(args.out, n_docs=args.docs, n_queries=args.queries, dim=args.dim, seed=args.seed)
    print(orjson.dumps(settings).decode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
