"""The checkpoints of a train-reranker artifact: `<out>/checkpoints/`, keyed by the run's fingerprint.

The trainer writes `checkpoint-<step>/` folders (weights, optimizer, scheduler, rng states, `trainer_state.json`
last); this module decides which one a rerun resumes from, and checks it can be read before the trainer loads it.
Only the process that owns the artifact (rank 0 of a multi-process run) calls `prepare_checkpoints`.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
from pathlib import Path
from typing import Any

from hnm_cli.fileio import atomic_write_bytes

CHECKPOINT_DIR = "checkpoints"
FINGERPRINT_FILE = "fingerprint.txt"
log = logging.getLogger("hnm")


def prepare_checkpoints(directory: Path, fingerprint: str, *, fresh: bool) -> Path | None:
    """Make `directory` hold checkpoints of this fingerprint only; return the last complete one, if any.

    Checkpoints of another fingerprint (other data or settings) are deleted, as are all of them when `fresh`.
    A checkpoint is complete when its `trainer_state.json` exists (the trainer writes it last) and every file the
    trainer will load on resume is readable (`_unreadable`). One that is not is deleted with one warning line
    naming it and what happens instead (an older checkpoint, or step 0): never a traceback, never silent.
    """
    marker = directory / FINGERPRINT_FILE
    if directory.is_file():
        directory.unlink()  # our own folder's name, taken by a stray file
    if directory.exists():
        old = _read_marker(marker)
        if fresh or old != fingerprint:
            if (n := sum(1 for _ in directory.glob("checkpoint-*"))) and not fresh:
                # Another run's checkpoints are expected to go (info); an unreadable marker is damage (warning).
                level = logging.INFO if old else logging.WARNING
                why = "of a run with other data or settings" if old else f"without a readable {FINGERPRINT_FILE}"
                log.log(level, "train-reranker: discarding %d checkpoint(s) %s in %s; training from the start",
                        n, why, directory)  # fmt: skip
            shutil.rmtree(directory)
    directory.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(marker, fingerprint.encode() + b"\n")
    candidates = sorted(
        (p for p in directory.glob("checkpoint-*") if p.name.split("-", 1)[1].isdigit()),
        key=checkpoint_step,
        reverse=True,
    )
    skipped: list[tuple[Path, str]] = []
    chosen = None
    for candidate in candidates:
        problem = _unreadable(candidate)
        if problem is None:
            chosen = candidate
            break
        # A checkpoint torn by a kill (half a trainer_state.json, missing weights) would make every rerun fail;
        # the one before it, or a fresh start, loses a little work instead of all of it. Deleted, so the trainer
        # can save a new checkpoint under its name.
        skipped.append((candidate, problem))
        if candidate.is_dir():
            shutil.rmtree(candidate, ignore_errors=True)
        else:
            candidate.unlink(missing_ok=True)
    then = f"resuming from {chosen.name}" if chosen is not None else "training from the start"
    for candidate, problem in skipped:
        log.warning("train-reranker: skipping checkpoint %s (%s); %s", candidate, problem, then)
    return chosen


def _read_marker(marker: Path) -> str | None:
    """The fingerprint a checkpoints folder was written for, or None (missing, unreadable, not a fingerprint)."""
    try:
        text = marker.read_bytes().decode("ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    kind, _, digest = text.partition(":")
    return text if kind == "sha256" and len(digest) == 64 and all(c in "0123456789abcdef" for c in digest) else None


def _unreadable(checkpoint: Path) -> str | None:
    """Why a checkpoint cannot be resumed from, or None.

    Checked before the trainer sees it, by what can be read cheaply: `trainer_state.json` parses with the types
    the trainer's own state has; every `.safetensors` file's header describes exactly its size; every torch file
    (`optimizer.pt`, `scheduler.pt`, `rng_state*.pth`, `*.bin` weights) is a complete zip archive, and the small
    ones (scheduler, rng state) load with `torch.load(weights_only=True)` as the trainer will load them.
    """
    if not checkpoint.is_dir():
        return "not a folder"
    state_file = checkpoint / "trainer_state.json"
    if not state_file.is_file():
        return "no trainer_state.json: the trainer did not finish writing it"
    try:
        state = json.loads(state_file.read_bytes())
    except (OSError, ValueError) as err:
        return f"trainer_state.json unreadable: {str(err).splitlines()[0][:80]}"
    if (problem := _state_problem(state)) is not None:
        return f"trainer_state.json {problem}"
    weights = [*checkpoint.glob("*.safetensors"), *checkpoint.glob("*.bin"), *checkpoint.glob("*/*.safetensors")]
    weights = [w for w in weights if w.name != "training_args.bin"]
    if not any(w.is_file() and w.stat().st_size > 0 for w in weights):
        return "no model weights"
    for path in sorted(weights) + sorted(checkpoint.glob("*.pt")) + sorted(checkpoint.glob("*.pth")):
        problem = _safetensors_problem(path) if path.suffix == ".safetensors" else _torch_file_problem(path)
        if problem is not None:
            return f"{path.relative_to(checkpoint)}: {problem}"
    return None


def _state_problem(state: Any) -> str | None:
    """What in a parsed trainer_state.json the trainer could not load: unknown keys, or values of another type
    than its `TrainerState` defaults (numbers for numbers, lists for lists, ...)."""
    import dataclasses

    from transformers import TrainerState

    if not isinstance(state, dict):
        return f"is a JSON {type(state).__name__}, not an object"
    defaults = {f.name: f for f in dataclasses.fields(TrainerState)}
    for key, value in state.items():
        if key not in defaults:
            return f"has an unknown field '{key}'"
        f = defaults[key]
        default = f.default if f.default is not dataclasses.MISSING else None
        if key == "global_step" or isinstance(default, int | float) and not isinstance(default, bool):
            ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
            ok = ok and (key != "global_step" or (isinstance(value, int) and value >= 0))
        elif isinstance(default, bool):
            ok = isinstance(value, bool)
        elif isinstance(default, str):
            ok = isinstance(value, str)
        elif key == "log_history":
            ok = isinstance(value, list) and all(isinstance(h, dict) for h in value)
        else:
            ok = True
        if not ok:
            return f"field '{key}': {value!r} is not of the type the trainer expects"
    if "global_step" not in state:
        return "has no global_step"
    return None


def _safetensors_problem(path: Path) -> str | None:
    """A `.safetensors` file is an 8-byte header length, a JSON header, then exactly the data it describes."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            head = fh.read(8)
            n = int.from_bytes(head, "little") if len(head) == 8 else -1
            if n < 2 or 8 + n > size:
                return f"truncated or not a safetensors file ({size} bytes)"
            header = json.loads(fh.read(n))
        ends = [int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"]
    except (OSError, ValueError, TypeError, KeyError, IndexError, AttributeError) as err:
        return f"unreadable safetensors header ({type(err).__name__})"
    if 8 + n + max(ends, default=0) != size:
        return f"{size} bytes, but its header describes {8 + n + max(ends, default=0)} (truncated?)"
    return None


# Torch files up to this size are loaded in full to check them (the scheduler and rng states: a few KB).
_FULL_LOAD_BYTES = 1 << 20


def _torch_file_problem(path: Path) -> str | None:
    """A torch.save file is a zip archive: its central directory (at the end) is gone when the file is cut, and
    absent from garbage. Small files are also loaded as the trainer loads them (`weights_only=True`)."""
    import zipfile

    try:
        size = path.stat().st_size
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                if info.header_offset + info.compress_size > size:
                    return "truncated (a member ends past the end of the file)"
    except (OSError, zipfile.BadZipFile, ValueError) as err:
        return f"not a complete torch file ({str(err).splitlines()[0][:60] or type(err).__name__})"
    if size <= _FULL_LOAD_BYTES:
        import torch
        from transformers.trainer_pt_utils import safe_globals

        try:
            with safe_globals():
                torch.load(path, weights_only=True, map_location="cpu")
        except Exception as err:  # noqa: BLE001  (any failure here is the one the trainer would raise)
            return f"torch.load fails ({type(err).__name__}: {str(err).splitlines()[0][:60] if str(err) else ''})"
    return None


def checkpoint_step(path: Path) -> int:
    return int(path.name.split("-", 1)[1])
