"""Configuration: one frozen dataclass per stage, TOML loading, and CLI-override merging.

Precedence: dataclass defaults < TOML file (`-c configs/x.toml`, one table per stage) < explicit
CLI flags. CLI options default to None, meaning "not given", so `merged(**flags)` ignores them.
The resolved dataclass (`asdict`) is what goes into `manifest.params`.
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar

from hnm_cli.choices import (
    DEFAULT_RECIPE_BY_KIND,
    LOSSES_BY_KIND,
    Backend,
    Balance,
    Executor,
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
    Significance,
    Strategy,
    Vote,
)
from hnm_cli.config_checks import StageConfig as _StageConfig  # the stage classes below keep their short names
from hnm_cli.config_checks import check_device as _device
from hnm_cli.config_checks import check_seed as _seed
from hnm_cli.config_checks import checked as _checked
from hnm_cli.config_checks import positive as _positive
from hnm_cli.errors import ConfigError, HnmError
from hnm_cli.model_spec import ModelSpec as ModelSpec  # re-exported: the embed config holds them
from hnm_cli.model_spec import model_spec_from_dict

# ---------------------------------------------------------------------------------------------
# embed
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EmbedConfig(_StageConfig):
    """`hnm embed`: which models, how to shard and encode."""

    section: ClassVar[str] = "embed"

    models: tuple[ModelSpec, ...] = ()
    precision: Precision = Precision.FP32  # bf16 autocast; vectors are stored as float32 either way
    device: str = "auto"  # auto (cuda > mps > cpu) | cpu | cuda | cuda:N | mps
    shard_size: int = 2048  # rows per output shard: the resume granularity
    batch_size: int | None = None  # overrides every model's batch_size when set
    backend: Backend | None = None  # overrides every model's backend when set (auto: openvino on CPUs)
    quantize: Quantize | None = None  # overrides every model's quantize when set
    long_texts: LongTexts | None = None  # overrides every model's long_texts when set
    on_empty: OnEmpty = OnEmpty.ERROR
    parts: tuple[str, ...] = ("corpus", "queries")
    executor: Executor = Executor.LOCAL  # where shards are encoded: this process, or actors of a Ray cluster
    ray_address: str = "auto"  # ray.init(address=...); "auto": a running cluster, else a local one for the run
    cache: bool = True  # reuse vectors of texts encoded by earlier runs into the same --out (<model>/.cache/)

    # Same bytes on every executor, and with or without the cache (its vectors are the ones encoded before).
    run_options: ClassVar[tuple[str, ...]] = ("executor", "ray_address", "cache")

    def validate(self) -> None:
        _positive(self.shard_size, "embed.shard_size")
        _positive(self.batch_size, "embed.batch_size", allow_none=True)
        _device(self.device, "embed.device")
        names = [m.name for m in self.models]
        if len(set(names)) != len(names):
            raise ConfigError(f"embed.models: duplicate model names in {names}")


# ---------------------------------------------------------------------------------------------
# reduce
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReduceConfig(_StageConfig):
    """`hnm reduce`: per-model normalisation, weights, concatenation, PCA."""

    variance: float = 0.95  # keep the smallest k reaching this explained-variance ratio
    n_components: int | None = None  # a fixed k instead of the variance target
    pca: bool = True  # False: concatenate (and re-normalise) only; the "no PCA" ablation
    weights: dict[str, float] = field(default_factory=dict)  # model name -> weight (default 1.0)
    fit_on: FitOn = FitOn.CORPUS
    max_fit_rows: int = 200_000  # above this, fit on a seeded sample
    block_rows: int = 8192  # rows transformed per block
    seed: int = 0
    balance: Balance = Balance.NONE  # variance: scale each model to unit total variance before weights and PCA

    section: ClassVar[str] = "reduce"
    late_options: ClassVar[dict[str, Any]] = {"balance": Balance.NONE}

    def validate(self) -> None:
        if not 0 < self.variance <= 1:
            raise ConfigError(f"reduce.variance must be in (0, 1]; got {self.variance!r}")
        _positive(self.n_components, "reduce.n_components", allow_none=True)
        _positive(self.max_fit_rows, "reduce.max_fit_rows")
        _positive(self.block_rows, "reduce.block_rows")
        _seed(self.seed, "reduce.seed")


# ---------------------------------------------------------------------------------------------
# mine
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MineConfig(_StageConfig):
    """`hnm mine`: strategy and knobs (sentence-transformers' names where they exist)."""

    # The default recipe (issue 20, measured on SciFact and ops-man in BENCHMARKS.md "quality"): the ensemble's
    # dense top 3 below a ceiling of 95% of the positive's score (NV-Retriever's TopK-PercPos). The rule's C1 keeps
    # only documents scoring above the positive, where unlabelled positives live; the ceiling keeps them out.
    # `--preset paper` is the published setting (the rule, 1 negative, no fill).
    strategy: Strategy = Strategy.TOPK
    split: str = "train"
    num_negatives: int = 3
    index: SearchIndex = SearchIndex.EXACT
    block_size: int = 16384  # corpus rows per matrix-product block (exact search)
    query_block: int = 1024  # queries per block
    candidate_k: int = 100  # first search width; widened until the positive's rank is reached
    hnsw_m: int = 32
    hnsw_ef_construction: int = 200
    hnsw_ef_search: int = 200
    range_min: int = 0
    range_max: int | None = None
    max_score: float | None = None
    min_score: float | None = None
    absolute_margin: float | None = None
    relative_margin: float | None = 0.05
    sampling_strategy: Sampling = Sampling.TOP
    fallback: Fallback = Fallback.NEXT
    fill: Fill = Fill.SHORT  # which pairs the fallback fills: empty ones, or short ones too
    c2_margin: float = 0.0  # rule: C2 with a margin, d(PD,D) - d(Q,D) > c2_margin (0: the paper)
    # False-negative controls (mining/controls.py): drop D when members of the ensemble rank it above PD, and
    # make `random_negatives` of the `num_negatives` seeded random documents.
    vote: Vote = Vote.NONE
    random_negatives: int = 0
    seed: int = 0
    allow_eval_queries: bool = False
    eval_splits: tuple[str, ...] = ("test", "dev", "validation")
    exclude_query_duplicates: bool = True  # a document whose text equals the query's is never its negative
    exclude_twin_positives: bool = True  # queries with equal texts never get each other's positives as negatives
    executor: Executor = Executor.LOCAL  # where blocks of pairs are mined: this process, or a Ray cluster
    ray_address: str = "auto"  # ray.init(address=...); "auto": a running cluster, else a local one for the run
    preset: Preset | None = None  # named settings applied over the config file (MINE_PRESETS); flags still win

    section: ClassVar[str] = "mine"
    late_options: ClassVar[dict[str, Any]] = {
        "fill": Fill.EMPTY,
        "c2_margin": 0.0,
        "vote": Vote.NONE,
        "random_negatives": 0,
    }
    # Same bytes on every executor. A preset is recorded through the values it set, so `--preset paper` and the
    # same options spelled out are one fingerprint.
    run_options: ClassVar[tuple[str, ...]] = ("executor", "ray_address", "preset")

    def with_preset(self, preset: Preset | str | None = None) -> MineConfig:
        """A copy with `preset`'s settings (or, when None, those of `self.preset`) applied; no preset: self."""
        name = _checked(preset, Preset | None, "mine.preset") if preset is not None else self.preset
        if name is None:
            return self
        new = dataclasses.replace(self, **MINE_PRESETS[name], preset=name)
        new.validate()
        return new

    def validate(self) -> None:
        if not isinstance(self.c2_margin, int | float) or self.c2_margin < 0:
            raise ConfigError(f"mine.c2_margin must be >= 0; got {self.c2_margin!r}")
        _positive(self.num_negatives, "mine.num_negatives")
        _positive(self.block_size, "mine.block_size")
        _positive(self.query_block, "mine.query_block")
        _positive(self.candidate_k, "mine.candidate_k")
        # Checked whatever the index: a config file is refused for a bad value whether or not this run uses it.
        if self.hnsw_m < 2:
            raise ConfigError(f"mine.hnsw_m must be >= 2; got {self.hnsw_m!r}")
        _positive(self.hnsw_ef_construction, "mine.hnsw_ef_construction")
        _positive(self.hnsw_ef_search, "mine.hnsw_ef_search")
        if self.range_min < 0:
            raise ConfigError(f"mine.range_min must be >= 0; got {self.range_min!r}")
        _positive(self.range_max, "mine.range_max", allow_none=True)
        if self.range_max is not None and self.range_max - self.range_min < self.num_negatives:
            raise ConfigError(
                f"mine.range_max must be at least range_min + num_negatives ({self.range_min + self.num_negatives}); "
                f"got {self.range_max!r}"
            )
        _seed(self.seed, "mine.seed")
        if not isinstance(self.random_negatives, int) or not 0 <= self.random_negatives <= self.num_negatives:
            raise ConfigError(
                f"mine.random_negatives must be between 0 and num_negatives ({self.num_negatives}); "
                f"got {self.random_negatives!r}"
            )
        for key in ("relative_margin", "absolute_margin"):
            value = getattr(self, key)
            if value is not None and (not isinstance(value, int | float) or not -1.0 <= value <= 2.0):
                raise ConfigError(f"mine.{key} must be a number in [-1, 2]; got {value!r}")


# What each preset sets; every other key keeps its value from the defaults, the config file or the flags.
MINE_PRESETS: dict[Preset, dict[str, Any]] = {
    # The published method: strict C1 and C2, the one nearest passing document, pairs without one stay empty.
    Preset.PAPER: {
        "strategy": Strategy.RULE,
        "num_negatives": 1,
        "fallback": Fallback.NONE,
        "fill": Fill.EMPTY,
        "c2_margin": 0.0,
        "range_min": 0,
        "range_max": None,
        "sampling_strategy": Sampling.TOP,
        "relative_margin": None,
        "absolute_margin": None,
        "vote": Vote.NONE,
        "random_negatives": 0,
    },
}


# ---------------------------------------------------------------------------------------------
# train-reranker
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainRerankerConfig(_StageConfig):
    """`hnm train-reranker`: model kind, loss and budget."""

    # The default kind is the one whose default recipe beats the first stage on every dataset we measured (the
    # bi-encoder's MNRL fine-tune); a cross-encoder grown from bi-encoder weights can rank below it.
    kind: ModelKind = ModelKind.BI_ENCODER
    base_model: str = "pkg:all-MiniLM-L6-v2"
    loss: Loss = Loss.AUTO  # auto: DEFAULT_RECIPE_BY_KIND[kind].loss; LOSSES_BY_KIND says which a kind accepts
    margin: float = 1.0
    epochs: int | None = None  # None: the kind's recipe (DEFAULT_RECIPE_BY_KIND)
    learning_rate: float | None = None  # None: the kind's recipe
    batch_size: int = 16
    warmup_ratio: float = 0.1
    max_length: int = 256
    negatives_per_positive: int = 3  # mine mines 3 per pair by default; the paper: 1
    max_steps: int = -1  # > 0 caps the run (overrides epochs)
    checkpoint_steps: int = 100  # save a resumable checkpoint every N optimizer steps
    keep_checkpoints: int = 1  # how many checkpoints to keep in <out>/checkpoints
    seed: int = 0
    eval_split: str = "test"  # leakage guard: refuse training queries that appear in this split's qrels
    allow_eval_overlap: bool = False
    drop_eval_overlap: bool = False  # leave training queries that are evaluation queries (by id or text) out
    # listwise only: distil the miner's similarities (soft labels) into the reranker, weight w of the target
    teacher_weight: float = 0.0
    teacher_temperature: float = 0.05
    device: str = "auto"  # auto (cuda > mps > cpu) | cpu | cuda | cuda:N | mps
    precision: Precision = Precision.FP32  # bf16: mixed precision (bf16 autocast, fp32 master weights)
    # mnrl: train pairs the miner left without a negative with in-batch negatives ("in-batch"), or drop them.
    pairs_without_negative: PairsWithoutNegative = PairsWithoutNegative.IN_BATCH

    section: ClassVar[str] = "train_reranker"
    late_options: ClassVar[dict[str, Any]] = {
        "precision": Precision.FP32,
        "drop_eval_overlap": False,
        "teacher_weight": 0.0,
        "teacher_temperature": 0.05,
    }

    def resolved(self) -> TrainRerankerConfig:
        """A copy with every setting left to the kind's recipe (`loss = "auto"`, `epochs` and `learning_rate` unset)
        settled from `DEFAULT_RECIPE_BY_KIND`, so the fingerprint records what ran."""
        recipe = DEFAULT_RECIPE_BY_KIND[self.kind]
        return dataclasses.replace(
            self,
            loss=recipe.loss if self.loss == Loss.AUTO else self.loss,
            epochs=recipe.epochs if self.epochs is None else self.epochs,
            learning_rate=recipe.learning_rate if self.learning_rate is None else self.learning_rate,
        )

    def validate(self) -> None:
        losses = LOSSES_BY_KIND[self.kind]
        if self.loss != Loss.AUTO and self.loss not in losses:
            raise ConfigError(
                f"train_reranker.loss must be one of {', '.join(losses)} for kind {self.kind}; got '{self.loss}'"
            )
        for key in ("batch_size", "max_length", "negatives_per_positive"):
            _positive(getattr(self, key), f"train_reranker.{key}")
        for key in ("learning_rate", "epochs"):
            _positive(getattr(self, key), f"train_reranker.{key}", allow_none=True)
        for key in ("checkpoint_steps", "keep_checkpoints"):
            _positive(getattr(self, key), f"train_reranker.{key}")
        if not self.base_model.strip():
            raise ConfigError("train_reranker.base_model must not be empty (pkg:<name>, a model folder, or a hub id)")
        _seed(self.seed, "train_reranker.seed")
        _device(self.device, "train_reranker.device")
        if not 0 <= self.teacher_weight <= 1:
            raise ConfigError(f"train_reranker.teacher_weight must be in [0, 1]; got {self.teacher_weight!r}")
        if self.teacher_weight and self.resolved().loss != Loss.LISTWISE:
            raise ConfigError("train_reranker.teacher_weight (distillation) needs loss = 'listwise'")
        _positive(self.teacher_temperature, "train_reranker.teacher_temperature")
        if not isinstance(self.margin, int | float) or self.margin < 0:
            raise ConfigError(f"train_reranker.margin must be >= 0; got {self.margin!r}")
        if not isinstance(self.warmup_ratio, int | float) or not 0 <= self.warmup_ratio < 1:
            raise ConfigError(f"train_reranker.warmup_ratio must be in [0, 1); got {self.warmup_ratio!r}")
        if not isinstance(self.max_steps, int) or self.max_steps == 0 or self.max_steps < -1:
            raise ConfigError(f"train_reranker.max_steps must be -1 (use epochs) or > 0; got {self.max_steps!r}")


# ---------------------------------------------------------------------------------------------
# eval
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EvalConfig(_StageConfig):
    """`hnm eval`: first stage, rerankers, metrics and the comparison."""

    split: str = "test"
    first_stage: FirstStage = FirstStage.BM25  # dense needs --vectors; run needs --run FILE (TREC or JSONL)
    top_k: int = 100  # candidates per query, shared by every reranker
    fuse: Fuse = Fuse.NONE  # rrf adds <name>+rrf: the first stage fused with each reranker
    rrf_k: int = 60
    baseline: str = "first-stage"  # the run every other run is compared with
    batch_size: int = 32
    max_length: int = 256  # reranker input tokens (a cross-encoder's pair, a bi-encoder's text)
    by_length: int | None = None  # split documents at this many tokens for a short/long breakdown
    significance: Significance = Significance.RANDOMIZATION  # paired, per query
    trials: int = 10_000
    seed: int = 0  # seeds the significance test
    device: str = "auto"  # auto (cuda > mps > cpu) | cpu | cuda | cuda:N | mps
    # BEIR's ignore_identical_ids: drop a candidate whose doc id equals the query id (Quora, ArguAna, where the
    # query is in the corpus). Off by default, as in MTEB for most datasets: SciFact's ids only collide by chance.
    ignore_identical_ids: bool = False
    precision: Precision = Precision.FP32  # bf16: autocast while scoring (1.4x on a 2-core EPYC)

    section: ClassVar[str] = "eval"
    late_options: ClassVar[dict[str, Any]] = {"ignore_identical_ids": False, "precision": Precision.FP32}

    def validate(self) -> None:
        for key in ("top_k", "rrf_k", "batch_size", "max_length", "trials"):
            _positive(getattr(self, key), f"eval.{key}")
        _positive(self.by_length, "eval.by_length", allow_none=True)
        _seed(self.seed, "eval.seed")
        _device(self.device, "eval.device")


# ---------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Config:
    """All stages' configs, as loaded from one TOML file."""

    embed: EmbedConfig = EmbedConfig()
    reduce: ReduceConfig = ReduceConfig()
    mine: MineConfig = MineConfig()
    train_reranker: TrainRerankerConfig = TrainRerankerConfig()
    eval: EvalConfig = EvalConfig()
    source: Path | None = None


_SECTIONS: dict[str, type[_StageConfig]] = {
    "embed": EmbedConfig,
    "reduce": ReduceConfig,
    "mine": MineConfig,
    "train_reranker": TrainRerankerConfig,
    "eval": EvalConfig,
}


def _tupled(cls: type, values: dict[str, Any]) -> dict[str, Any]:
    """TOML arrays arrive as lists; fields typed as tuples are stored as tuples (hashable, frozen)."""
    out = dict(values)
    for f in fields(cls):
        if f.name in out and isinstance(out[f.name], list) and "tuple" in str(f.type):
            out[f.name] = tuple(out[f.name])
    return out


def load_config(path: Path | None) -> Config:
    """Load a TOML config (or the built-in defaults when `path` is None).

    Raises:
        ConfigError: unreadable TOML, an unknown section or key, or an invalid value.
    """
    if path is None:
        return Config()
    path = Path(path)
    from hnm_cli.inputs import require_regular_file

    try:
        require_regular_file(path, "config ", "a TOML file")  # a FIFO would hang, /dev/zero fill the memory
    except HnmError as err:
        raise ConfigError(err.message) from None
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: cannot read config ({err})") from err
    unknown = set(data) - set(_SECTIONS)
    if unknown:
        raise ConfigError(f"{path}: unknown section(s) [{', '.join(sorted(unknown))}]")
    built: dict[str, Any] = {}
    for section, cls in _SECTIONS.items():
        table = data.get(section, {})
        if not isinstance(table, dict):  # `[[mine]]`, `mine = 5`, `mine = [...]`
            tables = isinstance(table, list) and table and all(isinstance(t, dict) for t in table)
            got = f"[[{section}]], an array of tables" if tables else f"{section} = {table!r}"[:80]
            raise ConfigError(f"{path}: [{section}] must be a table ([{section}], then key = value lines); got {got}")
        values = dict(table)
        if section == "embed" and "models" in values:
            if not isinstance(values["models"], list) or not all(isinstance(m, dict) for m in values["models"]):
                raise ConfigError(
                    f"{path}: embed.models must be [[embed.models]] tables (name, source, ...); got {values['models']!r}"
                )
            if not values["models"]:
                raise ConfigError(f"{path}: embed.models is empty; list [[embed.models]] tables or leave it out")
            values["models"] = tuple(
                model_spec_from_dict(dict(m), f"{path}: [[embed.models]] #{i + 1}")
                for i, m in enumerate(values["models"])
            )
        known = {f.name for f in fields(cls)}  # type: ignore[arg-type]  # every _SECTIONS class is a dataclass
        bad = set(values) - known
        if bad:
            raise ConfigError(f"{path}: unknown key(s) in [{section}]: {', '.join(sorted(bad))}")
        try:
            obj = cls(**_tupled(cls, values))
            obj.validate()
        except ConfigError as err:
            raise ConfigError(f"{path}: {err}") from err
        except TypeError as err:
            raise ConfigError(f"{path}: [{section}]: {err}") from err
        built[section] = obj
    return Config(**built, source=path)
