"""The manifest beside every artifact: fingerprint, up-to-date check, write-last, upstream checks.

Rerun rule (DVC semantics): the fingerprint hashes the stage name, the hnm_cli version, the resolved
params and each input's digest. A raw input file's digest is its content sha256; an upstream hnm
artifact's digest is the sha256 of its manifest's `outputs` list, so a forced upstream rerun that
produces identical bytes does not cascade. A stage is *up to date* when its manifest exists, the
fingerprint matches and every recorded output exists with its recorded size.

The new manifest is written last, so a directory without `manifest.json` is incomplete by definition and
downstream stages refuse it; how a run gets its files into place under that manifest is `output_dir`'s.

Verification: every output entry records its size, sha256 and mtime. The cheap check (up to date, and every
upstream artifact a stage reads) compares size and mtime and re-hashes only a file whose mtime moved, so an
edited, truncated or replaced file is caught and a copied-but-equal one is not rebuilt for nothing; `deep`
(`--verify`) re-hashes every file, which also catches an edit that kept the mtime or an edited manifest.
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

from hnm_cli._version import __version__
from hnm_cli.errors import (
    ArtifactMismatchError,
    CorruptArtifactError,
    IncompleteArtifactError,
)
from hnm_cli.fileio import atomic_write_json, file_sha256

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
    """Outputs entry for a file that now exists: path, bytes, sha256, mtime_ns, plus extra keys (rows, dim)."""
    path = Path(directory) / rel
    st = path.stat()
    return {"path": rel, "bytes": st.st_size, "sha256": file_sha256(path), "mtime_ns": st.st_mtime_ns, **extra}


_FIELDS = {f for f in Manifest.__dataclass_fields__ if f not in ("path", "up_to_date")}


def load_manifest(directory: Path) -> Manifest | None:
    """The manifest of `directory`, or None if there is none (an incomplete or absent artifact).

    Raises:
        IncompleteArtifactError: a manifest.json that cannot be read as hnm's manifest (truncated, empty,
            not an object, missing fields): the run that wrote it must be redone.
    """
    path = Path(directory) / MANIFEST_NAME
    if not path.is_file():
        return None
    try:
        data = orjson.loads(path.read_bytes())
        if not isinstance(data, dict):
            raise TypeError(f"a JSON {type(data).__name__}, not an object")
        manifest = Manifest(**{k: v for k, v in data.items() if k in _FIELDS})
        _check_fields(manifest)
    except (OSError, orjson.JSONDecodeError, TypeError) as err:
        raise IncompleteArtifactError(
            f"{path} is unreadable ({str(err).splitlines()[0][:120]}); rerun the stage that wrote it with --force"
        ) from err
    manifest.path = Path(directory)
    return manifest


def _check_fields(manifest: Manifest) -> None:
    """Raise TypeError unless every field has the type hnm writes, and every output stays inside the artifact."""
    for name, kind in (("stage", str), ("fingerprint", str), ("params", dict), ("stats", dict)):
        if not isinstance(getattr(manifest, name), kind):
            raise TypeError(f"its '{name}' is not a {'string' if kind is str else 'JSON object'}")
    for name in ("inputs", "outputs"):
        entries = getattr(manifest, name)
        if not isinstance(entries, list) or not all(isinstance(e, dict) and "path" in e for e in entries):
            raise TypeError(f"its '{name}' is not a list of files")
        if not all(isinstance(e["path"], str) for e in entries):
            raise TypeError(f"its '{name}' holds a path that is not a string")
    for entry in manifest.outputs:
        if not inside_artifact(entry["path"]):
            raise TypeError(f"its output {entry['path']!r} lies outside the artifact")


def inside_artifact(rel: str) -> bool:
    """Whether `rel`, a path recorded in a manifest, names something inside the artifact folder: relative, no `..`.

    A manifest is data, and an edited one must not make a reader open (or a rerun delete) files elsewhere.
    """
    parts = Path(rel).parts
    return bool(parts) and not Path(rel).is_absolute() and ".." not in parts and "\\" not in rel


def changed_output(manifest: Manifest, *, deep: bool = False) -> str | None:
    """The first output of `manifest` that no longer matches its entry, as `<rel>: <what>`, or None.

    Cheap (default): size, then mtime; a file whose mtime moved is re-hashed (a copy with equal content passes).
    Deep: every file is re-hashed. Entries written before mtimes were recorded are checked by size (cheap).
    """
    for entry in manifest.outputs:
        path = manifest.path / entry["path"]
        try:
            st = path.stat()
        except OSError:
            return f"{entry['path']}: missing"
        if not path.is_file():
            return f"{entry['path']}: not a file"
        if st.st_size != entry.get("bytes"):
            return f"{entry['path']}: {st.st_size} bytes, {entry.get('bytes')} recorded"
        moved = "mtime_ns" in entry and st.st_mtime_ns != entry["mtime_ns"]
        if (deep or moved) and "sha256" in entry and file_sha256(path) != entry["sha256"]:
            return f"{entry['path']}: content changed (sha256 differs from the manifest)"
    return None


def is_up_to_date(directory: Path, fingerprint: str, *, deep: bool = False) -> Manifest | None:
    """The existing manifest if it matches `fingerprint` and every output is unchanged (`changed_output`)."""
    manifest = load_manifest(directory)
    if manifest is None or manifest.fingerprint != fingerprint:
        return None
    problem = changed_output(manifest, deep=deep)
    if problem is not None:
        log.warning("%s: %s; rebuilding", directory, problem)
        return None
    manifest.up_to_date = True
    return manifest


def refuse_other_stage(directory: Path, stage: str) -> None:
    """Refuse to write a `stage` run into `directory` when it holds a complete artifact of another stage (an
    `--out` that names the wrong folder: `hnm mine --out runs/embed`); checked before anything is written.

    Raises:
        ArtifactMismatchError: one line naming the folder and the stage of what is there.
        IncompleteArtifactError: its manifest.json is unreadable (`load_manifest`).
    """
    existing = load_manifest(directory)
    if existing is not None and existing.stage != stage:
        raise ArtifactMismatchError(
            f"--out {directory} holds the artifact of another stage ('{existing.stage}', {existing.manifest_path}); "
            f"writing '{stage}' output there would destroy it",
            hint=f"give another --out, or delete {directory} first",
        )


def sub_manifest_entries(directory: Path, names: list[str]) -> list[dict[str, Any]]:
    """Outputs entries for the manifests of the sub-artifacts in `directory` (embed's model folders).

    An artifact made of several manifests lists each inner one among its outputs, so the up-to-date check (cheap:
    size and mtime; `--verify`: the sha256) covers every manifest the artifact is made of, not only the top one.
    They are reports for downstream stages (`downstream=False`): listing them changes no digest.
    """
    return [output_entry(directory, f"{name}/{MANIFEST_NAME}", downstream=False) for name in names]


def changed_sub_manifests(directory: Path, *, deep: bool = False) -> set[str]:
    """Names of the sub-artifacts whose manifest differs from the entry the top manifest recorded for it
    (`sub_manifest_entries`): its own up-to-date claim cannot be trusted, so the sub-artifact is checked anew."""
    try:
        top = load_manifest(directory)
    except IncompleteArtifactError:
        return set()
    if top is None:
        return set()
    changed = set()
    for entry in top.outputs:
        name, _, rest = str(entry["path"]).partition("/")
        if rest == MANIFEST_NAME:
            one = Manifest(stage=top.stage, fingerprint="", params={}, inputs=[], outputs=[entry], path=top.path)
            if changed_output(one, deep=deep) is not None:
                changed.add(name)
    return changed


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


def require_artifact(directory: Path, stages: str | tuple[str, ...], fix: str, *, deep: bool = False) -> Manifest:
    """Load an upstream artifact, verified against its manifest, or raise a one-line error naming the command
    that makes it.

    Args:
        directory: the artifact directory given by the user.
        stages: stage name(s) the artifact must come from (e.g. ("reduce", "embed-model")).
        fix: the command to run, e.g. "hnm embed --data DATA --out runs/dev/embed".
        deep: re-hash every output (`--verify`), not only those whose mtime moved.

    Raises:
        IncompleteArtifactError: no directory, no manifest.json in it, or an unreadable one.
        ArtifactMismatchError: the manifest belongs to another stage.
        CorruptArtifactError: a file changed since the manifest was written.
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
            f"{directory} is a '{manifest.stage}' artifact, expected {' or '.join(repr(str(s)) for s in wanted)}"
        )
    problem = changed_output(manifest, deep=deep)
    if problem is not None:
        raise CorruptArtifactError(f"{directory}/{problem}; the artifact is corrupt. Rebuild it: {fix} --force")
    return manifest
