"""Finished benchmark cells as small committed files: `bench/results/<dataset>/...`, so a grid spans machines.

A cell is one (family, arm, seed) evaluation, or the first stage. Its file holds what the tables are built from
(the per-query metric values and their means), the cell's cost (seconds of mine, train and eval, and the CPU
they ran on) and its *identity*: every setting that shapes the number (the mining settings the arm's options
resolve to, vectors, training budget, first stage, embeddings; not the arm's name, so two arms with the same
settings share their cells). A bench skips a cell whose file exists with the same
identity, and reruns it when any setting changed, so a stale number can never stand in for a new recipe.

Embeddings and mines are not stored: they are recomputed deterministically when a missing cell needs them.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import orjson

RESULTS_ROOT = Path(__file__).resolve().parent / "results"
ROUND = 6  # per-query values are means of a few judgements: 6 decimals keep them exact enough for the tests


def identity_key(identity: dict[str, Any]) -> str:
    """A short stable hash of a cell's identity (what `cell_path` names its files by is the arm, not this)."""
    return hashlib.sha256(orjson.dumps(identity, option=orjson.OPT_SORT_KEYS)).hexdigest()[:16]


def cell_path(root: Path, family: str, arm: str, seed: int | None) -> Path:
    """Where a cell lives: `<root>/<family>/<arm>/s<seed>.json`, or `<root>/first-stage.json`."""
    if seed is None:
        return root / f"{arm}.json"
    return root / family / arm / f"s{seed}.json"


def load_cell(path: Path, identity: dict[str, Any]) -> dict[str, Any] | None:
    """The cell at `path` if it exists and was measured with exactly `identity`; else None (rerun it)."""
    if not path.is_file():
        return None
    try:
        cell = orjson.loads(path.read_bytes())
    except orjson.JSONDecodeError:
        return None
    if not isinstance(cell, dict) or cell.get("identity_key") != identity_key(identity):
        return None
    return cell


def save_cell(
    path: Path,
    identity: dict[str, Any],
    per_query: dict[str, dict[str, float]],
    *,
    seconds: dict[str, float | None],
    machine: dict[str, Any],
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write one finished cell atomically (a killed bench never leaves half a file to be trusted)."""
    metrics = sorted({m for v in per_query.values() for m in v})
    cell = {
        "identity_key": identity_key(identity),
        "identity": identity,
        "queries": len(per_query),
        "mean": {m: round(sum(v[m] for v in per_query.values()) / max(len(per_query), 1), ROUND) for m in metrics},
        "seconds": {k: (round(v, 1) if v is not None else None) for k, v in seconds.items()},
        "machine": {k: machine.get(k) for k in ("cpu", "bf16_native", "cores", "date", "commit", "torch")},
        **(extra or {}),
        "per_query": {
            q: {m: round(float(x), ROUND) for m, x in sorted(v.items())} for q, v in sorted(per_query.items())
        },
    }
    _write_atomic(path, cell)
    return cell


def save_record(path: Path, identity: dict[str, Any], body: dict[str, Any], machine: dict[str, Any]) -> dict[str, Any]:
    """Write a finished measurement that is not a per-query cell (one dataset's nightly-update timings) under the
    same rule: read back by `load_cell` only while its identity holds."""
    record = {
        "identity_key": identity_key(identity),
        "identity": identity,
        "machine": dict(machine),
        **body,
    }
    _write_atomic(path, record)
    return record


def _write_atomic(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_bytes(orjson.dumps(data, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS))
    tmp.replace(path)
