"""The Python API, for notebooks and scripts: each stage as a function, and hard-negative mining in memory.

    import hnm_cli as hnm
    m = hnm.embed("data/scifact", "runs/x/embed", models=["pkg:all-MiniLM-L6-v2"])     # a Manifest
    rows = hnm.mine_hard_negatives(queries, corpus, positives, num_negatives=3)          # list of dicts

The stage functions are the CLI's runners (same artifacts, same up-to-date skips, same errors: `HnmError`
subclasses), with config keys as keyword arguments over an optional TOML `config`. `mine_hard_negatives` takes
texts (and optionally precomputed vectors), encodes with the ensemble, fuses it as `hnm reduce` does and calls
the same `mining.mine_negatives` as `hnm mine`, writing nothing. Nothing here changes process-wide state: no
logging setup, no environment variables; library output settings changed for a call are restored after it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hnm_cli.artifacts import mined
from hnm_cli.artifacts.exports import export_rows
from hnm_cli.artifacts.manifest import Manifest
from hnm_cli.artifacts.reranker import parse_model_option as parse_reranker_option
from hnm_cli.choices import ExportLayout, Precision, Vote
from hnm_cli.config import Config, EmbedConfig, MineConfig, load_config
from hnm_cli.encoding.devices import resolve_precision
from hnm_cli.encoding.encoders import load_encoder
from hnm_cli.encoding.registry import parse_model_option
from hnm_cli.encoding.runtime import PART_KIND, encode_shards, resolve_for_run
from hnm_cli.errors import ConfigError, DataError
from hnm_cli.fusion import ArrayPart, fuse_in_memory, model_weights
from hnm_cli.inputs import Doc, Query, Records, resolve_data
from hnm_cli.mining import mine_negatives
from hnm_cli.mining.controls import Members
from hnm_cli.mining.pairs import PairRows
from hnm_cli.model_spec import ModelSpec, model_spec_from_dict
from hnm_cli.pca import l2_normalize
from hnm_cli.search import VectorSource

__all__ = ["embed", "reduce", "mine", "train_reranker", "evaluate", "mine_hard_negatives"]

DEFAULT_MODELS = ("pkg:all-MiniLM-L6-v2",)  # mine_hard_negatives' ensemble when neither models nor config name one


def _config(config: Path | str | Config | None) -> Config:
    return config if isinstance(config, Config) else load_config(Path(config) if config is not None else None)


def _specs(
    models: Sequence[str | ModelSpec | Mapping[str, Any]], configured: Sequence[ModelSpec] = ()
) -> tuple[ModelSpec, ...]:
    """ModelSpecs from what a caller wrote: a spec string as `--model` takes it (a configured model's name picks
    that model's settings), a ModelSpec, or a dict of ModelSpec fields."""
    out = []
    for i, m in enumerate(models):
        if isinstance(m, ModelSpec):
            out.append(m)
        elif isinstance(m, str):
            out.append(parse_model_option(m, configured))
        else:
            out.append(model_spec_from_dict(dict(m), f"models[{i}]"))
    return tuple(out)


def embed(
    data: Path | str,
    out: Path | str,
    *,
    models: Sequence[str | ModelSpec | Mapping[str, Any]] | None = None,
    config: Path | str | Config | None = None,
    force: bool = False,
    progress: bool = False,
    **options: Any,
) -> Manifest:
    """`hnm embed`: encode a BEIR folder's corpus and queries with every model into `out`.

    Args:
        data: a BEIR folder (corpus.jsonl, queries.jsonl).
        out: the artifact directory.
        models: model specs (`pkg:<name>`, a folder, `hash:<dim>`, a ModelSpec or a dict of its fields);
            default: the config's `[[embed.models]]`.
        config: a TOML path or a loaded Config (default: built-in defaults).
        force: re-encode even when up to date.
        progress: progress bars on stderr.
        **options: EmbedConfig keys (precision, device, shard_size, batch_size, on_empty).

    Returns:
        The top-level embed Manifest.
    """
    from hnm_cli.stages import embed as stage

    cfg: EmbedConfig = _config(config).embed
    cfg = cfg.merged(models=_specs(models, cfg.models) if models is not None else None, **options)
    return stage.run(resolve_data(Path(data)), Path(out), cfg, force=force, progress=progress)


def reduce(
    embeddings: Path | str,
    out: Path | str,
    *,
    models: Sequence[str] | None = None,
    config: Path | str | Config | None = None,
    force: bool = False,
    progress: bool = False,
    **options: Any,
) -> Manifest:
    """`hnm reduce`: fuse an embed artifact's models (normalise, weight, concatenate, PCA). Options: ReduceConfig keys."""
    from hnm_cli.stages import reduce as stage

    cfg = _config(config).reduce.merged(**options)
    return stage.run(Path(embeddings), Path(out), cfg, models=list(models) if models else None, force=force,
                     progress=progress)  # fmt: skip


def mine(
    vectors: Path | str,
    data: Path | str,
    out: Path | str,
    *,
    config: Path | str | Config | None = None,
    audit: bool = False,
    export: str | None = None,
    force: bool = False,
    progress: bool = False,
    **options: Any,
) -> Manifest:
    """`hnm mine`: negatives for every (query, positive) pair of a split. Options: MineConfig keys."""
    from hnm_cli.stages import mine as stage

    cfg = _config(config).mine.with_preset(options.pop("preset", None)).merged(**options)
    return stage.run(Path(vectors), resolve_data(Path(data)), Path(out), cfg, audit=audit, export=export,
                     force=force, progress=progress)  # fmt: skip


def train_reranker(
    mined: Path | str | None,
    out: Path | str,
    *,
    data: Path | str | None = None,
    train_file: Path | str | None = None,
    config: Path | str | Config | None = None,
    force: bool = False,
    progress: bool = False,
    **options: Any,
) -> Manifest:
    """`hnm train-reranker`: fine-tune on a mine artifact (with its `data`) or an exported `train_file`.
    Options: TrainRerankerConfig keys (kind, loss, base_model, max_steps, ...)."""
    from hnm_cli.stages import train_reranker as stage

    cfg = _config(config).train_reranker.merged(**options)
    return stage.run(
        Path(mined) if mined is not None else None,
        Path(out),
        cfg,
        train_file=Path(train_file) if train_file is not None else None,
        data=Path(data) if data is not None else None,
        force=force,
        progress=progress,
    )


def evaluate(
    data: Path | str,
    out: Path | str,
    *,
    models: Sequence[str] = (),
    vectors: Path | str | None = None,
    run_file: Path | str | None = None,
    config: Path | str | Config | None = None,
    force: bool = False,
    progress: bool = False,
    **options: Any,
) -> dict[str, Any]:
    """`hnm eval`: rerank one fixed first stage with each model (`[NAME=]PATH`) and compare.

    Returns:
        The report (what `hnm eval` prints): metrics per run, deltas and p-values against the baseline.
    """
    from hnm_cli.stages import evaluate as stage

    cfg = _config(config).eval.merged(**options)
    manifest = stage.run(
        resolve_data(Path(data)),
        Path(out),
        cfg,
        models=[parse_reranker_option(m) for m in models],
        vectors=Path(vectors) if vectors is not None else None,
        run_file=Path(run_file) if run_file is not None else None,
        force=force,
        progress=progress,
    )
    return stage.load_report(manifest)


# ---------------------------------------------------------------------------------------------
# In memory
# ---------------------------------------------------------------------------------------------


def _as_mapping(texts: Mapping[str, str] | Sequence[str], what: str) -> dict[str, str]:
    if isinstance(texts, Mapping):
        out = {str(k): v for k, v in texts.items()}
    else:
        out = {str(i): t for i, t in enumerate(texts)}
    for k, v in out.items():
        if not isinstance(v, str):
            raise DataError(f"{what}[{k!r}]: expected a string, got {type(v).__name__}")
    return out


def _as_pairs(
    positives: Mapping[str, Iterable[str]] | Sequence[tuple[Any, Any]], queries: dict[str, str], corpus: dict[str, str]
) -> list[tuple[str, str]]:
    if isinstance(positives, Mapping):
        pairs = [(str(q), str(d)) for q, ds in positives.items() for d in ds]
    else:
        pairs = [(str(q), str(d)) for q, d in positives]
    for q, d in pairs:
        if q not in queries:
            raise DataError(f"positives: unknown query id {q!r}")
        if d not in corpus:
            raise DataError(f"positives: unknown document id {d!r}")
    return list(dict.fromkeys(pairs))


def _encode(
    specs: tuple[ModelSpec, ...], texts: dict[str, list[str]], cfg: EmbedConfig
) -> tuple[list[str], dict[str, list[ArrayPart]]]:
    """What `hnm embed` writes, in memory: each model resolved as embed resolves it (`encoding.runtime`), each part
    encoded shard by shard through the same encode loop. Returns the model names and, per part, each model's rows."""
    precision = resolve_precision(cfg.precision, cfg.device)
    names: list[str] = []
    parts: dict[str, list[ArrayPart]] = {part: [] for part in texts}
    for spec in specs:
        resolved = resolve_for_run(
            spec, device=cfg.device, precision=precision, backend=cfg.backend, quantize=cfg.quantize,
            long_texts=cfg.long_texts,
        )  # fmt: skip
        encoder = load_encoder(resolved, precision=precision, device=cfg.device)
        batch_size = cfg.batch_size or resolved.spec.batch_size
        names.append(resolved.name)
        for part, part_texts in texts.items():
            kind = PART_KIND[part]
            parts[part].append(
                ArrayPart(encode_shards(encoder, part_texts, kind, batch_size, cfg.shard_size, resolved.name))
            )
    return names, parts


def _members(
    encoded: tuple[list[str], dict[str, list[ArrayPart]]] | None, query_rows: list[int], cfg: MineConfig
) -> Members | None:
    """The ensemble's own vectors for `--vote`, as `hnm mine` reads them from a reduce output's members (the risk
    figures they also feed are stats, which this function does not return, so they are built only to vote)."""
    if cfg.vote == Vote.NONE:
        return None
    if encoded is None:
        raise ConfigError("vote needs an ensemble: give models to encode with, not precomputed vectors")
    names, parts = encoded
    queries = [np.concatenate(p.shards, axis=0)[query_rows] for p in parts["queries"]]
    return Members(names, queries, [VectorSource(p.shards) for p in parts["corpus"]], [None] * len(names))


def mine_hard_negatives(
    queries: Mapping[str, str] | Sequence[str],
    corpus: Mapping[str, str] | Sequence[str],
    positives: Mapping[str, Iterable[str]] | Sequence[tuple[Any, Any]],
    *,
    query_vectors: np.ndarray | None = None,
    corpus_vectors: np.ndarray | None = None,
    models: Sequence[str | ModelSpec | Mapping[str, Any]] | None = None,
    config: Path | str | Config | None = None,
    pca: bool | None = None,
    variance: float | None = None,
    precision: Precision | str | None = None,
    device: str | None = None,
    output_format: ExportLayout | str | None = None,
    as_dataset: bool = False,
    **options: Any,
) -> Any:
    """Mine negatives for (query, positive) pairs held in memory; nothing is written.

    With `models`, this is `hnm embed` + `hnm reduce` + `hnm mine` in memory, through the runners' own cores (model
    resolution and encode loop, fusion, id mapping, `mine_negatives`): with the same texts, ids and `config` it
    returns the rows `hnm mine` writes, byte for byte.

    Args:
        queries: query id -> text, or a list of texts (ids "0", "1", ...).
        corpus: document id -> text, or a list of texts (ids "0", "1", ...). A document's text is what `hnm embed`
            encodes (for BEIR data: title + " " + text).
        positives: query id -> positive document ids, or (query id, document id) pairs.
        query_vectors: precomputed query vectors, rows in `queries` order (skips encoding and fusion: the vectors
            are L2-normalised and mined as `hnm mine --vectors` mines a vector set; needs `corpus_vectors`).
        corpus_vectors: precomputed document vectors, rows in `corpus` order.
        models: the ensemble to encode with when no vectors are given (`pkg:`, a folder, `hash:<dim>`, ModelSpec);
            default: the config's `[[embed.models]]`, else pkg:all-MiniLM-L6-v2.
        config: a TOML path or a loaded Config: its embed, reduce and mine tables apply as in the CLI.
        pca: override reduce.pca (False: concatenate and re-normalise only).
        variance: override reduce.variance, the PCA variance target.
        precision: override embed.precision (fp32, bf16 or auto).
        device: override embed.device (auto, cpu, cuda, mps).
        output_format: None for hnm's mine rows (`{"query_id", "positive_id", "negatives": [...]}`), or a
            sentence-transformers layout (triplet, n-tuple, labeled-pair, labeled-list) with texts.
        as_dataset: return a `datasets.Dataset` instead of a list of dicts.
        **options: MineConfig keys: strategy, num_negatives, fallback, fill, c2_margin, range_min, range_max,
            relative_margin, sampling_strategy, seed, preset, ... (over the config's `[mine]`); None clears an
            optional one (relative_margin=None: no ceiling).

    Returns:
        A list of dicts (or a Dataset), one per pair (or per layout row), in `positives` order.

    Raises:
        DataError: unknown ids, non-string texts, vectors whose row counts do not match the texts.
        ConfigError: an unknown or invalid option.
    """
    q_text, d_text = _as_mapping(queries, "queries"), _as_mapping(corpus, "corpus")
    pair_ids = _as_pairs(positives, q_text, d_text)
    if not pair_ids:
        raise DataError("positives: no (query, positive) pairs")
    full = _config(config)
    cfg = full.mine.with_preset(options.pop("preset", None)).merged(**options)
    # In Python None is "off" (relative_margin=None: no ceiling), where `merged` reads it as "not given".
    cfg = cfg.without(*(k for k, v in options.items() if v is None))
    q_ids, d_ids = list(q_text), list(d_text)
    if (query_vectors is None) != (corpus_vectors is None):
        raise ConfigError("give both query_vectors and corpus_vectors, or neither (then models encode the texts)")
    if query_vectors is None or corpus_vectors is None:
        ecfg = full.embed.merged(precision=precision, device=device)
        specs = _specs(models, ecfg.models) if models is not None else (ecfg.models or _specs(DEFAULT_MODELS))
        texts = {"corpus": [d_text[d] for d in d_ids], "queries": [q_text[q] for q in q_ids]}
        names, parts = _encode(specs, texts, ecfg)
        rcfg = full.reduce.merged(pca=pca, variance=variance)
        fused = fuse_in_memory(parts, names, model_weights(rcfg, names, names), rcfg)
        c_shards, q_vecs = fused["corpus"], np.concatenate(fused["queries"], axis=0)
        member_parts: tuple[list[str], dict[str, list[ArrayPart]]] | None = (names, parts)
    else:
        member_parts = None
        c_vecs, q_vecs = np.asarray(corpus_vectors, np.float32), np.asarray(query_vectors, np.float32)
        if len(c_vecs) != len(d_ids) or len(q_vecs) != len(q_ids):
            raise DataError(
                f"vectors: {len(q_vecs)} query and {len(c_vecs)} corpus rows for {len(q_ids)} queries "
                f"and {len(d_ids)} documents"
            )
        c_shards, q_vecs = [l2_normalize(c_vecs)], l2_normalize(q_vecs)

    corpus_records = Records({d: Doc(d, "", d_text[d]) for d in d_ids}, [])
    query_records = Records({q: Query(q, q_text[q]) for q in q_ids}, [])
    rows = PairRows.build(pair_ids, d_ids)
    excluded = rows.exclusions(corpus_records, query_records, cfg).excluded_ids
    all_q_row = {q: i for i, q in enumerate(q_ids)}
    mined_q = [all_q_row[q] for q in rows.query_ids]
    results, _ = mine_negatives(
        np.ascontiguousarray(q_vecs[mined_q]),
        VectorSource(c_shards),
        rows.pairs(),
        rows.excluded_rows(excluded),
        cfg,
        texts=rows.texts(corpus_records, query_records, cfg),
        ids=rows.ids(),
        members=_members(member_parts, mined_q, cfg),
    )
    out = list(mined.rows_of(pair_ids, results, d_ids, lambda q: query_records[q].meta))
    if output_format is not None:
        out = list(export_rows(out, ExportLayout(output_format), q_text, d_text, num_negatives=cfg.num_negatives))
    if as_dataset:
        import datasets

        return datasets.Dataset.from_list(out)
    return out
