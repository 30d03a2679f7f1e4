"""Nightly-update benchmark: the incremental path (embedding cache, `reduce --fit-from`, `mine --update`) against a
full recomputation, after adding 1% new documents and 1% new training queries, in one run on one machine.

    make bench-incremental                              # SciFact (SPEED_DATA), MiniLM
    .venv/bin/python bench/incremental.py --data examples/cloud-docs --model hash:16 --work /tmp/inc \\
        --md /tmp/inc/B.md --json /tmp/inc/B.json       # a smoke test in seconds

"Yesterday" is the data with a seeded 1% of the documents (never a positive) and 1% of the training queries held
back; it is embedded, reduced and mined once (not timed: that is the job that already ran). "Today" is the full
data. Two ways to bring the artifacts up to date are then timed, each stage a fresh `hnm` process:

- **incremental**: `embed` into yesterday's `--out` (its cache answers every unchanged text), `reduce --fit-from`
  yesterday's fit, `mine --update` yesterday's rows;
- **full**: `embed` into a new folder (no cache), `reduce --fit-from` the same fit (so both mine in one space and
  their rows can be compared; a refit costs the same second), `mine` from scratch.

Checks: the incremental rows equal a cold `mine` over the incremental vectors byte for byte (what `--update`
promises), and, against the full path, the largest vector difference and how many rows differ (float noise from
batch composition in a neural encoder; zero with `hash:`). Output: the "incremental" section of BENCHMARKS.md and
the same key of BENCHMARKS.json.
"""

from __future__ import annotations

import argparse
import random
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import REPO, Log, hnm_bin, machine_info, machine_line, markdown_table, measure, update_bench_files  # noqa: E402

STAGES = ("embed", "reduce", "mine")


def _jsonl(path: Path) -> list[bytes]:
    return [line for line in path.read_bytes().splitlines() if line.strip()]


def yesterday(src: Path, dst: Path, *, fraction: float, split: str, seed: int) -> dict[str, Any]:
    """Write `dst`: `src` without a seeded `fraction` of its documents (never a positive) and of its `split` queries."""
    rng = random.Random(seed)
    qrels_lines = (src / "qrels" / f"{split}.tsv").read_text(encoding="utf-8").splitlines()
    body = [line for line in qrels_lines[1:] if line.strip()]
    positives = {line.split("\t")[1] for f in (src / "qrels").glob("*.tsv") for line in f.read_text().splitlines()[1:]}
    docs = _jsonl(src / "corpus.jsonl")
    doc_ids = [orjson.loads(d)["_id"] for d in docs]
    held_docs = set(rng.sample([d for d in doc_ids if d not in positives], max(1, round(fraction * len(doc_ids)))))
    train_q = sorted({line.split("\t")[0] for line in body})
    held_q = set(rng.sample(train_q, max(1, round(fraction * len(train_q)))))
    other_splits = {line.split("\t")[0] for f in (src / "qrels").glob("*.tsv") if f.stem != split
                    for line in f.read_text().splitlines()[1:]}  # fmt: skip
    held_q -= other_splits  # a query of another split stays: only new training queries arrive
    (dst / "qrels").mkdir(parents=True, exist_ok=True)
    keep_docs = [d for d, i in zip(docs, doc_ids, strict=True) if i not in held_docs]
    (dst / "corpus.jsonl").write_bytes(b"\n".join(keep_docs) + b"\n")
    queries = [q for q in _jsonl(src / "queries.jsonl") if orjson.loads(q)["_id"] not in held_q]
    (dst / "queries.jsonl").write_bytes(b"\n".join(queries) + b"\n")
    for f in (src / "qrels").glob("*.tsv"):
        lines = f.read_text(encoding="utf-8").splitlines()
        kept = [lines[0], *(line for line in lines[1:] if line.strip() and line.split("\t")[0] not in held_q)]
        (dst / "qrels" / f.name).write_text("\n".join(kept) + "\n", encoding="utf-8")
    return {"docs": len(doc_ids), "new_docs": len(held_docs), "train_queries": len(train_q), "new_queries": len(held_q)}


def _rows(mine: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(mine.glob("rows-*.jsonl")))


def _row_diff(a: Path, b: Path) -> int:
    left = {(r["query_id"], r["positive_id"]): r["negatives"] for r in map(orjson.loads, _rows(a).splitlines())}
    right = {(r["query_id"], r["positive_id"]): r["negatives"] for r in map(orjson.loads, _rows(b).splitlines())}
    ids = lambda negs: [n["doc_id"] for n in negs]  # noqa: E731
    return sum(ids(left.get(k, [])) != ids(right.get(k, [])) for k in {*left, *right})


def _vectors(embed: Path, model: str, kind: str) -> dict[str, np.ndarray]:
    from hnm_cli.artifacts.vectors import load_vectors

    ids, vecs = load_vectors(embed / model / kind)
    return dict(zip(ids, vecs, strict=True))


def _model_folder(embed: Path) -> str:
    return str(orjson.loads((embed / "manifest.json").read_bytes())["stats"]["model_names"][0])


def run(a: argparse.Namespace) -> dict[str, Any]:
    log = Log(a.work / "bench.log")
    hnm = hnm_bin()
    if a.work.exists() and not a.keep:
        shutil.rmtree(a.work)
    a.work.mkdir(parents=True, exist_ok=True)
    before = a.work / "data-yesterday"
    summary = yesterday(a.data, before, fraction=a.fraction, split=a.split, seed=a.seed)
    log(f"yesterday: {summary}")
    cfg = ["-c", REPO / "configs" / "default.toml"]
    mine_args = ["--split", a.split, "-q", *a.mine_args.split()]

    def cmd(stage: str, *args: Any) -> list[str]:
        return [str(x) for x in (hnm, stage, *cfg, *args)]

    def timed(key: str, args: list[str]) -> dict[str, Any]:
        res = measure(args, timeout=a.timeout, log=log)
        res.pop("stdout", None)
        if res["status"] != "ok":
            raise SystemExit(f"{key} failed: {res['stderr_tail'][-600:]}")
        return res

    w = a.work
    # yesterday's job (kept as the state the night starts from)
    timed("setup", cmd("embed", "--data", before, "--model", a.model, "--out", w / "embed", "-q"))
    timed("setup", cmd("reduce", "--embeddings", w / "embed", "--out", w / "fit", "-q"))
    timed("setup", cmd("mine", "--vectors", w / "fit", "--data", before, "--out", w / "mine", *mine_args))
    shutil.copytree(w / "mine", w / "mine-yesterday")
    runs: dict[str, dict[str, Any]] = {}
    runs["incremental:embed"] = timed(
        "", cmd("embed", "--data", a.data, "--model", a.model, "--out", w / "embed", "-q")
    )
    runs["incremental:reduce"] = timed("", cmd("reduce", "--embeddings", w / "embed", "--fit-from", w / "fit",
                                               "--out", w / "reduce", "-q"))  # fmt: skip
    runs["incremental:mine"] = timed("", cmd("mine", "--vectors", w / "reduce", "--data", a.data, "--out", w / "mine",
                                             "--update", w / "mine", *mine_args))  # fmt: skip
    runs["full:embed"] = timed("", cmd("embed", "--data", a.data, "--model", a.model, "--out", w / "embed-full", "-q"))
    runs["full:reduce"] = timed("", cmd("reduce", "--embeddings", w / "embed-full", "--fit-from", w / "fit",
                                        "--out", w / "reduce-full", "-q"))  # fmt: skip
    runs["full:mine"] = timed("", cmd("mine", "--vectors", w / "reduce-full", "--data", a.data,
                                      "--out", w / "mine-full", *mine_args))  # fmt: skip
    # the update's promise: the rows a cold mine gives over the same (incremental) vectors
    timed("check", cmd("mine", "--vectors", w / "reduce", "--data", a.data, "--out", w / "mine-cold", *mine_args))
    model = _model_folder(w / "embed")
    diffs = []
    for kind in ("corpus", "queries"):
        inc, full = _vectors(w / "embed", model, kind), _vectors(w / "embed-full", model, kind)
        assert inc.keys() == full.keys(), f"{kind}: incremental and full embed hold other ids"
        diffs.append(max(float(np.max(np.abs(inc[k].astype(np.float64) - full[k]))) for k in inc))
    emb = orjson.loads((w / "embed" / model / "manifest.json").read_bytes())["stats"]
    upd = orjson.loads((w / "mine" / "stats.json").read_bytes()).get("update", {})
    totals = {p: sum(runs[f"{p}:{s}"]["seconds"] for s in STAGES) for p in ("incremental", "full")}
    return {
        "machine": machine_info(),
        "data": str(a.data),
        "model": a.model,
        "mine_args": a.mine_args,
        "edit": summary,
        "runs": runs,
        "totals": totals,
        "speedup": round(totals["full"] / totals["incremental"], 1),
        "rows_identical_to_cold_mine": _rows(w / "mine") == _rows(w / "mine-cold"),
        "rows_differing_from_full_path": _row_diff(w / "mine", w / "mine-full"),
        "pairs": int(orjson.loads((w / "mine" / "stats.json").read_bytes())["pairs"]),
        "max_abs_vector_diff": max(diffs),
        "embed_cache": {k: v for k, v in emb.items() if "cache" in k or k.startswith("rows")},
        "update": upd,
    }


def render(r: dict[str, Any], a: argparse.Namespace) -> str:
    e = r["edit"]
    rows = [[s, f"{r['runs'][f'incremental:{s}']['seconds']:.1f}", f"{r['runs'][f'full:{s}']['seconds']:.1f}",
             f"{r['runs'][f'full:{s}']['seconds'] / max(r['runs'][f'incremental:{s}']['seconds'], 1e-9):.1f}x"]
            for s in STAGES]  # fmt: skip
    rows.append(
        ["**total**", f"{r['totals']['incremental']:.1f}", f"{r['totals']['full']:.1f}", f"**{r['speedup']}x**"]
    )
    u = r["update"]
    verdict = "met" if r["speedup"] >= 20 else "**missed**"
    return "\n".join([
        "## Nightly updates: incremental vs full recomputation",
        "",
        machine_line(r["machine"]),
        "",
        f"`{Path(r['data']).name}` with `{r['model']}`: {e['new_docs']} new documents ({e['new_docs'] / e['docs']:.1%}"
        f" of {e['docs']}) and {e['new_queries']} new training queries ({e['new_queries'] / e['train_queries']:.1%})"
        f" since yesterday's run; mine options `{r['mine_args'] or '(defaults)'}`. Wall seconds of each `hnm` "
        "process (model loading included).",
        "",
        markdown_table(["stage", "incremental s", "full s", "full / incremental"], rows),
        "",
        f"Target 20x: {verdict}. Embed took {r['embed_cache'].get('rows_from_cache', '-')} of the "
        f"{r['embed_cache'].get('rows', '-')} texts of the shards it rewrote from its cache; mine re-mined {u.get('pairs_remined', '-')} and reused "
        f"{u.get('pairs_reused', '-')} of {r['pairs']} pairs. Incremental rows equal a cold mine over the same "
        f"vectors byte for byte: {'yes' if r['rows_identical_to_cold_mine'] else '**no**'}. Against the full path "
        f"(every text encoded afresh) the largest vector difference is {r['max_abs_vector_diff']:.2e} (batch "
        f"composition changes a neural encoder's float rounding) and {r['rows_differing_from_full_path']} of "
        f"{r['pairs']} rows pick other negatives.",
        "",
        f"Command: `.venv/bin/python bench/incremental.py --data {a.data} --model {a.model}` (`make bench-incremental`);"
        " every command line is in BENCHMARKS.json (`incremental.runs.*.command`).",
        "",
    ])  # fmt: skip


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], epilog=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "scifact")
    ap.add_argument("--model", default="all-MiniLM-L6-v2", help="a model of configs/default.toml, or any --model spec")
    ap.add_argument("--split", default="train", help="the mined split; its queries are the ones that grow")
    ap.add_argument("--fraction", type=float, default=0.01, help="share of documents and queries that are new")
    ap.add_argument("--mine-args", default="", help="extra mine options, e.g. '--strategy random'")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", type=Path, default=None)
    ap.add_argument("--keep", action="store_true", help="keep --work from an earlier run (default: start afresh)")
    ap.add_argument("--timeout", type=float, default=3600.0, help="seconds per measured run")
    ap.add_argument("--md", type=Path, default=REPO / "BENCHMARKS.md")
    ap.add_argument("--json", type=Path, default=REPO / "BENCHMARKS.json")
    a = ap.parse_args(argv)
    a.data, a.md, a.json = a.data.resolve(), a.md.resolve(), a.json.resolve()
    a.work = (a.work or REPO / "runs" / "bench" / "incremental").resolve()
    return a


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    result = run(a)
    update_bench_files(a.md, a.json, "incremental", render(result, a), result)
    print(orjson.dumps({k: result[k] for k in ("totals", "speedup", "rows_identical_to_cold_mine")}).decode())
    return 0 if result["rows_identical_to_cold_mine"] else 1


if __name__ == "__main__":
    sys.exit(main())
