"""Cross-encoder recipes side by side (issue 10): which loss, budget and warm start make a cross-encoder grown from
packaged bi-encoder weights beat the first stage it reranks, alone and fused with it (RRF).

    .venv/bin/python bench/cross_recipes.py --data ../shared/data/scifact \\
        --mined runs/bench/scifact/mine/hnm-default --vectors runs/bench/scifact/embed/all-MiniLM-L6-v2 \\
        --recipe 'margin=--loss margin --negatives-per-positive 1' \\
        --recipe 'listwise=--loss listwise --negatives-per-positive 3 --lr 1e-4'

Every recipe trains with `hnm train-reranker --kind cross-encoder` (its options after the recipe's name, over the
shared budget below; a recipe may name its own `--mined` artifact, and a warm start is `--base-model` pointing at
another recipe's artifact, `{work}/train/<recipe>/s<seed>`, since the last value of an option wins) and is evaluated
with `hnm eval --first-stage dense --fuse rrf` over one fixed first stage (dense top-k of `--vectors`), so the only
difference between rows is the recipe. Each step is an `hnm` call that is an up-to-date no-op once done: rerun the
same command to resume. With `--results DIR`, every finished (recipe, seed) is kept as a small file there (per-query
values alone and fused, cost, settings; bench/cells.py) and skipped on any machine that finds it with the same
settings. Output: the "cross-recipes" section of BENCHMARKS.md and the same key of BENCHMARKS.json.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))

from cells import cell_path, load_cell, save_cell  # noqa: E402
from common import (
    REPO,
    Log,
    fmt_mean_std,
    hnm_bin,
    machine_info,
    machine_line,
    markdown_table,
    run_logged,
    update_bench_files,
)  # noqa: E402,I001

METRICS = ("ndcg@10", "mrr@10")


def _report(ev: Path) -> dict[str, Any]:
    return dict(orjson.loads((ev / "report.json").read_bytes())["runs"])


def _per_query(ev: Path, run: str) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for line in (ev / "per-query.jsonl").read_bytes().splitlines():
        row = orjson.loads(line)
        if row.get("run") == run:
            out[row["query_id"]] = {m: row[m] for m in METRICS}
    return out


def _identity(a: argparse.Namespace, name: str, args: str, seed: int | None) -> dict[str, Any]:
    ident: dict[str, Any] = {"dataset": a.data.name, "first_stage": a.vectors.name, "top_k": a.top_k,
                             "max_length": a.max_length, "precision": a.precision}  # fmt: skip
    if seed is None:
        return ident
    return ident | {
        "recipe": name,
        "args": args.replace(str(a.work), "{work}"),
        "mined": a.mined.name,
        "seed": seed,
        "base_model": a.base_model,
        "max_steps": a.max_steps,
        "batch_size": a.batch_size,
    }


def run(a: argparse.Namespace) -> dict[str, Any]:
    log = Log(a.work / "bench.log")
    hnm = hnm_bin()
    budget = ["--max-steps", a.max_steps, "--batch-size", a.batch_size, "--max-length", a.max_length,
              "--precision", a.precision, "--base-model", a.base_model, "--drop-eval-overlap"]  # fmt: skip
    result: dict[str, Any] = {
        "machine": machine_info(),
        "recipes": {},
        "settings": {k: str(v) for k, v in vars(a).items()},
    }
    first_stage: dict[str, float] | None = None
    for spec in a.recipe:
        name, _, args = spec.partition("=")
        rows = result["recipes"].setdefault(name, {"args": args, "seeds": []})
        for seed in range(a.seeds):
            rargs = args.replace("{work}", str(a.work)).replace("{seed}", str(seed))
            ident = _identity(a, name, rargs, seed)
            kept = load_cell(cell_path(a.results, "cross-screen", name, seed), ident) if a.results else None
            if kept is not None:
                rows["seeds"].append(kept["summary"])
                first_stage = kept["first_stage"]
                log(f"cross-recipes: {name} s{seed}: kept in {a.results} (same settings), skipped")
                result["first_stage"] = first_stage
                continue
            tdir = a.work / "train" / name / f"s{seed}"
            t0 = time.perf_counter()
            run_logged([hnm, "train-reranker", "--mined", a.mined, "--data", a.data, "--out", tdir,
                        "--kind", "cross-encoder", *budget, *shlex.split(rargs), "--seed", seed, "-q"], log)  # fmt: skip
            train_wall = time.perf_counter() - t0
            ev = a.work / "eval" / name / f"s{seed}"
            run_logged([hnm, "eval", "--data", a.data, "--split", "test", "--first-stage", "dense", "--vectors",
                        a.vectors, "--top-k", a.top_k, "--max-length", a.max_length, "--precision", a.precision,
                        "--fuse", "rrf", "--model", f"{name}={tdir}", "--out", ev, "-q"], log)  # fmt: skip
            eval_wall = time.perf_counter() - t0 - train_wall
            runs = _report(ev)
            first_stage = {m: runs["first-stage"]["mean"][m] for m in METRICS}
            stats = orjson.loads((tdir / "manifest.json").read_bytes())["stats"]
            rows["seeds"].append({
                "seed": seed,
                "alone": {m: runs[name]["mean"][m] for m in METRICS},
                "rrf": {m: runs[f"{name}+rrf"]["mean"][m] for m in METRICS},
                "train_seconds": stats.get("train_seconds") or stats.get("seconds"),
                "train_wall_seconds": round(train_wall, 1),
                "final_loss": stats.get("final_loss"),
            })  # fmt: skip
            log(f"cross-recipes: {name} s{seed}: {rows['seeds'][-1]}")
            if a.results is not None:
                save_cell(
                    cell_path(a.results, "cross-screen", name, seed),
                    ident,
                    _per_query(ev, name),
                    seconds={"train": train_wall, "eval": eval_wall},
                    machine=result["machine"],
                    extra={
                        "summary": rows["seeds"][-1],
                        "first_stage": first_stage,
                        "rrf_per_query": _per_query(ev, f"{name}+rrf"),
                    },  # fmt: skip
                )
            result["first_stage"] = first_stage
            update_bench_files(a.md, a.json, "cross-recipes", render(result, a), result)
    return result


def render(r: dict[str, Any], a: argparse.Namespace) -> str:
    fs = r.get("first_stage") or {}
    table = []
    for name, rec in r["recipes"].items():
        seeds = rec["seeds"]
        if not seeds:
            continue
        cells = [fmt_mean_std([s[part][m] for s in seeds]) for part in ("alone", "rrf") for m in METRICS]
        beats = all(sum(s["alone"][m] for s in seeds) / len(seeds) > fs.get(m, 1.0) for m in METRICS)
        fused = all(sum(s["rrf"][m] for s in seeds) / len(seeds) > fs.get(m, 1.0) for m in METRICS)
        minutes = sum((s["train_seconds"] or s["train_wall_seconds"]) for s in seeds) / len(seeds) / 60
        table.append([name, f"`{rec['args']}`", *cells, "yes" if beats else "no", "yes" if fused else "no",
                      f"{minutes:.1f}", len(seeds)])  # fmt: skip
    header = ["recipe", "train-reranker options", "nDCG@10 alone", "MRR@10 alone", "nDCG@10 +RRF", "MRR@10 +RRF",
              "beats first stage alone", "beats it fused", "train min", "n"]  # fmt: skip
    return "\n".join([
        "## Cross-encoder recipes (issues 10, 21)",
        "",
        machine_line(r["machine"]),
        "",
        f"Cross-encoders grown from `{a.base_model}` (a fresh 1-logit head), trained on `{a.mined}` with "
        f"{a.max_steps} steps, batch {a.batch_size}, max length {a.max_length}, precision {a.precision}, and each "
        f"recipe's options; reranking dense top-{a.top_k} of `{Path(a.vectors).name}` on the test split. First "
        f"stage: nDCG@10 {fs.get('ndcg@10', float('nan')):.4f}, MRR@10 {fs.get('mrr@10', float('nan')):.4f}. "
        "+RRF: reciprocal-rank fusion of the reranker with the first stage (k=60). Cells: mean ± std over seeds.",
        "",
        markdown_table(header, table),
        "",
        "Command: `.venv/bin/python bench/cross_recipes.py " + " ".join(shlex.quote(x) for x in sys.argv[1:]) + "`.",
        "",
    ])  # fmt: skip


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], epilog=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--mined", type=Path, required=True, help="the mine artifact every recipe trains on")
    ap.add_argument("--vectors", type=Path, required=True, help="first stage: an embed model folder or reduce output")
    ap.add_argument("--recipe", action="append", required=True, help="NAME=train-reranker options (repeatable)")
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("--base-model", default="pkg:all-MiniLM-L6-v2")
    ap.add_argument("--max-steps", type=int, default=100)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--precision", default="bf16", choices=("fp32", "bf16"))
    ap.add_argument("--top-k", type=int, default=100)
    ap.add_argument("--work", type=Path, default=REPO / "runs" / "bench" / "cross-recipes")
    ap.add_argument("--results", type=Path, default=None, help="keep finished cells here (bench/results/<dataset>)")
    ap.add_argument("--md", type=Path, default=REPO / "BENCHMARKS.md")
    ap.add_argument("--json", type=Path, default=REPO / "BENCHMARKS.json")
    a = ap.parse_args(argv)
    for key in ("data", "mined", "vectors", "work", "md", "json"):
        setattr(a, key, getattr(a, key).resolve())
    a.results = a.results.resolve() if a.results is not None else None
    a.work.mkdir(parents=True, exist_ok=True)
    return a


def main(argv: list[str] | None = None) -> int:
    run(parse_args(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
