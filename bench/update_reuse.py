"""What `hnm mine --update` reuses on real vectors, per edit, without re-embedding anything.

    .venv/bin/python bench/update_reuse.py --vectors runs/bench/scifact/reduce --data ../shared/data/scifact
    .venv/bin/python bench/update_reuse.py --vectors <reduce> --data <beir> --mine-args "--strategy rule --relative-margin none"

`make bench-incremental` measures a whole nightly job (embed cache, `reduce --fit-from`, the stage's files) and needs
hours with the default ensemble on a 2-core CPU. This one isolates the mining core: it takes a finished vector set,
derives yesterday's corpus from it by a seeded 1% edit (documents added today, changed today, deleted today; never a
positive), mines yesterday cold, then updates to today with `mining.update` and mines today cold, and reports the
pairs reused, why the others were mined again, both CPU times (process time: comparable on a busy machine, and
with BLAS on several threads it adds their time up), and whether the update's rows equal the cold run's
(they must). A changed document gets another document's vector, nudged: a new text the encoder places elsewhere.

Exclusions are each query's positives (the stage adds text duplicates; the same for both runs, so the comparison
holds). Output: one markdown table on stdout.
"""

from __future__ import annotations

import argparse
import csv
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from hnm_cli.artifacts.vectors import load_vectors  # noqa: E402
from hnm_cli.config import MineConfig  # noqa: E402
from hnm_cli.mining import Pair, mine_negatives  # noqa: E402
from hnm_cli.mining.strategies import Ids  # noqa: E402
from hnm_cli.mining.update import plan_update, update_negatives  # noqa: E402
from hnm_cli.search import VectorSource  # noqa: E402

EDITS = ("add", "change", "delete")


def read_pairs(data: Path, split: str) -> list[tuple[str, str]]:
    with (data / "qrels" / f"{split}.tsv").open(newline="") as f:
        rows = list(csv.reader(f, delimiter="\t"))
    return list(dict.fromkeys((q, d) for q, d, score in rows[1:] if float(score) > 0))


def mine_config(args: str) -> MineConfig:
    """`hnm mine`'s options as a MineConfig (the subset this bench needs: --key value pairs)."""
    given: dict[str, Any] = {}
    words = shlex.split(args)
    for key, value in zip(words[::2], words[1::2], strict=True):
        name = key.removeprefix("--").replace("-", "_")
        for kind in (int, float):
            try:
                given[name] = kind(value)
                break
            except ValueError:
                continue
        else:
            given[name] = value
    return MineConfig().merged(**given)


class Day:
    """One day's corpus and pairs as the mining core sees them."""

    def __init__(self, docs: dict[str, np.ndarray], queries: dict[str, np.ndarray], pairs: list[tuple[str, str]]):
        self.pairs = [(q, d) for q, d in pairs if d in docs and q in queries]
        self.doc_ids = list(docs)
        self.query_ids = list(dict.fromkeys(q for q, _ in self.pairs))
        self.row = {d: i for i, d in enumerate(self.doc_ids)}
        qrow = {q: i for i, q in enumerate(self.query_ids)}
        self.corpus = VectorSource([np.stack([docs[d] for d in self.doc_ids])])
        self.query_vecs = np.stack([queries[q] for q in self.query_ids])
        self.core_pairs = [Pair(qrow[q], self.row[d]) for q, d in self.pairs]
        self.excluded: dict[int, set[int]] = {}
        for q, d in self.pairs:
            self.excluded.setdefault(qrow[q], set()).add(self.row[d])
        self.ids = Ids(self.doc_ids, self.query_ids)
        self.doc_hash = {d: docs[d].tobytes().hex()[:32] for d in self.doc_ids}
        positives: dict[str, list[str]] = {}
        for q, d in self.pairs:
            positives.setdefault(q, []).append(d)
        self.query_hash = {q: (queries[q].tobytes().hex()[:32], sorted(p)) for q, p in positives.items()}

    def mine(self, cfg: MineConfig) -> tuple[list[Any], float]:
        t0 = time.process_time()
        results, _ = mine_negatives(self.query_vecs, self.corpus, self.core_pairs, self.excluded, cfg, ids=self.ids)
        return results, time.process_time() - t0

    def heads(self, results: list[Any]) -> dict[str, tuple[np.ndarray, float]]:
        """What the stage keeps in the artifact's state: each query's ranking head (top-k), in this day's rows."""
        return {self.query_ids[r.pair.query_row]: (r.head.rows, r.head.floor) for r in results if r.head is not None}

    def rows(self, results: list[Any]) -> dict[tuple[str, str], list[dict[str, Any]]]:
        return {
            p: [{"doc_id": self.doc_ids[n.doc_row], "source": n.source, "rank": n.rank, "d_qd": n.d_qd,
                 "d_qp": n.d_qp, "d_pd": n.d_pd} for n in r.negatives]
            for p, r in zip(self.pairs, results, strict=True)
        }  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--vectors", type=Path, required=True, help="a reduce output (or one model folder of embed)")
    ap.add_argument("--data", type=Path, required=True, help="the BEIR folder the vectors were made from")
    ap.add_argument("--split", default="train")
    ap.add_argument("--share", type=float, default=0.01, help="share of documents each edit touches")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--mine-args", default="", help="hnm mine options, e.g. '--strategy rule --relative-margin none'")
    a = ap.parse_args()
    cfg = mine_config(a.mine_args)
    doc_ids, doc_vecs = load_vectors(a.vectors / "corpus")
    query_ids, query_vecs = load_vectors(a.vectors / "queries")
    docs = dict(zip(doc_ids, doc_vecs, strict=True))
    queries = dict(zip(query_ids, query_vecs, strict=True))
    pairs = read_pairs(a.data, a.split)
    positives = {d for _, d in pairs}
    rng = np.random.default_rng(a.seed)
    free = [d for d in doc_ids if d not in positives]
    touched = [free[i] for i in rng.choice(len(free), size=max(1, round(a.share * len(doc_ids))), replace=False)]
    print(f"`{a.vectors}` ({len(doc_ids)} documents, {len(pairs)} {a.split} pairs); mine options "
          f"`{a.mine_args or '(defaults)'}`; {len(touched)} documents per edit (seed {a.seed})\n")  # fmt: skip
    print(
        "| edit | pairs | reused | new | inputs changed | with their query | drifted | cold CPU s | update CPU s | rows equal |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for edit in EDITS:
        if edit == "add":
            before = {d: v for d, v in docs.items() if d not in touched}
            after = docs
        elif edit == "delete":
            before, after = docs, {d: v for d, v in docs.items() if d not in touched}
        else:
            before, after = docs, dict(docs)
            for d in touched:
                other = docs[free[int(rng.integers(len(free)))]]
                moved = other + 0.05 * rng.standard_normal(other.shape).astype(np.float32)
                after[d] = (moved / np.linalg.norm(moved)).astype(np.float32)
        yesterday, today = Day(before, queries, pairs), Day(after, queries, pairs)
        old_results, _ = yesterday.mine(cfg)
        cold, cold_s = today.mine(cfg)
        t0 = time.process_time()
        plan = plan_update(yesterday.doc_hash, yesterday.query_hash, yesterday.rows(old_results), today.doc_hash,
                           today.query_hash, today.pairs, today.row, old_heads=yesterday.heads(old_results))  # fmt: skip
        got, _, counts = update_negatives(today.query_vecs, today.corpus, today.core_pairs, today.excluded, cfg, plan,
                                          ids=today.ids)  # fmt: skip
        update_s = time.process_time() - t0
        n = len(today.pairs)
        print(f"| {edit} | {n} | {counts.pairs_reused} ({counts.pairs_reused / n:.1%}) | {counts.pairs_new} | "
              f"{counts.pairs_inputs_changed} | {counts.pairs_remined_with_their_query} | {counts.pairs_drifted} | "
              f"{cold_s:.2f} | {update_s:.2f} | {today.rows(got) == today.rows(cold)} |")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
