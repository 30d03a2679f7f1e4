"""`hnm eval`: rerank one fixed first-stage candidate list with several models and compare them like an IR paper.

Layout of the artifact (`<out>/`):
  * `first-stage/` its own artifact (manifest stage `eval-first-stage`): `candidates.jsonl`, one line per
    evaluated query `{"query_id", "candidates": [[doc_id, score], ...]}` (top_k, best first). It is built once
    and reused while its inputs are unchanged, so every reranker, in this run or a later one, is scored on
    the same lists; a positive that is not in the list is a miss for every reranker alike.
  * `per-query.jsonl` one line per (run, query): `{"run", "query_id", "<metric>": value, ...}`; for an arm
    with several seeds, the per-query mean over its seeds (what the significance test uses).
  * `report.json` the comparison (what `hnm eval` prints on stdout), `report.md` the same as Markdown tables.

Runs: `first-stage` (the candidate scores themselves), one per `--model` name (several sources under one
name are seeds of one arm: mean +- sample std over seeds), and with `fuse = "rrf"` one `<name>+rrf` per arm
(reciprocal rank fusion of the first stage and each seed's reranking).
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson

from hnm_cli.artifacts.files import atomic_write_bytes, iter_jsonl, remove_stale_files, write_jsonl
from hnm_cli.artifacts.manifest import (
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
from hnm_cli.config import EvalConfig
from hnm_cli.errors import ArtifactMismatchError, ConfigError, DataError, InputError, LeakageError
from hnm_cli.inputs import (
    DataPaths,
    Qrels,
    Records,
    read_corpus,
    read_qrels,
    read_queries,
    resolve_jsonl_files,
    resolve_qrels_file,
)
from hnm_cli.metrics import DEFAULT_METRICS, PRIMARY_METRIC, mean_metrics, per_query_metrics, ranked
from hnm_cli.rerank import RerankerRef, detect_model, run_name

log = logging.getLogger("hnm")

STAGE = "eval"
FIRST_STAGE = "eval-first-stage"
FIRST_STAGE_DIR = "first-stage"
FIRST_STAGE_RUN = "first-stage"
CANDIDATES = "candidates.jsonl"
REPORT_JSON = "report.json"
REPORT_MD = "report.md"
PER_QUERY = "per-query.jsonl"
VECTOR_STAGES = ("reduce", "embed-model")
# bm25.BM25Index defaults, recorded in the first stage's params so a change there shows in the fingerprint.
BM25_PARAMS = {"k1": 1.5, "b": 0.75, "method": "lucene", "stopwords": "english", "lower": True}
METRIC_LABELS = {"mrr": "MRR", "ndcg": "nDCG", "map": "MAP", "recall": "Recall", "precision": "P"}

Candidates = dict[str, list[tuple[str, float]]]


# ---------------------------------------------------------------------------------------------
# Models: names, arms, identities, leakage
# ---------------------------------------------------------------------------------------------


def parse_model_option(value: str) -> tuple[str, str]:
    """Split one `--model` value into (run name, source): `name=source`, or a source whose name is derived.

    Raises:
        ConfigError: an empty name or source.
    """
    value = value.strip()
    name, sep, source = value.partition("=")
    if sep and "/" not in name and not name.startswith(("pkg:", "hash:")):
        name, source = name.strip(), source.strip()
        if not name or not source:
            raise ConfigError(f"--model {value!r}: expected NAME=PATH or PATH")
        return name, source
    if not value:
        raise ConfigError("--model: empty value")
    return run_name(value), value


def _arms(refs: Sequence[RerankerRef]) -> dict[str, list[RerankerRef]]:
    arms: dict[str, list[RerankerRef]] = {}
    for ref in refs:
        if ref.name == FIRST_STAGE_RUN or ref.name.endswith("+rrf"):
            raise ConfigError(f"--model {ref.name}={ref.source}: the run name '{ref.name}' is reserved")
        seeds = arms.setdefault(ref.name, [])
        if any(r.source == ref.source for r in seeds):
            raise ConfigError(f"--model {ref.name}={ref.source} is given twice (seeds of one arm must differ)")
        seeds.append(ref)
    return arms


def _model_identity(ref: RerankerRef) -> str:
    """What identifies the weights in the fingerprint (cheap: big files are stat-ed, not hashed)."""
    from hnm_cli.config import ModelSpec
    from hnm_cli.models import folder_identity, resolve_model

    if ref.artifact is not None:
        return ref.artifact.digest
    if ref.path is not None:
        return folder_identity(ref.path)
    return resolve_model(ModelSpec(name=ref.name, source=ref.source)).identity


def _mine_manifest(artifact: Manifest) -> Manifest | None:
    for entry in artifact.inputs:
        if entry.get("stage") == "mine" or entry.get("role") == "mined":
            return load_manifest(Path(entry["path"]))
    return None


def check_leakage(refs: Sequence[RerankerRef], split: str, eval_qids: set[str]) -> int:
    """Refuse a train-reranker artifact trained on the evaluation split or on any evaluated query.

    Two checks, from the artifact's upstream mine manifest: its split name, and the query ids of its rows.
    A model given as a plain folder cannot be checked (that is the user's explicit choice).

    Returns:
        The number of artifacts whose training data could not be located (logged as a warning).

    Raises:
        LeakageError: the model was trained on the evaluation split or on evaluated queries.
    """
    unchecked = 0
    for ref in refs:
        if ref.artifact is None:
            continue
        # train-reranker records its own overlap check (it can be forced); an overlap with this split is final.
        stats = ref.artifact.stats
        if stats.get("eval_split") == split and stats.get("eval_overlap"):
            raise LeakageError(
                f"--model {ref.name}: {ref.source} was trained with {stats['eval_overlap']} queries of the "
                f"'{split}' split (train-reranker --allow-eval-overlap)",
                hint="evaluate on a split the model never saw (--split), or retrain without the overlap",
            )
        mine = _mine_manifest(ref.artifact)
        if mine is None:
            unchecked += 1
            log.warning(
                "eval: cannot check %s for leakage (its mine artifact is not readable); "
                "make sure it was not trained on '%s' queries",
                ref.source,
                split,
            )
            continue
        if mine.params.get("split") == split:
            raise LeakageError(
                f"--model {ref.name}: {ref.source} was trained on the '{split}' split, the split being evaluated",
                hint="evaluate on a split the model never saw (--split), or train on another split",
            )
        seen = {row.get("query_id") for shard in sorted(mine.path.glob("rows-*.jsonl")) for row in iter_jsonl(shard)}
        overlap = sorted(q for q in seen if q in eval_qids)
        if overlap:
            raise LeakageError(
                f"--model {ref.name}: {ref.source} was trained on {len(overlap)} of the {len(eval_qids)} "
                f"evaluated queries (e.g. '{overlap[0]}')",
                hint="mine and train on a split disjoint from the evaluation split",
            )
    return unchecked


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


def _bm25_candidates(corpus: Records, queries: Records, qids: list[str], top_k: int) -> Candidates:
    from hnm_cli.bm25 import BM25Index

    doc_ids = corpus.ids
    index = BM25Index([corpus[d].full_text for d in doc_ids], **BM25_PARAMS)  # type: ignore[arg-type]
    scores, idx = index.search([queries[q].text for q in qids], top_k)
    out: Candidates = {}
    for qi, qid in enumerate(qids):
        # bm25 pads with -1 when fewer documents match; a zero score is no match at all, so it is not a candidate.
        out[qid] = [(doc_ids[i], float(s)) for i, s in zip(idx[qi], scores[qi], strict=True) if i >= 0 and s > 0]
    return out


def _dense_candidates(vec_dir: Path, corpus: Records, qids: list[str], top_k: int) -> Candidates:
    from hnm_cli.artifacts.vectors import read_ids
    from hnm_cli.search import VectorSource, exact_topk

    doc_ids = read_ids(vec_dir / "corpus")
    for row, doc in enumerate(doc_ids):
        if doc not in corpus:
            raise ArtifactMismatchError(
                f"{vec_dir / 'corpus'}: row {row}: doc id '{doc}' is not in the corpus",
                hint="give the corpus the vectors were made from",
            )
    query_row = {q: i for i, q in enumerate(read_ids(vec_dir / "queries"))}
    missing = [q for q in qids if q not in query_row]
    if missing:
        raise ArtifactMismatchError(
            f"{vec_dir / 'queries'}: no vector for {len(missing)} of {len(qids)} evaluated queries "
            f"(e.g. '{missing[0]}')",
            hint="embed the queries file that holds the evaluation split",
        )
    q_vecs = VectorSource.from_dir(vec_dir / "queries").take([query_row[q] for q in qids])
    scores, idx = exact_topk(q_vecs, VectorSource.from_dir(vec_dir / "corpus"), top_k)
    return {
        qid: [(doc_ids[i], float(s)) for i, s in zip(idx[qi], scores[qi], strict=True) if i >= 0]
        for qi, qid in enumerate(qids)
    }


def read_run_file(path: Path, corpus: Records, qids: set[str], top_k: int) -> Candidates:
    """Candidates from a user's run: TREC (`qid Q0 doc rank score tag`) or hnm JSONL (`query_id`, `candidates`).

    Only queries in `qids` are kept; each keeps its `top_k` best documents (score desc, then doc id).

    Raises:
        DataError: a malformed line, or a doc id that is not in the corpus (`file:line: ...`).
    """
    path = Path(path)
    scores: dict[str, dict[str, float]] = {}
    with open(path, "rb") as fh:
        head = fh.read(64).lstrip()
    if head.startswith(b"{"):
        for lineno, obj in _iter_objects(path):
            qid, cands = str(obj.get("query_id", "")), obj.get("candidates")
            if not isinstance(cands, list):
                raise DataError(f"{path}:{lineno}: field 'candidates': expected a list of [doc_id, score]")
            for pair in cands:
                if not (isinstance(pair, list) and len(pair) == 2 and isinstance(pair[1], int | float)):
                    raise DataError(f"{path}:{lineno}: field 'candidates': expected [doc_id, score], got {pair!r}")
                _add_hit(scores, qid, str(pair[0]), float(pair[1]), corpus, qids, f"{path}:{lineno}")
    else:
        with open(path, encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, 1):
                cols = line.split()
                if not cols:
                    continue
                if len(cols) != 6:
                    raise DataError(
                        f"{path}:{lineno}: expected 6 columns 'qid Q0 docid rank score tag', got {len(cols)}"
                    )
                try:
                    score = float(cols[4])
                except ValueError as err:
                    raise DataError(f"{path}:{lineno}: field 'score': not a number: '{cols[4]}'") from err
                _add_hit(scores, cols[0], cols[2], score, corpus, qids, f"{path}:{lineno}")
    return {q: [(d, s[d]) for d in ranked(s)[:top_k]] for q, s in scores.items()}


def _iter_objects(path: Path) -> Any:
    from hnm_cli.inputs import iter_json_objects

    return iter_json_objects(path)


def _add_hit(
    scores: dict[str, dict[str, float]], qid: str, doc: str, score: float, corpus: Records, qids: set[str], where: str
) -> None:
    if doc not in corpus:
        raise DataError(f"{where}: doc id '{doc}' is not in the corpus")
    if qid in qids:
        scores.setdefault(qid, {})[doc] = score


def _read_candidates(path: Path, corpus: Records) -> Candidates:
    out: Candidates = {}
    for lineno, row in enumerate(iter_jsonl(path), 1):
        for doc, _score in row["candidates"]:
            if doc not in corpus:
                raise DataError(f"{path}:{lineno}: field 'candidates': doc id '{doc}' is not in the corpus")
        out[row["query_id"]] = [(d, float(s)) for d, s in row["candidates"]]
    return out


def build_first_stage(
    out: Path,
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
    """Build (or reuse) the first-stage artifact `out` and return its candidates and manifest.

    Args:
        out: the `first-stage/` directory.
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
    if cfg.first_stage == "bm25":
        params["bm25"] = BM25_PARAMS
    elif cfg.first_stage == "dense":
        assert vectors is not None
        inputs.append(artifact_input(vectors, "vectors"))
    else:
        assert run_file is not None
        inputs.append(file_input(run_file, "run"))
    fingerprint = compute_fingerprint(FIRST_STAGE, params, inputs)
    if (done := skip_if_up_to_date(out, FIRST_STAGE, fingerprint, force=force)) is not None:
        return _read_candidates(out / CANDIDATES, corpus), done
    started = begin_run(out)
    # One extra candidate when the query's own id will be dropped, so every query still gets top_k (BEIR's way).
    depth = cfg.top_k + 1 if cfg.ignore_identical_ids else cfg.top_k
    if cfg.first_stage == "bm25":
        candidates = _bm25_candidates(corpus, queries, qids, depth)
    elif cfg.first_stage == "dense":
        assert vectors is not None
        candidates = _dense_candidates(vectors.path, corpus, qids, depth)
    else:
        assert run_file is not None
        candidates = read_run_file(run_file, corpus, set(qids), depth)
    identical_dropped = 0
    if cfg.ignore_identical_ids:
        for q, cands in candidates.items():
            kept = [(d, s) for d, s in cands if d != q]
            identical_dropped += len(cands) - len(kept)
            candidates[q] = kept[: cfg.top_k]
    rows = [{"query_id": q, "candidates": [[d, s] for d, s in candidates.get(q, [])]} for q in qids]
    write_jsonl(out / CANDIDATES, rows)
    lengths = [len(r["candidates"]) for r in rows]
    stats = {
        "queries": len(rows),
        "candidates": sum(lengths),
        "queries_short": sum(1 for n in lengths if n < cfg.top_k),
        "queries_empty": sum(1 for n in lengths if n == 0),
    }
    if cfg.ignore_identical_ids:
        stats["identical_ids_dropped"] = identical_dropped
    manifest = write_manifest(
        out,
        stage=FIRST_STAGE,
        fingerprint=fingerprint,
        params=params,
        inputs=inputs,
        outputs=[output_entry(out, CANDIDATES, rows=len(rows))],
        stats=stats,
        started=started,
    )
    log.info(
        "eval: first stage %s top-%d for %d queries (%d with fewer candidates) in %.1f s",
        cfg.first_stage,
        cfg.top_k,
        len(rows),
        stats["queries_short"],
        manifest.stats["seconds"],
    )
    return {q: candidates.get(q, []) for q in qids}, manifest


# ---------------------------------------------------------------------------------------------
# Comparison (pure: per-query values in, report parts out)
# ---------------------------------------------------------------------------------------------


def metric_label(key: str) -> str:
    """Paper-style label of a metric key: `ndcg@10` -> `nDCG@10`."""
    name, _, cut = key.partition("@")
    return f"{METRIC_LABELS.get(name, name)}@{cut}"


def arm_per_query(seed_values: Sequence[Mapping[str, Mapping[str, float]]], metrics: Sequence[str]) -> dict:
    """Per-query mean over seeds: {query_id: {metric: value}} (queries of the first seed, same in all)."""
    qids = list(seed_values[0])
    return {q: {m: sum(s[q][m] for s in seed_values) / len(seed_values) for m in metrics} for q in qids}


def compare(
    arm: Mapping[str, Mapping[str, float]],
    base: Mapping[str, Mapping[str, float]],
    metrics: Sequence[str],
    *,
    method: str,
    trials: int,
    seed: int,
) -> dict[str, dict[str, float | None]]:
    """Absolute and relative deltas of the means, and a paired test p-value per metric, arm vs baseline."""
    from hnm_cli.significance import paired_test

    qids = sorted(base)
    out: dict[str, dict[str, float | None]] = {"delta": {}, "relative_delta": {}, "p_value": {}}
    for m in metrics:
        a = [arm[q][m] for q in qids]
        b = [base[q][m] for q in qids]
        mean_a, mean_b = sum(a) / len(a) if a else 0.0, sum(b) / len(b) if b else 0.0
        out["delta"][m] = mean_a - mean_b
        out["relative_delta"][m] = (mean_a - mean_b) / mean_b if mean_b > 0 else None
        out["p_value"][m] = paired_test(a, b, method=method, trials=trials, seed=seed)
    return out


def length_groups(qrels: Qrels, corpus: Records, split_tokens: int) -> dict[str, list[str]]:
    """Queries whose relevant documents all have fewer than `split_tokens` whitespace tokens ("short"),
    and the rest ("long"). Token counts are over `Doc.full_text`."""
    groups: dict[str, list[str]] = {"short": [], "long": []}
    for qid in sorted(qrels):
        pos = [d for d, r in qrels[qid].items() if r > 0]
        longest = max(len(corpus[d].full_text.split()) for d in pos)
        groups["short" if longest < split_tokens else "long"].append(qid)
    return groups


def _fmt_delta(delta: float, rel: float | None, p: float) -> str:
    rel_txt = f", {rel * 100:+.1f}%" if rel is not None else ""
    return f"{delta:+.3f}{rel_txt}, p={p:.3g}"


def render_markdown(report: Mapping[str, Any]) -> str:
    """`report.md`: a results table (mean ± std, † where p < 0.05 vs the baseline) and a deltas table."""
    metrics = report["metrics"]
    fs = report["first_stage"]
    base = report["baseline"]
    recall_key = f"recall@{fs['top_k']}"
    lines = [
        f"# hnm eval: split '{report['split']}', {report['queries']} queries",
        "",
        f"First stage: {fs['method']} top-{fs['top_k']}, Recall@{fs['top_k']} = {fs[recall_key]:.4f} "
        "(the ceiling of every reranker: a positive outside the list is a miss).",
        "",
        "| run | seeds | " + " | ".join(metric_label(m) for m in metrics) + " |",
        "|---|---:|" + "---:|" * len(metrics),
    ]
    for name, run in report["runs"].items():
        cells = []
        for m in metrics:
            cell = f"{run['mean'][m]:.4f}"
            if run["seeds"] > 1:
                cell += f" ± {run['std'][m]:.4f}"
            p = run.get("p_value", {}).get(m)
            if p is not None and p < 0.05:
                cell += " †"
            cells.append(cell)
        label = f"{name} (baseline)" if name == base else name
        lines.append(f"| {label} | {run['seeds']} | " + " | ".join(cells) + " |")
    sig = report["significance"]
    lines += [
        "",
        f"† p < 0.05 against `{base}` (paired {sig['test']} test, {sig['trials']} trials, seed {sig['seed']}, "
        "per-query values; an arm with several seeds uses its per-query mean). ± is the sample std over seeds.",
    ]
    others = [(n, r) for n, r in report["runs"].items() if n != base]
    if others:
        lines += [
            "",
            f"## Difference vs `{base}` (absolute, relative, p)",
            "",
            "| run | " + " | ".join(metric_label(m) for m in metrics) + " |",
            "|---|" + "---:|" * len(metrics),
        ]
        for name, run in others:
            cells = [_fmt_delta(run["delta"][m], run["relative_delta"][m], run["p_value"][m]) for m in metrics]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    if report.get("by_length"):
        bl = report["by_length"]
        lines += ["", f"## By document length (split at {bl['split_tokens']} whitespace tokens)", ""]
        lines += ["| run | group | queries | " + " | ".join(metric_label(m) for m in metrics) + " |"]
        lines += ["|---|---|---:|" + "---:|" * len(metrics)]
        for name in report["runs"]:
            for group, data in bl["groups"].items():
                values = data["runs"][name]
                cells = ["–" if values[m] is None else f"{values[m]:.4f}" for m in metrics]
                lines.append(f"| {name} | {group} | {data['queries']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# Runner
# ---------------------------------------------------------------------------------------------


def _sample_std(values: Sequence[float]) -> float:
    return statistics.stdev(values) if len(values) > 1 else 0.0


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
    if data_paths.qrels is None:
        raise InputError("hnm eval needs qrels: give --data <BEIR folder> or --qrels")
    qrels_file = resolve_qrels_file(data_paths.qrels, cfg.split)
    corpus_inputs = [file_input(f, "corpus") for f in resolve_jsonl_files(data_paths.corpus, "corpus")]
    query_inputs = [file_input(f, "queries") for f in resolve_jsonl_files(data_paths.queries, "queries")]
    base_inputs = [*corpus_inputs, *query_inputs, file_input(qrels_file, "qrels")]

    vec_manifest = _first_stage_source(cfg, vectors, run_file, corpus_inputs)
    refs = [detect_model(name, source) for name, source in models]
    arms = _arms(refs)
    run_names = [FIRST_STAGE_RUN, *arms, *([f"{a}+rrf" for a in arms] if cfg.fuse == "rrf" else [])]
    if cfg.baseline not in run_names:
        raise ConfigError(f"--baseline '{cfg.baseline}' is not a run of this eval (runs: {', '.join(run_names)})")
    # A mine/train artifact that names this split is refused before anything is read or loaded.
    for ref in refs:
        if ref.artifact is not None and (m := _mine_manifest(ref.artifact)) and m.params.get("split") == cfg.split:
            check_leakage([ref], cfg.split, set())

    inputs = list(base_inputs)
    if vec_manifest is not None:
        inputs.append(artifact_input(vec_manifest, "vectors"))
    if run_file is not None and cfg.first_stage == "run":
        inputs.append(file_input(run_file, "run"))
    params = cfg.to_params() | {
        "metrics": list(DEFAULT_METRICS),
        "models": [{"name": r.name, "source": r.source, "kind": r.kind, "identity": _model_identity(r)} for r in refs],
    }
    fingerprint = compute_fingerprint(STAGE, params, inputs)
    if (done := skip_if_up_to_date(out, STAGE, fingerprint, force=force)) is not None:
        return done
    started = begin_run(out)

    corpus = read_corpus(data_paths.corpus)
    queries = read_queries(data_paths.queries)
    qrels = read_qrels(qrels_file, query_ids=queries, doc_ids=corpus)
    judged = {q: dict(d) for q, d in qrels.items() if any(r > 0 for r in d.values())}
    skipped = len(qrels) - len(judged)
    if not judged:
        raise DataError(f"{qrels_file}: no query has a relevant document (relevance > 0)")
    qids = sorted(judged)
    check_leakage(refs, cfg.split, set(qids))

    candidates, fs_manifest = build_first_stage(
        out / FIRST_STAGE_DIR,
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
    seed_runs: dict[str, list[tuple[RerankerRef | None, dict[str, dict[str, float]], float]]] = {
        FIRST_STAGE_RUN: [(None, fs_run, 0.0)]
    }
    cand_ids = {q: [d for d, _ in c] for q, c in candidates.items()}
    q_text = {q: queries[q].text for q in qids}
    d_text = {d: corpus[d].full_text for ds in cand_ids.values() for d in ds}
    pairs = sum(len(v) for v in cand_ids.values())
    for name, seeds in arms.items():
        for ref in seeds:
            from hnm_cli.rerank import rerank

            log.info("eval: scoring %s (%s, %s) on %d pairs", name, ref.kind, ref.source, pairs)
            t0 = time.time()
            scored = rerank(
                ref,
                cand_ids,
                q_text,
                d_text,
                batch_size=cfg.batch_size,
                max_length=cfg.max_length,
                device=cfg.device,
                precision=cfg.precision,
                progress=progress,
            )
            seed_runs.setdefault(name, []).append((ref, scored, round(time.time() - t0, 3)))
    if cfg.fuse == "rrf":
        from hnm_cli.rerank import rrf

        for name in arms:
            seed_runs[f"{name}+rrf"] = [
                (ref, rrf([fs_run, scored], k=cfg.rrf_k), secs) for ref, scored, secs in seed_runs[name]
            ]

    report = _build_report(cfg, seed_runs, judged, corpus, metrics, fs_manifest, skipped, recall_key)
    per_query_rows = [
        {"run": name, "query_id": q, **values}
        for name, pq in report.pop("_per_query").items()
        for q, values in pq.items()
    ]
    write_jsonl(out / PER_QUERY, per_query_rows)
    # Not atomic_write_json: that sorts keys, and the order of runs and metrics is part of the report.
    atomic_write_bytes(out / REPORT_JSON, orjson.dumps(report, option=orjson.OPT_INDENT_2) + b"\n")
    atomic_write_bytes(out / REPORT_MD, render_markdown(report).encode("utf-8"))
    written = [REPORT_JSON, REPORT_MD, PER_QUERY]
    remove_stale_files(out, keep=written, patterns=["*.jsonl", "*.md", "report.json"])
    outputs = [output_entry(out, rel) for rel in written]
    outputs.append(output_entry(out, f"{FIRST_STAGE_DIR}/{CANDIDATES}"))
    primary = {name: r["mean"][PRIMARY_METRIC] for name, r in report["runs"].items()}
    stats = {
        "queries": len(qids),
        "skipped_queries": skipped,
        "runs": len(report["runs"]),
        f"first_stage_{recall_key}": report["first_stage"][recall_key],
        PRIMARY_METRIC: primary,
    }
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
    log.info(
        "eval: %d queries, first stage %s top-%d (%s %.4f); %s: %s",
        len(qids),
        cfg.first_stage,
        cfg.top_k,
        recall_key,
        report["first_stage"][recall_key],
        PRIMARY_METRIC,
        ", ".join(f"{n} {v:.4f}" for n, v in primary.items()),
    )
    return manifest


def _first_stage_source(
    cfg: EvalConfig, vectors: Path | None, run_file: Path | None, corpus_inputs: list[dict[str, Any]]
) -> Manifest | None:
    """Check the first stage's inputs; return the vectors manifest for a dense first stage."""
    if cfg.first_stage == "dense":
        if vectors is None:
            raise InputError("--first-stage dense needs --vectors DIR (a reduce artifact or an embed model folder)")
        fix = f"hnm embed ... --out EMBED and give --vectors EMBED/<model>, or hnm reduce ... --out {vectors}"
        manifest = require_artifact(vectors, VECTOR_STAGES, fix=fix)
        _check_vectors_corpus(manifest, corpus_inputs)
        return manifest
    if vectors is not None:
        raise InputError(f"--vectors is only used with --first-stage dense (first stage is {cfg.first_stage})")
    if cfg.first_stage == "run":
        if run_file is None:
            raise InputError("--first-stage run needs --run FILE (TREC or JSONL candidates)")
        if not Path(run_file).is_file():
            raise InputError(f"--run {run_file} does not exist")
    elif run_file is not None:
        raise InputError(f"--run is only used with --first-stage run (first stage is {cfg.first_stage})")
    return None


def _build_report(
    cfg: EvalConfig,
    seed_runs: Mapping[str, list[tuple[RerankerRef | None, dict[str, dict[str, float]], float]]],
    judged: Qrels,
    corpus: Records,
    metrics: list[str],
    fs_manifest: Manifest,
    skipped: int,
    recall_key: str,
) -> dict[str, Any]:
    """report.json's content (plus `_per_query`, the arm-level per-query values, popped by the caller)."""
    keys = [*metrics, *([recall_key] if recall_key not in metrics else [])]
    arm_pq: dict[str, dict[str, dict[str, float]]] = {}
    runs: dict[str, dict[str, Any]] = {}
    for name, seeds in seed_runs.items():
        values = [per_query_metrics(judged, scored, metrics) for _, scored, _ in seeds]
        arm_pq[name] = arm_per_query(values, metrics)
        seed_means = [mean_metrics(v, metrics) for v in values]
        kind = "first-stage" if seeds[0][0] is None else seeds[0][0].kind  # type: ignore[union-attr]
        runs[name] = {
            "kind": kind + ("+rrf" if name.endswith("+rrf") else ""),
            "seeds": len(seeds),
            "mean": {m: statistics.fmean(s[m] for s in seed_means) for m in metrics},
            "std": {m: _sample_std([s[m] for s in seed_means]) for m in metrics},
            "per_seed": [
                {"source": ref.source if ref else None, "mean": s, "seconds": secs}
                for (ref, _, secs), s in zip(seeds, seed_means, strict=True)
            ],
        }
    fs_recall = mean_metrics(per_query_metrics(judged, seed_runs[FIRST_STAGE_RUN][0][1], keys), keys)[recall_key]
    base = arm_pq[cfg.baseline]
    for name, entry in runs.items():
        if name == cfg.baseline:
            continue
        entry.update(compare(arm_pq[name], base, metrics, method=cfg.significance, trials=cfg.trials, seed=cfg.seed))
    report: dict[str, Any] = {
        "split": cfg.split,
        "queries": len(judged),
        "skipped_queries": skipped,
        "first_stage": {
            "method": cfg.first_stage,
            "top_k": cfg.top_k,
            recall_key: fs_recall,
            "queries_short": fs_manifest.stats.get("queries_short"),
            "seconds": fs_manifest.stats.get("seconds"),
        },
        "metrics": metrics,
        "primary_metric": PRIMARY_METRIC,
        "baseline": cfg.baseline,
        "significance": {"test": cfg.significance, "trials": cfg.trials, "seed": cfg.seed},
        "runs": runs,
    }
    if cfg.by_length is not None:
        groups = length_groups(judged, corpus, cfg.by_length)
        report["by_length"] = {
            "split_tokens": cfg.by_length,
            "rule": "short: every relevant document has fewer whitespace tokens than split_tokens",
            "groups": {
                g: {
                    "queries": len(ids),
                    # An empty group has no mean (null), not a mean of 0.
                    "runs": {
                        name: mean_metrics({q: pq[q] for q in ids}, metrics) if ids else dict.fromkeys(metrics)
                        for name, pq in arm_pq.items()
                    },
                }
                for g, ids in groups.items()
            },
        }
    report["_per_query"] = arm_pq
    return report


def report_to_tsv(report: Mapping[str, Any]) -> str:
    """`run<TAB>measure<TAB>value` lines (ir_measures style, plus the run column) for every run's means."""
    lines = [f"{name}\t{m}\t{run['mean'][m]:.6f}" for name, run in report["runs"].items() for m in report["metrics"]]
    return "\n".join(lines)


def load_report(manifest: Manifest) -> dict[str, Any]:
    """The report.json of an eval artifact."""
    data: dict[str, Any] = orjson.loads((manifest.path / REPORT_JSON).read_bytes())
    return data
