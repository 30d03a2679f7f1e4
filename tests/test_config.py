"""Config precedence (defaults < TOML < flags) and validation errors that name the file and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from hnm_cli.config import load_config
from hnm_cli.errors import ConfigError

REPO_CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_defaults_then_toml_then_flags(tmp_path: Path):
    path = tmp_path / "c.toml"
    path.write_text('[mine]\nnum_negatives = 3\nstrategy = "topk"\n')
    cfg = load_config(path).mine
    assert (cfg.num_negatives, cfg.strategy, cfg.seed) == (3, "topk", 0)
    merged = cfg.merged(num_negatives=5, strategy=None, seed=7)
    assert (merged.num_negatives, merged.strategy, merged.seed) == (5, "topk", 7)


def test_unknown_key_names_file_and_section(tmp_path: Path):
    path = tmp_path / "c.toml"
    path.write_text("[mine]\nnum_negative = 3\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(err.value) == f"{path}: unknown key(s) in [mine]: num_negative"


def test_bad_value_names_file_and_key(tmp_path: Path):
    path = tmp_path / "c.toml"
    path.write_text('[mine]\nstrategy = "magic"\n')
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(err.value) == f"{path}: mine.strategy must be one of rule, topk, random, bm25; got 'magic'"


def test_model_tables_become_specs(tmp_path: Path):
    path = tmp_path / "c.toml"
    path.write_text(
        '[[embed.models]]\nsource = "pkg:all-MiniLM-L6-v2"\n\n[[embed.models]]\nname = "e5"\nsource = "hash:8"\n'
    )
    models = load_config(path).embed.models
    assert [(m.name, m.source) for m in models] == [
        ("all-MiniLM-L6-v2", "pkg:all-MiniLM-L6-v2"),
        ("e5", "hash:8"),
    ]


@pytest.mark.parametrize("name", ["default.toml", "tiny.toml"])
def test_shipped_configs_load(name: str):
    cfg = load_config(REPO_CONFIGS / name)
    assert cfg.embed.models, f"{name} names no embedding model"


def test_late_options_stay_out_of_params_at_their_default():
    # Options added after artifacts existed must not change the fingerprint of those artifacts while unused.
    from hnm_cli.config import EvalConfig, TrainRerankerConfig

    assert "precision" not in TrainRerankerConfig().to_params()
    assert TrainRerankerConfig().merged(precision="bf16").to_params()["precision"] == "bf16"
    assert not {"precision", "ignore_identical_ids"} & set(EvalConfig().to_params())
    assert EvalConfig().merged(ignore_identical_ids=True).to_params()["ignore_identical_ids"] is True
    with pytest.raises(ConfigError, match="eval.precision must be one of fp32, bf16"):
        EvalConfig().merged(precision="fp16")
