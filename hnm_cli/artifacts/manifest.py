"""The manifest beside every artifact: fingerprint, up-to-date check, write-last, upstream checks.

Rerun rule (DVC semantics): the fingerprint hashes the stage name, the hnm_cli version, the resolved
params and each input's digest. A raw input file's digest is its content sha256; an upstream hnm
artifact's digest is the sha256 of its manifest's `outputs` list, so a forced upstream rerun that
produces identical bytes does not cascade. A stage is *up to date* when its manifest exists, the
fingerprint matches and every recorded output exists with its recorded size.

A run writes its files into a staging folder inside the artifact (`Staging`) and moves them into place only
when everything that can fail on its input has passed: a failing run leaves an existing artifact byte for
byte as it was. The commit checks every target folder first and sets the old files and the old manifest aside
(a move that fails all the same is rolled back); the new manifest is written last, so a directory without
`manifest.json` is incomplete by definition and downstream stages refuse it. One writer
per folder: `output_lock` holds `<out>/.hnm.lock` (the owner's pid) for the length of a run.

Verification: every output entry records its size, sha256 and mtime. The cheap check (up to date, and every
upstream artifact a stage reads) compares size and mtime and re-hashes only a file whose mtime moved, so an
edited, truncated or replaced file is caught and a copied-but-equal one is not rebuilt for nothing; `deep`
(`--verify`) re-hashes every file, which also catches an edit that kept the mtime or an edited manifest.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import socket
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from hnm_cli._version import __version__
from hnm_cli.errors import (
    ArtifactMismatchError,
    BusyError,
    CorruptArtifactError,
    IncompleteArtifactError,
    InputError,
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


def skip_if_up_to_date(
    directory: Path, stage: str, fingerprint: str, *, force: bool, deep: bool = False
) -> Manifest | None:
    """Return the manifest (and log `<stage>: up to date (...)`) when the run can be skipped.

    Raises:
        ArtifactMismatchError: `directory` holds another stage's artifact (`refuse_other_stage`), even with `force`.
    """
    try:
        refuse_other_stage(directory, stage)
        if force:
            return None
        manifest = is_up_to_date(directory, fingerprint, deep=deep)
    except IncompleteArtifactError as err:
        if not force:
            log.warning("%s; rebuilding", err)  # our own output is unreadable: a rerun replaces it
        return None
    if manifest is not None:
        log.info("%s: up to date (%s)", stage, manifest.manifest_path)
        tidy_leftovers(directory)  # an interrupted run's lock and staging folder go, where the folder can be written
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


# ---------------------------------------------------------------------------------------------
# Writing: one writer per folder, staged files, manifest last
# ---------------------------------------------------------------------------------------------

LOCK_NAME = ".hnm.lock"
STAGING_PREFIX = ".staging-"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


def _start_time(pid: int) -> str | None:
    """The start time of process `pid` in clock ticks since boot (Linux /proc), or None where unknown.

    A pid is reused once its process is gone: a lock that records its owner's start time tells the owner from an
    unrelated process that got the same pid later (a lock of a killed run would otherwise be respected forever).
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        # Field 2 (the command) is in parentheses and may hold spaces; field 22 (starttime) is the 20th after it.
        return stat.rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def lock_text() -> str:
    """What a lock file of this process holds: "pid host [starttime]"."""
    me = f"{os.getpid()} {socket.gethostname()}"
    started = _start_time(os.getpid())
    return me if started is None else f"{me} {started}"


def check_writable(directory: Path) -> None:
    """Refuse a folder this process cannot write, before a run starts writing into it.

    Checked only when there is something to write: a read-only artifact that is up to date is a success.

    Raises:
        InputError: one line naming the folder.
    """
    directory = Path(directory)
    if directory.exists() and not os.access(directory, os.W_OK | os.X_OK):
        raise InputError(f"--out {directory} is not writable (permission denied)")


@contextlib.contextmanager
def output_lock(directory: Path, name: str = LOCK_NAME) -> Iterator[None]:
    """Hold `<directory>/<name>` for the block: a second hnm writing the same folder fails at once.

    The lock file holds "pid host starttime"; a lock whose process is gone (killed run), or whose pid now belongs to
    a process started at another time (the pid was reused), is stale and taken over.

    Raises:
        BusyError: a live process on this host holds the lock.
        InputError: the folder exists but cannot be written (`check_writable`).
        OSError: the folder cannot be created or written (the CLI reports it with the path).
    """
    directory = Path(directory)
    check_writable(directory)
    existed = directory.exists()
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    me = lock_text()
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            owner = lock_owner(path)
            if owner is not None:
                pid, host = owner
                raise BusyError(
                    f"{directory} is being written by another hnm process (pid {pid} on {host})",
                    hint=f"wait for it to finish; if it is gone, remove {path}",
                ) from None
            log.warning("%s: removing a stale lock (its process is gone)", path)
            path.unlink(missing_ok=True)
            continue
        with os.fdopen(fd, "w") as fh:
            fh.write(me + "\n")
        break
    try:
        _clean_leftovers(directory)
        yield
    finally:
        with contextlib.suppress(OSError):
            if path.read_text().strip() == me:
                path.unlink()
        if not existed:
            with contextlib.suppress(OSError):
                directory.rmdir()  # a run that failed before writing anything leaves no empty folder behind


def lock_owner(path: Path) -> tuple[int, str] | None:
    """(pid, host) of a live lock, or None when the lock is stale or unreadable."""
    try:
        pid_text, *rest = path.read_text().split()
        pid = int(pid_text)
    except (OSError, ValueError):
        return None
    host, started = (rest[0], rest[1:]) if rest else (socket.gethostname(), [])
    if host != socket.gethostname():
        return pid, host  # another machine on a shared filesystem: cannot check, so respect it
    if not _pid_alive(pid):
        return None
    now = _start_time(pid)
    if started and now is not None and started[0] != now:
        return None  # the pid was reused by a process that is not the run that took the lock
    return pid, host


def tidy_leftovers(directory: Path) -> None:
    """Best effort, for a run that writes nothing (up to date): remove the stale lock, staging folders and temp files
    an interrupted run left behind, where the folder can be written. A read-only folder is left as it is.
    """
    directory = Path(directory)
    if not directory.is_dir() or not os.access(directory, os.W_OK | os.X_OK):
        return
    with contextlib.suppress(OSError):
        for lock in directory.glob(f"{LOCK_NAME}*"):
            if lock.is_file() and lock_owner(lock) is None:
                log.warning("%s: removing a stale lock (its process is gone)", lock)
                lock.unlink()
        _clean_leftovers(directory)


def _clean_leftovers(directory: Path) -> None:
    """Staging folders and temp files of runs that died (kill -9): their pid is in the name and gone."""
    for path in directory.rglob(f"{STAGING_PREFIX}*"):
        pid = path.name[len(STAGING_PREFIX) :]
        if path.is_dir() and pid.isdigit() and not _pid_alive(int(pid)):
            shutil.rmtree(path, ignore_errors=True)
    for path in directory.rglob(".*.tmp"):
        pid = path.name.rsplit(".", 2)[-2]
        if pid.isdigit() and int(pid) != os.getpid() and not _pid_alive(int(pid)):
            with contextlib.suppress(OSError):
                path.unlink() if path.is_file() else shutil.rmtree(path)


class Staging:
    """A run's new files go to `<out>/.staging-<pid>/` (same layout as `out`) until `commit()`, which moves every
    staged file over its final name. Leaving the block without a commit (an error, Ctrl-C) deletes the staging
    folder: the artifact stays exactly as it was.

    The commit checks every target folder first (it can be created and written) and sets each replaced file
    (and the old manifest) aside in the staging folder rather than deleting it, so a move that fails all the same
    (a read-only subfolder, a full disk) is rolled back: the old artifact, manifest included, stays as it was.
    """

    def __init__(self, out: Path) -> None:
        self.out = Path(out)
        self.dir = self.out / f"{STAGING_PREFIX}{os.getpid()}"
        self.started = time.time()
        self.committed = False

    def __enter__(self) -> Staging:
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir.mkdir(parents=True)
        return self

    def __exit__(self, *exc: object) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)

    def commit(self) -> float:
        """Move the staged files into place (the old manifest set aside first); return the run's start time.

        Raises:
            OSError: a target folder refused (named in the error); nothing of the old artifact was changed.
        """
        staged = sorted(p for p in self.dir.rglob("*") if p.is_file() and not p.is_relative_to(self._aside))
        self._apply([(p, self.out / p.relative_to(self.dir)) for p in staged])
        return self.started

    def replace_folders(self, names: list[str]) -> float:
        """Put each staged folder `<name>/` in place of `out/<name>` as a whole (the old manifest of `out` set aside
        first; the old folders go with the staging folder); return the run's start time.

        For a stage whose output is a set of complete sub-artifacts (embed's model folders, each with its own
        manifest and cache): nothing of an old folder (a stale shard, an old cache) survives into the new one, and
        a kill during the renames leaves every folder either old or new, each matching its own manifest.

        Raises:
            OSError: a target folder refused (named in the error); nothing of the old artifact was changed.
        """
        self._apply([(self.dir / name, self.out / name) for name in names])
        return self.started

    @property
    def _aside(self) -> Path:
        return self.dir / ".replaced"

    def _apply(self, moves: list[tuple[Path, Path]]) -> None:
        created = self._check_targets([target for _, target in moves])
        undo: list[tuple[Path, Path]] = []  # (from, to) renames that put the old state back, newest last
        try:
            for source, target in [(None, self.out / MANIFEST_NAME), *moves]:
                if target.exists() or target.is_symlink():
                    aside = self._aside / target.relative_to(self.out)
                    aside.parent.mkdir(parents=True, exist_ok=True)
                    self._move(target, aside)
                    undo.append((aside, target))
                if source is not None:
                    self._move(source, target)
                    undo.append((target, source))
        except OSError:
            for back_from, back_to in reversed(undo):
                with contextlib.suppress(OSError):
                    os.replace(back_from, back_to)
            for folder in reversed(created):
                with contextlib.suppress(OSError):
                    folder.rmdir()
            raise
        self.committed = True

    def _move(self, source: Path, target: Path) -> None:
        try:
            os.replace(source, target)
        except OSError as err:
            raise OSError(
                err.errno, f"{err.strerror or err}; {self.out} was left as it was", str(target.parent)
            ) from err

    def _check_targets(self, targets: list[Path]) -> list[Path]:
        """Create the target folders and write a probe file in each; return the folders created (newest last).

        Raises:
            OSError: naming the first folder that cannot be created or written; the folders made so far are removed.
        """
        created: list[Path] = []
        try:
            for folder in sorted({t.parent for t in targets} | {self.out}):
                missing = [p for p in (folder, *folder.parents) if not p.exists()]
                for parent in reversed(missing):
                    try:
                        parent.mkdir()
                    except FileExistsError:
                        continue
                    except OSError as err:
                        raise OSError(
                            err.errno, f"{err.strerror or err}; {self.out} was left as it was", str(parent)
                        ) from err
                    created.append(parent)
                probe = folder / f".hnm-probe.{os.getpid()}.tmp"
                try:
                    os.close(os.open(probe, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
                    probe.unlink()
                except OSError as err:
                    raise OSError(
                        err.errno, f"{err.strerror or err}; {self.out} was left as it was", str(folder)
                    ) from err
        except OSError:
            for folder in reversed(created):
                with contextlib.suppress(OSError):
                    folder.rmdir()
            raise
        return created
