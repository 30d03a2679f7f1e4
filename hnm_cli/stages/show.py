"""`hnm show`: look inside an artifact. A mine artifact shows triplets with their texts and distances; an eval
artifact shows its comparison table. Reads only; text for people (`text`) or one JSON document (`json`)."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import orjson

from hnm_cli.artifacts import mined
from hnm_cli.artifacts.manifest import Manifest, load_manifest
from hnm_cli.errors import ArtifactMismatchError, IncompleteArtifactError, InputError
from hnm_cli.inputs import read_corpus, read_queries, resolve_data

SHOWABLE = ("mine", "eval")


def run(artifact: Path, *, data: Path | None = None, n: int = 5, fmt: str = "text") -> str:
    """What `hnm show` prints for `artifact` (a mine or eval output folder).

    Args:
        artifact: the artifact folder.
        data: the BEIR folder (or corpus/queries) of a mine artifact; default: the files its manifest recorded.
        n: how many triplets of a mine artifact, spread over the file (every k-th row with a negative).
        fmt: "text" or "json".

    Returns:
        The text to print (ends without a newline).

    Raises:
        IncompleteArtifactError: no manifest (the stage did not finish).
        ArtifactMismatchError: an artifact of another stage.
        InputError: the data of a mine artifact cannot be found.
    """
    manifest = load_manifest(Path(artifact))
    if manifest is None:
        raise IncompleteArtifactError(f"{artifact} has no manifest.json (not a finished hnm artifact)")
    if manifest.stage == "mine":
        triplets = sample_triplets(manifest, data, n)
        if fmt == "json":
            return orjson.dumps(triplets, option=orjson.OPT_INDENT_2).decode()
        return f"Example triplets from {artifact}:\n" + (
            format_triplets(triplets) if triplets else "(no pair got a hard negative)"
        )
    if manifest.stage == "eval":
        from hnm_cli.stages.evaluate import REPORT_JSON, REPORT_MD

        if fmt == "json":
            return (Path(artifact) / REPORT_JSON).read_text(encoding="utf-8").rstrip("\n")
        return (Path(artifact) / REPORT_MD).read_text(encoding="utf-8").rstrip("\n")
    raise ArtifactMismatchError(
        f"{artifact} is a '{manifest.stage}' artifact; hnm show reads {' and '.join(SHOWABLE)} artifacts"
    )


def _recorded(manifest: Manifest, role: str) -> Path | None:
    paths = [Path(i["path"]) for i in manifest.inputs if i.get("role") == role and "stage" not in i]
    return paths[0] if len(paths) == 1 else (paths[0].parent if paths else None)


def sample_triplets(manifest: Manifest, data: Path | None, n: int) -> list[dict[str, Any]]:
    """Up to `n` triplets (query, positive, first negative, with texts and distances) from rows with a negative.

    Spread over the file (every k-th row) rather than the first n, so one query family does not fill the table.
    """
    if data is not None:
        paths = resolve_data(data)
        corpus_path: Path | None = paths.corpus
        queries_path: Path | None = paths.queries
    else:
        corpus_path, queries_path = _recorded(manifest, "corpus"), _recorded(manifest, "queries")
    if corpus_path is None or queries_path is None or not corpus_path.exists() or not queries_path.exists():
        raise InputError(f"{manifest.path}: the corpus or queries it was mined from are gone; give --data")
    corpus, queries = read_corpus(corpus_path), read_queries(queries_path)
    rows = [r for _, r in mined.iter_rows(manifest.path) if r["negatives"]]
    step = max(1, len(rows) // max(n, 1))
    out = []
    for row in rows[::step][:n]:
        neg = row["negatives"][0]
        pos_doc, neg_doc = corpus[row["positive_id"]], corpus[neg["doc_id"]]
        out.append(
            {
                "query_id": row["query_id"],
                "query": queries[row["query_id"]].text,
                "positive_id": row["positive_id"],
                "positive": pos_doc.title or pos_doc.text[:80],
                "negative_id": neg["doc_id"],
                "negative": neg_doc.title or neg_doc.text[:80],
                "source": neg["source"],
                "d_qp": neg["d_qp"],
                "d_qd": neg["d_qd"],
                "d_pd": neg["d_pd"],
            }
        )
    return out


def format_triplets(triplets: list[dict[str, Any]]) -> str:
    """A readable block per triplet."""
    lines = []
    for i, t in enumerate(triplets, 1):
        lines.append(f"{i}. query:         {textwrap.shorten(t['query'], 100)}")
        lines.append(f"   positive:      {textwrap.shorten(t['positive'], 100)}" + _dist(t["d_qp"]))
        closer = "closer to the query" if _closer(t) else "farther than the positive"
        lines.append(f"   hard negative: {textwrap.shorten(t['negative'], 100)}" + _dist(t["d_qd"], closer))
    return "\n".join(lines)


def _closer(t: dict[str, Any]) -> bool:
    return t["d_qd"] is not None and t["d_qp"] is not None and t["d_qd"] < t["d_qp"]


def _dist(d: float | None, note: str = "") -> str:
    if d is None:
        return ""
    return f"  (d={d:.3f}{', ' + note if note else ''})"
