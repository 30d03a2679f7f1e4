"""The eval report: building report.json's content from scored runs, and rendering it as Markdown and TSV.

Pure: runs and per-query values in, a dict or text out; the stage runner writes the files.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from typing import Any

from hnm_cli.config import EvalConfig
from hnm_cli.evaluation.compare import FIRST_STAGE_RUN, arm_per_query, compare, length_groups
from hnm_cli.evaluation.metrics import PRIMARY_METRIC, mean_metrics, per_query_metrics
from hnm_cli.evaluation.rerank import SeedRun
from hnm_cli.inputs import Records
from hnm_cli.qrels import Qrels

METRIC_LABELS = {"mrr": "MRR", "ndcg": "nDCG", "map": "MAP", "recall": "Recall", "precision": "P"}


def metric_label(key: str) -> str:
    """Paper-style label of a metric key: `ndcg@10` -> `nDCG@10`."""
    name, _, cut = key.partition("@")
    return f"{METRIC_LABELS.get(name, name)}@{cut}"


def _fmt_delta(delta: float, rel: float | None, p: float) -> str:
    rel_txt = f", {rel * 100:+.1f}%" if rel is not None else ""
    return f"{delta:+.3f}{rel_txt}, p={p:.3g}"


GUARDED_METRICS = ("ndcg@10", "mrr@10")  # a reranker below the first stage on either one makes the ranking worse


def below_first_stage(report: Mapping[str, Any]) -> dict[str, list[str]]:
    """Runs whose mean nDCG@10 or MRR@10 is below the first stage's, with the metrics where they are."""
    runs = report["runs"]
    fs = runs.get(FIRST_STAGE_RUN)
    if fs is None:
        return {}
    out = {}
    for name, run in runs.items():
        worse = [m for m in GUARDED_METRICS if m in run["mean"] and run["mean"][m] < fs["mean"][m]]
        if name != FIRST_STAGE_RUN and worse:
            out[name] = worse
    return out


def below_first_stage_line(report: Mapping[str, Any]) -> str | None:
    """The one warning line `hnm eval` prints when a reranker makes the first stage worse, or None."""
    worse = below_first_stage(report)
    if not worse:
        return None
    fs = report["runs"][FIRST_STAGE_RUN]["mean"]
    parts = [
        f"{name} ("
        + ", ".join(f"{metric_label(m)} {report['runs'][name]['mean'][m]:.4f} < {fs[m]:.4f}" for m in metrics)
        + ")"
        for name, metrics in worse.items()
    ]
    return "eval: warning: ranks below the first stage it reranks: " + "; ".join(parts)


def render_markdown(report: Mapping[str, Any]) -> str:
    """`report.md`: a results table (mean ± std, † where p < 0.05 vs the baseline) and a deltas table.

    Args:
        report: the report dict (`build_report`, without `_per_query`).

    Returns:
        The Markdown text, ending in a newline.
    """
    metrics = report["metrics"]
    fs = report["first_stage"]
    base = report["baseline"]
    recall_key = f"recall@{fs['top_k']}"
    below = below_first_stage(report)
    lines = [
        f"# hnm eval: split '{report['split']}', {report['queries']} queries",
        "",
        f"First stage: {fs['method']} top-{fs['top_k']}, Recall@{fs['top_k']} = {fs[recall_key]:.4f} "
        "(the ceiling of every reranker: a positive outside the list is a miss).",
        "",
        "| run | seeds | " + " | ".join(metric_label(m) for m in metrics) + " |",
        "|---|---:|" + "---:|" * len(metrics),
    ]
    for name, run in report["runs"].items():
        cells = []
        for m in metrics:
            cell = f"{run['mean'][m]:.4f}"
            if run["seeds"] > 1:
                cell += f" ± {run['std'][m]:.4f}"
            p = run.get("p_value", {}).get(m)
            if p is not None and p < 0.05:
                cell += " †"
            cells.append(cell)
        label = f"{name} (baseline)" if name == base else name
        if name in below:
            label += " ⚠ below first stage"
        lines.append(f"| {label} | {run['seeds']} | " + " | ".join(cells) + " |")
    sig = report["significance"]
    lines += [
        "",
        f"† p < 0.05 against `{base}` (paired {sig['test']} test, {sig['trials']} trials, seed {sig['seed']}, "
        "per-query values; an arm with several seeds uses its per-query mean). ± is the sample std over seeds.",
    ]
    if below:
        lines += [
            "",
            "⚠ below first stage: the reranker's nDCG@10 or MRR@10 is lower than the first stage it reranks; "
            "using it makes the ranking worse (try `--fuse rrf`, or another training recipe).",
        ]
    others = [(n, r) for n, r in report["runs"].items() if n != base]
    if others:
        lines += [
            "",
            f"## Difference vs `{base}` (absolute, relative, p)",
            "",
            "| run | " + " | ".join(metric_label(m) for m in metrics) + " |",
            "|---|" + "---:|" * len(metrics),
        ]
        for name, run in others:
            cells = [_fmt_delta(run["delta"][m], run["relative_delta"][m], run["p_value"][m]) for m in metrics]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    if report.get("by_length"):
        bl = report["by_length"]
        lines += ["", f"## By document length (split at {bl['split_tokens']} whitespace tokens)", ""]
        lines += ["| run | group | queries | " + " | ".join(metric_label(m) for m in metrics) + " |"]
        lines += ["|---|---|---:|" + "---:|" * len(metrics)]
        for name in report["runs"]:
            for group, data in bl["groups"].items():
                values = data["runs"][name]
                cells = ["–" if values[m] is None else f"{values[m]:.4f}" for m in metrics]
                lines.append(f"| {name} | {group} | {data['queries']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _sample_std(values: Sequence[float]) -> float:
    return statistics.stdev(values) if len(values) > 1 else 0.0


def build_report(
    cfg: EvalConfig,
    seed_runs: Mapping[str, list[SeedRun]],
    judged: Qrels,
    corpus: Records,
    metrics: list[str],
    first_stage_stats: Mapping[str, Any],
    skipped: int,
    recall_key: str,
) -> dict[str, Any]:
    """report.json's content (plus `_per_query`, the arm-level per-query values, popped by the caller).

    Args:
        cfg: the eval config (split, first stage, baseline, significance test, `by_length`).
        seed_runs: {run name: its scored seeds}, `first-stage` first; report order is this order.
        judged: the evaluated qrels (every query has a relevant document).
        corpus: the corpus records (for the length groups).
        metrics: the metric keys reported.
        first_stage_stats: the first-stage artifact's stats (`queries_short`, `seconds`).
        skipped: qrels queries without a relevant document.
        recall_key: the first stage's recall key, `recall@<top_k>`.

    Returns:
        The report dict, with `_per_query` ({run: {query_id: {metric: value}}}) as its last key.
    """
    keys = [*metrics, *([recall_key] if recall_key not in metrics else [])]
    arm_pq: dict[str, dict[str, dict[str, float]]] = {}
    runs: dict[str, dict[str, Any]] = {}
    for name, seeds in seed_runs.items():
        values = [per_query_metrics(judged, scored, metrics) for _, scored, _ in seeds]
        arm_pq[name] = arm_per_query(values, metrics)
        seed_means = [mean_metrics(v, metrics) for v in values]
        kind = "first-stage" if seeds[0][0] is None else seeds[0][0].kind
        runs[name] = {
            "kind": kind + ("+rrf" if name.endswith("+rrf") else ""),
            "seeds": len(seeds),
            "mean": {m: statistics.fmean(s[m] for s in seed_means) for m in metrics},
            "std": {m: _sample_std([s[m] for s in seed_means]) for m in metrics},
            "per_seed": [
                {"source": ref.source if ref else None, "mean": s, "seconds": secs}
                for (ref, _, secs), s in zip(seeds, seed_means, strict=True)
            ],
        }
    fs_recall = mean_metrics(per_query_metrics(judged, seed_runs[FIRST_STAGE_RUN][0][1], keys), keys)[recall_key]
    base = arm_pq[cfg.baseline]
    for name, entry in runs.items():
        if name == cfg.baseline:
            continue
        entry.update(compare(arm_pq[name], base, metrics, method=cfg.significance, trials=cfg.trials, seed=cfg.seed))
    report: dict[str, Any] = {
        "split": cfg.split,
        "queries": len(judged),
        "skipped_queries": skipped,
        "first_stage": {
            "method": cfg.first_stage,
            "top_k": cfg.top_k,
            recall_key: fs_recall,
            "queries_short": first_stage_stats.get("queries_short"),
            "seconds": first_stage_stats.get("seconds"),
        },
        "metrics": metrics,
        "primary_metric": PRIMARY_METRIC,
        "baseline": cfg.baseline,
        "significance": {"test": cfg.significance, "trials": cfg.trials, "seed": cfg.seed},
        "runs": runs,
    }
    if cfg.by_length is not None:
        groups = length_groups(judged, corpus, cfg.by_length)
        report["by_length"] = {
            "split_tokens": cfg.by_length,
            "rule": "short: every relevant document has fewer whitespace tokens than split_tokens",
            "groups": {
                g: {
                    "queries": len(ids),
                    # An empty group has no mean (null), not a mean of 0.
                    "runs": {
                        name: mean_metrics({q: pq[q] for q in ids}, metrics) if ids else dict.fromkeys(metrics)
                        for name, pq in arm_pq.items()
                    },
                }
                for g, ids in groups.items()
            },
        }
    report["_per_query"] = arm_pq
    return report


def report_to_tsv(report: Mapping[str, Any]) -> str:
    """`run<TAB>measure<TAB>value` lines (ir_measures style, plus the run column) for every run's means.

    Args:
        report: the report dict (report.json's content).

    Returns:
        The lines joined by newlines, without a trailing newline.
    """
    lines = [f"{name}\t{m}\t{run['mean'][m]:.6f}" for name, run in report["runs"].items() for m in report["metrics"]]
    return "\n".join(lines)
