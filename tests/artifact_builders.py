"""Builders for upstream artifacts made by hand in tests (no encoder, no model).

`make_embed_artifact` writes what `hnm embed` writes: `<root>/<name>/manifest.json` (stage "embed") and one
vector set per model, `<root>/<name>/<model>/{manifest.json (stage "embed-model"), corpus/, queries/}`.
Keep the signature stable: the reduce, mine and eval tests use it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from hnm_cli.artifacts.manifest import compute_fingerprint, file_input, output_entry, write_manifest
from hnm_cli.artifacts.vectors import VectorSetWriter


def _shard_sizes(rows: int, shard_rows: int | Sequence[int] | None) -> list[int]:
    if shard_rows is None:
        return [rows]
    if isinstance(shard_rows, int):
        return [min(shard_rows, rows - lo) for lo in range(0, rows, shard_rows)] or [0]
    sizes = list(shard_rows)
    if sum(sizes) != rows:
        raise ValueError(f"shard sizes {sizes} do not add up to {rows} rows")
    return sizes


def _write_part(writer: VectorSetWriter, part: str, ids: list[str], vectors: np.ndarray, sizes: list[int]) -> None:
    """Write parallel shards; zero-size entries leave a gap in the numbering."""
    lo = 0
    for shard, size in enumerate(sizes):
        if size == 0:
            continue
        writer.add_shard(part, shard, ids[lo : lo + size], vectors[lo : lo + size])
        lo += size


def _ids_of(path: Path) -> list[str]:
    return [orjson.loads(line)["_id"] for line in path.read_bytes().splitlines() if line.strip()]


def make_embed_artifact(
    root: Path,
    models: Mapping[str, tuple[np.ndarray, np.ndarray | None]],
    *,
    corpus_ids: list[str] | None = None,
    query_ids: list[str] | None = None,
    shard_rows: int | Sequence[int] | None = None,
    query_shard_rows: int | Sequence[int] | None = None,
    data: Path | None = None,
    name: str = "embed",
    per_model_ids: Mapping[str, tuple[list[str], list[str] | None]] | None = None,
    per_model_shard_rows: Mapping[str, int | Sequence[int]] | None = None,
) -> Path:
    """Write an embed artifact holding the given vectors; return its directory `<root>/<name>`.

    Args:
        root: parent folder (e.g. tmp_path).
        models: model name -> (corpus vectors (n, d), query vectors (m, d) or None for no queries/).
        corpus_ids: ids of the corpus rows; default `d0..d{n-1}`, or the `_id`s of `data/corpus.jsonl`.
        query_ids: ids of the query rows; default `q0..`, or the `_id`s of `data/queries.jsonl`.
        shard_rows: corpus rows per shard (an int), or explicit shard sizes (0 = a skipped shard number);
            default one shard.
        query_shard_rows: the same for queries.
        data: a BEIR folder; when given, its corpus.jsonl/queries.jsonl digests are the `corpus`/`queries`
            input records (so downstream corpus checks pass), otherwise synthetic records are used.
        name: artifact folder name.
        per_model_ids: override (corpus ids, query ids) for some models, to build mismatched artifacts.
        per_model_shard_rows: override `shard_rows` for some models (models with different shard layouts).
    """
    out = Path(root) / name
    if data is not None:
        corpus_ids = corpus_ids or _ids_of(Path(data) / "corpus.jsonl")
        query_ids = query_ids or _ids_of(Path(data) / "queries.jsonl")
        records = [
            file_input(Path(data) / "corpus.jsonl", "corpus"),
            file_input(Path(data) / "queries.jsonl", "queries"),
        ]
    else:
        records = [
            {"role": "corpus", "path": "synthetic/corpus.jsonl", "sha256": "0" * 64, "bytes": 0},
            {"role": "queries", "path": "synthetic/queries.jsonl", "sha256": "1" * 64, "bytes": 0},
        ]
    top_outputs: list[dict[str, Any]] = []
    specs = []
    for model, (corpus_vecs, query_vecs) in models.items():
        corpus_vecs = np.asarray(corpus_vecs, dtype=np.float32)
        c_ids = corpus_ids or [f"d{i}" for i in range(len(corpus_vecs))]
        q_ids = None
        if query_vecs is not None:
            query_vecs = np.asarray(query_vecs, dtype=np.float32)
            q_ids = query_ids or [f"q{i}" for i in range(len(query_vecs))]
        if per_model_ids and model in per_model_ids:
            c_ids, q_ids = per_model_ids[model][0], per_model_ids[model][1] if query_vecs is not None else None
        model_dir = out / model
        writer = VectorSetWriter(model_dir)
        sizes = (per_model_shard_rows or {}).get(model, shard_rows)
        _write_part(writer, "corpus", c_ids, corpus_vecs, _shard_sizes(len(c_ids), sizes))
        if query_vecs is not None and q_ids is not None:
            _write_part(writer, "queries", q_ids, query_vecs, _shard_sizes(len(q_ids), query_shard_rows))
        params = {"name": model, "source": f"test:{model}", "dim": int(corpus_vecs.shape[1])}
        writer.finish(stage="embed-model", params=params, inputs=records)
        outputs = writer.outputs
        top_outputs += [{**o, "path": f"{model}/{o['path']}"} for o in outputs]
        top_outputs.append(output_entry(out, f"{model}/manifest.json"))
        specs.append({"name": model, "source": f"test:{model}"})
    params = {"models": specs}
    write_manifest(
        out,
        stage="embed",
        fingerprint=compute_fingerprint("embed", params, records),
        params=params,
        inputs=records,
        outputs=top_outputs,
        stats={"models": list(models)},
        started=0.0,
    )
    return out


def make_mine_artifact(
    out: Path,
    shards: Iterable[list[dict[str, Any]]],
    *,
    stats: dict[str, Any] | None = None,
    inputs: list[dict[str, Any]] | None = None,
    params: dict[str, Any] | None = None,
) -> Path:
    """Write a mine artifact (what `hnm mine` writes: rows-NNNNN.jsonl, stats.json, the manifest last) from row
    shards given one at a time, so a test can build a million-pair artifact without holding it in memory.

    Args:
        out: the artifact folder.
        shards: lists of rows (`artifacts.mined.mined_row`), one list per `rows-NNNNN.jsonl`.
        stats: stats.json's content (default: none written).
        inputs: the manifest's input records (default: none).
        params: the manifest's params (default: the rule with 3 negatives).
    """
    from hnm_cli.artifacts import mined
    from hnm_cli.artifacts.files import rows_name
    from hnm_cli.fileio import atomic_write_json, write_jsonl

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    outputs = []
    for k, rows in enumerate(shards):
        name = rows_name(k)
        outputs.append(output_entry(out, name, rows=write_jsonl(out / name, rows)))
    if stats is not None:
        atomic_write_json(out / mined.STATS_FILE, stats)
        outputs.append(output_entry(out, mined.STATS_FILE, downstream=False))
    params = params if params is not None else {"strategy": "rule", "num_negatives": 3, "split": "train"}
    inputs = inputs or []
    write_manifest(out, stage=mined.STAGE, fingerprint=compute_fingerprint(mined.STAGE, params, inputs),
                   params=params, inputs=inputs, outputs=outputs, stats=stats or {}, started=0.0)  # fmt: skip
    return out
