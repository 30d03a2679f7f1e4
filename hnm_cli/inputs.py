"""Reading user data: BEIR folders and plain JSONL shards, validated record by record.

Accepted layouts:
  * a BEIR folder: `corpus.jsonl[.gz]` (`_id`, `title`, `text`), `queries.jsonl[.gz]` (`_id`, `text`),
    `qrels/<split>.tsv` with a header line (`query-id<TAB>corpus-id<TAB>score`);
  * a single JSONL file, or a folder of `*.jsonl[.gz]` shards (read in sorted order) whose records use
    `doc_id` / `query_id` instead of `_id`.

Every bad record raises `DataError` with `file:line: field 'x': problem`. Unknown fields are kept in
`meta` and passed through to the outputs that carry records.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import os
import stat
import unicodedata
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from hnm_cli.artifacts.manifest import file_input
from hnm_cli.choices import OnEmpty
from hnm_cli.errors import DataError, InputError

log = logging.getLogger("hnm")


@dataclass(frozen=True)
class Doc:
    """One corpus document."""

    doc_id: str
    title: str
    text: str
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def full_text(self) -> str:
        """Title and body joined by one space, BEIR's convention for dense encoders."""
        return f"{self.title} {self.text}" if self.title else self.text


@dataclass(frozen=True)
class Query:
    """One query."""

    query_id: str
    text: str
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class Records:
    """Records in file order, with an id index and the files they came from."""

    items: dict[str, Any]  # id -> Doc | Query, insertion-ordered
    files: list[Path]
    skipped_empty: int = 0

    def __len__(self) -> int:
        return len(self.items)

    def __contains__(self, key: object) -> bool:
        return key in self.items

    def __getitem__(self, key: str) -> Any:
        return self.items[key]

    @property
    def ids(self) -> list[str]:
        """Ids in file order."""
        return list(self.items)

    def digests(self, role: str) -> list[dict[str, Any]]:
        """Manifest input records (content sha256) for the files read."""
        return [file_input(p, role) for p in self.files]


def normalize_text(text: str) -> str:
    """Case- and whitespace-insensitive form used to spot duplicate texts."""
    return " ".join(text.lower().split())


def twin_key(text: str) -> str:
    """The form two query texts share when they ask the same thing: Unicode-normalised (NFKC), case-folded,
    punctuation and symbols dropped, whitespace collapsed ("What is a VCN?" and "what is a vcn" are twins).

    For the leakage guards only; duplicate detection in mining keeps `normalize_text` (its results must not move).
    """
    folded = unicodedata.normalize("NFKC", text).casefold()
    kept = "".join(" " if unicodedata.category(c)[0] in "PSZC" else c for c in folded)
    return " ".join(kept.split())


def text_hash(text: str) -> str:
    """Short stable hash of `normalize_text(text)`."""
    return hashlib.sha1(normalize_text(text).encode("utf-8")).hexdigest()


# ---------------------------------------------------------------------------------------------
# Locating files
# ---------------------------------------------------------------------------------------------


BEIR_STEMS = ("corpus", "queries")


def _beir_names(stem: str) -> tuple[str, str]:
    return f"{stem}.jsonl", f"{stem}.jsonl.gz"


def path_kind(path: Path) -> str:
    """What is at `path`, in words: "a regular file", "a folder", "a named pipe (FIFO)", "a character device",
    "a block device", "a socket", "a broken symlink" or "nothing" (symlinks followed)."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return "a broken symlink" if os.path.islink(path) else "nothing"
    except OSError as err:
        return f"unreadable ({err.strerror or err})"
    for test, kind in (
        (stat.S_ISREG, "a regular file"),
        (stat.S_ISDIR, "a folder"),
        (stat.S_ISFIFO, "a named pipe (FIFO)"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return kind
    return "not a regular file"


def require_regular_file(path: Path, what: str, expected: str = "a regular file") -> Path:
    """`path` if it is a regular file (or a symlink to one); else one error line saying what it is instead.

    Every input file is read whole or streamed to its end: a FIFO would block forever and /dev/zero never ends,
    so anything but a regular file is refused before it is opened.

    Raises:
        InputError: `<what> <path> does not exist`, or `<what> <path> is a named pipe (FIFO); expected ...`.
    """
    kind = path_kind(path)
    if kind == "nothing":
        raise InputError(f"{what}{path} does not exist")
    if kind != "a regular file":
        raise InputError(f"{what}{path} is {kind}; expected {expected}")
    return Path(path)


def _present(path: Path) -> bool:
    return path.exists() or path.is_symlink()  # a dangling symlink is there too (and an error, not "absent")


def _regular_file(path: Path) -> Path:
    """`path` if it is a non-empty regular file; else one error line (a /dev/null link, a folder, a FIFO...)."""
    require_regular_file(path, "", "a JSONL file")
    if path.stat().st_size == 0:
        raise InputError(f"{path} is empty (0 bytes); expected one JSON record per line")
    return path


def resolve_jsonl_files(path: Path, stem: str) -> list[Path]:
    """Files to read for `--corpus`/`--queries`: a file, a BEIR folder, or a folder of JSONL shards.

    A folder holding any BEIR name (`corpus.jsonl[.gz]`, `queries.jsonl[.gz]`, `qrels/`) is a BEIR folder: its
    corpus is `corpus.jsonl[.gz]` and nothing else (without it, `queries.jsonl` would be read as the corpus).
    Any other folder is a folder of shards, every `*.jsonl[.gz]` in sorted order.

    Args:
        path: what the user gave.
        stem: "corpus" or "queries" (the BEIR file name to look for inside a folder).

    Raises:
        InputError: nothing there; a BEIR folder without the `stem` file; a file that is empty or not a
            regular file (a symlink to /dev/null).
    """
    path = Path(path)
    if path.is_file():
        return [_regular_file(path)]
    if not path.is_dir():
        require_regular_file(path, "", "a JSONL file or a folder")
    named = [path / n for n in _beir_names(stem) if _present(path / n)]
    if named:
        return [_regular_file(named[0])]
    beir = [n for other in BEIR_STEMS for n in _beir_names(other) if _present(path / n)]
    beir += ["qrels/"] if (path / "qrels").is_dir() else []
    if beir:
        raise InputError(
            f"{path} is a BEIR folder (it has {', '.join(beir)}) but has no {stem}.jsonl or {stem}.jsonl.gz",
            hint=f"add {path / (stem + '.jsonl')}, or give the {stem} file itself (--{stem} FILE)",
        )
    shards = sorted([*path.glob("*.jsonl"), *path.glob("*.jsonl.gz")])
    if not shards:
        raise InputError(f"{path} has no {stem}.jsonl and no *.jsonl shards")
    for shard in shards:
        require_regular_file(shard, "", "a JSONL shard")
    return shards


def resolve_qrels_file(path: Path, split: str) -> Path:
    """The qrels file for `split`: `path` itself if a file, else `path/qrels/<split>.tsv` or `path/<split>.tsv`."""
    path = Path(path)
    if path.is_file():
        return path
    if not path.is_dir():
        require_regular_file(path, "", "a qrels TSV file or a folder")
    for candidate in (path / "qrels" / f"{split}.tsv", path / f"{split}.tsv"):
        if _present(candidate):
            return require_regular_file(candidate, "", "a qrels TSV file")
    raise InputError(f"no qrels for split '{split}' in {path} (looked for qrels/{split}.tsv)")


# ---------------------------------------------------------------------------------------------
# Streaming JSONL with line-precise errors
# ---------------------------------------------------------------------------------------------


def _open(path: Path) -> Any:
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def _lines(path: Path) -> Iterator[tuple[int, bytes]]:
    """(line number, raw line) of a plain or gzipped file; a file that cannot be read or decompressed is a
    DataError naming it (a truncated .gz would otherwise surface as EOFError, which click turns into 'Aborted!')."""
    lineno = 0
    try:
        with _open(path) as fh:
            for lineno, raw in enumerate(fh, 1):
                yield lineno, raw
    except (EOFError, gzip.BadGzipFile, zlib.error) as err:
        at = f" after line {lineno}" if lineno else ""
        raise DataError(f"{path}: not a readable gzip file ({type(err).__name__}: {err or 'truncated'}){at}") from err
    except IsADirectoryError as err:
        raise InputError(f"{path} is a folder, expected a file") from err
    except OSError as err:
        raise InputError(f"{path}: cannot read ({err.strerror or err})") from err


def iter_raw_lines(path: Path) -> Iterator[tuple[int, bytes]]:
    """(line number, raw bytes) of every line of a plain or gzipped user file (a TREC run, a TSV); a file that
    cannot be read or decompressed is one error line naming it. Decoding is the caller's, per line."""
    return _lines(path)


def iter_json_objects(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (line number, object) for each non-blank line; raise DataError on bad bytes or JSON."""
    for lineno, raw in _lines(path):
        if not raw.strip():
            continue
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as err:
            raise DataError(f"{path}:{lineno}: invalid UTF-8 at byte {err.start}") from err
        try:
            obj = orjson.loads(raw)
        except orjson.JSONDecodeError as err:
            raise DataError(f"{path}:{lineno}: malformed JSON ({err.msg})") from err
        if not isinstance(obj, dict):
            raise DataError(f"{path}:{lineno}: expected a JSON object, got {type(obj).__name__}")
        yield lineno, obj


def _take_id(obj: dict[str, Any], keys: tuple[str, ...], where: str) -> tuple[str, str]:
    for key in keys:
        if key in obj:
            value = obj.pop(key)
            if isinstance(value, bool) or not isinstance(value, str | int):
                raise DataError(f"{where}: field '{key}': id must be a string, got {type(value).__name__}")
            value = str(value)
            if not value.strip():
                raise DataError(f"{where}: field '{key}': id is empty")
            return key, value
    raise DataError(f"{where}: field '{keys[0]}': missing id (expected one of {', '.join(keys)})")


def _take_str(obj: dict[str, Any], key: str, where: str, *, required: bool) -> str:
    if key not in obj:
        if required:
            raise DataError(f"{where}: field '{key}': missing")
        return ""
    value = obj.pop(key)
    if value is None and not required:
        return ""
    if not isinstance(value, str):
        raise DataError(f"{where}: field '{key}': expected a string, got {type(value).__name__}")
    return value


def _read_records(path: Path, stem: str, on_empty: OnEmpty) -> Records:
    id_keys = ("_id", "doc_id") if stem == "corpus" else ("_id", "query_id")
    files = resolve_jsonl_files(path, stem)
    items: dict[str, Any] = {}
    first_seen: dict[str, str] = {}
    skipped = 0
    for file in files:
        for lineno, obj in iter_json_objects(file):
            where = f"{file}:{lineno}"
            id_key, rid = _take_id(obj, id_keys, where)
            text = _take_str(obj, "text", where, required=True)
            title = _take_str(obj, "title", where, required=False) if stem == "corpus" else ""
            if rid in items:
                raise DataError(f"{where}: field '{id_key}': duplicate id '{rid}' (first at {first_seen[rid]})")
            if not text.strip() and not title.strip():
                if on_empty == OnEmpty.SKIP:
                    skipped += 1
                    continue
                raise DataError(f"{where}: field 'text': empty text for id '{rid}' (use --on-empty skip to drop)")
            first_seen[rid] = where
            if stem == "corpus":
                items[rid] = Doc(rid, title, text, obj)
            else:
                items[rid] = Query(rid, text, obj)
    if not items:
        raise DataError(f"{path}: no {stem} records (zero rows)")
    return Records(items=items, files=files, skipped_empty=skipped)


def read_corpus(path: Path, *, on_empty: OnEmpty = OnEmpty.ERROR) -> Records:
    """Read and validate a corpus (BEIR `_id,title,text` or JSONL `doc_id,title,text`)."""
    return _read_records(path, "corpus", on_empty)


def read_queries(path: Path, *, on_empty: OnEmpty = OnEmpty.ERROR) -> Records:
    """Read and validate queries (BEIR `_id,text` or JSONL `query_id,text`)."""
    return _read_records(path, "queries", on_empty)


@dataclass
class DataPaths:
    """Where a stage reads corpus, queries and qrels from."""

    corpus: Path
    queries: Path
    qrels: Path | None  # a BEIR folder or a qrels file; resolve with resolve_qrels_file(path, split)


def resolve_data(
    data: Path | None, corpus: Path | None = None, queries: Path | None = None, qrels: Path | None = None
) -> DataPaths:
    """Merge `--data DIR` (a BEIR folder) with explicit `--corpus/--queries/--qrels` (which win)."""
    if data is None and (corpus is None or queries is None):
        raise InputError("give --data <BEIR folder>, or both --corpus and --queries")
    if data is not None and not Path(data).is_dir():
        kind = path_kind(Path(data))
        raise InputError(f"{data} does not exist" if kind == "nothing" else f"{data} is {kind}; expected a BEIR folder")
    return DataPaths(
        corpus=Path(corpus) if corpus is not None else Path(data),  # type: ignore[arg-type]
        queries=Path(queries) if queries is not None else Path(data),  # type: ignore[arg-type]
        qrels=Path(qrels) if qrels is not None else (Path(data) if data is not None else None),
    )
