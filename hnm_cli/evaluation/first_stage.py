"""The fixed first-stage candidate lists of `hnm eval`: BM25, dense (exact top-k over a vector set) or a user's run.

No artifact handling here: the stage runner fingerprints, writes and reuses the `first-stage/` folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hnm_cli.choices import FirstStage
from hnm_cli.errors import ArtifactMismatchError, DataError
from hnm_cli.evaluation.metrics import ranked
from hnm_cli.inputs import Records

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
    vectors_dir: Path | None = None,
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
        vectors_dir: the vector set for `method = "dense"`.
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
        assert vectors_dir is not None
        candidates = _dense_candidates(vectors_dir, corpus, qids, depth)
    else:
        assert run_file is not None
        candidates = read_run_file(run_file, corpus, set(qids), depth)
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


def _dense_candidates(vec_dir: Path, corpus: Records, qids: list[str], top_k: int) -> Candidates:
    from hnm_cli.artifacts.vectors import read_ids
    from hnm_cli.search import VectorSource, exact_topk

    doc_ids = read_ids(vec_dir / "corpus")
    for row, doc in enumerate(doc_ids):
        if doc not in corpus:
            raise ArtifactMismatchError(
                f"{vec_dir / 'corpus'}: row {row}: doc id '{doc}' is not in the corpus",
                hint="give the corpus the vectors were made from",
            )
    query_row = {q: i for i, q in enumerate(read_ids(vec_dir / "queries"))}
    missing = [q for q in qids if q not in query_row]
    if missing:
        raise ArtifactMismatchError(
            f"{vec_dir / 'queries'}: no vector for {len(missing)} of {len(qids)} evaluated queries "
            f"(e.g. '{missing[0]}')",
            hint="embed the queries file that holds the evaluation split",
        )
    q_vecs = VectorSource.from_dir(vec_dir / "queries").take([query_row[q] for q in qids])
    scores, idx = exact_topk(q_vecs, VectorSource.from_dir(vec_dir / "corpus"), top_k)
    return {
        qid: [(doc_ids[i], float(s)) for i, s in zip(idx[qi], scores[qi], strict=True) if i >= 0]
        for qi, qid in enumerate(qids)
    }


def read_run_file(path: Path, corpus: Records, qids: set[str], top_k: int) -> Candidates:
    """Candidates from a user's run: TREC (`qid Q0 doc rank score tag`) or hnm JSONL (`query_id`, `candidates`).

    Only queries in `qids` are kept; each keeps its `top_k` best documents (score desc, then doc id).

    Args:
        path: the run file; JSONL when its first non-blank byte is `{`, TREC otherwise.
        corpus: the corpus records (every doc id must be in it).
        qids: the evaluated query ids.
        top_k: candidates kept per query.

    Returns:
        The candidates of each query in `qids` that the run has.

    Raises:
        DataError: a malformed line, or a doc id that is not in the corpus (`file:line: ...`).
    """
    path = Path(path)
    scores: dict[str, dict[str, float]] = {}
    with open(path, "rb") as fh:
        head = fh.read(64).lstrip()
    if head.startswith(b"{"):
        for lineno, obj in _iter_objects(path):
            qid, cands = str(obj.get("query_id", "")), obj.get("candidates")
            if not isinstance(cands, list):
                raise DataError(f"{path}:{lineno}: field 'candidates': expected a list of [doc_id, score]")
            for pair in cands:
                if not (isinstance(pair, list) and len(pair) == 2 and isinstance(pair[1], int | float)):
                    raise DataError(f"{path}:{lineno}: field 'candidates': expected [doc_id, score], got {pair!r}")
                _add_hit(scores, qid, str(pair[0]), float(pair[1]), corpus, qids, f"{path}:{lineno}")
    else:
        with open(path, encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, 1):
                cols = line.split()
                if not cols:
                    continue
                if len(cols) != 6:
                    raise DataError(
                        f"{path}:{lineno}: expected 6 columns 'qid Q0 docid rank score tag', got {len(cols)}"
                    )
                try:
                    score = float(cols[4])
                except ValueError as err:
                    raise DataError(f"{path}:{lineno}: field 'score': not a number: '{cols[4]}'") from err
                _add_hit(scores, cols[0], cols[2], score, corpus, qids, f"{path}:{lineno}")
    return {q: [(d, s[d]) for d in ranked(s)[:top_k]] for q, s in scores.items()}


def _iter_objects(path: Path) -> Any:
    from hnm_cli.inputs import iter_json_objects

    return iter_json_objects(path)


def _add_hit(
    scores: dict[str, dict[str, float]], qid: str, doc: str, score: float, corpus: Records, qids: set[str], where: str
) -> None:
    if doc not in corpus:
        raise DataError(f"{where}: doc id '{doc}' is not in the corpus")
    if qid in qids:
        scores.setdefault(qid, {})[doc] = score
