"""`hnm train-reranker`: fine-tune a cross-encoder (or a bi-encoder) on mined hard negatives.

Reads a mine artifact (`rows-*.jsonl`: query_id, positive_id, negatives[]) with the corpus and queries it was
mined from, or an exported training file (sentence-transformers layouts), and trains with sentence-transformers'
trainers (`CrossEncoderTrainer` / `SentenceTransformerTrainer`) and the loss chosen in the config (see
`hnm_cli.training` for which examples each loss sees). Writes:

    <out>/model/         the final model: `CrossEncoder(path)` or `SentenceTransformer(path)` loads it
    <out>/checkpoints/   resumable trainer checkpoints (every `checkpoint_steps`), keyed by the run fingerprint
    <out>/manifest.json  resolved settings, seed, data fingerprint, loss curve, train time (written last)

A killed run resumes from its last complete checkpoint when rerun with the same fingerprint. Training queries
that appear in the evaluation split's qrels are refused (leakage guard) unless `allow_eval_overlap`.

Under `torchrun` / `accelerate launch` every rank runs this runner: rank 0 checks the inputs, decides and writes
(`_decide`, `_write`), the other ranks receive its decision and train beside it (`hnm_cli.training.distributed`).
The trainer itself is assembled in `hnm_cli.training.trainer`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hnm_cli.artifacts import mined as mined_artifact
from hnm_cli.artifacts.checkpoints import CHECKPOINT_DIR, prepare_checkpoints
from hnm_cli.artifacts.guards import check_mined_from, check_output_path, check_training_leakage
from hnm_cli.artifacts.manifest import (
    Manifest,
    artifact_input,
    begin_run,
    compute_fingerprint,
    file_input,
    output_entry,
    write_manifest,
)
from hnm_cli.artifacts.output_dir import output_lock, skip_if_up_to_date
from hnm_cli.choices import Loss, ModelKind
from hnm_cli.config import TrainRerankerConfig
from hnm_cli.encoding.devices import resolve_precision
from hnm_cli.encoding.trainable import resolve_base_model
from hnm_cli.errors import DataError, InputError
from hnm_cli.inputs import (
    DataPaths,
    iter_json_objects,
    read_corpus,
    read_queries,
    resolve_data,
    resolve_jsonl_files,
)
from hnm_cli.training.distributed import Launch, current_launch, join, once, rank_device
from hnm_cli.training.examples import ExampleStats, build_datasets, groups_from_records, groups_from_rows

STAGE = "train-reranker"
MODEL_DIR = "model"
log = logging.getLogger("hnm")


def _corpus_digests(paths: DataPaths) -> list[dict[str, Any]]:
    return [file_input(p, "corpus") for p in resolve_jsonl_files(paths.corpus, "corpus")] + [
        file_input(p, "queries") for p in resolve_jsonl_files(paths.queries, "queries")
    ]


def _model_tmp(out: Path) -> Path:
    return out / f".{MODEL_DIR}.{os.getpid()}.tmp"


@dataclass(frozen=True)
class _Job:
    """What rank 0 decided to train, handed to every rank: the examples and what to record."""

    target: str
    fingerprint: str
    params: dict[str, Any]
    inputs: list[dict[str, Any]]
    stats: dict[str, Any]  # example counts, leakage outcome, input layout
    columns: dict[str, dict[str, list[Any]]]
    started: float


# ---------------------------------------------------------------------------------------------
# The stage
# ---------------------------------------------------------------------------------------------


def run(
    mined: Path | None,
    out: Path,
    cfg: TrainRerankerConfig,
    *,
    train_file: Path | None = None,
    data: Path | None = None,
    corpus: Path | None = None,
    queries: Path | None = None,
    force: bool = False,
    progress: bool = True,
    verify: bool = False,
) -> Manifest:
    """Train a reranker on mined negatives (or an exported training file) and write the artifact.

    Under a launcher (torchrun, accelerate launch) call it on every rank with the same arguments: rank 0 checks,
    decides and writes, every rank trains its share, and every rank returns the same manifest.

    Args:
        mined: a mine artifact directory (needs corpus and queries: `data` or `corpus` + `queries`), or None
            with `train_file`.
        out: the artifact directory.
        cfg: resolved TrainRerankerConfig.
        train_file: an exported JSONL training file instead of `mined` (texts inline; no corpus needed).
        data: a BEIR folder (corpus, queries, qrels/<eval_split>.tsv for the leakage guard).
        corpus, queries: explicit files/folders (override `data`).
        force: retrain even if up to date (and discard checkpoints).
        progress: show the trainer's progress bar on stderr.

    Returns:
        The manifest (with `up_to_date` True when nothing ran).

    Raises:
        InputError, IncompleteArtifactError, ArtifactMismatchError, DataError, ConfigError, LeakageError; on the
        ranks other than 0 of a multi-process run, StoppedError when rank 0 failed.
    """
    from hnm_cli.training.trainer import load_base_model, train_model

    out = Path(out)
    # "auto" is settled first, so the fingerprint records what actually ran.
    cfg = dataclasses.replace(cfg.resolved(), precision=resolve_precision(cfg.precision, cfg.device))
    launch = current_launch()
    device = rank_device(cfg.device, launch)
    join(launch, device)
    progress = progress and launch.is_main  # one bar and one set of library notes, rank 0's
    with contextlib.ExitStack() as held:  # rank 0: the output lock and the temporary model folder
        job = once(launch, lambda: _decide(mined, out, cfg, train_file, data, corpus, queries, force, verify,
                                           launch, held))  # fmt: skip
        if isinstance(job, Manifest):
            return job
        from hnm_cli.quiet import libraries_quiet

        with libraries_quiet(not progress):
            model, head, device = load_base_model(cfg, job.target, device, launch)
            # Checkpoints of other settings go only once the model loaded, as a run that stops earlier leaves them.
            resume = once(launch, lambda: prepare_checkpoints(out / CHECKPOINT_DIR, job.fingerprint, fresh=force))
            trained = train_model(
                cfg, model, job.columns, head=head, device=device, checkpoints=out / CHECKPOINT_DIR, resume=resume,
                save_to=_model_tmp(out) if launch.is_main else None, launch=launch, progress=progress,
            )  # fmt: skip
        trained |= {"head": head, "base_model_path": job.target}
        return once(launch, lambda: _write(out, cfg, job, trained))


def _decide(
    mined: Path | None,
    out: Path,
    cfg: TrainRerankerConfig,
    train_file: Path | None,
    data: Path | None,
    corpus: Path | None,
    queries: Path | None,
    force: bool,
    verify: bool,
    launch: Launch,
    held: contextlib.ExitStack,
) -> Manifest | _Job:
    """Check the inputs and the leakage guard; the manifest when up to date, else (holding the output lock in
    `held`) the examples. Rank 0 only."""
    if (mined is None) == (train_file is None):
        raise InputError("give exactly one of --mined <mine artifact> or --train-file <exported JSONL>")
    target, identity = resolve_base_model(cfg.base_model, cfg.kind)
    mine: Manifest | None = None
    paths: DataPaths | None = None
    # The base model too: checkpoints and model/ written into (or around) the weights being loaded would corrupt
    # them for every later run. A hub id or a packaged model is no local path and cannot collide.
    base = Path(target) if Path(target).exists() else None
    check_output_path(out, [mined, train_file, data, corpus, queries, base])
    groups: list[Any] | None = None
    layout: str | None = None
    if mined is not None:
        mine = mined_artifact.require_mined(mined, deep=verify)
        paths = resolve_data(data, corpus, queries)
        rows = list(mined_artifact.iter_rows(mined, mine))  # schema-checked, each shard against its sha256
        if not rows:
            raise DataError(f"{mined}: no rows-*.jsonl rows (zero mined pairs)")
        data_inputs = [artifact_input(mine, "mined"), *_corpus_digests(paths)]
        check_mined_from(mine, data_inputs)
        train_ids = [str(r.get("query_id")) for _, r in rows]
        leak = check_training_leakage(
            cfg, mine=mine, train_query_ids=train_ids, train_query_texts=[], data=data, queries_path=paths.queries
        )
        if dropped := set(leak.get("dropped_query_ids", ())):
            rows = [(where, r) for where, r in rows if str(r.get("query_id")) not in dropped]
    else:
        assert train_file is not None
        if not Path(train_file).is_file():
            raise InputError(f"{train_file} does not exist (expected an exported training JSONL file)")
        records = [(f"{train_file}:{ln}", obj) for ln, obj in iter_json_objects(Path(train_file))]
        if not records:
            raise DataError(f"{train_file}: no training records (zero rows)")
        groups, layout = groups_from_records(records, cfg.negatives_per_positive)
        data_inputs = [file_input(Path(train_file), "train-file")]
        queries_path = queries if queries is not None else data
        leak = check_training_leakage(
            cfg,
            mine=None,
            train_query_ids=[],
            train_query_texts=[g.query for g in groups],
            data=data,
            queries_path=queries_path,
        )
    params = cfg.to_params() | {"input": "mined" if mined is not None else "train-file"}
    # The setting only changes the examples when some pair has no negative (and the loss can use it): left out
    # of the fingerprint otherwise, so fully covered artifacts trained before it existed stay up to date.
    bare = (
        sum(1 for _, r in rows if not r.get("negatives"))
        if mined is not None
        else sum(1 for g in groups or [] if not g.negatives)
    )
    if not (bare and cfg.kind == ModelKind.BI_ENCODER and cfg.loss == Loss.MNRL):
        params.pop("pairs_without_negative", None)
    if launch.distributed:
        # Not the same artifact as one process with their product (README, "Training on several GPUs"): recorded
        # in the fingerprint, so another number of ranks retrains instead of being "up to date". One process adds
        # nothing, so artifacts trained before multi-rank training existed stay up to date.
        params |= {"world_size": launch.world_size, "effective_batch_size": cfg.batch_size * launch.world_size}
    inputs = [*data_inputs, {"role": "base-model", "path": cfg.base_model, "sha256": identity}]
    fingerprint = compute_fingerprint(STAGE, params, inputs)
    if (done := skip_if_up_to_date(out, STAGE, fingerprint, force=force, deep=verify)) is not None:
        return done
    held.enter_context(output_lock(out))
    held.callback(shutil.rmtree, _model_tmp(out), ignore_errors=True)
    started = time.time()
    if mined is not None:
        assert paths is not None
        corpus_rec, query_rec = read_corpus(paths.corpus), read_queries(paths.queries)
        docs = {d: corpus_rec[d].full_text for d in corpus_rec.ids}
        qtexts = {q: query_rec[q].text for q in query_rec.ids}
        groups = groups_from_rows(rows, qtexts, docs, cfg.negatives_per_positive)
        layout = "mined"
    assert groups is not None
    columns, ex_stats = _examples(cfg, groups, str(mined or train_file), launch)
    stats = {**ex_stats.to_json(), **leak, "input_layout": layout}
    return _Job(target, fingerprint, params, inputs, stats, columns, started)


def _examples(
    cfg: TrainRerankerConfig, groups: list[Any], source: str, launch: Launch
) -> tuple[dict[str, dict[str, list[Any]]], ExampleStats]:
    """Each dataset's columns for the configured loss, refused when they give nothing to train on."""
    from hnm_cli.training.trainer import check_batches

    columns, ex_stats = build_datasets(
        groups,
        cfg.kind,
        cfg.loss,
        cfg.negatives_per_positive,
        pairs_without_negative=cfg.pairs_without_negative,
        teacher=cfg.teacher_weight > 0,
    )
    if ex_stats.examples == 0:
        raise DataError(
            f"{source}: no training examples for loss '{cfg.loss}': all {ex_stats.pairs} pairs "
            "have no negative (mine with a fallback, or use --loss bce)"
        )
    check_batches([len(next(iter(c.values()))) for c in columns.values()], cfg, launch, source)
    return columns, ex_stats


def _write(out: Path, cfg: TrainRerankerConfig, job: _Job, trained: dict[str, Any]) -> Manifest:
    """Only now replace the artifact's model and manifest (rank 0)."""
    model_dir = out / MODEL_DIR
    begin_run(out)  # the old manifest goes only now: a failure up to here left the artifact as it was
    shutil.rmtree(model_dir, ignore_errors=True)
    os.replace(_model_tmp(out), model_dir)
    written = sorted(p.relative_to(out).as_posix() for p in model_dir.rglob("*") if p.is_file())
    outputs = [output_entry(out, rel) for rel in written]
    stats = {**job.stats, **trained}
    manifest = write_manifest(
        out,
        stage=STAGE,
        fingerprint=job.fingerprint,
        params=job.params,
        inputs=job.inputs,
        outputs=outputs,
        stats=stats,
        started=job.started,
    )
    curve = trained["loss_curve"]
    first, last = (curve[0][1], curve[-1][1]) if curve else (float("nan"), float("nan"))
    log.info(
        "train-reranker: %s %s, %d examples from %d pairs (%d without a negative skipped, %d in-batch only), "
        "%d steps in %.1f s, loss %.4f -> %.4f",
        cfg.kind,
        cfg.loss,
        stats["examples"],
        stats["pairs"],
        stats["pairs_skipped_no_negative"],
        stats["pairs_in_batch_only"],
        trained["global_step"],
        trained["train_seconds"],
        first,
        last,
    )
    return manifest
