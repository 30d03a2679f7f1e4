"""mining/update.py on vectors, without files: the update plan, the allow-list, and for random edits of documents,
queries and qrels under every supported option, rows equal to a cold `mine_negatives` over the same vectors and
every pair the edit cannot have changed reused.

A document's "text hash" here is a hash of its vector (a changed text is a new vector); a query's is its vector's
and its positives' (its exclusions). The pipeline-level version of these checks (embed cache, `reduce
--fit-from`, the stage's files) is tests/test_incremental.py; this one runs hundreds of edits in seconds.
"""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hnm_cli.config import MineConfig
from hnm_cli.mining import Pair, PairResult, mine_negatives
from hnm_cli.mining import update as update_mod
from hnm_cli.mining.strategies import Ids
from hnm_cli.mining.update import plan_update, unsupported, update_negatives
from hnm_cli.search import VectorSource

DIM = 6
# Every option value on the update's allow-list, in the combinations that select differently.
RULE = {"strategy": "rule", "relative_margin": None}  # the rule without a ceiling (a margin runs the controls)
OPTIONS: dict[str, dict[str, Any]] = {
    "default": {},  # top-k, 3 negatives below 95% of the positive's score (TopK-PercPos)
    "topk-plain": {"relative_margin": None, "num_negatives": 2},
    "topk-window": {"range_max": 5, "num_negatives": 2},
    "topk-bounds": {"relative_margin": None, "absolute_margin": 0.02, "max_score": 0.9, "min_score": 0.1},
    "topk-small-blocks": {"block_size": 5, "query_block": 3, "num_negatives": 4},
    "rule-fill": {**RULE},  # the rule, 3 negatives, fallback next, fill short (the default before issue 20)
    "paper": {"preset": "paper"},
    "next-empty": {**RULE, "fill": "empty", "num_negatives": 2},
    "no-fallback": {**RULE, "fallback": "none", "num_negatives": 2},
    "margin": {**RULE, "c2_margin": 0.05, "num_negatives": 2},
    "small-blocks": {**RULE, "block_size": 5, "query_block": 3, "num_negatives": 4},
    "random": {"strategy": "random"},
    "random-seed": {"strategy": "random", "seed": 7, "num_negatives": 2, "fallback": "none"},
}


def _cfg(name: str) -> MineConfig:
    opts = dict(OPTIONS[name])
    preset = opts.pop("preset", None)
    return MineConfig().merged(**opts).without(*(k for k, v in opts.items() if v is None)).with_preset(preset)


def _unit(v: np.ndarray) -> np.ndarray:
    return (v / np.linalg.norm(v, axis=-1, keepdims=True)).astype(np.float32)


@dataclasses.dataclass
class World:
    """Documents and queries by id (in row order) with their vectors, and the (query, positive) pairs."""

    docs: dict[str, np.ndarray]
    queries: dict[str, np.ndarray]
    pairs: list[tuple[str, str]]

    def copy(self) -> World:
        return World(dict(self.docs), dict(self.queries), list(self.pairs))


def _world(rng: np.random.Generator, n_docs: int = 36, n_queries: int = 9) -> World:
    # A few clusters, so most pairs have documents above their positive and some do not (fill and fallback run).
    centres = _unit(rng.standard_normal((4, DIM)))
    pick = lambda: _unit(centres[rng.integers(4)] + 0.6 * rng.standard_normal(DIM))  # noqa: E731
    docs = {f"d{i}": pick() for i in range(n_docs)}
    queries = {f"q{i}": pick() for i in range(n_queries)}
    pairs = [(q, f"d{rng.integers(n_docs)}") for q in queries]
    pairs += [(f"q{rng.integers(n_queries)}", f"d{rng.integers(n_docs)}") for _ in range(3)]
    return World(docs, queries, list(dict.fromkeys(pairs)))


def _edit(w: World, script: list[tuple[str, int]], rng: np.random.Generator) -> World:
    w = w.copy()
    new_vec = lambda: _unit(rng.standard_normal(DIM))  # noqa: E731
    for step, (op, k) in enumerate(script):
        ids = list(w.docs)
        positives = {d for _, d in w.pairs}
        if op == "add_doc":
            ids.insert(k % (len(ids) + 1), f"n{step}")
            w.docs = {d: w.docs.get(d, new_vec()) if d != f"n{step}" else new_vec() for d in ids}
        elif op == "change_doc":
            w.docs[ids[k % len(ids)]] = new_vec()
        elif op == "delete_doc":
            victims = [d for d in ids if d not in positives]
            if victims:
                del w.docs[victims[k % len(victims)]]
        elif op == "move_doc":  # same text, another row: ties and ranks go by row
            d = ids.pop(k % len(ids))
            ids.insert((k // 7) % (len(ids) + 1), d)
            w.docs = {x: w.docs[x] for x in ids}
        elif op == "add_query":
            q = f"nq{step}"
            w.queries[q] = new_vec()
            w.pairs.append((q, ids[k % len(ids)]))
        elif op == "change_query":
            w.queries[list(w.queries)[k % len(w.queries)]] = new_vec()
        elif op == "delete_query" and len(w.queries) > 1:
            q = list(w.queries)[k % len(w.queries)]
            del w.queries[q]
            w.pairs = [p for p in w.pairs if p[0] != q]
        elif op == "add_pair":  # a new positive of a known query: its exclusions change
            p = (list(w.queries)[k % len(w.queries)], ids[(k // 3) % len(ids)])
            if p not in w.pairs:
                w.pairs.append(p)
    return w


def _h(v: np.ndarray) -> str:
    return hashlib.blake2b(v.tobytes(), digest_size=8).hexdigest()


def _snapshot(w: World) -> tuple[dict[str, str], dict[str, Any]]:
    positives: dict[str, list[str]] = {}
    for q, d in w.pairs:
        positives.setdefault(q, []).append(d)
    return {d: _h(v) for d, v in w.docs.items()}, {q: (_h(w.queries[q]), sorted(positives[q])) for q in positives}


@dataclasses.dataclass
class Inputs:
    query_vecs: np.ndarray
    corpus: VectorSource
    pairs: list[Pair]
    excluded: dict[int, set[int]]
    ids: Ids
    corpus_row: dict[str, int]


def _inputs(w: World) -> Inputs:
    corpus_ids = list(w.docs)
    query_ids = list(dict.fromkeys(q for q, _ in w.pairs))
    corpus_row = {d: i for i, d in enumerate(corpus_ids)}
    query_row = {q: i for i, q in enumerate(query_ids)}
    excluded: dict[int, set[int]] = {}
    for q, d in w.pairs:  # every positive of a query is excluded for all its pairs, as the stage does
        excluded.setdefault(query_row[q], set()).add(corpus_row[d])
    return Inputs(
        np.stack([w.queries[q] for q in query_ids]),
        VectorSource([np.stack([w.docs[d] for d in corpus_ids])]),
        [Pair(query_row[q], corpus_row[d]) for q, d in w.pairs],
        excluded,
        Ids(corpus_ids, query_ids),
        corpus_row,
    )


def _rows(w: World, inp: Inputs, results: list[PairResult]) -> dict[tuple[str, str], list[dict[str, Any]]]:
    return {
        p: [
            {"doc_id": inp.ids.corpus[n.doc_row], "source": n.source, "rank": n.rank, "d_qd": n.d_qd,
             "d_qp": n.d_qp, "d_pd": n.d_pd}
            for n in r.negatives
        ]
        for p, r in zip(w.pairs, results, strict=True)
    }  # fmt: skip


def _cold(w: World, cfg: MineConfig) -> tuple[Inputs, list[PairResult]]:
    inp = _inputs(w)
    results, _ = mine_negatives(inp.query_vecs, inp.corpus, inp.pairs, inp.excluded, cfg, ids=inp.ids)
    return inp, results


def _cannot_have_changed(before: World, after: World, old_rows: dict[tuple[str, str], list[dict[str, Any]]]) -> int:
    """Pairs that existed before with the same query, positive and exclusions, none of whose picks was removed or
    changed: the edit cannot have changed their rows except through added documents (merged, not re-mined)."""
    (docs0, queries0), (docs1, queries1) = _snapshot(before), _snapshot(after)
    return sum(
        1
        for q, d in after.pairs
        if (q, d) in old_rows
        and queries0.get(q) == queries1[q]
        and docs0[d] == docs1[d]
        and all(docs1.get(n["doc_id"]) == docs0[n["doc_id"]] for n in old_rows[(q, d)])
    )


def _heads(inp: Inputs, results: list[PairResult]) -> dict[str, tuple[np.ndarray, float]]:
    """What the stage keeps in the artifact's state: each query's ranking head, in that run's corpus rows."""
    return {inp.ids.queries[r.pair.query_row]: (r.head.rows, r.head.floor) for r in results if r.head is not None}


def _step(
    before: World, after: World, cfg: MineConfig, inp0: Inputs, res0: list[PairResult], *, heads: bool = True
) -> tuple[Inputs, list[PairResult], Any]:
    """`hnm mine --update` from the results `res0` of `before` (a cold run's or an update's) to `after`."""
    (docs0, queries0), (docs1, queries1) = _snapshot(before), _snapshot(after)
    inp1 = _inputs(after)
    old_heads = _heads(inp0, res0) if heads else None
    plan = plan_update(docs0, queries0, _rows(before, inp0, res0), docs1, queries1, after.pairs, inp1.corpus_row,
                       old_heads=old_heads)  # fmt: skip
    got, _, counts = update_negatives(inp1.query_vecs, inp1.corpus, inp1.pairs, inp1.excluded, cfg, plan, ids=inp1.ids)
    return inp1, got, counts


def _dump(w: World, inp: Inputs, results: list[PairResult]) -> bytes:
    return orjson.dumps(list(_rows(w, inp, results).items()))


def _update(before: World, after: World, cfg: MineConfig, *, heads: bool = True) -> tuple[bytes, bytes, Any, int]:
    inp0, res0 = _cold(before, cfg)
    inp1, got, counts = _step(before, after, cfg, inp0, res0, heads=heads)
    _, cold = _cold(after, cfg)
    return (
        _dump(after, inp1, got),
        _dump(after, inp1, cold),
        counts,
        _cannot_have_changed(before, after, _rows(before, inp0, res0)),
    )


OPS = ["add_doc", "change_doc", "delete_doc", "move_doc", "add_query", "change_query", "delete_query", "add_pair"]
scripts = st.lists(st.tuples(st.sampled_from(OPS), st.integers(0, 1000)), max_size=8)


TOPK_OPTIONS = [name for name in OPTIONS if _cfg(name).strategy == "topk"]
# Top-k merges from the heads the earlier run kept, or without them (an artifact mined before heads were kept).
CASES = [(name, True) for name in OPTIONS] + [(name, False) for name in TOPK_OPTIONS]


@pytest.mark.parametrize(("name", "heads"), CASES, ids=[f"{n}{'' if h else '-no-heads'}" for n, h in CASES])
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**16), script=scripts)
def test_update_rows_equal_a_cold_mine_and_reuse_what_the_edit_cannot_change(
    name: str, heads: bool, seed: int, script
) -> None:
    cfg = _cfg(name)
    assert unsupported(cfg) is None, "every option here must be on the allow-list"
    rng = np.random.default_rng(seed)
    before = _world(rng)
    after = _edit(before, script, rng)
    got, cold, counts, unchanged = _update(before, after, cfg, heads=heads)
    assert got == cold
    assert counts.pairs_drifted == 0  # the same vectors: nothing may count as drift
    # Top-k merges a query whole or mines it whole: an unchanged pair may go with its query (counted as such).
    assert counts.pairs_reused + counts.pairs_remined_with_their_query >= unchanged
    assert counts.pairs_reused + counts.pairs_remined == len(after.pairs)
    assert (
        counts.pairs_remined == counts.pairs_new + counts.pairs_inputs_changed + counts.pairs_remined_with_their_query
    )
    if cfg.strategy != "topk":
        assert counts.pairs_remined_with_their_query == 0


@pytest.mark.parametrize("name", TOPK_OPTIONS)
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**16), first=scripts, second=scripts)
def test_a_nightly_chain_of_updates_stays_equal_to_a_cold_mine(name: str, seed: int, first, second) -> None:
    # The second update starts from the first one's rows and heads, not a cold run's: a head the merge
    # rebuilt (shortened by removals, lengthened by additions) must be as good as a searched one.
    cfg = _cfg(name)
    rng = np.random.default_rng(seed)
    w0 = _world(rng)
    w1 = _edit(w0, first, rng)
    w2 = _edit(w1, second, rng)
    inp0, res0 = _cold(w0, cfg)
    inp1, res1, _ = _step(w0, w1, cfg, inp0, res0)
    inp2, res2, counts = _step(w1, w2, cfg, inp1, res1)
    assert _dump(w2, inp2, res2) == _dump(w2, inp2, _cold(w2, cfg)[1])
    assert counts.pairs_drifted == 0


def test_a_removed_document_that_no_head_lists_costs_no_query_its_rows() -> None:
    # The default's queries short of picks (few documents under the ceiling) used to be mined again after any
    # removal; with their heads kept, only those whose head listed a removed document are.
    rng = np.random.default_rng(8)
    before = _world(rng, n_docs=200, n_queries=20)
    cfg = _cfg("default")
    inp0, res0 = _cold(before, cfg)
    short = [p for p, r in zip(before.pairs, res0, strict=True) if len(r.negatives) < cfg.num_negatives]
    assert short, "the world must have queries short of picks for this test to mean anything"
    # Not a positive and not a pick (those pairs' inputs changed), and not listed by a short query's head.
    taken = {d for _, d in before.pairs} | {inp0.ids.corpus[n.doc_row] for r in res0 for n in r.negatives}
    listed = {
        inp0.ids.corpus[int(row)]
        for p, r in zip(before.pairs, res0, strict=True)
        if p in short and r.head is not None
        for row in r.head.rows
    }
    unlisted = [d for d in before.docs if d not in listed | taken]
    assert unlisted
    after = before.copy()
    del after.docs[unlisted[0]]
    inp1, got, counts = _step(before, after, cfg, inp0, res0)
    assert _dump(after, inp1, got) == _dump(after, inp1, _cold(after, cfg)[1])
    assert (counts.pairs_reused, counts.pairs_remined, counts.ranks_recounted) == (len(after.pairs), 0, 0)
    # A removed document a short query listed: that query may now reach one more document, so it is mined again.
    victim = next(
        inp0.ids.corpus[int(row)]
        for p, r in zip(before.pairs, res0, strict=True)
        if p in short and r.head is not None
        for row in r.head.rows
        if inp0.ids.corpus[int(row)] not in taken
    )
    after = before.copy()
    del after.docs[victim]
    inp1, got, counts = _step(before, after, cfg, inp0, res0)
    assert _dump(after, inp1, got) == _dump(after, inp1, _cold(after, cfg)[1])
    assert counts.pairs_remined_with_their_query >= 1 and counts.ranks_recounted == 0


def test_no_edit_reuses_every_pair_and_a_new_document_only_touches_the_pairs_it_enters() -> None:
    rng = np.random.default_rng(3)
    before = _world(rng, n_docs=60, n_queries=15)
    _, _, counts, _ = _update(before, before, _cfg("default"))
    assert (counts.pairs_reused, counts.pairs_remined, counts.pairs_changed_by_new_documents) == (
        len(before.pairs),
        0,
        0,
    )
    after = _edit(before, [("add_doc", 4)], rng)
    got, cold, counts, _ = _update(before, after, _cfg("default"))
    assert got == cold
    assert counts.pairs_reused == len(after.pairs) and counts.documents_added == 1


def test_a_vector_that_moved_under_an_unchanged_text_is_mined_again_as_drift() -> None:
    rng = np.random.default_rng(5)
    before = _world(rng)
    cfg = _cfg("default")
    inp0, res0 = _cold(before, cfg)
    old_rows = _rows(before, inp0, res0)
    after = before.copy()
    q, d = after.pairs[0]
    # One bit of the positive's vector: what an encoder that answers a text differently from run to run does.
    after.docs[d] = after.docs[d].copy()
    after.docs[d].view(np.uint32)[0] ^= 1
    docs0, queries0 = _snapshot(before)  # the text hashes did not change
    inp1, cold = _cold(after, cfg)
    plan = plan_update(docs0, queries0, old_rows, docs0, queries0, after.pairs, inp1.corpus_row)
    got, _, counts = update_negatives(inp1.query_vecs, inp1.corpus, inp1.pairs, inp1.excluded, cfg, plan, ids=inp1.ids)
    assert _rows(after, inp1, got) == _rows(after, inp1, cold)
    with_d = sum(1 for p in after.pairs if p[1] == d or any(n["doc_id"] == d for n in old_rows[p]))
    assert counts.pairs_drifted == with_d >= 1
    assert counts.pairs_reused == len(after.pairs) - with_d


def test_plan_says_why_each_pair_is_mined_again() -> None:
    neg = lambda doc: {"doc_id": doc, "source": "rule", "rank": 1, "d_qd": 0.1, "d_qp": 0.2, "d_pd": 0.3}  # noqa: E731
    old_docs = {"a": "1", "b": "2", "c": "3", "x": "4"}
    old_q = {"q1": ("h1", "e"), "q2": ("h2", "e"), "q3": ("h3", "e")}
    rows = {("q1", "a"): [neg("b")], ("q2", "a"): [neg("c")], ("q3", "b"): [neg("x")]}
    new_docs = {"a": "1", "b": "2", "c": "3*", "y": "5"}  # c changed, x deleted, y added
    new_q = {"q1": ("h1", "e"), "q2": ("h2", "e"), "q3": ("h3", "e"), "q4": ("h4", "e")}
    pairs = [("q1", "a"), ("q2", "a"), ("q3", "b"), ("q4", "a")]
    plan = plan_update(old_docs, old_q, rows, new_docs, new_q, pairs, {d: i for i, d in enumerate(new_docs)})
    assert [p is not None for p in plan.previous] == [True, False, False, False]
    assert (plan.pairs_new, plan.pairs_inputs_changed, plan.removed) == (1, 2, 2)
    assert sorted(plan.added_rows.tolist()) == [2, 3] and plan.removed_any and not plan.reordered
    assert plan.previous[0] is not None and plan.previous[0].negatives[0].doc_row == 1


# ---------------------------------------------------------------------------------------------
# Fail closed: only what is on the allow-list is merged
# ---------------------------------------------------------------------------------------------


def test_the_allow_list_refuses_every_other_strategy_and_value() -> None:
    assert unsupported(MineConfig()) is None
    assert "BM25" in (unsupported(MineConfig(strategy="bm25")) or "")
    rule = MineConfig(strategy="rule", relative_margin=None)
    assert unsupported(rule) is None
    for opts in ({"fallback": "bm25"}, {"fallback": "random"}, {"index": "hnsw"}, {"sampling_strategy": "random"},
                 {"range_min": 1}, {"range_max": 9}, {"max_score": 0.9}, {"min_score": 0.1},
                 {"absolute_margin": 0.1}, {"relative_margin": 0.1},
                 {"vote": "majority"}, {"random_negatives": 2}):  # fmt: skip
        why = unsupported(rule.merged(**opts))
        assert why is not None and next(iter(opts)) in why, opts
    # Top-k's filters judge each document alone (merged); its window's start, sampling and controls are refused.
    for opts in ({"range_max": 9}, {"max_score": 0.9}, {"min_score": 0.1}, {"absolute_margin": 0.1}):
        assert unsupported(MineConfig().merged(**opts)) is None, opts
    for opts in ({"fallback": "bm25"}, {"fallback": "random"}, {"index": "hnsw"}, {"sampling_strategy": "random"},
                 {"range_min": 1}, {"vote": "majority"}, {"random_negatives": 2}):  # fmt: skip
        why = unsupported(MineConfig().merged(**opts))
        assert why is not None and next(iter(opts)) in why, opts


def test_an_option_added_later_is_refused_until_someone_lists_it() -> None:
    # What the next mining option looks like: a new MineConfig field. At its default it changes nothing; at any
    # other value the update cannot know what it does, so it must not merge as if it were absent.
    later = dataclasses.make_dataclass(
        "LaterConfig", [("member_votes", int, dataclasses.field(default=0))], bases=(MineConfig,), frozen=True
    )
    assert unsupported(later()) is None
    why = unsupported(later(member_votes=2))
    assert why is not None and "member_votes" in why


def test_a_strategy_added_later_is_mined_in_full_not_merged_as_random(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(11)
    before = _world(rng)
    after = _edit(before, [("add_doc", 3), ("add_query", 5)], rng)
    cfg = _cfg("random")
    inp0, res0 = _cold(before, cfg)
    old_rows = _rows(before, inp0, res0)
    (docs0, queries0), (docs1, queries1) = _snapshot(before), _snapshot(after)
    inp1 = _inputs(after)
    plan = plan_update(docs0, queries0, old_rows, docs1, queries1, after.pairs, inp1.corpus_row)
    fancy = MineConfig(strategy="random")
    object.__setattr__(fancy, "strategy", "fancy")  # a Strategy word this module has never heard of

    def fancy_miner(query_vecs, corpus, pairs, excluded, params, **_: Any):  # the new strategy's own picks
        assert params.strategy == "fancy"
        return [PairResult(p, []) for p in pairs], update_mod.MiningStats()

    monkeypatch.setattr(update_mod, "mine_negatives", fancy_miner)
    got, _, counts = update_negatives(
        inp1.query_vecs, inp1.corpus, inp1.pairs, inp1.excluded, fancy, plan, ids=inp1.ids
    )
    assert all(not r.negatives for r in got)  # the old random rows were not merged into it
    assert counts.pairs_reused == 0 and counts.pairs_remined == len(after.pairs)
    assert counts.recomputed_in_full is not None and "fancy" in counts.recomputed_in_full
