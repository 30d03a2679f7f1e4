"""`hnm show`: look inside an artifact. A mine artifact shows triplets with their texts and distances; an eval
artifact shows its comparison table. Reads only; text for people (`text`) or one JSON document (`json`)."""

from __future__ import annotations

import logging
import textwrap
from pathlib import Path
from typing import Any

import orjson

from hnm_cli.artifacts import mined
from hnm_cli.artifacts.evaluation import report_text
from hnm_cli.artifacts.guards import mined_from_mismatch
from hnm_cli.artifacts.manifest import Manifest, file_input, load_manifest, require_artifact
from hnm_cli.choices import Stage
from hnm_cli.errors import ArtifactMismatchError, IncompleteArtifactError, InputError
from hnm_cli.inputs import Records, read_corpus, read_queries, resolve_data, resolve_jsonl_files

SHOWABLE = (Stage.MINE, Stage.EVAL)
log = logging.getLogger("hnm")


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
        ArtifactMismatchError: an artifact of another stage, or data that lacks an id the mined rows name.
        CorruptArtifactError: a file of the artifact changed since its manifest was written.
        DataError: a mined row that is not the documented schema.
        InputError: the data of a mine artifact cannot be found.
    """
    manifest = load_manifest(Path(artifact))
    if manifest is None:
        raise IncompleteArtifactError(f"{artifact} has no manifest.json (not a finished hnm artifact)")
    if manifest.stage == Stage.MINE:
        # Verified like every reader of the artifact: a deleted, truncated or replaced file is an error, not
        # "(no pair got a hard negative)"; the rows themselves are re-hashed as they are read (iter_rows).
        manifest = mined.require_mined(Path(artifact))
        triplets = sample_triplets(manifest, data, n)
        if fmt == "json":
            return orjson.dumps(triplets, option=orjson.OPT_INDENT_2).decode()
        return f"Example triplets from {artifact}:\n" + (
            format_triplets(triplets) if triplets else "(no pair got a hard negative)"
        )
    if manifest.stage == Stage.EVAL:
        return _eval_report(Path(artifact), fmt)
    raise ArtifactMismatchError(
        f"{artifact} is a '{manifest.stage}' artifact; hnm show reads {' and '.join(SHOWABLE)} artifacts"
    )


def _eval_report(artifact: Path, fmt: str) -> str:
    """report.json (checked to be an eval report) or report.md of an intact eval artifact."""
    require_artifact(artifact, Stage.EVAL, fix=f"hnm eval ... --out {artifact}")
    return report_text(artifact, fmt)


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
    # Other bytes need not be other records (a gzipped copy, a re-export, the recorded file edited since): show
    # what is there, with one warning; an id the mined rows name but the data lacks is an error below.
    given = [file_input(p, "corpus") for p in resolve_jsonl_files(corpus_path, "corpus")]
    given += [file_input(p, "queries") for p in resolve_jsonl_files(queries_path, "queries")]
    if (found := mined_from_mismatch(manifest, given)) is not None:
        log.warning("show: warning: %s; the texts shown may not be the ones mined", found[1])
    corpus, queries = read_corpus(corpus_path), read_queries(queries_path)
    rows = []
    for where, row in mined.iter_rows(manifest.path, manifest):
        _check_known(where, row, corpus, queries)
        if row["negatives"]:
            rows.append(row)
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
                "source": neg.get("source"),
                "d_qp": neg.get("d_qp"),
                "d_qd": neg.get("d_qd"),
                "d_pd": neg.get("d_pd"),
                # Candidates a false-negative guard removed as likely positives: what a user should review.
                **(
                    {
                        "suspected": [
                            {
                                "doc_id": x["doc_id"],
                                "text": _title(corpus, x["doc_id"]),
                                "guard": x.get("source"),
                                "d_qd": x.get("d_qd"),
                            }  # fmt: skip
                            for x in row["suspected"][:SUSPECTS_SHOWN]
                        ]
                    }
                    if row.get("suspected")
                    else {}
                ),
            }
        )
    return out


SUSPECTS_SHOWN = 3  # per triplet in `hnm show`; the artifact keeps up to mining.controls.MAX_SUSPECTED


def _title(corpus: Records, doc_id: str) -> str:
    if doc_id not in corpus:
        return f"({doc_id}: not in the data)"
    doc = corpus[doc_id]
    return str(doc.title or doc.text[:80])


def _check_known(where: str, row: dict[str, Any], corpus: Records, queries: Records) -> None:
    """Every id a row names is in the data shown with it (else the data is not the one it was mined from)."""
    hint = "give the --data the artifact was mined from"
    cpath, qpath = (r.files[0] if len(r.files) == 1 else r.files[0].parent for r in (corpus, queries))
    if row["query_id"] not in queries:
        raise ArtifactMismatchError(f"{where}: field 'query_id': query '{row['query_id']}' is not in {qpath}", hint)
    negatives = [(f"negatives[{i}].doc_id", n["doc_id"]) for i, n in enumerate(row["negatives"])]
    for field, doc in [("positive_id", row["positive_id"]), *negatives]:
        if doc not in corpus:
            raise ArtifactMismatchError(f"{where}: field '{field}': document '{doc}' is not in {cpath}", hint)


def format_triplets(triplets: list[dict[str, Any]]) -> str:
    """A readable block per triplet."""
    lines = []
    for i, t in enumerate(triplets, 1):
        lines.append(f"{i}. query:         {textwrap.shorten(t['query'], 100)}")
        lines.append(f"   positive:      {textwrap.shorten(t['positive'], 100)}" + _dist(t["d_qp"]))
        closer = "closer to the query" if _closer(t) else "farther than the positive"
        lines.append(f"   hard negative: {textwrap.shorten(t['negative'], 100)}" + _dist(t["d_qd"], closer))
        for x in t.get("suspected", []):
            lines.append(f"   suspected positive ({x['guard']}): {textwrap.shorten(x['text'], 80)}" + _dist(x["d_qd"]))
    return "\n".join(lines)


def _closer(t: dict[str, Any]) -> bool:
    return t["d_qd"] is not None and t["d_qp"] is not None and t["d_qd"] < t["d_qp"]


def _dist(d: float | None, note: str = "") -> str:
    if d is None:
        return ""
    return f"  (d={d:.3f}{', ' + note if note else ''})"
