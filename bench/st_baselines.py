"""The plain sentence-transformers side of the speed benchmark, one measured run per call, JSON on stdout.

    python bench/st_baselines.py encode --data DATA --model pkg:all-MiniLM-L6-v2 --order sorted|file
    python bench/st_baselines.py mine --vectors VECTOR_SET --data DATA [--split train]

`encode`: what a user writes without hnm: load the model and `SentenceTransformer.encode` the same texts hnm
embeds (corpus `title + " " + text`, then the queries), same max length and batch size, normalised.
`--order sorted` makes one `encode` call over everything (sentence-transformers sorts by length inside the
call); `--order file` calls `encode` once per batch in file order (no global length sorting).
`mine`: `util.mine_hard_negatives` with every knob at its default on vectors that already exist (an hnm
vector set, served by text through `st_arm.PrecomputedModel`), so only its search and selection are timed,
not encoding. The full corpus is the candidate pool, as for `hnm mine`.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _model_path(spec: str) -> str:
    if spec.startswith("pkg:"):
        from hnm_cli.encoding.registry import resolve_model
        from hnm_cli.model_spec import ModelSpec, default_model_name

        path = resolve_model(ModelSpec(name=default_model_name(spec), source=spec)).weights_path()
        if path is None:
            raise SystemExit(f"{spec} has no sentence-transformers folder")
        return str(path)
    return spec


def encode(args: argparse.Namespace) -> dict:
    from hnm_cli.inputs import read_corpus, read_queries

    corpus = read_corpus(args.data)
    queries = read_queries(args.data)
    texts = [d.full_text for d in corpus.items.values()] + [q.text for q in queries.items.values()]
    if args.limit:
        texts = texts[: args.limit]
    t_load = time.perf_counter()
    import torch
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(_model_path(args.model), device="cpu")
    model.max_seq_length = args.max_seq_length
    load_s = time.perf_counter() - t_load
    t0 = time.perf_counter()
    with torch.inference_mode():
        if args.order == "sorted":
            vecs = model.encode(texts, batch_size=args.batch_size, normalize_embeddings=True, convert_to_numpy=True)
            n = len(vecs)
        else:
            n = 0
            for lo in range(0, len(texts), args.batch_size):
                chunk = model.encode(
                    texts[lo : lo + args.batch_size],
                    batch_size=args.batch_size,
                    normalize_embeddings=True,
                    convert_to_numpy=True,
                )
                n += len(chunk)
    encode_s = time.perf_counter() - t0
    return {
        "tool": f"SentenceTransformer.encode ({args.order})",
        "texts": n,
        "load_seconds": round(load_s, 2),
        "encode_seconds": round(encode_s, 2),
        "docs_per_s": round(n / encode_s, 2),
        "peak_rss_mib": round(_peak_rss_mib(), 1),
    }


def mine(args: argparse.Namespace) -> dict:
    from st_arm import PrecomputedModel

    from hnm_cli.artifacts.vectors import load_vectors
    from hnm_cli.inputs import read_corpus, read_queries, resolve_qrels_file
    from hnm_cli.qrels import positives, read_qrels

    t_load = time.perf_counter()
    corpus = read_corpus(args.data)
    queries = read_queries(args.data)
    qrels = read_qrels(resolve_qrels_file(args.data, args.split))
    pairs = [(q, d) for q, ds in positives(qrels).items() for d in ds]
    c_ids, c_vecs = load_vectors(args.vectors / "corpus")
    q_ids, q_vecs = load_vectors(args.vectors / "queries")
    d_text = {d: corpus[d].full_text for d in corpus.ids}
    doc_table: dict = {}
    for i, did in enumerate(c_ids):
        doc_table.setdefault(d_text[did], c_vecs[i])
    query_table = {queries[q].text: q_vecs[i] for i, q in enumerate(q_ids) if q in queries}
    from datasets import Dataset
    from sentence_transformers.util import mine_hard_negatives

    dataset = Dataset.from_dict(
        {"anchor": [queries[q].text for q, _ in pairs], "positive": [d_text[d] for _, d in pairs]}
    )
    pool = list(dict.fromkeys(d_text[d] for d in corpus.ids))
    model = PrecomputedModel(query_table, doc_table)
    load_s = time.perf_counter() - t_load
    t0 = time.perf_counter()
    mined = mine_hard_negatives(dataset, model, corpus=pool, verbose=False)  # type: ignore[arg-type]
    seconds = time.perf_counter() - t0
    with_neg = len({(a, p) for a, p in zip(mined["anchor"], mined["positive"], strict=True)})
    return {
        "tool": "sentence_transformers.util.mine_hard_negatives (defaults, precomputed vectors)",
        "pairs": len(pairs),
        "pairs_with_negative": with_neg,
        "triplets": len(mined),
        "corpus": len(pool),
        "load_seconds": round(load_s, 2),
        "mine_seconds": round(seconds, 2),
        "peak_rss_mib": round(_peak_rss_mib(), 1),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("encode")
    e.add_argument("--data", type=Path, required=True)
    e.add_argument("--model", default="pkg:all-MiniLM-L6-v2")
    e.add_argument("--order", choices=["sorted", "file"], default="sorted")
    e.add_argument("--batch-size", type=int, default=64)
    e.add_argument("--max-seq-length", type=int, default=256)
    e.add_argument("--limit", type=int, default=None, help="only the first N texts")
    m = sub.add_parser("mine")
    m.add_argument("--vectors", type=Path, required=True)
    m.add_argument("--data", type=Path, required=True)
    m.add_argument("--split", default="train")
    args = ap.parse_args(argv)
    report = encode(args) if args.cmd == "encode" else mine(args)
    sys.stdout.write(orjson.dumps(report).decode() + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
