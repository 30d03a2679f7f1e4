"""Arm 5 of the quality benchmark: `sentence_transformers.util.mine_hard_negatives` with its defaults, written as
an hnm mine artifact so `hnm train-reranker --mined` trains on it exactly like on hnm's own negatives.

The miner is given the *same vectors* hnm uses for the best single model (the `hnm embed` folder of that model,
served through a small stand-in with sentence-transformers' `encode_query` / `encode_document` / `similarity`
interface), so the arm differs from hnm's arms only in the selection. Every mining knob keeps its default
(num_negatives=3, range_min=0, range_max=None, no margins or score bounds, sampling_strategy="top",
output_format="triplet"); the only argument we set is `corpus`: the full corpus, the candidate pool every other
arm uses (by default the function would mine among the training positives only).

    python bench/st_arm.py --vectors runs/bench/scifact/embed/all-MiniLM-L6-v2 --data DATA --split train \
        --out runs/bench/scifact/mine/st-default

Writes `<out>/{rows-00000.jsonl, stats.json, manifest.json}` (manifest stage "mine", written last, with the
corpus/queries/qrels digests and the vectors' digest as inputs): rerunning with the same inputs is a no-op.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import ST_SOURCE, st_triplets_to_rows  # noqa: E402

from hnm_cli.artifacts import mined
from hnm_cli.artifacts.manifest import (
    artifact_input,
    begin_run,
    compute_fingerprint,
    file_input,
    output_entry,
    require_artifact,
    write_manifest,
)
from hnm_cli.artifacts.output_dir import skip_if_up_to_date
from hnm_cli.artifacts.vectors import load_vectors
from hnm_cli.fileio import atomic_write_json

log = logging.getLogger("hnm")


class PrecomputedModel:
    """Just enough of a SentenceTransformer for `mine_hard_negatives`: vectors looked up by text.

    `encode_query` / `encode_document` return the stored (already L2-normalised) vectors of the texts asked
    for; similarities are cosine, as for the real model. Ask for a text it was not given and it raises KeyError.
    """

    def __init__(self, query_vecs: dict[str, np.ndarray], doc_vecs: dict[str, np.ndarray]) -> None:
        import torch

        self.device = torch.device("cpu")
        self._q, self._d = query_vecs, doc_vecs

    @staticmethod
    def _stack(table: dict[str, np.ndarray], texts: list[str]) -> np.ndarray:
        return np.stack([table[t] for t in texts]).astype(np.float32)

    def encode_query(self, texts: list[str], **_: Any) -> np.ndarray:
        return self._stack(self._q, texts)

    def encode_document(self, texts: list[str], **_: Any) -> np.ndarray:
        return self._stack(self._d, texts)

    def similarity(self, a: Any, b: Any) -> Any:
        from sentence_transformers.util import cos_sim

        return cos_sim(a, b)

    def similarity_pairwise(self, a: Any, b: Any) -> Any:
        from sentence_transformers.util import pairwise_cos_sim

        return pairwise_cos_sim(a, b)


def run(vectors: Path, data: Path, split: str, out: Path, *, corpus_pool: str = "full", force: bool = False):
    """Mine arm 5 and write it as a mine artifact; return the Manifest (skips when up to date)."""
    from hnm_cli.inputs import read_corpus, read_queries, resolve_qrels_file
    from hnm_cli.qrels import positives, read_qrels

    vman = require_artifact(vectors, ("embed-model", "reduce"), fix=f"hnm embed ... --out {Path(vectors).parent}")
    corpus = read_corpus(data)
    queries = read_queries(data)
    qrels_file = resolve_qrels_file(data, split)
    from importlib.metadata import version

    params = {
        "strategy": ST_SOURCE,
        "split": split,
        "num_negatives": 3,
        "st_defaults": True,
        "corpus_pool": corpus_pool,
        "sentence_transformers": version("sentence-transformers"),
        "vectors": vman.params.get("name", str(vectors)),
    }
    inputs = [
        *corpus.digests("corpus"),
        *queries.digests("queries"),
        file_input(qrels_file, "qrels"),
        artifact_input(vman, "vectors"),
    ]
    fingerprint = compute_fingerprint(mined.STAGE, params, inputs)
    if (done := skip_if_up_to_date(out, mined.STAGE, fingerprint, force=force)) is not None:
        return done

    from datasets import Dataset
    from sentence_transformers.util import mine_hard_negatives

    t0 = time.time()
    qrels = read_qrels(qrels_file, query_ids=queries, doc_ids=corpus)
    pairs = [(q, d) for q, ds in positives(qrels).items() for d in ds]
    q_text = {q: queries[q].text for q in queries.ids}
    d_text = {d: corpus[d].full_text for d in corpus.ids}
    c_ids, c_vecs = load_vectors(Path(vectors) / "corpus")
    q_ids, q_vecs = load_vectors(Path(vectors) / "queries")
    # First id wins for duplicate texts, as in the miner's own de-duplication.
    doc_table: dict[str, np.ndarray] = {}
    for i, did in enumerate(c_ids):
        doc_table.setdefault(d_text[did], c_vecs[i])
    query_table: dict[str, np.ndarray] = {}
    for i, qid in enumerate(q_ids):
        if qid in q_text:
            query_table.setdefault(q_text[qid], q_vecs[i])
    model = PrecomputedModel(query_table, doc_table)
    dataset = Dataset.from_dict({"anchor": [q_text[q] for q, _ in pairs], "positive": [d_text[d] for _, d in pairs]})
    pool = list(dict.fromkeys(d_text[d] for d in corpus.ids)) if corpus_pool == "full" else None
    st_out = mine_hard_negatives(dataset, model, corpus=pool, output_scores=True, verbose=False)  # type: ignore[arg-type]
    mining_seconds = time.time() - t0
    rows = st_triplets_to_rows(
        st_out["anchor"], st_out["positive"], st_out["negative"], pairs, q_text, d_text, scores=st_out["scores"]
    )

    out = Path(out)
    started = begin_run(out)
    outputs = mined.write_rows(out, rows)
    with_neg = sum(1 for r in rows if r["negatives"])
    stats = {
        "strategy": ST_SOURCE,
        "split": split,
        "pairs": len(rows),
        "pairs_with_zero": len(rows) - with_neg,
        "pairs_short": sum(1 for r in rows if len(r["negatives"]) < 3),
        "selected": sum(len(r["negatives"]) for r in rows),
        "selection_rate": with_neg / max(len(rows), 1),
        "queries": len({q for q, _ in pairs}),
        "corpus_docs": len(corpus),
        "mining_seconds": round(mining_seconds, 3),
    }
    atomic_write_json(out / mined.STATS_FILE, stats)
    outputs.append(output_entry(out, mined.STATS_FILE))
    manifest = write_manifest(
        out,
        stage=mined.STAGE,
        fingerprint=fingerprint,
        params=params,
        inputs=inputs,
        outputs=outputs,
        stats=stats,
        started=started,
    )
    log.info(
        "st-arm: %d pairs, %d with >=1 negative (%.1f%%), %.1f s",
        len(rows),
        with_neg,
        100.0 * with_neg / max(len(rows), 1),
        mining_seconds,
    )
    return manifest


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--vectors", type=Path, required=True, help="one model folder of an `hnm embed` output")
    ap.add_argument("--data", type=Path, required=True, help="BEIR folder")
    ap.add_argument("--split", default="train")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--corpus-pool", choices=["full", "positives"], default="full")
    ap.add_argument("--force", action="store_true")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    from hnm_cli.errors import HnmError

    try:
        manifest = run(args.vectors, args.data, args.split, args.out, corpus_pool=args.corpus_pool, force=args.force)
    except HnmError as err:
        print(f"Error: {err.message}", file=sys.stderr)
        return 1
    print(manifest.manifest_path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
