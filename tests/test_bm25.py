"""BM25Index: the obvious lexical match first, deterministic ties, exclusion, unknown words."""

from __future__ import annotations

import numpy as np
import pytest

from hnm_cli.bm25 import BM25Index

TEXTS = [
    "Deploy MySQL on the managed database service",
    "A virtual cloud network is a private network in one region",
    "A web application firewall filters HTTP requests with rules",
    "Schedule backups of block volumes with a backup policy",
    "Lifecycle rules move objects to archive storage",
]


def test_obvious_lexical_match_first():
    index = BM25Index(TEXTS)
    scores, idx = index.search(["firewall http requests", "block volume backups", "virtual cloud network"], k=2)
    assert idx[:, 0].tolist() == [2, 3, 1]
    assert scores.shape == (3, 2) and scores.dtype == np.float32
    assert (scores[:, 0] > scores[:, 1]).all()


def test_ties_break_by_corpus_index_and_k_is_clipped():
    index = BM25Index(["alpha beta", "gamma", "alpha beta", "alpha beta"])
    scores, idx = index.search(["alpha"], k=10)
    assert idx.shape == (1, 4)
    assert idx[0].tolist() == [0, 2, 3, 1]  # three equal scores in index order, then the non-match
    assert scores[0, 0] == scores[0, 1] == scores[0, 2] > scores[0, 3] == 0.0


def test_exclude_and_padding():
    index = BM25Index(["alpha", "alpha beta", "gamma"])
    scores, idx = index.search(["alpha", "gamma"], k=3, exclude=[{0}, {0, 1, 2}])
    assert idx.tolist() == [[1, 2, -1], [-1, -1, -1]]
    assert np.isneginf(scores[1]).all()


def test_unknown_words_score_zero():
    index = BM25Index(TEXTS)
    assert index.scores("zebra xylophone").tolist() == [0.0] * 5
    assert index.scores("").tolist() == [0.0] * 5


def test_same_input_same_output():
    a = BM25Index(TEXTS).search(["rules for storage"], k=5)
    b = BM25Index(TEXTS).search(["rules for storage"], k=5)
    assert a[1].tolist() == b[1].tolist() and a[0].tolist() == b[0].tolist()


def test_bad_arguments():
    with pytest.raises(ValueError, match="at least one text"):
        BM25Index([])
    with pytest.raises(ValueError, match="k must be > 0"):
        BM25Index(TEXTS).search(["x"], k=0)
