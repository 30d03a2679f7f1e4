"""`hnm reduce`: the runner on hand-built embed artifacts, the CLI contract, and a memory bound."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from artifact_builders import make_embed_artifact

from hnm_cli.artifacts.fusion import load_fit
from hnm_cli.artifacts.manifest import load_manifest
from hnm_cli.artifacts.vectors import list_vector_shards, load_vectors
from hnm_cli.config import ReduceConfig
from hnm_cli.errors import ArtifactMismatchError, ConfigError, IncompleteArtifactError, InputError
from hnm_cli.pca import fit_pca
from hnm_cli.stages import reduce as reduce_stage

REPO = Path(__file__).resolve().parents[1]


def _vectors(rows: int, dim: int, seed: int) -> np.ndarray:
    """Unnormalised low-rank-ish vectors, so per-model normalisation and PCA both matter."""
    rng = np.random.default_rng(seed)
    basis = rng.normal(size=(4, dim))
    return (rng.normal(size=(rows, 4)) @ basis + 0.3 * rng.normal(size=(rows, dim))) * rng.uniform(
        0.5, 3, size=(rows, 1)
    )


def _norm(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture
def two_models(tmp_path: Path) -> tuple[Path, dict[str, tuple[np.ndarray, np.ndarray]]]:
    vecs = {"m1": (_vectors(60, 6, 1), _vectors(7, 6, 2)), "m2": (_vectors(60, 10, 3), _vectors(7, 10, 4))}
    return make_embed_artifact(tmp_path, vecs, shard_rows=[25, 0, 35], query_shard_rows=4), vecs


def _fused(vecs, part: int, weights=None) -> np.ndarray:
    blocks = [_norm(v[part]) * np.sqrt((weights or {}).get(m, 1.0)) for m, v in vecs.items()]
    return np.concatenate(blocks, axis=1)


def test_pca_output_equals_numpy_reference(tmp_path, two_models):
    embed, vecs = two_models
    manifest = reduce_stage.run(embed, tmp_path / "red", ReduceConfig(variance=0.9), progress=False)
    corpus, queries = _fused(vecs, 0), _fused(vecs, 1)
    # Reference: numpy SVD on the fused corpus.
    centred = corpus - corpus.mean(axis=0)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    ratio = s**2 / np.sum(s**2)
    k = int(np.argmax(np.cumsum(ratio) >= 0.9)) + 1
    fit = load_fit(tmp_path / "red" / "pca")
    assert fit.n_components == k == manifest.stats["components"] == manifest.stats["dim"]
    signs = np.sign(np.sum(fit.components * vt[:k], axis=1))
    for part, x in (("corpus", corpus), ("queries", queries)):
        ids, got = load_vectors(tmp_path / "red" / part)
        expected = _norm((x - corpus.mean(axis=0)) @ (vt[:k] * signs[:, None]).T)
        np.testing.assert_allclose(got, expected, atol=3e-5)
        assert ids == [f"{'d' if part == 'corpus' else 'q'}{i}" for i in range(len(x))]
    assert manifest.stats["variance_reached"] == pytest.approx(float(ratio[:k].sum()), abs=1e-6)
    assert manifest.stats["fit_rows"] == 60 and manifest.stats["fit_sampled"] is False
    assert manifest.stats["input_dims"] == {"m1": 6, "m2": 10} and manifest.stats["concat_dim"] == 16
    assert manifest.stats["corpus_rows"] == 60 and manifest.stats["queries_rows"] == 7
    shares = manifest.stats["model_variance_share"]
    assert sorted(shares) == ["m1", "m2"] and sum(shares.values()) == pytest.approx(1.0, abs=1e-5)
    # Per-model share: squared loadings of each block weighted by explained variance.
    w = fit.explained_variance @ fit.components**2
    assert shares["m1"] == pytest.approx(w[:6].sum() / w.sum(), abs=1e-6)


def test_layout_follows_input_shards_and_manifest_records(tmp_path, two_models):
    embed, _ = two_models
    out = tmp_path / "red"
    manifest = reduce_stage.run(embed, out, ReduceConfig(n_components=3), progress=False)
    assert [p.name for p, _ in list_vector_shards(out / "corpus")] == ["vectors-00000.npy", "vectors-00002.npy"]
    assert [np.load(p).shape for p, _ in list_vector_shards(out / "corpus")] == [(25, 3), (35, 3)]
    assert [np.load(p).shape for p, _ in list_vector_shards(out / "queries")] == [(4, 3), (3, 3)]
    assert np.load(out / "corpus" / "vectors-00000.npy").dtype == np.float32
    assert sorted(p.name for p in (out / "pca").iterdir()) == [
        "components.npy",
        "explained_variance.npy",
        "explained_variance_ratio.npy",
        "mean.npy",
    ]
    assert not list(out.rglob("*.tmp"))
    on_disk = load_manifest(out)
    assert on_disk.stage == "reduce" and on_disk.fingerprint == manifest.fingerprint
    assert {i["role"] for i in on_disk.inputs} == {"embeddings", "vectors:m1", "vectors:m2", "corpus", "queries"}
    corpus_rec = next(i for i in on_disk.inputs if i["role"] == "corpus")
    assert corpus_rec == load_manifest(embed).inputs[0]
    assert on_disk.params["models"] == ["m1", "m2"] and on_disk.params["weights"] == {"m1": 1.0, "m2": 1.0}
    assert on_disk.output("corpus/vectors-00002.npy")["rows"] == 35
    assert on_disk.output("corpus/vectors-00002.npy")["dim"] == 3


def test_streamed_npy_is_byte_identical_to_np_save(tmp_path, two_models):
    embed, _ = two_models
    out = tmp_path / "red"
    reduce_stage.run(embed, out, ReduceConfig(n_components=3), progress=False)
    path = out / "corpus" / "vectors-00000.npy"
    np.save(tmp_path / "ref.npy", np.load(path))
    assert path.read_bytes() == (tmp_path / "ref.npy").read_bytes()


def test_no_pca_is_weighted_concatenation_renormalised(tmp_path, two_models):
    embed, vecs = two_models
    weights = {"m1": 3.0}
    manifest = reduce_stage.run(embed, tmp_path / "red", ReduceConfig(pca=False, weights=weights), progress=False)
    assert not (tmp_path / "red" / "pca").exists() or not list((tmp_path / "red" / "pca").iterdir())
    _, corpus = load_vectors(tmp_path / "red" / "corpus")
    _, queries = load_vectors(tmp_path / "red" / "queries")
    np.testing.assert_allclose(corpus, _norm(_fused(vecs, 0, weights)), atol=1e-6)
    # The fused cosine is the weighted mean of the per-model cosines: weight w is the model's share of the dot.
    cos = {m: _norm(v[1]) @ _norm(v[0]).T for m, v in vecs.items()}
    np.testing.assert_allclose(queries @ corpus.T, (3 * cos["m1"] + cos["m2"]) / 4, atol=1e-5)
    assert manifest.stats["dim"] == 16 and "components" not in manifest.stats
    assert manifest.params["weights"] == {"m1": 3.0, "m2": 1.0}


def test_weights_change_the_fit(tmp_path, two_models):
    embed, vecs = two_models
    a = reduce_stage.run(embed, tmp_path / "a", ReduceConfig(n_components=4), progress=False)
    b = reduce_stage.run(embed, tmp_path / "b", ReduceConfig(n_components=4, weights={"m2": 4.0}), progress=False)
    assert b.stats["model_variance_share"]["m2"] > a.stats["model_variance_share"]["m2"]
    assert b.stats["model_input_variance_share"]["m2"] > a.stats["model_input_variance_share"]["m2"]
    ref = fit_pca(_fused(vecs, 0, {"m2": 4.0}), n_components=4)
    np.testing.assert_allclose(
        load_fit(tmp_path / "b" / "pca").components, ref.components, atol=1e-6
    )  # stage fuses in float32


def test_model_subset_and_fit_on_corpus_plus_queries(tmp_path, two_models):
    embed, vecs = two_models
    m = reduce_stage.run(embed, tmp_path / "r", ReduceConfig(n_components=2, fit_on="corpus+queries"), models=["m2"])
    assert m.params["models"] == ["m2"] and m.stats["concat_dim"] == 10 and m.stats["fit_rows"] == 67
    both = np.concatenate([_norm(vecs["m2"][0]), _norm(vecs["m2"][1])])
    np.testing.assert_allclose(load_fit(tmp_path / "r" / "pca").mean, both.mean(axis=0), atol=1e-7)
    with pytest.raises(InputError) as err:
        reduce_stage.run(embed, tmp_path / "x", ReduceConfig(), models=["m3"])
    assert str(err.value) == f"{embed} has no model 'm3' (embedded: m1, m2)"


def test_sampled_fit_is_deterministic_under_seed(tmp_path, two_models):
    embed, vecs = two_models
    cfg = ReduceConfig(n_components=3, max_fit_rows=20, block_rows=8, seed=5)
    a = reduce_stage.run(embed, tmp_path / "a", cfg, progress=False)
    b = reduce_stage.run(embed, tmp_path / "b", cfg, progress=False)
    c = reduce_stage.run(embed, tmp_path / "c", ReduceConfig(n_components=3, max_fit_rows=20, seed=6), progress=False)
    assert a.stats["fit_rows"] == 20 and a.stats["fit_sampled"] is True
    assert a.output("corpus/vectors-00000.npy")["sha256"] == b.output("corpus/vectors-00000.npy")["sha256"]
    assert a.output("pca/mean.npy")["sha256"] != c.output("pca/mean.npy")["sha256"]
    # The sampled fit equals the in-memory core on the same fused matrix and seed (block size does not matter).
    ref = fit_pca(_fused(vecs, 0), n_components=3, max_rows=20, seed=5)
    np.testing.assert_allclose(
        load_fit(tmp_path / "a" / "pca").components, ref.components, atol=1e-6
    )  # stage fuses in float32


def test_missing_embed_artifact_and_missing_manifest(tmp_path):
    with pytest.raises(IncompleteArtifactError) as err:
        reduce_stage.run(tmp_path / "nope", tmp_path / "red", ReduceConfig())
    assert str(err.value) == f"{tmp_path / 'nope'} does not exist. Run: hnm embed --data DATA --out {tmp_path / 'nope'}"


def test_mismatched_ids_name_the_model(tmp_path):
    vecs = {"m1": (_vectors(5, 4, 1), _vectors(2, 4, 2)), "m2": (_vectors(5, 4, 3), _vectors(2, 4, 4))}
    embed = make_embed_artifact(tmp_path, vecs, per_model_ids={"m2": (["d0", "d1", "d3", "d2", "d4"], ["q0", "q1"])})
    with pytest.raises(ArtifactMismatchError) as err:
        reduce_stage.run(embed, tmp_path / "red", ReduceConfig())
    assert str(err.value) == (
        f"{embed}/m2/corpus: row 2 has id 'd3' but {embed}/m1/corpus has 'd2'; model 'm2' was embedded "
        f"from a different corpus order. Rerun: hnm embed --out {embed} --force"
    )
    assert not (tmp_path / "red").exists()  # nothing written before the checks pass


def test_bad_weights_and_components(tmp_path, two_models):
    embed, _ = two_models
    with pytest.raises(ConfigError, match=r"^reduce.weights: unknown model 'm9' \(embedded: m1, m2\)$"):
        reduce_stage.run(embed, tmp_path / "r", ReduceConfig(weights={"m9": 2.0}))
    with pytest.raises(ConfigError, match=r"^reduce.weights.m1 must be a number > 0; got 0$"):
        reduce_stage.run(embed, tmp_path / "r", ReduceConfig(weights={"m1": 0}))
    with pytest.raises(ConfigError, match=r"^reduce.n_components=17 exceeds min\(fit rows, dim\) = 16$"):
        reduce_stage.run(embed, tmp_path / "r", ReduceConfig(n_components=17))


def test_params_change_reruns_and_removes_stale_pca(tmp_path, two_models):
    embed, _ = two_models
    out = tmp_path / "red"
    first = reduce_stage.run(embed, out, ReduceConfig(n_components=3), progress=False)
    again = reduce_stage.run(embed, out, ReduceConfig(n_components=3), progress=False)
    assert again.up_to_date and again.fingerprint == first.fingerprint
    third = reduce_stage.run(embed, out, ReduceConfig(pca=False), progress=False)
    assert not third.up_to_date and not list(out.glob("pca/*.npy"))


# ---------------------------------------------------------------------------------------------
# CLI contract
# ---------------------------------------------------------------------------------------------


def _mtimes(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in sorted(folder.rglob("*")) if p.is_file()}


def test_cli_contract(cli, tmp_path, two_models):
    embed, _ = two_models
    out = tmp_path / "red"
    first = cli("reduce", "--embeddings", embed, "--out", out, "--variance", "0.9")
    assert first.exit_code == 0, first.stderr
    assert first.stdout == f"{out / 'manifest.json'}\n"
    m = load_manifest(out)
    k = m.stats["components"]
    pct = f"{100 * m.stats['variance_reached']:.1f}"
    assert first.stderr == f"reduce: 2 models, 16 -> {k} dims ({pct}% variance), corpus 60 rows, queries 7 rows\n"
    before = _mtimes(out)
    second = cli("reduce", "--embeddings", embed, "--out", out, "--variance", "0.9")
    assert second.exit_code == 0
    assert second.stdout == f"{out / 'manifest.json'}\n"
    assert second.stderr == f"reduce: up to date ({out / 'manifest.json'})\n"
    assert _mtimes(out) == before
    forced = cli("reduce", "--embeddings", embed, "--out", out, "--variance", "0.9", "--force")
    assert forced.exit_code == 0 and forced.stderr.startswith("reduce: 2 models")
    assert _mtimes(out)["manifest.json"] > before["manifest.json"]


def test_cli_options_reach_the_config(cli, tmp_path, two_models):
    embed, _ = two_models
    out = tmp_path / "red"
    res = cli(
        "reduce", "-e", embed, "-o", out, "--n-components", "5", "--weight", "m1=2", "-w", "m2=0.5",
        "--fit-on", "corpus+queries", "--max-fit-rows", "30", "--seed", "3", "--model", "m2", "--model", "m1", "-q",
    )  # fmt: skip
    assert res.exit_code == 0, res.stderr
    assert res.stderr == ""  # --quiet: no summary, no bars
    p = load_manifest(out).params
    assert (p["n_components"], p["fit_on"], p["max_fit_rows"], p["seed"]) == (5, "corpus+queries", 30, 3)
    assert p["weights"] == {"m1": 2.0, "m2": 0.5} and p["models"] == ["m1", "m2"]
    res = cli("reduce", "-e", embed, "-o", tmp_path / "np", "--no-pca")
    assert res.stderr == "reduce: 2 models, 16 -> 16 dims (no PCA), corpus 60 rows, queries 7 rows\n"


def test_cli_config_file_weights_merge_with_flags(cli, tmp_path, two_models):
    embed, _ = two_models
    cfg = tmp_path / "c.toml"
    cfg.write_text("[reduce]\nn_components = 2\nweights = { m1 = 2.0, m2 = 3.0 }\n")
    res = cli("reduce", "-e", embed, "-o", tmp_path / "r", "-c", cfg, "-w", "m2=5", "-q")
    assert res.exit_code == 0, res.stderr
    p = load_manifest(tmp_path / "r").params
    assert p["weights"] == {"m1": 2.0, "m2": 5.0} and p["n_components"] == 2
    res = cli("reduce", "-e", embed, "-o", tmp_path / "v", "-c", cfg, "--variance", "0.5", "-q")
    assert load_manifest(tmp_path / "v").params["n_components"] is None  # an explicit --variance wins


def test_cli_errors(cli, tmp_path, two_models):
    embed, _ = two_models
    incomplete = tmp_path / "half"
    incomplete.mkdir()
    res = cli("reduce", "--embeddings", incomplete, "--out", tmp_path / "red")
    assert res.exit_code == 1
    assert res.stdout == ""
    assert (
        res.stderr
        == f"Error: {incomplete} is incomplete (no manifest.json). Rerun: hnm embed --data DATA --out {incomplete}\n"
    )
    assert not (tmp_path / "red").exists()
    res = cli("reduce", "-e", embed, "-o", tmp_path / "red", "--weight", "m1")
    assert res.exit_code == 2 and "expected NAME=W with W > 0, got 'm1'" in res.stderr
    res = cli("reduce", "-e", embed, "-o", tmp_path / "red", "--fit-on", "queries")
    assert res.exit_code == 2
    res = cli("reduce", "-e", embed, "-o", tmp_path / "red", "--variance", "0.9", "--n-components", "3")
    assert res.exit_code == 2 and "give --variance or --n-components, not both" in res.stderr


def test_cli_mismatched_ids_one_error_line(cli, tmp_path):
    vecs = {"m1": (_vectors(4, 4, 1), None), "m2": (_vectors(3, 4, 3), None)}
    embed = make_embed_artifact(
        tmp_path, vecs, per_model_ids={"m1": (["a", "b", "c", "d"], None), "m2": (["a", "b", "c"], None)}
    )
    res = cli("reduce", "-e", embed, "-o", tmp_path / "red")
    assert res.exit_code == 1
    assert res.stderr == (
        f"Error: {embed}/m2/corpus: 3 corpus rows but {embed}/m1/corpus has 4; model 'm2' was embedded from a "
        f"different corpus. Rerun: hnm embed --out {embed} --force\n"
    )


# ---------------------------------------------------------------------------------------------
# Memory: streaming keeps peak RSS far below the size of the data
# ---------------------------------------------------------------------------------------------

_MEMORY_SCRIPT = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from hnm_cli.config import ReduceConfig
    from hnm_cli.stages import reduce as reduce_stage

    def status_kib(key):
        # VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the (bigger) parent across exec.
        for line in open("/proc/self/status"):
            if line.startswith(key + ":"):
                return int(line.split()[1])

    base = status_kib("VmRSS")
    m = reduce_stage.run(Path(sys.argv[1]), Path(sys.argv[2]),
                         ReduceConfig(max_fit_rows=20_000, variance=0.95), progress=False)
    peak = status_kib("VmHWM")
    print(base // 1024, peak // 1024, m.stats["fit_rows"], m.stats["corpus_rows"], m.stats["dim"])
    """
)


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc for VmHWM")
def test_peak_memory_is_bounded_by_block_and_fit_moments(tmp_path):
    rows, dim, shard = 200_000, 384, 20_000
    # Write the artifact shard by shard with a generator-free builder to keep this process small too.
    rng = np.random.default_rng(0)
    basis = rng.normal(size=(2, 32, dim)).astype(np.float32)
    embed = tmp_path / "embed"
    from hnm_cli.artifacts.manifest import compute_fingerprint, output_entry, write_manifest
    from hnm_cli.artifacts.vectors import write_vector_shard

    records = [{"role": "corpus", "path": "synthetic", "sha256": "0" * 64, "bytes": 0}]
    top_outputs = []
    for mi, name in enumerate(("m1", "m2")):
        outputs = []
        for s in range(rows // shard):
            x = rng.normal(size=(shard, 32)).astype(np.float32) @ basis[mi]
            x += 0.1 * rng.normal(size=(shard, dim)).astype(np.float32)
            ids = [f"d{s * shard + i}" for i in range(shard)]
            for rel in write_vector_shard(embed / name / "corpus", s, ids, x):
                outputs.append(output_entry(embed / name, f"corpus/{rel}", rows=shard))
        q = rng.normal(size=(100, dim)).astype(np.float32)
        outputs += [
            output_entry(embed / name, f"queries/{r}", rows=100)
            for r in write_vector_shard(embed / name / "queries", 0, [f"q{i}" for i in range(100)], q)
        ]
        write_manifest(embed / name, stage="embed-model", fingerprint=compute_fingerprint("x", {"n": name}, []), params={"name": name},
                       inputs=records, outputs=outputs, stats={}, started=0.0)  # fmt: skip
        top_outputs += [{**o, "path": f"{name}/{o['path']}"} for o in outputs]
    write_manifest(embed, stage="embed", fingerprint="x", params={"models": [{"name": "m1"}, {"name": "m2"}]},
                   inputs=records, outputs=top_outputs, stats={}, started=0.0)  # fmt: skip
    data_mib = 2 * rows * dim * 4 / 2**20  # 586 MiB of input vectors

    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-c", _MEMORY_SCRIPT, str(embed), str(tmp_path / "red")],
        capture_output=True, text=True, env=env, timeout=600, check=True,
    )  # fmt: skip
    base_mib, peak_mib, fit_rows, corpus_rows, out_dim = map(int, proc.stdout.split())
    print(f"\nreduce 2 x {rows} x {dim}: RSS base {base_mib} MiB, peak {peak_mib} MiB, data {data_mib:.0f} MiB")
    assert (fit_rows, corpus_rows) == (20_000, 200_000)
    assert 2 <= out_dim <= 768
    # Loading the corpus would cost >= 586 MiB on top of the interpreter; the stream needs one fused block
    # (8192 x 768: 24 MiB float32, 48 MiB as float64 for the moments) plus the 768^2 moments (4.5 MiB).
    assert peak_mib - base_mib < 250, f"peak RSS grew by {peak_mib - base_mib} MiB (data: {data_mib:.0f} MiB)"
    assert peak_mib < data_mib


def test_models_with_different_shard_layouts(tmp_path, two_models):
    """Output shards follow the first model; other models are read across their own shard boundaries."""
    _, vecs = two_models
    embed = make_embed_artifact(
        tmp_path, vecs, shard_rows=[25, 0, 35], query_shard_rows=4, name="embed2",
        per_model_shard_rows={"m2": [10, 40, 10]},
    )  # fmt: skip
    reduce_stage.run(embed, tmp_path / "red", ReduceConfig(pca=False, block_rows=7), progress=False)
    assert [p.name for p, _ in list_vector_shards(tmp_path / "red" / "corpus")] == [
        "vectors-00000.npy",
        "vectors-00002.npy",
    ]
    ids, got = load_vectors(tmp_path / "red" / "corpus")
    assert ids == [f"d{i}" for i in range(60)]
    np.testing.assert_allclose(got, _norm(_fused(vecs, 0)), atol=1e-6)
