"""The eval artifact's files: `<out>/first-stage/candidates.jsonl` (the fixed first stage, its own small artifact),
`report.json` (runs and metrics in their order), `report.md` and `per-query.jsonl`.

`hnm eval` writes them and `hnm show` reads the report through this module; the report's content is
`hnm_cli.evaluation.report`'s.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson

from hnm_cli.errors import CorruptArtifactError, DataError
from hnm_cli.evaluation.first_stage import Candidates
from hnm_cli.fileio import atomic_write_bytes, iter_jsonl, recorded_file, write_jsonl

FIRST_STAGE_DIR = "first-stage"
CANDIDATES = "candidates.jsonl"
REPORT_JSON = "report.json"
REPORT_MD = "report.md"
PER_QUERY = "per-query.jsonl"
STALE_PATTERNS = ["*.jsonl", "*.md", REPORT_JSON]


def write_candidates(out: Path, qids: Sequence[str], candidates: Candidates) -> list[int]:
    """Write `<out>/candidates.jsonl`, one row per query of `qids` (in that order); return each row's length."""
    rows = [{"query_id": q, "candidates": [[d, s] for d, s in candidates.get(q, [])]} for q in qids]
    write_jsonl(Path(out) / CANDIDATES, rows)
    return [len(r["candidates"]) for r in rows]


def read_candidates(out: Path, corpus: Any) -> Candidates:
    """The candidates of a first-stage folder, every doc id checked to be in `corpus`."""
    path = Path(out) / CANDIDATES
    found: Candidates = {}
    for lineno, row in enumerate(iter_jsonl(path), 1):
        for doc, _score in row["candidates"]:
            if doc not in corpus:
                raise DataError(f"{path}:{lineno}: field 'candidates': doc id '{doc}' is not in the corpus")
        found[row["query_id"]] = [(d, float(s)) for d, s in row["candidates"]]
    return found


def write_report(out: Path, report: Mapping[str, Any], markdown: str, per_query: list[dict[str, Any]]) -> list[str]:
    """Write the report files into `out`; return their names."""
    out = Path(out)
    write_jsonl(out / PER_QUERY, per_query)
    # Not atomic_write_json: that sorts keys, and the order of runs and metrics is part of the report.
    atomic_write_bytes(out / REPORT_JSON, orjson.dumps(report, option=orjson.OPT_INDENT_2) + b"\n")
    atomic_write_bytes(out / REPORT_MD, markdown.encode("utf-8"))
    return [REPORT_JSON, REPORT_MD, PER_QUERY]


def load_report(out: Path) -> dict[str, Any]:
    """The report.json of an eval artifact."""
    path = Path(out) / REPORT_JSON
    with recorded_file(path):
        data = orjson.loads(path.read_bytes())
        if not isinstance(data, dict) or not isinstance(data.get("runs"), dict):
            raise ValueError(f"a JSON {type(data).__name__} without 'runs'")
    report: dict[str, Any] = data
    return report


def report_text(artifact: Path, fmt: str) -> str:
    """report.json (fmt "json", checked to be an eval report) or report.md of an eval artifact, as text.

    Raises:
        CorruptArtifactError: a report file that cannot be read or is not an eval report.
    """
    texts: dict[str, str] = {}
    for name in [REPORT_JSON] + ([REPORT_MD] if fmt != "json" else []):
        try:
            texts[name] = (artifact / name).read_bytes().decode("utf-8")
            if name == REPORT_JSON:
                report = orjson.loads(texts[name])
                if not isinstance(report, dict) or not isinstance(report.get("runs"), dict):
                    raise ValueError(f"a JSON {type(report).__name__} without 'runs', not an eval report")
        except (OSError, ValueError) as err:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
            raise CorruptArtifactError(
                f"{artifact / name} is unreadable ({str(err).splitlines()[0][:100]}); "
                f"rerun it: hnm eval ... --out {artifact} --force"
            ) from err
    return texts[REPORT_JSON if fmt == "json" else REPORT_MD].rstrip("\n")
