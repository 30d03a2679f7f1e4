"""Ray overhead benchmark: `--executor ray` on a local Ray cluster against `--executor local`, same machine, same
commands, for `hnm embed` (SciFact, MiniLM) and `hnm mine` (the synthetic 100k corpus).

    make bench-ray                                     # SciFact (SPEED_DATA) + synthetic 100k, 2 workers
    .venv/bin/python bench/ray_overhead.py --data examples/cloud-docs --model hash:16 --docs 2000 --queries 200 \\
        --work /tmp/ray-smoke --md /tmp/ray-smoke/B.md --json /tmp/ray-smoke/B.json    # a smoke test in seconds

The script starts one local Ray cluster (`--workers` CPUs, bound to 127.0.0.1, no dashboard) for all measurements
and shuts it down at the end; its start-up time is reported apart, since a user with a cluster has it running. Each
measurement is a fresh `hnm` process (`common.measure`: wall time, peak RSS of the driver's process tree; Ray's
workers are not its children, so their memory is not in it). The Ray runs connect with `--ray-address`, so they
pay what a user pays: connecting, starting actors, loading the model in each actor, moving results to the driver.
Every pair of outputs is compared byte for byte (vectors, ids, markers, rows). Embed workers use the driver's
torch thread count and reserve that many CPUs, so on a 2-CPU cluster embed runs one 2-thread actor (the local run's
setting) while mine runs one single-threaded actor per CPU.

Results accumulate in `<work>/results.json` (default runs/bench/ray); a rerun measures only what is missing
(`--remeasure` redoes it). Output: the "ray" section of BENCHMARKS.md and the "ray" key of BENCHMARKS.json.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    REPO,
    Log,
    hnm_bin,
    machine_info,
    machine_line,
    markdown_table,
    measure,
    update_bench_files,
)

MINE_TOOLS = {"rule": [], "topk3": ["--strategy", "topk", "--num-negatives", "3"]}


class Bench:
    """results.json, one measurement at a time, the report rewritten after each."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.work: Path = args.work
        self.work.mkdir(parents=True, exist_ok=True)
        self.log = Log(self.work / "bench.log")
        self.path = self.work / "results.json"
        self.results: dict[str, Any] = orjson.loads(self.path.read_bytes()) if self.path.is_file() else {}
        self.results.setdefault("runs", {})
        self.results.setdefault("machine", machine_info())
        self.hnm = hnm_bin()
        self.address: str | None = None

    def save(self) -> None:
        from hnm_cli.fileio import atomic_write_json

        atomic_write_json(self.path, self.results)

    def todo(self, key: str) -> bool:
        return self.args.remeasure or key not in self.results["runs"]

    def run(self, key: str, args: list[Any], out: Path, **extra: Any) -> dict[str, Any]:
        if not self.todo(key):
            return dict(self.results["runs"][key])
        if out.exists():
            shutil.rmtree(out)
        res = measure([str(a) for a in args], timeout=self.args.timeout, log=self.log)
        res.pop("stdout", None)
        res["load_average_before"] = round(os.getloadavg()[0], 2)
        res.update(extra)
        if res["status"] != "ok":
            self.log(f"  {key}: {res['status']}; stderr tail: {res['stderr_tail'][-400:]}")
        self.results["runs"][key] = res
        self.save()
        self.report()
        return res

    def report(self) -> None:
        update_bench_files(self.args.md, self.args.json, "ray", render(self), self.results)


def start_cluster(b: Bench) -> Any:
    """One local cluster for every measurement; returns the ray module (shut down by the caller)."""
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # loopback only: this is a one-machine benchmark
    import ray

    t0 = time.perf_counter()
    ctx = ray.init(
        num_cpus=b.args.workers,
        include_dashboard=False,
        _node_ip_address="127.0.0.1",
        configure_logging=False,
        log_to_driver=False,
    )
    b.results["cluster_start_seconds"] = round(time.perf_counter() - t0, 2)
    b.address = ctx.address_info["gcs_address"]
    b.log(f"ray cluster at {b.address} ({b.args.workers} CPUs) in {b.results['cluster_start_seconds']} s")
    return ray


def same_files(a: Path, b: Path) -> bool:
    """Byte-identical outputs, manifests and stats (timings) aside."""

    def files(root: Path) -> dict[str, bytes]:
        return {
            p.relative_to(root).as_posix(): p.read_bytes()
            for p in sorted(root.rglob("*"))
            if p.is_file() and p.name not in ("manifest.json", "stats.json") and not p.name.startswith(".hnm.lock")
        }

    return files(a) == files(b)


def vector_agreement(a: Path, b: Path) -> dict[str, Any]:
    """How two embed artifacts' vector sets compare: ids identical, vectors identical, and max |a - b|."""
    import numpy as np

    pairs = sorted(p.relative_to(a) for p in a.rglob("vectors-*.npy"))
    max_diff, same_vectors = 0.0, True
    for rel in pairs:
        va, vb = np.load(a / rel), np.load(b / rel)
        same_vectors &= va.tobytes() == vb.tobytes()
        max_diff = max(max_diff, float(np.abs(va - vb).max()) if va.size else 0.0)
    ids = sorted(p.relative_to(a) for p in a.rglob("ids-*.jsonl"))
    return {
        "vector_files": len(pairs),
        "vectors_identical": bool(same_vectors),
        "ids_identical": all((a / r).read_bytes() == (b / r).read_bytes() for r in ids),
        "max_abs_diff": max_diff,
    }


def _model_stats(out: Path) -> dict[str, Any]:
    top = orjson.loads((out / "manifest.json").read_bytes())
    name = top["stats"]["model_names"][0]
    return dict(orjson.loads((out / name / "manifest.json").read_bytes())["stats"])


def bench_embed(b: Bench) -> None:
    a = b.args
    base = [b.hnm, "embed", "-c", REPO / "configs" / "default.toml", "--data", a.data, "--model", a.model, "-q"]
    if a.shard_size:
        base += ["--shard-size", a.shard_size]
    outs = {ex: b.work / f"embed-{ex}" for ex in ("local", "ray")}
    for ex, out in outs.items():
        key = f"embed:{ex}"
        extra = ["--executor", "ray", "--ray-address", b.address] if ex == "ray" else []
        res = b.run(key, [*base, *extra, "--out", out], out)
        if res["status"] == "ok" and "stats" not in res:
            st = _model_stats(out)
            res["stats"] = {k: st.get(k) for k in ("rows", "shards_encoded", "encode_seconds", "load_seconds")}
            b.results["runs"][key] = res
            b.save()
    if all((o / "manifest.json").is_file() for o in outs.values()):
        b.results["embed_identical"] = same_files(outs["local"], outs["ray"])
        b.results["embed_vectors"] = vector_agreement(outs["local"], outs["ray"])
        b.save()


def bench_mine(b: Bench) -> None:
    from synth import make_synthetic

    a = b.args
    root = b.work / f"synth-{a.docs}"
    make_synthetic(root, n_docs=a.docs, n_queries=a.queries, dim=384, seed=0)
    base = [b.hnm, "mine", "--vectors", root / "vectors", "--data", root / "data", "--split", "train", "-q"]
    for tool, args in MINE_TOOLS.items():
        outs = {ex: b.work / f"mine-{tool}-{ex}" for ex in ("local", "ray")}
        for ex, out in outs.items():
            extra = ["--executor", "ray", "--ray-address", b.address] if ex == "ray" else []
            res = b.run(f"mine:{tool}:{ex}", [*base, *args, *extra, "--out", out], out, docs=a.docs)
            if res["status"] == "ok" and "mining_seconds" not in res:
                res["mining_seconds"] = orjson.loads((out / "stats.json").read_bytes()).get("mining_seconds")
                b.save()
        if all((o / "manifest.json").is_file() for o in outs.values()):
            b.results.setdefault("mine_identical", {})[tool] = same_files(outs["local"], outs["ray"])
            b.save()


def _f(x: Any, digits: int = 1) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def _ratio(ray: dict[str, Any] | None, local: dict[str, Any] | None) -> str:
    if not ray or not local or ray.get("status") != "ok" or local.get("status") != "ok":
        return "-"
    return f"{ray['seconds'] / local['seconds']:.2f}x"


def render(b: Bench) -> str:
    r, a = b.results, b.args
    runs = r["runs"]
    lines = [
        "## Ray overhead (`--executor ray` on one machine)",
        "",
        machine_line(r["machine"]),
        "",
        f"A local Ray cluster of {a.workers} CPUs (start-up {r.get('cluster_start_seconds', '-')} s, not counted "
        "below: a cluster is started once, not per run) against `--executor local`; wall time of the whole `hnm` "
        "command. The ratio is the overhead Ray adds on the same cores.",
        "",
    ]
    rows = []
    el, er = runs.get("embed:local"), runs.get("embed:ray")
    if el or er:
        ident = {True: "yes", False: "**no**"}.get(r.get("embed_identical"), "-")
        rows.append([f"embed {a.model} ({Path(a.data).name})", _f((el or {}).get("seconds")),
                     _f((er or {}).get("seconds")), _ratio(er, el), ident])  # fmt: skip
    for tool in MINE_TOOLS:
        ml, mr = runs.get(f"mine:{tool}:local"), runs.get(f"mine:{tool}:ray")
        if ml or mr:
            ident = {True: "yes", False: "**no**"}.get(r.get("mine_identical", {}).get(tool), "-")
            rows.append([f"mine {tool} (synthetic {a.docs} x 384, {a.queries} pairs)", _f((ml or {}).get("seconds")),
                         _f((mr or {}).get("seconds")), _ratio(mr, ml), ident])  # fmt: skip
    lines.append(markdown_table(["run", "local s", "ray s", "ray / local", "same bytes"], rows))
    if agree := r.get("embed_vectors"):
        lines += [
            "",
            f"embed, vectors: ids identical {'yes' if agree['ids_identical'] else '**no**'}; vectors byte-identical "
            f"{'yes' if agree['vectors_identical'] else 'no'}; max |local - ray| = {agree['max_abs_diff']:.3g} over "
            f"{agree['vector_files']} vector files (a neural encoder on another thread count differs in float noise).",
        ]
    st = (el or {}).get("stats") or {}
    if st.get("shards_encoded") and st.get("encode_seconds"):
        per = st["encode_seconds"] / st["shards_encoded"]
        shards = st["shards_encoded"]
        fixed = max(0.0, (er or {}).get("seconds", 0.0) - st["encode_seconds"]) if er else None
        lines += [
            "",
            f"Per-shard encode time (local run): {per:.1f} s for {shards} shard(s). **Estimate**, not a measurement:",
            "on N machines like this one (one actor each), embed takes about "
            f"ceil({shards} / N) x {per:.1f} s plus the fixed cost the Ray run paid here"
            + (f" (~{fixed:.0f} s: connecting, actor start-up, model loads, transfers)" if fixed is not None else "")
            + ": "
            + ", ".join(f"N={n}: ~{math.ceil(shards / n) * per + (fixed or 0):.0f} s" for n in (2, 4, 8))
            + ".",
        ]
    ml = runs.get("mine:rule:local") or {}
    if ml.get("mining_seconds"):
        lines += [
            "",
            f"Mining the rule locally took {ml['mining_seconds']:.0f} s of the wall time; blocks of pairs divide "
            "it over the workers (each block reads the corpus once), so N machines would take roughly that / N plus "
            "the fixed cost above (an **estimate**).",
        ]
    lines += [
        "",
        f"Command: `.venv/bin/python bench/ray_overhead.py --data {a.data} --workers {a.workers} --docs {a.docs}` "
        "(`make bench-ray`); every command line is in BENCHMARKS.json (`ray.runs.*.command`).",
        "",
    ]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], epilog=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "scifact")
    ap.add_argument("--model", default="all-MiniLM-L6-v2", help="a model of configs/default.toml, or any --model spec")
    ap.add_argument("--shard-size", type=int, default=None, help="embed rows per shard (default: the config's)")
    ap.add_argument("--docs", type=int, default=100_000, help="synthetic corpus size for mine")
    ap.add_argument("--queries", type=int, default=10_000, help="synthetic queries (one pair each)")
    ap.add_argument("--workers", type=int, default=2, help="CPUs of the local Ray cluster")
    ap.add_argument("--parts", default="embed,mine", help="which measurements: embed,mine")
    ap.add_argument("--work", type=Path, default=None)
    ap.add_argument("--timeout", type=float, default=3600.0, help="seconds per measured run")
    ap.add_argument("--remeasure", action="store_true", help="measure again what results.json already holds")
    ap.add_argument("--report-only", action="store_true", help="only rewrite the report from results.json")
    ap.add_argument("--md", type=Path, default=REPO / "BENCHMARKS.md")
    ap.add_argument("--json", type=Path, default=REPO / "BENCHMARKS.json")
    a = ap.parse_args(argv)
    a.data = a.data.resolve()
    a.work = (a.work or REPO / "runs" / "bench" / "ray").resolve()
    a.parts = tuple(p.strip() for p in a.parts.split(","))
    a.md, a.json = a.md.resolve(), a.json.resolve()
    return a


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    b = Bench(a)
    if a.report_only:
        b.report()
        return 0
    ray = start_cluster(b)
    try:
        if "embed" in a.parts:
            bench_embed(b)
        if "mine" in a.parts:
            bench_mine(b)
    finally:
        ray.shutdown()
    b.report()
    b.log("bench-ray: done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
