"""`hnm mine`: (query, positive) pairs of a split + a vector set -> hard negatives, stats, audit, exports, plots.

The stage owns paths, validation, the output schema and the manifest; the selection itself is the pure
core in `hnm_cli.mining` (the paper's rule, dense top-k, random) and `hnm_cli.bm25`. One row per
(query, positive) pair, in qrels order, written even when it got no negative so the file is complete:

    {"query_id", "positive_id", "negatives": [{"doc_id", "source", "rank", "d_qd", "d_qp", "d_pd"}], "meta"}

`rank` is the 1-based rank of the negative in the ranking its source used (dense for rule/topk/next, BM25
for bm25; null for random); `meta` passes the query record's extra fields through.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hnm_cli.artifacts.files import atomic_write_json, iter_jsonl, remove_stale_files, rows_name, write_jsonl
from hnm_cli.artifacts.manifest import (
    MANIFEST_NAME,
    Manifest,
    artifact_input,
    begin_run,
    compute_fingerprint,
    file_input,
    load_manifest,
    output_entry,
    require_artifact,
    skip_if_up_to_date,
    write_manifest,
)
from hnm_cli.artifacts.vectors import read_ids, vector_dim
from hnm_cli.config import MineConfig
from hnm_cli.errors import (
    ArtifactMismatchError,
    ConfigError,
    DataError,
    IncompleteArtifactError,
    InputError,
    LeakageError,
)
from hnm_cli.inputs import (
    DataPaths,
    Records,
    read_corpus,
    read_qrels,
    read_queries,
    resolve_jsonl_files,
    resolve_qrels_file,
    text_hash,
)

STAGE = "mine"
VECTOR_STAGES = ("reduce", "embed-model")
ROWS_PER_SHARD = 10_000
AUDIT_ROWS_PER_SHARD = 200_000
HNSW_FILE = "index/hnsw.bin"
HNSW_FINGERPRINT = "index/fingerprint.json"
PLOT_MAX_PAIRS = 2000  # points beyond this make Figure 2 an unreadable blob; a seeded sample is drawn
STALE_PATTERNS = ("rows-*.jsonl", "stats.json", "audit/rows-*.jsonl", "export/*.jsonl", "plots/*.png")

log = logging.getLogger("hnm")


# ---------------------------------------------------------------------------------------------
# Resolving and validating inputs (cheap: no vectors are read here)
# ---------------------------------------------------------------------------------------------


def _reduce_fix(directory: Path) -> str:
    return f"hnm reduce --embeddings <embed dir> --out {directory}"


def resolve_vectors(directory: Path) -> Manifest:
    """The manifest of the vector set to mine from.

    A top-level embed artifact with exactly one model is descended into; with several models the user
    must pick one or fuse them with `hnm reduce`.

    Raises:
        IncompleteArtifactError: no directory or no manifest.
        ArtifactMismatchError: not a vector set, or an embed artifact with several models.
    """
    directory = Path(directory)
    manifest = load_manifest(directory) if directory.is_dir() else None
    if manifest is not None and manifest.stage == "embed":
        models = sorted(
            d.name for d in directory.iterdir() if d.is_dir() and (d / "corpus").is_dir() and (d / "queries").is_dir()
        )
        if len(models) == 1:
            return require_artifact(
                directory / models[0], "embed-model", fix=f"hnm embed ... --out {directory} (it did not finish)"
            )
        if not models:
            raise ArtifactMismatchError(f"{directory} is an embed artifact without any model folder")
        raise ArtifactMismatchError(
            f"{directory} holds {len(models)} models ({', '.join(models)}): give one model folder "
            f"(--vectors {directory / models[0]}) or fuse them first with hnm reduce"
        )
    manifest = require_artifact(directory, VECTOR_STAGES, fix=_reduce_fix(directory))
    for part in ("corpus", "queries"):
        if not (directory / part).is_dir():
            raise IncompleteArtifactError(f"{directory} has no {part}/ vectors. Rerun: {_reduce_fix(directory)}")
    return manifest


def _recorded_digests(manifest: Manifest, role: str, depth: int = 0) -> list[dict[str, Any]]:
    """Input records of `role` in a vector set's manifest, following upstream artifacts (reduce -> embed)."""
    found = [i for i in manifest.inputs if i.get("role") == role and "stage" not in i]
    if found or depth >= 3:
        return found
    for record in manifest.inputs:
        if "stage" in record and record.get("path"):
            upstream = load_manifest(Path(record["path"]))
            if upstream is not None:
                found += _recorded_digests(upstream, role, depth + 1)
    return found


def check_same_files(vectors: Manifest, given: list[dict[str, Any]], role: str) -> None:
    """Refuse a vector set built from other `role` files (corpus, queries) than the ones given.

    Only content digests are compared (paths may differ: a copied data folder is the same data).
    A vector set that records no digest for `role` is not checked.

    Raises:
        ArtifactMismatchError: the digests differ.
    """
    recorded = _recorded_digests(vectors, role)
    if not recorded:
        log.warning(
            "mine: %s records no %s digest; cannot check that it matches %s", vectors.path, role, given[0]["path"]
        )
        return
    want = sorted(r["sha256"] for r in recorded)
    have = sorted(g["sha256"] for g in given)
    if want != have:
        raise ArtifactMismatchError(
            f"{vectors.path} was built from a different {role} than {given[0]['path']} "
            f"(sha256 {have[0][:12]} given, {want[0][:12]} recorded); re-embed with this {role} or pass the one "
            "the vectors were built from"
        )


def check_split(cfg: MineConfig) -> None:
    """The leakage guard: mining with an evaluation split's queries turns test answers into training data."""
    if cfg.split in cfg.eval_splits and not cfg.allow_eval_queries:
        raise LeakageError(
            f"split '{cfg.split}' is an evaluation split ({', '.join(cfg.eval_splits)}): mining its queries leaks "
            "evaluation data into training; pass --allow-eval-queries to do it anyway"
        )


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


# ---------------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------------


@dataclass
class _Plan:
    """Everything decided before the up-to-date check."""

    vectors: Manifest | None
    qrels_file: Path
    corpus_files: list[Path]
    query_files: list[Path]
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
) -> _Plan:
    check_split(cfg)
    if data.qrels is None:
        raise InputError("no qrels: give --data <BEIR folder> or --qrels")
    if audit and cfg.strategy != "rule":
        raise ConfigError(f"--audit records the rule's C1/C2 tests; it needs strategy 'rule', not '{cfg.strategy}'")
    if export is not None:
        from hnm_cli.exports import LAYOUTS

        if export not in LAYOUTS:
            raise ConfigError(f"export must be one of {', '.join(LAYOUTS)}; got {export!r}")
    qrels_file = resolve_qrels_file(data.qrels, cfg.split)
    corpus_files = resolve_jsonl_files(data.corpus, "corpus")
    query_files = resolve_jsonl_files(data.queries, "queries")
    corpus_inputs = [file_input(p, "corpus") for p in corpus_files]
    query_inputs = [file_input(p, "queries") for p in query_files]
    inputs = corpus_inputs + query_inputs + [file_input(qrels_file, "qrels")]

    vectors = None
    if vectors_dir is not None:
        vectors = resolve_vectors(vectors_dir)
        check_same_files(vectors, corpus_inputs, "corpus")
        check_same_files(vectors, query_inputs, "queries")
        inputs.append(artifact_input(vectors, "vectors"))
    elif from_audit is None or plot:
        raise InputError("give --vectors (a reduce output or one embed model folder)" + (" for --plot" if plot else ""))

    audit_dir = audit_manifest = None
    if from_audit is not None:
        audit_dir, audit_manifest = resolve_audit(from_audit, out)
        if vectors is not None:
            used = [i for i in audit_manifest.inputs if i.get("role") == "vectors"]
            if used and used[0]["sha256"] != vectors.digest:
                raise ArtifactMismatchError(
                    f"{audit_dir} was mined from other vectors ({used[0]['path']}) than {vectors.path}"
                )
        used_qrels = [i["sha256"] for i in audit_manifest.inputs if i.get("role") == "qrels"]
        if used_qrels and used_qrels != [inputs[len(corpus_inputs) + len(query_inputs)]["sha256"]]:
            raise ArtifactMismatchError(f"{audit_dir} was mined from other qrels than {qrels_file}")
        inputs.append(artifact_input(audit_manifest, "audit"))

    params = cfg.to_params() | {"audit": audit, "export": export, "plot": plot, "from_audit": from_audit is not None}
    return _Plan(
        vectors=vectors,
        qrels_file=qrels_file,
        corpus_files=corpus_files,
        query_files=query_files,
        params=params,
        inputs=inputs,
        fingerprint=compute_fingerprint(STAGE, params, inputs),
        audit_dir=audit_dir,
        audit_manifest=audit_manifest,
    )


def resolve_audit(path: Path, out: Path) -> tuple[Path, Manifest]:
    """The audit folder and the manifest of the mine run that wrote it (`<mine out>` or `<mine out>/audit`).

    Raises:
        IncompleteArtifactError / ArtifactMismatchError: not a finished mine run with an audit.
        InputError: the audit lies inside `out`, which this run is about to rewrite.
    """
    path = Path(path)
    mine_dir = path.parent if path.name == "audit" and not (path / "audit").is_dir() else path
    manifest = require_artifact(mine_dir, STAGE, fix=f"hnm mine ... --audit --out {mine_dir}")
    audit_dir = mine_dir / "audit"
    if not manifest.params.get("audit") or not audit_dir.is_dir():
        raise InputError(f"{mine_dir} was mined without --audit; rerun it with --audit")
    if Path(out).resolve() == mine_dir.resolve():
        raise InputError(f"--from-audit {path} lies inside --out {out}; write the re-selection to another --out")
    return audit_dir, manifest


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
            `max_score`/`min_score` (similarity bounds) and `fallback`.
        force: rerun even when up to date.
        progress: log progress (the CLI's --quiet turns it off).

    Returns:
        The written (or, when up to date, the existing) manifest.

    Raises:
        HnmError: any bad input (see the checks above), with a one-line message.
    """
    out = Path(out)
    plan = _plan(vectors_dir, data_paths, out, cfg, audit=audit, export=export, plot=plot, from_audit=from_audit)
    if (done := skip_if_up_to_date(out, STAGE, plan.fingerprint, force=force)) is not None:
        return done

    t0 = time.time()
    corpus = read_corpus(data_paths.corpus)
    queries = read_queries(data_paths.queries)
    qrels = read_qrels(plan.qrels_file, query_ids=queries, doc_ids=corpus)
    ctx = _Context.load(plan, corpus, queries, qrels, cfg)
    started = begin_run(out)

    if from_audit is not None:
        assert plan.audit_dir is not None and plan.audit_manifest is not None
        results, stats = _select_from_audit(plan.audit_dir, ctx, cfg, plan.audit_manifest.params)
        audit_files: list[str] = []
    else:
        results, stats, audit_files = _mine(ctx, cfg, out, audit=audit)

    written: list[tuple[str, int]] = []
    rows = list(_rows(results, ctx))
    for shard, lo in enumerate(range(0, max(len(rows), 1), ROWS_PER_SHARD)):
        name = rows_name(shard)
        written.append((name, write_jsonl(out / name, rows[lo : lo + ROWS_PER_SHARD])))

    stats_dict = _stats_dict(stats, ctx, cfg, time.time() - t0)
    if export is not None:
        written.append(_write_export(out, export, rows, ctx, cfg, stats_dict))
    plot_files = _write_plots(out, rows, ctx, cfg) if plot else []
    atomic_write_json(out / "stats.json", stats_dict)

    outputs = [output_entry(out, rel, rows=n) for rel, n in written]
    outputs += [output_entry(out, rel, rows=n) for rel, n in audit_files]  # type: ignore[misc]
    # Reports and the index are not what training reads: out of the digest, so a re-mine with the same rows
    # (stats.json holds the timing) leaves downstream artifacts up to date.
    outputs += [output_entry(out, rel, downstream=False) for rel in [*plot_files, "stats.json"]]
    if ctx.hnsw_files:
        outputs += [output_entry(out, rel, downstream=False) for rel in ctx.hnsw_files]
    remove_stale_files(out, keep=[o["path"] for o in outputs], patterns=STALE_PATTERNS)
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
    log.info(_summary(stats_dict, cfg, manifest.stats["seconds"], from_audit is not None))
    return manifest


# ---------------------------------------------------------------------------------------------
# Loading vectors, pairs and exclusions
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
    query_duplicates_excluded: int  # documents excluded for repeating the query's own text
    vectors_dir: Path | None
    query_vecs: np.ndarray | None = None
    hnsw_files: list[str] = field(default_factory=list)

    @classmethod
    def load(cls, plan: _Plan, corpus: Records, queries: Records, qrels: dict[str, dict[str, int]], cfg: MineConfig):
        pair_ids = [(q, d) for q, docs in qrels.items() for d, rel in docs.items() if rel > 0]
        if not pair_ids:
            raise DataError(f"{plan.qrels_file}: no (query, positive) pairs with relevance > 0")
        positives: dict[str, list[str]] = {}
        for q, d in pair_ids:
            positives.setdefault(q, []).append(d)
        query_ids = list(positives)

        vectors_dir = plan.vectors.path if plan.vectors is not None else None
        if vectors_dir is not None:
            corpus_ids = read_ids(vectors_dir / "corpus")
            vec_query_ids = read_ids(vectors_dir / "queries")
            corpus_row = {d: i for i, d in enumerate(corpus_ids)}
            have_q = set(vec_query_ids)
            for q, d in pair_ids:
                if q not in have_q:
                    line = _qrels_line(plan.qrels_file, 0, q)
                    raise ArtifactMismatchError(
                        f"{plan.qrels_file}:{line}: field 'query-id': query id '{q}' has no vector in {vectors_dir}"
                    )
                if d not in corpus_row:
                    line = _qrels_line(plan.qrels_file, 1, d)
                    raise ArtifactMismatchError(
                        f"{plan.qrels_file}:{line}: field 'corpus-id': document id '{d}' has no vector in {vectors_dir}"
                    )
            dq, dc = vector_dim(vectors_dir / "queries"), vector_dim(vectors_dir / "corpus")
            if dq != dc:
                raise ArtifactMismatchError(
                    f"{vectors_dir}: query vectors have dimension {dq} but corpus vectors {dc}; rebuild the vector set"
                )
        else:
            corpus_ids = corpus.ids
            corpus_row = {d: i for i, d in enumerate(corpus_ids)}

        # Exclusions: every positive of the query by id, and every document whose normalised text equals a
        # positive's (the same passage under another id is a false negative waiting to happen). Only the
        # positives' hashes are kept, so memory grows with the qrels, not with the corpus.
        queries_by_hash: dict[str, set[str]] = {}
        for q, pos in positives.items():
            for d in pos:
                queries_by_hash.setdefault(text_hash(corpus[d].full_text), set()).add(q)
        excluded_ids = {q: set(pos) for q, pos in positives.items()}
        # A document that *is* the query (Quora, ArguAna and CQADupStack put queries in the corpus too) has
        # d(Q,D) ~ 0: every strategy would pick it first, teaching the reranker that a text does not match
        # itself. Matched on the body alone as well, since the query has no title.
        same_as_query: dict[str, list[str]] = {}
        if cfg.exclude_query_duplicates:
            for q in query_ids:
                if (query := queries.items.get(q)) is not None:
                    same_as_query.setdefault(text_hash(query.text), []).append(q)
        identical = 0
        for d in corpus_ids:
            doc = corpus.items.get(d)
            if doc is None:
                continue
            full = text_hash(doc.full_text)
            for q in queries_by_hash.get(full, ()):
                excluded_ids[q].add(d)
            if same_as_query:
                for q in {
                    *same_as_query.get(full, ()),
                    *(same_as_query.get(text_hash(doc.text), ()) if doc.title else ()),
                }:
                    if d not in excluded_ids[q]:
                        excluded_ids[q].add(d)
                        identical += 1
        dups = sum(len(excluded_ids[q]) - len(set(pos)) for q, pos in positives.items()) - identical
        return cls(
            corpus=corpus,
            queries=queries,
            pair_ids=pair_ids,
            corpus_ids=corpus_ids,
            corpus_row=corpus_row,
            query_ids=query_ids,
            query_row={q: i for i, q in enumerate(query_ids)},
            excluded_ids=excluded_ids,
            duplicates_excluded=dups,
            query_duplicates_excluded=identical,
            vectors_dir=vectors_dir,
        )

    def load_query_vectors(self) -> np.ndarray:
        """Float32 vectors of the mined queries (row i = `query_ids[i]`); queries are few, so read into RAM."""
        if self.query_vecs is None:
            assert self.vectors_dir is not None
            from hnm_cli.search import VectorSource

            source = VectorSource.from_dir(self.vectors_dir / "queries")
            row = {q: i for i, q in enumerate(read_ids(self.vectors_dir / "queries"))}
            self.query_vecs = source.take([row[q] for q in self.query_ids])
        return self.query_vecs

    def pairs(self) -> list[Any]:
        from hnm_cli.mining import Pair

        return [Pair(self.query_row[q], self.corpus_row[d]) for q, d in self.pair_ids]

    def excluded_rows(self) -> dict[int, set[int]]:
        return {
            self.query_row[q]: {self.corpus_row[d] for d in ds if d in self.corpus_row}
            for q, ds in self.excluded_ids.items()
        }


# ---------------------------------------------------------------------------------------------
# Mining (search-based strategies)
# ---------------------------------------------------------------------------------------------


def _mine(ctx: _Context, cfg: MineConfig, out: Path, *, audit: bool) -> tuple[list[Any], Any, list[tuple[str, int]]]:
    from hnm_cli import mining
    from hnm_cli.search import VectorSource

    assert ctx.vectors_dir is not None
    source = VectorSource.from_dir(ctx.vectors_dir / "corpus")
    query_vecs = ctx.load_query_vectors()
    pairs = ctx.pairs()
    excluded = ctx.excluded_rows()
    rng = np.random.default_rng(cfg.seed)
    audit_files: list[tuple[str, int]] = []

    index = None
    if cfg.index == "hnsw" and cfg.strategy in ("rule", "topk"):
        index = _hnsw_index(out, source, ctx, cfg)

    if cfg.strategy == "rule":
        writer = _AuditWriter(out / "audit", ctx) if audit else None
        results, stats = mining.mine_rule(
            query_vecs,
            source,
            pairs,
            excluded,
            num_negatives=cfg.num_negatives,
            index=index,
            ef_search=cfg.hnsw_ef_search,
            candidate_k=cfg.candidate_k,
            block_rows=cfg.block_size,
            pair_block=cfg.query_block,
            fallback="next" if cfg.fallback == "next" else "none",
            fill=cfg.fill,
            c2_margin=cfg.c2_margin,
            range_min=cfg.range_min,
            range_max=cfg.range_max,
            sampling_strategy=cfg.sampling_strategy,
            rng=rng,
            audit=writer.add if writer is not None else None,
        )
        if writer is not None:
            audit_files = writer.close()
    elif cfg.strategy == "topk":
        results, stats = mining.mine_topk(
            query_vecs,
            source,
            pairs,
            excluded,
            num_negatives=cfg.num_negatives,
            range_min=cfg.range_min,
            range_max=cfg.range_max,
            max_score=cfg.max_score,
            min_score=cfg.min_score,
            absolute_margin=cfg.absolute_margin,
            relative_margin=cfg.relative_margin,
            sampling_strategy=cfg.sampling_strategy,
            rng=rng,
            index=index,
            ef_search=cfg.hnsw_ef_search,
            block_rows=cfg.block_size,
            query_block=cfg.query_block,
        )
    elif cfg.strategy == "random":
        results = mining.sample_random(source.n, pairs, excluded, cfg.num_negatives, rng)
        results = mining.fill_distances(query_vecs, source, results)
        stats = None
    else:  # bm25
        results = _bm25_results(ctx, pairs, excluded, cfg.num_negatives, source="bm25")
        results = mining.fill_distances(query_vecs, source, results)
        stats = None

    if cfg.fallback in ("random", "bm25") and cfg.strategy != cfg.fallback:
        results = _apply_fallback(ctx, results, cfg, rng, query_vecs, source)
    return results, _restat(results, stats, cfg), audit_files


def _restat(results: Sequence[Any], stats: Any, cfg: MineConfig) -> Any:
    """Stats recomputed from the final results (after a stage-level fallback), keeping the search counters."""
    from hnm_cli.mining import MiningStats

    new = MiningStats()
    for r in results:
        new.add(r, cfg.num_negatives)
    if stats is not None:
        # Search-level counters are not per pair: carry them over.
        new.hnsw_widenings = stats.hnsw_widenings
        new.exact_fallbacks = stats.exact_fallbacks
        new.rejected_by = dict(stats.rejected_by)
    return new


def _apply_fallback(ctx: _Context, results: list[Any], cfg: MineConfig, rng: np.random.Generator, query_vecs, source):
    """Give pairs left empty by the strategy random or BM25 negatives (source `fallback-random|bm25`)."""
    from dataclasses import replace

    from hnm_cli import mining

    empty = [i for i, r in enumerate(results) if not r.negatives]
    if not empty:
        return results
    pairs = [results[i].pair for i in empty]
    excluded = ctx.excluded_rows()
    if cfg.fallback == "random":
        filled = mining.sample_random(source.n, pairs, excluded, cfg.num_negatives, rng)
        filled = [replace(r, negatives=[replace(n, source="fallback-random") for n in r.negatives]) for r in filled]
    else:
        filled = _bm25_results(ctx, pairs, excluded, cfg.num_negatives, source="fallback-bm25")
    filled = mining.fill_distances(query_vecs, source, filled)
    results = list(results)
    for i, r in zip(empty, filled, strict=True):
        results[i] = replace(results[i], negatives=r.negatives, fallback_used=bool(r.negatives))
    return results


def _bm25_results(ctx: _Context, pairs: Sequence[Any], excluded: dict[int, set[int]], k: int, *, source: str):
    """Top-`k` BM25 documents per query (minus its exclusions and PD), shared by all pairs of the query."""
    from hnm_cli.bm25 import BM25Index
    from hnm_cli.mining import Negative, PairResult

    texts = [ctx.corpus[d].full_text for d in ctx.corpus_ids]
    index = BM25Index(texts)
    qrows = sorted({p.query_row for p in pairs})
    exclude = [excluded.get(q, set()) for q in qrows]
    scores, idx = index.search([ctx.queries[ctx.query_ids[q]].text for q in qrows], k, exclude=exclude)
    per_query = {
        q: [
            Negative(int(j), source, rank + 1, None, None, None)
            for rank, j in enumerate(idx[i])
            # A zero score shares no term with the query: not a lexical hard negative, just an arbitrary doc.
            if j >= 0 and scores[i, rank] > 0
        ]
        for i, q in enumerate(qrows)
    }
    out = []
    for p in pairs:
        negs = [n for n in per_query[p.query_row] if n.doc_row != p.positive_row]
        out.append(PairResult(pair=p, negatives=negs, examined=len(negs)))
    return out


def _hnsw_index(out: Path, source: Any, ctx: _Context, cfg: MineConfig) -> Any:
    """Load `<out>/index/hnsw.bin` when its fingerprint matches the vectors and params, else build and save it."""
    import orjson

    from hnm_cli.search import HnswIndex

    assert ctx.vectors_dir is not None
    vectors = load_manifest(ctx.vectors_dir)
    want = {
        "vectors": vectors.digest if vectors is not None else "",
        "n": source.n,
        "dim": source.dim,
        "M": cfg.hnsw_m,
        "ef_construction": cfg.hnsw_ef_construction,
        "seed": cfg.seed,
    }
    path, fp_path = out / HNSW_FILE, out / HNSW_FINGERPRINT
    if path.is_file() and fp_path.is_file():
        try:
            have = orjson.loads(fp_path.read_bytes())
        except orjson.JSONDecodeError:
            have = None
        if have == want:
            log.info("mine: reusing hnsw index %s", path)
            ctx.hnsw_files = [HNSW_FILE, HNSW_FINGERPRINT]
            return HnswIndex.load(path, source.dim, source.n)
    log.info(
        "mine: building hnsw index over %d vectors (M=%d, ef_construction=%d)",
        source.n,
        cfg.hnsw_m,
        cfg.hnsw_ef_construction,
    )
    fp_path.unlink(missing_ok=True)  # a half-replaced index must never look reusable
    index = HnswIndex.build(
        source, M=cfg.hnsw_m, ef_construction=cfg.hnsw_ef_construction, random_seed=cfg.seed, block_rows=cfg.block_size
    )
    index.save(path)
    atomic_write_json(fp_path, want)
    ctx.hnsw_files = [HNSW_FILE, HNSW_FINGERPRINT]
    return index


# ---------------------------------------------------------------------------------------------
# Audit trail and re-selection from it
# ---------------------------------------------------------------------------------------------


class _AuditWriter:
    """Streams audit records to `audit/rows-NNNNN.jsonl` shards, `AUDIT_ROWS_PER_SHARD` rows each."""

    def __init__(self, directory: Path, ctx: _Context) -> None:
        self.directory = directory
        self.ctx = ctx
        self.buffer: list[dict[str, Any]] = []
        self.files: list[tuple[str, int]] = []

    def add(self, rec: Any) -> None:
        c = self.ctx
        self.buffer.append(
            {
                "query_id": c.query_ids[rec.query_row],
                "positive_id": c.corpus_ids[rec.positive_row],
                "doc_id": c.corpus_ids[rec.doc_row],
                "rank": rec.rank,
                "d_qd": rec.d_qd,
                "d_qp": rec.d_qp,
                "d_pd": rec.d_pd,
                "c1": rec.c1,
                "c2": rec.c2,
                "excluded": rec.excluded,
                "selected": rec.selected,
            }
        )
        if len(self.buffer) >= AUDIT_ROWS_PER_SHARD:
            self._flush()

    def _flush(self) -> None:
        name = f"audit/{rows_name(len(self.files))}"
        self.files.append((name, write_jsonl(self.directory.parent / name, self.buffer)))
        self.buffer = []

    def close(self) -> list[tuple[str, int]]:
        if self.buffer or not self.files:
            self._flush()
        return self.files


def _iter_audit(audit_dir: Path) -> Iterator[dict[str, Any]]:
    for path in sorted(audit_dir.glob("rows-*.jsonl")):
        yield from iter_jsonl(path)


def _select_from_audit(
    audit_dir: Path, ctx: _Context, cfg: MineConfig, audited: dict[str, Any]
) -> tuple[list[Any], Any]:
    """Re-apply the rule to audited candidates: C1 and C2 and not excluded, plus this run's score bounds.

    The audit holds the whole C1 region of every pair, so any `num_negatives` gives what a fresh search
    would. `max_score`/`min_score` bound sim(Q,D) = 1 - d(Q,D). Fallback "next" uses the audited top
    `candidate_k` window; "random"/"bm25" draw from the corpus as in a normal run.
    """
    from hnm_cli.mining import SOURCE_FALLBACK_NEXT, SOURCE_RULE, MiningStats, Negative, Pair, PairResult

    by_pair: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for rec in _iter_audit(audit_dir):
        by_pair.setdefault((rec["query_id"], rec["positive_id"]), []).append(rec)
    missing = [p for p in ctx.pair_ids if p not in by_pair]
    if missing:
        q, d = missing[0]
        raise ArtifactMismatchError(f"{audit_dir} has no candidates for pair ({q}, {d}): it was mined from other qrels")

    def in_bounds(rec: dict[str, Any]) -> bool:
        sim = 1.0 - rec["d_qd"]
        if cfg.max_score is not None and sim > cfg.max_score:
            return False
        return not (cfg.min_score is not None and sim < cfg.min_score)

    audited_margin = float(audited.get("c2_margin", 0.0))

    def c2(rec: dict[str, Any]) -> bool:
        # The recorded outcome where this run asks for the audited C2; otherwise recomputed from the distances.
        if cfg.c2_margin == audited_margin:
            return bool(rec["c2"])
        return rec["d_pd"] - rec["d_qd"] > cfg.c2_margin

    need = cfg.range_min + cfg.num_negatives if cfg.range_max is None else cfg.range_max
    rng = np.random.default_rng(cfg.seed)
    results = []
    for q, d in ctx.pair_ids:
        recs = sorted(by_pair.get((q, d), []), key=lambda r: r["rank"])
        pair = Pair(ctx.query_row[q], ctx.corpus_row[d])
        passing = [(r, SOURCE_RULE) for r in recs if r["c1"] and c2(r) and not r["excluded"] and in_bounds(r)]
        c1_region = [r for r in recs if r["c1"]]
        lacking = len(passing) < need if cfg.fill == "short" else not passing
        if lacking and cfg.fallback == "next":
            passing = [
                (r, SOURCE_RULE if r["c1"] else SOURCE_FALLBACK_NEXT)
                for r in recs
                if c2(r) and not r["excluded"] and r["doc_id"] != d and in_bounds(r)
            ]
        window = passing[cfg.range_min : need]
        if cfg.sampling_strategy == "random" and len(window) > cfg.num_negatives:
            window = [window[j] for j in np.sort(rng.choice(len(window), size=cfg.num_negatives, replace=False))]
        negs = [
            Negative(ctx.corpus_row[r["doc_id"]], source, r["rank"], r["d_qd"], r["d_qp"], r["d_pd"])
            for r, source in window[: cfg.num_negatives]
        ]
        results.append(
            PairResult(
                pair=pair,
                negatives=negs,
                c1_pass=len(c1_region),
                c2_fail=sum(1 for r in c1_region if not r["excluded"] and not r["c2"]),
                excluded=sum(1 for r in c1_region if r["excluded"]),
                examined=len(recs),
                fallback_used=any(n.source == SOURCE_FALLBACK_NEXT for n in negs),
            )
        )
    if cfg.fallback in ("random", "bm25"):
        if ctx.vectors_dir is None:
            raise InputError(f"--fallback {cfg.fallback} with --from-audit needs --vectors for the distances")
        from hnm_cli.search import VectorSource

        source_vecs = VectorSource.from_dir(ctx.vectors_dir / "corpus")
        results = _apply_fallback(
            ctx, results, cfg, np.random.default_rng(cfg.seed), ctx.load_query_vectors(), source_vecs
        )
    stats = MiningStats()
    for r in results:
        stats.add(r, cfg.num_negatives)
    return results, stats


# ---------------------------------------------------------------------------------------------
# Output
# ---------------------------------------------------------------------------------------------


def _rows(results: Sequence[Any], ctx: _Context) -> Iterator[dict[str, Any]]:
    for (q, d), r in zip(ctx.pair_ids, results, strict=True):
        yield {
            "query_id": q,
            "positive_id": d,
            "negatives": [
                {
                    "doc_id": ctx.corpus_ids[n.doc_row],
                    "source": n.source,
                    "rank": n.rank,
                    "d_qd": n.d_qd,
                    "d_qp": n.d_qp,
                    "d_pd": n.d_pd,
                }
                for n in r.negatives
            ],
            "meta": ctx.queries[q].meta,
        }


def _stats_dict(stats: Any, ctx: _Context, cfg: MineConfig, seconds: float) -> dict[str, Any]:
    data = stats.to_dict()
    data.update(
        {
            "strategy": cfg.strategy,
            "split": cfg.split,
            "num_negatives": cfg.num_negatives,
            "queries": len(ctx.query_ids),
            "corpus_docs": len(ctx.corpus_ids),
            "duplicates_excluded": ctx.duplicates_excluded,
            "query_duplicates_excluded": ctx.query_duplicates_excluded,
            "mining_seconds": round(seconds, 3),
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
    if cfg.strategy == "rule":
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
) -> tuple[str, int]:
    from hnm_cli.exports import ExportCounts, export_rows

    counts = ExportCounts()
    query_text = {q: ctx.queries[q].text for q in ctx.query_ids}
    doc_text = _LazyText(ctx.corpus)
    rel = f"export/{layout}.jsonl"
    n = write_jsonl(
        out / rel, export_rows(rows, layout, query_text, doc_text, num_negatives=cfg.num_negatives, counts=counts)
    )
    stats["export"] = {"layout": layout, "rows": n, "pairs_used": counts.pairs_used,
                       "pairs_skipped_empty": counts.pairs_skipped_empty, "pairs_skipped_short": counts.pairs_skipped_short}  # fmt: skip
    return rel, n


class _LazyText(dict):  # type: ignore[type-arg]
    """doc id -> full text, computed on demand (an export touches few documents of a big corpus)."""

    def __init__(self, corpus: Records) -> None:
        super().__init__()
        self._corpus = corpus

    def __missing__(self, key: str) -> str:
        return self._corpus[key].full_text


def _write_plots(out: Path, rows: list[dict[str, Any]], ctx: _Context, cfg: MineConfig) -> list[str]:
    from hnm_cli import plots
    from hnm_cli.search import VectorSource

    assert ctx.vectors_dir is not None
    source = VectorSource.from_dir(ctx.vectors_dir / "corpus")
    query_vecs = ctx.load_query_vectors()
    chosen = rows
    if len(rows) > PLOT_MAX_PAIRS:
        pick = np.sort(np.random.default_rng(cfg.seed).choice(len(rows), PLOT_MAX_PAIRS, replace=False))
        chosen = [rows[i] for i in pick]
    q_rows = sorted({ctx.query_row[r["query_id"]] for r in chosen})
    p_rows = sorted({ctx.corpus_row[r["positive_id"]] for r in chosen})
    n_rows = sorted({ctx.corpus_row[n["doc_id"]] for r in chosen for n in r["negatives"]})
    dim = query_vecs.shape[1]
    plots.plot_pca(
        out / "plots/pca.png",
        query_vecs[q_rows],
        source.take(p_rows),
        source.take(n_rows) if n_rows else np.zeros((0, dim), dtype=np.float32),
        title=f"{cfg.strategy}: queries, positives and selected negatives (PCA 1-2)",
    )
    margins = [n["d_qd"] - n["d_qp"] for r in rows for n in r["negatives"] if n["d_qd"] is not None]
    plots.plot_margin_hist(out / "plots/margin_hist.png", np.asarray(margins))
    return ["plots/pca.png", "plots/margin_hist.png"]


__all__ = ["run", "resolve_vectors", "check_split", "check_same_files", "MANIFEST_NAME"]
