"""Executors without Ray: mining in blocks equals one call for every strategy, windows, fallbacks and the audit;
everything a worker receives survives pickling; `--executor ray` without the extra is one clear error."""

from __future__ import annotations

import dataclasses
import pickle
import sys

import numpy as np
import pytest
from test_mine_core import clustered

from hnm_cli import executors
from hnm_cli.artifacts.vectors import VectorSetWriter, open_vector_source
from hnm_cli.choices import Executor
from hnm_cli.config import MineConfig
from hnm_cli.errors import ConfigError
from hnm_cli.executors.local import LocalRunner
from hnm_cli.mining import Texts, mine_negatives
from hnm_cli.mining.blocks import plan_blocks
from hnm_cli.search import VectorSource


class PicklingRunner(LocalRunner):
    """A local runner that sends setup, work, items and results through pickle, as a process boundary does."""

    def imap(self, setup, work, items, **kw):
        setup, work = pickle.loads(pickle.dumps((setup, work)))
        sent = [pickle.loads(pickle.dumps(item)) for item in items]
        for i, result in super().imap(setup, work, sent, **kw):
            yield i, pickle.loads(pickle.dumps(result))


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    x, q, pairs, excluded = clustered(3, n=1500, dim=16, n_pairs=150)
    folder = tmp_path_factory.mktemp("vectors")
    writer = VectorSetWriter(folder)
    for shard, lo in enumerate(range(0, len(x), 600)):  # three shards, memmapped: they travel as paths
        writer.add_shard("corpus", shard, [f"d{i}" for i in range(lo, min(lo + 600, len(x)))], x[lo : lo + 600])
    writer.add_shard("queries", 0, [f"q{i}" for i in range(len(q))], q)
    writer.finish(stage="embed-model", params={}, inputs=[])
    source = open_vector_source(folder / "corpus")
    texts = Texts(
        corpus=[f"doc {i} topic {i % 40}" for i in range(len(x))], queries=[f"topic {i % 40}" for i in range(len(q))]
    )
    return q, source, pairs, excluded, texts


CASES = {
    "rule": {},
    "rule-3": {"num_negatives": 3},
    "rule-next": {"fallback": "next"},
    "rule-next-short": {"fallback": "next", "fill": "short", "num_negatives": 3},
    "rule-window-random": {"num_negatives": 2, "range_min": 1, "range_max": 6, "sampling_strategy": "random"},
    "rule-margin": {"c2_margin": 0.05, "num_negatives": 2},
    "rule-fallback-random": {"fallback": "random", "num_negatives": 2},
    "rule-fallback-bm25": {"fallback": "bm25"},
    "topk": {"strategy": "topk"},
    "topk-percpos-random": {
        "strategy": "topk", "num_negatives": 3, "relative_margin": 0.05, "sampling_strategy": "random", "seed": 7,
    },
    "topk-window": {"strategy": "topk", "num_negatives": 2, "range_min": 2, "range_max": 9, "max_score": 0.95},
    "random": {"strategy": "random", "num_negatives": 3},
    "bm25": {"strategy": "bm25", "num_negatives": 2},
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(CASES))
def test_blocks_give_one_calls_results(data, case: str) -> None:
    q, source, pairs, excluded, texts = data
    cfg = MineConfig(query_block=8, block_size=500, candidate_k=20, **CASES[case])
    local, local_stats = mine_negatives(q, source, pairs, excluded, cfg, texts=texts)
    blocked, blocked_stats = mine_negatives(
        q, source, pairs, excluded, cfg, texts=texts, runner=PicklingRunner(workers=2)
    )
    assert blocked == local
    assert blocked_stats == local_stats
    assert any(r.negatives for r in local)


@pytest.mark.parametrize("sampling", ["top", "random"])
def test_blocks_give_one_calls_audit(data, sampling: str) -> None:
    q, source, pairs, excluded, _ = data
    # No fallback: the audit records the rule's selections, which are then every negative of the rows.
    cfg = MineConfig(strategy="rule", relative_margin=None, query_block=8, candidate_k=10, num_negatives=2,
                     range_max=5, sampling_strategy=sampling, fallback="none")  # fmt: skip
    one, many = [], []
    local, _ = mine_negatives(q, source, pairs, excluded, cfg, audit=one.append)
    blocked, _ = mine_negatives(q, source, pairs, excluded, cfg, audit=many.append, runner=PicklingRunner(workers=3))
    assert blocked == local
    assert many == one
    assert sum(r.selected for r in one) == sum(len(r.negatives) for r in local)


def test_blocks_cut_at_the_chunks_of_one_call(data) -> None:
    _, _, pairs, _, _ = data
    rule = plan_blocks(pairs, MineConfig(query_block=8, strategy="rule", relative_margin=None), workers=2)
    assert 4 <= len(rule) <= 8 and all(int(b.rows[0]) % 8 == 0 for b in rule)
    assert np.array_equal(np.concatenate([b.rows for b in rule]), np.arange(len(pairs)))
    topk = plan_blocks(pairs, MineConfig(query_block=8, strategy="topk"), workers=2)
    first_seen = list(dict.fromkeys(p.query_row for p in pairs))
    for b in topk:  # whole queries, in runs of 8 queries of the first-seen order
        queries = {pairs[int(i)].query_row for i in b.rows}
        assert {i for i, p in enumerate(pairs) if p.query_row in queries} == {int(i) for i in b.rows}
        starts = [first_seen.index(qr) for qr in queries]
        assert min(starts) % 8 == 0
    assert sorted(int(i) for b in topk for i in b.rows) == list(range(len(pairs)))


def test_a_memmapped_source_pickles_as_its_paths(data) -> None:
    _, source, *_ = data
    blob = pickle.dumps(source)
    assert len(blob) < 2000  # 1500 x 16 float32 would be 96 kB
    again = pickle.loads(blob)
    assert np.array_equal(again.take(np.arange(source.n)), source.take(np.arange(source.n)))
    in_memory = VectorSource.from_array(np.eye(3, dtype=np.float32))
    assert np.array_equal(pickle.loads(pickle.dumps(in_memory)).take([0, 1, 2]), np.eye(3))


def test_bad_arguments_fail_before_any_block_runs(data) -> None:
    q, source, pairs, excluded, _ = data

    class Refusing(LocalRunner):
        def imap(self, *a, **kw):
            raise AssertionError("a block ran")

    with pytest.raises(ValueError, match="range_min must be smaller"):
        mine_negatives(
            q, source, pairs, excluded, MineConfig(strategy="topk", range_min=5, range_max=5), runner=Refusing()
        )
    with pytest.raises(ValueError, match="fewer than 3"):
        rule = MineConfig(strategy="rule", relative_margin=None, num_negatives=3, range_max=2)
        mine_negatives(q, source, pairs, excluded, rule, runner=Refusing())


def test_executor_is_no_part_of_the_fingerprint() -> None:
    local, ray = MineConfig(), MineConfig(executor="ray", ray_address="10.0.0.1:6379")
    assert local.to_params() == ray.to_params()
    assert "executor" not in local.to_params() and "ray_address" not in ray.to_params()
    assert dataclasses.replace(ray, executor=Executor.LOCAL).executor == "local"


def test_ray_without_the_extra_is_one_line(monkeypatch, cli, tiny_data, tmp_path) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError, find_spec says absent
    with pytest.raises(ConfigError, match=r"pip install 'hnm_cli\[ray\]'"):
        executors.require(Executor.RAY)
    executors.require(Executor.LOCAL)
    for args in (
        ("embed", "--data", tiny_data, "--out", tmp_path / "e", "--model", "hash:8", "--executor", "ray"),
        ("mine", "--vectors", tmp_path / "missing", "--data", tiny_data, "--out", tmp_path / "m", "--executor", "ray"),
    ):
        result = cli(*args)
        assert result.exit_code == 1
        assert result.stderr == "Error: --executor ray needs Ray, an optional extra: pip install 'hnm_cli[ray]'\n"
    assert not (tmp_path / "e").exists() and not (tmp_path / "m").exists()
    from hnm_cli.executors.ray import connect

    with pytest.raises(ConfigError, match="optional extra"), connect("auto"):
        pass
