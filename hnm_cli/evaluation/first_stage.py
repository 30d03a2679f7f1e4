"""The fixed first-stage candidate lists of `hnm eval`: BM25, dense (exact top-k over a vector set) or a user's run.

No artifact handling here: the stage runner fingerprints, writes and reuses the `first-stage/` folder.
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hnm_cli.choices import FirstStage
from hnm_cli.errors import ArtifactMismatchError, DataError
from hnm_cli.evaluation.metrics import ranked
from hnm_cli.inputs import Records, iter_json_objects, iter_raw_lines
from hnm_cli.search import VectorSource, exact_topk

log = logging.getLogger("hnm")

# bm25.BM25Index defaults, recorded in the first stage's params so a change there shows in the fingerprint.
BM25_PARAMS = {"k1": 1.5, "b": 0.75, "method": "lucene", "stopwords": "english", "lower": True}

#: query id -> [(doc id, first-stage score), ...], best first.
Candidates = dict[str, list[tuple[str, float]]]


def first_stage_candidates(
    method: str,
    corpus: Records,
    queries: Records,
    qids: list[str],
    top_k: int,
    *,
    ignore_identical_ids: bool = False,
    vectors: DenseVectors | None = None,
    run_file: Path | None = None,
) -> tuple[Candidates, int]:
    """The `top_k` candidates of each evaluated query from one first-stage method.

    Args:
        method: "bm25", "dense" or "run".
        corpus: the corpus records (BM25 indexes `Doc.full_text`).
        queries: the query records.
        qids: the evaluated query ids (sorted).
        top_k: candidates kept per query.
        ignore_identical_ids: drop a candidate whose doc id is the query's own id.
        vectors: the opened vector set for `method = "dense"`.
        run_file: the TREC or JSONL run for `method = "run"`.

    Returns:
        The candidates (a query with none may be absent) and how many identical ids were dropped.

    Raises:
        ArtifactMismatchError: the vector set does not match the corpus or lacks evaluated queries.
        DataError: a malformed run file, or a doc id that is not in the corpus.
    """
    # One extra candidate when the query's own id will be dropped, so every query still gets top_k (BEIR's way).
    depth = top_k + 1 if ignore_identical_ids else top_k
    if method == FirstStage.BM25:
        candidates = _bm25_candidates(corpus, queries, qids, depth)
    elif method == FirstStage.DENSE:
        assert vectors is not None
        candidates = _dense_candidates(vectors, corpus, qids, depth)
    else:
        assert run_file is not None
        candidates = read_run_file(run_file, corpus, set(qids), depth, queries=queries)
    identical_dropped = 0
    if ignore_identical_ids:
        for q, cands in candidates.items():
            kept = [(d, s) for d, s in cands if d != q]
            identical_dropped += len(cands) - len(kept)
            candidates[q] = kept[:top_k]
    return candidates, identical_dropped


def _bm25_candidates(corpus: Records, queries: Records, qids: list[str], top_k: int) -> Candidates:
    from hnm_cli.bm25 import BM25Index

    doc_ids = corpus.ids
    index = BM25Index([corpus[d].full_text for d in doc_ids], **BM25_PARAMS)  # type: ignore[arg-type]
    scores, idx = index.search([queries[q].text for q in qids], top_k)
    out: Candidates = {}
    for qi, qid in enumerate(qids):
        # bm25 pads with -1 when fewer documents match; a zero score is no match at all, so it is not a candidate.
        out[qid] = [(doc_ids[i], float(s)) for i, s in zip(idx[qi], scores[qi], strict=True) if i >= 0 and s > 0]
    return out


@dataclass(frozen=True)
class DenseVectors:
    """A vector set opened for the dense first stage (`artifacts.vectors.open_vector_set`): ids in row order and
    the rows of each part; `where` names the set in messages."""

    where: Path
    doc_ids: list[str]
    query_ids: list[str]
    corpus: VectorSource
    queries: VectorSource


def _dense_candidates(vectors: DenseVectors, corpus: Records, qids: list[str], top_k: int) -> Candidates:
    vec_dir, doc_ids = vectors.where, vectors.doc_ids
    for row, doc in enumerate(doc_ids):
        if doc not in corpus:
            raise ArtifactMismatchError(
                f"{vec_dir / 'corpus'}: row {row}: doc id '{doc}' is not in the corpus",
                hint="give the corpus the vectors were made from",
            )
    query_row = {q: i for i, q in enumerate(vectors.query_ids)}
    missing = [q for q in qids if q not in query_row]
    if missing:
        raise ArtifactMismatchError(
            f"{vec_dir / 'queries'}: no vector for {len(missing)} of {len(qids)} evaluated queries "
            f"(e.g. '{missing[0]}')",
            hint="embed the queries file that holds the evaluation split",
        )
    q_source, c_source = vectors.queries, vectors.corpus
    if q_source.dim != c_source.dim:
        raise ArtifactMismatchError(
            f"{vec_dir}: query vectors have dimension {q_source.dim} but corpus vectors {c_source.dim}; "
            "rebuild the vector set"
        )
    scores, idx = exact_topk(q_source.take([query_row[q] for q in qids]), c_source, top_k)
    return {
        qid: [(doc_ids[i], float(s)) for i, s in zip(idx[qi], scores[qi], strict=True) if i >= 0]
        for qi, qid in enumerate(qids)
    }


def read_run_file(
    path: Path, corpus: Records, qids: set[str], top_k: int, *, queries: Records | None = None
) -> Candidates:
    """Candidates from a user's run: TREC (`qid Q0 doc rank score tag`) or hnm JSONL (`query_id`, `candidates`).

    Only queries in `qids` are kept; each keeps its `top_k` best documents (score desc, then doc id). A document
    listed twice for one query keeps its last score (pytrec_eval's dict semantics); query ids that are not in
    `queries` are ignored. Both get one warning line on stderr with their counts and a first example.

    Args:
        path: the run file; JSONL when its first non-blank byte is `{`, TREC otherwise.
        corpus: the corpus records (every doc id must be in it).
        qids: the evaluated query ids.
        top_k: candidates kept per query.
        queries: the query records, to tell unknown query ids from queries of other splits (None: no warning).

    Returns:
        The candidates of each query in `qids` that the run has.

    Raises:
        DataError: an empty file, a malformed line (`file:line: field 'x': ...`: a rank that is not an integer, a
            score that is not a finite number, bytes that are not UTF-8), a doc id that is not in the corpus, or
            a run that names none of the evaluated queries.
    """
    path = Path(path)
    hits = _RunHits(path, corpus, qids, queries)
    head = next((raw.lstrip() for _, raw in iter_raw_lines(path) if raw.strip()), b"")
    if head.startswith(b"{"):
        for lineno, obj in _iter_objects(path):
            where = f"{path}:{lineno}"
            qid, cands = obj.get("query_id"), obj.get("candidates")
            if isinstance(qid, bool) or not isinstance(qid, str | int) or not str(qid).strip():
                raise DataError(f"{where}: field 'query_id': expected a query id, got {qid!r}")
            if not isinstance(cands, list):
                raise DataError(f"{where}: field 'candidates': expected a list of [doc_id, score]")
            for pair in cands:
                if not (isinstance(pair, list) and len(pair) == 2 and isinstance(pair[0], str | int)):
                    raise DataError(f"{where}: field 'candidates': expected [doc_id, score], got {pair!r}")
                score = pair[1]
                if isinstance(score, bool) or not isinstance(score, int | float) or not math.isfinite(score):
                    raise DataError(f"{where}: field 'candidates': score of '{pair[0]}' is not a finite number")
                hits.add(str(qid), str(pair[0]), float(score), lineno)
    else:
        for lineno, raw in iter_raw_lines(path):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                raise DataError(f"{path}:{lineno}: invalid UTF-8 at byte {err.start} (not a text run file?)") from err
            cols = line.split()
            if not cols:
                continue
            if len(cols) != 6:
                raise DataError(f"{path}:{lineno}: expected 6 columns 'qid Q0 docid rank score tag', got {len(cols)}")
            if not re.fullmatch(r"[+-]?\d+", cols[3]):
                raise DataError(f"{path}:{lineno}: field 'rank': expected an integer, got '{cols[3]}'")
            try:
                score = float(cols[4])
            except ValueError as err:
                raise DataError(f"{path}:{lineno}: field 'score': not a number: '{cols[4]}'") from err
            if not math.isfinite(score):
                raise DataError(f"{path}:{lineno}: field 'score': not a finite number: '{cols[4]}'")
            hits.add(cols[0], cols[2], score, lineno)
    hits.finish()
    return {q: [(d, s[d]) for d in ranked(s)[:top_k]] for q, s in hits.scores.items()}


class _RunHits:
    """The run's scores of evaluated queries, and what the warnings and errors at the end need."""

    def __init__(self, path: Path, corpus: Records, qids: set[str], queries: Records | None) -> None:
        self.path, self.corpus, self.qids, self.queries = path, corpus, qids, queries
        self.scores: dict[str, dict[str, float]] = {}
        self.first_line: dict[tuple[str, str], int] = {}
        self.lines = 0
        self.unknown: dict[str, int] = {}  # unknown query id -> its first line
        self.unknown_lines = 0
        self.duplicates = 0
        self.first_duplicate: tuple[str, str, int, int] | None = None

    def add(self, qid: str, doc: str, score: float, lineno: int) -> None:
        self.lines += 1
        if doc not in self.corpus:
            raise DataError(f"{self.path}:{lineno}: doc id '{doc}' is not in the corpus")
        if self.queries is not None and qid not in self.queries:
            self.unknown.setdefault(qid, lineno)
            self.unknown_lines += 1
            return
        if (qid, doc) in self.first_line:
            self.duplicates += 1
            if self.first_duplicate is None:
                self.first_duplicate = (qid, doc, lineno, self.first_line[(qid, doc)])
        else:
            self.first_line[(qid, doc)] = lineno
        if qid in self.qids:
            self.scores.setdefault(qid, {})[doc] = score

    def finish(self) -> None:
        """Refuse an empty run or one without an evaluated query; warn once per kind of oddity."""
        if not self.lines:
            raise DataError(f"{self.path}: no candidates (an empty run file)")
        if self.unknown:
            qid, line = next(iter(self.unknown.items()))
            log.warning(
                "eval: warning: %s: %d line(s) name %d query id(s) that are not in the queries (e.g. '%s' at line "
                "%d); ignored",
                self.path, self.unknown_lines, len(self.unknown), qid, line,
            )  # fmt: skip
        if self.first_duplicate is not None:
            qid, doc, line, first = self.first_duplicate
            log.warning(
                "eval: warning: %s: %d duplicate (query, doc) line(s) (e.g. '%s' '%s' at line %d, first at line "
                "%d); the last score is kept",
                self.path, self.duplicates, qid, doc, line, first,
            )  # fmt: skip
        if not self.scores:
            raise DataError(
                f"{self.path}: none of its {self.lines} lines is for one of the {len(self.qids)} evaluated queries "
                f"(e.g. '{sorted(self.qids)[0]}'); is it a run of another split?"
            )


def _iter_objects(path: Path) -> Any:
    return iter_json_objects(path)


def _add_hit(
    scores: dict[str, dict[str, float]], qid: str, doc: str, score: float, corpus: Records, qids: set[str], where: str
) -> None:
    if doc not in corpus:
        raise DataError(f"{where}: doc id '{doc}' is not in the corpus")
    if qid in qids:
        scores.setdefault(qid, {})[doc] = score
