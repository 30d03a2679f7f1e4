"""The trainer assembly of `hnm train-reranker`: base model, loss, training arguments and sentence-transformers'
trainer (`CrossEncoderTrainer` / `SentenceTransformerTrainer`), in one process or as one rank of several.

Paths in, statistics out: the stage runner (`hnm_cli.stages.train_reranker`) decides what to train and where the
artifact goes; this module only trains. Under a launcher (see `hnm_cli.training.distributed`) every rank calls
`train_model` with the same examples, and the data loader hands each rank its share of every batch:

- the sampler draws the batches one process with `batch_size x world_size` rows would draw, and each rank takes
  an equal slice of every one (accelerate's `split_batches`), so every step sees the same rows, the same duplicate
  filtering (mnrl) and the same dataset as a 1-rank run of the effective batch size;
- the last incomplete batch of an epoch is dropped, so every rank takes the same number of equal slices;
- mnrl gathers the slices' embeddings across ranks (`gather_across_devices`), so each query meets the in-batch
  negatives of the whole effective batch, as it would in one process;
- rank 0 alone writes checkpoints, including the other ranks' rng states, which they hand to it.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from hnm_cli.artifacts.checkpoints import CHECKPOINT_DIR, checkpoint_step
from hnm_cli.choices import Loss, ModelKind, Precision
from hnm_cli.config import TrainRerankerConfig
from hnm_cli.encoding.trainable import load_bi_encoder, load_cross_encoder, short_error
from hnm_cli.errors import DataError
from hnm_cli.fileio import atomic_write_bytes
from hnm_cli.training.distributed import Launch, together

log = logging.getLogger("hnm")


def steps_per_epoch(sizes: list[int], batch_size: int, launch: Launch) -> int:
    """Optimizer steps in one pass over datasets of `sizes` rows: whole global batches only on several ranks.

    One process keeps its last partial batch and counts the datasets together (as before multi-rank training
    existed: the loss curve's logging interval derives from it).
    """
    if not launch.distributed:
        return math.ceil(sum(sizes) / batch_size)
    return sum(n // (batch_size * launch.world_size) for n in sizes)


def check_batches(sizes: list[int], cfg: TrainRerankerConfig, launch: Launch, source: str) -> None:
    """Refuse examples that fill no whole global batch on several ranks (the trainer would loop on nothing).

    Raises:
        DataError: fewer examples than `batch_size x world_size`.
    """
    if launch.distributed and steps_per_epoch(sizes, cfg.batch_size, launch) == 0:
        raise DataError(
            f"{source}: {sum(sizes)} training examples fill no batch of {cfg.batch_size} x {launch.world_size} "
            f"ranks = {cfg.batch_size * launch.world_size}; lower --batch-size or start fewer processes"
        )


def _rank_zero_checkpoints(trainer_cls: Any, launch: Launch) -> Any:
    """`trainer_cls`, or on several ranks a subclass whose checkpoints rank 0 alone writes.

    transformers saves `rng_state_<rank>.pth` from each rank into the checkpoint; here each rank saves its state
    to a private temporary folder and hands the bytes to rank 0, which writes every rank's file. The files are
    those transformers writes and reads back on resume. The model files of a checkpoint: rank 0 only (`_save`).
    """
    if not launch.distributed:
        return trainer_cls

    class RankZeroCheckpoints(trainer_cls):  # type: ignore[misc]
        def _save(self, output_dir: str | None = None, state_dict: Any = None) -> None:
            # transformers 5 calls `_save` on every rank and returns early inside it on the others; the override
            # in sentence-transformers 6.2 drops that check, so every rank would write the checkpoint's model files.
            if self.args.should_save:
                super()._save(output_dir, state_dict=state_dict)

        def _save_rng_state(self, output_dir: str) -> None:
            import torch.distributed as dist

            with tempfile.TemporaryDirectory(prefix="hnm-rng-") as tmp:
                super()._save_rng_state(tmp)
                files = [(p.name, p.read_bytes()) for p in sorted(Path(tmp).iterdir()) if p.is_file()]
            gathered: list[Any] | None = [None] * launch.world_size if launch.is_main else None
            dist.gather_object(files, gathered, dst=0)
            if gathered is not None:
                os.makedirs(output_dir, exist_ok=True)
                for name, data in (f for rank_files in gathered for f in rank_files):
                    atomic_write_bytes(Path(output_dir) / name, data)

    return RankZeroCheckpoints


def load_base_model(cfg: TrainRerankerConfig, target: str, device: str, launch: Launch) -> tuple[Any, str, str]:
    """Load the base model on this rank's device, on every rank (the first rank's error if any fails).

    Returns:
        (model, head, device): head "pretrained", "fresh" (cross-encoders) or "n/a"; the resolved device word.

    Raises:
        InputError: the base model does not load (StoppedError on the other ranks).
    """
    import transformers

    from hnm_cli.encoding.devices import torch_device, warn_if_bf16_emulated

    device = torch_device(device)
    transformers.set_seed(cfg.seed)  # before loading: a fresh scoring head is initialised from this seed
    if cfg.kind == ModelKind.CROSS_ENCODER:
        model, head = together(launch, lambda: load_cross_encoder(target, max_length=cfg.max_length, device=device))
    else:
        model = together(launch, lambda: load_bi_encoder(target, max_length=cfg.max_length, device=device))
        head = "n/a"
    log.info("train-reranker: base %s (%s head) on %s, %s", target, head, device, cfg.precision)
    warn_if_bf16_emulated(cfg.precision, device, "train-reranker")
    return model, head, device


# A cross-encoder grown from a bi-encoder checkpoint starts with a random scoring head. In the issue-21 screen
# (SciFact, bench/results/scifact/cross-screen) every recipe at 100 optimizer steps ranked below its first stage, even
# fused with it, and the listwise recipe at 300 steps ranked above it fused; on the bundled example (5 steps an epoch)
# 40 steps left it no better than chance. Fewer steps than this get a warning before the time is spent.
FRESH_HEAD_MIN_STEPS = 300


def few_steps_warning(head: str, total_steps: int) -> str | None:
    """The warning for a fresh cross-encoder head trained too briefly to learn to rank, or None."""
    if head != "fresh" or total_steps >= FRESH_HEAD_MIN_STEPS:
        return None
    return (
        f"train-reranker: warning: a fresh cross-encoder head gets {total_steps} optimizer steps; heads given fewer "
        f"than {FRESH_HEAD_MIN_STEPS} ranked below their first stage in our measurements (README, 'Kind and "
        "recipe'): train longer (--epochs, --max-steps), start from a trained cross-encoder (--base-model), or fuse "
        "it with the first stage (hnm eval --fuse rrf) and check its row"
    )


def train_model(
    cfg: TrainRerankerConfig,
    model: Any,
    columns: dict[str, dict[str, list[Any]]],
    *,
    head: str = "n/a",
    device: str,
    checkpoints: Path,
    resume: Path | None,
    save_to: Path | None,
    launch: Launch,
    progress: bool,
) -> dict[str, Any]:
    """Train `model` (resuming from `resume`), save it to `save_to`; return stats.

    Args:
        cfg: the resolved settings.
        model: the base model (`load_base_model`).
        columns: the datasets' columns by name (`hnm_cli.training.examples.build_datasets`).
        head: "fresh" when a cross-encoder's scoring head starts random (`load_base_model`): warned when given few steps.
        device: this rank's resolved device.
        checkpoints: the trainer's output folder (written by rank 0 only).
        resume: the checkpoint to resume from, or None.
        save_to: where the trained model goes (rank 0), or None (the other ranks).
        launch: this process's rank and world size.
        progress: show the trainer's progress bar on stderr.

    Raises:
        DataError: the trainer refused the examples.
    """
    import datasets
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    from hnm_cli.training.losses import make_loss

    Trainer: Any
    Args: Any
    if cfg.kind == ModelKind.CROSS_ENCODER:
        from sentence_transformers.cross_encoder import CrossEncoderTrainer as Trainer
        from sentence_transformers.cross_encoder import CrossEncoderTrainingArguments as Args
    else:
        from sentence_transformers import SentenceTransformerTrainer as Trainer
        from sentence_transformers import SentenceTransformerTrainingArguments as Args
    loss = make_loss(
        model,
        cfg.kind,
        cfg.loss,
        cfg.margin,
        teacher_weight=cfg.teacher_weight,
        temperature=cfg.teacher_temperature,
        negatives_per_positive=cfg.negatives_per_positive,
        gather_across_devices=launch.distributed,
    )
    sets = {name: datasets.Dataset.from_dict(cols) for name, cols in columns.items()}
    # One dataset trains exactly as before; several (hard rows + in-batch-only pairs) go in as a DatasetDict, and
    # sentence-transformers draws each batch from one of them, in proportion to their sizes.
    dataset: Any = next(iter(sets.values())) if len(sets) == 1 else datasets.DatasetDict(sets)

    per_epoch = steps_per_epoch([len(d) for d in sets.values()], cfg.batch_size, launch)
    epochs, learning_rate = cfg.epochs, cfg.learning_rate
    if epochs is None or learning_rate is None or cfg.loss == Loss.AUTO:
        raise ValueError("training takes a settled config: TrainRerankerConfig.resolved()")
    total_steps = cfg.max_steps if cfg.max_steps > 0 else per_epoch * epochs
    warning = few_steps_warning(head, total_steps)
    if warning and launch.is_main:
        log.warning("%s", warning)
    extra: dict[str, Any] = {}
    if cfg.kind == ModelKind.BI_ENCODER and cfg.loss == Loss.MNRL:
        # In-batch negatives must not be another row's copy of this row's positive (a false negative).
        extra["batch_sampler"] = "no_duplicates"
    batch = cfg.batch_size
    if launch.distributed:
        # The sampler draws global batches; each rank gets its equal slice (see the module docstring).
        batch = cfg.batch_size * launch.world_size
        extra |= {"accelerator_config": {"split_batches": True}, "dataloader_drop_last": True}
        # A bi-encoder leaves its transformer's pooler unused (mean pooling), which DDP must be told to look for.
        # A cross-encoder's classifier reads every layer, and looking for unused parameters breaks
        # BinaryCrossEntropyLoss's backward ("marked ready twice", torch 2.13), so it is off there.
        extra["ddp_find_unused_parameters"] = cfg.kind == ModelKind.BI_ENCODER
    args = Args(
        output_dir=str(checkpoints),
        num_train_epochs=epochs,
        max_steps=cfg.max_steps,
        per_device_train_batch_size=batch,
        learning_rate=learning_rate,
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
    trainer = _rank_zero_checkpoints(Trainer, launch)(model=model, args=args, train_dataset=dataset, loss=loss)
    trainer.remove_callback(PrinterCallback)
    if not progress:
        trainer.remove_callback(ProgressCallback)
    resumed_from = None
    if resume is not None:
        resumed_from = checkpoint_step(resume)
        log.info("train-reranker: resuming from %s (step %d of %d)", resume, resumed_from, total_steps)
    t0 = time.time()
    try:
        trainer.train(resume_from_checkpoint=str(resume) if resume is not None else None)
    except ValueError as err:
        raise DataError(f"training failed on the examples given: {short_error(err)}") from err
    train_seconds = time.time() - t0

    if save_to is not None:
        shutil.rmtree(save_to, ignore_errors=True)
        model.save_pretrained(str(save_to))

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
        "checkpoint_dir": CHECKPOINT_DIR,
        "world_size": launch.world_size,
        "effective_batch_size": cfg.batch_size * launch.world_size,
    }
