"""The eval-artifact files that readers other than `hnm eval` need: names, the rankings writer, and readers.

`hnm eval` (stages/evaluate.py) writes `report.json`, `report.md`, `per-query.jsonl`, `rankings.jsonl` and
`first-stage/`; `hnm show` and `hnm report` read them through here. `rankings.jsonl` holds, per (run, query), the
run's top `RANKING_DEPTH` documents with their scores, best first (`{"run", "query_id", "top": [[doc_id, score],
...]}`); for an arm with several seeds, its first seed's ranking. It exists so a report can show what a reranker
changed for one query (the metrics alone say only that it changed); artifacts written before it have none.
"""

from __future__ import annotations

from collections.abc import Container, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import orjson

from hnm_cli.artifacts.files import iter_jsonl, write_jsonl
from hnm_cli.errors import CorruptArtifactError

REPORT_JSON = "report.json"
REPORT_MD = "report.md"
PER_QUERY = "per-query.jsonl"
RANKINGS = "rankings.jsonl"
FIRST_STAGE_DIR = "first-stage"
CANDIDATES = "candidates.jsonl"
RANKING_DEPTH = 10


def write_rankings(path: Path, runs: Mapping[str, Mapping[str, Mapping[str, float]]], qids: Iterable[str]) -> int:
    """Write `rankings.jsonl`: each run's top `RANKING_DEPTH` documents per query, in the metrics' order.

    Args:
        path: the file to write (atomically).
        runs: {run name: {query_id: {doc_id: score}}}, in report order.
        qids: the evaluated query ids, in the order to write them.

    Returns:
        The number of lines written.
    """
    from hnm_cli.evaluation.metrics import ranked  # the metrics' tie order, so the top shown is the top scored

    order = list(qids)
    rows = (
        {"run": name, "query_id": q, "top": [[d, scores[d]] for d in ranked(scores)[:RANKING_DEPTH]]}
        for name, run in runs.items()
        for q in order
        for scores in [run.get(q, {})]
    )
    return write_jsonl(path, rows)


def _unreadable(path: Path, err: Exception) -> CorruptArtifactError:
    return CorruptArtifactError(
        f"{path} is unreadable ({str(err).splitlines()[0][:100]}); rerun it: hnm eval ... --out {path.parent} --force"
    )


def read_report(eval_dir: Path) -> dict[str, Any]:
    """`report.json` of an eval artifact, checked to be an eval report (an object with `runs`).

    Raises:
        CorruptArtifactError: missing, not JSON, or not an eval report.
    """
    path = Path(eval_dir) / REPORT_JSON
    try:
        report = orjson.loads(path.read_bytes())
        if not isinstance(report, dict) or not isinstance(report.get("runs"), dict):
            raise ValueError(f"a JSON {type(report).__name__} without 'runs', not an eval report")
    except (OSError, ValueError) as err:  # JSONDecodeError is a ValueError
        raise _unreadable(path, err) from err
    return report


def iter_per_query(eval_dir: Path) -> Iterator[dict[str, Any]]:
    """Every line of `per-query.jsonl`: `{"run", "query_id", <metric>: value, ...}`.

    Raises:
        CorruptArtifactError: the file is missing or a line is not a JSON object with `run` and `query_id`.
    """
    path = Path(eval_dir) / PER_QUERY
    try:
        for row in iter_jsonl(path):
            if not isinstance(row, dict) or "run" not in row or "query_id" not in row:
                raise ValueError("a line without 'run' and 'query_id'")
            yield row
    except (OSError, ValueError) as err:
        raise _unreadable(path, err) from err


def read_rankings(
    eval_dir: Path, query_ids: Container[str] | None = None
) -> dict[str, dict[str, list[tuple[str, float]]]] | None:
    """`rankings.jsonl` as {run: {query_id: [(doc_id, score), ...]}}, or None for an artifact without one.

    Args:
        eval_dir: the eval artifact.
        query_ids: keep only these queries (a report needs a few); default all.

    Raises:
        CorruptArtifactError: a line that is not a ranking.
    """
    path = Path(eval_dir) / RANKINGS
    if not path.is_file():
        return None
    out: dict[str, dict[str, list[tuple[str, float]]]] = {}
    try:
        for row in iter_jsonl(path):
            if query_ids is not None and row["query_id"] not in query_ids:
                continue
            out.setdefault(str(row["run"]), {})[str(row["query_id"])] = [(str(d), float(s)) for d, s in row["top"]]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise _unreadable(path, err) from err
    return out


def read_candidates(eval_dir: Path, query_ids: Container[str] | None = None) -> dict[str, list[tuple[str, float]]]:
    """The first stage's candidate lists, {query_id: [(doc_id, score), ...]} (best first).

    Raises:
        CorruptArtifactError: the file is missing or malformed.
    """
    path = Path(eval_dir) / FIRST_STAGE_DIR / CANDIDATES
    out: dict[str, list[tuple[str, float]]] = {}
    try:
        for row in iter_jsonl(path):
            if query_ids is None or row["query_id"] in query_ids:
                out[str(row["query_id"])] = [(str(d), float(s)) for d, s in row["candidates"]]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise _unreadable(path, err) from err
    return out
