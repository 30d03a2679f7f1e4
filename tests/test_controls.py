"""False-negative controls (mining/controls.py): hand-computed cases for the ceiling, the vote, the window, the
random mix, suspected positives and the risk figures, on the rule and on top-k, plus the stage's refusals."""

from __future__ import annotations

import math

import numpy as np
import orjson
import pytest

from hnm_cli.choices import Fallback, Fill, Strategy, Vote
from hnm_cli.config import ConfigError, MineConfig
from hnm_cli.mining import Pair, mine_negatives
from hnm_cli.mining.controls import Members, fn_risk, vote_threshold
from hnm_cli.mining.results import Negative, PairResult
from hnm_cli.search import VectorSource

# Query q = e1, positive PD with s(Q,PD) = 0.8. Each candidate D_s = (s, 0, -sqrt(1 - s^2)) has s(Q,D) = s and
# s(PD,D) = 0.8 s, so d(Q,D) < d(PD,D) (C2) holds for every s > 0: only C1 and the controls decide.
S_QP = 0.8
SIMS = [0.9, 0.78, 0.7, 0.5, 0.3, 0.2]  # rows 1..6; 0.9 is above PD (C1), 0.78 within 95% of it (PercPos)


def _vec(s: float) -> list[float]:
    return [s, 0.0, -math.sqrt(1.0 - s * s)]


def _corpus() -> tuple[np.ndarray, VectorSource]:
    pd = [S_QP, math.sqrt(1 - S_QP**2), 0.0]
    docs = np.array([pd, *[_vec(s) for s in SIMS]], dtype=np.float32)
    q = np.array([[1.0, 0.0, 0.0]], dtype=np.float32)
    return q, VectorSource.from_array(docs)


def _mine(**kw):
    q, src = _corpus()
    rule = {"strategy": Strategy.RULE, "fallback": Fallback.NEXT, "fill": Fill.SHORT, "relative_margin": None}
    cfg = MineConfig(**{**rule, **kw})
    return mine_negatives(q, src, [Pair(0, 0)], {}, cfg)


def _rows(result: PairResult) -> list[int]:
    return [n.doc_row for n in result.negatives]


def test_the_rule_with_the_fill_takes_the_zone_above_the_positive():
    results, stats = _mine(num_negatives=2)
    assert _rows(results[0]) == [1, 2]  # the rule's one C1 negative, then the nearest C2-passing one
    assert results[0].suspected is None and stats.guards is None
    assert stats.fn_risk["above_positive"] == 0.5 and stats.fn_risk["above_percpos"] == 1.0


def test_the_default_recipe_takes_the_nearest_documents_below_95_percent_of_the_positive():
    q, src = _corpus()
    results, stats = mine_negatives(q, src, [Pair(0, 0)], {}, MineConfig())
    assert _rows(results[0]) == [3, 4, 5]  # s = 0.7, 0.5, 0.3: 0.9 and 0.78 are above 0.95 * 0.8 = 0.76
    assert stats.rejected_by == {"relative_margin": 2}
    assert stats.fn_risk["above_positive"] == 0.0 and stats.fn_risk["above_percpos"] == 0.0


def test_a_relative_ceiling_on_the_rule_removes_everything_above_95_percent_of_the_positive():
    results, stats = _mine(num_negatives=2, relative_margin=0.05)
    r = results[0]
    assert _rows(r) == [3, 4]  # s = 0.7 and 0.5: below 0.95 * 0.8 = 0.76
    assert [(n.doc_row, n.source) for n in r.suspected] == [(1, "ceiling"), (2, "ceiling")]
    assert stats.guards["removed"] == {"ceiling": 2, "vote": 0} and stats.guards["suspected"] == 2
    assert stats.fn_risk["above_positive"] == 0.0 and stats.fn_risk["above_percpos"] == 0.0


def test_an_absolute_ceiling_and_a_window_sampled_with_a_seed():
    results, _ = _mine(num_negatives=1, absolute_margin=0.15)  # keep s <= 0.65
    assert _rows(results[0]) == [4]
    a, _ = _mine(num_negatives=2, absolute_margin=0.15, range_max=4, sampling_strategy="random", seed=3)
    b, _ = _mine(num_negatives=2, absolute_margin=0.15, range_max=4, sampling_strategy="random", seed=3)
    assert _rows(a[0]) == _rows(b[0]) and set(_rows(a[0])) <= {4, 5, 6}  # the window is [0.5, 0.3, 0.2]


def test_the_ceiling_works_on_topk_like_sentence_transformers_relative_margin():
    q, src = _corpus()
    cfg = MineConfig(strategy=Strategy.TOPK, num_negatives=2, relative_margin=0.05, random_negatives=0)
    plain, _ = mine_negatives(q, src, [Pair(0, 0)], {}, cfg)
    assert _rows(plain[0]) == [3, 4]  # top-k's own filter (no control runs): the same documents


def _members(above_for: dict[int, int]) -> Members:
    """Three one-dimensional members; member i ranks row r above PD iff i < above_for.get(r, 0)."""
    n_docs = 1 + len(SIMS)
    queries, corpora = [], []
    for i in range(3):
        col = np.full((n_docs, 2), [0.0, 1.0], dtype=np.float32)
        col[0] = [0.5, math.sqrt(0.75)]  # PD: s = 0.5 for every member
        for row, k in above_for.items():
            col[row] = [0.9, math.sqrt(1 - 0.81)] if i < k else [0.1, math.sqrt(0.99)]
        queries.append(np.array([[1.0, 0.0]], dtype=np.float32))
        corpora.append(VectorSource.from_array(col))
    return Members(["a", "b", "c"], queries, corpora, [None, None, None])


def test_the_vote_drops_what_the_members_rank_above_the_positive():
    q, src = _corpus()
    members = _members({3: 3, 4: 2, 5: 1})  # row 3: all members above PD, row 4: two, row 5: one
    base = {"strategy": Strategy.RULE, "fallback": Fallback.NEXT, "fill": Fill.SHORT, "relative_margin": 0.05}
    expect = {Vote.ALL: [4, 5], Vote.MAJORITY: [5, 6], Vote.ANY: [6]}
    for vote, rows in expect.items():
        cfg = MineConfig(**base, num_negatives=2, vote=vote)
        results, stats = mine_negatives(q, src, [Pair(0, 0)], {}, cfg, members=members)
        assert _rows(results[0])[: len(rows)] == rows, vote
        assert {n.source for n in results[0].suspected} <= {"ceiling", "vote"}
    assert stats.guards["removed"] == {"ceiling": 2, "vote": 3}
    # Risk: with members, the figures say how often they disagree about the chosen negatives (row 6: none above).
    assert stats.fn_risk["members_disagree"] == 0.0 and stats.fn_risk["members"] == ["a", "b", "c"]
    assert [vote_threshold(v, 3) for v in (Vote.ANY, Vote.MAJORITY, Vote.ALL)] == [1, 2, 3]


def test_a_vote_without_members_is_refused():
    q, src = _corpus()
    with pytest.raises(ValueError, match="members"):
        mine_negatives(q, src, [Pair(0, 0)], {}, MineConfig(vote=Vote.ANY))


def test_the_random_mix_takes_seeded_documents_the_pair_does_not_hold():
    q, src = _corpus()
    cfg = MineConfig(strategy=Strategy.RULE, num_negatives=3, random_negatives=1, relative_margin=0.05)
    results, stats = mine_negatives(q, src, [Pair(0, 0)], {}, cfg)
    negs = results[0].negatives
    assert [n.source for n in negs] == ["fallback-next", "fallback-next", "random"]
    assert _rows(results[0])[:2] == [3, 4]
    assert negs[2].doc_row not in {0, 1, 2, 3, 4} and negs[2].d_pd is not None
    assert stats.guards["random_mixed"] == 1
    again, _ = mine_negatives(q, src, [Pair(0, 0)], {}, cfg)
    assert _rows(again[0]) == _rows(results[0])


def test_fn_risk_counts_each_zone_by_hand():
    def neg(s_qd: float, s_pd: float) -> Negative:
        return Negative(1, "x", None, 1 - s_qd, 1 - 0.6, 1 - s_pd)

    r = PairResult(Pair(0, 0), [neg(0.7, 0.1), neg(0.58, 0.96), neg(0.2, 0.3), neg(0.1, 0.2)])
    risk = fn_risk([r])
    assert risk == {"negatives": 4, "above_positive": 0.25, "above_percpos": 0.5, "near_duplicate": 0.25}


def test_config_checks_random_negatives_and_margins():
    with pytest.raises(ConfigError, match="random_negatives must be between 0 and num_negatives"):
        MineConfig(num_negatives=2, random_negatives=3).validate()
    with pytest.raises(ConfigError, match="relative_margin"):
        MineConfig(relative_margin=7).validate()


def test_the_stage_writes_suspected_positives_and_risk_and_refuses_modes_that_skip_the_controls(
    tmp_path, tiny_data, cli
):
    embed, reduce_out, out = tmp_path / "embed", tmp_path / "reduce", tmp_path / "mine"
    r = cli("embed", "--data", str(tiny_data), "--out", str(embed), "--model", "hash:16", "--model", "hash:24", "-q")
    assert r.exit_code == 0, r.stderr
    r = cli("reduce", "--embeddings", str(embed), "--out", str(reduce_out), "-q")
    assert r.exit_code == 0, r.stderr
    args = ["mine", "--vectors", str(reduce_out), "--data", str(tiny_data), "--split", "train", "-q"]
    r = cli(*args, "--out", str(out), "--num-negatives", "2", "--relative-margin", "0", "--vote", "any",
            "--random-negatives", "1")  # fmt: skip
    assert r.exit_code == 0, r.stderr
    stats = orjson.loads((out / "stats.json").read_bytes())
    assert set(stats["guards"]["removed"]) == {"ceiling", "vote"}
    assert len(stats["fn_risk"]["members"]) == 2
    rows = [orjson.loads(x) for f in sorted(out.glob("rows-*.jsonl")) for x in f.read_bytes().splitlines()]
    hard = [n for row in rows for n in row["negatives"] if n["source"] != "random"]
    assert hard and all(n["d_qd"] >= n["d_qp"] for n in hard)  # the ceiling at the positive's own score
    assert all("suspected" in row for row in rows)
    assert any(n["source"] == "random" for row in rows for n in row["negatives"])
    shown = cli("show", str(out), "--data", str(tiny_data), "-n", "3")
    assert shown.exit_code == 0, shown.stderr
    if any(row["suspected"] and row["negatives"] for row in rows):
        assert "suspected positive (" in shown.stdout
    # Default mining writes no `suspected` key (its rows keep their bytes).
    r = cli(*args, "--out", str(tmp_path / "plain"))
    assert r.exit_code == 0, r.stderr
    plain = (tmp_path / "plain" / "rows-00000.jsonl").read_bytes()
    assert b"suspected" not in plain and b"fn_risk" in (tmp_path / "plain" / "stats.json").read_bytes()
    for extra in (["--audit"], ["--strategy", "random"]):
        r = cli(*args, "--out", str(tmp_path / "x"), "--vote", "any", *extra)
        assert r.exit_code != 0 and r.stderr.startswith("Error:") and len(r.stderr.strip().splitlines()) == 1
    r = cli(*args, "--out", str(tmp_path / "y"), "--vectors", str(embed / "hash-16"), "--vote", "any")
    assert r.exit_code != 0 and "needs an ensemble" in r.stderr
