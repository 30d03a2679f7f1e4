"""The ids, rows, pairs and exclusions of one `hnm mine` run, and the vectors they read (queries, ensemble members)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hnm_cli.artifacts.manifest import Manifest, load_manifest
from hnm_cli.artifacts.vectors import open_vector_source, read_ids, read_rows_of, space_key, vector_dim
from hnm_cli.choices import Stage, Vote
from hnm_cli.config import MineConfig
from hnm_cli.errors import ArtifactMismatchError, ConfigError, DataError
from hnm_cli.inputs import Records
from hnm_cli.mining.controls import Members
from hnm_cli.mining.pairs import PairRows, positive_pairs


def _qrels_line(path: Path, column: int, value: str) -> int:
    """Line number of the first qrels row whose `column` equals `value` (for error messages only)."""
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, 1):
            cols = raw.decode("utf-8", "replace").rstrip("\r\n").split("\t")
            if len(cols) == 4:
                cols = [cols[0], cols[2], cols[3]]
            if len(cols) > column and cols[column].strip() == value:
                return lineno
    return 0


@dataclass
class MineContext:
    """Ids, rows, pairs and exclusions of one run (vectors stay memory-mapped)."""

    corpus: Records
    queries: Records
    pair_ids: list[tuple[str, str]]  # (query id, positive id), qrels order
    corpus_ids: list[str]
    corpus_row: dict[str, int]
    query_ids: list[str]  # the queries that have pairs, in first-seen order; row i of query_vecs
    query_row: dict[str, int]
    excluded_ids: dict[str, set[str]]  # query id -> doc ids that may never be negatives
    duplicates_excluded: int  # documents excluded for repeating a positive's text under another id
    twin_positives_excluded: int  # positives of a query with the same text, excluded
    query_duplicates_excluded: int  # documents excluded for repeating the query's own text
    vectors_dir: Path | None
    query_vecs: np.ndarray | None = None
    hnsw_files: list[str] = field(default_factory=list)
    space: str | None = None  # the vectors' space key (`artifacts.vectors.space_key`), for later updates
    update_counts: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def load(
        cls,
        qrels_file: Path,
        vectors: Manifest | None,
        corpus: Records,
        queries: Records,
        qrels: dict[str, dict[str, int]],
        cfg: MineConfig,
    ) -> MineContext:
        pair_ids = positive_pairs(qrels)
        if not pair_ids:
            raise DataError(f"{qrels_file}: no (query, positive) pairs with relevance > 0")

        vectors_dir = vectors.path if vectors is not None else None
        if vectors_dir is not None:
            corpus_ids = read_ids(vectors_dir / "corpus", known=corpus)  # a row per known doc, each once
            have_q = set(read_ids(vectors_dir / "queries"))
            _check_pairs_have_vectors(qrels_file, pair_ids, have_q, set(corpus_ids), vectors_dir)
            dq, dc = vector_dim(vectors_dir / "queries"), vector_dim(vectors_dir / "corpus")
            if dq != dc:
                raise ArtifactMismatchError(
                    f"{vectors_dir}: query vectors have dimension {dq} but corpus vectors {dc}; rebuild the vector set"
                )
        else:
            corpus_ids = corpus.ids
        rows = PairRows.build(pair_ids, corpus_ids)
        excl = rows.exclusions(corpus, queries, cfg)
        return cls(
            corpus=corpus,
            queries=queries,
            pair_ids=pair_ids,
            corpus_ids=corpus_ids,
            corpus_row=rows.corpus_row,
            query_ids=rows.query_ids,
            query_row=rows.query_row,
            excluded_ids=excl.excluded_ids,
            duplicates_excluded=excl.duplicates_excluded,
            twin_positives_excluded=excl.twin_positives_excluded,
            query_duplicates_excluded=excl.query_duplicates_excluded,
            vectors_dir=vectors_dir,
            space=space_key(vectors) if vectors is not None else None,
        )

    def load_query_vectors(self) -> np.ndarray:
        """Float32 vectors of the mined queries (row i = `query_ids[i]`); queries are few, so read into RAM."""
        if self.query_vecs is None:
            assert self.vectors_dir is not None
            self.query_vecs = read_rows_of(self.vectors_dir / "queries", self.query_ids)
        return self.query_vecs

    @property
    def rows(self) -> PairRows:
        return PairRows(self.pair_ids, self.corpus_ids, self.corpus_row, self.query_ids, self.query_row)

    def pairs(self) -> list[Any]:
        return self.rows.pairs()

    def excluded_rows(self) -> dict[int, set[int]]:
        return self.rows.excluded_rows(self.excluded_ids)


def _check_pairs_have_vectors(
    qrels_file: Path,
    pair_ids: Sequence[tuple[str, str]],
    query_ids: set[str],
    corpus_ids: set[str],
    vectors_dir: Path,
) -> None:
    for q, d in pair_ids:
        if q not in query_ids:
            line = _qrels_line(qrels_file, 0, q)
            raise ArtifactMismatchError(
                f"{qrels_file}:{line}: field 'query-id': query id '{q}' has no vector in {vectors_dir}"
            )
        if d not in corpus_ids:
            line = _qrels_line(qrels_file, 1, d)
            raise ArtifactMismatchError(
                f"{qrels_file}:{line}: field 'corpus-id': document id '{d}' has no vector in {vectors_dir}"
            )


# Above this many pairs the members' disagreement is left out of the risk figures unless a vote needs the members
# (it reads every member's vectors of every chosen negative, one pair at a time).
MEMBERS_RISK_MAX_PAIRS = 200_000


def ensemble_members(ctx: MineContext, cfg: MineConfig) -> Members | None:
    """The ensemble members behind a reduce artifact, row-aligned with its vectors (`mining.controls.Members`).

    None for a one-model vector set (nothing to vote), and for large runs that do not vote.
    """
    assert ctx.vectors_dir is not None
    manifest = load_manifest(ctx.vectors_dir)
    if manifest is None or manifest.stage != Stage.REDUCE:
        if cfg.vote != Vote.NONE:
            raise ConfigError(
                f"mine.vote needs an ensemble: {ctx.vectors_dir} is one model's vectors, not a reduce output"
            )
        return None
    if cfg.vote == Vote.NONE and len(ctx.pair_ids) > MEMBERS_RISK_MAX_PAIRS:
        return None
    dirs = [(rec["role"].split(":", 1)[1], Path(rec["path"])) for rec in manifest.inputs
            if str(rec.get("role", "")).startswith("vectors:")]  # fmt: skip
    if not dirs:
        return None
    names, queries, corpora, remaps = [], [], [], []
    for name, folder in dirs:
        if not (folder / "corpus").is_dir():
            raise ArtifactMismatchError(
                f"{ctx.vectors_dir}: its member {name!r} is gone from {folder}; vote and the risk figures need it"
            )
        member_ids = read_ids(folder / "corpus")
        if member_ids == ctx.corpus_ids:
            remap = None
        else:
            row = {d: i for i, d in enumerate(member_ids)}
            remap = np.array([row[d] for d in ctx.corpus_ids], dtype=np.int64)
        names.append(name)
        queries.append(read_rows_of(folder / "queries", ctx.query_ids))
        corpora.append(open_vector_source(folder / "corpus"))
        remaps.append(remap)
    return Members(names, queries, corpora, remaps)
