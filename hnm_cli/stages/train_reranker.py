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
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import shutil
import time
from pathlib import Path
from typing import Any

from hnm_cli.artifacts import mined as mined_artifact
from hnm_cli.artifacts.guards import check_mined_from, check_output_path, check_training_leakage
from hnm_cli.artifacts.manifest import (
    Manifest,
    artifact_input,
    begin_run,
    compute_fingerprint,
    file_input,
    output_entry,
    output_lock,
    skip_if_up_to_date,
    write_manifest,
)
from hnm_cli.choices import Loss, ModelKind, Precision
from hnm_cli.config import TrainRerankerConfig
from hnm_cli.encoding.devices import resolve_precision
from hnm_cli.encoding.trainable import load_bi_encoder, load_cross_encoder, resolve_base_model, short_error
from hnm_cli.errors import DataError, InputError
from hnm_cli.fileio import atomic_write_bytes
from hnm_cli.inputs import (
    DataPaths,
    iter_json_objects,
    read_corpus,
    read_queries,
    resolve_data,
    resolve_jsonl_files,
)
from hnm_cli.training.examples import build_datasets, groups_from_records, groups_from_rows

STAGE = "train-reranker"
MODEL_DIR = "model"
CHECKPOINT_DIR = "checkpoints"
_FINGERPRINT_FILE = "fingerprint.txt"
log = logging.getLogger("hnm")


def _corpus_digests(paths: DataPaths) -> list[dict[str, Any]]:
    return [file_input(p, "corpus") for p in resolve_jsonl_files(paths.corpus, "corpus")] + [
        file_input(p, "queries") for p in resolve_jsonl_files(paths.queries, "queries")
    ]


# ---------------------------------------------------------------------------------------------
# Checkpoints
# ---------------------------------------------------------------------------------------------


def prepare_checkpoints(directory: Path, fingerprint: str, *, fresh: bool) -> Path | None:
    """Make `directory` hold checkpoints of this fingerprint only; return the last complete one, if any.

    Checkpoints of another fingerprint (other data or settings) are deleted, as are all of them when `fresh`.
    A checkpoint is complete when its `trainer_state.json` exists (the trainer writes it last) and every file the
    trainer will load on resume is readable (`_unreadable`). One that is not is deleted with one warning line
    naming it and what happens instead (an older checkpoint, or step 0): never a traceback, never silent.
    """
    marker = directory / _FINGERPRINT_FILE
    if directory.is_file():
        directory.unlink()  # our own folder's name, taken by a stray file
    if directory.exists():
        old = _read_marker(marker)
        if fresh or old != fingerprint:
            if (n := sum(1 for _ in directory.glob("checkpoint-*"))) and not fresh:
                # Another run's checkpoints are expected to go (info); an unreadable marker is damage (warning).
                level = logging.INFO if old else logging.WARNING
                why = "of a run with other data or settings" if old else f"without a readable {_FINGERPRINT_FILE}"
                log.log(level, "train-reranker: discarding %d checkpoint(s) %s in %s; training from the start",
                        n, why, directory)  # fmt: skip
            shutil.rmtree(directory)
    directory.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(marker, fingerprint.encode() + b"\n")
    candidates = sorted(
        (p for p in directory.glob("checkpoint-*") if p.name.split("-", 1)[1].isdigit()),
        key=_checkpoint_step,
        reverse=True,
    )
    skipped: list[tuple[Path, str]] = []
    chosen = None
    for candidate in candidates:
        problem = _unreadable(candidate)
        if problem is None:
            chosen = candidate
            break
        # A checkpoint torn by a kill (half a trainer_state.json, missing weights) would make every rerun fail;
        # the one before it, or a fresh start, loses a little work instead of all of it. Deleted, so the trainer
        # can save a new checkpoint under its name.
        skipped.append((candidate, problem))
        if candidate.is_dir():
            shutil.rmtree(candidate, ignore_errors=True)
        else:
            candidate.unlink(missing_ok=True)
    then = f"resuming from {chosen.name}" if chosen is not None else "training from the start"
    for candidate, problem in skipped:
        log.warning("train-reranker: skipping checkpoint %s (%s); %s", candidate, problem, then)
    return chosen


def _read_marker(marker: Path) -> str | None:
    """The fingerprint a checkpoints folder was written for, or None (missing, unreadable, not a fingerprint)."""
    try:
        text = marker.read_bytes().decode("ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    kind, _, digest = text.partition(":")
    return text if kind == "sha256" and len(digest) == 64 and all(c in "0123456789abcdef" for c in digest) else None


def _unreadable(checkpoint: Path) -> str | None:
    """Why a checkpoint cannot be resumed from, or None.

    Checked before the trainer sees it, by what can be read cheaply: `trainer_state.json` parses with the types
    the trainer's own state has; every `.safetensors` file's header describes exactly its size; every torch file
    (`optimizer.pt`, `scheduler.pt`, `rng_state*.pth`, `*.bin` weights) is a complete zip archive, and the small
    ones (scheduler, rng state) load with `torch.load(weights_only=True)` as the trainer will load them.
    """
    if not checkpoint.is_dir():
        return "not a folder"
    state_file = checkpoint / "trainer_state.json"
    if not state_file.is_file():
        return "no trainer_state.json: the trainer did not finish writing it"
    try:
        state = json.loads(state_file.read_bytes())
    except (OSError, ValueError) as err:
        return f"trainer_state.json unreadable: {str(err).splitlines()[0][:80]}"
    if (problem := _state_problem(state)) is not None:
        return f"trainer_state.json {problem}"
    weights = [*checkpoint.glob("*.safetensors"), *checkpoint.glob("*.bin"), *checkpoint.glob("*/*.safetensors")]
    weights = [w for w in weights if w.name != "training_args.bin"]
    if not any(w.is_file() and w.stat().st_size > 0 for w in weights):
        return "no model weights"
    for path in sorted(weights) + sorted(checkpoint.glob("*.pt")) + sorted(checkpoint.glob("*.pth")):
        problem = _safetensors_problem(path) if path.suffix == ".safetensors" else _torch_file_problem(path)
        if problem is not None:
            return f"{path.relative_to(checkpoint)}: {problem}"
    return None


def _state_problem(state: Any) -> str | None:
    """What in a parsed trainer_state.json the trainer could not load: unknown keys, or values of another type
    than its `TrainerState` defaults (numbers for numbers, lists for lists, ...)."""
    import dataclasses

    from transformers import TrainerState

    if not isinstance(state, dict):
        return f"is a JSON {type(state).__name__}, not an object"
    defaults = {f.name: f for f in dataclasses.fields(TrainerState)}
    for key, value in state.items():
        if key not in defaults:
            return f"has an unknown field '{key}'"
        f = defaults[key]
        default = f.default if f.default is not dataclasses.MISSING else None
        if key == "global_step" or isinstance(default, int | float) and not isinstance(default, bool):
            ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
            ok = ok and (key != "global_step" or (isinstance(value, int) and value >= 0))
        elif isinstance(default, bool):
            ok = isinstance(value, bool)
        elif isinstance(default, str):
            ok = isinstance(value, str)
        elif key == "log_history":
            ok = isinstance(value, list) and all(isinstance(h, dict) for h in value)
        else:
            ok = True
        if not ok:
            return f"field '{key}': {value!r} is not of the type the trainer expects"
    if "global_step" not in state:
        return "has no global_step"
    return None


def _safetensors_problem(path: Path) -> str | None:
    """A `.safetensors` file is an 8-byte header length, a JSON header, then exactly the data it describes."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            head = fh.read(8)
            n = int.from_bytes(head, "little") if len(head) == 8 else -1
            if n < 2 or 8 + n > size:
                return f"truncated or not a safetensors file ({size} bytes)"
            header = json.loads(fh.read(n))
        ends = [int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"]
    except (OSError, ValueError, TypeError, KeyError, IndexError, AttributeError) as err:
        return f"unreadable safetensors header ({type(err).__name__})"
    if 8 + n + max(ends, default=0) != size:
        return f"{size} bytes, but its header describes {8 + n + max(ends, default=0)} (truncated?)"
    return None


# Torch files up to this size are loaded in full to check them (the scheduler and rng states: a few KB).
_FULL_LOAD_BYTES = 1 << 20


def _torch_file_problem(path: Path) -> str | None:
    """A torch.save file is a zip archive: its central directory (at the end) is gone when the file is cut, and
    absent from garbage. Small files are also loaded as the trainer loads them (`weights_only=True`)."""
    import zipfile

    try:
        size = path.stat().st_size
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                if info.header_offset + info.compress_size > size:
                    return "truncated (a member ends past the end of the file)"
    except (OSError, zipfile.BadZipFile, ValueError) as err:
        return f"not a complete torch file ({str(err).splitlines()[0][:60] or type(err).__name__})"
    if size <= _FULL_LOAD_BYTES:
        import torch
        from transformers.trainer_pt_utils import safe_globals

        try:
            with safe_globals():
                torch.load(path, weights_only=True, map_location="cpu")
        except Exception as err:  # noqa: BLE001  (any failure here is the one the trainer would raise)
            return f"torch.load fails ({type(err).__name__}: {str(err).splitlines()[0][:60] if str(err) else ''})"
    return None


def _checkpoint_step(path: Path) -> int:
    return int(path.name.split("-", 1)[1])


def _model_tmp(out: Path) -> Path:
    return out / f".{MODEL_DIR}.{os.getpid()}.tmp"


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
        InputError, IncompleteArtifactError, ArtifactMismatchError, DataError, ConfigError, LeakageError.
    """
    out = Path(out)
    # "auto" is settled first, so the fingerprint records what actually ran.
    cfg = dataclasses.replace(cfg.resolved(), precision=resolve_precision(cfg.precision, cfg.device))
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
    inputs = [*data_inputs, {"role": "base-model", "path": cfg.base_model, "sha256": identity}]
    fingerprint = compute_fingerprint(STAGE, params, inputs)
    if (done := skip_if_up_to_date(out, STAGE, fingerprint, force=force, deep=verify)) is not None:
        return done
    with output_lock(out):
        try:
            return _run_locked(
                out, cfg, mined, train_file, rows if mined is not None else None, paths, groups,
                layout, target, fingerprint, params, inputs, leak, force=force, progress=progress,
            )  # fmt: skip
        finally:
            shutil.rmtree(_model_tmp(out), ignore_errors=True)


def _run_locked(
    out: Path,
    cfg: TrainRerankerConfig,
    mined: Path | None,
    train_file: Path | None,
    rows: list[tuple[str, dict[str, Any]]] | None,
    paths: DataPaths | None,
    groups: list[Any] | None,
    layout: str | None,
    target: str,
    fingerprint: str,
    params: dict[str, Any],
    inputs: list[dict[str, Any]],
    leak: dict[str, Any],
    *,
    force: bool,
    progress: bool,
) -> Manifest:
    """Build the examples, train, and only then replace the artifact's model and manifest."""
    started = time.time()
    if mined is not None:
        assert paths is not None
        corpus_rec, query_rec = read_corpus(paths.corpus), read_queries(paths.queries)
        docs = {d: corpus_rec[d].full_text for d in corpus_rec.ids}
        qtexts = {q: query_rec[q].text for q in query_rec.ids}
        assert rows is not None
        groups = groups_from_rows(rows, qtexts, docs, cfg.negatives_per_positive)
        layout = "mined"
    assert groups is not None
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
            f"{mined or train_file}: no training examples for loss '{cfg.loss}': all {ex_stats.pairs} pairs "
            "have no negative (mine with a fallback, or use --loss bce)"
        )
    from hnm_cli.quiet import libraries_quiet

    with libraries_quiet(not progress):
        trained = _train(out, cfg, target, columns, fingerprint, fresh=force, progress=progress)
    model_dir = out / MODEL_DIR
    begin_run(out)  # the old manifest goes only now: a failure up to here left the artifact as it was
    shutil.rmtree(model_dir, ignore_errors=True)
    os.replace(_model_tmp(out), model_dir)
    written = sorted(p.relative_to(out).as_posix() for p in model_dir.rglob("*") if p.is_file())
    outputs = [output_entry(out, rel) for rel in written]
    stats = {
        **ex_stats.to_json(),
        **trained,
        **leak,
        "input_layout": layout,
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
    curve = trained["loss_curve"]
    first, last = (curve[0][1], curve[-1][1]) if curve else (float("nan"), float("nan"))
    log.info(
        "train-reranker: %s %s, %d examples from %d pairs (%d without a negative skipped, %d in-batch only), "
        "%d steps in %.1f s, loss %.4f -> %.4f",
        cfg.kind,
        cfg.loss,
        ex_stats.examples,
        ex_stats.pairs,
        ex_stats.pairs_skipped_no_negative,
        ex_stats.pairs_in_batch_only,
        trained["global_step"],
        trained["train_seconds"],
        first,
        last,
    )
    return manifest


def _train(
    out: Path,
    cfg: TrainRerankerConfig,
    target: str,
    columns: dict[str, dict[str, list[Any]]],
    fingerprint: str,
    *,
    fresh: bool,
    progress: bool,
) -> dict[str, Any]:
    """Load the base model, train (resuming from the last checkpoint), save `<out>/model`; return stats."""
    import datasets
    import transformers
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    from hnm_cli.encoding.devices import torch_device
    from hnm_cli.training.losses import make_loss

    device = torch_device(cfg.device)
    transformers.set_seed(cfg.seed)  # before loading: a fresh scoring head is initialised from this seed
    Trainer: Any
    Args: Any
    if cfg.kind == ModelKind.CROSS_ENCODER:
        from sentence_transformers.cross_encoder import CrossEncoderTrainer as Trainer
        from sentence_transformers.cross_encoder import CrossEncoderTrainingArguments as Args

        model, head = load_cross_encoder(target, max_length=cfg.max_length, device=device)
    else:
        from sentence_transformers import SentenceTransformerTrainer as Trainer
        from sentence_transformers import SentenceTransformerTrainingArguments as Args

        model, head = load_bi_encoder(target, max_length=cfg.max_length, device=device), "n/a"
    log.info("train-reranker: base %s (%s head) on %s, %s", target, head, device, cfg.precision)
    from hnm_cli.encoding.devices import warn_if_bf16_emulated

    warn_if_bf16_emulated(cfg.precision, device, "train-reranker")
    loss = make_loss(
        model,
        cfg.kind,
        cfg.loss,
        cfg.margin,
        teacher_weight=cfg.teacher_weight,
        temperature=cfg.teacher_temperature,
        negatives_per_positive=cfg.negatives_per_positive,
    )
    sets = {name: datasets.Dataset.from_dict(cols) for name, cols in columns.items()}
    # One dataset trains exactly as before; several (hard rows + in-batch-only pairs) go in as a DatasetDict, and
    # sentence-transformers draws each batch from one of them, in proportion to their sizes.
    dataset: Any = next(iter(sets.values())) if len(sets) == 1 else datasets.DatasetDict(sets)

    n = sum(len(d) for d in sets.values())
    total_steps = cfg.max_steps if cfg.max_steps > 0 else math.ceil(n / cfg.batch_size) * cfg.epochs
    ckpt_dir = out / CHECKPOINT_DIR
    last = prepare_checkpoints(ckpt_dir, fingerprint, fresh=fresh)
    extra: dict[str, Any] = {}
    if cfg.kind == ModelKind.BI_ENCODER and cfg.loss == Loss.MNRL:
        # In-batch negatives must not be another row's copy of this row's positive (a false negative).
        extra["batch_sampler"] = "no_duplicates"
    args = Args(
        output_dir=str(ckpt_dir),
        num_train_epochs=cfg.epochs,
        max_steps=cfg.max_steps,
        per_device_train_batch_size=cfg.batch_size,
        learning_rate=cfg.learning_rate,
        warmup_steps=float(cfg.warmup_ratio),  # transformers 5: a float in [0, 1) is a ratio of total steps
        seed=cfg.seed,
        data_seed=cfg.seed,
        save_strategy="steps",
        save_steps=cfg.checkpoint_steps,
        save_total_limit=cfg.keep_checkpoints,
        logging_strategy="steps",
        logging_steps=max(1, total_steps // 100),  # at most ~100 points on the loss curve
        report_to="none",
        disable_tqdm=not progress,
        use_cpu=device == "cpu",
        # Mixed precision through accelerate: bf16 autocast, fp32 master weights (also on CPUs with native bf16).
        bf16=cfg.precision == Precision.BF16,
        dataloader_num_workers=0,
        **extra,
    )
    trainer = Trainer(model=model, args=args, train_dataset=dataset, loss=loss)
    trainer.remove_callback(PrinterCallback)
    if not progress:
        trainer.remove_callback(ProgressCallback)
    resumed_from = None
    if last is not None:
        resumed_from = _checkpoint_step(last)
        log.info("train-reranker: resuming from %s (step %d of %d)", last, resumed_from, total_steps)
    t0 = time.time()
    try:
        trainer.train(resume_from_checkpoint=str(last) if last is not None else None)
    except ValueError as err:
        raise DataError(f"training failed on the examples given: {short_error(err)}") from err
    train_seconds = time.time() - t0

    # Saved beside the artifact; `run` swaps it in only when everything succeeded.
    tmp = _model_tmp(out)
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(str(tmp))

    history = trainer.state.log_history
    curve = [[int(h["step"]), round(float(h["loss"]), 6)] for h in history if "loss" in h and "step" in h]
    return {
        "loss_curve": curve,
        "final_loss": curve[-1][1] if curve else None,
        "global_step": int(trainer.state.global_step),
        "planned_steps": int(total_steps),
        "resumed_from_step": resumed_from,
        "train_seconds": round(train_seconds, 3),
        "device": device,
        "head": head,
        "base_model_path": target,
        "checkpoint_dir": CHECKPOINT_DIR,
    }
