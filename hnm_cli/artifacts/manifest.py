"""The manifest beside every artifact: fingerprint, up-to-date check, write-last, upstream checks.

Rerun rule (DVC semantics): the fingerprint hashes the stage name, the hnm_cli version, the resolved
params and each input's digest. A raw input file's digest is its content sha256; an upstream hnm
artifact's digest is the sha256 of its manifest's `outputs` list, so a forced upstream rerun that
produces identical bytes does not cascade. A stage is *up to date* when its manifest exists, the
fingerprint matches and every recorded output exists with its recorded size.

A run deletes the old manifest first and writes the new one last: a directory without
`manifest.json` is incomplete by definition and downstream stages refuse it.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from hnm_cli import __version__
from hnm_cli.artifacts.files import atomic_write_json, file_sha256
from hnm_cli.errors import ArtifactMismatchError, IncompleteArtifactError

MANIFEST_NAME = "manifest.json"
log = logging.getLogger("hnm")


@dataclass
class Manifest:
    """What a stage ran with and what it produced. `path` is the artifact directory (not serialised)."""

    stage: str
    fingerprint: str
    params: dict[str, Any]
    inputs: list[dict[str, Any]]
    outputs: list[dict[str, Any]] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)
    hnm_cli_version: str = __version__
    created_at: str = ""
    up_to_date: bool = False  # True when the runner skipped work; not serialised
    path: Path = Path(".")

    @property
    def manifest_path(self) -> Path:
        """Path of `manifest.json` inside the artifact directory."""
        return self.path / MANIFEST_NAME

    def to_json(self) -> dict[str, Any]:
        """The serialisable part (no `path`, no `up_to_date`)."""
        data = asdict(self)
        data.pop("path")
        data.pop("up_to_date")
        return data

    def output(self, rel: str) -> dict[str, Any]:
        """The outputs entry for relative path `rel`."""
        for entry in self.outputs:
            if entry["path"] == rel:
                return entry
        raise KeyError(rel)

    @property
    def digest(self) -> str:
        """Digest of this artifact as seen by downstream stages: sha256 of the outputs list."""
        return outputs_digest(self.outputs)


def canonical_json(obj: Any) -> bytes:
    """Stable JSON bytes (sorted keys, no whitespace) for hashing."""
    return orjson.dumps(obj, option=orjson.OPT_SORT_KEYS | orjson.OPT_SERIALIZE_NUMPY)


def outputs_digest(outputs: list[dict[str, Any]]) -> str:
    """sha256 over (path, sha256) of every output that downstream stages read, order-independent.

    Outputs marked ``"downstream": False`` (statistics with timings, plots, a search index) are left out: they
    change on every run, and counting them would make any forced rerun cascade even with identical data.
    """
    pairs = sorted((o["path"], o.get("sha256", "")) for o in outputs if o.get("downstream", True))
    return "sha256:" + hashlib.sha256(canonical_json(pairs)).hexdigest()


def compute_fingerprint(stage: str, params: dict[str, Any], inputs: list[dict[str, Any]]) -> str:
    """Fingerprint of a run: stage, tool version, resolved params and input digests."""
    # Inputs count by role and content, not by path: the same corpus reached through another path
    # (relative vs absolute, a moved folder, CI's fresh clone) must not trigger hours of re-encoding.
    payload = {
        "stage": stage,
        "version": __version__,
        "params": params,
        "inputs": sorted((i.get("role", ""), i.get("sha256", "")) for i in inputs),
    }
    return "sha256:" + hashlib.sha256(canonical_json(payload)).hexdigest()


def file_input(path: Path, role: str) -> dict[str, Any]:
    """Input record of a raw file: its content hash. `role` says what it is (corpus, queries, qrels)."""
    path = Path(path)
    return {"role": role, "path": str(path), "sha256": file_sha256(path), "bytes": path.stat().st_size}


def artifact_input(manifest: Manifest, role: str) -> dict[str, Any]:
    """Input record of an upstream hnm artifact: its outputs digest, not its whole manifest."""
    return {"role": role, "path": str(manifest.path), "stage": manifest.stage, "sha256": manifest.digest}


def output_entry(directory: Path, rel: str, **extra: Any) -> dict[str, Any]:
    """Outputs entry for a file that now exists: path, bytes, sha256, plus extra keys (rows, dim)."""
    path = Path(directory) / rel
    return {"path": rel, "bytes": path.stat().st_size, "sha256": file_sha256(path), **extra}


def load_manifest(directory: Path) -> Manifest | None:
    """The manifest of `directory`, or None if there is none (an incomplete or absent artifact)."""
    path = Path(directory) / MANIFEST_NAME
    if not path.is_file():
        return None
    data = orjson.loads(path.read_bytes())
    known = {f for f in Manifest.__dataclass_fields__ if f not in ("path", "up_to_date")}
    manifest = Manifest(**{k: v for k, v in data.items() if k in known})
    manifest.path = Path(directory)
    return manifest


def is_up_to_date(directory: Path, fingerprint: str) -> Manifest | None:
    """The existing manifest if it matches `fingerprint` and all its outputs exist with their sizes."""
    manifest = load_manifest(directory)
    if manifest is None or manifest.fingerprint != fingerprint:
        return None
    for entry in manifest.outputs:
        path = Path(directory) / entry["path"]
        if not path.is_file() or path.stat().st_size != entry["bytes"]:
            return None
    manifest.up_to_date = True
    return manifest


def skip_if_up_to_date(directory: Path, stage: str, fingerprint: str, *, force: bool) -> Manifest | None:
    """Return the manifest (and log `<stage>: up to date (...)`) when the run can be skipped."""
    if force:
        return None
    manifest = is_up_to_date(directory, fingerprint)
    if manifest is not None:
        log.info("%s: up to date (%s)", stage, manifest.manifest_path)
    return manifest


def begin_run(directory: Path) -> float:
    """Mark `directory` incomplete (remove its manifest) before writing; return the start time."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / MANIFEST_NAME).unlink(missing_ok=True)
    return time.time()


def write_manifest(
    directory: Path,
    *,
    stage: str,
    fingerprint: str,
    params: dict[str, Any],
    inputs: list[dict[str, Any]],
    outputs: list[dict[str, Any]],
    stats: dict[str, Any],
    started: float,
) -> Manifest:
    """Write `manifest.json` last, atomically, adding timing to stats; return the Manifest."""
    now = time.time()
    stats = {**stats, "seconds": round(now - started, 3)}
    manifest = Manifest(
        stage=stage,
        fingerprint=fingerprint,
        params=params,
        inputs=inputs,
        outputs=outputs,
        stats=stats,
        created_at=datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    )
    manifest.path = Path(directory)
    atomic_write_json(manifest.manifest_path, manifest.to_json())
    return manifest


def require_artifact(directory: Path, stages: str | tuple[str, ...], fix: str) -> Manifest:
    """Load an upstream artifact or raise a one-line error naming the command that makes it.

    Args:
        directory: the artifact directory given by the user.
        stages: stage name(s) the artifact must come from (e.g. ("reduce", "embed-model")).
        fix: the command to run, e.g. "hnm embed --data DATA --out runs/dev/embed".

    Raises:
        IncompleteArtifactError: no directory, or no manifest.json in it.
        ArtifactMismatchError: the manifest belongs to another stage.
    """
    directory = Path(directory)
    wanted = (stages,) if isinstance(stages, str) else stages
    if not directory.is_dir():
        raise IncompleteArtifactError(f"{directory} does not exist. Run: {fix}")
    manifest = load_manifest(directory)
    if manifest is None:
        raise IncompleteArtifactError(f"{directory} is incomplete (no manifest.json). Rerun: {fix}")
    if manifest.stage not in wanted:
        raise ArtifactMismatchError(
            f"{directory} is a '{manifest.stage}' artifact, expected {' or '.join(repr(s) for s in wanted)}"
        )
    return manifest
