"""In-process BM25 over a list of texts (the `bm25s` library), shared by `mine --strategy bm25` and eval.

Deterministic by construction: scores come from `bm25s`' sparse index and ties are broken by corpus
position (lower index first), so the same texts and queries always give the same ranking. `bm25s` is
imported inside `BM25Index.__init__`, keeping `hnm --help` free of it.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

import numpy as np


class BM25Index:
    """A BM25 index of `texts` (row i of the corpus is index i).

    Args:
        texts: document texts (for hnm corpora: `Doc.full_text`).
        k1: term-frequency saturation (Lucene default 1.5 in bm25s; 0.9 is Anserini's).
        b: length normalisation.
        method: bm25s scoring variant ("lucene", "robertson", "atire", "bm25l", "bm25+").
        stopwords: "english", a list of words, or None for no stopword removal.
        lower: lowercase before tokenising.
    """

    def __init__(
        self,
        texts: Sequence[str],
        *,
        k1: float = 1.5,
        b: float = 0.75,
        method: str = "lucene",
        stopwords: str | list[str] | None = "english",
        lower: bool = True,
    ) -> None:
        import bm25s
        from bm25s.tokenization import Tokenizer

        if len(texts) == 0:
            raise ValueError("BM25Index needs at least one text")
        self.params: dict[str, Any] = {"k1": k1, "b": b, "method": method, "stopwords": stopwords, "lower": lower}
        self._tokenizer = Tokenizer(lower=lower, stopwords=stopwords or [])
        corpus_ids = self._tokenizer.tokenize(list(texts), update_vocab=True, return_as="ids", show_progress=False)
        # bm25s maps out-of-vocabulary query tokens to the empty-string token; drop it so an unknown word
        # scores nothing instead of matching documents that happen to be empty after tokenisation.
        self._empty_id = self._tokenizer.get_vocab_dict().get("")
        self._bm25 = bm25s.BM25(k1=k1, b=b, method=method)
        self._bm25.index(corpus_ids, show_progress=False)
        self._n = len(texts)

    def __len__(self) -> int:
        return self._n

    def _query_ids(self, query_text: str) -> list[int]:
        ids = self._tokenizer.tokenize([query_text], update_vocab=False, return_as="ids", show_progress=False)[0]
        return [int(i) for i in ids if i != self._empty_id]

    def scores(self, query_text: str) -> np.ndarray:
        """BM25 score of every document for one query (float32, length `len(self)`); zeros if no term matches."""
        ids = self._query_ids(query_text)
        if not ids:
            return np.zeros(self._n, dtype=np.float32)
        return np.asarray(self._bm25.get_scores(ids), dtype=np.float32)

    def search(
        self,
        query_texts: Sequence[str],
        k: int,
        *,
        exclude: Sequence[Collection[int]] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-`k` documents per query, best first; ties broken by lower corpus index.

        Args:
            query_texts: one text per query.
            k: results per query; clipped to the corpus size.
            exclude: optional per-query collections of corpus indices that must not be returned
                (e.g. the query's positives). Rows that run out of documents are padded with index -1
                and score -inf.

        Returns:
            (scores, indices): float32 and int64 arrays of shape (len(query_texts), min(k, len(self))).
        """
        if k <= 0:
            raise ValueError(f"k must be > 0; got {k}")
        if exclude is not None and len(exclude) != len(query_texts):
            raise ValueError(f"exclude has {len(exclude)} entries for {len(query_texts)} queries")
        k = min(k, self._n)
        out_scores = np.full((len(query_texts), k), -np.inf, dtype=np.float32)
        out_idx = np.full((len(query_texts), k), -1, dtype=np.int64)
        for qi, text in enumerate(query_texts):
            scores = self.scores(text).astype(np.float64)
            if exclude is not None and exclude[qi]:
                scores[np.fromiter(exclude[qi], dtype=np.int64)] = -np.inf
            order = _top_indices(scores, k)
            order = order[np.isfinite(scores[order])]
            out_idx[qi, : len(order)] = order
            out_scores[qi, : len(order)] = scores[order]
        return out_scores, out_idx


def _top_indices(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k largest scores, sorted by (score desc, index asc): a total, reproducible order."""
    n = len(scores)
    if k < n:
        # Take everything tied with the k-th score so that the tie-break below sees all contenders.
        kth = np.partition(scores, n - k)[n - k]
        cand = np.flatnonzero(scores >= kth)
    else:
        cand = np.arange(n)
    order = np.lexsort((cand, -scores[cand]))
    return cand[order][:k]
