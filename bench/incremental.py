"""Nightly-update benchmark: what a cron job pays to bring embed, reduce and mine up to date after a small edit of
the data (the embedding cache, `reduce --fit-from`, `mine --update`), against a full recomputation.

    make bench-incremental                              # SciFact and ops-man, the default config's ensemble
    .venv/bin/python bench/incremental.py --data ../shared/data/scifact --model pkg:all-MiniLM-L6-v2   # one model
    .venv/bin/python bench/incremental.py --data examples/cloud-docs --model hash:16 --work /tmp/inc \\
        --md /tmp/inc/B.md --json /tmp/inc/B.json       # a smoke test in seconds

Per dataset, three nights in a row, each a seeded `--fraction` (1%) of the data, as a cron job sees them:

- **new**: documents (never a positive) and training queries that yesterday's data held back arrive;
- **change**: documents' texts change (any document, positives included);
- **delete**: documents (never a positive) are removed.

"Yesterday" (the data before the first night) is embedded, reduced and mined once, not timed: that is the job that
already ran. Each night then runs, each stage a fresh `hnm` process, **incremental**: `embed` into the same
`--out` (its cache answers every unchanged text), `reduce --fit-from` yesterday's fit, `mine --update` the rows
of the night before, in place. The **full** path is timed once, on the first night's data (the three nights differ
by 1% in size): `embed` into a new folder (no cache), `reduce --fit-from` the same fit (so both mine in one
space), `mine` from scratch. The **fixed cost** no update avoids is measured apart: process start (`hnm --help`)
and model load (`embed` of one document and one query with the same models, minus the process start).

Checks, every night: the incremental rows equal a cold `mine` over the same vectors byte for byte (what `--update`
promises). Once: against the full path, the largest difference of the fused vectors and how many rows pick other
negatives (float noise from batch composition in a neural encoder; zero with `hash:`). Output: the
"incremental" section of BENCHMARKS.md and the same key of BENCHMARKS.json.

Each finished dataset is kept as a small committed file, `bench/results/incremental/<dataset>.json` (`--results`),
with every setting that shapes it (models, the default config's embed, reduce and mine sections, mine options,
fraction, seed, split) and the machine it ran on. A rerun reads a dataset back from its file while those settings
hold and measures only the others, so the two datasets may be measured in two sessions (each alone on its machine:
these are timings).
"""

from __future__ import annotations

import argparse
import hashlib
import random
import shutil
import sys
import tomllib
from pathlib import Path
from typing import Any

import numpy as np
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))

from cells import RESULTS_ROOT, load_cell, save_record  # noqa: E402
from common import REPO, Log, hnm_bin, machine_info, machine_line, markdown_table, measure, update_bench_files  # noqa: E402

STAGES = ("embed", "reduce", "mine")
EDITS = ("new", "change", "delete")
# Appended to a changed document's text: a real edit of a sentence, so its vectors move.
CHANGED = " (Revised: this passage was edited since the last run.)"


def _jsonl(path: Path) -> list[bytes]:
    return [line for line in path.read_bytes().splitlines() if line.strip()]


def _positives(src: Path) -> set[str]:
    return {line.split("\t")[1] for f in (src / "qrels").glob("*.tsv") for line in f.read_text().splitlines()[1:]
            if line.strip()}  # fmt: skip


def _copy_queries_and_qrels(src: Path, dst: Path) -> None:
    (dst / "qrels").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src / "queries.jsonl", dst / "queries.jsonl")
    for f in (src / "qrels").glob("*.tsv"):
        shutil.copyfile(f, dst / "qrels" / f.name)


def _sample(ids: list[str], fraction: float, of: int, rng: random.Random) -> set[str]:
    """A seeded `fraction` of `of` items (at least one), drawn from `ids` (as many as it holds)."""
    return set(rng.sample(ids, min(len(ids), max(1, round(fraction * of))))) if ids else set()


def yesterday(src: Path, dst: Path, *, fraction: float, split: str, seed: int) -> dict[str, Any]:
    """Write `dst`: `src` without a seeded `fraction` of its documents (never a positive) and of its `split` queries."""
    rng = random.Random(seed)
    qrels_lines = (src / "qrels" / f"{split}.tsv").read_text(encoding="utf-8").splitlines()
    body = [line for line in qrels_lines[1:] if line.strip()]
    positives = _positives(src)
    docs = _jsonl(src / "corpus.jsonl")
    doc_ids = [orjson.loads(d)["_id"] for d in docs]
    held_docs = _sample([d for d in doc_ids if d not in positives], fraction, len(doc_ids), rng)
    train_q = sorted({line.split("\t")[0] for line in body})
    held_q = _sample(train_q, fraction, len(train_q), rng)
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


def changed(src: Path, dst: Path, *, fraction: float, seed: int) -> dict[str, Any]:
    """Write `dst`: `src` with the texts of a seeded `fraction` of its documents (any of them) edited."""
    rng = random.Random(seed + 1)
    docs = [orjson.loads(d) for d in _jsonl(src / "corpus.jsonl")]
    edit = _sample([d["_id"] for d in docs], fraction, len(docs), rng)
    for d in docs:
        if d["_id"] in edit:
            d["text"] = d.get("text", "") + CHANGED
    (dst / "corpus.jsonl").parent.mkdir(parents=True, exist_ok=True)
    (dst / "corpus.jsonl").write_bytes(b"".join(orjson.dumps(d) + b"\n" for d in docs))
    _copy_queries_and_qrels(src, dst)
    return {"docs": len(docs), "changed_docs": len(edit)}


def deleted(src: Path, dst: Path, *, fraction: float, seed: int) -> dict[str, Any]:
    """Write `dst`: `src` without a seeded `fraction` of its documents (never a positive: qrels stay valid)."""
    rng = random.Random(seed + 2)
    docs = _jsonl(src / "corpus.jsonl")
    doc_ids = [orjson.loads(d)["_id"] for d in docs]
    positives = _positives(src)
    gone = _sample([d for d in doc_ids if d not in positives], fraction, len(doc_ids), rng)
    (dst / "corpus.jsonl").parent.mkdir(parents=True, exist_ok=True)
    (dst / "corpus.jsonl").write_bytes(
        b"\n".join(d for d, i in zip(docs, doc_ids, strict=True) if i not in gone) + b"\n"
    )
    _copy_queries_and_qrels(src, dst)
    return {"docs": len(doc_ids), "deleted_docs": len(gone)}


def _rows(mine: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(mine.glob("rows-*.jsonl")))


def _row_diff(a: Path, b: Path) -> int:
    left = {(r["query_id"], r["positive_id"]): r["negatives"] for r in map(orjson.loads, _rows(a).splitlines())}
    right = {(r["query_id"], r["positive_id"]): r["negatives"] for r in map(orjson.loads, _rows(b).splitlines())}
    ids = lambda negs: [n["doc_id"] for n in negs]  # noqa: E731
    return sum(ids(left.get(k, [])) != ids(right.get(k, [])) for k in {*left, *right})


def _vectors(vector_set: Path, kind: str) -> dict[str, np.ndarray]:
    from hnm_cli.artifacts.vectors import load_vectors

    ids, vecs = load_vectors(vector_set / kind)
    return dict(zip(ids, vecs, strict=True))


def _max_vector_diff(a: Path, b: Path) -> float:
    """Largest absolute difference between two vector sets over the same ids (fused vectors: every model at once)."""
    diffs = []
    for kind in ("corpus", "queries"):
        left, right = _vectors(a, kind), _vectors(b, kind)
        assert left.keys() == right.keys(), f"{kind}: {a} and {b} hold other ids"
        diffs.append(max(float(np.max(np.abs(left[k].astype(np.float64) - right[k]))) for k in left))
    return max(diffs)


def speedups(runs: dict[str, dict[str, Any]], full: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Per stage and in total: incremental seconds, full seconds and full / incremental."""
    out: dict[str, Any] = {}
    for stage in (*STAGES, "total"):
        inc = sum(runs[s]["seconds"] for s in STAGES) if stage == "total" else runs[stage]["seconds"]
        ful = sum(full[s]["seconds"] for s in STAGES) if stage == "total" else full[stage]["seconds"]
        out[stage] = {"incremental": round(inc, 2), "full": round(ful, 2), "speedup": round(ful / max(inc, 1e-9), 1)}
    return out


def reuse_share(update: dict[str, Any]) -> float:
    """Share of the pairs the update reused (0 when it recomputed every pair)."""
    pairs = int(update.get("pairs_reused", 0)) + int(update.get("pairs_remined", 0))
    return int(update.get("pairs_reused", 0)) / pairs if pairs else 0.0


def _tiny_data(src: Path, dst: Path) -> Path:
    """One document and one query of `src`: an embed of it costs process start, model load and two texts."""
    (dst / "qrels").mkdir(parents=True, exist_ok=True)
    (dst / "corpus.jsonl").write_bytes(_jsonl(src / "corpus.jsonl")[0] + b"\n")
    (dst / "queries.jsonl").write_bytes(_jsonl(src / "queries.jsonl")[0] + b"\n")
    return dst


def run_dataset(a: argparse.Namespace, data: Path, log: Log) -> dict[str, Any]:
    hnm = hnm_bin()
    w = a.work / data.name
    if w.exists():
        shutil.rmtree(w)
    w.mkdir(parents=True)
    days = {"yesterday": w / "data-yesterday", "new": data, "change": w / "data-changed", "delete": w / "data-deleted"}
    edits = {"new": yesterday(data, days["yesterday"], fraction=a.fraction, split=a.split, seed=a.seed)}
    edits["change"] = changed(data, days["change"], fraction=a.fraction, seed=a.seed)
    edits["delete"] = deleted(days["change"], days["delete"], fraction=a.fraction, seed=a.seed)
    log(f"{data.name}: {edits}")
    cfg = ["-c", REPO / "configs" / "default.toml"]
    models = [x for m in a.model for x in ("--model", m)]
    mine_args = ["--split", a.split, "-q", *a.mine_args.split()]

    def cmd(stage: str, *args: Any) -> list[str]:
        return [str(x) for x in (hnm, stage, *cfg, *args)]

    def timed(key: str, args: list[str]) -> dict[str, Any]:
        res = measure(args, timeout=a.timeout, log=log)
        res.pop("stdout", None)
        if res["status"] != "ok":
            raise SystemExit(f"{data.name} {key} failed: {res['stderr_tail'][-600:]}")
        return res

    def embed(src: Path, out: Path) -> list[str]:
        return cmd("embed", "--data", src, *models, "--out", out, "-q")

    # yesterday's job (kept as the state the first night starts from)
    timed("setup", embed(days["yesterday"], w / "embed"))
    timed("setup", cmd("reduce", "--embeddings", w / "embed", "--out", w / "fit", "-q"))
    timed("setup", cmd("mine", "--vectors", w / "fit", "--data", days["yesterday"], "--out", w / "mine", *mine_args))
    shutil.copytree(w / "mine", w / "mine-yesterday")  # kept to compare recorded distances with when one drifts
    nights: dict[str, Any] = {}
    for edit in EDITS:
        today = days[edit]
        runs = {
            "embed": timed(edit, embed(today, w / "embed")),
            "reduce": timed(edit, cmd("reduce", "--embeddings", w / "embed", "--fit-from", w / "fit",
                                      "--out", w / f"reduce-{edit}", "-q")),
            "mine": timed(edit, cmd("mine", "--vectors", w / f"reduce-{edit}", "--data", today, "--out", w / "mine",
                                    "--update", w / "mine", *mine_args)),
        }  # fmt: skip
        # the update's promise: the rows a cold mine gives over the same vectors
        timed("check", cmd("mine", "--vectors", w / f"reduce-{edit}", "--data", today, "--out",
                           w / f"mine-cold-{edit}", *mine_args))  # fmt: skip
        stats = orjson.loads((w / "mine" / "stats.json").read_bytes())
        emb = orjson.loads((w / "embed" / "manifest.json").read_bytes())["stats"]
        nights[edit] = {
            "edit": edits[edit],
            "runs": runs,
            "rows_identical_to_cold_mine": _rows(w / "mine") == _rows(w / f"mine-cold-{edit}"),
            "pairs": int(stats["pairs"]),
            "update": stats.get("update", {}),
            "embed_rows": sum(int(m.get("rows", 0)) for m in emb["models"].values()),
            "embed_rows_from_cache": sum(int(m.get("rows_from_cache", 0)) for m in emb["models"].values()),
            "model_load_seconds": round(sum(float(m.get("load_seconds", 0.0)) for m in emb["models"].values()), 2),
        }
        shutil.copytree(w / "mine", w / f"mine-after-{edit}")
    full = {
        "embed": timed("full", embed(days["new"], w / "embed-full")),
        "reduce": timed("full", cmd("reduce", "--embeddings", w / "embed-full", "--fit-from", w / "fit",
                                    "--out", w / "reduce-full", "-q")),
        "mine": timed("full", cmd("mine", "--vectors", w / "reduce-full", "--data", days["new"],
                                  "--out", w / "mine-full", *mine_args)),
    }  # fmt: skip
    for edit in EDITS:
        nights[edit]["stages"] = speedups(nights[edit]["runs"], full)
    start = timed("fixed", [hnm, "--help"])
    load = timed("fixed", embed(_tiny_data(data, w / "data-tiny"), w / "embed-tiny"))
    return {
        "data": str(data),
        "nights": nights,
        "full": full,
        "fixed": {
            "process_start": round(start["seconds"], 2),
            "model_load": round(max(load["seconds"] - start["seconds"], 0.0), 2),
        },  # fmt: skip
        "max_abs_vector_diff_vs_full": _max_vector_diff(w / "reduce-new", w / "reduce-full"),
        "rows_differing_from_full_path": _row_diff(w / "mine-after-new", w / "mine-full"),
    }


def config_digest(config: Path) -> str:
    """The digest of the config sections this bench runs (embed, reduce, mine), parsed: a comment or another
    stage's setting (train_reranker, eval) does not make a night's numbers stale."""
    table = tomllib.loads(config.read_text(encoding="utf-8"))
    shaping = {k: table[k] for k in ("embed", "reduce", "mine") if k in table}
    return hashlib.sha256(orjson.dumps(shaping, option=orjson.OPT_SORT_KEYS)).hexdigest()[:16]


def dataset_identity(a: argparse.Namespace, data: Path) -> dict[str, Any]:
    """Every setting that shapes one dataset's numbers: change any and the dataset is measured again."""
    return {
        "dataset": data.name,
        "models": list(a.model) or "config",
        "default_config_sections_sha256": config_digest(REPO / "configs" / "default.toml"),
        "mine_args": a.mine_args,
        "fraction": a.fraction,
        "seed": a.seed,
        "split": a.split,
    }


def run(a: argparse.Namespace) -> dict[str, Any]:
    if a.work.exists() and not a.keep:
        shutil.rmtree(a.work)
    a.work.mkdir(parents=True, exist_ok=True)
    log = Log(a.work / "bench.log")
    datasets: dict[str, Any] = {}
    for data in a.data:
        ident = dataset_identity(a, data)
        path = a.results / f"{data.name}.json" if a.results else None
        kept = load_cell(path, ident) if path else None
        if kept is not None:
            log(f"{data.name}: kept in {path} (same settings, measured {kept['machine'].get('date')}), skipped")
            datasets[data.name] = kept
            continue
        machine = machine_info()  # per dataset: the load and the date at its own start
        result = run_dataset(a, data, log)
        datasets[data.name] = save_record(path, ident, result, machine) if path else {"machine": machine, **result}
    return {
        "models": a.model or ["(configs/default.toml)"],
        "mine_args": a.mine_args,
        "fraction": a.fraction,
        "datasets": datasets,
    }


def _update_line(u: dict[str, Any]) -> str:
    if u.get("recomputed_in_full"):
        return f"all mined again ({u['recomputed_in_full']})"
    line = (f"{u.get('pairs_reused', 0)} reused / {u.get('pairs_remined', 0)} mined again ({u.get('pairs_new', 0)} new,"
            f" {u.get('pairs_inputs_changed', 0)} changed inputs, {u.get('pairs_drifted', 0)} drift")  # fmt: skip
    # top-k mines a query whole: a sibling pair changed, or its short list lost a document (the next pick may lie below)
    with_query = int(u.get("pairs_remined_with_their_query", 0))
    return line + (f", {with_query} with their query)" if with_query else ")")


def render(r: dict[str, Any], a: argparse.Namespace) -> str:
    models = ", ".join(f"`{m}`" for m in r["models"])
    lines = [
        "## Nightly updates: incremental vs full recomputation",
        "",
        f"Models: {models}; mine options `{r['mine_args'] or '(defaults)'}`. Three nights in a row, each "
        f"{r['fraction']:.0%} of the data: **new** documents and training queries, **change**d document texts, "
        "**delete**d documents. Wall seconds of each `hnm` process (process start and model load included); the "
        "full path is timed once, on the first night's data.",
        "",
    ]
    for name, d in r["datasets"].items():
        rows = []
        for edit in EDITS:
            n = d["nights"][edit]
            st = n["stages"]
            rows.append([edit, *(f"{st[s]['incremental']:.1f}" for s in STAGES), f"**{st['total']['incremental']:.1f}**",
                         f"{st['total']['full']:.1f}", f"**{st['total']['speedup']}x**",
                         f"{reuse_share(n['update']):.1%}", _update_line(n["update"]),
                         "yes" if n["rows_identical_to_cold_mine"] else "**no**"])  # fmt: skip
        full = d["full"]
        rows.append(["full", *(f"{full[s]['seconds']:.1f}" for s in STAGES),
                     f"{sum(full[s]['seconds'] for s in STAGES):.1f}", "", "", "", "", ""])  # fmt: skip
        e = d["nights"]["new"]["edit"]
        lines += [
            f"### `{name}` ({e['docs']} documents, {d['nights']['new']['pairs']} mined pairs)",
            "",
            machine_line(d["machine"]),
            "",
            markdown_table(
                [
                    "night",
                    "embed s",
                    "reduce s",
                    "mine s",
                    "total s",
                    "full s",
                    "full / incr.",
                    "pairs reused",
                    "mine --update",
                    "rows = cold mine",
                ],
                rows,
            ),  # fmt: skip
            "",
            f"Fixed cost no update avoids: process start {d['fixed']['process_start']:.1f} s per `hnm` process "
            f"(three per night), model load {d['fixed']['model_load']:.1f} s. Against the full path (every text "
            f"encoded afresh) the fused vectors differ by at most {d['max_abs_vector_diff_vs_full']:.2e} (batch "
            f"composition changes a neural encoder's float rounding) and {d['rows_differing_from_full_path']} row(s) "
            "pick other negatives.",
            "",
        ]
    data = " ".join(str(d) for d in a.data)
    model_args = "".join(f" --model {m}" for m in a.model)
    lines += [
        f"Command: `.venv/bin/python bench/incremental.py --data {data}{model_args}` (`make bench-incremental`); "
        "every command line is in BENCHMARKS.json (`incremental.datasets.*.nights.*.runs.*.command`).",
        "",
    ]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], epilog=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    shared = REPO.parent / "shared" / "data"
    ap.add_argument("--data", type=Path, nargs="+", default=[shared / "scifact", shared / "ops-man"])
    ap.add_argument("--model", action="append", default=[],
                    help="repeatable; a model of configs/default.toml or any --model spec (default: its ensemble)")  # fmt: skip
    ap.add_argument("--split", default="train", help="the mined split; its queries are the ones that grow")
    ap.add_argument("--fraction", type=float, default=0.01, help="share of the data each night's edit touches")
    ap.add_argument("--mine-args", default="", help="extra mine options, e.g. '--strategy random'")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", type=Path, default=None)
    ap.add_argument("--keep", action="store_true", help="keep --work from an earlier run (default: start afresh)")
    ap.add_argument("--timeout", type=float, default=3600.0, help="seconds per measured run")
    ap.add_argument("--results", type=Path, default=RESULTS_ROOT / "incremental",
                    help="one file per finished dataset, read back while its settings hold (default "
                         "bench/results/incremental)")  # fmt: skip
    ap.add_argument("--no-results", action="store_true", help="keep nothing beyond the work dir; measure every dataset")
    ap.add_argument("--md", type=Path, default=REPO / "BENCHMARKS.md")
    ap.add_argument("--json", type=Path, default=REPO / "BENCHMARKS.json")
    a = ap.parse_args(argv)
    a.data, a.md, a.json = [d.resolve() for d in a.data], a.md.resolve(), a.json.resolve()
    a.work = (a.work or REPO / "runs" / "bench" / "incremental").resolve()
    a.results = None if a.no_results else a.results.resolve()
    return a


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    result = run(a)
    update_bench_files(a.md, a.json, "incremental", render(result, a), result)
    ok = all(n["rows_identical_to_cold_mine"] for d in result["datasets"].values() for n in d["nights"].values())
    summary = {name: {edit: {"speedup": n["stages"]["total"]["speedup"], "reused": round(reuse_share(n["update"]), 4)}
                      for edit, n in d["nights"].items()} for name, d in result["datasets"].items()}  # fmt: skip
    print(orjson.dumps({"nights": summary, "rows_identical_to_cold_mine": ok}).decode())
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
