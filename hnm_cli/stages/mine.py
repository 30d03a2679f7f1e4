"""`hnm mine`: (query, positive) pairs of a split + a vector set -> the mine artifact (rows, stats, audit, extras).

The runner resolves and checks paths and data, maps ids to rows, calls `hnm_cli.mining.mine_negatives` once (or
re-selects from an audit) and writes through `hnm_cli.artifacts.mined`, whose docstring shows the row schema.
One row per (query, positive) pair, in qrels order, written even when it got no negative.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson

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
from hnm_cli.artifacts.vectors import (
    open_vector_source,
    read_ids,
    read_rows_of,
    resolve_vector_set,
    space_key,
    vector_dim,
)
from hnm_cli.choices import Executor, ExportLayout, Fallback, SearchIndex, Stage, Strategy, Vote
from hnm_cli.config import MineConfig
from hnm_cli.errors import ArtifactMismatchError, ConfigError, DataError, InputError
from hnm_cli.fileio import atomic_write_json, remove_stale_files
from hnm_cli.inputs import DataPaths, Records, read_corpus, read_queries, resolve_jsonl_files, resolve_qrels_file
from hnm_cli.mining.pairs import PairRows, positive_pairs
from hnm_cli.qrels import read_qrels

STAGE = mined.STAGE
# The strategies that scan the corpus for every pair: what an executor distributes (random and BM25 run here).
_SCANNED = (Strategy.RULE, Strategy.TOPK)

log = logging.getLogger("hnm")


# ---------------------------------------------------------------------------------------------
# Resolving and validating inputs (cheap: no vectors are read here)
# ---------------------------------------------------------------------------------------------


def _qrels_line(path: Path, column: int, value: str) -> int:
    """Line number of the first qrels row whose `column` equals `value` (for error messages only)."""
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, 1):
            cols = raw.decode("utf-8", "replace").rstrip("\r\n").split("\t")
            if len(cols) == 4:
                cols = [cols[0], cols[2], cols[3]]
            if len(cols) > column and cols[column].strip() == value:
                return lineno
    return 0


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
    base = _update_base(update, plan, cfg, audit=audit, from_audit=from_audit, deep=verify) if update else None

    with output_lock(out), Staging(out) as staging:
        t0 = time.time()
        corpus = read_corpus(data_paths.corpus)
        queries = read_queries(data_paths.queries)
        qrels = read_qrels(plan.qrels_file, query_ids=queries, doc_ids=corpus)
        ctx = _Context.load(plan, corpus, queries, qrels, cfg)
        new = staging.dir  # everything is written here, and moved into `out` once it all succeeded

        audit_outputs: list[dict[str, Any]] = []
        if from_audit is not None:
            assert plan.audit_dir is not None and plan.audit_manifest is not None
            results, stats = _select_from_audit(plan.audit_dir, ctx, cfg, plan.audit_manifest.params)
        elif base is not None and (why := _cannot_update(cfg)) is None:
            results, stats = _mine_update(ctx, cfg, base)
        else:
            results, stats, audit_outputs = _mine(ctx, cfg, out, new, audit=audit, progress=progress)
            if base is not None:
                ctx.update_counts = {"pairs_reused": 0, "pairs_remined": len(ctx.pair_ids), "recomputed_in_full": why}

        rows = list(_rows(results, ctx))
        outputs = mined.write_rows(new, rows)
        stats_dict = _stats_dict(stats, ctx, cfg, time.time() - t0)
        if export is not None:
            outputs.append(_write_export(new, export, rows, ctx, cfg, stats_dict))
        plot_files = _write_plots(new, rows, ctx, cfg) if plot else []
        if base is not None:
            stats_dict["update"] = {"from": str(base.path), **ctx.update_counts}
        atomic_write_json(new / mined.STATS_FILE, stats_dict)
        state_files = mined.write_state(new, _state(ctx)) if ctx.space else []
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
    summary = _summary(stats_dict, cfg, manifest.stats["seconds"], from_audit is not None)
    log.info(f"{summary}; {_update_part(stats_dict)}" if base is not None else summary)
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
# Ids, rows, pairs and exclusions
# ---------------------------------------------------------------------------------------------


@dataclass
class _Context:
    """Ids, rows, pairs and exclusions of one run (vectors stay memory-mapped)."""

    corpus: Records
    queries: Records
    pair_ids: list[tuple[str, str]]  # (query id, positive id), qrels order
    corpus_ids: list[str]
    corpus_row: dict[str, int]
    query_ids: list[str]  # the queries that have pairs, in first-seen order; row i of query_vecs
    query_row: dict[str, int]
    excluded_ids: dict[str, set[str]]  # query id -> doc ids that may never be negatives
    duplicates_excluded: int  # documents excluded for repeating a positive's text under another id
    twin_positives_excluded: int  # positives of a query with the same text, excluded
    query_duplicates_excluded: int  # documents excluded for repeating the query's own text
    vectors_dir: Path | None
    query_vecs: np.ndarray | None = None
    hnsw_files: list[str] = field(default_factory=list)
    space: str | None = None  # the vectors' space key (`artifacts.vectors.space_key`), for later updates
    update_counts: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def load(
        cls, plan: _Plan, corpus: Records, queries: Records, qrels: dict[str, dict[str, int]], cfg: MineConfig
    ) -> _Context:
        pair_ids = positive_pairs(qrels)
        if not pair_ids:
            raise DataError(f"{plan.qrels_file}: no (query, positive) pairs with relevance > 0")

        vectors_dir = plan.vectors.path if plan.vectors is not None else None
        if vectors_dir is not None:
            corpus_ids = read_ids(vectors_dir / "corpus", known=corpus)  # a row per known doc, each once
            have_q = set(read_ids(vectors_dir / "queries"))
            _check_pairs_have_vectors(plan.qrels_file, pair_ids, have_q, set(corpus_ids), vectors_dir)
            dq, dc = vector_dim(vectors_dir / "queries"), vector_dim(vectors_dir / "corpus")
            if dq != dc:
                raise ArtifactMismatchError(
                    f"{vectors_dir}: query vectors have dimension {dq} but corpus vectors {dc}; rebuild the vector set"
                )
        else:
            corpus_ids = corpus.ids
        rows = PairRows.build(pair_ids, corpus_ids)
        excl = rows.exclusions(corpus, queries, cfg)
        return cls(
            corpus=corpus,
            queries=queries,
            pair_ids=pair_ids,
            corpus_ids=corpus_ids,
            corpus_row=rows.corpus_row,
            query_ids=rows.query_ids,
            query_row=rows.query_row,
            excluded_ids=excl.excluded_ids,
            duplicates_excluded=excl.duplicates_excluded,
            twin_positives_excluded=excl.twin_positives_excluded,
            query_duplicates_excluded=excl.query_duplicates_excluded,
            vectors_dir=vectors_dir,
            space=space_key(plan.vectors) if plan.vectors is not None else None,
        )

    def load_query_vectors(self) -> np.ndarray:
        """Float32 vectors of the mined queries (row i = `query_ids[i]`); queries are few, so read into RAM."""
        if self.query_vecs is None:
            assert self.vectors_dir is not None
            self.query_vecs = read_rows_of(self.vectors_dir / "queries", self.query_ids)
        return self.query_vecs

    @property
    def rows(self) -> PairRows:
        return PairRows(self.pair_ids, self.corpus_ids, self.corpus_row, self.query_ids, self.query_row)

    def pairs(self) -> list[Any]:
        return self.rows.pairs()

    def excluded_rows(self) -> dict[int, set[int]]:
        return self.rows.excluded_rows(self.excluded_ids)


def _check_pairs_have_vectors(
    qrels_file: Path,
    pair_ids: Sequence[tuple[str, str]],
    query_ids: set[str],
    corpus_ids: set[str],
    vectors_dir: Path,
) -> None:
    for q, d in pair_ids:
        if q not in query_ids:
            line = _qrels_line(qrels_file, 0, q)
            raise ArtifactMismatchError(
                f"{qrels_file}:{line}: field 'query-id': query id '{q}' has no vector in {vectors_dir}"
            )
        if d not in corpus_ids:
            line = _qrels_line(qrels_file, 1, d)
            raise ArtifactMismatchError(
                f"{qrels_file}:{line}: field 'corpus-id': document id '{d}' has no vector in {vectors_dir}"
            )


# ---------------------------------------------------------------------------------------------
# Mining: one call into the core
# ---------------------------------------------------------------------------------------------


def _mine(
    ctx: _Context, cfg: MineConfig, out: Path, new: Path, *, audit: bool, progress: bool = True
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
            members=_members(ctx, cfg),
        )
    return results, stats, writer.close() if writer is not None else []


# Above this many pairs the members' disagreement is left out of the risk figures unless a vote needs the members
# (it reads every member's vectors of every chosen negative, one pair at a time).
MEMBERS_RISK_MAX_PAIRS = 200_000


def _members(ctx: _Context, cfg: MineConfig) -> Any:
    """The ensemble members behind a reduce artifact, row-aligned with its vectors (`mining.controls.Members`).

    None for a one-model vector set (nothing to vote), and for large runs that do not vote.
    """
    from hnm_cli.mining.controls import Members

    assert ctx.vectors_dir is not None
    manifest = load_manifest(ctx.vectors_dir)
    if manifest is None or manifest.stage != Stage.REDUCE:
        if cfg.vote != Vote.NONE:
            raise ConfigError(
                f"mine.vote needs an ensemble: {ctx.vectors_dir} is one model's vectors, not a reduce output"
            )
        return None
    if cfg.vote == Vote.NONE and len(ctx.pair_ids) > MEMBERS_RISK_MAX_PAIRS:
        return None
    dirs = [(rec["role"].split(":", 1)[1], Path(rec["path"])) for rec in manifest.inputs
            if str(rec.get("role", "")).startswith("vectors:")]  # fmt: skip
    if not dirs:
        return None
    names, queries, corpora, remaps = [], [], [], []
    for name, folder in dirs:
        if not (folder / "corpus").is_dir():
            raise ArtifactMismatchError(
                f"{ctx.vectors_dir}: its member {name!r} is gone from {folder}; vote and the risk figures need it"
            )
        member_ids = read_ids(folder / "corpus")
        if member_ids == ctx.corpus_ids:
            remap = None
        else:
            row = {d: i for i, d in enumerate(member_ids)}
            remap = np.array([row[d] for d in ctx.corpus_ids], dtype=np.int64)
        names.append(name)
        queries.append(read_rows_of(folder / "queries", ctx.query_ids))
        corpora.append(open_vector_source(folder / "corpus"))
        remaps.append(remap)
    return Members(names, queries, corpora, remaps)


def _audit_row(rec: Any, ctx: _Context) -> dict[str, Any]:
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
    mine_dir: Path, ctx: _Context, cfg: MineConfig, audited: dict[str, Any]
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


# ---------------------------------------------------------------------------------------------
# Incremental updates
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Base:
    """The earlier mine artifact an update starts from."""

    path: Path
    rows: dict[tuple[str, str], dict[str, Any]]
    state: mined.MineState


def _update_base(
    update: Path, plan: _Plan, cfg: MineConfig, *, audit: bool, from_audit: Path | None, deep: bool
) -> _Base:
    """The earlier artifact, checked to be updatable into this run (same settings, written with a state)."""
    if audit or from_audit is not None:
        raise ConfigError("--update mines incrementally; it cannot write an audit or re-select from one")
    manifest = mined.require_mined(update, deep=deep)
    ignore = {"export", "plot"}  # extras written beside the rows, not what the rows are
    theirs = {k: v for k, v in manifest.params.items() if k not in ignore}
    # through JSON, as the manifest stored them (tuples come back as lists)
    ours = orjson.loads(orjson.dumps({k: v for k, v in plan.params.items() if k not in ignore}))
    if theirs != ours:
        differ = sorted(k for k in {*theirs, *ours} if theirs.get(k) != ours.get(k))
        raise ConfigError(
            f"--update {update} was mined with other settings ({', '.join(differ)}); give the same options, or "
            "mine in full"
        )
    state = mined.read_state(update)
    if state is None:
        raise ConfigError(f"--update {update} was mined before incremental updates existed; mine it once in full")
    if plan.vectors is not None and state.space != space_key(plan.vectors):
        raise ArtifactMismatchError(
            f"--update {update}: these vectors are not in the space it was mined in (another model or PCA fit); "
            "embed with the same models and reduce with --fit-from, or mine in full"
        )
    rows = {(r["query_id"], r["positive_id"]): r for _, r in mined.iter_rows(update)}
    return _Base(Path(update), rows, state)


def _exclusion_digest(ids: set[str]) -> str:
    import hashlib

    return hashlib.sha256("\n".join(sorted(ids)).encode()).hexdigest()[:16]


def _exact_hash(text: str) -> str:
    # Exact, not normalised: a change of case or spacing changes the vector, so it is a changed document.
    import hashlib

    return hashlib.blake2b(text.encode(), digest_size=12).hexdigest()


def _state(ctx: _Context) -> mined.MineState:
    assert ctx.space is not None
    docs = {d: _exact_hash(ctx.corpus[d].full_text) for d in ctx.corpus_ids}
    queries = {q: (_exact_hash(ctx.queries[q].text), _exclusion_digest(ctx.excluded_ids[q])) for q in ctx.query_ids}
    return mined.MineState(docs, queries, ctx.space)


def _cannot_update(cfg: MineConfig) -> str | None:
    """Why `cfg` cannot be updated incrementally (said once on stderr; the run is then a cold one), or None."""
    from hnm_cli.mining.update import unsupported

    if (why := unsupported(cfg)) is not None:
        log.warning("mine: --update recomputes every pair: %s", why)
    return why


def _mine_update(ctx: _Context, cfg: MineConfig, base: _Base) -> tuple[list[Any], Any]:
    """Mine incrementally from `base`: `mining.update` plans and merges, this reads what it needs."""
    from hnm_cli.mining.strategies import Ids, Texts
    from hnm_cli.mining.update import plan_update, update_negatives

    assert ctx.vectors_dir is not None
    now = _state(ctx)
    plan = plan_update(
        base.state.docs,
        base.state.queries,
        {k: r["negatives"] for k, r in base.rows.items()},
        now.docs,
        now.queries,
        ctx.pair_ids,
        ctx.corpus_row,
    )
    texts = None
    if cfg.strategy == Strategy.BM25 or cfg.fallback == Fallback.BM25:
        texts = Texts(corpus=[ctx.corpus[d].full_text for d in ctx.corpus_ids],
                      queries=[ctx.queries[q].text for q in ctx.query_ids])  # fmt: skip
    results, stats, counts = update_negatives(
        ctx.load_query_vectors(),
        open_vector_source(ctx.vectors_dir / "corpus"),
        ctx.pairs(),
        ctx.excluded_rows(),
        cfg,
        plan,
        ids=Ids(ctx.corpus_ids, ctx.query_ids),
        texts=texts,
    )
    ctx.update_counts = counts.to_json()
    if counts.pairs_drifted:
        # A nightly job that silently re-mines everything would pay a full run every night: say so, once.
        log.warning(
            "mine: --update re-mined %d of %d pairs whose texts did not change because their vectors did (by a "
            "bit: an encoder that does not answer a text the same way twice, or a rebuilt embedding cache)",
            counts.pairs_drifted, len(ctx.pair_ids),
        )  # fmt: skip
    return results, stats


def _update_part(stats: dict[str, Any]) -> str:
    """The summary line's account of an update."""
    u = stats["update"]
    if u.get("recomputed_in_full"):
        return f"update: every pair mined again ({u['recomputed_in_full']})"
    why = f"{u['pairs_new']} new, {u['pairs_inputs_changed']} with changed inputs"
    if u["pairs_drifted"]:
        why += f", {u['pairs_drifted']} forced by vector drift"
    return f"update: {u['pairs_reused']} pairs reused, {u['pairs_remined']} mined again ({why})"


# ---------------------------------------------------------------------------------------------
# Output
# ---------------------------------------------------------------------------------------------


def _rows(results: Sequence[Any], ctx: _Context) -> Any:
    return mined.rows_of(ctx.pair_ids, results, ctx.corpus_ids, lambda q: ctx.queries[q].meta)


def _stats_dict(stats: Any, ctx: _Context, cfg: MineConfig, seconds: float) -> dict[str, Any]:
    data: dict[str, Any] = stats.to_dict()
    data.update(
        {
            "strategy": cfg.strategy,
            "split": cfg.split,
            "num_negatives": cfg.num_negatives,
            "queries": len(ctx.query_ids),
            "corpus_docs": len(ctx.corpus_ids),
            "duplicates_excluded": ctx.duplicates_excluded,
            "twin_positives_excluded": ctx.twin_positives_excluded,
            "query_duplicates_excluded": ctx.query_duplicates_excluded,
            "mining_seconds": round(seconds, 3),
            "executor": cfg.executor,
        }
    )
    return data


def _summary(stats: dict[str, Any], cfg: MineConfig, seconds: float, from_audit: bool) -> str:
    pairs = stats["pairs"]
    with_neg = pairs - stats["pairs_with_zero"]
    how = f"{cfg.strategy} from audit" if from_audit else cfg.strategy
    parts = [
        f"mine: {how} on {pairs} pairs: {with_neg} with >=1 negative ({100.0 * with_neg / max(pairs, 1):.1f}%)",
        # "short" here means got some but fewer than asked; the empty pairs are the complement of the rate.
        f"{stats['pairs_short'] - stats['pairs_with_zero']} short",
    ]
    if cfg.strategy == Strategy.RULE:
        parts.append(
            f"C1 rejected {stats['rejected_c1']}, C2 rejected {stats['rejected_c2']}, "
            f"excluded {stats['rejected_exclusion']}"
        )
    if stats.get("fallback_pairs"):
        parts.append(f"{stats['fallback_pairs']} by fallback {cfg.fallback}")
    if stats.get("query_duplicates_excluded"):
        parts.append(f"{stats['query_duplicates_excluded']} document(s) equal to their query's text excluded")
    if stats.get("hnsw_widenings") or stats.get("exact_fallbacks"):
        parts.append(f"hnsw widened {stats['hnsw_widenings']}, exact fallbacks {stats['exact_fallbacks']}")
    parts.append(f"{seconds:.1f} s")
    return ", ".join(parts)


def _write_export(
    out: Path, layout: str, rows: list[dict[str, Any]], ctx: _Context, cfg: MineConfig, stats: dict[str, Any]
) -> dict[str, Any]:
    from hnm_cli.artifacts.exports import write_export

    query_text = {q: ctx.queries[q].text for q in ctx.query_ids}
    rel, n, stats["export"] = write_export(
        out, ExportLayout(layout), rows, query_text, lambda d: ctx.corpus[d].full_text, cfg.num_negatives
    )
    return output_entry(out, rel, rows=n)


def _write_plots(out: Path, rows: list[dict[str, Any]], ctx: _Context, cfg: MineConfig) -> list[str]:
    from hnm_cli import plots

    assert ctx.vectors_dir is not None
    return plots.write_mining_plots(
        out / "plots",
        rows,
        ctx.load_query_vectors(),
        open_vector_source(ctx.vectors_dir / "corpus"),
        ctx.query_row,
        ctx.corpus_row,
        title=f"{cfg.strategy}: queries, positives and selected negatives (PCA 1-2)",
        seed=cfg.seed,
    )


__all__ = ["run"]
