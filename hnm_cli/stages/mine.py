"""`hnm mine`: (query, positive) pairs of a split + a vector set -> the mine artifact (rows, stats, audit, extras).

The runner resolves and checks paths and data, maps ids to rows, calls `hnm_cli.mining.mine_negatives` once (or
re-selects from an audit) and writes through `hnm_cli.artifacts.mined`, whose docstring shows the row schema.
One row per (query, positive) pair, in qrels order, written even when it got no negative. The run's ids, rows and
exclusions are `stages/mine_context.py`, the `--update` path `stages/mine_update.py`, and the files beside the rows
(stats, summary, export, plots) `stages/mine_outputs.py`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hnm_cli import executors
from hnm_cli.artifacts import mined
from hnm_cli.artifacts.guards import check_mining_qrels, check_mining_split, check_output_path, check_same_files
from hnm_cli.artifacts.manifest import (
    Manifest,
    artifact_input,
    compute_fingerprint,
    file_input,
    load_manifest,
    output_entry,
    write_manifest,
)
from hnm_cli.artifacts.output_dir import Staging, output_lock, skip_if_up_to_date
from hnm_cli.artifacts.vectors import open_vector_source, resolve_vector_set
from hnm_cli.choices import Executor, ExportLayout, Fallback, SearchIndex, Strategy
from hnm_cli.config import MineConfig
from hnm_cli.errors import ArtifactMismatchError, ConfigError, InputError
from hnm_cli.fileio import atomic_write_json, remove_stale_files
from hnm_cli.inputs import DataPaths, read_corpus, read_queries, resolve_jsonl_files, resolve_qrels_file
from hnm_cli.qrels import read_qrels
from hnm_cli.stages.mine_context import MineContext, ensemble_members
from hnm_cli.stages.mine_outputs import result_rows, stats_record, summary_line, write_export_file, write_plots
from hnm_cli.stages.mine_update import cannot_update, mine_incrementally, mine_state, update_base, update_part

STAGE = mined.STAGE
# The strategies that scan the corpus for every pair: what an executor distributes (random and BM25 run here).
_SCANNED = (Strategy.RULE, Strategy.TOPK)

log = logging.getLogger("hnm")


# ---------------------------------------------------------------------------------------------
# Resolving and validating inputs (cheap: no vectors are read here)
# ---------------------------------------------------------------------------------------------


@dataclass
class _Plan:
    """Everything decided before the up-to-date check."""

    vectors: Manifest | None
    qrels_file: Path
    params: dict[str, Any]
    inputs: list[dict[str, Any]]
    fingerprint: str
    audit_dir: Path | None = None
    audit_manifest: Manifest | None = None


def _plan(
    vectors_dir: Path | None,
    data: DataPaths,
    out: Path,
    cfg: MineConfig,
    *,
    audit: bool,
    export: str | None,
    plot: bool,
    from_audit: Path | None,
    verify: bool = False,
) -> _Plan:
    check_mining_split(cfg.split, cfg.eval_splits, allowed=cfg.allow_eval_queries)
    if data.qrels is None:
        raise InputError("no qrels: give --data <BEIR folder> or --qrels")
    check_output_path(out, [vectors_dir, data.corpus, data.queries, data.qrels, from_audit])
    executors.require(cfg.executor)
    if cfg.executor != Executor.LOCAL and cfg.index == SearchIndex.HNSW and cfg.strategy in _SCANNED:
        raise ConfigError(
            f"--executor {cfg.executor} mines exact search in blocks; an hnsw index searches in one process: "
            "use --index exact, or --executor local"
        )
    if audit and cfg.strategy != Strategy.RULE:
        raise ConfigError(f"--audit records the rule's C1/C2 tests; it needs strategy 'rule', not '{cfg.strategy}'")
    if export is not None:
        if export not in tuple(ExportLayout):
            raise ConfigError(f"export must be one of {', '.join(ExportLayout)}; got {export!r}")
    qrels_file = resolve_qrels_file(data.qrels, cfg.split)
    # By name, by real path and by content: a copy or a symlink of test.tsv under another name is test data.
    check_mining_qrels(
        qrels_file, [data.qrels, data.corpus, data.queries], cfg.eval_splits, allowed=cfg.allow_eval_queries
    )
    corpus_inputs = [file_input(p, "corpus") for p in resolve_jsonl_files(data.corpus, "corpus")]
    query_inputs = [file_input(p, "queries") for p in resolve_jsonl_files(data.queries, "queries")]
    qrels_input = file_input(qrels_file, "qrels")
    inputs = corpus_inputs + query_inputs + [qrels_input]

    vectors = None
    if vectors_dir is not None:
        vectors = resolve_vector_set(vectors_dir, deep=verify)
        check_same_files(vectors, corpus_inputs, "corpus")
        check_same_files(vectors, query_inputs, "queries")
        inputs.append(artifact_input(vectors, "vectors"))
    elif from_audit is None or plot:
        raise InputError("give --vectors (a reduce output or one embed model folder)" + (" for --plot" if plot else ""))

    audit_dir = audit_manifest = None
    if from_audit is not None:
        audit_dir, audit_manifest = mined.resolve_audit(from_audit, out, deep=verify)
        if vectors is not None:
            used = [i for i in audit_manifest.inputs if i.get("role") == "vectors"]
            if used and used[0]["sha256"] != vectors.digest:
                raise ArtifactMismatchError(
                    f"{audit_dir} was mined from other vectors ({used[0]['path']}) than {vectors.path}"
                )
        used_qrels = [i["sha256"] for i in audit_manifest.inputs if i.get("role") == "qrels"]
        if used_qrels and used_qrels != [qrels_input["sha256"]]:
            raise ArtifactMismatchError(f"{audit_dir} was mined from other qrels than {qrels_file}")
        inputs.append(artifact_input(audit_manifest, "audit"))

    params = cfg.to_params() | {"audit": audit, "export": export, "plot": plot, "from_audit": from_audit is not None}
    if Strategy.RANDOM in (cfg.strategy, cfg.fallback):
        # Random draws are keyed on (seed, query id, document id) since incremental updates: other draws than the
        # row-sequential ones of artifacts mined before, so those are redone.
        params["random_draw"] = "keyed"
    return _Plan(
        vectors=vectors,
        qrels_file=qrels_file,
        params=params,
        inputs=inputs,
        fingerprint=compute_fingerprint(STAGE, params, inputs),
        audit_dir=audit_dir,
        audit_manifest=audit_manifest,
    )


# ---------------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------------


def run(
    vectors_dir: Path | None,
    data_paths: DataPaths,
    out: Path,
    cfg: MineConfig,
    *,
    audit: bool = False,
    export: str | None = None,
    plot: bool = False,
    from_audit: Path | None = None,
    force: bool = False,
    progress: bool = True,
    verify: bool = False,
    update: Path | None = None,
) -> Manifest:
    """Mine negatives for every (query, positive) pair of `cfg.split` and write the mine artifact.

    Args:
        vectors_dir: a vector set (`hnm reduce` output or one `hnm embed` model folder; a top-level embed
            folder with exactly one model is accepted). Optional only with `from_audit` and no `plot`.
        data_paths: corpus, queries and qrels (`inputs.resolve_data`).
        out: the artifact directory.
        cfg: mining settings (strategy, knobs, seed, split).
        audit: also write every examined candidate of the rule to `<out>/audit/`.
        export: also write `<out>/export/<layout>.jsonl` (triplet, n-tuple, labeled-pair, labeled-list).
        plot: also write `<out>/plots/pca.png` and `<out>/plots/margin_hist.png`.
        from_audit: re-select negatives from this audit (a mine output dir or its `audit/`) instead of
            searching: the rule's C1/C2/exclusion outcomes are re-applied with this run's `num_negatives`,
            `max_score`/`min_score` (similarity bounds), window and `fallback`.
        force: rerun even when up to date.
        progress: log progress (the CLI's --quiet turns it off).
        verify: re-hash every input artifact's files and this artifact's (`--verify`), not only changed ones.
        update: an earlier mine artifact with the same settings: only what the edit since can have changed is
            mined again (`mining.update`); the rows are those of a full run. Vectors must be in the same space
            (same encoders; `hnm reduce --fit-from` keeps a fit).

    Returns:
        The written (or, when up to date, the existing) manifest.

    Raises:
        HnmError: any bad input (see the checks above), with a one-line message. A failing run leaves an
            existing artifact in `out` as it was.
    """
    out = Path(out)
    _check_controls(cfg, audit=audit, from_audit=from_audit, update=update)
    plan = _plan(
        vectors_dir, data_paths, out, cfg, audit=audit, export=export, plot=plot, from_audit=from_audit, verify=verify
    )
    if (done := skip_if_up_to_date(out, STAGE, plan.fingerprint, force=force, deep=verify)) is not None:
        return done
    base = (
        update_base(update, plan.params, plan.vectors, cfg, audit=audit, from_audit=from_audit, deep=verify)
        if update
        else None
    )

    with output_lock(out), Staging(out) as staging:
        t0 = time.time()
        corpus = read_corpus(data_paths.corpus)
        queries = read_queries(data_paths.queries)
        qrels = read_qrels(plan.qrels_file, query_ids=queries, doc_ids=corpus)
        ctx = MineContext.load(plan.qrels_file, plan.vectors, corpus, queries, qrels, cfg)
        new = staging.dir  # everything is written here, and moved into `out` once it all succeeded

        audit_outputs: list[dict[str, Any]] = []
        if from_audit is not None:
            assert plan.audit_dir is not None and plan.audit_manifest is not None
            results, stats = _select_from_audit(plan.audit_dir, ctx, cfg, plan.audit_manifest.params)
        elif base is not None and (why := cannot_update(cfg)) is None:
            results, stats = mine_incrementally(ctx, cfg, base)
        else:
            results, stats, audit_outputs = _mine(ctx, cfg, out, new, audit=audit, progress=progress)
            if base is not None:
                ctx.update_counts = {"pairs_reused": 0, "pairs_remined": len(ctx.pair_ids), "recomputed_in_full": why}

        rows = list(result_rows(results, ctx))
        outputs = mined.write_rows(new, rows)
        stats_dict = stats_record(stats, ctx, cfg, time.time() - t0)
        if export is not None:
            outputs.append(write_export_file(new, export, rows, ctx, cfg, stats_dict))
        plot_files = write_plots(new, rows, ctx, cfg) if plot else []
        if base is not None:
            stats_dict["update"] = {"from": str(base.path), **ctx.update_counts}
        atomic_write_json(new / mined.STATS_FILE, stats_dict)
        state_files = mined.write_state(new, mine_state(ctx, results)) if ctx.space else []
        # Reports and the index are not what training reads: out of the digest, so a re-mine with the same rows
        # (stats.json holds the timing) leaves downstream artifacts up to date.
        reports = [*plot_files, mined.STATS_FILE, *ctx.hnsw_files, *state_files]
        started = staging.commit()
    outputs += audit_outputs
    outputs += [output_entry(out, rel, downstream=False) for rel in reports]
    remove_stale_files(out, keep=[o["path"] for o in outputs], patterns=mined.STALE_PATTERNS)
    manifest = write_manifest(
        out,
        stage=STAGE,
        fingerprint=plan.fingerprint,
        params=plan.params,
        inputs=plan.inputs,
        outputs=outputs,
        stats=stats_dict,
        started=started,
    )
    summary = summary_line(stats_dict, cfg, manifest.stats["seconds"], from_audit is not None)
    log.info(f"{summary}; {update_part(stats_dict)}" if base is not None else summary)
    return manifest


def _check_controls(cfg: MineConfig, *, audit: bool, from_audit: Path | None, update: Path | None) -> None:
    """False-negative controls run on a fresh search only: refuse the modes that would silently skip them."""
    from hnm_cli.mining import controls

    if not controls.active(cfg):
        return
    what = "vote / random_negatives / margins on the rule"
    if cfg.strategy not in (Strategy.RULE, Strategy.TOPK):
        raise ConfigError(f"mine: {what} work on the rule and topk strategies, not on {cfg.strategy}")
    for flag, used in (("--audit", audit), ("--from-audit", from_audit is not None), ("--update", update is not None)):
        if used:
            raise ConfigError(f"mine: {flag} cannot be combined with {what} (they act on a fresh search); drop one")


# ---------------------------------------------------------------------------------------------
# Mining: one call into the core
# ---------------------------------------------------------------------------------------------


def _mine(
    ctx: MineContext, cfg: MineConfig, out: Path, new: Path, *, audit: bool, progress: bool = True
) -> tuple[list[Any], Any, list[dict[str, Any]]]:
    from hnm_cli.mining import mine_negatives

    assert ctx.vectors_dir is not None
    source = open_vector_source(ctx.vectors_dir / "corpus")
    index = None
    if cfg.index == SearchIndex.HNSW and cfg.strategy in (Strategy.RULE, Strategy.TOPK):
        vectors = load_manifest(ctx.vectors_dir)
        index, ctx.hnsw_files = mined.hnsw_index(
            out,
            new,
            source,
            vectors_digest=vectors.digest if vectors is not None else "",
            M=cfg.hnsw_m,
            ef_construction=cfg.hnsw_ef_construction,
            seed=cfg.seed,
            block_rows=cfg.block_size,
        )
    texts = ctx.rows.texts(ctx.corpus, ctx.queries, cfg)
    writer = mined.AuditWriter(new) if audit else None
    with executors.Session(cfg.executor, cfg.ray_address, progress=progress) as session:
        runner = None
        if session.distributed:
            if cfg.strategy in _SCANNED:
                runner = session.runner()  # connects now: the blocks go to the workers, the rows are written here
            else:
                log.info("mine: %s scans no corpus; it runs in this process, not on %s", cfg.strategy, cfg.executor)
        results, stats = mine_negatives(
            ctx.load_query_vectors(),
            source,
            ctx.pairs(),
            ctx.excluded_rows(),
            cfg,
            index=index,
            texts=texts,
            ids=ctx.rows.ids(),
            audit=(lambda rec: writer.add(_audit_row(rec, ctx))) if writer is not None else None,
            runner=runner,
            members=ensemble_members(ctx, cfg),
        )
    return results, stats, writer.close() if writer is not None else []


def _audit_row(rec: Any, ctx: MineContext) -> dict[str, Any]:
    return {
        "query_id": ctx.query_ids[rec.query_row],
        "positive_id": ctx.corpus_ids[rec.positive_row],
        "doc_id": ctx.corpus_ids[rec.doc_row],
        "rank": rec.rank,
        "d_qd": rec.d_qd,
        "d_qp": rec.d_qp,
        "d_pd": rec.d_pd,
        "c1": rec.c1,
        "c2": rec.c2,
        "excluded": rec.excluded,
        "selected": rec.selected,
    }


def _select_from_audit(
    mine_dir: Path, ctx: MineContext, cfg: MineConfig, audited: dict[str, Any]
) -> tuple[list[Any], Any]:
    """Re-select from the audit of `mine_dir` (see `mining.audit.select_from_audit`), then any random/bm25
    fallback as in a normal run."""
    from hnm_cli.mining.audit import select_from_audit
    from hnm_cli.mining.strategies import Ids, Texts, apply_fallback, restat

    try:
        results = select_from_audit(
            mined.iter_audit(mine_dir),
            ctx.pair_ids,
            ctx.corpus_row,
            ctx.query_row,
            cfg,
            audited_c2_margin=float(audited.get("c2_margin", 0.0)),
        )
    except KeyError as err:
        q, d = err.args[0]
        raise ArtifactMismatchError(
            f"{mine_dir / mined.AUDIT_DIR} has no candidates for pair ({q}, {d}): it was mined from other qrels"
        ) from err
    if cfg.fallback in (Fallback.RANDOM, Fallback.BM25):
        if ctx.vectors_dir is None:
            raise InputError(f"--fallback {cfg.fallback} with --from-audit needs --vectors for the distances")
        texts = Texts(
            corpus=[ctx.corpus[d].full_text for d in ctx.corpus_ids],
            queries=[ctx.queries[q].text for q in ctx.query_ids],
        )
        results = apply_fallback(
            results,
            cfg,
            ctx.load_query_vectors(),
            open_vector_source(ctx.vectors_dir / "corpus"),
            ctx.excluded_rows(),
            texts,
            Ids(ctx.corpus_ids, ctx.query_ids),
        )
    return results, restat(results, None, cfg.num_negatives)


__all__ = ["run"]
