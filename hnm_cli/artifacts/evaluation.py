"""The eval artifact's files, the only module that reads and writes them.

`<out>/first-stage/candidates.jsonl` (the fixed first stage, its own small artifact), `report.json` (runs and metrics
in their order), `report.md`, `per-query.jsonl` and `rankings.jsonl`. `hnm eval` (stages/evaluate.py) writes them
through here, `hnm show` and `hnm report` read them through here; the report's content is
`hnm_cli.evaluation.report`'s. `rankings.jsonl` holds, per (run, query), the run's top `RANKING_DEPTH` documents with
their scores, best first (`{"run", "query_id", "top": [[doc_id, score], ...]}`); for an arm with several seeds, its
first seed's ranking. It exists so a report can show what a reranker changed for one query (the metrics alone say
only that it changed); artifacts written before it have none.
"""

from __future__ import annotations

from collections.abc import Container, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson

from hnm_cli.errors import CorruptArtifactError, DataError
from hnm_cli.evaluation.first_stage import Candidates
from hnm_cli.evaluation.metrics import ranked
from hnm_cli.fileio import atomic_write_bytes, iter_jsonl, recorded_file, write_jsonl

REPORT_JSON = "report.json"
REPORT_MD = "report.md"
PER_QUERY = "per-query.jsonl"
RANKINGS = "rankings.jsonl"
FIRST_STAGE_DIR = "first-stage"
CANDIDATES = "candidates.jsonl"
RANKING_DEPTH = 10
STALE_PATTERNS = ["*.jsonl", "*.md", REPORT_JSON]


def write_candidates(out: Path, qids: Sequence[str], candidates: Candidates) -> list[int]:
    """Write `<out>/candidates.jsonl`, one row per query of `qids` (in that order); return each row's length."""
    rows = [{"query_id": q, "candidates": [[d, s] for d, s in candidates.get(q, [])]} for q in qids]
    write_jsonl(Path(out) / CANDIDATES, rows)
    return [len(r["candidates"]) for r in rows]


def read_first_stage(out: Path, corpus: Container[str]) -> Candidates:
    """The candidates of a first-stage folder (`<eval out>/first-stage`), every doc id checked to be in `corpus`."""
    path = Path(out) / CANDIDATES
    found: Candidates = {}
    for lineno, row in enumerate(iter_jsonl(path), 1):
        for doc, _score in row["candidates"]:
            if doc not in corpus:
                raise DataError(f"{path}:{lineno}: field 'candidates': doc id '{doc}' is not in the corpus")
        found[row["query_id"]] = [(d, float(s)) for d, s in row["candidates"]]
    return found


def write_report(
    out: Path,
    report: Mapping[str, Any],
    markdown: str,
    per_query: list[dict[str, Any]],
    rankings: Mapping[str, Mapping[str, Mapping[str, float]]],
    qids: Iterable[str],
) -> list[str]:
    """Write the report files into `out` (`rankings`: {run: {query_id: {doc_id: score}}}); return their names."""
    out = Path(out)
    write_jsonl(out / PER_QUERY, per_query)
    # Not atomic_write_json: that sorts keys, and the order of runs and metrics is part of the report.
    atomic_write_bytes(out / REPORT_JSON, orjson.dumps(report, option=orjson.OPT_INDENT_2) + b"\n")
    atomic_write_bytes(out / REPORT_MD, markdown.encode("utf-8"))
    write_rankings(out / RANKINGS, rankings, qids)
    return [REPORT_JSON, REPORT_MD, PER_QUERY, RANKINGS]


def write_rankings(path: Path, runs: Mapping[str, Mapping[str, Mapping[str, float]]], qids: Iterable[str]) -> int:
    """Write `rankings.jsonl`: each run's top `RANKING_DEPTH` documents per query, in the metrics' order.

    Args:
        path: the file to write (atomically).
        runs: {run name: {query_id: {doc_id: score}}}, in report order.
        qids: the evaluated query ids, in the order to write them.

    Returns:
        The number of lines written.
    """
    # ranked: the metrics' tie order, so the top shown is the top scored
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


def read_report(eval_dir: Path, *, recorded: bool = False) -> dict[str, Any]:
    """`report.json` of an eval artifact, checked to be an eval report (an object with `runs`).

    Args:
        eval_dir: the eval artifact.
        recorded: the caller found the artifact up to date, so its manifest vouches for the file: damage is reported
            as bit rot (`--verify` finds it) rather than as a report to rerun.

    Raises:
        CorruptArtifactError: missing, not JSON, or not an eval report.
    """
    path = Path(eval_dir) / REPORT_JSON

    def parse() -> dict[str, Any]:
        report = orjson.loads(path.read_bytes())
        if not isinstance(report, dict) or not isinstance(report.get("runs"), dict):
            raise ValueError(f"a JSON {type(report).__name__} without 'runs', not an eval report")
        return report

    if recorded:
        with recorded_file(path):
            return parse()
    try:
        return parse()
    except (OSError, ValueError) as err:  # JSONDecodeError is a ValueError
        raise _unreadable(path, err) from err


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


def report_text(artifact: Path, fmt: str) -> str:
    """report.json (fmt "json", checked to be an eval report) or report.md of an eval artifact, as text.

    Raises:
        CorruptArtifactError: a report file that cannot be read or is not an eval report.
    """
    read_report(artifact)  # checked to be a report (report.md is written with it), then given as written
    path = Path(artifact) / (REPORT_JSON if fmt == "json" else REPORT_MD)
    try:
        return path.read_bytes().decode("utf-8").rstrip("\n")
    except (OSError, ValueError) as err:  # UnicodeDecodeError is a ValueError
        raise _unreadable(path, err) from err
