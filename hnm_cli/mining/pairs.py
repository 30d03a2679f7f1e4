"""From ids to rows: the (query, positive) pairs of a run, the rows they map to, what may never be a negative, and
the texts BM25 reads. `hnm mine` and the Python API's `mine_hard_negatives` both map ids through these, so the same
inputs reach `mine_negatives` in the same order whichever asked.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from hnm_cli.choices import Fallback, Strategy
from hnm_cli.config import MineConfig
from hnm_cli.inputs import Records
from hnm_cli.mining.exclusions import Exclusions, build_exclusions
from hnm_cli.mining.results import Pair
from hnm_cli.mining.strategies import Ids, Texts


def positive_pairs(qrels: Mapping[str, Mapping[str, int]]) -> list[tuple[str, str]]:
    """(query id, positive id) for every judgement with relevance > 0, in qrels order."""
    return [(q, d) for q, docs in qrels.items() for d, rel in docs.items() if rel > 0]


@dataclass(frozen=True)
class PairRows:
    """The pairs of a run and the rows they map to.

    Query row i is `query_ids[i]`, the queries that have pairs in first-seen order (the rows of the query vectors
    handed to the miner); corpus row j is `corpus_ids[j]` (the rows of the corpus vectors).
    """

    pair_ids: list[tuple[str, str]]
    corpus_ids: list[str]
    corpus_row: dict[str, int]
    query_ids: list[str]
    query_row: dict[str, int]

    @classmethod
    def build(cls, pair_ids: list[tuple[str, str]], corpus_ids: list[str]) -> PairRows:
        query_ids = list(dict.fromkeys(q for q, _ in pair_ids))
        return cls(
            pair_ids=pair_ids,
            corpus_ids=corpus_ids,
            corpus_row={d: i for i, d in enumerate(corpus_ids)},
            query_ids=query_ids,
            query_row={q: i for i, q in enumerate(query_ids)},
        )

    def pairs(self) -> list[Pair]:
        return [Pair(self.query_row[q], self.corpus_row[d]) for q, d in self.pair_ids]

    def excluded_rows(self, excluded_ids: Mapping[str, set[str]]) -> dict[int, set[int]]:
        return {
            self.query_row[q]: {self.corpus_row[d] for d in ds if d in self.corpus_row}
            for q, ds in excluded_ids.items()
        }

    def exclusions(self, corpus: Records, queries: Records, cfg: MineConfig) -> Exclusions:
        """What may never be a negative of each query (`mining.exclusions.build_exclusions`)."""
        return build_exclusions(
            self.pair_ids,
            corpus,
            queries,
            self.corpus_ids,
            exclude_query_duplicates=cfg.exclude_query_duplicates,
            exclude_twin_positives=cfg.exclude_twin_positives,
        )

    def ids(self) -> Ids:
        return Ids(self.corpus_ids, self.query_ids)

    def texts(self, corpus: Records, queries: Records, cfg: MineConfig) -> Texts | None:
        """What BM25 reads, when the strategy or the fallback is BM25 (None otherwise: nothing else reads texts)."""
        if cfg.strategy != Strategy.BM25 and cfg.fallback != Fallback.BM25:
            return None
        return Texts(
            corpus=[corpus[d].full_text for d in self.corpus_ids],
            queries=[queries[q].text for q in self.query_ids],
        )
