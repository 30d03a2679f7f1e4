"""Config precedence (defaults < TOML < flags) and validation errors that name the file and key, also through the
CLI: a bad `-c` file or model table fails before the output is touched."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import mine_args, one_error, snapshot

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
    with pytest.raises(ConfigError, match="eval.precision must be one of auto, fp32, bf16"):
        EvalConfig().merged(precision="fp16")


@pytest.mark.parametrize("body", ["[[mine]]\nseed = 1\n", "mine = 5\n", "mine = [1, 2]\n"])
def test_a_stage_that_is_not_a_table_is_refused(tmp_path: Path, body: str):
    path = tmp_path / "c.toml"
    path.write_text(body)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(err.value).startswith(f"{path}: [mine] must be a table ([mine], then key = value lines); got ")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('[embed]\nmodels = ["hash:16"]\n', "embed.models must be [[embed.models]] tables (name, source, ...)"),
        ("[embed]\nmodels = []\n", "embed.models is empty; list [[embed.models]] tables or leave it out"),
        ('[[embed.models]]\nsource = "hash:8"\n\n[[embed.models]]\nsource = " "\n', "[[embed.models]] #2: 'source' "),
        ('[[embed.models]]\nsource = "hash:8"\norigin = "x"\n', "[[embed.models]] #1: unknown model key(s): origin"),
    ],
)
def test_model_tables_are_checked_with_the_file_and_table(tmp_path: Path, body: str, message: str):
    path = tmp_path / "c.toml"
    path.write_text(body)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(err.value).startswith(f"{path}: {message}")


def test_a_model_table_keeps_its_origin_for_later_errors(tmp_path: Path):
    from hnm_cli.config import ModelSpec
    from hnm_cli.errors import InputError

    path = tmp_path / "c.toml"
    path.write_text('[[embed.models]]\nname = "m"\nsource = "hash:8"\n')
    spec = load_config(path).embed.models[0]
    assert spec == ModelSpec(name="m", source="hash:8")  # the origin is no part of what the spec means
    located = spec.located(InputError("model 'm': folder /x does not exist", hint="h"))
    assert (type(located), str(located), located.hint) == (
        InputError,
        f"{path}: [[embed.models]] #1 'm': folder /x does not exist",
        "h",
    )
    flag = ModelSpec(name="m", source="hash:8")
    err = ConfigError("model 'm': x")
    assert flag.located(err) is err


@pytest.mark.parametrize(
    ("section", "line", "message"),
    [
        ("mine", "query_block = 0", "mine.query_block must be > 0; got 0"),
        ("mine", "query_block = -3", "mine.query_block must be > 0; got -3"),
        ("mine", "range_min = -1", "mine.range_min must be >= 0; got -1"),
        ("mine", "range_max = 0", "mine.range_max must be > 0; got 0"),
        ("mine", "range_max = -1", "mine.range_max must be > 0; got -1"),
        (
            "mine",
            "range_min = 4\nrange_max = 4",
            "mine.range_max must be at least range_min + num_negatives (7); got 4",
        ),
        ("mine", "hnsw_m = 0", "mine.hnsw_m must be >= 2; got 0"),
        ("mine", "hnsw_m = -1", "mine.hnsw_m must be >= 2; got -1"),
        ("mine", "hnsw_ef_construction = 0", "mine.hnsw_ef_construction must be > 0; got 0"),
        ("mine", "hnsw_ef_search = -1", "mine.hnsw_ef_search must be > 0; got -1"),
        ("mine", "seed = -1", "mine.seed must be an integer in 0 .. 2**32 - 1; got -1"),
        ("mine", "seed = 4294967296", "mine.seed must be an integer in 0 .. 2**32 - 1; got 4294967296"),
        ("reduce", "seed = -1", "reduce.seed must be an integer in 0 .. 2**32 - 1; got -1"),
        ("eval", "seed = 4294967296", "eval.seed must be an integer in 0 .. 2**32 - 1; got 4294967296"),
        ("train_reranker", "seed = -1", "train_reranker.seed must be an integer in 0 .. 2**32 - 1; got -1"),
        ("train_reranker", 'base_model = ""', "train_reranker.base_model must not be empty"),
        ("train_reranker", 'device = ""', "train_reranker.device must be auto, cpu, cuda, cuda:N or mps; got ''"),
        ("eval", 'device = "bogus"', "eval.device must be auto, cpu, cuda, cuda:N or mps; got 'bogus'"),
        ("embed", 'device = "cuda:x"', "embed.device must be auto, cpu, cuda, cuda:N or mps; got 'cuda:x'"),
    ],
)
def test_out_of_range_values_name_the_file_and_key(tmp_path: Path, section: str, line: str, message: str):
    # Checked whether or not the run uses the key (hnsw_* with index = exact): a core would fail later, or never.
    path = tmp_path / "c.toml"
    path.write_text(f"[{section}]\n{line}\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(err.value).startswith(f"{path}: {message}")


def test_in_range_edges_and_device_words_pass(tmp_path: Path):
    path = tmp_path / "c.toml"
    path.write_text(
        "[mine]\nseed = 4294967295\nrange_min = 2\nrange_max = 5\nhnsw_m = 2\n"
        '[eval]\ndevice = "cuda:1"\n[train_reranker]\ndevice = "mps"\n[embed]\ndevice = "cpu"\n'
    )
    cfg = load_config(path)
    assert (cfg.mine.seed, cfg.eval.device, cfg.train_reranker.device) == (4294967295, "cuda:1", "mps")


def test_flags_are_held_to_the_same_ranges():
    from hnm_cli.config import EvalConfig, MineConfig, TrainRerankerConfig

    with pytest.raises(ConfigError, match=r"^mine.seed must be an integer in 0 \.\. 2\*\*32 - 1; got -5$"):
        MineConfig().merged(seed=-5)
    with pytest.raises(ConfigError, match="^mine.range_max must be at least range_min"):
        MineConfig().merged(range_max=2, num_negatives=3)
    with pytest.raises(ConfigError, match="^eval.device must be"):
        EvalConfig().merged(device="gpu")
    with pytest.raises(ConfigError, match="^train_reranker.base_model must not be empty"):
        TrainRerankerConfig().merged(base_model=" ")


# Through the CLI: the exit code, the one `Error:` line naming the file, and the artifact in --out untouched.


@pytest.mark.parametrize("line", ["num_negatives = 2.5", 'seed = "abc"', "top_k = 2.5", 'strategy = "magic"'])
def test_config_of_the_wrong_type_fails_before_touching_the_output(cli, world, tmp_path: Path, line: str) -> None:
    config = tmp_path / "c.toml"
    config.write_text(f"[{'eval' if 'top_k' in line else 'mine'}]\n{line}\n")
    before = snapshot(world["mine"])
    result = cli(*mine_args(world, "-c", config, "--force"))
    assert result.exit_code == 1
    assert one_error(result).startswith(f"Error: {config}: ")
    assert line.split(" =")[0] in one_error(result)
    assert snapshot(world["mine"]) == before


@pytest.mark.parametrize("body", ["[[mine]]\nseed = 1\n", "mine = 5\n", "[mine]\nquery_block = 0\n",
                                  "[mine]\nhnsw_ef_search = 0\n", "[mine]\nseed = -1\n"])  # fmt: skip
def test_bad_mine_config_fails_before_touching_the_output(cli, world, tmp_path: Path, body: str) -> None:
    config = tmp_path / "c.toml"
    config.write_text(body)
    before = snapshot(world["mine"])
    result = cli(*mine_args(world, "-c", config, "--force", "-q"))
    assert result.exit_code == 1
    assert one_error(result).startswith(f"Error: {config}: ")
    assert snapshot(world["mine"]) == before


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ('source = "hash:abc"', " 'abc': 'hash:abc' needs a positive integer dimension, e.g. hash:16"),
        ('source = "hash:-4"', " '-4': 'hash:-4' needs a positive integer dimension"),
        (
            'source = "hash:100000000000"',
            " '100000000000': 'hash:100000000000' is too wide; a hash encoder has at most",
        ),
        ('source = ""', ": 'source' must not be empty"),
        ('source = "pkg:nosuch"', " 'nosuch': unknown packaged model 'pkg:nosuch'"),
        ('source = "/nonexistent/model-dir"', " 'model-dir': folder /nonexistent/model-dir does not exist"),
        ('name = "../evil"\nsource = "hash:8"', " '../evil': model name '../evil' cannot be a folder name"),
        ('name = "x"\nsource = "hash:8"\nengine = "bogus"', " 'x': engine must be auto or one of"),
    ],
)
def test_model_table_errors_name_the_config_file(cli, tiny_data: Path, tmp_path: Path, table: str, message: str):
    config = tmp_path / "c.toml"
    config.write_text(f'[[embed.models]]\nsource = "hash:4"\n\n[[embed.models]]\n{table}\n')
    result = cli("embed", "--data", tiny_data, "--out", tmp_path / "embed", "-q", "-c", config)
    assert result.exit_code == 1
    assert one_error(result).startswith(f"Error: {config}: [[embed.models]] #2{message}")
    assert not (tmp_path / "embed").exists()


def test_the_same_spec_from_a_flag_names_no_file(cli, tiny_data: Path, tmp_path: Path) -> None:
    result = cli("embed", "--data", tiny_data, "--out", tmp_path / "embed", "-q", "--model", "hash:100000000000")
    assert result.exit_code == 1
    assert one_error(result).startswith("Error: model 'hash-100000000000': 'hash:100000000000' is too wide")
