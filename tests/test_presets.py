"""`hnm mine --preset paper` keeps the published method one flag away, whatever the defaults become.

tests/data/paper-rows-cloud-docs.jsonl holds the rows `hnm mine` wrote with its defaults before the default recipe
changed (commit bea7ab6: rule, one negative, no fallback) on the example corpus, hash:32 + hash:16, reduce at 95%.
"""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from conftest import EXAMPLE, REPO

import hnm_cli as hnm
from hnm_cli.config import MINE_PRESETS, MineConfig, load_config
from hnm_cli.errors import ConfigError

GOLDEN = REPO / "tests" / "data" / "paper-rows-cloud-docs.jsonl"


@pytest.fixture(scope="module")
def reduced(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("paper")
    hnm.embed(EXAMPLE, root / "embed", models=["hash:32", "hash:16"])
    hnm.reduce(root / "embed", root / "reduce", variance=0.95, balance="none")
    return root / "reduce"


def _rows(mine: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(mine.glob("rows-*.jsonl")))


def _same_as_golden(mine: Path) -> None:
    """Same pairs, negatives, sources and ranks as the golden rows; distances equal up to float noise.

    The PCA's float arithmetic differs in the last bits between CPUs (BLAS kernels), so the distances in the golden
    file (written on another machine) are compared within 1e-6; every choice the method makes must be identical.
    """
    got = [orjson.loads(line) for line in _rows(mine).splitlines()]
    want = [orjson.loads(line) for line in GOLDEN.read_bytes().splitlines()]

    def choices(rows: list[dict]) -> list:
        return [(r["query_id"], r["positive_id"], [(n["doc_id"], n["source"], n["rank"]) for n in r["negatives"]],
                 r["meta"]) for r in rows]  # fmt: skip

    assert choices(got) == choices(want)
    for g, w in zip(got, want, strict=True):
        for a, b in zip(g["negatives"], w["negatives"], strict=True):
            for key in ("d_qd", "d_qp", "d_pd"):
                assert a[key] == pytest.approx(b[key], abs=1e-6), (g["query_id"], a["doc_id"], key)


def test_preset_paper_reproduces_the_rows_of_the_old_default_byte_for_byte(reduced: Path, tmp_path: Path, cli) -> None:
    out = tmp_path / "mine"
    result = cli("mine", "-c", REPO / "configs" / "default.toml", "--vectors", reduced, "--data", EXAMPLE,
                 "--out", out, "--preset", "paper", "-q")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    _same_as_golden(out)


def test_the_preset_wins_over_the_config_file_and_flags_win_over_the_preset(reduced: Path, tmp_path: Path, cli) -> None:
    cfg = tmp_path / "cfg.toml"
    cfg.write_text('[mine]\nnum_negatives = 4\nfallback = "next"\nfill = "short"\nc2_margin = 0.1\n')
    out = tmp_path / "m1"
    assert cli("mine", "-c", cfg, "--vectors", reduced, "--data", EXAMPLE, "--out", out, "--preset", "paper",
               "-q").exit_code == 0  # fmt: skip
    _same_as_golden(out)
    out = tmp_path / "m3"
    assert cli("mine", "-c", cfg, "--vectors", reduced, "--data", EXAMPLE, "--out", out, "--preset", "paper",
               "--num-negatives", "3", "-q").exit_code == 0  # fmt: skip
    params = orjson.loads((out / "manifest.json").read_bytes())["params"]
    assert (params["num_negatives"], params["fallback"]) == (3, "none")
    assert "preset" not in params  # recorded through the values it set: one fingerprint with the spelled-out options


def test_a_preset_in_the_config_file_and_in_python(reduced: Path, tmp_path: Path) -> None:
    cfg = tmp_path / "cfg.toml"
    cfg.write_text('[mine]\npreset = "paper"\nnum_negatives = 5\n')
    mine = load_config(cfg).mine.with_preset()
    assert mine.num_negatives == 1 and mine.preset == "paper"
    hnm.mine(reduced, EXAMPLE, tmp_path / "api", num_negatives=5, fallback="next", preset="paper")
    rows = [orjson.loads(line) for line in _rows(tmp_path / "api").splitlines()]
    assert max(len(r["negatives"]) for r in rows) == 5  # options given in Python win like flags
    hnm.mine(reduced, EXAMPLE, tmp_path / "api2", preset="paper")
    _same_as_golden(tmp_path / "api2")


def test_every_preset_key_is_a_mine_option_and_an_unknown_preset_is_refused(tmp_path: Path) -> None:
    names = set(MineConfig.__dataclass_fields__)
    for values in MINE_PRESETS.values():
        assert set(values) <= names
    cfg = tmp_path / "cfg.toml"
    cfg.write_text('[mine]\npreset = "best"\n')
    with pytest.raises(ConfigError, match="mine.preset must be"):
        load_config(cfg)
