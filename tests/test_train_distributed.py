"""`hnm train-reranker` under torchrun: two CPU ranks (gloo) on the bundled example, as a user launches it.

The slow tests start `torchrun --standalone --nproc_per_node 2 -m hnm_cli train-reranker ...` on a mine artifact of
examples/cloud-docs (hash:32 vectors, topk negatives: built in seconds, offline) with a random-weight 1-layer
BERT, a few steps and a short max length. Rank 1 runs under strace where strace works, so "only rank 0 writes into
--out" is checked on the system calls themselves. The fast tests cover the launch helpers and the CLI's
one-error-line rule without starting processes.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import EXAMPLE
from test_stage_train import make_mine_artifact

from hnm_cli.artifacts.manifest import load_manifest
from hnm_cli.errors import ConfigError, DataError, StoppedError
from hnm_cli.training.distributed import Launch, current_launch, once, rank_device, together

# ---------------------------------------------------------------------------------------------
# Launch helpers (fast)
# ---------------------------------------------------------------------------------------------


def test_current_launch_reads_the_launchers_variables():
    assert current_launch({}) == Launch(rank=0, world_size=1, local_rank=0)
    launch = current_launch({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1"})
    assert (launch.rank, launch.world_size, launch.local_rank, launch.distributed, launch.is_main) == (
        3,
        4,
        1,
        True,
        False,
    )
    assert current_launch({"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0"}).distributed is False
    with pytest.raises(ConfigError, match="RANK=2 is not within WORLD_SIZE=2"):
        current_launch({"RANK": "2", "WORLD_SIZE": "2"})
    with pytest.raises(ConfigError, match="must be integers"):
        current_launch({"RANK": "x", "WORLD_SIZE": "2"})


def test_rank_device_gives_each_rank_its_own_device():
    two = Launch(rank=1, world_size=2, local_rank=1)
    assert rank_device("cuda:1", Launch()) == "cuda:1"  # one process: as given, checked later as before
    assert rank_device("cpu", two) == "cpu"
    for device in ("cuda:0", "mps"):
        with pytest.raises(ConfigError, match="each rank trains on the GPU of its LOCAL_RANK"):
            rank_device(device, two)
    import torch

    if not torch.cuda.is_available():
        assert rank_device("auto", two) == "cpu"
        with pytest.raises(ConfigError, match="no CUDA device is visible"):
            rank_device("cuda", two)


def test_once_and_together_in_one_process_just_run_the_step():
    assert once(Launch(), lambda: 41 + 1) == 42
    assert together(Launch(), lambda: "x") == "x"

    def bad():
        raise DataError("f.jsonl:3: field 'x': bad")

    with pytest.raises(DataError, match="f.jsonl:3"):
        once(Launch(), bad)


def test_steps_per_epoch_counts_whole_global_batches_on_several_ranks():
    from hnm_cli.config import TrainRerankerConfig
    from hnm_cli.training.trainer import check_batches, steps_per_epoch

    assert steps_per_epoch([10, 3], 4, Launch()) == 4  # one process: ceil(13 / 4), as before
    two = Launch(rank=0, world_size=2)
    assert steps_per_epoch([10, 3], 2, two) == 2  # 10 // 4 + 3 // 4
    check_batches([4], TrainRerankerConfig(batch_size=2), two, "m")
    with pytest.raises(DataError, match=r"m: 3 training examples fill no batch of 2 x 2 ranks = 4"):
        check_batches([3], TrainRerankerConfig(batch_size=2), two, "m")


@pytest.mark.parametrize(("rank", "lines"), [("0", 1), ("1", 0)])
def test_only_rank_zero_prints_an_error_every_rank_meets(tmp_path, monkeypatch, rank, lines):
    from typer.testing import CliRunner

    from hnm_cli.cli import app

    bad = tmp_path / "bad.toml"
    bad.write_text("[train_reranker]\nbatch_size = 0\n")
    monkeypatch.setenv("RANK", rank)
    monkeypatch.setenv("WORLD_SIZE", "2")
    result = CliRunner().invoke(
        app, ["train-reranker", "--train-file", str(bad), "--out", str(tmp_path / "o"), "-c", str(bad)]
    )
    assert result.exit_code == 1
    expected = f"Error: {bad}: train_reranker.batch_size must be > 0; got 0\n"
    assert result.stderr == expected * lines
    assert result.stdout == ""


def test_a_stopped_rank_exits_quietly(monkeypatch):
    import typer

    from hnm_cli.cli import reported

    with pytest.raises(typer.Exit) as exc, reported(main_rank=False):
        raise StoppedError("rank 1: stopped because rank 0 failed (x)")
    assert exc.value.exit_code == 1


# ---------------------------------------------------------------------------------------------
# Two CPU ranks under torchrun (slow)
# ---------------------------------------------------------------------------------------------

RANK_WRAPPER = """#!/bin/sh
# Rank 0 runs as is; the other ranks under strace, every file system call that could write recorded.
if [ "$RANK" != "0" ] && [ -n "$HNM_TRACE" ]; then
  exec strace -f -qq -o "$HNM_TRACE.$RANK" -e trace=open,openat,creat,mkdir,mkdirat,rename,renameat,renameat2,unlink,unlinkat,rmdir,link,linkat,symlink,symlinkat,truncate "$@"
fi
exec "$@"
"""

SLOW_WRAPPER = """
import os, sys, time
import transformers

_step = transformers.Trainer.training_step


def slow_step(self, *args, **kwargs):
    time.sleep(float(sys.argv[1]))
    return _step(self, *args, **kwargs)


transformers.Trainer.training_step = slow_step
with open(os.path.join(sys.argv[2], "rank-" + os.environ["RANK"]), "w") as fh:
    fh.write(str(os.getpid()))
from hnm_cli.cli import app

app(sys.argv[3:], prog_name="hnm")
"""


def _torchrun() -> list[str]:
    script = Path(sys.executable).parent / "torchrun"
    launcher = [str(script)] if script.is_file() else [sys.executable, "-m", "torch.distributed.run"]
    # --standalone: a free rendezvous port, so parallel test runs on one machine do not meet.
    return [*launcher, "--standalone", "--nproc_per_node", "2"]


def _env(**extra: str) -> dict[str, str]:
    repo = str(Path(__file__).resolve().parents[1])
    pythonpath = repo + os.pathsep + os.environ.get("PYTHONPATH", "")
    return os.environ | {"HF_HUB_OFFLINE": "1", "PYTHONPATH": pythonpath, "OMP_NUM_THREADS": "1"} | extra


def _strace_works() -> bool:
    if shutil.which("strace") is None:
        return False
    probe = subprocess.run(["strace", "-f", "-qq", "-o", os.devnull, "true"], capture_output=True)
    return probe.returncode == 0


WRITE_CALLS = re.compile(r"^\d+\s+(\w+)\((.*)$")


def _writes_under(trace: Path, out: Path) -> list[str]:
    """The system calls in an strace log that create, change or remove something under `out`."""
    found = []
    for line in trace.read_text(errors="replace").splitlines():
        match = WRITE_CALLS.match(line)
        if not match or str(out) not in match.group(2):
            continue
        call, args = match.groups()
        if call in ("open", "openat") and not re.search(r"O_WRONLY|O_RDWR|O_CREAT|O_TRUNC", args):
            continue  # reading the checkpoint to resume from is expected
        found.append(line)
    return found


@pytest.fixture(scope="module")
def example_run(tmp_path_factory):
    """(mine artifact of examples/cloud-docs, tiny BERT knowing its words, work folder)."""
    import orjson
    from tiny_models import build_tiny_bert
    from typer.testing import CliRunner

    from hnm_cli.cli import app

    root = tmp_path_factory.mktemp("ddp")
    runner = CliRunner()
    for args in (
        ["embed", "--data", EXAMPLE, "--model", "hash:32", "--out", root / "embed", "-q"],
        ["mine", "--vectors", root / "embed" / "hash-32", "--data", EXAMPLE, "--strategy", "topk", "--out",
         root / "mine", "-q"],
    ):  # fmt: skip
        result = runner.invoke(app, [str(a) for a in args], catch_exceptions=False)
        assert result.exit_code == 0, result.stderr
    texts = [r["title"] + " " + r["text"] for r in map(orjson.loads, (EXAMPLE / "corpus.jsonl").open("rb"))]
    texts += [r["text"] for r in map(orjson.loads, (EXAMPLE / "queries.jsonl").open("rb"))]
    model = build_tiny_bert(root / "tiny-bert", words=texts)
    return root / "mine", model, root


def _train_args(mine: Path, model: Path, out: Path, *extra: str) -> list[str]:
    return [
        "train-reranker", "--mined", str(mine), "--data", str(EXAMPLE), "--out", str(out), "--base-model", str(model),
        "--batch-size", "2", "--max-length", "32", "--device", "cpu", "--quiet", *extra,
    ]  # fmt: skip


def _error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("Error:")]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("kind", "loss"),
    [("cross-encoder", "margin"), ("cross-encoder", "bce"), ("cross-encoder", "listwise"), ("bi-encoder", "mnrl"),
     ("bi-encoder", "margin")],
)  # fmt: skip
def test_two_cpu_ranks_train_every_kind_and_loss(example_run, tmp_path, kind, loss):
    mine, model, _ = example_run
    out = tmp_path / "rr"
    args = _train_args(mine, model, out, "--kind", kind, "--loss", loss, "--max-steps", "2", "--checkpoint-steps", "2")
    wrapper = tmp_path / "rank.sh"
    wrapper.write_text(RANK_WRAPPER)
    trace = tmp_path / "trace"
    env = _env(HNM_TRACE=str(trace) if _strace_works() else "")
    cmd = [*_torchrun(), "--no-python", "sh", str(wrapper), sys.executable, "-m", "hnm_cli", *args]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    assert result.stdout == f"{out / 'manifest.json'}\n"  # once: rank 0 alone prints the result
    assert _error_lines(result.stderr) == []

    manifest = load_manifest(out)
    assert manifest.params["world_size"] == 2 and manifest.params["effective_batch_size"] == 4
    stats = manifest.stats
    assert (stats["world_size"], stats["effective_batch_size"], stats["global_step"]) == (2, 4, 2)
    assert [step for step, _ in stats["loss_curve"]] == [1, 2]  # the mean over both ranks, logged by rank 0
    # One model, one checkpoint; rank 0 wrote rank 1's rng state into it.
    assert sorted(p.name for p in out.iterdir()) == ["checkpoints", "manifest.json", "model"]
    ckpt = out / "checkpoints" / "checkpoint-2"
    assert (ckpt / "rng_state_0.pth").is_file() and (ckpt / "rng_state_1.pth").is_file()
    if env["HNM_TRACE"]:
        rank1 = trace.with_name("trace.1")
        assert rank1.is_file()
        assert _writes_under(rank1, out) == []  # rank 1 never created, changed or removed anything in --out

    if kind == "cross-encoder":
        from sentence_transformers import CrossEncoder

        scores = CrossEncoder(str(out / "model")).predict([("what is a vcn", "VCN overview"), ("a", "b")])
        assert len(scores) == 2
    else:
        from sentence_transformers import SentenceTransformer

        assert SentenceTransformer(str(out / "model")).encode(["what is a vcn"]).shape == (1, 32)

    if (kind, loss) == ("cross-encoder", "margin"):
        # The same launch again is up to date (rank 0 says so once), and leaves the model alone.
        mtime = (out / "model" / "model.safetensors").stat().st_mtime_ns
        again = subprocess.run(
            [*_torchrun(), "-m", "hnm_cli", *(a for a in args if a != "--quiet")],
            env=_env(),
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert again.returncode == 0, again.stderr[-3000:]
        assert again.stdout == f"{out / 'manifest.json'}\n"
        assert again.stderr.count("train-reranker: up to date") == 1
        assert (out / "model" / "model.safetensors").stat().st_mtime_ns == mtime


@pytest.mark.slow
def test_accelerate_launch_trains_the_same_way(example_run, tmp_path):
    accelerate = Path(sys.executable).parent / "accelerate"
    if not accelerate.is_file():
        pytest.skip("accelerate is not installed in this environment")
    mine, model, _ = example_run
    out = tmp_path / "rr"
    # --multi_gpu is accelerate's torchrun path; --device cpu makes its ranks CPU ranks over gloo.
    cmd = [str(accelerate), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "0",
           "-m", "hnm_cli", *_train_args(mine, model, out, "--max-steps", "2")]  # fmt: skip
    result = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-4000:]
    assert result.stdout == f"{out / 'manifest.json'}\n"
    stats = load_manifest(out).stats
    assert (stats["world_size"], stats["effective_batch_size"], stats["global_step"]) == (2, 4, 2)


@pytest.mark.slow
def test_a_killed_rank_resumes_from_the_last_checkpoint(example_run, tmp_path):
    mine, model, _ = example_run
    out = tmp_path / "rr"
    args = _train_args(mine, model, out, "--max-steps", "6", "--checkpoint-steps", "2")
    pids = tmp_path / "pids"
    pids.mkdir()
    script = tmp_path / "slow.py"
    script.write_text(SLOW_WRAPPER)
    proc = subprocess.Popen(
        [*_torchrun(), str(script), "1.5", str(pids), *args], env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    first_ckpt = out / "checkpoints" / "checkpoint-2" / "trainer_state.json"
    try:
        deadline = time.time() + 300
        while not first_ckpt.is_file():
            assert proc.poll() is None, proc.communicate()[1].decode()[-3000:]
            assert time.time() < deadline, "no checkpoint after 300 s"
            time.sleep(0.1)
        os.kill(int((pids / "rank-1").read_text()), signal.SIGKILL)  # one rank dies; torchrun stops the other
        proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode != 0
    assert not (out / "manifest.json").exists() and not (out / "model").exists()  # no partial artifact
    assert not (out / "checkpoints" / "checkpoint-6").exists()

    rerun = subprocess.run([*_torchrun(), "-m", "hnm_cli", *args], env=_env(), capture_output=True, text=True,
                           timeout=600)  # fmt: skip
    assert rerun.returncode == 0, rerun.stderr[-4000:]
    assert rerun.stdout == f"{out / 'manifest.json'}\n"
    stats = load_manifest(out).stats
    assert stats["resumed_from_step"] in (2, 4)  # the kill may land after step 4's checkpoint too
    assert stats["global_step"] == 6 and stats["world_size"] == 2
    assert [step for step, _ in stats["loss_curve"]] == [1, 2, 3, 4, 5, 6]
    assert (out / "checkpoints" / "checkpoint-6" / "rng_state_1.pth").is_file()


@pytest.mark.slow
def test_a_bad_input_stops_both_ranks_with_one_error_line(example_run, tmp_path):
    _, model, _ = example_run
    rows = [{"query_id": "q-0001", "positive_id": "doc-0004", "negatives": [{"doc_id": "nope"}], "meta": {}}]
    mine = make_mine_artifact(tmp_path / "mine", EXAMPLE, rows)
    out = tmp_path / "rr"
    t0 = time.time()
    result = subprocess.run(
        [*_torchrun(), "-m", "hnm_cli", *_train_args(mine, model, out, "--max-steps", "2")],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode != 0
    assert _error_lines(result.stderr) == [
        f"Error: {mine}/rows-00000.jsonl:1: field 'negatives[0].doc_id': unknown document id 'nope' "
        "(not in the corpus given)"
    ]
    assert not re.search(r'File ".*/hnm_cli/', result.stderr)  # no rank crashed with a traceback
    assert result.stdout == ""
    assert not out.exists()  # no partial artifact, not even the folder
    assert time.time() - t0 < 240  # no rank waited for a collective that never came


@pytest.mark.slow
def test_one_rank_on_cuda(example_run, tmp_path):
    import torch

    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    mine, model, _ = example_run
    out = tmp_path / "rr"
    launcher = [*_torchrun()[:-1], "1"]
    args = [a if a != "cpu" else "cuda" for a in _train_args(mine, model, out, "--max-steps", "2")]
    result = subprocess.run([*launcher, "-m", "hnm_cli", *args], env=_env(), capture_output=True, text=True,
                            timeout=600)  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:]
    stats = load_manifest(out).stats
    assert stats["device"].startswith("cuda") and stats["world_size"] == 1 and stats["global_step"] == 2
