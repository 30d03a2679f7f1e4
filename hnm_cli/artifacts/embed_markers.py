"""The resume markers of an embed model folder: `<model>/<part>/.done/NNNNN.json`, one per finished shard.

A marker holds the shard fingerprint (the encoder fingerprint + a digest of that shard's ids and texts), its row,
unique-text and dim counts, and the size and sha256 of the shard's two files. It is written after both files, so
its presence means the shard is complete; what it records lets a rerun tell a shard it wrote from one changed
since. `hnm embed` (both executors) writes and reads markers only through this module.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any

import orjson

from hnm_cli.artifacts.manifest import canonical_json, load_manifest
from hnm_cli.errors import IncompleteArtifactError
from hnm_cli.fileio import atomic_write_json, file_sha256

log = logging.getLogger("hnm")

DONE_DIR = ".done"
STALE_PATTERNS = [f"{DONE_DIR}/*.json", f"{DONE_DIR}/.*.tmp"]


def marker_name(shard: int) -> str:
    """A marker's path relative to its part folder (`.done/00003.json`)."""
    return f"{DONE_DIR}/{shard:05d}.json"


def shard_fingerprint(encoder_fp: str, ids: list[str], texts: list[str]) -> str:
    """Fingerprint of one shard: the encoder fingerprint plus a digest of the shard's ids and texts."""
    h = hashlib.sha256(encoder_fp.encode())
    h.update(canonical_json([ids, texts]))
    return "sha256:" + h.hexdigest()


def recorded_outputs(model_dir: Path) -> dict[str, dict[str, dict[str, Any]]]:
    """The outputs entries of the model folder's manifest (an earlier run's) by part and file name; empty if none."""
    try:
        manifest = load_manifest(model_dir)
    except IncompleteArtifactError:
        return {}
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for entry in manifest.outputs if manifest is not None else []:
        part, _, rel = str(entry["path"]).partition("/")
        out.setdefault(part, {})[rel] = entry
    return out


def read_marker(
    marker: Path,
    fingerprint: str,
    part_dir: Path,
    *,
    deep: bool = False,
    recorded: dict[str, dict[str, Any]] | None = None,
) -> dict[str, Any] | None:
    """The marker's content if it matches `fingerprint` and its files are the ones it recorded.

    Checked like a manifest's outputs (`changed_output`): sizes, then the sha256 of a file whose mtime moved since
    the model manifest recorded it (or that it never recorded: a resumed run), or of every file with `deep`. A shard edited, replaced or corrupted since its marker was written is
    encoded again, not kept. A marker written before markers recorded digests is checked against `recorded`, the
    model manifest's entries for the part's files, when there is one (by size alone when there is none).
    """
    if not marker.is_file():
        return None
    try:
        data = orjson.loads(marker.read_bytes())
    except orjson.JSONDecodeError:
        return None
    if not isinstance(data, dict) or data.get("fingerprint") != fingerprint:
        return None
    # Markers hold no mtime (a Ray run's markers are byte for byte a local run's); the model manifest's entries
    # give the mtime of each file it recorded with the same digest, and a file with none known is hashed.
    digests, mtimes = dict(data.get("sha256", {})), {}
    for rel, entry in (recorded or {}).items():
        if "sha256" in entry and digests.setdefault(rel, entry["sha256"]) == entry["sha256"]:
            mtimes[rel] = entry.get("mtime_ns")
    for rel, size in data.get("bytes", {}).items():
        path = part_dir / rel
        if not path.is_file() or path.stat().st_size != size:
            return None
        moved = path.stat().st_mtime_ns != mtimes.get(rel)
        if rel in digests and (deep or moved) and file_sha256(path) != digests[rel]:
            log.warning("embed: %s changed since it was written (sha256 differs); encoding its shard again", path)
            return None
    return dict(data)


def write_marker(
    part_dir: Path, shard: int, fingerprint: str, *, rows: int, unique: int, dim: int, files: list[str]
) -> None:
    """Write shard `shard`'s marker, once its `files` (relative to `part_dir`) are complete."""
    sizes = {f: (part_dir / f).stat().st_size for f in files}
    atomic_write_json(
        part_dir / marker_name(shard),
        {
            "fingerprint": fingerprint,
            "rows": rows,
            "unique": unique,
            "dim": dim,
            "bytes": sizes,
            "sha256": {f: file_sha256(part_dir / f) for f in files},
        },
    )
