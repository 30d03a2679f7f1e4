"""The output folder's lock and the staged commit: one writer per folder, and the old artifact stays whole until
every move is known to succeed (as SQLite keeps the old database until its journal commits).

A run writes its files into a staging folder inside the artifact (`Staging`) and moves them into place only
when everything that can fail on its input has passed: a failing run leaves an existing artifact byte for
byte as it was. The commit checks every target folder first and sets the old files and the old manifest aside
(a move that fails all the same is rolled back); the new manifest is written last (`manifest.write_manifest`),
so a directory without `manifest.json` is incomplete by definition and downstream stages refuse it. One writer
per folder: `output_lock` holds `<out>/.hnm.lock` (the owner's pid) for the length of a run, and a run found up
to date (`skip_if_up_to_date`) tidies what an interrupted one left behind.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import socket
import time
from collections.abc import Iterator
from pathlib import Path

from hnm_cli.artifacts.manifest import MANIFEST_NAME, Manifest, is_up_to_date, refuse_other_stage
from hnm_cli.errors import BusyError, IncompleteArtifactError, InputError

log = logging.getLogger("hnm")

LOCK_NAME = ".hnm.lock"
STAGING_PREFIX = ".staging-"


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
