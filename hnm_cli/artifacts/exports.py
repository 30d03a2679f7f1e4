"""Mined rows -> text datasets in sentence-transformers' layouts (pure: rows and texts in, dicts out).

Layouts (column names are what sentence-transformers' losses and trainers read by position/name):
  * `triplet`: one row per negative: `anchor`, `positive`, `negative`;
  * `n-tuple`: one row per pair with exactly `num_negatives` negatives: `anchor`, `positive`,
    `negative_1` .. `negative_n` (pairs with fewer are skipped: a dataset needs one column set);
  * `labeled-pair`: `query`, `passage`, `label` (1 for the pair's positive, 0 for each negative);
    a (query, passage) seen twice for the same query is written once;
  * `labeled-list`: one row per pair: `query`, `docs` [positive, negatives...], `labels` [1, 0, ...].

Pairs with no negative are skipped in every layout (they carry no contrast); the count is returned.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hnm_cli.choices import ExportLayout

LAYOUTS = tuple(ExportLayout)


@dataclass
class ExportCounts:
    """What an export wrote and skipped."""

    rows: int = 0
    pairs_used: int = 0
    pairs_skipped_empty: int = 0
    pairs_skipped_short: int = 0  # n-tuple only: fewer than num_negatives negatives


def export_rows(
    rows: Iterable[Mapping[str, Any]],
    layout: str,
    query_text: Mapping[str, str],
    doc_text: Mapping[str, str],
    *,
    num_negatives: int,
    counts: ExportCounts | None = None,
) -> Iterator[dict[str, Any]]:
    """Yield the text records of `layout` for mined rows.

    Args:
        rows: mined rows (`query_id`, `positive_id`, `negatives: [{doc_id, ...}]`), in output order.
        layout: one of `LAYOUTS`.
        query_text: query id -> query text.
        doc_text: doc id -> document text (`Doc.full_text`).
        num_negatives: the n of `n-tuple` (the number of negatives asked for when mining).
        counts: optional accumulator, filled while iterating.

    Raises:
        ValueError: unknown layout.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"unknown export layout {layout!r}; expected one of {', '.join(LAYOUTS)}")
    counts = counts if counts is not None else ExportCounts()
    seen_pairs: dict[str, set[str]] = {}  # labeled-pair dedup, per query
    for row in rows:
        negs = [n["doc_id"] for n in row["negatives"]]
        if not negs:
            counts.pairs_skipped_empty += 1
            continue
        q = query_text[row["query_id"]]
        pos = doc_text[row["positive_id"]]
        if layout == ExportLayout.TRIPLET:
            counts.pairs_used += 1
            for d in negs:
                counts.rows += 1
                yield {"anchor": q, "positive": pos, "negative": doc_text[d]}
        elif layout == ExportLayout.N_TUPLE:
            if len(negs) < num_negatives:
                counts.pairs_skipped_short += 1
                continue
            counts.pairs_used += 1
            counts.rows += 1
            record = {"anchor": q, "positive": pos}
            record.update({f"negative_{i + 1}": doc_text[d] for i, d in enumerate(negs[:num_negatives])})
            yield record
        elif layout == ExportLayout.LABELED_PAIR:
            counts.pairs_used += 1
            seen = seen_pairs.setdefault(row["query_id"], set())
            for doc_id, label in [(row["positive_id"], 1), *((d, 0) for d in negs)]:
                if doc_id in seen:
                    continue
                seen.add(doc_id)
                counts.rows += 1
                yield {"query": q, "passage": doc_text[doc_id], "label": label}
        else:  # labeled-list
            counts.pairs_used += 1
            counts.rows += 1
            yield {"query": q, "docs": [pos, *(doc_text[d] for d in negs)], "labels": [1] + [0] * len(negs)}


class _LazyText(dict):  # type: ignore[type-arg]
    """doc id -> text, computed on demand (an export touches few documents of a big corpus)."""

    def __init__(self, text_of: Callable[[str], str]) -> None:
        super().__init__()
        self._text_of = text_of

    def __missing__(self, key: str) -> str:
        return self._text_of(key)


def write_export(
    out: Path,
    layout: ExportLayout,
    rows: Iterable[Mapping[str, Any]],
    query_text: Mapping[str, str],
    doc_text: Callable[[str], str],
    num_negatives: int,
) -> tuple[str, int, dict[str, Any]]:
    """Write `<out>/export/<layout>.jsonl`; return (its path relative to `out`, rows written, counts for the stats)."""
    from hnm_cli.fileio import write_jsonl

    counts = ExportCounts()
    rel = f"export/{layout}.jsonl"
    n = write_jsonl(
        Path(out) / rel,
        export_rows(rows, layout, query_text, _LazyText(doc_text), num_negatives=num_negatives, counts=counts),
    )
    stats = {"layout": str(layout), "rows": n, "pairs_used": counts.pairs_used,
             "pairs_skipped_empty": counts.pairs_skipped_empty, "pairs_skipped_short": counts.pairs_skipped_short}  # fmt: skip
    return rel, n, stats
