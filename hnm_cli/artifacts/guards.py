"""Checks between artifacts: the data upstream is the data given (by content digest), and no evaluation data
leaks into training. Every stage that crosses an artifact boundary calls these, so the rules live once."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hnm_cli.artifacts.manifest import Manifest, load_manifest
from hnm_cli.errors import ArtifactMismatchError, LeakageError

log = logging.getLogger("hnm")


def recorded_digests(manifest: Manifest, role: str, depth: int = 0) -> list[dict[str, Any]]:
    """Raw-file input records of `role` in a manifest, following upstream artifacts (reduce -> embed)."""
    found = [i for i in manifest.inputs if i.get("role") == role and "stage" not in i]
    if found or depth >= 3:
        return found
    for record in manifest.inputs:
        if "stage" in record and record.get("path"):
            upstream = load_manifest(Path(record["path"]))
            if upstream is not None:
                found += recorded_digests(upstream, role, depth + 1)
    return found


def check_same_files(upstream: Manifest, given: list[dict[str, Any]], role: str, *, who: str = "mine") -> None:
    """Refuse an upstream artifact built from other `role` files (corpus, queries) than the ones given.

    Only content digests are compared (paths may differ: a copied data folder is the same data). An artifact
    that records no digest for `role` is not checked (a warning says so).

    Raises:
        ArtifactMismatchError: the digests differ.
    """
    recorded = recorded_digests(upstream, role)
    if not recorded:
        log.warning(
            "%s: %s records no %s digest; cannot check that it matches %s", who, upstream.path, role, given[0]["path"]
        )
        return
    want = sorted(r["sha256"] for r in recorded)
    have = sorted(g["sha256"] for g in given)
    if want != have:
        raise ArtifactMismatchError(
            f"{upstream.path} was built from a different {role} than {given[0]['path']} "
            f"(sha256 {have[0][:12]} given, {want[0][:12]} recorded); re-embed with this {role} or pass the one "
            "the vectors were built from"
        )


def check_mining_split(split: str, eval_splits: tuple[str, ...], *, allowed: bool) -> None:
    """Mining with an evaluation split's queries turns test answers into training data.

    Raises:
        LeakageError: `split` is one of `eval_splits` and not `allowed`.
    """
    if split in eval_splits and not allowed:
        raise LeakageError(
            f"split '{split}' is an evaluation split ({', '.join(eval_splits)}): mining its queries leaks "
            "evaluation data into training; pass --allow-eval-queries to do it anyway"
        )
