"""Reading a qrels file: BEIR's TSV (header line required) or TREC's four columns, every grade and id checked.

Where the file is (`qrels/<split>.tsv` of a BEIR folder, or a file given) is `inputs.resolve_qrels_file`'s; this
module reads it, one `DataError` line per bad row naming file, line and field.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

from hnm_cli.errors import DataError
from hnm_cli.inputs import iter_raw_lines

log = logging.getLogger("hnm")

Qrels = dict[str, dict[str, int]]  # query_id -> doc_id -> relevance (ir_measures/BEIR shape)


MAX_GRADE = 2**31 - 1  # a relevance grade must fit a 32-bit int, as in trec_eval
_GRADE = re.compile(r"[+-]?\d+")


def read_qrels(
    path: Path,
    *,
    query_ids: Any | None = None,
    doc_ids: Any | None = None,
    warn: bool = True,
) -> Qrels:
    """Read a BEIR qrels TSV (header line required) and check every id against the given id sets.

    `warn=False` keeps the conflicting-rows warning for the reader that uses the grades (a guard that only
    compares pairs reads the same file again and must not say it twice).

    Args:
        path: the qrels file.
        query_ids: container of known query ids, or None to skip the check.
        doc_ids: container of known document ids, or None to skip the check.

    Returns:
        {query_id: {doc_id: relevance}}, relevance as int (rows with relevance <= 0 are kept). A pair listed
        again with another grade keeps the last one, as BEIR's loader and pytrec_eval do (a dict per query), and
        one warning line gives the count and the first conflict with both lines: refusing would reject qrels
        those tools read, silence would hide a positive that became a negative.
    """
    path = Path(path)
    qrels: Qrels = {}
    first_line: dict[tuple[str, str], int] = {}
    conflicts = 0
    example = ""
    for lineno, raw in iter_raw_lines(path):
        where = f"{path}:{lineno}"
        try:
            line = raw.decode("utf-8").rstrip("\r\n")
        except UnicodeDecodeError as err:
            raise DataError(f"{where}: invalid UTF-8 at byte {err.start}") from err
        if not line.strip():
            continue
        cols = line.split("\t")
        if lineno == 1:
            if cols[0].strip().lower() in ("query-id", "query_id", "qid"):
                continue
            raise DataError(f"{where}: expected a header line 'query-id<TAB>corpus-id<TAB>score'")
        if len(cols) == 4:  # TREC layout: qid iter docid rel
            cols = [cols[0], cols[2], cols[3]]
        if len(cols) != 3:
            raise DataError(f"{where}: expected 3 tab-separated columns, got {len(cols)}")
        qid, did, score = (c.strip() for c in cols)
        # BEIR relevance grades are integers; "0.5" would silently drop a positive, "inf" would overflow.
        if not _GRADE.fullmatch(score):
            raise DataError(f"{where}: field 'score': expected an integer relevance grade, got '{score}'")
        # int() of a 10^5-digit grade is slow and Python refuses past 4300 digits: count the digits first.
        rel = int(score) if len(score.lstrip("+-").lstrip("0")) <= 10 else MAX_GRADE + 1
        if abs(rel) > MAX_GRADE:
            # trec_eval reads grades as C ints; a 400-digit grade would overflow eval's float metrics.
            raise DataError(
                f"{where}: field 'score': relevance grade {score[:20]}{'...' if len(score) > 20 else ''} is out of "
                f"range (at most {MAX_GRADE} in absolute value)"
            )
        if not qid or not did:
            raise DataError(f"{where}: field '{'query-id' if not qid else 'corpus-id'}': empty id")
        if query_ids is not None and qid not in query_ids:
            raise DataError(f"{where}: field 'query-id': unknown query id '{qid}' (not in queries)")
        if doc_ids is not None and did not in doc_ids:
            raise DataError(f"{where}: field 'corpus-id': unknown document id '{did}' (not in corpus)")
        grades = qrels.setdefault(qid, {})
        if did in grades and grades[did] != rel:
            conflicts += 1
            example = example or (
                f"'{qid}' '{did}': {grades[did]} at line {first_line[(qid, did)]}, {rel} at line {lineno}"
            )
        first_line.setdefault((qid, did), lineno)
        grades[did] = rel
    if not qrels:
        raise DataError(f"{path}: no qrels rows")
    if conflicts and warn:
        log.warning(
            "qrels: warning: %s: %d row(s) give a (query, doc) pair another score than an earlier row (e.g. %s); "
            "the last score is kept",
            path, conflicts, example,
        )  # fmt: skip
    return qrels


def positives(qrels: Qrels) -> dict[str, list[str]]:
    """Query id -> relevant doc ids (relevance > 0), in file order."""
    return {q: [d for d, r in docs.items() if r > 0] for q, docs in qrels.items() if any(r > 0 for r in docs.values())}
