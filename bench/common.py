"""Shared helpers of the benchmark scripts: machine facts, logged `hnm` calls, measured subprocesses, corpus
sampling, the sentence-transformers -> mine-row conversion, table formatting and the BENCHMARKS.md sections.

Everything that decides a number is a pure function here (sampling, conversion, formatting) so
tests/test_bench.py can check it without models; the scripts only glue these to subprocesses.
"""

from __future__ import annotations

import datetime as _dt
import math
import os
import platform
import random
import re
import shlex
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson

REPO = Path(__file__).resolve().parents[1]
ST_SOURCE = "st-mine-hard-negatives"  # `source` of negatives converted from sentence-transformers' miner

# Environment every subprocess gets: never a hub, and no tokenizer thread pools fighting the 2 cores.
OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def hnm_bin() -> str:
    """The `hnm` executable of the interpreter running this script (the repo's .venv in `make`)."""
    cand = Path(sys.executable).with_name("hnm")
    return str(cand) if cand.exists() else "hnm"


def sub_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """os.environ plus the offline settings (and `extra`)."""
    env = dict(os.environ)
    env.update(OFFLINE_ENV)
    env.update(extra or {})
    return env


# ---------------------------------------------------------------------------------------------
# Machine and provenance
# ---------------------------------------------------------------------------------------------


def _meminfo_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024**2, 1)
    except OSError:
        pass
    return None


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _version(module: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(module)
    except PackageNotFoundError:
        return None


def git_commit() -> str | None:
    """Short commit of the repo (None outside git)."""
    try:
        out = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        )
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def machine_info() -> dict[str, Any]:
    """Cores, RAM, CPU, library versions, commit and date: what every table states beside its numbers."""
    from hnm_cli.encoding.devices import cpu_has_bf16

    return {
        "date": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": _cpu_model(),
        # Two CPUs that both call themselves "AMD EPYC" can differ here, and bf16 training is ~10x slower without it.
        "bf16_native": cpu_has_bf16(),
        "cores": os.cpu_count(),
        "ram_gib": _meminfo_gib(),
        "python": platform.python_version(),
        "torch": _version("torch"),
        "sentence_transformers": _version("sentence-transformers"),
        "hnm_cli": _version("hnm_cli"),
        "commit": git_commit(),
        "load_average_at_start": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
    }


def _bf16_words(native: bool | None) -> str:
    """How the machine line names bf16 support (nothing for records made before it was recorded)."""
    return "" if native is None else (", native bf16" if native else ", no native bf16")


def machine_line(info: Mapping[str, Any]) -> str:
    """One Markdown line describing the machine."""
    return (
        f"{info['cores']} cores ({info['cpu']}{_bf16_words(info.get('bf16_native'))}), {info['ram_gib']} GiB RAM, "
        f"Python {info['python']}, "
        f"torch {info['torch']}, sentence-transformers {info['sentence_transformers']}, hnm_cli {info['hnm_cli']} "
        f"(commit {info['commit']}); load average at start {info['load_average_at_start']}; {info['date']}"
    )


# ---------------------------------------------------------------------------------------------
# Logged subprocesses
# ---------------------------------------------------------------------------------------------


class CommandError(RuntimeError):
    """A benchmark subprocess exited non-zero."""


class Log:
    """Append-only log file plus echo to stderr: the record of what an unattended run did."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def __call__(self, msg: str) -> None:
        line = f"[{time.strftime('%H:%M:%S')}] {msg}"
        print(line, file=sys.stderr, flush=True)
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(line + "\n")


def shell_join(args: Sequence[str]) -> str:
    """The command as one could paste it into a shell, with the repo root made relative."""
    root = str(REPO) + "/"
    return shlex.join(a.replace(root, "") if isinstance(a, str) else str(a) for a in args)


def run_logged(args: Sequence[str], log: Log, *, timeout: float | None = None, env: Mapping[str, str] | None = None):
    """Run a command, its stderr appended to the log file; return (stdout, seconds). Raise CommandError on failure."""
    args = [str(a) for a in args]
    log(f"$ {shell_join(args)}")
    t0 = time.perf_counter()
    with open(log.path, "a", encoding="utf-8") as err:
        proc = subprocess.run(
            args, stdout=subprocess.PIPE, stderr=err, text=True, timeout=timeout, env=sub_env(env), cwd=REPO
        )
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise CommandError(f"exit {proc.returncode} after {seconds:.0f} s: {shell_join(args)} (see {log.path})")
    return proc.stdout, seconds


def _tree_rss(proc: Any) -> int:
    """RSS in bytes of a psutil process and its children (0 once gone)."""
    import psutil

    total = 0
    try:
        for p in [proc, *proc.children(recursive=True)]:
            try:
                total += p.memory_info().rss
            except psutil.Error:
                pass
    except psutil.Error:
        return 0
    return total


_TIME_RSS = re.compile(r"Maximum resident set size \(kbytes\): (\d+)")


def measure(
    args: Sequence[str],
    *,
    timeout: float,
    mem_limit_gib: float | None = None,
    log: Log | None = None,
    env: Mapping[str, str] | None = None,
    poll: float = 0.2,
) -> dict[str, Any]:
    """Run one command in its own process; return wall seconds, peak RSS and how it ended.

    Peak RSS comes from `/usr/bin/time -v` (the kernel's maxrss of the measured process) when available, and
    from psutil polling of the process tree otherwise; the polling also enforces `mem_limit_gib` (the run is
    killed, status "memory") and `timeout` (status "timeout"), so one runaway cannot take the machine down.

    Returns:
        {"status": "ok" | "failed" | "timeout" | "memory", "seconds", "peak_rss_mib", "returncode", "stdout",
        "stderr_tail", "command"}.
    """
    import psutil

    args = [str(a) for a in args]
    timed = Path("/usr/bin/time").exists()
    full = ["/usr/bin/time", "-v", *args] if timed else args
    if log:
        log(f"$ {shell_join(args)}")
    t0 = time.perf_counter()
    proc = subprocess.Popen(full, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=sub_env(env), cwd=REPO)
    out_chunks: list[str] = []
    err_chunks: list[str] = []
    readers = [
        threading.Thread(target=lambda: out_chunks.append(proc.stdout.read()), daemon=True),  # type: ignore[union-attr]
        threading.Thread(target=lambda: err_chunks.append(proc.stderr.read()), daemon=True),  # type: ignore[union-attr]
    ]
    for t in readers:
        t.start()
    ps = psutil.Process(proc.pid)
    peak = 0
    status = "ok"
    while proc.poll() is None:
        peak = max(peak, _tree_rss(ps))
        elapsed = time.perf_counter() - t0
        if elapsed > timeout:
            status = "timeout"
        elif mem_limit_gib is not None and peak > mem_limit_gib * 1024**3:
            status = "memory"
        if status != "ok":
            for p in [*ps.children(recursive=True), ps]:
                try:
                    p.kill()
                except psutil.Error:
                    pass
            break
        time.sleep(poll)
    proc.wait()
    seconds = time.perf_counter() - t0
    for t in readers:
        t.join(timeout=5)
    stdout, stderr = "".join(out_chunks), "".join(err_chunks)
    if timed:
        if m := _TIME_RSS.findall(stderr):
            peak = max(peak, int(m[-1]) * 1024)
        # Keep the command's own stderr: /usr/bin/time's report starts at its "Command being timed" line.
        stderr = re.split(r"(?:Command exited with non-zero status \d+\n)?\tCommand being timed:", stderr)[0]
    if status == "ok" and proc.returncode != 0:
        status = "failed"
    result = {
        "status": status,
        "seconds": round(seconds, 2),
        "peak_rss_mib": round(peak / 1024**2, 1),
        "returncode": proc.returncode,
        "stdout": stdout,
        "stderr_tail": stderr[-2000:],
        "command": shell_join(args),
    }
    if log:
        log(f"  -> {status} in {seconds:.1f} s, peak RSS {result['peak_rss_mib']:.0f} MiB")
    return result


# ---------------------------------------------------------------------------------------------
# Seeded corpus sample (quick mode)
# ---------------------------------------------------------------------------------------------


def sample_ids(
    doc_ids: Sequence[str],
    train_pos: Mapping[str, Sequence[str]],
    test_pos: Mapping[str, Sequence[str]],
    *,
    n_docs: int,
    n_train: int,
    n_test: int,
    seed: int,
) -> tuple[list[str], list[str], list[str]]:
    """Pick a seeded sample: `n_train` train and `n_test` test queries, all their positives, and random other
    documents up to `n_docs` (more only if the positives alone exceed it).

    Queries are drawn from those with at least one positive that exists in `doc_ids`; a query in both splits is
    only drawn for test (no leakage). Returns (doc ids in corpus order, train query ids, test query ids), each
    sorted by their original order, so the same inputs and seed always give the same folder.
    """
    rng = random.Random(seed)
    known = set(doc_ids)
    test_cands = sorted(q for q, ds in test_pos.items() if any(d in known for d in ds))
    train_cands = sorted(q for q, ds in train_pos.items() if any(d in known for d in ds) and q not in test_pos)
    test_q = sorted(rng.sample(test_cands, min(n_test, len(test_cands))))
    train_q = sorted(rng.sample(train_cands, min(n_train, len(train_cands))))
    keep = {d for q in test_q for d in test_pos[q] if d in known}
    keep |= {d for q in train_q for d in train_pos[q] if d in known}
    others = [d for d in doc_ids if d not in keep]
    extra = max(0, n_docs - len(keep))
    keep |= set(rng.sample(others, min(extra, len(others))))
    return [d for d in doc_ids if d in keep], train_q, test_q


def _jsonl(path: Path) -> list[dict[str, Any]]:
    with open(path, "rb") as fh:
        return [orjson.loads(line) for line in fh if line.strip()]


def _read_qrels_rows(path: Path) -> list[tuple[str, str, str]]:
    rows = []
    with open(path, encoding="utf-8") as fh:
        for i, line in enumerate(fh):
            cols = line.rstrip("\r\n").split("\t")
            if i == 0 and cols[0].strip().lower() in ("query-id", "query_id", "qid"):
                continue
            if len(cols) == 4:
                cols = [cols[0], cols[2], cols[3]]
            if len(cols) == 3:
                rows.append((cols[0], cols[1], cols[2]))
    return rows


def sample_beir(
    src: Path,
    dst: Path,
    *,
    n_docs: int = 1000,
    n_train: int = 100,
    n_test: int = 50,
    seed: int = 0,
    train_split: str = "train",
    test_split: str = "test",
) -> dict[str, Any]:
    """Write a seeded sample of BEIR folder `src` to `dst` (same layout); return its summary.

    Skips the work when `dst/sample.json` records the same source digests and settings (a resumed run).
    """
    from hnm_cli.fileio import atomic_write_bytes, atomic_write_json, file_sha256

    src, dst = Path(src), Path(dst)
    corpus_file, queries_file = src / "corpus.jsonl", src / "queries.jsonl"
    qfiles = {s: src / "qrels" / f"{s}.tsv" for s in (train_split, test_split)}
    settings = {
        "source": str(src),
        "digests": {p.name: file_sha256(p) for p in [corpus_file, queries_file, *qfiles.values()]},
        "n_docs": n_docs,
        "n_train": n_train,
        "n_test": n_test,
        "seed": seed,
    }
    marker = dst / "sample.json"
    if marker.is_file():
        old = orjson.loads(marker.read_bytes())
        if old.get("settings") == settings:
            return old
    corpus = _jsonl(corpus_file)
    queries = _jsonl(queries_file)
    qrels = {s: _read_qrels_rows(p) for s, p in qfiles.items()}

    def pos(rows: list[tuple[str, str, str]]) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for q, d, r in rows:
            if float(r) > 0:
                out.setdefault(q, []).append(d)
        return out

    doc_ids = [str(r.get("_id", r.get("doc_id"))) for r in corpus]
    docs, train_q, test_q = sample_ids(
        doc_ids,
        pos(qrels[train_split]),
        pos(qrels[test_split]),
        n_docs=n_docs,
        n_train=n_train,
        n_test=n_test,
        seed=seed,
    )
    keep_d, keep_q = set(docs), set(train_q) | set(test_q)
    dump = lambda rows: b"".join(orjson.dumps(r) + b"\n" for r in rows)  # noqa: E731
    atomic_write_bytes(dst / "corpus.jsonl", dump(r for r in corpus if str(r.get("_id", r.get("doc_id"))) in keep_d))
    atomic_write_bytes(
        dst / "queries.jsonl", dump(r for r in queries if str(r.get("_id", r.get("query_id"))) in keep_q)
    )
    for split, wanted in ((train_split, set(train_q)), (test_split, set(test_q))):
        lines = ["query-id\tcorpus-id\tscore"] + [
            f"{q}\t{d}\t{r}" for q, d, r in qrels[split] if q in wanted and d in keep_d
        ]
        atomic_write_bytes(dst / "qrels" / f"{split}.tsv", ("\n".join(lines) + "\n").encode())
    summary = {
        "settings": settings,
        "docs": len(docs),
        "train_queries": len(train_q),
        "test_queries": len(test_q),
    }
    atomic_write_json(marker, summary)
    return summary


# ---------------------------------------------------------------------------------------------
# sentence-transformers mine_hard_negatives output -> hnm mine rows
# ---------------------------------------------------------------------------------------------


def st_triplets_to_rows(
    anchors: Sequence[str],
    positives: Sequence[str],
    negatives: Sequence[str],
    pairs: Sequence[tuple[str, str]],
    query_text: Mapping[str, str],
    doc_text: Mapping[str, str],
    *,
    scores: Sequence[Sequence[float]] | None = None,
) -> list[dict[str, Any]]:
    """Convert `util.mine_hard_negatives(..., output_format="triplet")` output into hnm's mine rows.

    sentence-transformers works on texts only (it de-duplicates queries and corpus by text), so negatives are
    mapped back to ids by text: a negative text becomes the first corpus id with that text that is not a
    positive of the pair's query (the same id the miner saw, since it kept the first copy). Every input pair gets
    a row, in input order, with the negatives of its (query text, positive text) in the miner's order (best
    first); pairs it found nothing for get `negatives: []`, as `hnm mine` writes them.

    Args:
        anchors, positives, negatives: the three text columns of the triplet dataset (one row per negative).
        pairs: the (query id, positive id) pairs the dataset was built from, in order.
        query_text: query id -> the text given to the miner.
        doc_text: doc id -> the text given to the miner (`Doc.full_text`).
        scores: optional `[pos_score, neg_score]` per triplet (`output_scores=True`), stored as cosine distances.

    Returns:
        Rows `{"query_id", "positive_id", "negatives": [{"doc_id", "source", "rank", "d_qd", "d_qp", "d_pd"}],
        "meta": {}}`. `rank` is the negative's 1-based position among the miner's negatives for the pair.

    Raises:
        ValueError: a text of the output that maps to no id (the output does not belong to these inputs).
    """
    if not (len(anchors) == len(positives) == len(negatives)):
        raise ValueError("anchor, positive and negative columns differ in length")
    ids_by_text: dict[str, list[str]] = {}
    for did, text in doc_text.items():
        ids_by_text.setdefault(text, []).append(did)
    positives_of: dict[str, set[str]] = {}
    for q, d in pairs:
        positives_of.setdefault(q, set()).add(d)
    found: dict[tuple[str, str], list[tuple[str, float | None, float | None]]] = {}
    for i, (a, p, n) in enumerate(zip(anchors, positives, negatives, strict=True)):
        s = scores[i] if scores is not None else None
        found.setdefault((a, p), []).append((n, None if s is None else float(s[1]), None if s is None else float(s[0])))
    rows = []
    for q, d in pairs:
        negs = []
        for rank, (text, s_neg, s_pos) in enumerate(found.get((query_text[q], doc_text[d]), []), 1):
            cands = [i for i in ids_by_text.get(text, []) if i not in positives_of[q]]
            if not cands:
                raise ValueError(f"negative text of pair ({q}, {d}) matches no non-positive corpus id")
            negs.append(
                {
                    "doc_id": cands[0],
                    "source": ST_SOURCE,
                    "rank": rank,
                    "d_qd": None if s_neg is None else 1.0 - s_neg,
                    "d_qp": None if s_pos is None else 1.0 - s_pos,
                    "d_pd": None,
                }
            )
        rows.append({"query_id": q, "positive_id": d, "negatives": negs, "meta": {}})
    return rows


# ---------------------------------------------------------------------------------------------
# Formatting
# ---------------------------------------------------------------------------------------------


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0.0 for a single value)."""
    n = len(values)
    if n == 0:
        return math.nan, math.nan
    m = sum(values) / n
    sd = math.sqrt(sum((v - m) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return m, sd


def fmt_mean_std(values: Sequence[float], digits: int = 3) -> str:
    """`0.652 ± 0.011 (n=5)`; a single value prints without the spread; none prints `-`."""
    if not values:
        return "-"
    m, sd = mean_std(values)
    if len(values) == 1:
        return f"{m:.{digits}f} (n=1)"
    return f"{m:.{digits}f} ± {sd:.{digits}f} (n={len(values)})"


def fmt_gain(value: float | None, base: float | None) -> str:
    """Relative change in percent, signed (`+4.2%`), or `-` when undefined."""
    if value is None or base is None or base == 0 or math.isnan(value) or math.isnan(base):
        return "-"
    return f"{100.0 * (value - base) / base:+.1f}%"


def fmt_p(p: float | None) -> str:
    """p-value with 3 decimals, `<0.001` below that, `-` when absent."""
    if p is None or (isinstance(p, float) and math.isnan(p)):
        return "-"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A GitHub Markdown table; cells are str()-ed and `|` escaped."""
    esc = lambda c: str(c).replace("|", "\\|")  # noqa: E731
    lines = ["| " + " | ".join(esc(h) for h in header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(esc(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def replace_section(text: str, name: str, body: str) -> str:
    """Replace the text between `<!-- name:begin -->` and `<!-- name:end -->` (appending the block if absent)."""
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    block = f"{begin}\n{body.strip()}\n{end}"
    if begin in text and end in text:
        pre, rest = text.split(begin, 1)
        _, post = rest.split(end, 1)
        return pre + block + post
    return text.rstrip() + "\n\n" + block + "\n"


BENCH_MD_HEADER = """# hnm benchmarks

Sections, each written by a script under `bench/` (see `bench/README.md`) and replaced in place when it reruns:
**quality** (`make bench-quality`: which negatives make the better reranker), **speed and scale**
(`make bench-speed`: hnm vs plain sentence-transformers), **backends** (`bench/backends.py`: inference backends,
texts/s and vector agreement), **nightly updates** (`make bench-incremental`) and **Ray overhead**
(`make bench-ray`). Every number below was measured by the command printed beside it, on the machine stated.
"""


def update_bench_files(md_path: Path, json_path: Path, section: str, body: str, data: Any) -> None:
    """Write `section` of BENCHMARKS.md and the same key of BENCHMARKS.json, leaving the other section alone."""
    from hnm_cli.fileio import atomic_write_bytes, atomic_write_json

    md_path, json_path = Path(md_path), Path(json_path)
    text = md_path.read_text(encoding="utf-8") if md_path.is_file() else BENCH_MD_HEADER
    atomic_write_bytes(md_path, replace_section(text, section, body).encode("utf-8"))
    blob = orjson.loads(json_path.read_bytes()) if json_path.is_file() else {}
    blob[section] = data
    atomic_write_json(json_path, blob)
