"""`hnm report`: one self-contained HTML page that shows a run.

Finds the artifacts under a folder by their manifests (any of embed, reduce, mine, train-reranker, eval; several
of a kind side by side), reads them through their `artifacts/` modules and the data they were made from through
`inputs.py`, builds the page data (`reporting.sections`, pure) and writes the page (`reporting.render`) atomically.
Reads only: no artifact is changed, and the page is a report, not an artifact (no manifest of its own).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from hnm_cli import __version__
from hnm_cli.artifacts import evaluation as eval_files
from hnm_cli.artifacts import mined
from hnm_cli.artifacts.fusion import read_variance_ratios
from hnm_cli.artifacts.manifest import MANIFEST_NAME, Manifest, changed_output, load_manifest
from hnm_cli.artifacts.output_dir import STAGING_PREFIX
from hnm_cli.choices import Stage
from hnm_cli.errors import HnmError, InputError
from hnm_cli.fileio import atomic_write_bytes, file_sha256
from hnm_cli.inputs import read_corpus, read_queries, resolve_data
from hnm_cli.qrels import read_qrels
from hnm_cli.reporting import sections
from hnm_cli.reporting.evaluation_section import evaluation_section, shown_query_ids
from hnm_cli.reporting.render import render_html
from hnm_cli.reporting.risk import DistanceSummary, PairSample, PairSampler, assess

log = logging.getLogger("hnm")

REPORT_FILE = "report.html"
SHOWN_STAGES = sections.STAGE_ORDER
CHILD_STAGES = (Stage.EMBED_MODEL, Stage.EVAL_FIRST_STAGE)  # linked to their parent's card, not shown on their own
DEFAULT_MAX_PAIRS = 1000
SCATTER_PAIRS = 300  # points of the PCA scatter: enough to see the clusters, few enough to keep the SVG small


def discover(run_dir: Path) -> list[Manifest]:
    """Every finished hnm artifact under `run_dir` (itself included), by its manifest, in path order.

    A manifest that cannot be read (a run killed while writing it) is skipped with a warning: the page shows the
    rest. Staging folders of a run in progress are skipped.
    """
    found = []
    for path in sorted(Path(run_dir).rglob(MANIFEST_NAME)):
        rel = path.parent.relative_to(run_dir)
        if any(part.startswith(STAGING_PREFIX) for part in rel.parts):
            continue
        try:
            manifest = load_manifest(path.parent)
        except HnmError as err:
            log.warning("report: skipping %s: %s", path.parent, err.message)
            continue
        if manifest is not None and manifest.stage in SHOWN_STAGES + CHILD_STAGES:
            found.append(manifest)
    return found


class _Digests:
    """Current content digests of raw input files, each file hashed once per report."""

    def __init__(self) -> None:
        self.cache: dict[Path, str | None] = {}

    def of(self, path: Path) -> str | None:
        key = path.resolve()
        if key not in self.cache:
            self.cache[key] = file_sha256(path) if path.is_file() else None
        return self.cache[key]


def _input_state(inp: dict[str, Any], known: dict[str, Manifest], digests: _Digests) -> str:
    """`ok`, `changed`, `missing` (not reachable from here) or `recorded` (a digest the report cannot recompute)."""
    recorded = str(inp.get("sha256", ""))
    if "stage" in inp:
        if recorded in known:
            return "ok"
        try:
            upstream = load_manifest(Path(str(inp.get("path"))))
        except HnmError:
            return "changed"
        return "missing" if upstream is None else ("ok" if upstream.digest == recorded else "changed")
    if ":" in recorded or not recorded:  # folder identities, stat-based digests: not a file's sha256
        return "recorded"
    current = digests.of(Path(str(inp.get("path"))))
    return "missing" if current is None else ("ok" if current == recorded else "changed")


def _view(run_dir: Path, manifest: Manifest, known: dict[str, Manifest], digests: _Digests) -> sections.ArtifactView:
    rel = manifest.path.relative_to(run_dir).as_posix() if manifest.path != run_dir else "."
    return sections.ArtifactView(
        rel=rel,
        manifest=manifest.to_json(),
        digest=manifest.digest,
        outputs_problem=changed_output(manifest),
        input_states=[_input_state(i, known, digests) for i in manifest.inputs],
    )


def _recorded_path(manifest: Manifest, role: str) -> Path | None:
    """The data file(s) a manifest recorded for `role` (one file, or the folder of several shards)."""
    paths = [Path(str(i["path"])) for i in manifest.inputs if i.get("role") == role and "stage" not in i]
    return paths[0] if len(paths) == 1 else (paths[0].parent if paths else None)


class _Texts:
    """Corpus and query texts by the files a manifest recorded (or `--data`), each data set read once."""

    def __init__(self, data: Path | None) -> None:
        self.paths = resolve_data(data) if data is not None else None
        self.cache: dict[tuple[str, Path], dict[str, str]] = {}

    def _read(self, kind: str, path: Path | None) -> dict[str, str] | None:
        if path is None or not path.exists():
            return None
        key = (kind, path.resolve())
        if key not in self.cache:
            if kind == "corpus":
                self.cache[key] = {d: doc.full_text for d, doc in read_corpus(path).items.items()}
            else:
                self.cache[key] = {q: query.text for q, query in read_queries(path).items.items()}
        return self.cache[key]

    def texts(self, manifest: Manifest) -> tuple[dict[str, str], dict[str, str], str | None]:
        """(query texts, doc texts, why they are missing or None)."""
        qpath: Path | None
        cpath: Path | None
        if self.paths is not None:
            qpath, cpath = self.paths.queries, self.paths.corpus
        else:
            qpath, cpath = _recorded_path(manifest, "queries"), _recorded_path(manifest, "corpus")
        try:
            queries, docs = self._read("queries", qpath), self._read("corpus", cpath)
        except HnmError as err:
            return {}, {}, f"texts not shown: {err.message}"
        if queries is None or docs is None:
            where = ", ".join(str(p) for p in (qpath, cpath) if p is not None and not p.exists()) or "not recorded"
            return (
                queries or {},
                docs or {},
                f"texts not shown: the data it was made from is not reachable ({where}); give --data",
            )
        return queries, docs, None


def _scatter(manifest: Manifest, sample: PairSample, known: dict[str, Manifest]) -> dict[str, list[list[float]]] | None:
    """First two PCA components of the vectors of the first `SCATTER_PAIRS` sampled pairs (queries, positives,
    negatives in one projection), or None when the vector set is not reachable."""
    import numpy as np

    from hnm_cli.artifacts.vectors import read_ids, read_rows_of
    from hnm_cli.plots import pca_2d

    recorded = [i for i in manifest.inputs if i.get("role") == "vectors" and "stage" in i]
    if not recorded:
        return None
    vec = known.get(str(recorded[0].get("sha256")))
    folder = vec.path if vec is not None else Path(str(recorded[0].get("path")))
    rows = [*sample.risky, *sample.random][:SCATTER_PAIRS]
    try:
        doc_ids, query_ids = set(read_ids(folder / "corpus")), set(read_ids(folder / "queries"))
        q = [r["query_id"] for r in rows if r["query_id"] in query_ids]
        p = [r["positive_id"] for r in rows if r["positive_id"] in doc_ids]
        n = [neg["doc_id"] for r in rows for neg in r["negatives"] if neg["doc_id"] in doc_ids]
        if not q or not p:
            return None
        parts = [read_rows_of(folder / "queries", q), read_rows_of(folder / "corpus", p)]
        parts += [read_rows_of(folder / "corpus", n)] if n else []
    except (HnmError, OSError, KeyError) as err:
        log.warning("report: %s: no PCA scatter (%s)", manifest.path, getattr(err, "message", err))
        return None
    proj = pca_2d(np.concatenate([np.asarray(x, dtype=np.float64) for x in parts], axis=0))
    out: dict[str, list[list[float]]] = {}
    start = 0
    for name, ids in (("queries", q), ("positives", p), ("negatives", n)):
        out[name] = [[round(float(x), 4), round(float(y), 4)] for x, y in proj[start : start + len(ids)]]
        start += len(ids)
    return out


def _mining(
    manifest: Manifest,
    view: sections.ArtifactView,
    texts: _Texts,
    known: dict[str, Manifest],
    max_pairs: int,
    seed: int,
) -> dict[str, Any]:
    sampler, summary = PairSampler(max_pairs, seed), DistanceSummary()
    for _where, row in mined.iter_rows(manifest.path, manifest):
        assessed = assess(row)
        sampler.add(row, assessed)
        summary.add(row, assessed)
    sample = sampler.result()
    queries, docs, note = texts.texts(manifest)
    return sections.mining_section(
        view,
        mined.read_stats(manifest.path),
        summary,
        sample,
        queries=queries,
        docs=docs,
        scatter=_scatter(manifest, sample, known),
        texts_note=note,
        seed=seed,
    )


def _evaluation(manifest: Manifest, view: sections.ArtifactView, texts: _Texts) -> dict[str, Any]:
    report = eval_files.read_report(manifest.path)
    per_query = list(eval_files.iter_per_query(manifest.path))
    shown = shown_query_ids(per_query, report)
    rankings = eval_files.read_rankings(manifest.path, shown)
    queries, docs, _note = texts.texts(manifest)
    qrels: dict[str, dict[str, int]] = {}
    qrels_path = _recorded_path(manifest, "qrels")
    if qrels_path is not None and qrels_path.is_file():
        qrels = {q: dict(d) for q, d in read_qrels(qrels_path).items() if q in shown}
    return evaluation_section(view, report, per_query, rankings=rankings, qrels=qrels, queries=queries, docs=docs)


def _vectors(pairs: Iterable[tuple[Manifest, sections.ArtifactView]]) -> dict[str, Any]:
    out: dict[str, list[dict[str, Any]]] = {"embed": [], "reduce": []}
    for manifest, view in pairs:
        if manifest.stage == "embed":
            out["embed"].append(sections.embed_view(view))
        elif manifest.stage == "reduce":
            ratios = None
            try:
                ratios = read_variance_ratios(manifest.path)
            except (OSError, ValueError) as err:
                log.warning("report: %s: no variance curve (%s)", manifest.path, err)
            out["reduce"].append(sections.reduce_view(view, ratios))
    return out


def default_out(run_dir: Path) -> Path:
    """`<run_dir>/report.html`; beside the folder (`report-<name>.html`) when it is itself an artifact, whose
    folder holds only what its stage wrote."""
    run_dir = Path(run_dir)
    if (run_dir / MANIFEST_NAME).is_file():
        return run_dir.parent / f"report-{run_dir.resolve().name}.html"
    return run_dir / REPORT_FILE


def run(
    run_dir: Path,
    out: Path | None = None,
    *,
    data: Path | None = None,
    max_pairs: int = DEFAULT_MAX_PAIRS,
    seed: int = 0,
) -> Path:
    """Write the HTML report of the artifacts under `run_dir`; return its path.

    Args:
        run_dir: a run folder (e.g. `runs/cloud-docs`) or a single artifact folder.
        out: the HTML file to write; default `default_out(run_dir)`.
        data: the BEIR folder the run was made from, when the paths its manifests recorded are not reachable
            from here (another machine, another working directory); default: as recorded.
        max_pairs: pairs of each mine artifact embedded in the page (most risky first, then seeded random).
        seed: seed of the random part of that sample.

    Returns:
        The path of the written page.

    Raises:
        InputError: `run_dir` is not a folder, or holds no finished hnm artifact.
        CorruptArtifactError / DataError: an artifact file changed since its manifest, or is not its schema.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise InputError(f"{run_dir} is not a directory (expected a run folder holding hnm artifacts)")
    started = time.time()
    found = discover(run_dir)
    shown = [m for m in found if m.stage in SHOWN_STAGES]
    if not shown:
        raise InputError(
            f"{run_dir}: no finished hnm artifact under it (no manifest.json of embed, reduce, mine, "
            "train-reranker or eval)",
            hint="give the folder a pipeline wrote into, e.g. runs/cloud-docs after make demo",
        )
    known = {m.digest: m for m in found}
    digests = _Digests()
    views = {id(m): _view(run_dir, m, known, digests) for m in found}
    # A per-model vector set links to the embed artifact that holds it.
    parents = {m.path: views[id(m)] for m in shown}
    aliases = {m.digest: parents[m.path.parent] for m in found if m.stage in CHILD_STAGES and m.path.parent in parents}
    texts = _Texts(data)
    by_stage = {s: [(m, views[id(m)]) for m in shown if m.stage == s] for s in SHOWN_STAGES}
    page = sections.page(
        title=f"hnm report: {run_dir.resolve().name}",
        generated_at=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        version=__version__,
        pipeline=sections.pipeline_section([views[id(m)] for m in shown], aliases),
        vectors=_vectors([*by_stage["embed"], *by_stage["reduce"]]),
        mining=[_mining(m, v, texts, known, max_pairs, seed) for m, v in by_stage["mine"]],
        training=[sections.training_section(v) for _, v in by_stage["train-reranker"]],
        evaluation=[_evaluation(m, v, texts) for m, v in by_stage["eval"]],
        max_pairs=max_pairs,
        seed=seed,
    )
    html = render_html(page).encode("utf-8")
    target = Path(out) if out is not None else default_out(run_dir)
    if target.is_dir():
        raise InputError(f"--out {target} is a directory; give the HTML file to write (e.g. {target / REPORT_FILE})")
    target.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(target, html)
    pairs = sum(len(m["browser"]["pairs"]) for m in page["mining"])
    log.info(
        "report: %d artifacts (%s), %d pairs embedded, %.0f KB in %.1f s",
        len(shown),
        ", ".join(page["sections"]),
        pairs,
        len(html) / 1024,
        time.time() - started,
    )
    return target
