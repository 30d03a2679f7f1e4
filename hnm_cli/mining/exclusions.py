"""Which documents may never be a query's negative: its positives by id, and copies of them (or of itself) by text."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from hnm_cli.inputs import Records, text_hash


@dataclass
class Exclusions:
    """Per query id, the document ids that may never be its negatives, with the counts the stats report.

    Attributes:
        excluded_ids: query id -> excluded document ids (always at least the query's positives).
        duplicates_excluded: documents excluded for repeating a positive's text under another id.
        query_duplicates_excluded: documents excluded for repeating the query's own text.
    """

    excluded_ids: dict[str, set[str]]
    duplicates_excluded: int
    query_duplicates_excluded: int
    twin_positives_excluded: int = 0  # positives of another query with the same text, excluded for this one


def build_exclusions(
    pair_ids: Sequence[tuple[str, str]],
    corpus: Records,
    queries: Records,
    corpus_ids: Sequence[str],
    *,
    exclude_query_duplicates: bool,
    exclude_twin_positives: bool = True,
) -> Exclusions:
    """Exclusions for the (query id, positive id) pairs over the documents `corpus_ids`.

    Every positive of the query by id, and every document whose normalised text equals a positive's (the same
    passage under another id is a false negative waiting to happen). Only the positives' hashes are kept, so
    memory grows with the qrels, not with the corpus. With `exclude_query_duplicates`, also a document that *is*
    the query (Quora, ArguAna and CQADupStack put queries in the corpus too): it has d(Q,D) ~ 0, so every strategy
    would pick it first, teaching the reranker that a text does not match itself. Matched on the body alone as
    well, since the query has no title. With `exclude_twin_positives`, queries whose normalised texts are equal
    (SciFact's train 89 and 90) share exclusions: the positive of one is never the other's negative.
    """
    positives: dict[str, list[str]] = {}
    for q, d in pair_ids:
        positives.setdefault(q, []).append(d)
    queries_by_hash: dict[str, set[str]] = {}
    for q, pos in positives.items():
        for d in pos:
            queries_by_hash.setdefault(text_hash(corpus[d].full_text), set()).add(q)
    excluded_ids = {q: set(pos) for q, pos in positives.items()}
    same_as_query: dict[str, list[str]] = {}
    if exclude_query_duplicates:
        for q in positives:
            if (query := queries.items.get(q)) is not None:
                same_as_query.setdefault(text_hash(query.text), []).append(q)
    identical = 0
    for d in corpus_ids:
        doc = corpus.items.get(d)
        if doc is None:
            continue
        full = text_hash(doc.full_text)
        for q in queries_by_hash.get(full, ()):
            excluded_ids[q].add(d)
        if same_as_query:
            for q in {
                *same_as_query.get(full, ()),
                *(same_as_query.get(text_hash(doc.text), ()) if doc.title else ()),
            }:
                if d not in excluded_ids[q]:
                    excluded_ids[q].add(d)
                    identical += 1
    dups = sum(len(excluded_ids[q]) - len(set(pos)) for q, pos in positives.items()) - identical
    twins = 0
    if exclude_twin_positives:
        by_text: dict[str, list[str]] = {}
        for q in positives:
            if (query := queries.items.get(q)) is not None:
                by_text.setdefault(text_hash(query.text), []).append(q)
        for group in (g for g in by_text.values() if len(g) > 1):
            shared = set().union(*(positives[q] for q in group))
            for q in group:
                added = shared - excluded_ids[q]
                twins += len(added)
                excluded_ids[q] |= added
    return Exclusions(excluded_ids, dups, identical, twins)
