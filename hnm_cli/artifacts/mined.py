"""The mine-artifact contract: `rows-NNNNN.jsonl` (one row per labelled pair), `stats.json`, and the audit trail.

    {"query_id", "positive_id", "negatives": [{"doc_id", "source", "rank", "d_qd", "d_qp", "d_pd"}], "meta"}
    (+ "suspected": [same fields] when a false-negative guard ran: the candidates it removed as likely positives)

`rank` is the 1-based rank of the negative in the ranking its source used (dense for rule/topk/next, BM25
for bm25; null for random); `meta` passes the query record's extra fields through. A pair that got no negative
keeps its row with an empty list, so the file is complete. `hnm mine` and the sentence-transformers arm of the
benchmark write it through here; train-reranker, eval's leakage guard and `hnm show` read it through here.
The audit (`audit/rows-NNNNN.jsonl`) holds every candidate the rule examined with its three distances and
test outcomes, so selections can be re-made without a search. `state/` holds what `hnm mine --update` compares the
next run with: each text's hash (`docs.jsonl`, `queries.jsonl`), the vector space, and for top-k each query's
ranking head (`heads.npy`, `head_floors.npy`).
"""

from __future__ import annotations

import fnmatch
import hashlib
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from hnm_cli.artifacts.files import rows_name
from hnm_cli.artifacts.manifest import Manifest, load_manifest, output_entry, require_artifact
from hnm_cli.choices import Stage
from hnm_cli.errors import CorruptArtifactError, DataError, InputError
from hnm_cli.fileio import atomic_write_json, iter_jsonl, recorded_file, save_npy, write_jsonl

STAGE = Stage.MINE
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
    query_id: str,
    positive_id: str,
    negatives: list[dict[str, Any]],
    meta: Mapping[str, Any] | None,
    suspected: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """One row of `rows-*.jsonl`."""
    row = {"query_id": query_id, "positive_id": positive_id, "negatives": negatives, "meta": meta or {}}
    if suspected is not None:
        # Candidates a false-negative guard removed as likely positives (same fields; source = the guard):
        # written only when a guard ran, so rows of every other recipe keep their bytes.
        row["suspected"] = suspected
    return row


def rows_of(
    pair_ids: Sequence[tuple[str, str]],
    results: Sequence[Any],
    corpus_ids: Sequence[str],
    meta: Callable[[str], Mapping[str, Any] | None] = lambda query_id: None,
) -> Iterator[dict[str, Any]]:
    """The rows of mined `results` (`mining.PairResult`s, one per pair, rows as corpus rows), in pair order; a
    result's `suspected` candidates (when a false-negative guard ran) in the same record shape."""

    def records(negatives: Sequence[Any]) -> list[dict[str, Any]]:
        return [negative_record(corpus_ids[n.doc_row], n.source, n.rank, n.d_qd, n.d_qp, n.d_pd) for n in negatives]

    for (q, d), r in zip(pair_ids, results, strict=True):
        yield mined_row(q, d, records(r.negatives), meta(q), None if r.suspected is None else records(r.suspected))


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


ROWS_GLOB = "rows-*.jsonl"


def iter_rows(mine_dir: Path, manifest: Manifest | None = None) -> Iterator[tuple[str, dict[str, Any]]]:
    """`(file:line, row)` of every row of a mine artifact, in shard order, each row checked against the schema.

    The shards read are the ones its manifest lists (`manifest`, else the one in `mine_dir`); each is compared with
    its recorded sha256 as it is read. The bytes are read anyway, so this costs nothing and catches what the cheap
    size+mtime check cannot: an edited digest, or another run's rows copied in with their mtime. A rows file the
    manifest does not list is ignored (with a warning). A folder without a manifest (a hand-made one) is read
    by glob, unchecked.

    Raises:
        CorruptArtifactError: a listed shard is missing, unreadable or not the content the manifest recorded.
        DataError: a row that is not the documented schema (`file:line: field 'x': problem`).
    """
    mine_dir = Path(mine_dir)
    manifest = manifest if manifest is not None else load_manifest(mine_dir)
    fix = f"rebuild it: hnm mine ... --out {mine_dir} --force"
    if manifest is None:
        entries: list[dict[str, Any]] = [{"path": p.name} for p in sorted(mine_dir.glob(ROWS_GLOB))]
    else:
        entries = sorted(
            (o for o in manifest.outputs if fnmatch.fnmatchcase(str(o["path"]), ROWS_GLOB)), key=lambda o: o["path"]
        )
        listed = {str(o["path"]) for o in entries}
        if stray := sorted(p.name for p in mine_dir.glob(ROWS_GLOB) if p.name not in listed):
            logging.getLogger("hnm").warning("%s: ignoring %s (not in its manifest.json)", mine_dir, ", ".join(stray))
    for entry in entries:
        path = mine_dir / str(entry["path"])
        try:
            data = path.read_bytes()
        except OSError as err:
            raise CorruptArtifactError(f"{path}: {err.strerror or err}; the mine artifact is corrupt, {fix}") from err
        if "sha256" in entry and hashlib.sha256(data).hexdigest() != entry["sha256"]:
            raise CorruptArtifactError(
                f"{path}: content changed (sha256 differs from the manifest); the mine artifact is corrupt, {fix}"
            )
        for lineno, line in enumerate(data.splitlines(), 1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                row = orjson.loads(line)
            except orjson.JSONDecodeError as err:
                raise DataError(f"{where}: malformed JSON ({err.msg}); the mine artifact is corrupt, {fix}") from err
            _check_row(row, where)
            yield where, row


def _check_row(row: Any, where: str) -> None:
    """Raise DataError unless `row` has the documented row shape (ids are strings, negatives a list of objects)."""
    if not isinstance(row, dict):
        raise DataError(f"{where}: expected a JSON object (a mined row), got a JSON {_json_type(row)}")
    for key in ("query_id", "positive_id"):
        if not isinstance(row.get(key), str) or not row[key]:
            got = "missing" if key not in row else f"a JSON {_json_type(row[key])}"
            raise DataError(f"{where}: field '{key}': expected a non-empty string id, got {got}")
    negatives = row.get("negatives")
    if not isinstance(negatives, list):
        got = "missing" if "negatives" not in row else f"a JSON {_json_type(negatives)}"
        raise DataError(f"{where}: field 'negatives': expected a list of negatives, got {got}")
    _check_entries(negatives, "negatives", where)
    if "suspected" in row:
        if not isinstance(row["suspected"], list):
            raise DataError(f"{where}: field 'suspected': expected a list, got a JSON {_json_type(row['suspected'])}")
        _check_entries(row["suspected"], "suspected", where)
    if not isinstance(row.get("meta", {}), dict):
        raise DataError(f"{where}: field 'meta': expected an object, got a JSON {_json_type(row['meta'])}")


def _check_entries(entries: list[Any], name: str, where: str) -> None:
    """Raise DataError unless every entry of a row's `negatives` / `suspected` list has the documented fields."""
    for i, neg in enumerate(entries):
        if not isinstance(neg, dict):
            raise DataError(f"{where}: field '{name}[{i}]': expected an object, got a JSON {_json_type(neg)}")
        if not isinstance(neg.get("doc_id"), str) or not neg["doc_id"]:
            got = "missing" if "doc_id" not in neg else f"a JSON {_json_type(neg['doc_id'])}"
            raise DataError(f"{where}: field '{name}[{i}].doc_id': expected a non-empty string id, got {got}")
        for key in ("d_qd", "d_qp", "d_pd"):
            value = neg.get(key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
                raise DataError(f"{where}: field '{name}[{i}].{key}': expected a number or null, got {value!r}")
        rank = neg.get("rank")
        if rank is not None and (isinstance(rank, bool) or not isinstance(rank, int)):
            raise DataError(f"{where}: field '{name}[{i}].rank': expected an integer or null, got {rank!r}")
        if not isinstance(neg.get("source", ""), str):
            raise DataError(f"{where}: field '{name}[{i}].source': expected a string, got {neg['source']!r}")


def _json_type(value: Any) -> str:
    names = {dict: "object", list: "array", str: "string", bool: "boolean", int: "number", float: "number"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


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
    path = Path(path)
    mine_dir = path.parent if path.name == AUDIT_DIR and not (path / AUDIT_DIR).is_dir() else path
    manifest = require_mined(mine_dir, fix=f"hnm mine ... --audit --out {mine_dir}", deep=deep)
    if not manifest.params.get("audit") or not (mine_dir / AUDIT_DIR).is_dir():
        raise InputError(f"{mine_dir} was mined without --audit; rerun it with --audit")
    if Path(out).resolve() == mine_dir.resolve():
        raise InputError(f"--from-audit {path} lies inside --out {out}; write the re-selection to another --out")
    return mine_dir, manifest


def read_stats(mine_dir: Path) -> dict[str, Any] | None:
    """`stats.json` of a mine artifact (selection counts, rejections, histograms, and whatever figures a newer
    `hnm mine` adds), or None when the artifact has none.

    Raises:
        CorruptArtifactError: the file is there but is not a JSON object.
    """
    path = Path(mine_dir) / STATS_FILE
    if not path.is_file():
        return None
    try:
        stats = orjson.loads(path.read_bytes())
        if not isinstance(stats, dict):
            raise ValueError(f"a JSON {_json_type(stats)}, not an object")
    except (OSError, ValueError) as err:
        raise CorruptArtifactError(
            f"{path} is unreadable ({str(err).splitlines()[0][:100]}); rebuild it: hnm mine ... --out {mine_dir} --force"
        ) from err
    return stats


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
    text hash and exclusion digest, the vector space the vectors came from, and (top-k) the head of each query's
    ranking its picks came from."""

    docs: dict[str, str]  # doc id -> text hash, in corpus-row order
    queries: dict[str, tuple[str, str]]  # query id -> (text hash, exclusions digest)
    space: str
    # query id -> (corpus rows of that run, best first; the float64 similarity of the last): top-k only
    heads: Mapping[str, tuple[Sequence[int], float]] | None = None


HEAD_ROWS = "heads.npy"  # int32 [queries, longest head]: each query's head (queries.jsonl's order), -1 padded
HEAD_FLOORS = "head_floors.npy"  # float64 [queries]: the similarity of each head's last document (NaN: no head)


def write_state(out: Path, state: MineState) -> list[str]:
    """Write `<out>/state/` (reports, not data: out of the downstream digest); return the files."""
    out = Path(out)
    write_jsonl(out / STATE_DIR / "docs.jsonl", ({"id": d, "h": h} for d, h in state.docs.items()))
    write_jsonl(out / STATE_DIR / "queries.jsonl", ({"id": q, "h": h, "x": x} for q, (h, x) in state.queries.items()))
    atomic_write_json(out / STATE_DIR / "space.json", {"space": state.space})
    files = [f"{STATE_DIR}/docs.jsonl", f"{STATE_DIR}/queries.jsonl", f"{STATE_DIR}/space.json"]
    if state.heads:
        width = max(len(rows) for rows, _ in state.heads.values())
        rows = np.full((len(state.queries), width), -1, dtype=np.int32)
        floors = np.full(len(state.queries), np.nan, dtype=np.float64)
        for i, q in enumerate(state.queries):
            if q in state.heads:
                head, floor = state.heads[q]
                rows[i, : len(head)] = head
                floors[i] = floor
        save_npy(out / STATE_DIR / HEAD_ROWS, rows, np.int32)
        save_npy(out / STATE_DIR / HEAD_FLOORS, floors, np.float64)
        files += [f"{STATE_DIR}/{HEAD_ROWS}", f"{STATE_DIR}/{HEAD_FLOORS}"]
    return files


def read_state(mine_dir: Path) -> MineState | None:
    """The state of a mine artifact, or None when it was mined before states were written."""
    import orjson

    folder = Path(mine_dir) / STATE_DIR
    if not (folder / "space.json").is_file():
        return None
    with recorded_file(folder / "docs.jsonl"):
        docs = {str(r["id"]): str(r["h"]) for r in iter_jsonl(folder / "docs.jsonl")}
    with recorded_file(folder / "queries.jsonl"):
        queries = {str(r["id"]): (str(r["h"]), r["x"]) for r in iter_jsonl(folder / "queries.jsonl")}
    with recorded_file(folder / "space.json"):
        space = orjson.loads((folder / "space.json").read_bytes())["space"]
    heads: dict[str, tuple[Sequence[int], float]] | None = None
    if (folder / HEAD_ROWS).is_file():
        with recorded_file(folder / HEAD_ROWS), recorded_file(folder / HEAD_FLOORS):
            rows = np.load(folder / HEAD_ROWS, allow_pickle=False)
            floors = np.load(folder / HEAD_FLOORS, allow_pickle=False)
        if rows.ndim != 2 or len(rows) != len(queries) or floors.shape != (len(queries),):
            raise CorruptArtifactError(
                f"{folder / HEAD_ROWS}: {rows.shape} heads for {len(queries)} queries; mine it again in full"
            )
        heads = {
            q: (r[r >= 0].astype(np.int64), float(f))
            for q, r, f in zip(queries, rows, floors, strict=True)
            if not np.isnan(f)
        }
    return MineState(docs, queries, space, heads)
