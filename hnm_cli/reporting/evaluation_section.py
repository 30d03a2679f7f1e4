"""The evaluation section of `hnm report`: an eval artifact's metrics table, first-stage ceiling, per-query wins
and losses against the baseline with each side's top documents, and metrics by document length.

Pure, like `sections.py` (whose `ArtifactView` and `snippet` it shares): report.json, per-query rows, rankings,
qrels and texts in; a JSON-ready dict out. `stages/report.py` reads the eval artifact and calls `shown_query_ids`
(which rankings and texts to read), then `evaluation_section`; `render.py` turns the result into HTML.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from hnm_cli.reporting.sections import ArtifactView, snippet

TOP_DOCS = 5  # documents shown per ranking in the evaluation's per-query view
MAX_LOSSES = 10
MAX_WINS = 5
TIE = 1e-12


def query_deltas(
    per_query: Iterable[Mapping[str, Any]], run: str, baseline: str, metric: str
) -> list[tuple[str, float, float, float]]:
    """(query_id, baseline value, run value, delta) per query both runs scored, most negative delta first."""
    base: dict[str, float] = {}
    mine: dict[str, float] = {}
    for row in per_query:
        value = row.get(metric)
        if not isinstance(value, int | float):
            continue
        if row.get("run") == baseline:
            base[str(row["query_id"])] = float(value)
        elif row.get("run") == run:
            mine[str(row["query_id"])] = float(value)
    out = [(q, base[q], mine[q], mine[q] - base[q]) for q in sorted(base) if q in mine]
    out.sort(key=lambda t: (t[3], t[0]))
    return out


def wins_and_losses(
    per_query: Sequence[Mapping[str, Any]], runs: Iterable[str], baseline: str, metric: str
) -> dict[str, dict[str, Any]]:
    """Per run (other than the baseline): wins/ties/losses on `metric`, the sorted deltas, the worst losses and
    best wins (query ids with both values)."""
    out = {}
    for run in runs:
        if run == baseline:
            continue
        deltas = query_deltas(per_query, run, baseline, metric)
        losses = [d for d in deltas if d[3] < -TIE]
        wins = [d for d in reversed(deltas) if d[3] > TIE]
        out[run] = {
            "wins": len(wins),
            "losses": len(losses),
            "ties": len(deltas) - len(wins) - len(losses),
            "deltas": [round(d[3], 6) for d in deltas],
            "worst": losses[:MAX_LOSSES],
            "best": wins[:MAX_WINS],
        }
    return out


def _ranking_json(
    ranking: Sequence[tuple[str, float]] | None, relevant: Mapping[str, int], docs: Mapping[str, str]
) -> list[dict[str, Any]] | None:
    if ranking is None:
        return None
    return [
        {"doc_id": d, "score": s, "relevance": relevant.get(d, 0), "text": snippet(docs.get(d), 160)}
        for d, s in ranking[:TOP_DOCS]
    ]


def evaluation_section(
    art: ArtifactView,
    report: Mapping[str, Any],
    per_query: Sequence[Mapping[str, Any]],
    *,
    rankings: Mapping[str, Mapping[str, Sequence[tuple[str, float]]]] | None,
    qrels: Mapping[str, Mapping[str, int]],
    queries: Mapping[str, str],
    docs: Mapping[str, str],
) -> dict[str, Any]:
    """One eval artifact: the metrics table with deltas and p-values, the first stage's recall ceiling, per-query
    wins and losses against the baseline with the top documents before and after, and metrics by length.

    Args:
        art: the eval artifact.
        report: its report.json.
        per_query: its per-query.jsonl rows.
        rankings: {run: {query_id: [(doc_id, score)]}} for the queries shown (None: not recorded).
        qrels: the evaluated qrels ({query_id: {doc_id: relevance}}), for the relevance marks.
        queries / docs: texts by id.
    """
    metrics = list(report.get("metrics") or [])
    primary = str(report.get("primary_metric") or (metrics[0] if metrics else ""))
    baseline = str(report.get("baseline"))
    runs = report.get("runs") or {}
    fs = report.get("first_stage") or {}
    ceiling_key = f"recall@{fs.get('top_k')}"
    table = []
    for name, run in runs.items():
        table.append(
            {
                "name": name,
                "kind": run.get("kind"),
                "seeds": run.get("seeds"),
                "baseline": name == baseline,
                "mean": run.get("mean") or {},
                "std": run.get("std") or {},
                "delta": run.get("delta") or {},
                "relative_delta": run.get("relative_delta") or {},
                "p_value": run.get("p_value") or {},
            }
        )
    wl = wins_and_losses(per_query, list(runs), baseline, primary)
    for run, entry in wl.items():
        shown = []
        for kind, items in (("loss", entry.pop("worst")), ("win", entry.pop("best"))):
            for q, before, after, delta in items:
                relevant = {d: r for d, r in qrels.get(q, {}).items() if r > 0}
                shown.append(
                    {
                        "kind": kind,
                        "query_id": q,
                        "query": snippet(queries.get(q), 200),
                        "before": before,
                        "after": after,
                        "delta": delta,
                        "relevant": [{"doc_id": d, "text": snippet(docs.get(d), 160)} for d in sorted(relevant)],
                        "top_before": _ranking_json((rankings or {}).get(baseline, {}).get(q), relevant, docs),
                        "top_after": _ranking_json((rankings or {}).get(run, {}).get(q), relevant, docs),
                    }
                )
        entry["queries"] = shown
    return {
        "anchor": art.anchor,
        "rel": art.rel,
        "split": report.get("split"),
        "queries": report.get("queries"),
        "metrics": metrics,
        "primary": primary,
        "baseline": baseline,
        "significance": report.get("significance") or {},
        "first_stage": {
            "method": fs.get("method"),
            "top_k": fs.get("top_k"),
            "ceiling": fs.get(ceiling_key),
            "ceiling_key": ceiling_key,
            "queries_short": fs.get("queries_short"),
        },  # fmt: skip
        "table": table,
        "wins_losses": wl,
        "rankings_recorded": rankings is not None,
        "by_length": report.get("by_length"),
    }


def shown_query_ids(per_query: Sequence[Mapping[str, Any]], report: Mapping[str, Any]) -> set[str]:
    """The queries an evaluation section lists (worst losses and best wins of every run): whose rankings and texts
    the runner reads."""
    runs = list((report.get("runs") or {}).keys())
    primary = str(report.get("primary_metric") or "")
    out: set[str] = set()
    for entry in wins_and_losses(per_query, runs, str(report.get("baseline")), primary).values():
        out.update(q for q, *_ in [*entry["worst"], *entry["best"]])
    return out
