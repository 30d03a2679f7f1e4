"""`hnm train-reranker`: training examples, losses by hand, leakage guard, CLI contract, tiny end-to-end trains.

The end-to-end trains use a random-weight 1-layer BERT built offline (tests/tiny_models.py) and are marked slow
(torch + sentence-transformers imports and a few optimizer steps take 10-30 s on a shared 2-core machine).
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import orjson
import pytest

from hnm_cli.artifacts.files import rows_name
from hnm_cli.artifacts.manifest import file_input, load_manifest, output_entry, write_manifest
from hnm_cli.config import TrainRerankerConfig
from hnm_cli.errors import ConfigError, DataError, LeakageError
from hnm_cli.fileio import write_jsonl
from hnm_cli.inputs import resolve_jsonl_files
from hnm_cli.training.examples import Group, build_columns, groups_from_records, groups_from_rows

# q1 has two negatives, q2 one, q3 none (the rule found no candidate): the three train pairs of conftest's data.
ROWS = [
    {
        "query_id": "q1",
        "positive_id": "d1",
        "negatives": [
            {"doc_id": "d2", "source": "rule", "rank": 1, "d_qd": 0.21, "d_qp": 0.30, "d_pd": 0.44},
            {"doc_id": "d7", "source": "rule", "rank": 5, "d_qd": 0.25, "d_qp": 0.30, "d_pd": 0.60},
        ],
        "meta": {},
    },
    {
        "query_id": "q2",
        "positive_id": "d3",
        "negatives": [{"doc_id": "d4", "source": "rule", "rank": 1, "d_qd": 0.1, "d_qp": 0.2, "d_pd": 0.3}],
        "meta": {},
    },
    {"query_id": "q3", "positive_id": "d5", "negatives": [], "meta": {}},
]


def make_mine_artifact(root: Path, data: Path, rows: list[dict] | None = None, split: str = "train") -> Path:
    """A hand-built mine artifact: rows-00000.jsonl + manifest (stage "mine") recording corpus and qrels."""
    root.mkdir(parents=True, exist_ok=True)
    write_jsonl(root / rows_name(0), ROWS if rows is None else rows)
    inputs = [file_input(p, "corpus") for p in resolve_jsonl_files(data, "corpus")]
    inputs.append(file_input(data / "qrels" / f"{split}.tsv", "qrels"))
    write_manifest(
        root,
        stage="mine",
        fingerprint="sha256:hand-made",
        params={"split": split, "strategy": "rule", "num_negatives": 2},
        inputs=inputs,
        outputs=[output_entry(root, rows_name(0), rows=len(ROWS if rows is None else rows))],
        stats={},
        started=time.time(),
    )
    return root


# ---------------------------------------------------------------------------------------------
# Pure helpers: groups and columns
# ---------------------------------------------------------------------------------------------

QUERIES = {"q1": "Q1", "q2": "Q2", "q3": "Q3"}
DOCS = {f"d{i}": f"D{i}" for i in range(1, 9)}


def _rows():
    return [(f"rows-00000.jsonl:{i + 1}", r) for i, r in enumerate(ROWS)]


def test_groups_from_rows_keep_the_first_n_negatives():
    groups = groups_from_rows(_rows(), QUERIES, DOCS, negatives_per_positive=1)
    assert [g[:4] for g in map(lambda g: (g.query, g.positive, g.negatives, g.query_id), groups)] == [
        ("Q1", "D1", ("D2",), "q1"),
        ("Q2", "D3", ("D4",), "q2"),
        ("Q3", "D5", (), "q3"),
    ]
    # The miner's similarities ride along as distillation targets: [positive, negatives...] = 1 - distances.
    assert groups[0].teacher == pytest.approx(
        (1 - ROWS[0]["negatives"][0]["d_qp"], 1 - ROWS[0]["negatives"][0]["d_qd"])
    )
    assert groups[2].teacher is None
    assert groups_from_rows(_rows(), QUERIES, DOCS, 5)[0].negatives == ("D2", "D7")


def test_groups_from_rows_names_file_line_and_field_of_an_unknown_id():
    rows = [("m/rows-00000.jsonl:7", {"query_id": "q1", "positive_id": "d1", "negatives": [{"doc_id": "d99"}]})]
    with pytest.raises(DataError) as err:
        groups_from_rows(rows, QUERIES, DOCS, 1)
    assert str(err.value) == (
        "m/rows-00000.jsonl:7: field 'negatives[0].doc_id': unknown document id 'd99' (not in the corpus given)"
    )
    with pytest.raises(DataError, match=r"^m:1: field 'positive_id': missing$"):
        groups_from_rows([("m:1", {"query_id": "q1", "negatives": []})], QUERIES, DOCS, 1)


GROUPS = [Group("Q1", "D1", ("D2", "D7")), Group("Q2", "D3", ("D4",)), Group("Q3", "D5", ())]


def test_margin_columns_are_one_triplet_per_negative_and_skip_empty_pairs():
    cols, stats = build_columns(GROUPS, "cross-encoder", "margin", 2)
    assert cols == {"anchor": ["Q1", "Q1", "Q2"], "positive": ["D1", "D1", "D3"], "negative": ["D2", "D7", "D4"]}
    assert (stats.examples, stats.pairs, stats.pairs_used, stats.pairs_skipped_no_negative) == (3, 3, 2, 1)
    assert stats.negatives_used == 3


def test_bce_columns_keep_positives_of_pairs_without_negatives():
    groups = [*GROUPS, Group("Q1", "D8", ("D2", "D7"))]  # a second positive of Q1 shares Q1's negatives
    cols, stats = build_columns(groups, "cross-encoder", "bce", 2)
    assert list(zip(cols["query"], cols["passage"], cols["label"], strict=True)) == [
        ("Q1", "D1", 1.0),
        ("Q1", "D2", 0.0),
        ("Q1", "D7", 0.0),
        ("Q2", "D3", 1.0),
        ("Q2", "D4", 0.0),
        ("Q3", "D5", 1.0),
        ("Q1", "D8", 1.0),
    ]
    assert (stats.pairs_skipped_no_negative, stats.pairs_positive_only, stats.examples) == (0, 1, 7)


def test_listwise_columns_put_the_positive_first():
    cols, stats = build_columns(GROUPS, "cross-encoder", "listwise", 2)
    assert cols == {"query": ["Q1", "Q2"], "docs": [["D1", "D2", "D7"], ["D3", "D4"]]}
    assert stats.pairs_skipped_no_negative == 1


def test_mnrl_columns_pad_short_groups_with_their_own_negatives():
    cols, stats = build_columns(GROUPS, "bi-encoder", "mnrl", 3)
    assert cols == {
        "anchor": ["Q1", "Q2"],
        "positive": ["D1", "D3"],
        "negative_1": ["D2", "D4"],
        "negative_2": ["D7", "D4"],
    }
    assert (stats.pairs_padded, stats.extra["negative_columns"], stats.pairs_skipped_no_negative) == (1, 2, 1)


def test_unknown_kind_loss_pair_is_rejected():
    with pytest.raises(ValueError, match="no 'bce' loss for kind 'bi-encoder'"):
        build_columns(GROUPS, "bi-encoder", "bce", 1)


def test_exported_layouts_become_groups():
    def recs(*objs):
        return [(f"f:{i + 1}", o) for i, o in enumerate(objs)]

    groups, layout = groups_from_records(
        recs({"anchor": "q", "positive": "p", "negative_2": "n2", "negative_1": "n1"}), negatives_per_positive=5
    )
    assert (layout, groups) == ("triplet", [Group("q", "p", ("n1", "n2"))])
    groups, layout = groups_from_records(recs({"query": "q", "docs": ["p", "n"], "labels": [1, 0]}), 5)
    assert (layout, groups) == ("labeled-list", [Group("q", "p", ("n",))])
    groups, layout = groups_from_records(
        recs({"query": "q", "passage": "n", "label": 0}, {"query": "q", "passage": "p", "label": 1}), 5
    )
    assert (layout, groups) == ("labeled-pair", [Group("q", "p", ("n",))])
    with pytest.raises(DataError, match=r"^f:1: unknown training-file layout with fields \['a', 'b'\]"):
        groups_from_records(recs({"a": 1, "b": 2}), 1)


# ---------------------------------------------------------------------------------------------
# Losses by hand (torch, no model)
# ---------------------------------------------------------------------------------------------


def test_margin_loss_by_hand_on_two_examples():
    torch = pytest.importorskip("torch")
    from hnm_cli.training.losses import margin_ranking_loss

    # m = 1: example 1: max(0, 1 - 2.0 + 1.5) = 0.5; example 2: max(0, 1 - 0.5 + 1.0) = 1.5; mean 1.0.
    loss = margin_ranking_loss(torch.tensor([2.0, 0.5]), torch.tensor([1.5, 1.0]), 1.0)
    assert loss.item() == pytest.approx(1.0)
    # A positive ahead by more than the margin contributes 0: max(0, 1 - 3 + 0) = 0; mean with 1.5 is 0.75.
    assert margin_ranking_loss(torch.tensor([3.0, 0.5]), torch.tensor([0.0, 1.0]), 1.0).item() == pytest.approx(0.75)


class _StubCrossEncoder:
    """Scores a (query, doc) pair from a table; quacks like CrossEncoder for the loss modules."""

    device = "cpu"

    def __init__(self, table):
        self.table = table

    def preprocess(self, pairs, prompt=None, task=None):
        return {"pairs": pairs}

    def __call__(self, features):
        import torch

        return {"scores": torch.tensor([[self.table[p]] for p in features["pairs"]])}


def test_margin_loss_module_scores_positive_and_negative_columns():
    pytest.importorskip("torch")
    from hnm_cli.training.losses import loss_classes

    model = _StubCrossEncoder({("a", "p"): 2.0, ("a", "n"): 1.5, ("b", "p2"): 0.5, ("b", "n2"): 1.0})
    loss = loss_classes()["margin"](model, margin=1.0)
    assert loss([["a", "b"], ["p", "p2"], ["n", "n2"]], None).item() == pytest.approx(1.0)
    assert loss.get_config_dict() == {"margin": 1.0}


def test_listwise_loss_is_softmax_cross_entropy_with_the_positive_first():
    pytest.importorskip("torch")
    import math

    from hnm_cli.training.losses import loss_classes

    model = _StubCrossEncoder({("a", "p"): 2.0, ("a", "n"): 0.0, ("b", "p"): 1.0, ("b", "x"): 1.0, ("b", "y"): 1.0})
    loss = loss_classes()["listwise"](model)
    # -log softmax: group a: log(1 + e^-2); group b (3 equal scores): log 3.
    expected = (math.log(1 + math.exp(-2)) + math.log(3)) / 2
    assert loss([["a", "b"], [["p", "n"], ["p", "x", "y"]]], None).item() == pytest.approx(expected)


# ---------------------------------------------------------------------------------------------
# Config
# ---------------------------------------------------------------------------------------------


def test_config_rejects_a_loss_of_the_other_kind():
    with pytest.raises(ConfigError) as err:
        TrainRerankerConfig().merged(kind="bi-encoder", loss="bce")
    assert str(err.value) == "train_reranker.loss must be one of mnrl, margin for kind bi-encoder; got 'bce'"
    assert TrainRerankerConfig().merged(kind="bi-encoder", loss="mnrl").loss == "mnrl"
    with pytest.raises(ConfigError, match=r"warmup_ratio must be in \[0, 1\)"):
        TrainRerankerConfig().merged(warmup_ratio=1.0)


# ---------------------------------------------------------------------------------------------
# Stage and CLI errors (all raised before torch is imported)
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def fake_model(tmp_path: Path) -> Path:
    """A folder with a config.json: passes the cheap checks; the error tests never get as far as loading it."""
    folder = tmp_path / "fake-model"
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": "bert"}')
    return folder


def test_leakage_guard_refuses_training_queries_of_the_eval_split(tiny_data, tmp_path, cli, fake_model):
    rows = [*ROWS, {"query_id": "q4", "positive_id": "d7", "negatives": [], "meta": {}}]  # q4 is a test query
    mine = make_mine_artifact(tmp_path / "mine", tiny_data, rows)
    args = ["train-reranker", "--mined", mine, "--data", tiny_data, "--out", tmp_path / "rr"]
    result = cli(*args, "--base-model", fake_model)
    assert result.exit_code == 1
    assert result.stderr == (
        "Error: 1 of 4 training queries are 'test' queries (1 by id, 0 with the same text under another id; "
        f"e.g. 'q4') in {tiny_data}/qrels/test.tsv; use --drop-eval-overlap to leave those queries out, or "
        "--allow-eval-overlap to train anyway\n"
    )
    assert result.stdout == ""
    assert not (tmp_path / "rr").exists()


def test_drop_eval_overlap_records_what_training_kept(tiny_data, tmp_path):
    # The dropped queries are recorded as dropped, and the overlap the model was trained with is 0: eval reads it.
    from hnm_cli.artifacts.guards import check_training_leakage

    rows = [*ROWS, {"query_id": "q4", "positive_id": "d7", "negatives": [], "meta": {}}]  # q4 is a test query
    mine = load_manifest(make_mine_artifact(tmp_path / "mine", tiny_data, rows))
    cfg = TrainRerankerConfig(drop_eval_overlap=True)
    ids = [r["query_id"] for r in rows]
    stats = check_training_leakage(cfg, mine=mine, train_query_ids=ids, train_query_texts=[], data=tiny_data,
                                   queries_path=tiny_data / "queries.jsonl")  # fmt: skip
    assert (stats["eval_overlap"], stats["eval_overlap_dropped"], stats["dropped_query_ids"]) == (0, 1, ["q4"])


def test_leakage_guard_refuses_a_mine_artifact_of_the_eval_split(tiny_data, tmp_path, fake_model):
    from hnm_cli.stages import train_reranker

    mine = make_mine_artifact(tmp_path / "mine", tiny_data, [ROWS[0]], split="test")
    cfg = TrainRerankerConfig(base_model=str(fake_model))
    with pytest.raises(LeakageError) as err:
        train_reranker.run(mine, tmp_path / "rr", cfg, data=tiny_data)
    assert str(err.value) == (
        f"{mine} was mined on the 'test' split, which is the evaluation split; use --allow-eval-overlap to train anyway"
    )


def test_a_folder_that_is_not_a_model_is_one_error_line(tiny_data, tmp_path, cli):
    mine = make_mine_artifact(tmp_path / "mine", tiny_data)
    not_model = tmp_path / "not-a-model"
    not_model.mkdir()
    (not_model / "weights.txt").write_text("hello")
    result = cli("train-reranker", "--mined", mine, "--data", tiny_data, "--out", tmp_path / "rr", "--base-model",
                 not_model, "--kind", "cross-encoder")  # fmt: skip
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        f"Error: {not_model} is not a cross-encoder or transformer model folder (no config.json in it)",
        "Hint: give a CrossEncoder/transformers folder, pkg:all-MiniLM-L6-v2, or a hub id",
    ]


def test_a_mine_artifact_of_another_corpus_is_refused(tmp_path, tiny_data, fake_model):
    from hnm_cli.errors import ArtifactMismatchError
    from hnm_cli.stages import train_reranker

    mine = make_mine_artifact(tmp_path / "mine", tiny_data)
    other = tmp_path / "other"
    other.mkdir()
    (other / "corpus.jsonl").write_text('{"_id": "d1", "text": "another corpus"}\n')
    cfg = TrainRerankerConfig(base_model=str(fake_model))
    with pytest.raises(ArtifactMismatchError) as err:
        train_reranker.run(mine, tmp_path / "rr", cfg, data=tiny_data, corpus=other / "corpus.jsonl")
    assert str(err.value) == (
        f"{mine} was mined from different corpus files than {other / 'corpus.jsonl'} (file digests differ)"
    )


def test_cli_needs_exactly_one_input(cli, tmp_path):
    result = cli("train-reranker", "--out", tmp_path / "rr")
    assert (result.exit_code, result.stderr) == (
        1,
        "Error: give exactly one of --mined <mine artifact> or --train-file <exported JSONL>\n",
    )


def test_cli_missing_mine_manifest(cli, tmp_path, tiny_data):
    (tmp_path / "mine").mkdir()
    result = cli("train-reranker", "--mined", tmp_path / "mine", "--data", tiny_data, "--out", tmp_path / "rr")
    assert result.exit_code == 1
    assert result.stderr.startswith(f"Error: {tmp_path / 'mine'} is incomplete (no manifest.json). Rerun: hnm mine")


def test_cli_bad_enum_is_a_usage_error(cli, tmp_path):
    assert cli("train-reranker", "--out", tmp_path / "rr", "--loss", "hinge").exit_code == 2
    assert cli("train-reranker", "--out", tmp_path / "rr", "--kind", "poly-encoder").exit_code == 2


def test_unknown_doc_in_mined_rows_is_a_data_error(cli, tmp_path, tiny_data, fake_model):
    rows = [{"query_id": "q1", "positive_id": "d1", "negatives": [{"doc_id": "zz"}], "meta": {}}]
    mine = make_mine_artifact(tmp_path / "mine", tiny_data, rows)
    result = cli("train-reranker", "--mined", mine, "--data", tiny_data, "--out", tmp_path / "rr", "--base-model",
                 fake_model)  # fmt: skip
    assert result.exit_code == 1
    assert result.stderr == (
        f"Error: {mine}/rows-00000.jsonl:1: field 'negatives[0].doc_id': unknown document id 'zz' "
        "(not in the corpus given)\n"
    )


def test_all_pairs_without_negatives_is_an_error_for_margin(cli, tmp_path, tiny_data, fake_model):
    mine = make_mine_artifact(tmp_path / "mine", tiny_data, [ROWS[2]])
    result = cli("train-reranker", "--mined", mine, "--data", tiny_data, "--out", tmp_path / "rr", "--base-model",
                 fake_model, "--kind", "cross-encoder", "--loss", "margin")  # fmt: skip
    assert result.exit_code == 1
    assert result.stderr == (
        f"Error: {mine}: no training examples for loss 'margin': all 1 pairs have no negative "
        "(mine with a fallback, or use --loss bce)\n"
    )


# ---------------------------------------------------------------------------------------------
# Tiny end-to-end trains (slow)
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    from conftest import TINY_CORPUS, TINY_QUERIES
    from tiny_models import build_tiny_bert

    words = [d["title"] + " " + d["text"] for d in TINY_CORPUS] + [q["text"] for q in TINY_QUERIES]
    return build_tiny_bert(tmp_path_factory.mktemp("models") / "tiny-bert", words=words)


TRAIN_FLAGS = ["--max-steps", "3", "--batch-size", "2", "--checkpoint-steps", "2", "--device", "cpu", "--quiet"]


@pytest.mark.slow
def test_cross_encoder_margin_end_to_end(cli, tmp_path, tiny_data, tiny_model):
    from sentence_transformers import CrossEncoder

    mine = make_mine_artifact(tmp_path / "mine", tiny_data)
    out = tmp_path / "rr"
    args = ["train-reranker", "--mined", mine, "--data", tiny_data, "--out", out, "--base-model", tiny_model,
            "--negatives-per-positive", "1", "--kind", "cross-encoder", "--loss", "margin"]  # fmt: skip
    result = cli(*args, *TRAIN_FLAGS)
    assert result.exit_code == 0, result.stderr
    assert result.stdout == f"{out / 'manifest.json'}\n"
    # --quiet: no bars, no library warnings; only hnm's warning that 3 steps cannot grow a fresh head.
    assert result.stderr.startswith("train-reranker: warning: a fresh cross-encoder head gets 3 optimizer steps")
    assert result.stderr.count("\n") == 1
    manifest = load_manifest(out)
    assert manifest.stage == "train-reranker"
    assert manifest.params["loss"] == "margin" and manifest.params["seed"] == 0 and manifest.params["max_steps"] == 3
    stats = manifest.stats
    assert (stats["examples"], stats["pairs"], stats["pairs_skipped_no_negative"]) == (2, 3, 1)  # 1 negative per pair
    assert (stats["global_step"], stats["head"], stats["resumed_from_step"]) == (3, "fresh", None)
    assert [step for step, _ in stats["loss_curve"]] == [1, 2, 3]
    assert stats["train_seconds"] > 0
    assert {i["role"] for i in manifest.inputs} == {"mined", "corpus", "queries", "base-model"}
    assert (out / "checkpoints" / "checkpoint-3" / "trainer_state.json").is_file()

    model = CrossEncoder(str(out / "model"))
    assert model.num_labels == 1
    assert len(model.predict([("what is a vcn", "VCN overview"), ("a", "b")])) == 2

    mtime = (out / "model" / "model.safetensors").stat().st_mtime_ns
    again = cli(*args, *TRAIN_FLAGS[:-1])  # not quiet: the up-to-date line is on stderr
    assert again.exit_code == 0 and again.stdout == f"{out / 'manifest.json'}\n"
    assert f"train-reranker: up to date ({out / 'manifest.json'})" in again.stderr
    assert (out / "model" / "model.safetensors").stat().st_mtime_ns == mtime


@pytest.mark.slow
@pytest.mark.parametrize("loss", ["bce", "listwise"])
def test_cross_encoder_other_losses_train(tmp_path, tiny_data, tiny_model, loss):
    from hnm_cli.stages import train_reranker

    mine = make_mine_artifact(tmp_path / "mine", tiny_data)
    cfg = TrainRerankerConfig(base_model=str(tiny_model), kind="cross-encoder", loss=loss, max_steps=2, batch_size=2,
                              device="cpu", negatives_per_positive=1)  # fmt: skip
    manifest = train_reranker.run(mine, tmp_path / "rr", cfg, data=tiny_data, progress=False)
    assert manifest.stats["global_step"] == 2
    assert manifest.stats["examples"] == (5 if loss == "bce" else 2)  # bce: 3 positives + 2 negatives
    assert (tmp_path / "rr" / "model" / "config.json").is_file()


@pytest.mark.slow
def test_bf16_mixed_precision_trains_and_is_recorded(tmp_path, tiny_data, tiny_model):
    from hnm_cli.config import EvalConfig
    from hnm_cli.inputs import resolve_data
    from hnm_cli.stages import evaluate, train_reranker

    mine = make_mine_artifact(tmp_path / "mine", tiny_data)
    cfg = TrainRerankerConfig(base_model=str(tiny_model), max_steps=2, batch_size=2, device="cpu", precision="bf16")
    manifest = train_reranker.run(mine, tmp_path / "rr", cfg, data=tiny_data, progress=False)
    assert manifest.stats["global_step"] == 2 and manifest.params["precision"] == "bf16"
    assert all(math.isfinite(loss) for _, loss in manifest.stats["loss_curve"])
    # Scoring under bf16 autocast gives finite scores close to fp32's (bf16 keeps ~3 significant digits).
    ecfg = EvalConfig(split="test", top_k=8, trials=50, device="cpu")
    reports = {}
    for precision in ("fp32", "bf16"):
        m = evaluate.run(
            resolve_data(tiny_data), tmp_path / f"e-{precision}", ecfg.merged(precision=precision),
            models=[("rr", str(tmp_path / "rr"))], progress=False,
        )  # fmt: skip
        reports[precision] = orjson.loads((m.path / "report.json").read_bytes())
    assert "precision" not in load_manifest(tmp_path / "e-fp32").params  # the default leaves old reports valid
    fp32, bf16 = (reports[p]["runs"]["rr"]["mean"]["ndcg@10"] for p in ("fp32", "bf16"))
    assert math.isfinite(bf16) and abs(fp32 - bf16) < 0.35


@pytest.mark.slow
@pytest.mark.parametrize("loss", ["mnrl", "margin"])
def test_bi_encoder_trains_into_a_sentence_transformer(tmp_path, tiny_data, tiny_model, loss):
    from sentence_transformers import SentenceTransformer

    from hnm_cli.stages import train_reranker

    mine = make_mine_artifact(tmp_path / "mine", tiny_data)
    cfg = TrainRerankerConfig(
        kind="bi-encoder", base_model=str(tiny_model), loss=loss, max_steps=2, batch_size=2, device="cpu",
        negatives_per_positive=2,
    )  # fmt: skip
    manifest = train_reranker.run(mine, tmp_path / "rr", cfg, data=tiny_data, progress=False)
    assert manifest.stats["global_step"] == 2
    model = SentenceTransformer(str(tmp_path / "rr" / "model"))
    assert model.encode(["what is a vcn"]).shape == (1, 32)
    before = SentenceTransformer(str(tiny_model)).encode(["what is a vcn"])
    assert abs(model.encode(["what is a vcn"]) - before).max() > 0  # the weights moved


@pytest.mark.slow
def test_train_file_input(tmp_path, tiny_data, tiny_model, cli):
    export = tmp_path / "triplet.jsonl"
    export.write_bytes(
        b"".join(
            orjson.dumps({"anchor": a, "positive": p, "negative": n}) + b"\n"
            for a, p, n in [("what is a vcn", "VCN overview", "VNIC overview"), ("waf", "WAF policies", "Network")]
        )
    )
    out = tmp_path / "rr"
    result = cli("train-reranker", "--train-file", export, "--out", out, "--base-model", tiny_model, *TRAIN_FLAGS)
    assert result.exit_code == 0, result.stderr
    stats = load_manifest(out).stats
    assert (stats["input_layout"], stats["examples"], stats["global_step"]) == ("triplet", 2, 3)


@pytest.mark.slow
def test_a_pretrained_cross_encoder_keeps_its_head_and_config(tmp_path, tiny_data, cli):
    import torch
    from sentence_transformers import CrossEncoder
    from tiny_models import build_tiny_cross_encoder

    base = build_tiny_cross_encoder(tmp_path / "ce")
    before = CrossEncoder(str(base), device="cpu")
    head = {k: v.clone() for k, v in before.model.classifier.state_dict().items()}
    mine = make_mine_artifact(tmp_path / "mine", tiny_data, ROWS)
    out = tmp_path / "rr"
    result = cli("train-reranker", "--mined", mine, "--data", tiny_data, "--out", out, "--base-model", base,
                 "--kind", "cross-encoder", "--loss", "listwise", "--max-steps", "1", "--batch-size", "2",
                 "--lr", "1e-9", "--max-length", "32")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    manifest = orjson.loads((out / "manifest.json").read_bytes())
    assert manifest["stats"]["head"] == "pretrained"
    after = CrossEncoder(str(out / "model"), device="cpu")
    assert after.model.config.id2label == {0: "relevance"}
    for key, value in after.model.classifier.state_dict().items():
        assert torch.allclose(value, head[key], atol=1e-6), key  # kept, not re-initialised
    # A train-reranker artifact is a base model too (a warm start, e.g. distillation then hard negatives), as it is
    # a `--model` of eval: its model/ folder is fine-tuned, its head kept.
    again = cli("train-reranker", "--mined", mine, "--data", tiny_data, "--out", tmp_path / "rr2", "--base-model", out,
                "--kind", "cross-encoder", "--loss", "listwise", "--max-steps", "1", "--batch-size", "2",
                "--max-length", "32")  # fmt: skip
    assert again.exit_code == 0, again.stderr
    assert orjson.loads((tmp_path / "rr2" / "manifest.json").read_bytes())["stats"]["head"] == "pretrained"


def test_a_fresh_head_given_few_steps_is_warned_about_and_nothing_else_is():
    from hnm_cli.training.trainer import FRESH_HEAD_MIN_STEPS, few_steps_warning

    assert "gets 40 optimizer steps" in few_steps_warning("fresh", 40)
    assert few_steps_warning("fresh", FRESH_HEAD_MIN_STEPS) is None
    assert few_steps_warning("pretrained", 1) is None  # a trained cross-encoder's head already ranks
    assert few_steps_warning("n/a", 1) is None  # a bi-encoder has no head to grow


def test_listwise_distillation_mixes_the_hard_label_with_the_teachers_softmax():
    import torch

    from hnm_cli.training.losses import group_softmax_loss

    scores = torch.tensor([2.0, 1.0, 0.5, 1.5, 0.0])  # groups of 3 and 2, positive first
    teacher = [[0.8, 0.7, 0.1], [0.6, 0.65]]
    plain = group_softmax_loss(scores, [3, 2])
    assert torch.isclose(group_softmax_loss(scores, [3, 2], teacher, 0.0), plain)
    w, t = 0.5, 0.05
    expected = 0.0
    for s, tch in ((scores[:3], teacher[0]), (scores[3:], teacher[1])):
        soft = torch.softmax(torch.tensor(tch) / t, dim=0)
        target = (1 - w) * torch.nn.functional.one_hot(torch.tensor(0), len(tch)) + w * soft
        expected += float(-(target * torch.log_softmax(s, dim=0)).sum()) / 2
    got = group_softmax_loss(scores, [3, 2], teacher, w, t)
    assert abs(float(got) - expected) < 1e-6


def test_distillation_needs_distances_and_the_listwise_loss():
    from hnm_cli.config import TrainRerankerConfig
    from hnm_cli.errors import ConfigError

    with pytest.raises(ConfigError, match="needs loss = 'listwise'"):
        TrainRerankerConfig().merged(teacher_weight=0.5)
    groups = [Group("Q", "P", ("N",), "q", None)]
    with pytest.raises(DataError, match="distillation needs the miner's distances"):
        build_columns(groups, "cross-encoder", "listwise", 1, teacher=True)
    cols, _ = build_columns([Group("Q", "P", ("N",), "q", (0.9, 0.4))], "cross-encoder", "listwise", 1, teacher=True)
    assert cols == {"query": ["Q"], "docs": [["P", "N"]], "teacher": [[0.9, 0.4]]}


@pytest.mark.slow
def test_listwise_distillation_trains(tmp_path, tiny_data, tiny_model):
    cfg = TrainRerankerConfig().merged(
        kind="cross-encoder", loss="listwise", base_model=str(tiny_model), max_steps=2, batch_size=2,
        max_length=32, teacher_weight=0.5,
    )  # fmt: skip
    mine = make_mine_artifact(tmp_path / "mine", tiny_data, ROWS)
    from hnm_cli.stages import train_reranker

    manifest = train_reranker.run(mine, tmp_path / "rr", cfg, data=tiny_data, progress=False)
    assert manifest.params["teacher_weight"] == 0.5 and manifest.stats["global_step"] == 2


def test_malformed_or_edited_mine_rows_are_refused_before_training(cli, tmp_path, tiny_data, fake_model):
    mine = make_mine_artifact(tmp_path / "mine", tiny_data, [ROWS[0], [1, 2]])  # type: ignore[list-item]
    args = ["train-reranker", "--mined", mine, "--data", tiny_data, "--out", tmp_path / "rr", "--base-model",
            fake_model]  # fmt: skip
    result = cli(*args)
    assert (result.exit_code, result.stderr) == (
        1,
        f"Error: {mine}/rows-00000.jsonl:2: expected a JSON object (a mined row), got a JSON array\n",
    )
    mine = make_mine_artifact(tmp_path / "mine", tiny_data)
    manifest = orjson.loads((mine / "manifest.json").read_bytes())
    manifest["outputs"][0]["sha256"] = "0" * 64  # size and mtime agree: only the rows' own hash can tell
    (mine / "manifest.json").write_bytes(orjson.dumps(manifest))
    result = cli(*args)
    assert result.exit_code == 1
    assert result.stderr.startswith(
        f"Error: {mine}/rows-00000.jsonl: content changed (sha256 differs from the manifest); the mine artifact is "
        "corrupt"
    )
    assert not (tmp_path / "rr").exists()


def test_out_in_or_at_the_base_model_is_refused(cli, tmp_path, tiny_data, fake_model):
    mine = make_mine_artifact(tmp_path / "mine", tiny_data)
    before = sorted(p.name for p in fake_model.rglob("*"))
    for out, how in ((fake_model, "is"), (fake_model / "sub", "lies inside")):
        result = cli("train-reranker", "--mined", mine, "--data", tiny_data, "--out", out, "--base-model", fake_model)
        assert (result.exit_code, result.stderr) == (
            1,
            f"Error: --out {out} {how} the input {fake_model}; write the artifact to another folder\n",
        )
    assert sorted(p.name for p in fake_model.rglob("*")) == before


def test_each_kind_trains_its_own_recipe_unless_told_and_the_settled_values_are_recorded():
    from hnm_cli.choices import Loss, ModelKind
    from hnm_cli.config import TrainRerankerConfig

    cfg = TrainRerankerConfig()
    assert (cfg.kind, cfg.loss, cfg.epochs, cfg.learning_rate) == (ModelKind.BI_ENCODER, Loss.AUTO, None, None)
    bi = cfg.resolved()
    assert (bi.loss, bi.epochs, bi.learning_rate) == (Loss.MNRL, 1, 2e-5)
    cross = cfg.merged(kind=ModelKind.CROSS_ENCODER).resolved()  # --kind cross-encoder alone picks its recipe
    assert (cross.loss, cross.epochs, cross.learning_rate) == (Loss.LISTWISE, 5, 5e-5)
    told = cfg.merged(kind=ModelKind.CROSS_ENCODER, loss=Loss.MARGIN, epochs=2, learning_rate=1e-5).resolved()
    assert (told.loss, told.epochs, told.learning_rate) == (Loss.MARGIN, 2, 1e-5)
    assert cfg.merged(kind=ModelKind.CROSS_ENCODER, loss=Loss.MARGIN).resolved().loss == Loss.MARGIN
