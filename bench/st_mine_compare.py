"""Reference point for `hnm mine`: sentence-transformers' `util.mine_hard_negatives` on the same model and data.

Runs ST's miner once (defaults except the ones named below) on a BEIR split's (query, positive) pairs with
the whole corpus as candidates, and prints one JSON object on stdout: wall time (embedding included: ST
embeds inside the call), peak RSS of this process, pairs in, pairs with >= 1 negative and the selection
rate. Run it under `/usr/bin/time -v` for an outside RSS figure too.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/st_mine_compare.py --data ../shared/data/scifact --split train \
        --model pkg:all-MiniLM-L6-v2 --num-negatives 1

Compare with `hnm embed` + `hnm mine` on the same data (their `stats.seconds` are in the manifests).
Notes on parity: ST groups rows by anchor text and excludes every positive of the anchor by text; hnm
excludes positives by id and by normalised text. ST's default candidate window is num_negatives +
max_positives deep (top-k), hnm's rule scans the whole C1 region; so the selection rates answer different
questions and are reported side by side, not as a race.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from pathlib import Path

import orjson

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def _model_path(spec: str) -> str:
    """A local folder for `pkg:<name>` specs (through hnm's registry), else the spec unchanged."""
    if spec.startswith("pkg:"):
        from hnm_cli.encoding.registry import resolve_model
        from hnm_cli.model_spec import ModelSpec, default_model_name

        resolved = resolve_model(ModelSpec(name=default_model_name(spec), source=spec))
        path = resolved.weights_path()
        if path is None:
            raise SystemExit(f"{spec} has no sentence-transformers folder (engine {resolved.engine})")
        return str(path)
    return spec


def _peak_rss_mib() -> float:
    # ru_maxrss is KiB on Linux.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="BEIR folder")
    parser.add_argument("--split", default="train")
    parser.add_argument("--model", default="pkg:all-MiniLM-L6-v2")
    parser.add_argument("--num-negatives", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--relative-margin", type=float, default=None)
    parser.add_argument("--out", type=Path, default=None, help="optional: write the mined rows as JSONL here")
    args = parser.parse_args(argv)

    from hnm_cli.inputs import read_corpus, read_queries, resolve_qrels_file
    from hnm_cli.qrels import positives, read_qrels

    t_load = time.perf_counter()
    corpus = read_corpus(args.data)
    queries = read_queries(args.data)
    qrels = read_qrels(resolve_qrels_file(args.data, args.split), query_ids=queries, doc_ids=corpus)
    pairs = [(q, d) for q, ds in positives(qrels).items() for d in ds]
    corpus_texts = [doc.full_text for doc in corpus.items.values()]

    from datasets import Dataset
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.util import mine_hard_negatives

    dataset = Dataset.from_dict(
        {"query": [queries[q].text for q, _ in pairs], "answer": [corpus[d].full_text for _, d in pairs]}
    )
    model = SentenceTransformer(_model_path(args.model), device="cpu")
    loaded = time.perf_counter() - t_load

    t0 = time.perf_counter()
    mined = mine_hard_negatives(
        dataset,
        model,
        corpus=corpus_texts,
        num_negatives=args.num_negatives,
        relative_margin=args.relative_margin,
        output_format="triplet",
        batch_size=args.batch_size,
        use_faiss=False,
        verbose=True,
    )
    seconds = time.perf_counter() - t0

    # Triplet rows exist only for pairs that got a negative: count distinct (anchor, positive) among them.
    with_negative = len({(a, p) for a, p in zip(mined["query"], mined["answer"], strict=True)})
    distinct_pairs = len({(a, p) for a, p in zip(dataset["query"], dataset["answer"], strict=True)})
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        with open(args.out, "wb") as fh:
            for row in mined:
                fh.write(orjson.dumps(row) + b"\n")
    report = {
        "tool": "sentence_transformers.util.mine_hard_negatives",
        "data": str(args.data),
        "split": args.split,
        "model": args.model,
        "num_negatives": args.num_negatives,
        "relative_margin": args.relative_margin,
        "pairs": len(pairs),
        "distinct_pairs": distinct_pairs,
        "triplets": len(mined),
        "pairs_with_negative": with_negative,
        "selection_rate": round(with_negative / max(distinct_pairs, 1), 4),
        "seconds_mine_incl_embedding": round(seconds, 2),
        "seconds_load": round(loaded, 2),
        "peak_rss_mib": round(_peak_rss_mib(), 1),
    }
    sys.stdout.write(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode() + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
