"""Speed and scale benchmark: hnm against plain sentence-transformers, on the same machine, texts, model and vectors.

    make bench-speed                       # SciFact (SPEED_DATA) + synthetic 100k / 300k / 1M vectors
    make bench-speed QUICK=1               # a 1000-doc SciFact sample and 20k / 50k synthetic vectors

Measurements (each one a fresh subprocess under `/usr/bin/time -v` with psutil polling: wall time, peak RSS,
a per-run timeout and a memory cap; output folders are deleted first so nothing is reused by accident):
  * embed: `hnm embed` vs a plain `SentenceTransformer.encode` (one call: sentence-transformers sorts by length;
    and one call per batch in file order: no global length sorting), same texts, model, max length, batch size;
  * precision: `hnm embed --precision bf16` vs fp32, docs/s and the nDCG@10 of the resulting dense first stage;
  * mine on SciFact: `hnm mine` (the rule; exact and hnsw; and `--strategy topk --num-negatives 3`, the selection
    sentence-transformers' defaults make) vs `util.mine_hard_negatives` defaults on the *same* vectors (encoding
    excluded on both sides), plus sentence-transformers end to end (its own encoding included);
  * scale: the same miners on synthetic clustered vectors (dim 384, 10k queries) of 100k, 300k and 1M documents;
    a tool's series stops at its first failure (timeout, memory cap, error);
  * rerun: the wall time of every stage's command when its artifact is up to date.

Results accumulate in `<work>/results.json` (default work dir runs/bench/speed[-quick]); a rerun skips what
is measured already (`--remeasure` redoes it). Output: the speed section of BENCHMARKS.md and the "speed" key of
BENCHMARKS.json. Other processes on the machine change timings: the load average is recorded with each run.
"""

from __future__ import annotations

import argparse
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
    sample_beir,
    update_bench_files,
)

MODEL = "all-MiniLM-L6-v2"  # the configs/default.toml entry (max_seq_length 256, batch 64)
SCALE_TOOLS = ("hnm-exact", "hnm-hnsw", "hnm-topk3", "st")
TOOL_LABELS = {
    "hnm-exact": "hnm mine (rule, exact)",
    "hnm-hnsw": "hnm mine (rule, hnsw)",
    "hnm-topk3": "hnm mine (topk, 3 negatives, exact)",
    "st": "sentence-transformers mine_hard_negatives (defaults)",
}


class Bench:
    """Holds results.json, runs measurements once, and renders the report after each one."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.work: Path = args.work
        self.work.mkdir(parents=True, exist_ok=True)
        self.log = Log(self.work / "bench.log")
        self.path = self.work / "results.json"
        self.results: dict[str, Any] = orjson.loads(self.path.read_bytes()) if self.path.is_file() else {}
        self.results.setdefault("runs", {})
        self.results.setdefault("machine", machine_info())  # of the first invocation; each run has its own load
        self.hnm = hnm_bin()
        self.py = sys.executable

    def save(self) -> None:
        from hnm_cli.fileio import atomic_write_json

        atomic_write_json(self.path, self.results)

    def measured(self, key: str) -> dict[str, Any] | None:
        run = self.results["runs"].get(key)
        if run is not None and not self.args.remeasure:
            return run
        return None

    def run(
        self, key: str, args: list[Any], *, clean: Path | None = None, timeout: float | None = None, **extra: Any
    ) -> dict[str, Any]:
        """Measure `args` once (or return the stored result); `clean` is deleted first."""
        if (done := self.measured(key)) is not None:
            return done
        if clean is not None and clean.exists():
            shutil.rmtree(clean)
        load = round(os.getloadavg()[0], 2)
        res = measure(
            [str(a) for a in args],
            timeout=timeout or self.args.timeout,
            mem_limit_gib=self.args.mem_limit_gib,
            log=self.log,
        )
        res["load_average_before"] = load
        res.update(extra)
        if res["status"] != "ok":
            self.log(f"  {key}: {res['status']}; stderr tail: {res['stderr_tail'][-400:]}")
        self.results["runs"][key] = res
        self.save()
        self.report()
        return res

    def report(self) -> None:
        update_bench_files(self.args.md, self.args.json, "speed", render(self), _public(self.results))


def _public(results: dict[str, Any]) -> dict[str, Any]:
    """results.json without the captured stdout (kept only where it is the measurement)."""
    runs = {k: {kk: vv for kk, vv in v.items() if kk not in ("stdout",)} for k, v in results["runs"].items()}
    return {**results, "runs": runs}


def _json_out(res: dict[str, Any]) -> dict[str, Any]:
    text = res.get("stdout", "").strip()
    try:
        return orjson.loads(text)  # one (possibly indented) JSON document
    except orjson.JSONDecodeError:
        pass
    start = text.rfind("\n{")  # a JSON document printed after other output (sentence-transformers' verbose stats)
    if start >= 0:
        try:
            return orjson.loads(text[start + 1 :])
        except orjson.JSONDecodeError:
            pass
    try:
        return orjson.loads(text.splitlines()[-1])
    except (IndexError, orjson.JSONDecodeError):
        return {}


def _stats(directory: Path) -> dict[str, Any]:
    path = directory / "manifest.json"
    return orjson.loads(path.read_bytes()).get("stats", {}) if path.is_file() else {}


# ---------------------------------------------------------------------------------------------
# The measurements
# ---------------------------------------------------------------------------------------------


def bench_embed(b: Bench, data: Path) -> None:
    cfg = REPO / "configs" / "default.toml"
    for precision in ("fp32", "bf16"):
        out = b.work / f"embed-{precision}"
        key = f"embed:hnm:{precision}"
        had = b.measured(key) is not None
        cmd = [
            b.hnm,
            "embed",
            "-c",
            cfg,
            "--data",
            data,
            "--model",
            MODEL,
            "--precision",
            precision,
            "--out",
            out,
            "-q",
        ]
        res = b.run(key, cmd, clean=out)
        if not had and res["status"] == "ok":
            res["stats"] = _stats(out / MODEL)
            b.save()
    for order in ("sorted", "file"):
        cmd = [b.py, REPO / "bench" / "st_baselines.py", "encode", "--data", data, "--model", f"pkg:{MODEL}"]
        res = b.run(f"embed:st:{order}", [*cmd, "--order", order, "--batch-size", 64, "--max-seq-length", 256])
        if res["status"] == "ok":
            res["report"] = _json_out(res)
            b.save()
    for precision in ("fp32", "bf16"):
        vec = b.work / f"embed-{precision}" / MODEL
        if not (vec / "manifest.json").is_file():
            continue
        out = b.work / f"eval-{precision}"
        cmd = [b.hnm, "eval", "--data", data, "--split", "test", "--first-stage", "dense", "--vectors", vec]
        res = b.run(f"eval:first-stage:{precision}", [*cmd, "--out", out, "-q"], clean=out)
        if res["status"] == "ok":
            rep = _json_out(res)
            res["ndcg@10"] = rep.get("runs", {}).get("first-stage", {}).get("mean", {}).get("ndcg@10")
            res["mrr@10"] = rep.get("runs", {}).get("first-stage", {}).get("mean", {}).get("mrr@10")
            b.save()
    b.report()


def _mine_cmds(b: Bench, vectors: Path, data: Path, out_root: Path) -> dict[str, tuple[list[Any], Path]]:
    base = [b.hnm, "mine", "--vectors", vectors, "--data", data, "--split", "train", "-q"]
    cmds = {
        "hnm-exact": ([*base, "--out", out_root / "mine-exact"], out_root / "mine-exact"),
        "hnm-hnsw": ([*base, "--index", "hnsw", "--out", out_root / "mine-hnsw"], out_root / "mine-hnsw"),
        "hnm-topk3": (
            [*base, "--strategy", "topk", "--num-negatives", 3, "--out", out_root / "mine-topk3"],
            out_root / "mine-topk3",
        ),
        "st": ([b.py, REPO / "bench" / "st_baselines.py", "mine", "--vectors", vectors, "--data", data], None),
    }
    return cmds  # type: ignore[return-value]


def _record_mine(b: Bench, res: dict[str, Any], out: Path | None) -> None:
    if res["status"] != "ok" or "mining_seconds" in res:
        return
    if out is not None:
        st = _stats(out)
        res["mining_seconds"] = st.get("mining_seconds")
        res["pairs"] = st.get("pairs")
        res["pairs_with_negative"] = (st.get("pairs") or 0) - (st.get("pairs_with_zero") or 0)
    else:
        rep = _json_out(res)
        res["mining_seconds"] = rep.get("mine_seconds")
        res["pairs"] = rep.get("pairs")
        res["pairs_with_negative"] = rep.get("pairs_with_negative")
        res["report"] = rep
    b.save()


def bench_mine_scifact(b: Bench, data: Path) -> None:
    vectors = b.work / "embed-fp32" / MODEL
    if not (vectors / "manifest.json").is_file():
        b.log("mine on SciFact skipped: no fp32 embed")
        return
    for tool, (cmd, out) in _mine_cmds(b, vectors, data, b.work).items():
        res = b.run(f"mine:scifact:{tool}", cmd, clean=out)
        _record_mine(b, res, out)
    cmd = [b.py, REPO / "bench" / "st_mine_compare.py", "--data", data, "--split", "train", "--num-negatives", 3]
    res = b.run("mine:scifact:st-end-to-end", [*cmd, "--model", f"pkg:{MODEL}"])
    if res["status"] == "ok" and "report" not in res:
        res["report"] = _json_out(res)
        b.save()
    b.report()


def bench_scale(b: Bench) -> None:
    from synth import make_synthetic

    stopped: set[str] = set()
    for n in b.args.sizes:
        root = b.work / f"synth-{n}"
        t0 = time.perf_counter()
        make_synthetic(root, n_docs=n, n_queries=b.args.queries, dim=384, seed=0)
        b.log(f"synthetic corpus {n} x 384 ready in {time.perf_counter() - t0:.0f} s")
        for tool, (cmd, out) in _mine_cmds(b, root / "vectors", root / "data", root).items():
            if tool not in b.args.tools:
                continue
            key = f"scale:{n}:{tool}"
            if tool in stopped:
                if key not in b.results["runs"]:
                    b.results["runs"][key] = {"status": "skipped", "reason": "an earlier size failed"}
                    b.save()
                continue
            res = b.run(key, cmd, clean=out, docs=n, queries=b.args.queries)
            _record_mine(b, res, out)
            if res["status"] != "ok":
                stopped.add(tool)
        if not b.args.keep_synthetic:
            # 1M x 384 float32 is 1.5 GB: keep the disk for the next size.
            shutil.rmtree(root / "vectors", ignore_errors=True)
            for sub in ("mine-exact", "mine-hnsw", "mine-topk3"):
                shutil.rmtree(root / sub, ignore_errors=True)
    b.report()


def bench_rerun(b: Bench, data: Path) -> None:
    """Every stage once more with unchanged inputs: the cost of an up-to-date no-op."""
    cfg = REPO / "configs" / "default.toml"
    w = b.work
    embed = w / "embed-fp32"
    if not (embed / "manifest.json").is_file() or not (w / "mine-topk3" / "manifest.json").is_file():
        b.log("rerun timings skipped: embed or mine missing")
        return
    # One small real reduce / train / eval to rerun (their first runs are set-up, not measurements).
    setup = [
        ("reduce", [b.hnm, "reduce", "--embeddings", embed, "--out", w / "rerun-reduce", "-q"]),
        (
            "train-reranker",
            [b.hnm, "train-reranker", "--mined", w / "mine-topk3", "--data", data, "--out", w / "rerun-train",
             "--kind", "cross-encoder", "--max-steps", 1, "--batch-size", 2, "--max-length", 64, "-q"],
        ),
        (
            "eval",
            [b.hnm, "eval", "--data", data, "--split", "test", "--first-stage", "dense", "--vectors", embed / MODEL,
             "--top-k", 5, "--max-length", 64, "--model", f"small={w / 'rerun-train'}", "--out", w / "rerun-eval", "-q"],
        ),
    ]  # fmt: skip
    cmds = {
        "embed": [b.hnm, "embed", "-c", cfg, "--data", data, "--model", MODEL, "--precision", "fp32", "--out", embed, "-q"],
        "mine": [b.hnm, "mine", "--vectors", embed / MODEL, "--data", data, "--split", "train", "--out", w / "mine-exact", "-q"],
    }  # fmt: skip
    for stage, cmd in setup:
        if b.measured(f"rerun:{stage}") is None:
            b.run(f"setup:{stage}", cmd)
            b.results["runs"].pop(f"setup:{stage}", None)  # set-up, not a measurement
        cmds[stage] = cmd
    for stage in ("embed", "reduce", "mine", "train-reranker", "eval"):
        # Without -q, so the "up to date" line shows on stderr.
        res = b.run(f"rerun:{stage}", [c for c in cmds[stage] if c != "-q"])
        res["up_to_date"] = "up to date" in res.get("stderr_tail", "") or res["seconds"] < 5
        b.save()
    b.report()


# ---------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------


def _f(x: Any, digits: int = 1) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def _ratio(a: Any, b: Any) -> str:
    return "-" if not a or not b else f"{a / b:.2f}x"


def render(b: Bench) -> str:
    r = b.results["runs"]
    info = b.results["machine"]
    a = b.args
    lines = [
        "## Speed and scale: hnm vs plain sentence-transformers",
        "",
        f"**Mode: {'QUICK (a 1000-doc sample, small synthetic sizes)' if a.quick else 'full'}.** Data `{a.data}`"
        + (f" sampled to `{a.data_used}`" if a.quick else "")
        + f"; model `{MODEL}` (max length 256, batch 64, fp32 unless stated).",
        "",
        f"- Machine: {machine_line(info)}. The machine was shared with other jobs while these ran (load average "
        "before each run in BENCHMARKS.json): compare ratios within a table rather than absolute times.",
        "- Each row is one fresh process under `/usr/bin/time -v` (wall seconds include Python start and imports; "
        f"peak RSS is the kernel's), timeout {a.timeout:.0f} s, memory cap {a.mem_limit_gib} GiB. `load`: the 1-minute "
        "load average just before the run (2 = both cores busy); timings taken at different loads do not compare.",
        "",
        "### Embedding: `hnm embed` vs `SentenceTransformer.encode`",
        "",
    ]
    rows = []
    fp32 = r.get("embed:hnm:fp32", {})
    base_rate = (fp32.get("stats") or {}).get("docs_per_s")
    for key, label in (
        ("embed:hnm:fp32", "hnm embed (fp32)"),
        ("embed:hnm:bf16", "hnm embed --precision bf16"),
        ("embed:st:sorted", "SentenceTransformer.encode, one call (length-sorted)"),
        ("embed:st:file", "SentenceTransformer.encode per batch, file order (unsorted)"),
    ):
        res = r.get(key)
        if not res:
            continue
        if key.startswith("embed:hnm"):
            st = res.get("stats") or {}
            texts, enc, rate = st.get("rows"), st.get("encode_seconds"), st.get("docs_per_s")
        else:
            rep = res.get("report") or _json_out(res)
            texts, enc, rate = rep.get("texts"), rep.get("encode_seconds"), rep.get("docs_per_s")
        rows.append(
            [label, res["status"], texts or "-", _f(enc), _f(rate), _ratio(rate, base_rate), _f(res.get("seconds")),
             _f(res.get("peak_rss_mib"), 0), _f(res.get("load_average_before"))]
        )  # fmt: skip
    if rows:
        lines += [
            markdown_table(
                ["run", "status", "texts", "encode s", "texts/s", "vs hnm fp32", "wall s", "peak RSS MiB", "load"], rows
            ),
            "",
        ]
    # Single runs repeated later under a different load: shown beside the table, never mixed into it, because
    # the table's ratios only hold between rows measured under the same conditions.
    for key, res in sorted((b.results.get("other_embed_runs") or {}).items()):
        st = res.get("stats") or {}
        lines += [
            f"Also measured, alone at load {_f(res.get('load_average_before'))}: `{key}` {res.get('status')}, "
            f"{_f(st.get('docs_per_s'))} texts/s, wall {_f(res.get('seconds'))} s, peak RSS "
            f"{_f(res.get('peak_rss_mib'), 0)} MiB (not comparable with the rows above).",
            "",
        ]
    ev = {p: r.get(f"eval:first-stage:{p}", {}) for p in ("fp32", "bf16")}
    if ev["fp32"].get("ndcg@10") is not None and ev["bf16"].get("ndcg@10") is not None:
        d = ev["bf16"]["ndcg@10"] - ev["fp32"]["ndcg@10"]
        lines += [
            f"bf16 vs fp32 first stage (dense top-100 of `{MODEL}` on the test split): nDCG@10 "
            f"{ev['fp32']['ndcg@10']:.4f} (fp32) vs {ev['bf16']['ndcg@10']:.4f} (bf16), difference {d:+.4f}; "
            f"MRR@10 {_f(ev['fp32'].get('mrr@10'), 4)} vs {_f(ev['bf16'].get('mrr@10'), 4)}.",
            "",
        ]
    lines += ["### Mining on the real data (vectors already computed)", ""]
    rows = []
    for tool, label in TOOL_LABELS.items():
        res = r.get(f"mine:scifact:{tool}")
        if res:
            rows.append(
                [label, res["status"], _f(res.get("mining_seconds"), 2), _f(res.get("seconds")),
                 _f(res.get("peak_rss_mib"), 0), f"{res.get('pairs_with_negative', '-')}/{res.get('pairs', '-')}",
                 _f(res.get("load_average_before"))]
            )  # fmt: skip
    e2e = r.get("mine:scifact:st-end-to-end")
    if e2e:
        rep = e2e.get("report") or _json_out(e2e)
        rows.append(
            ["sentence-transformers end to end (its own encoding included)", e2e["status"],
             _f(rep.get("seconds_mine_incl_embedding"), 2), _f(e2e.get("seconds")), _f(e2e.get("peak_rss_mib"), 0),
             f"{rep.get('pairs_with_negative', '-')}/{rep.get('distinct_pairs', '-')}",
             _f(e2e.get("load_average_before"))]
        )  # fmt: skip
    if rows:
        lines += [
            markdown_table(
                ["tool", "status", "mining s", "wall s", "peak RSS MiB", "pairs with >= 1 negative", "load"], rows
            ),
            "",
            "mining s: the tool's own timing of search + selection (hnm: `stats.mining_seconds` of the manifest, "
            "reading the data included; sentence-transformers: the `mine_hard_negatives` call). The rule leaves "
            "pairs whose positive is the query's nearest document without a negative by design.",
            "",
        ]
    lines += [f"### Scale: synthetic corpora (dim 384, {a.queries} queries, one positive each)", ""]
    rows = []
    for n in a.sizes:
        for tool in SCALE_TOOLS:
            res = r.get(f"scale:{n}:{tool}")
            if not res:
                continue
            rows.append(
                [f"{n:,}", TOOL_LABELS[tool], res["status"], _f(res.get("mining_seconds"), 1), _f(res.get("seconds")),
                 _f(res.get("peak_rss_mib"), 0),
                 f"{res.get('pairs_with_negative', '-')}/{res.get('pairs', '-')}" if res["status"] == "ok" else "-",
                 _f(res.get("load_average_before"))]
            )  # fmt: skip
    if rows:
        lines += [
            markdown_table(
                ["docs", "tool", "status", "mining s", "wall s", "peak RSS MiB", "pairs with neg.", "load"], rows
            ),
            "",
            "status `memory`: killed at the memory cap; `timeout`: killed at the time limit; `skipped`: the "
            "tool already failed at a smaller size. Synthetic vectors: `bench/synth.py` (clusters of 100 "
            "documents; each query near its positive's cluster).",
            "",
        ]
    rows = []
    for stage in ("embed", "reduce", "mine", "train-reranker", "eval"):
        res = r.get(f"rerun:{stage}")
        if res:
            rows.append(
                [stage, res["status"], _f(res.get("seconds"), 2), "yes" if res.get("up_to_date") else "no",
                 _f(res.get("load_average_before"))]
            )  # fmt: skip
    if rows:
        lines += [
            "### Rerun with everything up to date",
            "",
            markdown_table(["stage", "status", "wall s", "up to date", "load"], rows),
            "",
        ]
    cmd = "make bench-speed" + (" QUICK=1" if a.quick else "")
    lines += [
        f"Command: `{cmd}` (i.e. `.venv/bin/python bench/speed.py --data {a.data}{' --quick' if a.quick else ''}`); "
        f"every measured command line is in BENCHMARKS.json (`speed.runs.*.command`) and `{_rel(b.work)}/bench.log`.",
        "",
    ]
    return "\n".join(lines)


def _rel(p: Path) -> str:
    try:
        return str(Path(p).resolve().relative_to(REPO))
    except ValueError:
        return str(p)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], epilog=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "scifact")
    ap.add_argument("--work", type=Path, default=None)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument(
        "--sizes", default=None, help="synthetic corpus sizes, comma-separated (default 100000,300000,1000000)"
    )
    ap.add_argument("--queries", type=int, default=None, help="synthetic queries (default 10000; quick 2000)")
    ap.add_argument("--tools", default=",".join(SCALE_TOOLS), help="scale tools: " + ",".join(SCALE_TOOLS))
    ap.add_argument("--parts", default="embed,mine,scale,rerun", help="which measurements: embed,mine,scale,rerun")
    ap.add_argument("--timeout", type=float, default=1800.0, help="seconds per measured run")
    ap.add_argument("--mem-limit-gib", type=float, default=12.0, help="kill a run above this RSS")
    ap.add_argument("--keep-synthetic", action="store_true", help="keep the synthetic vectors after each size")
    ap.add_argument("--remeasure", action="store_true", help="measure again what results.json already holds")
    ap.add_argument("--report-only", action="store_true", help="only rewrite the report from results.json")
    ap.add_argument("--md", type=Path, default=REPO / "BENCHMARKS.md")
    ap.add_argument("--json", type=Path, default=REPO / "BENCHMARKS.json")
    a = ap.parse_args(argv)
    a.data = a.data.resolve()
    a.work = (a.work or REPO / "runs" / "bench" / ("speed-quick" if a.quick else "speed")).resolve()
    a.sizes = [int(x) for x in (a.sizes or ("20000,50000" if a.quick else "100000,300000,1000000")).split(",")]
    a.queries = a.queries or (2000 if a.quick else 10_000)
    a.tools = tuple(t.strip() for t in a.tools.split(","))
    a.parts = tuple(p.strip() for p in a.parts.split(","))
    a.md, a.json = a.md.resolve(), a.json.resolve()
    return a


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    a.data_used = a.data
    if a.quick:
        a.data_used = a.work / "data"
        sample_beir(a.data, a.data_used, n_docs=1000, n_train=200, n_test=100, seed=0)
    b = Bench(a)
    if a.report_only:
        b.report()
        return 0
    b.log(f"bench-speed: data {a.data_used}, parts {','.join(a.parts)}, sizes {a.sizes}")
    if "embed" in a.parts:
        bench_embed(b, a.data_used)
    if "mine" in a.parts:
        bench_mine_scifact(b, a.data_used)
    if "scale" in a.parts:
        bench_scale(b)
    if "rerun" in a.parts:
        bench_rerun(b, a.data_used)
    b.report()
    b.log("bench-speed: done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
