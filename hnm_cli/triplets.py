"""Print a few mined triplets (query, positive title, hard-negative title) so a person sees the point at once.

Used by `make mine`; also handy on its own:
    python -m hnm_cli.triplets runs/cloud-docs/mine --data examples/cloud-docs -n 5
Reads the mine artifact's rows and the corpus/queries; writes a plain-text table to stdout.
"""

from __future__ import annotations

import argparse
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from hnm_cli.artifacts.files import iter_jsonl
from hnm_cli.artifacts.manifest import require_artifact
from hnm_cli.errors import HnmError
from hnm_cli.inputs import read_corpus, read_queries, resolve_data


def iter_mined_rows(mine_dir: Path) -> Iterator[dict[str, Any]]:
    """Rows of a mine artifact, in shard order."""
    for path in sorted(Path(mine_dir).glob("rows-*.jsonl")):
        yield from iter_jsonl(path)


def sample_triplets(mine_dir: Path, data: Path, n: int) -> list[tuple[str, str, str, float, float]]:
    """Up to `n` (query text, positive title, negative title, d(Q,PD), d(Q,HN)) from rows that have a negative.

    Spread over the file (every k-th row) rather than the first n, so one query family does not fill the table.
    """
    require_artifact(mine_dir, "mine", fix=f"hnm mine --vectors <reduce dir> --data {data} --out {mine_dir}")
    paths = resolve_data(data)
    corpus, queries = read_corpus(paths.corpus), read_queries(paths.queries)
    rows = [r for r in iter_mined_rows(mine_dir) if r["negatives"]]
    step = max(1, len(rows) // max(n, 1))
    out = []
    for row in rows[::step][:n]:
        neg = row["negatives"][0]
        pos_doc, neg_doc = corpus[row["positive_id"]], corpus[neg["doc_id"]]
        out.append(
            (
                queries[row["query_id"]].text,
                pos_doc.title or pos_doc.text[:60],
                neg_doc.title or neg_doc.text[:60],
                float(neg["d_qp"]),
                float(neg["d_qd"]),
            )
        )
    return out


def format_triplets(triplets: list[tuple[str, str, str, float, float]]) -> str:
    """A readable block per triplet."""
    lines = []
    for i, (query, pos, neg, d_qp, d_qd) in enumerate(triplets, 1):
        lines.append(f"{i}. query:         {textwrap.shorten(query, 100)}")
        lines.append(f"   positive:      {textwrap.shorten(pos, 100)}  (d={d_qp:.3f})")
        lines.append(f"   hard negative: {textwrap.shorten(neg, 100)}  (d={d_qd:.3f}, closer to the query)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Entry point for `python -m hnm_cli.triplets`."""
    parser = argparse.ArgumentParser(prog="python -m hnm_cli.triplets", description=__doc__.splitlines()[0])
    parser.add_argument("mine_dir", type=Path)
    parser.add_argument("--data", type=Path, required=True, help="BEIR folder the negatives were mined from")
    parser.add_argument("-n", type=int, default=5)
    args = parser.parse_args(argv)
    try:
        triplets = sample_triplets(args.mine_dir, args.data, args.n)
    except HnmError as err:
        print(f"Error: {err}", file=sys.stderr)
        return 1
    print(f"Example triplets from {args.mine_dir}:")
    print(format_triplets(triplets) if triplets else "(no pair got a hard negative)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
