"""The mine-artifact contract: `rows-NNNNN.jsonl` (one row per labelled pair), `stats.json`, and the audit trail.

    {"query_id", "positive_id", "negatives": [{"doc_id", "source", "rank", "d_qd", "d_qp", "d_pd"}], "meta"}

`rank` is the 1-based rank of the negative in the ranking its source used (dense for rule/topk/next, BM25
for bm25; null for random); `meta` passes the query record's extra fields through. A pair that got no negative
keeps its row with an empty list, so the file is complete. `hnm mine` and the sentence-transformers arm of the
benchmark write it through here; train-reranker, eval's leakage guard and `hnm show` read it through here.
The audit (`audit/rows-NNNNN.jsonl`) holds every candidate the rule examined with its three distances and
test outcomes, so selections can be re-made without a search.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from hnm_cli.artifacts.files import atomic_write_json, iter_jsonl, rows_name, write_jsonl
from hnm_cli.artifacts.manifest import Manifest, output_entry, require_artifact

STAGE = "mine"
ROWS_PER_SHARD = 10_000
AUDIT_DIR = "audit"
AUDIT_ROWS_PER_SHARD = 200_000
STATS_FILE = "stats.json"
HNSW_FILE = "index/hnsw.bin"
HNSW_FINGERPRINT = "index/fingerprint.json"
STATE_DIR = "state"  # what `hnm mine --update` compares the next run with
STALE_PATTERNS = ("rows-*.jsonl", STATS_FILE, "audit/rows-*.jsonl", "export/*.jsonl", "plots/*.png", "state/*")


def negative_record(
    doc_id: str, source: str, rank: int | None, d_qd: float | None, d_qp: float | None, d_pd: float | None
) -> dict[str, Any]:
    """One entry of a row's `negatives` list, fields in the documented order."""
    return {"doc_id": doc_id, "source": source, "rank": rank, "d_qd": d_qd, "d_qp": d_qp, "d_pd": d_pd}


def mined_row(
    query_id: str, positive_id: str, negatives: list[dict[str, Any]], meta: Mapping[str, Any] | None
) -> dict[str, Any]:
    """One row of `rows-*.jsonl`."""
    return {"query_id": query_id, "positive_id": positive_id, "negatives": negatives, "meta": meta or {}}


def write_rows(out: Path, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Write rows as `rows-NNNNN.jsonl` shards of `ROWS_PER_SHARD` (at least one shard, even when empty).

    Returns:
        The manifest output entries of the shards, with their row counts.
    """
    entries = []
    for shard, lo in enumerate(range(0, max(len(rows), 1), ROWS_PER_SHARD)):
        name = rows_name(shard)
        entries.append(output_entry(out, name, rows=write_jsonl(Path(out) / name, rows[lo : lo + ROWS_PER_SHARD])))
    return entries


def require_mined(directory: Path, fix: str | None = None, *, deep: bool = False) -> Manifest:
    """The manifest of a finished, intact mine artifact (`require_artifact`'s errors otherwise)."""
    return require_artifact(
        directory, STAGE, fix=fix or f"hnm mine --vectors <reduce dir> --data <data> --out {directory}", deep=deep
    )


def iter_rows(mine_dir: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """`(file:line, row)` of every row of a mine artifact, in shard order."""
    for path in sorted(Path(mine_dir).glob("rows-*.jsonl")):
        for lineno, row in enumerate(iter_jsonl(path), 1):
            yield f"{path}:{lineno}", row


class AuditWriter:
    """Streams audit records to `<out>/audit/rows-NNNNN.jsonl` shards, `AUDIT_ROWS_PER_SHARD` rows each."""

    def __init__(self, out: Path) -> None:
        self.out = Path(out)
        self.buffer: list[dict[str, Any]] = []
        self.files: list[tuple[str, int]] = []

    def add(self, record: dict[str, Any]) -> None:
        """Queue one record: query_id, positive_id, doc_id, rank, d_qd, d_qp, d_pd, c1, c2, excluded, selected."""
        self.buffer.append(record)
        if len(self.buffer) >= AUDIT_ROWS_PER_SHARD:
            self._flush()

    def _flush(self) -> None:
        name = f"{AUDIT_DIR}/{rows_name(len(self.files))}"
        self.files.append((name, write_jsonl(self.out / name, self.buffer)))
        self.buffer = []

    def close(self) -> list[dict[str, Any]]:
        """Write what is left; return the manifest output entries of every audit shard."""
        if self.buffer or not self.files:
            self._flush()
        return [output_entry(self.out, rel, rows=n) for rel, n in self.files]


def iter_audit(mine_dir: Path) -> Iterator[dict[str, Any]]:
    """Every audit record of a mine artifact written with `--audit`, in shard order."""
    for path in sorted((Path(mine_dir) / AUDIT_DIR).glob("rows-*.jsonl")):
        yield from iter_jsonl(path)


def resolve_audit(path: Path, out: Path, *, deep: bool = False) -> tuple[Path, Manifest]:
    """The mine artifact holding an audit (`<mine out>` or `<mine out>/audit`) and its manifest.

    Raises:
        IncompleteArtifactError / ArtifactMismatchError: not a finished mine run.
        InputError: mined without --audit, or the audit lies inside `out`, which this run would rewrite.
    """
    from hnm_cli.errors import InputError

    path = Path(path)
    mine_dir = path.parent if path.name == AUDIT_DIR and not (path / AUDIT_DIR).is_dir() else path
    manifest = require_mined(mine_dir, fix=f"hnm mine ... --audit --out {mine_dir}", deep=deep)
    if not manifest.params.get("audit") or not (mine_dir / AUDIT_DIR).is_dir():
        raise InputError(f"{mine_dir} was mined without --audit; rerun it with --audit")
    if Path(out).resolve() == mine_dir.resolve():
        raise InputError(f"--from-audit {path} lies inside --out {out}; write the re-selection to another --out")
    return mine_dir, manifest


def count_with_negative(rows: Iterable[Mapping[str, Any]]) -> tuple[int, int]:
    """(rows, rows with at least one negative)."""
    total = with_neg = 0
    for row in rows:
        total += 1
        with_neg += bool(row.get("negatives"))
    return total, with_neg


def hnsw_index(
    out: Path,
    new: Path,
    source: Any,
    *,
    vectors_digest: str,
    M: int,
    ef_construction: int,
    seed: int,
    block_rows: int,
) -> tuple[Any, list[str]]:
    """The hnsw index of a mine artifact: `<out>/index/hnsw.bin` when its fingerprint matches the vectors and the
    parameters, else built and saved under `new` (the run's staging folder). Returns (the HnswIndex, its two
    files relative to the artifact)."""
    import logging

    from hnm_cli.search import HnswIndex

    log = logging.getLogger("hnm")
    want = {"vectors": vectors_digest, "n": source.n, "dim": source.dim, "M": M, "ef_construction": ef_construction,
            "seed": seed}  # fmt: skip
    path, fp_path = Path(out) / HNSW_FILE, Path(out) / HNSW_FINGERPRINT
    files = [HNSW_FILE, HNSW_FINGERPRINT]
    if path.is_file() and fp_path.is_file():
        try:
            have = orjson.loads(fp_path.read_bytes())
        except orjson.JSONDecodeError:
            have = None
        if have == want:
            log.info("mine: reusing hnsw index %s", path)
            return HnswIndex.load(path, source.dim, source.n), files
    log.info("mine: building hnsw index over %d vectors (M=%d, ef_construction=%d)", source.n, M, ef_construction)
    path, fp_path = Path(new) / HNSW_FILE, Path(new) / HNSW_FINGERPRINT
    index = HnswIndex.build(source, M=M, ef_construction=ef_construction, random_seed=seed, block_rows=block_rows)
    index.save(path)
    atomic_write_json(fp_path, want)
    return index, files


# ---------------------------------------------------------------------------------------------
# The state an incremental update compares with
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MineState:
    """What an earlier mine run saw: every corpus document's text hash (in its row order), every mined query's
    text hash and exclusion digest, and the vector space the vectors came from."""

    docs: dict[str, str]  # doc id -> text hash, in corpus-row order
    queries: dict[str, tuple[str, str]]  # query id -> (text hash, exclusions digest)
    space: str


def write_state(out: Path, state: MineState) -> list[str]:
    """Write `<out>/state/` (reports, not data: out of the downstream digest); return the files."""
    out = Path(out)
    write_jsonl(out / STATE_DIR / "docs.jsonl", ({"id": d, "h": h} for d, h in state.docs.items()))
    write_jsonl(out / STATE_DIR / "queries.jsonl", ({"id": q, "h": h, "x": x} for q, (h, x) in state.queries.items()))
    from hnm_cli.artifacts.files import atomic_write_json

    atomic_write_json(out / STATE_DIR / "space.json", {"space": state.space})
    return [f"{STATE_DIR}/docs.jsonl", f"{STATE_DIR}/queries.jsonl", f"{STATE_DIR}/space.json"]


def read_state(mine_dir: Path) -> MineState | None:
    """The state of a mine artifact, or None when it was mined before states were written."""
    import orjson

    folder = Path(mine_dir) / STATE_DIR
    if not (folder / "space.json").is_file():
        return None
    docs = {r["id"]: r["h"] for r in iter_jsonl(folder / "docs.jsonl")}
    queries = {r["id"]: (r["h"], r["x"]) for r in iter_jsonl(folder / "queries.jsonl")}
    return MineState(docs, queries, orjson.loads((folder / "space.json").read_bytes())["space"])
