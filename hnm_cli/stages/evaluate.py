"""`hnm eval`: rerank one fixed first-stage candidate list with several models and compare them like an IR paper.

Layout of the artifact (`<out>/`):
  * `first-stage/` its own artifact (manifest stage `eval-first-stage`): `candidates.jsonl`, one line per
    evaluated query `{"query_id", "candidates": [[doc_id, score], ...]}` (top_k, best first). It is built once
    and reused while its inputs are unchanged, so every reranker, in this run or a later one, is scored on
    the same lists; a positive that is not in the list is a miss for every reranker alike.
  * `per-query.jsonl` one line per (run, query): `{"run", "query_id", "<metric>": value, ...}`; for an arm
    with several seeds, the per-query mean over its seeds (what the significance test uses).
  * `report.json` the comparison (what `hnm eval` prints on stdout), `report.md` the same as Markdown tables.
  * `rankings.jsonl` each run's top documents per query (`artifacts/evaluation.py`), for `hnm report`.

Runs: `first-stage` (the candidate scores themselves), one per `--model` name (several sources under one
name are seeds of one arm: mean +- sample std over seeds), and with `fuse = "rrf"` one `<name>+rrf` per arm
(reciprocal rank fusion of the first stage and each seed's reranking).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hnm_cli.artifacts import evaluation as eval_files
from hnm_cli.artifacts.evaluation import (
    CANDIDATES,
    FIRST_STAGE_DIR,
    REPORT_JSON,
    STALE_PATTERNS,
    read_first_stage,
    write_candidates,
    write_report,
)
from hnm_cli.artifacts.guards import check_eval_leakage, check_output_path, mine_manifest
from hnm_cli.artifacts.manifest import (
    Manifest,
    artifact_input,
    compute_fingerprint,
    file_input,
    output_entry,
    write_manifest,
)
from hnm_cli.artifacts.output_dir import Staging, output_lock, skip_if_up_to_date
from hnm_cli.artifacts.reranker import RerankerRef, detect_model
from hnm_cli.artifacts.reranker import parse_model_option as parse_model_option
from hnm_cli.artifacts.vectors import open_vector_set, resolve_vector_set
from hnm_cli.choices import FirstStage, Fuse, Stage
from hnm_cli.config import EvalConfig
from hnm_cli.encoding.devices import resolve_precision
from hnm_cli.encoding.registry import folder_identity, resolve_model
from hnm_cli.errors import ArtifactMismatchError, ConfigError, DataError, InputError
from hnm_cli.evaluation.compare import FIRST_STAGE_RUN, group_arms
from hnm_cli.evaluation.first_stage import BM25_PARAMS, Candidates, DenseVectors, first_stage_candidates
from hnm_cli.evaluation.metrics import DEFAULT_METRICS, PRIMARY_METRIC
from hnm_cli.evaluation.report import below_first_stage_line, build_report, render_markdown
from hnm_cli.evaluation.report import report_to_tsv as report_to_tsv  # re-exported for cli.py
from hnm_cli.evaluation.rerank import SeedRun, rerank_arms
from hnm_cli.fileio import recorded_file, remove_stale_files
from hnm_cli.inputs import DataPaths, Records, read_corpus, read_queries, resolve_jsonl_files, resolve_qrels_file
from hnm_cli.model_spec import ModelSpec
from hnm_cli.qrels import read_qrels

log = logging.getLogger("hnm")

STAGE = Stage.EVAL
FIRST_STAGE = Stage.EVAL_FIRST_STAGE


# ---------------------------------------------------------------------------------------------
# Models: what identifies their weights
# ---------------------------------------------------------------------------------------------


def _model_identity(ref: RerankerRef) -> str:
    """What identifies the weights in the fingerprint (cheap: big files are stat-ed, not hashed)."""
    if ref.artifact is not None:
        return ref.artifact.digest
    if ref.path is not None:
        return folder_identity(ref.path)
    return resolve_model(ModelSpec(name=ref.name, source=ref.source)).identity


# ---------------------------------------------------------------------------------------------
# First stage
# ---------------------------------------------------------------------------------------------


def _check_vectors_corpus(vec: Manifest, corpus_inputs: list[dict[str, Any]]) -> None:
    theirs = {e["sha256"] for e in vec.inputs if e.get("role") == "corpus"}
    ours = {e["sha256"] for e in corpus_inputs}
    if theirs and theirs != ours:
        raise ArtifactMismatchError(
            f"{vec.path} was embedded from a different corpus than {corpus_inputs[0]['path']} (file digests differ)",
            hint="give the corpus the vectors were made from, or rerun hnm embed / hnm reduce",
        )


def build_first_stage(
    out: Path,
    new: Path,
    cfg: EvalConfig,
    corpus: Records,
    queries: Records,
    qids: list[str],
    base_inputs: list[dict[str, Any]],
    *,
    vectors: Manifest | None = None,
    run_file: Path | None = None,
    force: bool = False,
) -> tuple[Candidates, Manifest]:
    """Reuse the first-stage artifact `out`, or build it in `new` (the run's staging copy of that folder);
    return its candidates and manifest.

    Args:
        out: the `first-stage/` directory.
        new: where a rebuilt first stage is written (moved into `out` when the whole eval succeeds).
        cfg: the eval config (`first_stage`, `top_k`, `split`).
        corpus / queries: the records; `qids` the evaluated query ids (sorted).
        base_inputs: digests of corpus, queries and qrels (which queries are evaluated).
        vectors: the vector set for `first_stage = "dense"`.
        run_file: the user's run for `first_stage = "run"`.
        force: rebuild even when up to date.
    """
    params: dict[str, Any] = {"method": cfg.first_stage, "top_k": cfg.top_k, "split": cfg.split}
    if cfg.ignore_identical_ids:  # only when on, so artifacts built before the option existed stay up to date
        params["ignore_identical_ids"] = True
    inputs = list(base_inputs)
    if cfg.first_stage == FirstStage.BM25:
        params["bm25"] = BM25_PARAMS
    elif cfg.first_stage == FirstStage.DENSE:
        assert vectors is not None
        inputs.append(artifact_input(vectors, "vectors"))
    else:
        assert run_file is not None
        inputs.append(file_input(run_file, "run"))
    fingerprint = compute_fingerprint(FIRST_STAGE, params, inputs)
    if (done := skip_if_up_to_date(out, FIRST_STAGE, fingerprint, force=force)) is not None:
        return read_first_stage(out, corpus), done
    started = time.time()
    candidates, identical_dropped = first_stage_candidates(
        cfg.first_stage,
        corpus,
        queries,
        qids,
        cfg.top_k,
        ignore_identical_ids=cfg.ignore_identical_ids,
        vectors=DenseVectors(vectors.path, *open_vector_set(vectors.path)) if vectors is not None else None,
        run_file=run_file,
    )
    lengths = write_candidates(new, qids, candidates)
    stats = {
        "queries": len(lengths),
        "candidates": sum(lengths),
        "queries_short": sum(1 for n in lengths if n < cfg.top_k),
        "queries_empty": sum(1 for n in lengths if n == 0),
    }
    if cfg.ignore_identical_ids:
        stats["identical_ids_dropped"] = identical_dropped
    manifest = write_manifest(
        new,
        stage=FIRST_STAGE,
        fingerprint=fingerprint,
        params=params,
        inputs=inputs,
        outputs=[output_entry(new, CANDIDATES, rows=len(lengths))],
        stats=stats,
        started=started,
    )
    log.info(
        "eval: first stage %s top-%d for %d queries (%d with fewer candidates) in %.1f s",
        cfg.first_stage,
        cfg.top_k,
        len(lengths),
        stats["queries_short"],
        manifest.stats["seconds"],
    )
    return {q: candidates.get(q, []) for q in qids}, manifest


# ---------------------------------------------------------------------------------------------
# Runner
# ---------------------------------------------------------------------------------------------


def run(
    data_paths: DataPaths,
    out: Path,
    cfg: EvalConfig,
    *,
    models: Sequence[tuple[str, str]] = (),
    vectors: Path | None = None,
    run_file: Path | None = None,
    force: bool = False,
    progress: bool = True,
    verify: bool = False,
) -> Manifest:
    """Evaluate the first stage and each reranker on the same candidate lists; write the eval artifact.

    Args:
        data_paths: corpus, queries and qrels (`qrels/<cfg.split>.tsv` is evaluated).
        out: the artifact directory (report at `out / "report.json"`).
        cfg: the resolved eval config.
        models: (run name, source) per `--model`; a name given several times is one arm over seeds.
        vectors: a vector set (reduce artifact or embed model folder) for `first_stage = "dense"`.
        run_file: a TREC or JSONL run for `first_stage = "run"`.
        force: rerun (and rebuild the first stage) even when up to date.
        progress: progress bars on stderr.

    Returns:
        The eval manifest (`up_to_date` set when nothing was recomputed).

    Raises:
        InputError, ConfigError, DataError, ArtifactMismatchError, LeakageError: one line each.
    """
    out = Path(out)
    cfg.validate()
    # "auto" is settled first, so the fingerprint records what actually ran.
    cfg = dataclasses.replace(cfg, precision=resolve_precision(cfg.precision, cfg.device))
    if data_paths.qrels is None:
        raise InputError("hnm eval needs qrels: give --data <BEIR folder> or --qrels")
    sources = [Path(src) for _, src in models if not src.startswith(("pkg:", "hash:"))]
    check_output_path(out, [data_paths.corpus, data_paths.queries, data_paths.qrels, vectors, run_file, *sources])
    qrels_file = resolve_qrels_file(data_paths.qrels, cfg.split)
    corpus_inputs = [file_input(f, "corpus") for f in resolve_jsonl_files(data_paths.corpus, "corpus")]
    query_inputs = [file_input(f, "queries") for f in resolve_jsonl_files(data_paths.queries, "queries")]
    base_inputs = [*corpus_inputs, *query_inputs, file_input(qrels_file, "qrels")]

    vec_manifest = _first_stage_source(cfg, vectors, run_file, corpus_inputs, deep=verify)
    refs = [detect_model(name, source, deep=verify) for name, source in models]
    arms = group_arms(refs)
    run_names = [FIRST_STAGE_RUN, *arms, *([f"{a}+rrf" for a in arms] if cfg.fuse == Fuse.RRF else [])]
    if cfg.baseline not in run_names:
        raise ConfigError(f"--baseline '{cfg.baseline}' is not a run of this eval (runs: {', '.join(run_names)})")
    # A mine/train artifact that names this split is refused before anything is read or loaded.
    for ref in refs:
        if ref.artifact is not None and (m := mine_manifest(ref.artifact)) and m.params.get("split") == cfg.split:
            check_eval_leakage([ref], cfg.split, set())

    inputs = list(base_inputs)
    if vec_manifest is not None:
        inputs.append(artifact_input(vec_manifest, "vectors"))
    if run_file is not None and cfg.first_stage == FirstStage.RUN:
        inputs.append(file_input(run_file, "run"))
    params = cfg.to_params() | {
        "metrics": list(DEFAULT_METRICS),
        "models": [{"name": r.name, "source": r.source, "kind": r.kind, "identity": _model_identity(r)} for r in refs],
    }
    fingerprint = compute_fingerprint(STAGE, params, inputs)
    if (done := skip_if_up_to_date(out, STAGE, fingerprint, force=force, deep=verify)) is not None:
        _warn_if_below_first_stage(done)
        return done
    with output_lock(out), Staging(out) as staging:
        started, (params, inputs, files, stats, log_line) = staging.started, _evaluate(
            data_paths, out, staging.dir, cfg, refs, arms, qrels_file, base_inputs, vec_manifest, run_file,
            params, inputs, force=force, progress=progress,
        )  # fmt: skip
        staging.commit()
    remove_stale_files(out, keep=files, patterns=STALE_PATTERNS)
    outputs = [output_entry(out, rel) for rel in files]
    manifest = write_manifest(
        out,
        stage=STAGE,
        fingerprint=fingerprint,
        params=params,
        inputs=inputs,
        outputs=outputs,
        stats=stats,
        started=started,
    )
    log.info(log_line)
    _warn_if_below_first_stage(manifest)
    return manifest


def _warn_if_below_first_stage(manifest: Manifest) -> None:
    """One stderr line, on every run and rerun, when a reranker makes its first stage worse."""
    report = load_report(manifest)
    with recorded_file(manifest.path / REPORT_JSON):
        warning = below_first_stage_line(report)
    if warning is not None:
        log.warning(warning)


def _evaluate(
    data_paths: DataPaths,
    out: Path,
    new: Path,
    cfg: EvalConfig,
    refs: list[RerankerRef],
    arms: dict[str, list[RerankerRef]],
    qrels_file: Path,
    base_inputs: list[dict[str, Any]],
    vec_manifest: Manifest | None,
    run_file: Path | None,
    params: dict[str, Any],
    inputs: list[dict[str, Any]],
    *,
    force: bool,
    progress: bool,
) -> tuple[dict[str, Any], list[dict[str, Any]], list[str], dict[str, Any], str]:
    """Score every run and write the report files into `new`; return (params, inputs, output files, stats, the
    summary line)."""
    corpus = read_corpus(data_paths.corpus)
    queries = read_queries(data_paths.queries)
    qrels = read_qrels(qrels_file, query_ids=queries, doc_ids=corpus)
    judged = {q: dict(d) for q, d in qrels.items() if any(r > 0 for r in d.values())}
    skipped = len(qrels) - len(judged)
    if not judged:
        raise DataError(f"{qrels_file}: no query has a relevant document (relevance > 0)")
    qids = sorted(judged)
    check_eval_leakage(refs, cfg.split, set(qids))

    candidates, fs_manifest = build_first_stage(
        out / FIRST_STAGE_DIR,
        new / FIRST_STAGE_DIR,
        cfg,
        corpus,
        queries,
        qids,
        base_inputs,
        vectors=vec_manifest,
        run_file=run_file,
        force=force,
    )
    metrics = list(DEFAULT_METRICS)
    recall_key = f"recall@{cfg.top_k}"
    fs_run = {q: dict(c) for q, c in candidates.items()}
    seed_runs: dict[str, list[SeedRun]] = {FIRST_STAGE_RUN: [(None, fs_run, 0.0)]}
    cand_ids = {q: [d for d, _ in c] for q, c in candidates.items()}
    q_text = {q: queries[q].text for q in qids}
    d_text = {d: corpus[d].full_text for ds in cand_ids.values() for d in ds}
    seed_runs.update(
        rerank_arms(
            arms,
            cand_ids,
            q_text,
            d_text,
            fuse_with=fs_run if cfg.fuse == Fuse.RRF else None,
            rrf_k=cfg.rrf_k,
            batch_size=cfg.batch_size,
            max_length=cfg.max_length,
            device=cfg.device,
            precision=cfg.precision,
            progress=progress,
        )
    )

    report = build_report(cfg, seed_runs, judged, corpus, metrics, fs_manifest.stats, skipped, recall_key)
    per_query_rows = [
        {"run": name, "query_id": q, **values}
        for name, pq in report.pop("_per_query").items()
        for q, values in pq.items()
    ]
    written = write_report(
        new,
        report,
        render_markdown(report),
        per_query_rows,
        {name: seeds[0][1] for name, seeds in seed_runs.items()},
        qids,
    )
    primary = {name: r["mean"][PRIMARY_METRIC] for name, r in report["runs"].items()}
    stats = {
        "queries": len(qids),
        "skipped_queries": skipped,
        "runs": len(report["runs"]),
        f"first_stage_{recall_key}": report["first_stage"][recall_key],
        PRIMARY_METRIC: primary,
    }
    line = (
        f"eval: {len(qids)} queries, first stage {cfg.first_stage} top-{cfg.top_k} "
        f"({recall_key} {report['first_stage'][recall_key]:.4f}); {PRIMARY_METRIC}: "
        + ", ".join(f"{n} {v:.4f}" for n, v in primary.items())
    )
    return params, inputs, [*written, f"{FIRST_STAGE_DIR}/{CANDIDATES}"], stats, line


def _first_stage_source(
    cfg: EvalConfig,
    vectors: Path | None,
    run_file: Path | None,
    corpus_inputs: list[dict[str, Any]],
    *,
    deep: bool = False,
) -> Manifest | None:
    """Check the first stage's inputs; return the vectors manifest for a dense first stage."""
    if cfg.first_stage == FirstStage.DENSE:
        if vectors is None:
            raise InputError("--first-stage dense needs --vectors DIR (a reduce artifact or an embed model folder)")
        # The same vector sets `hnm mine --vectors` takes: a reduce output, an embed model folder, or a
        # top-level embed folder holding one model.
        manifest = resolve_vector_set(vectors, deep=deep)
        _check_vectors_corpus(manifest, corpus_inputs)
        return manifest
    if vectors is not None:
        raise InputError(f"--vectors is only used with --first-stage dense (first stage is {cfg.first_stage})")
    if cfg.first_stage == FirstStage.RUN:
        if run_file is None:
            raise InputError("--first-stage run needs --run FILE (TREC or JSONL candidates)")
        if not Path(run_file).is_file():
            raise InputError(f"--run {run_file} does not exist")
    elif run_file is not None:
        raise InputError(f"--run is only used with --first-stage run (first stage is {cfg.first_stage})")
    return None


def load_report(manifest: Manifest) -> dict[str, Any]:
    """The report.json of an eval artifact."""
    return eval_files.read_report(manifest.path, recorded=True)
