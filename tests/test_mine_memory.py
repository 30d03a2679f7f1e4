"""Memory: the rule's exact scan over a 200k x 256 corpus on disk stays within a fixed RSS budget.

Loading that corpus takes 205 MB and a 2k x 200k float32 score matrix 1.6 GB; the blocked scan needs one
block of scores (pair_block x block_rows) plus one corpus block. Each phase runs in its own subprocess so
``ru_maxrss`` measures the mining alone. The same file is the benchmark behind the numbers in the report:

    python tests/test_mine_memory.py write DIR --n 200000 --dim 256 --pairs 2000
    python tests/test_mine_memory.py mine DIR --index exact
    python tests/test_mine_memory.py mine DIR --index hnsw --m 16 --ef-construction 100 --threads 2

``mine`` prints one JSON line: seconds, peak RSS (MB), and the mining stats.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

RSS_BUDGET_MB = 350  # measured ~180 MB; loading the corpus (205 MB) plus a 2k x 200k score matrix (1.6 GB) is 1.8 GB


def _maxrss_mb() -> float:
    """Peak RSS of this process in MB.

    /proc's VmHWM belongs to this process's own memory map. ``ru_maxrss`` survives exec on Linux, so a
    child started from a large pytest process (torch imported by other tests) would report the parent's
    size at fork time: it is only the fallback where /proc is missing.
    """
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kilobytes


def write_synthetic(
    folder: Path, n: int, dim: int, n_pairs: int, n_queries: int, seed: int = 0, shard_rows: int = 50_000
) -> None:
    """Topic-clustered unit vectors in shards, plus noisy copies of positives as queries.

    About 100 documents per topic, and query noise spread so that the positive ranks from 1 to hundreds.
    Writes ``corpus/`` (vector shards), ``queries.npy`` and ``pairs.npy`` ([n_pairs, 2]: query, positive).
    """
    from hnm_cli.artifacts.vectors import write_vector_shard
    from hnm_cli.fileio import save_npy

    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((max(n // 100, 1), dim)).astype(np.float32)
    for shard, lo in enumerate(range(0, n, shard_rows)):
        rows = min(shard_rows, n - lo)
        x = centers[rng.integers(0, len(centers), rows)] + 0.9 * rng.standard_normal((rows, dim), dtype=np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        write_vector_shard(folder / "corpus", shard, [f"d{i}" for i in range(lo, lo + rows)], x)
        del x
    from hnm_cli.artifacts.vectors import open_vector_source

    src = open_vector_source(folder / "corpus")
    pos = rng.choice(n, n_pairs, replace=False)
    qrow = np.concatenate([np.arange(n_queries), rng.integers(0, n_queries, n_pairs - n_queries)])
    noise = rng.uniform(0.3, 1.2, (n_queries, 1)) * rng.standard_normal((n_queries, dim)) / np.sqrt(dim)
    q = src.take(pos[:n_queries]) + noise
    save_npy(folder / "queries.npy", q / np.linalg.norm(q, axis=1, keepdims=True))
    np.save(folder / "pairs.npy", np.stack([qrow, pos], axis=1).astype(np.int64))


def mine(folder: Path, index: str, block_rows: int, m: int, ef_construction: int, ef_search: int, threads: int) -> dict:
    """Run mine_rule on a folder from `write_synthetic`; return timings, peak RSS and stats."""
    from hnm_cli.artifacts.vectors import open_vector_source
    from hnm_cli.mining import Pair, mine_rule
    from hnm_cli.search import HnswIndex

    rss_start = _maxrss_mb()
    src = open_vector_source(folder / "corpus")
    q = np.load(folder / "queries.npy")
    pairs = [Pair(int(a), int(b)) for a, b in np.load(folder / "pairs.npy")]
    excluded: dict[int, set[int]] = {}
    for p in pairs:
        excluded.setdefault(p.query_row, set()).add(p.positive_row)
    out: dict = {"n": src.n, "dim": src.dim, "pairs": len(pairs), "index": index, "rss_before_mb": round(rss_start)}
    hnsw = None
    if index == "hnsw":
        path = folder / f"hnsw-M{m}-ef{ef_construction}.bin"
        t = time.perf_counter()
        if path.exists():
            hnsw = HnswIndex.load(path, src.dim, src.n)
            out["build_seconds"] = 0.0
        else:
            hnsw = HnswIndex.build(src, M=m, ef_construction=ef_construction, random_seed=0, num_threads=threads)
            out["build_seconds"] = round(time.perf_counter() - t, 2)
            hnsw.save(path)
        hnsw.num_threads = threads
    t = time.perf_counter()
    results, stats = mine_rule(q, src, pairs, excluded, index=hnsw, ef_search=ef_search, block_rows=block_rows)
    out["mine_seconds"] = round(time.perf_counter() - t, 2)
    out["peak_rss_mb"] = round(_maxrss_mb())
    d = stats.to_dict()
    out |= {k: d[k] for k in ("selection_rate", "selected", "pairs_with_zero", "hnsw_widenings", "exact_fallbacks")}
    out["negatives_digest"] = hash(tuple(tuple(n.doc_row for n in r.negatives) for r in results)) & 0xFFFFFFFF
    return out


def _run(*args: str) -> str:
    proc = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, check=False, timeout=1200)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@pytest.mark.slow
def test_exact_rule_on_200k_x_256_stays_within_rss_budget(tmp_path: Path) -> None:
    _run("write", str(tmp_path), "--n", "200000", "--dim", "256", "--pairs", "2000", "--queries", "1800")
    report = json.loads(_run("mine", str(tmp_path), "--index", "exact", "--block-rows", "16384").splitlines()[-1])
    assert (report["n"], report["dim"], report["pairs"]) == (200000, 256, 2000)
    assert 0 < report["selected"] <= 2000
    assert report["peak_rss_mb"] < RSS_BUDGET_MB, report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    w = sub.add_parser("write")
    w.add_argument("folder", type=Path)
    w.add_argument("--n", type=int, default=200_000)
    w.add_argument("--dim", type=int, default=256)
    w.add_argument("--pairs", type=int, default=2000)
    w.add_argument("--queries", type=int, default=None, help="distinct queries (default: 90%% of pairs)")
    w.add_argument("--seed", type=int, default=0)
    r = sub.add_parser("mine")
    r.add_argument("folder", type=Path)
    r.add_argument("--index", choices=["exact", "hnsw"], default="exact")
    r.add_argument("--block-rows", type=int, default=16384)
    r.add_argument("--m", type=int, default=32)
    r.add_argument("--ef-construction", type=int, default=200)
    r.add_argument("--ef-search", type=int, default=200)
    r.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    if args.cmd == "write":
        n_queries = args.queries or max(1, int(args.pairs * 0.9))
        write_synthetic(args.folder, args.n, args.dim, args.pairs, n_queries, args.seed)
    else:
        report = mine(
            args.folder, args.index, args.block_rows, args.m, args.ef_construction, args.ef_search, args.threads
        )
        print(json.dumps(report))


if __name__ == "__main__":
    main()
