"""Negatives that need no similarity search: seeded random draws, and distances filled in afterwards."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from hnm_cli.mining.numerics import rowdot64
from hnm_cli.mining.results import SOURCE_RANDOM, Excluded, Negative, Pair, PairResult
from hnm_cli.search import VectorSource

_M1, _M2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: a bijection of uint64 that spreads every input bit over the output."""
    with np.errstate(over="ignore"):
        x = (x ^ (x >> np.uint64(30))) * _M1
        x = (x ^ (x >> np.uint64(27))) * _M2
        mixed: np.ndarray = x ^ (x >> np.uint64(31))
        return mixed


def id_keys(ids: Sequence[str]) -> np.ndarray:
    """A stable uint64 per id (blake2b of its text): what random draws are keyed on, so a document keeps its
    chance of being drawn for a query whatever else is added to, changed in or removed from the corpus."""
    import hashlib

    return np.frombuffer(
        b"".join(hashlib.blake2b(str(i).encode(), digest_size=8).digest() for i in ids), dtype=np.uint64
    ).copy()


def draw_keys(seed: int, query_key: np.uint64, doc_keys: np.ndarray) -> np.ndarray:
    """The draw key of every document for one query: a seeded hash of (query id, document id)."""
    with np.errstate(over="ignore"):
        q = mix64(np.asarray([query_key ^ (np.uint64(seed) * _GOLDEN)], dtype=np.uint64))[0]
        return mix64(doc_keys ^ q)


def sample_random(
    n_docs: int,
    pairs: Sequence[Pair],
    excluded: Excluded,
    num_negatives: int,
    seed: int,
    *,
    doc_keys: np.ndarray | None = None,
    query_keys: np.ndarray | None = None,
) -> list[PairResult]:
    """Seeded uniform negatives over corpus rows minus PD and ``excluded[query_row]`` (source "random").

    Each pair takes the ``num_negatives`` allowed documents with the smallest draw key, a seeded hash of (query id,
    document id): a uniform sample without replacement that depends on ids, not on row positions or on the order
    pairs come in, so an edit of the corpus changes a pair's draw only where an added document beats one of its
    picks (what `hnm mine --update` relies on). ``doc_keys``/``query_keys`` are `id_keys` of the corpus and query
    ids; without them the row numbers stand in for ids. Negatives come in key order; distances are None
    (`fill_distances`).
    """
    if num_negatives < 1:
        raise ValueError(f"num_negatives must be >= 1, got {num_negatives}")
    if doc_keys is None:
        doc_keys = id_keys([str(i) for i in range(n_docs)])
    if query_keys is None:
        query_keys = id_keys([str(i) for i in range(max((p.query_row for p in pairs), default=-1) + 1)])
    top = np.iinfo(np.uint64).max
    results = []
    for p in pairs:
        if not 0 <= p.positive_row < n_docs:
            raise ValueError(f"pair {p}: positive_row out of range 0..{n_docs - 1}")
        keys = draw_keys(seed, query_keys[p.query_row], doc_keys)
        banned = np.fromiter({*excluded.get(p.query_row, ()), p.positive_row}, dtype=np.int64)
        keys[banned[(banned >= 0) & (banned < n_docs)]] = top
        allowed = n_docs - int(np.count_nonzero(keys == top))
        want = min(num_negatives, allowed)
        if want <= 0:
            results.append(PairResult(p, []))
            continue
        cand = np.argpartition(keys, want - 1)[:want] if want < n_docs else np.arange(n_docs)
        cand = cand[np.lexsort((cand, keys[cand]))]
        chosen = [int(r) for r in cand if keys[r] != top][:want]
        results.append(PairResult(p, [Negative(r, SOURCE_RANDOM, None, None, None, None) for r in chosen]))
    return results


def fill_distances(query_vecs: np.ndarray, source: VectorSource, results: Sequence[PairResult]) -> list[PairResult]:
    """Return copies of ``results`` whose negatives have d_qd, d_qp and d_pd computed (float64).

    For strategies that do not compute distances (random, BM25); ``rank`` is left as it is.
    """
    query_vecs = np.ascontiguousarray(query_vecs, dtype=np.float32)
    out = []
    for r in results:
        if not r.negatives:
            out.append(replace(r, negatives=[]))
            continue
        rows = np.array([neg.doc_row for neg in r.negatives], dtype=np.int64)
        docs = source.take(rows)
        pd_vec = source.take([r.pair.positive_row])[0]
        q = query_vecs[r.pair.query_row]
        s_qd = rowdot64(np.broadcast_to(q, docs.shape), docs)
        s_pd = rowdot64(np.broadcast_to(pd_vec, docs.shape), docs)
        s_qp = float(rowdot64(q[None, :], pd_vec[None, :])[0])
        negs = [
            replace(neg, d_qd=float(1.0 - a), d_qp=float(1.0 - s_qp), d_pd=float(1.0 - b))
            for neg, a, b in zip(r.negatives, s_qd, s_pd, strict=True)
        ]
        out.append(replace(r, negatives=negs))
    return out
