"""The outputs of `hnm mine` beside its rows: the rows from the results, stats.json, the summary line, export, plots."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hnm_cli.artifacts import mined
from hnm_cli.artifacts.manifest import output_entry
from hnm_cli.artifacts.vectors import open_vector_source
from hnm_cli.choices import ExportLayout, Strategy
from hnm_cli.config import MineConfig
from hnm_cli.stages.mine_context import MineContext


def result_rows(results: Sequence[Any], ctx: MineContext) -> Any:
    """The artifact's rows (`artifacts.mined.rows_of`): one per (query, positive) pair, in qrels order."""
    return mined.rows_of(ctx.pair_ids, results, ctx.corpus_ids, lambda q: ctx.queries[q].meta)


def stats_record(stats: Any, ctx: MineContext, cfg: MineConfig, seconds: float) -> dict[str, Any]:
    """stats.json: the core's counts plus the run's settings, sizes and exclusions."""
    data: dict[str, Any] = stats.to_dict()
    data.update(
        {
            "strategy": cfg.strategy,
            "split": cfg.split,
            "num_negatives": cfg.num_negatives,
            "queries": len(ctx.query_ids),
            "corpus_docs": len(ctx.corpus_ids),
            "duplicates_excluded": ctx.duplicates_excluded,
            "twin_positives_excluded": ctx.twin_positives_excluded,
            "query_duplicates_excluded": ctx.query_duplicates_excluded,
            "mining_seconds": round(seconds, 3),
            "executor": cfg.executor,
        }
    )
    return data


def summary_line(stats: dict[str, Any], cfg: MineConfig, seconds: float, from_audit: bool) -> str:
    """The one stderr line a run ends with."""
    pairs = stats["pairs"]
    with_neg = pairs - stats["pairs_with_zero"]
    how = f"{cfg.strategy} from audit" if from_audit else cfg.strategy
    parts = [
        f"mine: {how} on {pairs} pairs: {with_neg} with >=1 negative ({100.0 * with_neg / max(pairs, 1):.1f}%)",
        # "short" here means got some but fewer than asked; the empty pairs are the complement of the rate.
        f"{stats['pairs_short'] - stats['pairs_with_zero']} short",
    ]
    if cfg.strategy == Strategy.RULE:
        parts.append(
            f"C1 rejected {stats['rejected_c1']}, C2 rejected {stats['rejected_c2']}, "
            f"excluded {stats['rejected_exclusion']}"
        )
    if stats.get("rejected_by"):
        # top-k's filters (the default's ceiling among them): what they kept out is the false-negative guard at work
        parts.append("removed by " + ", ".join(f"{k} {v}" for k, v in sorted(stats["rejected_by"].items())))
    if stats.get("fallback_pairs"):
        parts.append(f"{stats['fallback_pairs']} by fallback {cfg.fallback}")
    if stats.get("query_duplicates_excluded"):
        parts.append(f"{stats['query_duplicates_excluded']} document(s) equal to their query's text excluded")
    if stats.get("hnsw_widenings") or stats.get("exact_fallbacks"):
        parts.append(f"hnsw widened {stats['hnsw_widenings']}, exact fallbacks {stats['exact_fallbacks']}")
    parts.append(f"{seconds:.1f} s")
    return ", ".join(parts)


def write_export_file(
    out: Path, layout: str, rows: list[dict[str, Any]], ctx: MineContext, cfg: MineConfig, stats: dict[str, Any]
) -> dict[str, Any]:
    """`<out>/export/<layout>.jsonl` with the texts; its counts go into `stats["export"]`. Returns its output entry."""
    from hnm_cli.artifacts.exports import write_export

    query_text = {q: ctx.queries[q].text for q in ctx.query_ids}
    rel, n, stats["export"] = write_export(
        out, ExportLayout(layout), rows, query_text, lambda d: ctx.corpus[d].full_text, cfg.num_negatives
    )
    return output_entry(out, rel, rows=n)


def write_plots(out: Path, rows: list[dict[str, Any]], ctx: MineContext, cfg: MineConfig) -> list[str]:
    """`<out>/plots/`: the PCA picture and the margin histogram. Returns their paths relative to `out`."""
    from hnm_cli import plots

    assert ctx.vectors_dir is not None
    return plots.write_mining_plots(
        out / "plots",
        rows,
        ctx.load_query_vectors(),
        open_vector_source(ctx.vectors_dir / "corpus"),
        ctx.query_row,
        ctx.corpus_row,
        title=f"{cfg.strategy}: queries, positives and selected negatives (PCA 1-2)",
        seed=cfg.seed,
    )
