"""The vector-set contract: parallel `vectors-NNNNN.npy` + `ids-NNNNN.jsonl` shards under `corpus/` and `queries/`.

Vector shards are float32, C-contiguous `.npy` files readable with `np.load(mmap_mode="r")`; row i of
`vectors-k.npy` belongs to the id on line i of `ids-k.jsonl` (each line `{"id": "..."}`). `hnm embed` (one set
per model) and `hnm reduce` write them; mine and eval read them; nothing else touches the layout.
"""

from __future__ import annotations

import hashlib
from collections.abc import Container, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hnm_cli.artifacts.files import shard_name
from hnm_cli.artifacts.fusion import fusion_text
from hnm_cli.artifacts.manifest import (
    Manifest,
    canonical_json,
    compute_fingerprint,
    load_manifest,
    output_entry,
    require_artifact,
    write_manifest,
)
from hnm_cli.choices import Stage
from hnm_cli.errors import ArtifactMismatchError, CorruptArtifactError, DataError, IncompleteArtifactError
from hnm_cli.fileio import iter_jsonl, npy_layout, save_npy, write_jsonl
from hnm_cli.search import VectorSource, require_finite


def vectors_name(shard: int) -> str:
    """File name of vector shard `shard` (`vectors-00000.npy`)."""
    return shard_name("vectors", shard, "npy")


def ids_name(shard: int) -> str:
    """File name of the id shard parallel to `vectors_name(shard)`."""
    return shard_name("ids", shard, "jsonl")


# ---------------------------------------------------------------------------------------------
# Vector shards
# ---------------------------------------------------------------------------------------------


def write_vector_shard(directory: Path, shard: int, ids: list[str], vectors: np.ndarray) -> list[str]:
    """Write one parallel shard pair; return the two file names (relative to `directory`).

    The .npy is written before the ids file, so a shard counts as present only once both exist.
    """
    if len(ids) != len(vectors):
        raise ValueError(f"shard {shard}: {len(ids)} ids but {len(vectors)} vectors")
    directory = Path(directory)
    save_npy(directory / vectors_name(shard), vectors)
    write_jsonl(directory / ids_name(shard), ({"id": i} for i in ids))
    return [vectors_name(shard), ids_name(shard)]


def list_vector_shards(directory: Path) -> list[tuple[Path, Path]]:
    """Sorted (vectors, ids) path pairs in `directory`; raises if a pair is broken."""
    directory = Path(directory)
    if not directory.is_dir():
        raise IncompleteArtifactError(f"{directory} does not exist or is not a directory")
    pairs = []
    for npy in sorted(directory.glob("vectors-*.npy")):
        shard = npy.name[len("vectors-") : -len(".npy")]
        ids = directory / f"ids-{shard}.jsonl"
        if not ids.exists():
            raise IncompleteArtifactError(f"{npy} has no parallel {ids.name}")
        pairs.append((npy, ids))
    return pairs


def iter_shard_ids(npy: Path, ids_path: Path) -> Iterator[tuple[int, str]]:
    """(line, id) of one shard's ids file, every record checked, and the count checked against the vector rows
    at the end: a missing or extra line would shift every id. Streams: nothing is kept.

    Raises:
        DataError: `ids-k.jsonl:line: field 'id': ...`, or a count that differs from the shard's rows.
    """
    rows = vector_layout(npy)[0][0]
    count = 0
    for lineno, row in enumerate(iter_jsonl(ids_path), 1):
        if not isinstance(row, dict) or not isinstance(row.get("id"), str):
            raise DataError(f'{ids_path}:{lineno}: field \'id\': expected {{"id": "..."}}; the vector set is corrupt')
        count = lineno
        yield lineno, row["id"]
    if count != rows:
        raise DataError(
            f"{ids_path}: {count} ids but {npy.name} has {rows} rows; the vector set is corrupt (rebuild it)"
        )


def read_ids(directory: Path, *, known: Container[str] | None = None) -> list[str]:
    """All ids of a vector directory, in row order across shards (each shard checked against its ids file).

    Args:
        known: when given, every id must be in it (the corpus or queries the vectors are used with).

    Raises:
        DataError: a malformed ids file, or an id that appears twice (rows would be assigned to the wrong id).
        ArtifactMismatchError: an id not in `known`.
    """
    out: list[str] = []
    seen: set[str] = set()
    where: list[tuple[Path, int]] = []  # (ids file, its first row): to name the first line of a duplicate
    for npy, ids_path in list_vector_shards(directory):
        where.append((ids_path, len(out)))
        for lineno, id_ in iter_shard_ids(npy, ids_path):
            if id_ in seen:
                first = out.index(id_)
                path, start = next((p, s) for p, s in reversed(where) if s <= first)
                raise DataError(
                    f"{ids_path}:{lineno}: field 'id': duplicate id {id_!r} (also at {path.name}:{first - start + 1}); "
                    "the vector set is corrupt (rebuild it)"
                )
            if known is not None and id_ not in known:
                raise ArtifactMismatchError(
                    f"{ids_path}:{lineno}: field 'id': {id_!r} is not in the {directory.name} of --data",
                    hint="give the data the vectors were made from, or rebuild the vectors from this data",
                )
            seen.add(id_)
            out.append(id_)
    return out


def vector_layout(npy: Path) -> tuple[tuple[int, ...], np.dtype[Any], int]:
    """`npy_layout` of a vector shard, which must be 2-D and of a float dtype (float16 and float64 are read with
    a cast to float32; integers, booleans and objects are refused: they are not vectors hnm wrote)."""
    shape, dtype, offset = npy_layout(npy)
    if len(shape) != 2 or dtype.kind != "f":
        raise DataError(f"{npy}: expected a 2-D float32 array, got shape {shape} of {dtype}; the vector set is corrupt")
    return shape, dtype, offset


def open_shard(npy: Path) -> np.ndarray:
    """A read-only memmap of one vector shard, after checking that it is a complete 2-D float `.npy`."""
    vector_layout(npy)
    shard: np.ndarray = np.load(npy, mmap_mode="r")
    return shard


def open_vector_source(directory: Path) -> VectorSource:
    """The vector shards of a directory (`vectors-NNNNN.npy`) as one row-addressable `VectorSource` of memmaps;
    reads no data.

    Raises:
        DataError: if the shards disagree on dimension or hold no rows.
    """
    paths = [npy for npy, _ in list_vector_shards(Path(directory))]
    source = VectorSource([open_shard(p) for p in paths], paths)
    if source.n == 0:
        raise DataError(f"{directory}: no vector shards (zero rows)")
    return source


def open_vector_set(directory: Path) -> tuple[list[str], list[str], VectorSource, VectorSource]:
    """A vector set's corpus ids, query ids (row order), corpus rows and query rows; reads ids, no vectors."""
    directory = Path(directory)
    return (
        read_ids(directory / "corpus"),
        read_ids(directory / "queries"),
        open_vector_source(directory / "corpus"),
        open_vector_source(directory / "queries"),
    )


def open_vector_shards(directory: Path) -> list[np.ndarray]:
    """Memory-mapped (read-only) arrays of every shard; nothing is read into RAM yet."""
    return [open_shard(npy) for npy, _ in list_vector_shards(directory)]


def vector_dim(directory: Path) -> int:
    """Dimension of the vectors in `directory` (from the first shard's header)."""
    shards = open_vector_shards(directory)
    if not shards:
        raise DataError(f"{directory}: no vector shards (zero rows)")
    return int(shards[0].shape[1])


def load_vectors(directory: Path) -> tuple[list[str], np.ndarray]:
    """Ids and all vectors of a directory as one in-RAM float32 array (small sets only)."""
    ids = read_ids(directory)
    shards = open_vector_shards(directory)
    if not shards:
        return ids, np.zeros((0, 0), dtype=np.float32)
    vectors = np.concatenate([np.asarray(s, dtype=np.float32) for s in shards], axis=0)
    require_finite(vectors, directory)
    if len(ids) != len(vectors):
        raise DataError(f"{directory}: {len(ids)} ids but {len(vectors)} vector rows")
    return ids, vectors


def iter_vector_blocks(directory: Path, block_rows: int) -> Iterator[tuple[int, np.ndarray]]:
    """Yield (first_row, float32 block) over all shards, at most `block_rows` rows at a time.

    Reads through memory maps, so peak memory is one block, not the whole directory.
    """
    start = 0
    for (npy, _), shard in zip(list_vector_shards(directory), open_vector_shards(directory), strict=True):
        for lo in range(0, len(shard), block_rows):
            block = np.asarray(shard[lo : lo + block_rows], dtype=np.float32)
            yield start + lo, require_finite(block, npy, lo)
        start += len(shard)


def read_vector_rows(path: Path, start: int, stop: int) -> np.ndarray:
    """Rows [start, stop) of a 2-D `.npy` as a fresh float32 array, read with plain file I/O.

    Unlike slicing a memmap, the pages read are never mapped into the process, so a pass over a large
    file block by block keeps resident memory (RSS) at one block instead of growing with the file.

    Raises:
        DataError: not a 2-D float array (`vector_layout`), truncated, or a row holding NaN or inf.
    """
    shape, dtype, offset = vector_layout(path)
    stop = min(stop, shape[0])
    count = max(stop - start, 0) * shape[1]
    with open(path, "rb") as fh:
        fh.seek(offset + start * shape[1] * dtype.itemsize)
        data = np.fromfile(fh, dtype=dtype, count=count)
    if data.size != count:
        raise DataError(f"{path}: truncated (expected {shape[0]} rows of {shape[1]})")
    return require_finite(data.reshape(-1, shape[1]).astype(np.float32, copy=False), path, start)


@dataclass(frozen=True)
class VectorShard:
    """One shard of a part, placed in the part's global row order."""

    number: int  # from the file name, so a writer can give output shard k the number of input shard k
    vectors: Path
    ids: Path
    start: int  # first global row
    rows: int


class VectorPart:
    """The shards of one vector directory (a model's corpus/ or queries/), readable as one (rows, dim) matrix by
    plain file reads, block by block (`read_vector_rows`): what `hnm reduce` streams through."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.shards: list[VectorShard] = []
        dims = set()
        start = 0
        for npy, ids in list_vector_shards(directory):
            shape, _, _ = vector_layout(npy)  # 2-D, float
            if shape[0] == 0:
                continue  # zero-row shards are skipped (house rule)
            dims.add(shape[1])
            self.shards.append(VectorShard(int(npy.stem.split("-")[1]), npy, ids, start, shape[0]))
            start += shape[0]
        if not self.shards:
            raise DataError(f"{directory}: no vector shards (zero rows)")
        if len(dims) != 1:
            raise DataError(f"{directory}: shards have different dimensions {sorted(dims)}")
        self.rows = start
        self.dim = dims.pop()

    def read(self, lo: int, hi: int) -> np.ndarray:
        """Rows [lo, hi) as float32, across shard boundaries."""
        pieces = []
        for s in self.shards:
            a, b = max(lo, s.start), min(hi, s.start + s.rows)
            if a < b:
                pieces.append(read_vector_rows(s.vectors, a - s.start, b - s.start))
        return pieces[0] if len(pieces) == 1 else np.concatenate(pieces, axis=0)

    def iter_ids(self) -> Iterator[str]:
        """Every id in row order, checking each record and each ids file against its vector shard's row count."""
        for s in self.shards:
            for _, id_ in iter_shard_ids(s.vectors, s.ids):
                yield id_


# ---------------------------------------------------------------------------------------------
# Vector sets: a folder with manifest.json, corpus/ and queries/
# ---------------------------------------------------------------------------------------------

# The stages whose output is one vector set: an embed model folder, or a reduce output.
VECTOR_STAGES = (Stage.REDUCE, Stage.EMBED_MODEL)


def resolve_vector_set(directory: Path, *, deep: bool = False) -> Manifest:
    """The manifest of the vector set at `directory`.

    A top-level embed artifact with exactly one model is descended into; with several models the user must pick
    one or fuse them with `hnm reduce`.

    Raises:
        IncompleteArtifactError: no directory, no manifest, or no corpus/ or queries/ vectors.
        ArtifactMismatchError: not a vector set, or an embed artifact with several models.
    """
    directory = Path(directory)
    fix = f"hnm reduce --embeddings <embed dir> --out {directory}"
    manifest = load_manifest(directory) if directory.is_dir() else None
    if manifest is not None and manifest.stage == Stage.EMBED_MODEL:
        fix = f"hnm embed ... --out {directory.parent}"
    if manifest is not None and manifest.stage == Stage.EMBED:
        models = sorted(
            d.name for d in directory.iterdir() if d.is_dir() and (d / "corpus").is_dir() and (d / "queries").is_dir()
        )
        if len(models) == 1:
            fix = f"hnm embed ... --out {directory}"
            return check_vector_files(
                require_artifact(directory / models[0], Stage.EMBED_MODEL, fix=fix, deep=deep), fix
            )
        if not models:
            raise ArtifactMismatchError(f"{directory} is an embed artifact without any model folder")
        raise ArtifactMismatchError(
            f"{directory} holds {len(models)} models ({', '.join(models)}): give one model folder "
            f"(--vectors {directory / models[0]}) or fuse them first with hnm reduce"
        )
    manifest = require_artifact(directory, VECTOR_STAGES, fix=fix, deep=deep)
    for part in ("corpus", "queries"):
        if not (directory / part).is_dir():
            raise IncompleteArtifactError(f"{directory} has no {part}/ vectors. Rerun: {fix}")
    return check_vector_files(manifest, fix)


def check_vector_files(manifest: Manifest, fix: str) -> Manifest:
    """`manifest`, after checking from the shards' headers (no data is read) that its outputs describe the files:
    every shard listed and none extra, each `.npy`'s rows and dim and its ids file's rows as recorded, one dim.

    `require_artifact` compared sizes and digests; this catches what an edited manifest hides from them: a changed
    `rows` or `dim`, a manifest without outputs, a stray shard copied in (readers take every shard in the folder).
    The ids files' line counts are checked where they are read (`iter_shard_ids`).

    Raises:
        CorruptArtifactError: one line naming the manifest or the file, and the command that rebuilds the set.
    """
    listed = {str(o["path"]): o for o in manifest.outputs}
    rebuild = f"the vector set is corrupt. Rebuild it: {fix} --force"
    if not listed:
        raise CorruptArtifactError(f"{manifest.manifest_path} lists no outputs; {rebuild}")
    dims: dict[int, str] = {}
    for part in ("corpus", "queries"):
        if not (manifest.path / part).is_dir():
            continue
        for npy, ids_path in list_vector_shards(manifest.path / part):
            vec_rel, ids_rel = f"{part}/{npy.name}", f"{part}/{ids_path.name}"
            for rel in (vec_rel, ids_rel):
                if rel not in listed:
                    raise CorruptArtifactError(f"{manifest.path / rel} is not in {manifest.manifest_path}; {rebuild}")
            (rows, dim), _, _ = vector_layout(npy)
            for rel, key, actual in ((vec_rel, "rows", rows), (vec_rel, "dim", dim), (ids_rel, "rows", rows)):
                recorded = listed[rel].get(key, actual)
                if recorded != actual:
                    raise CorruptArtifactError(
                        f"{manifest.manifest_path}: outputs '{rel}': field '{key}' is {recorded!r} but {npy.name} "
                        f"has {actual}; {rebuild}"
                    )
            dims.setdefault(dim, vec_rel)
    found = ", ".join(f"{rel} has dim {d}" for d, rel in dims.items())
    if len(dims) > 1:
        raise CorruptArtifactError(f"{manifest.path}: shards of different dimensions ({found}); {rebuild}")
    recorded_dim = manifest.stats.get("dim")
    if dims and isinstance(recorded_dim, int) and recorded_dim not in dims:
        raise CorruptArtifactError(
            f"{manifest.manifest_path}: stats: field 'dim' is {recorded_dim} but {found}; {rebuild}"
        )
    return manifest


def read_rows_of(directory: Path, ids: list[str]) -> np.ndarray:
    """Float32 vectors of `ids` (in that order) from the vector folder `directory` (few rows: read into RAM)."""
    source = open_vector_source(directory)
    row = {q: i for i, q in enumerate(read_ids(directory))}
    return source.take([row[q] for q in ids])


class VectorSetWriter:
    """Writes one vector set: parallel shards part by part (`corpus`, `queries`), then the manifest, last.

    What `hnm embed` (per model) and `hnm reduce` produce, for callers that hold vectors in memory: the Python
    API, the benchmark's synthetic corpora and the tests' hand-built artifacts.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.outputs: list[dict[str, Any]] = []
        self.rows: dict[str, int] = {}
        self.dim: int | None = None

    def add_shard(self, part: str, shard: int, ids: list[str], vectors: np.ndarray) -> None:
        """Write shard `shard` of `part` (the .npy before the ids file) and record both as outputs."""
        vectors = np.asarray(vectors, dtype=np.float32)
        names = write_vector_shard(self.directory / part, shard, ids, vectors)
        self.dim = int(vectors.shape[1])
        self.outputs += [
            output_entry(self.directory, f"{part}/{names[0]}", rows=len(ids), dim=self.dim),
            output_entry(self.directory, f"{part}/{names[1]}", rows=len(ids)),
        ]
        self.rows[part] = self.rows.get(part, 0) + len(ids)

    def finish(
        self,
        *,
        stage: str,
        params: dict[str, Any],
        inputs: list[dict[str, Any]],
        stats: dict[str, Any] | None = None,
        started: float = 0.0,
    ) -> Manifest:
        """Write the manifest (fingerprint of `stage`, `params`, `inputs`); the set is complete from here on."""
        base = {f"{p}_rows": self.rows.get(p, 0) for p in ("corpus", "queries")} | {"dim": self.dim}
        return write_manifest(
            self.directory,
            stage=stage,
            fingerprint=compute_fingerprint(stage, params, inputs),
            params=params,
            inputs=inputs,
            outputs=self.outputs,
            stats=base | (stats or {}),
            started=started,
        )


_LAYOUT_KEYS = ("shard_size", "on_empty", "parts")


def space_key(manifest: Manifest) -> str:
    """What makes two vector sets comparable vector for vector: the encoders (weights, prompts, lengths,
    precision, backend) and, for a reduce output, its fusion and PCA fit. Equal keys mean an unchanged text has
    the same vector in both (what `hnm mine --update` needs; `hnm reduce --fit-from` keeps the key)."""
    if manifest.stage == Stage.EMBED_MODEL:
        payload: Any = {k: v for k, v in manifest.params.items() if k not in _LAYOUT_KEYS}
    else:
        upstream = []
        for rec in manifest.inputs:
            if str(rec.get("role", "")).startswith("vectors:") and rec.get("path"):
                model = load_manifest(Path(rec["path"]))
                if model is not None:
                    upstream.append(space_key(model))
        fit = sorted((o["path"], o.get("sha256")) for o in manifest.outputs if str(o["path"]).startswith("pca/"))
        payload = {"models": upstream, "fit": fit, "fusion": fusion_text(manifest.path)}
    return "sha256:" + hashlib.sha256(canonical_json(payload)).hexdigest()
