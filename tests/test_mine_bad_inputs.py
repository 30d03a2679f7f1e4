"""`hnm mine` leakage guards and twin queries (kept apart from tests/test_stage_mine.py for size): test qrels
given as the mining qrels, by path, by copy or by link, are refused; twin queries never get each other's positive.
"""

from __future__ import annotations

from pathlib import Path

import orjson
from conftest import mine_args, one_error, write_beir


def test_mining_a_test_qrels_file_is_refused(cli, world) -> None:
    result = cli(*mine_args(world, "--qrels", world["data"] / "qrels" / "test.tsv", "--force"))
    assert result.exit_code == 1
    assert "is the 'test' split, an evaluation split" in one_error(result)


def test_mining_a_copy_or_a_link_of_the_test_qrels_is_refused(cli, world, tmp_path: Path) -> None:
    test_qrels = world["data"] / "qrels" / "test.tsv"
    copy = tmp_path / "mine-these" / "train.tsv"
    copy.parent.mkdir()
    copy.write_bytes(test_qrels.read_bytes())
    result = cli(*mine_args(world, "--qrels", copy, "--force"))
    assert result.exit_code == 1
    assert one_error(result).startswith(f"Error: --qrels {copy} has the same content as {test_qrels}, the 'test'")
    (world["data"] / "qrels" / "holdout.tsv").symlink_to("test.tsv")
    result = cli(*mine_args(world, "--split", "holdout", "--force"))
    assert result.exit_code == 1
    assert f"links to {test_qrels}, the 'test' split" in one_error(result)
    assert cli(*mine_args(world, "--split", "holdout", "--force", "--allow-eval-queries", "-q")).exit_code == 0


def test_twin_queries_never_get_each_others_positive(cli, tmp_path: Path) -> None:
    from conftest import TINY_CORPUS

    queries = [
        {"_id": "a", "text": "mysql on the managed service"},
        {"_id": "b", "text": "MySQL on the  managed service"},
    ]
    data = write_beir(tmp_path / "d", corpus=TINY_CORPUS, queries=queries,
                      qrels={"train": [("a", "d1"), ("b", "d2")]})  # fmt: skip
    runs = tmp_path / "runs"
    assert cli("embed", "--data", data, "--out", runs / "e", "--model", "hash:8", "-q").exit_code == 0
    for extra, allowed in (([], False), (["--keep-twin-positives"], True)):
        out = runs / f"m{len(extra)}"
        args = ["mine", "--vectors", runs / "e", "--data", data, "--out", out, "--strategy", "random",
                "--num-negatives", "7", "-q", *extra]  # fmt: skip
        assert cli(*args).exit_code == 0
        rows = [orjson.loads(x) for x in (out / "rows-00000.jsonl").read_bytes().splitlines()]
        picked = {r["query_id"]: {n["doc_id"] for n in r["negatives"]} for r in rows}
        assert ("d2" in picked["a"] and "d1" in picked["b"]) is allowed
