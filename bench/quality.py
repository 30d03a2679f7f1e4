"""Quality benchmark: which negatives make the better reranker, on any BEIR folder, with the `hnm` CLI.

    make bench-quality DATA=../shared/data/scifact              # the full grid (hours on 2 CPU cores)
    make bench-quality DATA=../shared/data/scifact QUICK=1      # 3 arms, 1 seed, a 1000-doc sample (~10 min)
    nohup make bench-quality DATA=../shared/data/scifact > bench.log 2>&1 &    # unattended; rerun to resume

Arms (mined on the train split, evaluated on the test split; `--arms` picks a subset). The primary grid:
  1 first-stage   no reranker: the fixed first stage itself (dense top-k of the untuned base bi-encoder)
  2 random        seeded random negatives (re-drawn per seed)
  3 st-default    sentence_transformers.util.mine_hard_negatives, all knobs at their defaults, best single model
  4 paper         `hnm mine --preset paper`: the published rule (strict C1 and C2, 1 negative), ensemble + PCA
  5 hnm-default   `hnm mine` with its defaults (the recipe this benchmark chose, issue 20: TopK-PercPos, the dense
                  top 3 below 95% of the positive's score), ensemble + PCA
  6 no-ceiling    ablation: the default without its ceiling (--relative-margin none: dense top 3 of the ensemble)
  7 no-ensemble   ablation: the default on the best single model
References, run with --arms at the seeds they need (one places them; they never make the grid "partial"):
  8 rule-fill     the default before issue 20: the paper's rule, 3 negatives, short pairs filled with the next
                  C2-passing documents (--strategy rule --relative-margin none)
  9 bm25, 10 dense-topk (top-1, no ceiling, best single model), 12 paper-best, 13 paper-nopca (the paper's rule
  on the best single model / on the ensemble without PCA).
`--explore KEY=VECTORS:OPTIONS` adds an arm for a one-off recipe.

Two families train on the same negatives from the same base model (batch, max length): `bi` (bi-encoder,
MultipleNegativesRankingLoss with the hard negatives: the primary comparison, `--max-steps` at `--lr`) and `cross`
(a cross-encoder initialised from the same weights with a fresh head, trained with its kind's recipe: listwise loss,
3x the steps at lr 5e-5, `FAMILIES`), reported alone and fused with the first stage by RRF. Every trained (family, arm) runs `--seeds` seeds (default 3). The "best single model" is the
embedded model with the highest nDCG@10 on the *train* split (no test data is used to choose it).

Everything lives in a work dir (default runs/bench/<dataset>/, QUICK: runs/bench/<dataset>-quick/), one hnm
artifact per step; each step is an `hnm` call that is an up-to-date no-op once done, so rerunning the same
command after a crash or a kill continues where it stopped. `<work>/state.json` records every step's status and
time, `<work>/bench.log` every command and its stderr, `<work>/commands.sh` the exact commands.
Each (family, arm, seed) is evaluated on its own (`<work>/eval/...`, cached); the table aggregates the per-query
values with the same functions `hnm eval` uses for repeated `--model` names (mean ± std over seeds, per-query
seed means for the paired randomization test). `--combined-eval` also runs one `hnm eval` per family with every
model (`<work>/eval/<family>-all/report.md`): the same numbers from one command, at the cost of scoring again.

Output: the quality section of BENCHMARKS.md and the "quality" key of BENCHMARKS.json.
"""

from __future__ import annotations

import argparse
import math
import os
import shlex
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hnm_cli.config import MineConfig

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))

from cells import RESULTS_ROOT, cell_path, load_cell, save_cell  # noqa: E402
from common import (  # noqa: E402
    REPO,
    CommandError,
    Log,
    fmt_gain,
    fmt_mean_std,
    fmt_p,
    hnm_bin,
    machine_info,
    machine_line,
    markdown_table,
    mean_std,
    run_logged,
    sample_beir,
    shell_join,
    update_bench_files,
)

from hnm_cli.choices import DEFAULT_RECIPE_BY_KIND, ModelKind  # noqa: E402

# Each family trains with its kind's own recipe (hnm_cli.choices.DEFAULT_RECIPE_BY_KIND), scaled to the bench's
# budget: the bi-encoder `--max-steps` steps at `--lr`; the cross-encoder, whose head starts from nothing,
# `steps_factor` times the steps at its own lr (300 steps at 5e-5 with the defaults: about 5 epochs of SciFact's
# pairs, the recipe that won the cross-encoder screen, bench/cross_recipes.py).
CROSS_RECIPE = DEFAULT_RECIPE_BY_KIND[ModelKind.CROSS_ENCODER]
FAMILIES: dict[str, dict[str, Any]] = {
    "bi": {"kind": "bi-encoder", "loss": "mnrl", "label": "bi-encoder (MultipleNegativesRankingLoss)"},
    "cross": {
        "kind": "cross-encoder",
        "loss": str(CROSS_RECIPE.loss),
        "steps_factor": 3,
        "lr": CROSS_RECIPE.learning_rate,
        # A small cross-encoder is fragile alone (issue 21): its eval also fuses it with the first stage by RRF,
        # the way README tells users to run one, and the table reports both.
        "fuse": "rrf",
        "label": f"cross-encoder ({CROSS_RECIPE.loss}, its recipe: 3x the steps at lr {CROSS_RECIPE.learning_rate})",
    },
}


def family_budget(s: Settings, fam: str) -> tuple[int, float]:
    """The (optimizer steps, learning rate) a family trains with: the bench's, scaled by the family's recipe."""
    cfg = FAMILIES[fam]
    return s.max_steps * int(cfg.get("steps_factor", 1)), float(cfg.get("lr", s.lr))


TABLE_METRICS = ("mrr@3", "mrr@10", "ndcg@10")


@dataclass(frozen=True)
class Arm:
    """One row of the comparison: how its negatives are mined (None: no training)."""

    key: str
    number: int
    label: str
    mine_args: tuple[str, ...] | None  # hnm mine options; None for first-stage and st-default
    # "ensemble" (reduce), "best" (best single model), "nopca" (reduce --no-pca), "balanced" (reduce --balance
    # variance)
    vectors: str | None = None
    per_seed_mine: bool = False  # the negatives themselves are random: re-mined with each seed


ARMS: tuple[Arm, ...] = (
    Arm("first-stage", 1, "first stage only (no reranker)", None),
    # "--relative-margin none": random draws never read the default's ceiling; the settings say so.
    Arm(
        "random",
        2,
        "random negatives",
        ("--strategy", "random", "--relative-margin", "none"),
        "ensemble",
        per_seed_mine=True,
    ),
    Arm("st-default", 3, "sentence-transformers mine_hard_negatives defaults, best single model", None, "best"),
    Arm(
        "paper",
        4,
        "the paper: --preset paper (rule, strict C1, 1 negative), ensemble + PCA",
        ("--preset", "paper"),
        "ensemble",
    ),  # fmt: skip
    Arm("hnm-default", 5, "hnm default (TopK-PercPos)", (), "ensemble"),
    # Each part of the default removed in turn (the flags override the default's own).
    Arm(
        "no-ceiling",
        6,
        "ablation: the default without its ceiling (dense top 3 of the ensemble)",
        ("--relative-margin", "none"),
        "ensemble",
    ),
    Arm("no-ensemble", 7, "ablation: the default on the best single model", (), "best"),
    Arm(
        "rule-fill",
        8,
        "the default before issue 20: the rule, 3 negatives, short pairs filled (fallback next)",
        ("--strategy", "rule", "--relative-margin", "none"),
        "ensemble",
    ),
    # Measured once in earlier grids (one seed is enough to place them); run with --arms.
    Arm("bm25", 9, "BM25 negatives", ("--strategy", "bm25", "--relative-margin", "none"), "ensemble"),
    Arm(
        "dense-topk",
        10,
        "dense top-1, best single model",
        ("--strategy", "topk", "--num-negatives", "1", "--relative-margin", "none"),
        "best",
    ),
    Arm("paper-best", 12, "ablation: the paper's rule, best single model", ("--preset", "paper"), "best"),
    Arm("paper-nopca", 13, "ablation: the paper's rule, ensemble without PCA", ("--preset", "paper"), "nopca"),
)
ARM_BY_KEY = {a.key: a for a in ARMS}
# The grid the default's choice rests on, run at --seeds (3): the baselines, the paper, the default and each of its
# parts removed. Any other arm (BM25, the default before issue 20, explorations) is a reference placed at the seeds
# it was given (`--arms bm25 --seeds 1`) and does not make the grid "partial".
PRIMARY_ARMS = ("first-stage", "random", "st-default", "paper", "hnm-default", "no-ceiling", "no-ensemble")
QUICK_ARMS = ("first-stage", "random", "hnm-default")
# The order trained arms run in when --arms does not give one: the comparison the benchmark exists for first
# (the reference, hnm's default, random, the paper), so a grid stopped early has the cells that matter most.
RUN_ORDER = (
    "st-default", "hnm-default", "random", "paper", "no-ceiling", "no-ensemble", "rule-fill",
    "bm25", "dense-topk", "paper-best", "paper-nopca",
)  # fmt: skip
REFERENCE_ARM = "st-default"  # the paired tests are against this arm
DEFAULT_ARM = "hnm-default"  # and the default is tested against every other arm


@dataclass
class Settings:
    """Everything that shapes the grid; recorded in state.json and BENCHMARKS.json."""

    data: Path
    work: Path
    quick: bool = False
    seeds: int = 3
    arms: tuple[str, ...] = PRIMARY_ARMS  # table order
    run_order: tuple[str, ...] = RUN_ORDER  # the order trained arms run in (--arms order when given)
    embed_precision: str = "fp32"  # hnm embed --precision for the grid's vectors (bf16: ~2-3x faster on CPUs)
    embed_backend: str | None = None  # hnm embed --backend for the grid's vectors (None: the config's)
    precision: str = "fp32"  # train-reranker and eval --precision (bf16: mixed-precision training, autocast scoring)
    families: tuple[str, ...] = ("bi", "cross")
    config: Path = REPO / "configs" / "default.toml"
    embed_models: tuple[str, ...] = ()  # empty: the config's [[embed.models]]
    first_stage_model: str = "all-MiniLM-L6-v2"  # an embedded model's folder name: the fixed first stage
    best_model: str | None = None  # None: chosen by train-split nDCG@10
    base_model: str = "pkg:all-MiniLM-L6-v2"
    max_steps: int = 100
    batch_size: int = 16
    lr: float = 2e-5
    max_length: int = 256
    negatives_per_positive: int = 3
    top_k: int = 100
    eval_batch_size: int = 32
    sample_docs: int = 1000
    sample_train: int = 100
    sample_test: int = 50
    combined_eval: bool = False
    md: Path = REPO / "BENCHMARKS.md"
    json: Path = REPO / "BENCHMARKS.json"
    # Finished cells (bench/cells.py): skipped when found with the same settings, so a grid spans machines.
    # None (quick mode): nothing is kept beyond the work dir.
    results: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(self).items()}


# ---------------------------------------------------------------------------------------------
# State, lock, commands
# ---------------------------------------------------------------------------------------------


class State:
    """`<work>/state.json`: per-step status and seconds; survives crashes (written after every step)."""

    def __init__(self, work: Path, settings: Settings) -> None:
        self.path = work / "state.json"
        self.data: dict[str, Any] = orjson.loads(self.path.read_bytes()) if self.path.is_file() else {}
        self.data.setdefault("steps", {})
        self.data["settings"] = settings.to_json()
        self.data.setdefault("first_started", time.strftime("%Y-%m-%d %H:%M:%S"))
        self.data["last_started"] = time.strftime("%Y-%m-%d %H:%M:%S")
        self.data["machine"] = machine_info()  # of this invocation: date, load average and commit of the report

    def record(self, key: str, status: str, seconds: float, **extra: Any) -> None:
        prev = self.data["steps"].get(key, {})
        entry = {"status": status, "last_seconds": round(seconds, 1), **extra}
        # Keep the time of the run that did the work: an up-to-date rerun must not overwrite it.
        entry["work_seconds"] = prev.get("work_seconds") if extra.get("up_to_date") else round(seconds, 1)
        self.data["steps"][key] = entry
        self.save()

    def save(self) -> None:
        from hnm_cli.fileio import atomic_write_json

        atomic_write_json(self.path, self.data)


def acquire_lock(work: Path) -> Path:
    """Refuse to run two grids in one work dir at once (they would write the same artifacts)."""
    lock = work / ".lock"
    if lock.exists():
        try:
            pid = int(lock.read_text().strip())
            os.kill(pid, 0)
            raise SystemExit(f"Error: {work} is in use by process {pid} (remove {lock} if that is stale)")
        except (ValueError, ProcessLookupError, PermissionError):
            pass
    lock.write_text(str(os.getpid()))
    return lock


class Runner:
    """Runs one `hnm` step: logs the command, records it in commands.sh and state.json, keeps going on failure."""

    def __init__(self, work: Path, state: State, log: Log) -> None:
        self.work, self.state, self.log = work, state, log
        self.commands = work / "commands.sh"
        self.failed: list[str] = []

    def __call__(self, key: str, args: list[str], *, timeout: float | None = None) -> bool:
        args = [str(a) for a in args]
        line = shell_join(args)
        seen = self.commands.read_text().splitlines() if self.commands.is_file() else []
        if line not in seen:
            with open(self.commands, "a", encoding="utf-8") as fh:
                fh.write(line + "\n")
        out = Path(args[args.index("--out") + 1]) / "manifest.json" if "--out" in args else None
        before = out.stat().st_mtime_ns if out is not None and out.is_file() else None
        t0 = time.perf_counter()
        try:
            _, seconds = run_logged(args, self.log, timeout=timeout)
        except (CommandError, OSError) as err:
            self.log(f"FAILED {key}: {err}")
            self.state.record(key, "failed", time.perf_counter() - t0, error=str(err))
            self.failed.append(key)
            return False
        # An untouched manifest means the step found its artifact up to date and did no work.
        after = out.stat().st_mtime_ns if out is not None and out.is_file() else None
        self.state.record(key, "done", seconds, up_to_date=before is not None and before == after)
        return True


# ---------------------------------------------------------------------------------------------
# Steps
# ---------------------------------------------------------------------------------------------


def best_single_model(embed_dir: Path, data: Path, names: list[str], split: str = "train") -> dict[str, Any]:
    """nDCG@10 of each embedded model on `split` (dense, exact): the selection of the "best single model".

    Uses only the training split, so the choice leaks nothing of the test queries.
    """
    import numpy as np

    from hnm_cli.artifacts.vectors import load_vectors
    from hnm_cli.evaluation.metrics import mean_metrics, per_query_metrics
    from hnm_cli.inputs import resolve_qrels_file
    from hnm_cli.qrels import read_qrels

    qrels = read_qrels(resolve_qrels_file(data, split))
    judged = {q: d for q, d in qrels.items() if any(r > 0 for r in d.values())}
    scores: dict[str, float] = {}
    for name in names:
        c_ids, c_vecs = load_vectors(embed_dir / name / "corpus")
        q_ids, q_vecs = load_vectors(embed_dir / name / "queries")
        row = {q: i for i, q in enumerate(q_ids)}
        qids = [q for q in judged if q in row]
        sims = q_vecs[[row[q] for q in qids]] @ c_vecs.T
        top = np.argsort(-sims, axis=1, kind="stable")[:, :10]
        run = {q: {c_ids[j]: float(sims[i, j]) for j in top[i]} for i, q in enumerate(qids)}
        scores[name] = mean_metrics(per_query_metrics(judged, run, ["ndcg@10"]), ["ndcg@10"])["ndcg@10"]
    best = max(scores, key=lambda n: (scores[n], n))
    return {"split": split, "ndcg@10": scores, "best": best}


def embedded_models(embed_dir: Path) -> list[str]:
    """Model folder names of an embed artifact, in the order of its manifest."""
    from hnm_cli.artifacts.manifest import load_manifest

    manifest = load_manifest(embed_dir)
    if manifest is None:
        raise SystemExit(f"Error: {embed_dir} has no manifest.json (embed did not finish)")
    names = [m.get("name") for m in manifest.params.get("models", [])]
    return [n for n in names if n and (embed_dir / n).is_dir()]


def resolved_mine(mine_args: Sequence[str], defaults: MineConfig | None = None) -> dict[str, str]:
    """The mining settings an arm's options resolve to over `defaults` (today's `MineConfig()` when None) as
    `MineConfig.to_params` records them, run options left out: part of every mined cell's identity.

    The resolved settings, not "options + defaults", so a cell stays valid when a default it overrides changes
    (issue 20 made TopK-PercPos the default: the explicit `pp95` arm's cells kept their identity), and an arm whose
    options resolve to another arm's settings names the same measurement.
    """
    from hnm_cli.config import MineConfig

    cfg, given, preset = defaults if defaults is not None else MineConfig(), {}, None
    args = list(mine_args)
    i = 0
    while i < len(args):
        name = args[i].removeprefix("--").replace("-", "_")
        flag = i + 1 == len(args) or args[i + 1].startswith("--")
        value: Any = True if flag else _option_value(args[i + 1])
        if name == "preset":
            preset = value
        else:
            given[name] = value
        i += 1 if flag else 2
    cfg = cfg.with_preset(preset).merged(**given)  # "none" clears an optional value, as on the command line
    skip = {"split", "preset", "seed", "block_size", "query_block", "eval_splits"}
    return {k: str(v) for k, v in sorted(cfg.to_params().items()) if k not in skip}


def _option_value(text: str) -> Any:
    """A command-line value as `MineConfig` checks it: an int, a float, or a word (StrEnum values are words)."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def cell_identity(s: Settings, fam: str | None, arm: Arm, seed: int | None, best: str | None) -> dict[str, Any]:
    """Every setting that shapes one cell's numbers (bench/cells.py): change any and the cell is measured again."""
    ident: dict[str, Any] = {
        "dataset": s.data.name,
        "split": "test",
        "first_stage": s.first_stage_model,
        "top_k": s.top_k,
        "embed_models": list(s.embed_models) or "config",
        "embed_precision": s.embed_precision,
        "embed_backend": s.embed_backend,
        "eval_max_length": s.max_length,
        "eval_precision": s.precision,
    }
    if fam is None:
        return ident
    cfg = FAMILIES[fam]
    max_steps, lr = family_budget(s, fam)
    # The arm's name is not part of the identity: two arms with the same settings are one measurement.
    ident |= {
        "seed": seed,
        "kind": cfg["kind"],
        "loss": cfg["loss"],
        "train_args": list(cfg.get("train_args", ())),
        "base_model": s.base_model,
        "max_steps": max_steps,
        "batch_size": s.batch_size,
        "lr": lr,
        "max_length": s.max_length,
        "negatives_per_positive": s.negatives_per_positive,
        "precision": s.precision,
        "vectors": arm.vectors if arm.vectors != "best" else f"best:{best}",
    }
    if cfg.get("fuse"):
        ident["fuse"] = cfg["fuse"]
    if arm.key == REFERENCE_ARM:
        ident["miner"] = "sentence-transformers defaults (bench/st_arm.py)"
    else:
        ident["mine"] = resolved_mine(arm.mine_args or ())
        ident["mine_seed"] = seed if arm.per_seed_mine else 0
    return ident


# The mining stats a cell keeps beside its metrics: how many pairs got negatives, and the false-negative risk.
MINE_STAT_KEYS = ("pairs", "pairs_with_zero", "negatives", "fn_risk", "guards", "suspected")


def _keep_cell(
    s: Settings,
    state: State,
    fam: str | None,
    arm: Arm,
    seed: int | None,
    best: str | None,
    edir: Path,
    steps: dict[str, str],
    mined: Path | None = None,
) -> None:
    """Copy a finished evaluation into its committed cell file (no-op without a results folder)."""
    if s.results is None:
        return
    pq = _per_query(edir, arm.key)
    if pq is None:
        return
    step_data = state.data["steps"]
    seconds = {name: (step_data.get(key) or {}).get("work_seconds") for name, key in steps.items()}
    extra: dict[str, Any] = {"arm": arm.key}
    fuse = FAMILIES[fam].get("fuse") if fam else None
    if fuse:
        fused = _per_query(edir, f"{arm.key}+{fuse}")
        if fused is None:
            return
        extra[f"{fuse}_per_query"] = fused
    if mined is not None and (mined / "stats.json").is_file():
        st = orjson.loads((mined / "stats.json").read_bytes())
        extra["mine_stats"] = {k: st[k] for k in MINE_STAT_KEYS if k in st}
    path = cell_path(s.results, fam or "", arm.key, seed)
    save_cell(path, cell_identity(s, fam, arm, seed, best), pq, seconds=seconds, machine=state.data["machine"],
              extra=extra)  # fmt: skip


def run_grid(s: Settings) -> int:
    """Run (or resume) every step, refreshing the report after each evaluated model. Returns an exit code."""
    work = s.work
    work.mkdir(parents=True, exist_ok=True)
    lock = acquire_lock(work)
    log = Log(work / "bench.log")
    state = State(work, s)
    step = Runner(work, state, log)
    hnm = hnm_bin()
    t_start = time.perf_counter()
    try:
        log(f"bench-quality: data {s.data}, work {work}, quick={s.quick}, arms {','.join(s.arms)}, seeds {s.seeds}")
        data = s.data
        if s.quick:
            summary = sample_beir(
                s.data, work / "data", n_docs=s.sample_docs, n_train=s.sample_train, n_test=s.sample_test, seed=0
            )
            data = work / "data"
            state.data["sample"] = summary
            log(
                f"sample: {summary['docs']} docs, {summary['train_queries']} train / "
                f"{summary['test_queries']} test queries"
            )
        state.data["data_used"] = str(data)

        embed = work / "embed"
        models = [a for m in s.embed_models for a in ("--model", m)]
        embed_cmd = [hnm, "embed", "-c", s.config, "--data", data, "--out", embed, "--precision", s.embed_precision]
        if s.embed_backend:
            embed_cmd += ["--backend", s.embed_backend]
        if not step("embed", [*embed_cmd, "-q", *models]):
            return 1
        names = embedded_models(embed)
        if s.first_stage_model not in names:
            raise SystemExit(f"Error: first-stage model {s.first_stage_model!r} is not embedded (have {names})")
        need = {ARM_BY_KEY[a].vectors for a in s.arms}
        if "ensemble" in need and not step(
            "reduce", [hnm, "reduce", "--embeddings", embed, "--out", work / "reduce", "-q"]
        ):
            return 1
        if "nopca" in need and not step(
            "reduce-nopca", [hnm, "reduce", "--embeddings", embed, "--out", work / "reduce-nopca", "--no-pca", "-q"]
        ):
            return 1
        if "balanced" in need and not step(
            "reduce-balanced",
            [hnm, "reduce", "--embeddings", embed, "--out", work / "reduce-balanced", "--balance", "variance", "-q"],
        ):
            return 1
        best = s.best_model
        if best is None:
            choice = best_single_model(embed, data, names)
            state.data["best_model"] = choice
            state.save()
            best = choice["best"]
            log(f"best single model (train nDCG@10): {best} {choice['ndcg@10']}")
        vectors = {
            "ensemble": work / "reduce",
            "nopca": work / "reduce-nopca",
            "balanced": work / "reduce-balanced",
            "best": embed / best,
        }
        fs_vectors = embed / s.first_stage_model

        eval_common = [
            "--data", data, "--split", "test", "--first-stage", "dense", "--vectors", fs_vectors,
            "--top-k", s.top_k, "--max-length", s.max_length, "--batch-size", s.eval_batch_size,
            "--precision", s.precision, "-q",
        ]  # fmt: skip
        fs_arm = ARM_BY_KEY["first-stage"]
        fs_path = cell_path(s.results, "", "first-stage", None) if s.results else None
        if fs_path is None or load_cell(fs_path, cell_identity(s, None, fs_arm, None, best)) is None:
            fs_dir = work / "eval" / "first-stage"
            if step("eval:first-stage", [hnm, "eval", *eval_common, "--out", fs_dir]):
                _keep_cell(s, state, None, fs_arm, None, best, fs_dir, {"eval": "eval:first-stage"})
        write_report(s, data, best)

        def mine_dir(arm: Arm, seed: int) -> Path | None:
            name = f"{arm.key}-s{seed}" if arm.per_seed_mine else arm.key
            out = work / "mine" / name
            if arm.key == REFERENCE_ARM:
                cmd = [sys.executable, REPO / "bench" / "st_arm.py", "--vectors", vectors["best"], "--data", data]
                ok = step(f"mine:{name}", [*cmd, "--split", "train", "--out", out])
            else:
                assert arm.mine_args is not None and arm.vectors is not None
                cmd = [hnm, "mine", "--vectors", vectors[arm.vectors], "--data", data, "--split", "train"]
                mine_seed = seed if arm.per_seed_mine else 0
                ok = step(f"mine:{name}", [*cmd, *arm.mine_args, "--seed", mine_seed, "--out", out, "-q"])
            return out if ok else None

        trained = [
            ARM_BY_KEY[a]
            for a in s.run_order
            if a in s.arms and (ARM_BY_KEY[a].mine_args is not None or a == REFERENCE_ARM)
        ]
        only_seeds = s.extra.get("only_seeds")
        for seed in range(s.seeds):
            if only_seeds is not None and seed not in only_seeds:
                continue
            for fam in s.families:
                for arm in trained:
                    if s.results is not None:
                        found = load_cell(cell_path(s.results, fam, arm.key, seed),
                                          cell_identity(s, fam, arm, seed, best))  # fmt: skip
                        if found is not None:
                            log(f"cell {fam}:{arm.key}:s{seed}: kept in {_rel(s.results)} (same settings), skipped")
                            continue
                    mined = mine_dir(arm, seed)
                    if mined is None:
                        continue
                    tdir = work / "train" / fam / arm.key / f"s{seed}"
                    cfg = FAMILIES[fam]
                    train_args = [str(a) for a in cfg.get("train_args", ())]
                    max_steps, lr = family_budget(s, fam)
                    ok = step(
                        f"train:{fam}:{arm.key}:s{seed}",
                        [
                            hnm, "train-reranker", "--mined", mined, "--data", data, "--out", tdir,
                            "--kind", cfg["kind"], "--loss", cfg["loss"], "--base-model", s.base_model,
                            "--max-steps", max_steps, "--batch-size", s.batch_size, "--lr", lr,
                            "--max-length", s.max_length, "--negatives-per-positive", s.negatives_per_positive,
                            "--seed", seed, "--precision", s.precision, "--drop-eval-overlap", "-q", *train_args,
                        ],
                    )  # fmt: skip
                    if not ok:
                        continue
                    edir = work / "eval" / fam / arm.key / f"s{seed}"
                    fuse = ["--fuse", cfg["fuse"]] if cfg.get("fuse") else []
                    if step(
                        f"eval:{fam}:{arm.key}:s{seed}",
                        [hnm, "eval", *eval_common, *fuse, "--model", f"{arm.key}={tdir}", "--out", edir],
                    ):
                        mine_name = f"{arm.key}-s{seed}" if arm.per_seed_mine else arm.key
                        steps = {"mine": f"mine:{mine_name}", "train": f"train:{fam}:{arm.key}:s{seed}",
                                 "eval": f"eval:{fam}:{arm.key}:s{seed}"}  # fmt: skip
                        _keep_cell(s, state, fam, arm, seed, best, edir, steps, mined)
                        write_report(s, data, best)
        if s.combined_eval:
            for fam in s.families:
                models = [
                    a
                    for arm in trained
                    for seed in range(s.seeds)
                    if (work / "train" / fam / arm.key / f"s{seed}" / "manifest.json").is_file()
                    for a in ("--model", f"{arm.key}={work / 'train' / fam / arm.key / f's{seed}'}")
                ]
                base = ["--baseline", REFERENCE_ARM] if REFERENCE_ARM in s.arms else []
                step(
                    f"eval:{fam}-all",
                    [hnm, "eval", *eval_common, *models, *base, "--out", work / "eval" / f"{fam}-all"],
                )
        state.data["last_finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
        state.data["last_run_seconds"] = round(time.perf_counter() - t_start, 1)
        state.save()
        write_report(s, data, best)
        if step.failed:
            log(f"bench-quality: {len(step.failed)} step(s) failed: {', '.join(step.failed)}; rerun to retry them")
            return 1
        log("bench-quality: done")
        return 0
    finally:
        lock.unlink(missing_ok=True)


# ---------------------------------------------------------------------------------------------
# Aggregation and report
# ---------------------------------------------------------------------------------------------


def _per_query(eval_dir: Path, run: str) -> dict[str, dict[str, float]] | None:
    """{query_id: {metric: value}} of `run` in a finished eval artifact, or None if it is not done."""
    if not (eval_dir / "manifest.json").is_file() or not (eval_dir / "per-query.jsonl").is_file():
        return None
    out: dict[str, dict[str, float]] = {}
    with open(eval_dir / "per-query.jsonl", "rb") as fh:
        for line in fh:
            row = orjson.loads(line)
            if row.get("run") == run:
                out[row["query_id"]] = {k: v for k, v in row.items() if k not in ("run", "query_id")}
    return out or None


def _cell_per_query(
    s: Settings, fam: str | None, key: str, seed: int | None, best: str | None, fuse: str | None = None
) -> dict[str, dict[str, float]] | None:
    """One cell's per-query values (the model alone, or fused with the first stage by `fuse`): its committed cell
    file (same settings), else its eval folder in the work dir."""
    arm = ARM_BY_KEY[key]
    if s.results is not None:
        cell = load_cell(cell_path(s.results, fam or "", key, seed), cell_identity(s, fam, arm, seed, best))
        if cell is not None:
            found = cell["per_query"] if fuse is None else cell.get(f"{fuse}_per_query")
            return {q: dict(v) for q, v in found.items()} if found else None
    edir = s.work / "eval" / "first-stage" if fam is None else s.work / "eval" / fam / key / f"s{seed}"
    return _per_query(edir, key if fuse is None else f"{key}+{fuse}")


def family_views(families: Sequence[str]) -> list[tuple[str, str, str | None]]:
    """The tables the report shows: (table key, family, fusion) - each family alone, and fused where it fuses."""
    views: list[tuple[str, str, str | None]] = []
    for fam in families:
        views.append((fam, fam, None))
        if FAMILIES[fam].get("fuse"):
            views.append((f"{fam}+{FAMILIES[fam]['fuse']}", fam, FAMILIES[fam]["fuse"]))
    return views


def aggregate(s: Settings, best: str | None) -> dict[str, Any]:
    """Collect every finished evaluation into per-family tables: mean, std and n over seeds; relative gain over
    the first stage; paired randomization tests (per-query seed means, as `hnm eval` does) against
    sentence-transformers' arm and against the first stage. Pure over the files: rerun it any time, it reports what
    exists (committed cells first, then the work dir)."""
    from hnm_cli.evaluation.compare import arm_per_query, compare

    families, arms, seeds = s.families, s.arms, s.seeds
    metrics = list(TABLE_METRICS)
    fs = _cell_per_query(s, None, "first-stage", None, best)
    result: dict[str, Any] = {"families": {}}
    for view, fam, fuse in family_views(families):
        rows: dict[str, dict[str, Any]] = {}
        pq_by_arm: dict[str, dict[str, dict[str, float]]] = {}
        for key in arms:
            arm = ARM_BY_KEY[key]
            if key == "first-stage":
                seed_pq = [fs] if fs else []
            else:
                found = (_cell_per_query(s, fam, key, seed, best, fuse) for seed in range(seeds))
                seed_pq = [pq for pq in found if pq]
            seed_means = [{m: sum(v[m] for v in pq.values()) / len(pq) for m in metrics} for pq in seed_pq]
            rows[key] = {
                "number": arm.number,
                "label": arm.label,
                "seeds_done": len(seed_pq),
                "per_seed": seed_means,
                "mean": {m: mean_std([s[m] for s in seed_means])[0] for m in metrics} if seed_means else None,
                "std": {m: mean_std([s[m] for s in seed_means])[1] for m in metrics} if seed_means else None,
            }
            if seed_pq:
                pq_by_arm[key] = arm_per_query(seed_pq, metrics)
        for key, row in rows.items():
            for ref, field_name in ((REFERENCE_ARM, "vs_st_default"), ("first-stage", "vs_first_stage")):
                if key != ref and key in pq_by_arm and ref in pq_by_arm:
                    row[field_name] = compare(
                        pq_by_arm[key], pq_by_arm[ref], metrics, method="randomization", trials=10_000, seed=0
                    )
            # The default against every other arm (the question the grid answers: does it win, tie or lose?).
            if key != DEFAULT_ARM and key in pq_by_arm and DEFAULT_ARM in pq_by_arm:
                row["default_vs_this"] = compare(
                    pq_by_arm[DEFAULT_ARM], pq_by_arm[key], metrics, method="randomization", trials=10_000, seed=0
                )
        result["families"][view] = rows
    result["test_queries"] = len(fs) if fs else None
    return result


def render_quality(s: Settings, data_used: Path, best: str | None, agg: dict[str, Any], state: dict[str, Any]) -> str:
    """The quality section of BENCHMARKS.md."""
    info = state.get("machine") or machine_info()
    ref_n = ARM_BY_KEY[REFERENCE_ARM].number
    mode = "QUICK MODE (3 arms, 1 seed, a seeded corpus sample)" if s.quick else "full grid"
    seeds_done = [r["seeds_done"] for f in agg["families"].values() for k, r in f.items()
                  if k != "first-stage" and k in PRIMARY_ARMS]  # fmt: skip
    partial = (not s.quick) and any(n < s.seeds for n in seeds_done)
    lines = [
        "## Quality: which negatives make the better reranker",
        "",
        f"**Mode: {mode}{' — PARTIAL: the grid has not finished, see the n= of each cell' if partial else ''}.** "
        f"Dataset `{s.data}`"
        + (
            f" (sampled to `{_rel(data_used)}`: {state.get('sample', {}).get('docs')} docs, "
            f"{state.get('sample', {}).get('train_queries')} train / "
            f"{state.get('sample', {}).get('test_queries')} test queries)"
            if s.quick
            else ""
        )
        + f"; mined on `train`, evaluated on `test` ({agg.get('test_queries')} queries with a relevant document).",
        "",
        f"- Machine: {machine_line(info)}.",
        f"- First stage (identical for every arm and family): dense top-{s.top_k} of `{s.first_stage_model}`"
        + (" (the untuned base bi-encoder)" if s.base_model.endswith(s.first_stage_model) else "")
        + "; a positive outside it is a miss for everyone.",
        f"- Embeddings (mining and first stage): `{s.config.name}` models at `--precision {s.embed_precision}`"
        + (f", `--backend {s.embed_backend}`" if s.embed_backend else "")
        + ".",
        f"- Best single model (highest train-split nDCG@10 among the embedded models): `{best}` "
        f"{_fmt_choice(state.get('best_model'))}.",
        f"- Training, every arm and seed: base `{s.base_model}`, max length {s.max_length} tokens, "
        + "; ".join(
            f"{fam} {family_budget(s, fam)[0]} optimizer steps at lr {family_budget(s, fam)[1]}" for fam in s.families
        )
        + f", batch {s.batch_size}, precision {s.precision} (training and "
        f"scoring), up to {s.negatives_per_positive} "
        "negatives per (query, positive) pair (each miner at its own count: see its mine options; 3 for "
        "sentence-transformers), pairs without a negative trained with in-batch negatives, training queries "
        "that are test queries left out (`--drop-eval-overlap`), seeds 0.." + str(s.seeds - 1) + ".",
        f"- hnm default (arm {ARM_BY_KEY['hnm-default'].number}): `hnm mine` with no strategy options, i.e. "
        f"{_default_recipe()}.",
        f"- Steps ran between {state.get('first_started')} and {state.get('last_finished') or 'now'} (machine "
        f"local time); summed working time of all steps {_work_minutes(state):.1f} min (up-to-date reruns excluded).",
        "- Cells: mean ± sample std over seeds (n = seeds finished). Gain: relative change of the mean over arm 1. "
        "p: two-sided paired randomization test (10,000 sign flips, per-query mean over seeds), against arm "
        f"{ref_n} (sentence-transformers defaults) and against arm 1.",
        "",
    ]
    labels = {view: FAMILIES[fam]["label"] + (f", fused with the first stage by {fuse.upper()}" if fuse else "")
              for view, fam, fuse in family_views(s.families)}  # fmt: skip
    for fam, rows in agg["families"].items():
        lines.append(f"### {labels[fam]}")
        lines.append("")
        base = rows.get("first-stage", {}).get("mean")
        header = ["#", "arm", *[m.replace("mrr", "MRR").replace("ndcg", "nDCG") for m in TABLE_METRICS]]
        header += ["gain nDCG@10 vs 1", "gain MRR@10 vs 1", f"p nDCG@10 vs {ref_n}", f"p MRR@10 vs {ref_n}",
                   "p nDCG@10 vs 1"]  # fmt: skip
        table = []
        for key, r in rows.items():
            vals = [fmt_mean_std([sd[m] for sd in r["per_seed"]]) for m in TABLE_METRICS]
            mean = r["mean"] or {}
            vs5, vs1 = r.get("vs_st_default", {}), r.get("vs_first_stage", {})
            table.append(
                [
                    r["number"],
                    f"{key}: {r['label']}",
                    *vals,
                    fmt_gain(mean.get("ndcg@10"), (base or {}).get("ndcg@10")) if key != "first-stage" else "",
                    fmt_gain(mean.get("mrr@10"), (base or {}).get("mrr@10")) if key != "first-stage" else "",
                    fmt_p(vs5.get("p_value", {}).get("ndcg@10")) if vs5 else "",
                    fmt_p(vs5.get("p_value", {}).get("mrr@10")) if vs5 else "",
                    fmt_p(vs1.get("p_value", {}).get("ndcg@10")) if vs1 else "",
                ]
            )
        lines += [markdown_table(header, table), ""]
        versus = [
            f"{key} {_fmt_delta(r['default_vs_this'], 'ndcg@10')} nDCG@10, {_fmt_delta(r['default_vs_this'], 'mrr@10')} "
            "MRR@10"
            for key, r in rows.items()
            if r.get("default_vs_this")
        ]
        if versus:
            lines += [
                f"The hnm default (arm {ARM_BY_KEY[DEFAULT_ARM].number}) minus each arm, paired randomization p in "
                "parentheses: " + "; ".join(versus) + ".",
                "",
            ]
    lines += _risk_table(s, best) or _mining_notes(s)
    options = _options_for(s)
    cmd = "make bench-quality DATA=" + str(s.data) + (" QUICK=1" if s.quick else "")
    cmd += f' BENCH_ARGS="{" ".join(options)}"' if options else ""
    argv = [".venv/bin/python", "bench/quality.py", "--data", str(s.data), *(["--quick"] if s.quick else []), *options]
    lines += [
        "Commands: `" + cmd + "` (the same, rerun, resumes), i.e. `" + " ".join(argv) + "`. Every "
        f"hnm call it made is in `{_rel(s.work)}/commands.sh`; the per-step times are in `{_rel(s.work)}/state.json`.",
        "",
    ]
    return "\n".join(lines)


def _fmt_delta(cmp: dict[str, Any], metric: str) -> str:
    delta, p = cmp.get("delta", {}).get(metric), cmp.get("p_value", {}).get(metric)
    return "-" if delta is None else f"{delta:+.4f} (p {fmt_p(p)})"


def _default_recipe() -> str:
    """The default mining recipe in words, read from the code's own defaults (so the report cannot drift)."""
    from hnm_cli.config import MineConfig, ReduceConfig

    m, r = MineConfig(), ReduceConfig()
    parts = [f"strategy {m.strategy}", f"{m.num_negatives} negative(s) per pair"]
    # Only the knobs the default's strategy reads (the fill and C2 are the rule's; the window and margins top-k's).
    knobs = {
        "relative_margin": m.relative_margin, "absolute_margin": m.absolute_margin, "max_score": m.max_score,
        "range_max": m.range_max,
    } if m.strategy == "topk" else {"fallback": m.fallback, "fill": m.fill, "c2_margin": m.c2_margin}  # fmt: skip
    parts += [f"{k} {v}" for k, v in knobs.items() if v is not None]
    return ", ".join([*parts, f"reduce balance {r.balance}"])


def _work_minutes(state: dict[str, Any]) -> float:
    return sum((v.get("work_seconds") or 0.0) for v in state.get("steps", {}).values()) / 60.0


def _fmt_choice(choice: dict[str, Any] | None) -> str:
    if not choice:
        return ""
    return "(" + ", ".join(f"{k} {v:.4f}" for k, v in choice["ndcg@10"].items()) + ")"


def _rel(p: Path) -> str:
    try:
        return str(Path(p).resolve().relative_to(REPO))
    except ValueError:
        return str(p)


def _risk_table(s: Settings, best: str | None) -> list[str]:
    """False-negative-risk figures of each mined arm's negatives (seed 0's mine), from its kept cell or work dir."""
    table = []
    for key in s.arms:
        arm = ARM_BY_KEY[key]
        if arm.mine_args is None and key != REFERENCE_ARM:
            continue
        stats = None
        for fam in s.families:
            if s.results is not None:
                cell = load_cell(cell_path(s.results, fam, key, 0), cell_identity(s, fam, arm, 0, best))
                if cell is not None and cell.get("mine_stats"):
                    stats = cell["mine_stats"]
                    break
        if stats is None:
            name = f"{key}-s0" if arm.per_seed_mine else key
            stats_file = s.work / "mine" / name / "stats.json"
            if stats_file.is_file():
                stats = orjson.loads(stats_file.read_bytes())
        risk = (stats or {}).get("fn_risk")
        if not risk:
            continue
        pairs, zero = stats.get("pairs", 0), stats.get("pairs_with_zero", 0)  # type: ignore[union-attr]
        removed = ((stats or {}).get("guards") or {}).get("removed") or {}

        def pct(x: float | None) -> str:
            return "-" if x is None else f"{100 * x:.1f}%"

        table.append([
            arm.number, key, pct(risk.get("above_positive")), pct(risk.get("above_percpos")),
            pct(risk.get("near_duplicate")), pct(risk.get("members_disagree")),
            ", ".join(f"{g} {n}" for g, n in removed.items() if n) or "-",
            f"{pairs - zero}/{pairs}",
        ])  # fmt: skip
    if not table:
        return []
    header = ["#", "arm", "above PD", "above 95% of PD", "near-dup of PD", "members disagree", "guards removed",
              "pairs with a negative"]  # fmt: skip
    return [
        "False-negative risk of each arm's training negatives (seed 0's mine; `fn_risk` in its stats.json): the "
        "shares of negatives scoring above the positive, above 95% of its score, with s(PD,D) >= 0.95, and where "
        "the ensemble's members disagree whether D is above PD.",
        "",
        markdown_table(header, table),
        "",
    ]


def _mining_notes(s: Settings) -> list[str]:
    """One line per mined arm: pairs with a negative (the share of training pairs each arm can use)."""
    out = []
    for key in s.arms:
        arm = ARM_BY_KEY[key]
        if arm.mine_args is None and key != REFERENCE_ARM:
            continue
        name = f"{key}-s0" if arm.per_seed_mine else key
        stats_file = s.work / "mine" / name / "stats.json"
        if stats_file.is_file():
            st = orjson.loads(stats_file.read_bytes())
            pairs, zero = st.get("pairs", 0), st.get("pairs_with_zero", 0)
            out.append(f"`{key}` {pairs - zero}/{pairs} ({100.0 * (pairs - zero) / max(pairs, 1):.1f}%)")
    if not out:
        return []
    return ["Training pairs with at least one negative, per arm: " + ", ".join(out) + ".", ""]


def _options_for(s: Settings) -> list[str]:
    """The options that reproduce this grid beside --data and --quick: every one not at its default."""
    argv: list[str] = []
    defaults = parse_args(["--data", str(s.data), *(["--quick"] if s.quick else [])])
    for key, flag in (
        ("embed_precision", "--embed-precision"), ("embed_backend", "--embed-backend"), ("precision", "--precision"),
        ("seeds", "--seeds"),
        ("max_steps", "--max-steps"), ("batch_size", "--batch-size"), ("max_length", "--max-length"),
        ("top_k", "--top-k"),
    ):  # fmt: skip
        if getattr(s, key) != getattr(defaults, key):
            argv += [flag, str(getattr(s, key))]
    if s.families != defaults.families:
        argv += ["--families", ",".join(s.families)]
    if s.arms != defaults.arms:
        argv += ["--arms", ",".join(s.run_order)]
    for spec in s.extra.get("explore", []):
        argv += ["--explore", shlex.quote(spec)]
    if s.extra.get("section"):
        argv += ["--section", s.extra["section"]]
    return argv


def write_report(s: Settings, data_used: Path, best: str | None) -> dict[str, Any]:
    """Aggregate what exists and rewrite the quality section of BENCHMARKS.md / BENCHMARKS.json."""
    state_path = s.work / "state.json"
    state = orjson.loads(state_path.read_bytes()) if state_path.is_file() else {}
    if "machine" not in state:
        state["machine"] = machine_info()
        if state_path.is_file():
            from hnm_cli.fileio import atomic_write_json

            atomic_write_json(state_path, state)
    agg = aggregate(s, best)
    body = render_quality(s, data_used, best, agg, state)
    data = {
        "mode": "quick" if s.quick else "full",
        "settings": s.to_json(),
        "machine": state["machine"],
        "best_model": state.get("best_model"),
        "sample": state.get("sample"),
        "results": _jsonable(agg),
        "step_seconds": {k: v.get("work_seconds") for k, v in state.get("steps", {}).items()},
    }
    # Quick mode has its own section, so a smoke run never overwrites the full grid's table (or the reverse).
    section = s.extra.get("section") or ("quality-quick" if s.quick else "quality")
    update_bench_files(s.md, s.json, section, body, data)
    return data


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, float) and math.isnan(obj):
        return None
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    return obj


# ---------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------


def _register_arm(arm: Arm) -> None:
    """Add an exploration arm to the grid's tables (this script's process only)."""
    global ARMS
    ARMS = (*ARMS, arm)
    ARM_BY_KEY[arm.key] = arm


def parse_args(argv: list[str] | None = None) -> Settings:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], epilog=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )  # noqa: E501
    ap.add_argument(
        "--data", type=Path, required=True, help="BEIR folder (corpus.jsonl, queries.jsonl, qrels/{train,test}.tsv)"
    )  # noqa: E501
    ap.add_argument("--work", type=Path, help="work dir (default runs/bench/<dataset>[-quick])")
    ap.add_argument("--quick", action="store_true", help="3 arms, 1 seed, a seeded corpus sample, few steps")
    ap.add_argument("--seeds", type=int, help="seeds per trained arm (default 3; quick 1)")
    ap.add_argument(
        "--arms",
        help="comma-separated arm keys, run in this order (default: the primary grid, "
        + ",".join(PRIMARY_ARMS)
        + "; quick: "
        + ",".join(QUICK_ARMS)
        + "); the table keeps arm-number order",
    )
    ap.add_argument("--families", default=None, help="bi,cross (default both)")
    ap.add_argument(
        "-c", "--config", type=Path, default=REPO / "configs" / "default.toml", help="hnm config (embed models)"
    )  # noqa: E501
    ap.add_argument(
        "--embed-model",
        action="append",
        default=None,
        help="repeatable: ensemble member (default: the config's; quick: all-MiniLM-L6-v2)",
    )  # noqa: E501
    ap.add_argument(
        "--embed-precision",
        choices=("fp32", "bf16"),
        default="fp32",
        help="precision of the grid's embeddings (bf16: ~2-3x faster on CPUs with bf16; SciFact nDCG@10 within 0.001)",
    )
    ap.add_argument(
        "--embed-backend",
        choices=("auto", "torch", "onnx", "openvino"),
        default=None,
        help="backend of the grid's embeddings (default: the config's); torch keeps vectors embedded before backends",
    )
    ap.add_argument(
        "--precision",
        choices=("fp32", "bf16"),
        default="fp32",
        help="train-reranker and eval precision (bf16: mixed-precision training, ~1.5x on CPUs with bf16)",
    )
    ap.add_argument("--first-stage-model", default="all-MiniLM-L6-v2", help="embedded model folder used as first stage")  # noqa: E501
    ap.add_argument("--best-model", default=None, help="skip the selection: this embedded model is the best single one")  # noqa: E501
    ap.add_argument("--base-model", default="pkg:all-MiniLM-L6-v2", help="what both families fine-tune")
    ap.add_argument("--max-steps", type=int, help="optimizer steps per training (default 100; quick 20)")
    ap.add_argument("--batch-size", type=int, help="training batch (default 16; quick 8)")
    ap.add_argument("--lr", type=float, default=2e-5)
    ap.add_argument("--max-length", type=int, help="max tokens (default 256; quick 128)")
    ap.add_argument("--negatives-per-positive", type=int, default=3)
    ap.add_argument("--top-k", type=int, help="first-stage depth (default 100; quick 30)")
    ap.add_argument("--sample-docs", type=int, default=1000)
    ap.add_argument("--sample-train", type=int, default=100)
    ap.add_argument("--sample-test", type=int, default=50)
    ap.add_argument("--combined-eval", action="store_true", help="also one `hnm eval` per family with every model")
    ap.add_argument("--md", type=Path, default=REPO / "BENCHMARKS.md")
    ap.add_argument("--json", type=Path, default=REPO / "BENCHMARKS.json")
    ap.add_argument(
        "--results",
        type=Path,
        default=None,
        help="folder of finished cells, kept and skipped across machines (default bench/results/<dataset>; "
        "quick: none)",
    )
    ap.add_argument("--no-results", action="store_true", help="keep no cells beyond the work dir")
    ap.add_argument("--report-only", action="store_true", help="only re-aggregate what exists into the report")
    ap.add_argument(
        "--explore",
        action="append",
        default=[],
        metavar="KEY=VECTORS:ARGS",
        help="repeatable: an extra arm, e.g. 'w3=ensemble:--strategy rule --fallback next --fill short "
        "--num-negatives 3' (VECTORS: ensemble, best, nopca, balanced); recipes under study, reported beside the rest",
    )
    ap.add_argument("--section", default=None, help="BENCHMARKS.md section to write (default quality / quality-quick)")
    ap.add_argument(
        "--only-seeds",
        default=None,
        metavar="LIST",
        help="comma-separated seeds this process trains, e.g. 1,2 (split one grid across processes or machines, each "
        "with its own --work and the same --results); the report still covers all --seeds",
    )
    a = ap.parse_args(argv)
    for i, spec in enumerate(a.explore):
        key, _, rest = spec.partition("=")
        vec, _, args = rest.partition(":")
        if not key or vec not in ("ensemble", "best", "nopca", "balanced"):
            ap.error(f"--explore {spec!r}: expected KEY=VECTORS:ARGS with VECTORS in ensemble,best,nopca,balanced")
        mine_args = tuple(shlex.split(args))
        arm = Arm(key, 100 + i, f"explore: {vec}, {args}", mine_args, vec, per_seed_mine="random" in mine_args)
        if ARM_BY_KEY.get(key, arm) != arm:
            ap.error(f"--explore {spec!r}: arm key {key!r} is taken")
        if key not in ARM_BY_KEY:
            _register_arm(arm)
    quick = a.quick
    name = a.data.resolve().name + ("-quick" if quick else "")
    arms = tuple(x.strip() for x in a.arms.split(",")) if a.arms else (QUICK_ARMS if quick else PRIMARY_ARMS)
    run_order = arms if a.arms else RUN_ORDER
    unknown = [x for x in arms if x not in ARM_BY_KEY]
    if unknown:
        ap.error(f"unknown arm(s) {unknown}; known: {', '.join(ARM_BY_KEY)}")
    if "first-stage" not in arms:
        arms = ("first-stage", *arms)
    arms = tuple(k for k in ARM_BY_KEY if k in arms)  # table order
    families = tuple(x.strip() for x in a.families.split(",")) if a.families else ("bi", "cross")
    if any(f not in FAMILIES for f in families):
        ap.error(f"--families takes a subset of {','.join(FAMILIES)}")
    s = Settings(
        data=a.data.resolve(),
        work=(a.work or REPO / "runs" / "bench" / name).resolve(),
        quick=quick,
        seeds=a.seeds or (1 if quick else 3),
        arms=arms,
        run_order=tuple(k for k in run_order if k != "first-stage"),
        embed_precision=a.embed_precision,
        embed_backend=a.embed_backend,
        precision=a.precision,
        families=families,
        config=a.config.resolve(),
        embed_models=tuple(a.embed_model or (["all-MiniLM-L6-v2"] if quick else [])),
        first_stage_model=a.first_stage_model,
        best_model=a.best_model,
        base_model=a.base_model,
        max_steps=a.max_steps or (20 if quick else 100),
        batch_size=a.batch_size or (8 if quick else 16),
        lr=a.lr,
        max_length=a.max_length or (128 if quick else 256),
        negatives_per_positive=a.negatives_per_positive,
        top_k=a.top_k or (30 if quick else 100),
        sample_docs=a.sample_docs,
        sample_train=a.sample_train,
        sample_test=a.sample_test,
        combined_eval=a.combined_eval,
        md=a.md.resolve(),
        json=a.json.resolve(),
        results=None
        if a.no_results or (quick and a.results is None)
        else (a.results or RESULTS_ROOT / a.data.resolve().name).resolve(),
    )
    s.extra["report_only"] = a.report_only
    s.extra["section"] = a.section
    s.extra["explore"] = list(a.explore)
    if a.only_seeds:
        try:
            only = tuple(int(x) for x in a.only_seeds.split(","))
        except ValueError:
            ap.error(f"--only-seeds {a.only_seeds!r}: expected comma-separated integers")
        if any(not 0 <= x < s.seeds for x in only):
            ap.error(f"--only-seeds {a.only_seeds!r}: each seed must be in 0..{s.seeds - 1} (--seeds {s.seeds})")
        s.extra["only_seeds"] = only
    return s


def main(argv: list[str] | None = None) -> int:
    s = parse_args(argv)
    if s.extra.get("report_only"):
        state = orjson.loads((s.work / "state.json").read_bytes()) if (s.work / "state.json").is_file() else {}
        best = s.best_model or (state.get("best_model") or {}).get("best")
        write_report(s, Path(state.get("data_used", s.data)), best)
        return 0
    return run_grid(s)


if __name__ == "__main__":
    sys.exit(main())
