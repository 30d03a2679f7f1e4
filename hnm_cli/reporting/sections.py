"""The page data of `hnm report`: one plain dict per section, built from what the artifacts hold (the evaluation
section's builders are in `evaluation_section.py`, which shares `ArtifactView` and `snippet` from here).

Pure: manifests (as JSON dicts), stats, sampled rows, texts and per-query values in; JSON-ready dicts out, no paths
opened and nothing printed. `stages/report.py` reads the artifacts and calls these; `render.py` turns the result
into HTML. Each builder is unit-tested on tiny artifacts (tests/test_report.py).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from hnm_cli.choices import Stage
from hnm_cli.reporting.risk import NEAR_DUPLICATE, PERCPOS, DistanceSummary, PairSample, is_risky, negative_risk

# Cards sort by pipeline stage, in `Stage` order. The two stages whose artifacts live inside another's folder
# (an embed model, eval's first stage) get no card of their own (`stages/report.py` CHILD_STAGES).
STAGE_ORDER: tuple[str, ...] = tuple(s for s in Stage if s not in (Stage.EMBED_MODEL, Stage.EVAL_FIRST_STAGE))
TEXT_CHARS = 400  # a document's text on the page: enough to judge it, bounded so a big run stays a few MB


@dataclass
class ArtifactView:
    """One artifact found under the run folder, as the page needs it.

    Attributes:
        rel: its folder relative to the run folder (`.` for the run folder itself).
        manifest: the manifest's JSON (`Manifest.to_json()`).
        digest: its outputs digest (what downstream stages recorded as their input's sha256).
        outputs_problem: the first output that no longer matches the manifest, or None.
        input_states: per manifest input, in order: `ok`, `changed` or `missing` (not found from here).
    """

    rel: str
    manifest: dict[str, Any]
    digest: str
    outputs_problem: str | None = None
    input_states: list[str] = field(default_factory=list)

    @property
    def stage(self) -> str:
        """The manifest's stage."""
        return str(self.manifest.get("stage", "?"))

    @property
    def anchor(self) -> str:
        """The HTML id of its card: the stage and folder, stable across reports of the same run."""
        slug = "".join(c if c.isalnum() else "-" for c in self.rel).strip("-") or "root"
        return f"a-{self.stage}-{slug}"


def snippet(text: str | None, limit: int = TEXT_CHARS) -> str | None:
    """`text` cut to `limit` characters at a word boundary, with an ellipsis when cut."""
    if text is None:
        return None
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    cut = text[:limit].rsplit(" ", 1)[0] or text[:limit]
    return cut + " …"


def _counts(stage: str, stats: Mapping[str, Any]) -> dict[str, Any]:
    keys = {
        "embed": ("model_names",),
        "reduce": ("corpus_rows", "queries_rows", "concat_dim", "dim", "components", "variance_reached"),
        "mine": ("queries", "pairs", "pairs_with_negative", "pairs_with_zero", "selected", "selection_rate"),
        "train-reranker": ("pairs", "examples", "negatives_used", "global_step", "final_loss"),
        "eval": ("queries", "skipped_queries", "runs"),
    }.get(stage, ())
    out = {k: stats[k] for k in keys if k in stats}
    if stage == "embed" and isinstance(stats.get("models"), dict):
        out["rows"] = {m: s.get("rows") for m, s in stats["models"].items() if isinstance(s, dict)}
    return out


def pipeline_section(
    artifacts: Sequence[ArtifactView], aliases: Mapping[str, ArtifactView] | None = None
) -> dict[str, Any]:
    """Each stage's inputs, settings, fingerprint, counts, timing, version and freshness, with links between stages.

    An input that is an hnm artifact links to the artifact of this run whose outputs digest it recorded (found by
    digest, so a moved run folder still links). Status: `up to date` (outputs intact, every input as recorded),
    `stale` (an input or output changed since), or `unknown` (an input is not reachable from here); an input
    whose digest is not re-computable (a model folder's identity) counts as `recorded`.

    Args:
        artifacts: the artifacts shown, one card each.
        aliases: more digests to link, to a shown artifact (an embed's per-model vector sets link to the embed).
    """
    by_digest = {**(aliases or {}), **{a.digest: a for a in artifacts}}
    cards: list[dict[str, Any]] = []
    for art in artifacts:
        m = art.manifest
        inputs = []
        for i, inp in enumerate(m.get("inputs") or []):
            state = art.input_states[i] if i < len(art.input_states) else "missing"
            target = by_digest.get(str(inp.get("sha256"))) if "stage" in inp else None
            inputs.append(
                {
                    "role": inp.get("role"),
                    "path": inp.get("path"),
                    "stage": inp.get("stage"),
                    "link": target.anchor if target is not None else None,
                    "link_rel": target.rel if target is not None else None,
                    "state": state,
                }
            )
        # eval records the rerankers it scored in params (by identity, a train-reranker artifact's digest)
        for model in (m.get("params") or {}).get("models") or []:
            target = by_digest.get(str(model.get("identity"))) if isinstance(model, dict) else None
            if target is not None:
                inputs.append({"role": f"model {model.get('name')}", "path": model.get("source"),
                               "stage": target.stage, "link": target.anchor, "link_rel": target.rel,
                               "state": "ok"})  # fmt: skip
        states = [x["state"] for x in inputs]
        if art.outputs_problem is not None or "changed" in states:
            status = "stale"
        elif "missing" in states:
            status = "unknown"
        else:
            status = "up to date"
        notes = [f"output {art.outputs_problem}"] if art.outputs_problem else []
        notes += [f"input {x['role']} ({x['path']}) {x['state']}" for x in inputs if x["state"] != "ok"]
        stats = m.get("stats") or {}
        cards.append(
            {
                "anchor": art.anchor,
                "rel": art.rel,
                "stage": art.stage,
                "created_at": m.get("created_at"),
                "version": m.get("hnm_cli_version"),
                "fingerprint": m.get("fingerprint"),
                "seconds": stats.get("seconds"),
                "counts": _counts(art.stage, stats),
                "params": m.get("params") or {},
                "inputs": inputs,
                "outputs": len(m.get("outputs") or []),
                "output_bytes": sum(int(o.get("bytes") or 0) for o in m.get("outputs") or []),
                "status": status,
                "notes": notes,
            }
        )
    rank = {s: i for i, s in enumerate(STAGE_ORDER)}
    cards.sort(key=lambda c: (rank.get(str(c["stage"]), len(rank)), str(c["rel"])))
    return {"artifacts": cards}


def embed_view(art: ArtifactView) -> dict[str, Any]:
    """Vectors of an embed artifact: per model its source, dimension, speed, precision, backend and long-text mode."""
    params, stats = art.manifest.get("params") or {}, art.manifest.get("stats") or {}
    model_stats = stats.get("models") if isinstance(stats.get("models"), dict) else {}
    models = []
    for spec in params.get("models") or []:
        s = model_stats.get(spec.get("name"), {}) if isinstance(model_stats, dict) else {}
        models.append(
            {
                "name": spec.get("name"),
                "source": spec.get("source"),
                "dim": s.get("dim"),
                "rows": s.get("rows"),
                "texts_per_s": s.get("docs_per_s"),
                "encode_seconds": s.get("encode_seconds"),
                "precision": spec.get("precision"),
                "backend": spec.get("backend") or spec.get("engine"),
                "long_texts": spec.get("long_texts") or "truncate",
                "max_seq_length": spec.get("max_seq_length"),
                "from_cache": s.get("rows_from_cache"),
            }
        )
    return {"anchor": art.anchor, "rel": art.rel, "models": models, "seconds": stats.get("seconds")}


def reduce_view(art: ArtifactView, variance_ratios: Sequence[float] | None) -> dict[str, Any]:
    """Fusion and PCA of a reduce artifact: each model's share of the kept variance, components kept, and the
    cumulative explained variance per component (from its `pca/` fit, when there is one)."""
    params, stats = art.manifest.get("params") or {}, art.manifest.get("stats") or {}
    cumulative: list[float] = []
    total = 0.0
    for r in variance_ratios or []:
        total += float(r)
        cumulative.append(total)
    return {
        "anchor": art.anchor,
        "rel": art.rel,
        "pca": bool(params.get("pca", True)),
        "target_variance": params.get("variance"),
        "components": stats.get("components"),
        "variance_reached": stats.get("variance_reached"),
        "concat_dim": stats.get("concat_dim"),
        "input_dims": stats.get("input_dims") or {},
        "weights": params.get("weights") or {},
        "model_variance_share": stats.get("model_variance_share") or {},
        "cumulative_variance": cumulative,
        "fit_rows": stats.get("fit_rows"),
        "fit_from": params.get("fit_from"),
    }


# The stats keys that count candidates a guard or test removed, in the order the page lists them.
GUARD_KEYS = (
    ("rejected_c1", "C1: not closer to the query than the positive"),
    ("rejected_c2", "C2: closer to the positive than to the query (false-negative guard)"),
    ("rejected_exclusion", "excluded: a positive of the query"),
    ("duplicates_excluded", "excluded: same text as a positive"),
    ("twin_positives_excluded", "excluded: twin of a positive"),
    ("query_duplicates_excluded", "excluded: same text as the query"),
)


GUARD_LABELS = {
    "ceiling": "false-negative control: above the positive-aware ceiling (--relative/--absolute-margin)",
    "vote": "false-negative control: the ensemble members voted it a positive (--vote)",
}


def _guards(stats: Mapping[str, Any]) -> list[dict[str, Any]]:
    out = [{"name": key, "label": label, "removed": stats[key]} for key, label in GUARD_KEYS if key in stats]
    rejected_by = stats.get("rejected_by")
    if isinstance(rejected_by, dict):
        out += [{"name": f"rejected_by.{k}", "label": k, "removed": v} for k, v in rejected_by.items()]
    guards = stats.get("guards")  # {"removed": {guard: n}, "suspected": n, ...} when false-negative controls ran
    if isinstance(guards, dict) and isinstance(guards.get("removed"), dict):
        out += [
            {"name": f"guards.removed.{k}", "label": GUARD_LABELS.get(k, k), "removed": v}
            for k, v in guards["removed"].items()
        ]
    return out


def _flat(prefix: str, value: Any, out: list[tuple[str, Any]]) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            _flat(f"{prefix}.{k}" if prefix else str(k), v, out)
    else:
        out.append((prefix, value))


def _entry_json(entry: Mapping[str, Any]) -> dict[str, Any]:
    """A negative or suspected positive for the page: its fields, risk and flags."""
    risk, flags = negative_risk(entry)
    return {
        "doc_id": entry.get("doc_id"),
        "source": entry.get("source"),
        "rank": entry.get("rank"),
        "d_qd": entry.get("d_qd"),
        "d_qp": entry.get("d_qp"),
        "d_pd": entry.get("d_pd"),
        "risk": None if risk is None else round(risk, 6),
        "flags": flags,
        "risky": is_risky(flags),
    }


def _pair_json(row: Mapping[str, Any], picked: str) -> dict[str, Any]:
    negs = [_entry_json(n) for n in row.get("negatives") or []]
    # `suspected`: candidates a false-negative guard set aside, each with the negatives' fields and its guard as
    # `source` (hnm mine's controls); rows mined before them have none.
    suspected = [_entry_json(x) for x in row.get("suspected") or [] if isinstance(x, dict) and x.get("doc_id")]
    risks = [n["risk"] for n in negs if n["risk"] is not None]
    return {
        "query_id": row.get("query_id"),
        "positive_id": row.get("positive_id"),
        "picked": picked,
        "risk": max(risks) if risks else None,
        "risky": any(n["risky"] for n in negs),
        "negatives": negs,
        "suspected": suspected,
    }


def sampled_ids(sample: PairSample) -> tuple[set[str], set[str]]:
    """(query ids, doc ids) the sampled pairs name: the texts a page needs."""
    queries, docs = set(), set()
    for row in [*sample.risky, *sample.random]:
        queries.add(str(row.get("query_id")))
        docs.add(str(row.get("positive_id")))
        docs.update(str(n.get("doc_id")) for n in row.get("negatives") or [])
        docs.update(str(s.get("doc_id")) for s in row.get("suspected") or [] if isinstance(s, dict))
    return queries, docs


def mining_section(
    art: ArtifactView,
    stats: Mapping[str, Any] | None,
    summary: DistanceSummary,
    sample: PairSample,
    *,
    queries: Mapping[str, str],
    docs: Mapping[str, str],
    scatter: Mapping[str, Sequence[Sequence[float]]] | None = None,
    texts_note: str | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """One mine artifact: strategy and guards, selection, false-negative risk, histograms, scatter, sampled pairs.

    Args:
        art: the mine artifact.
        stats: its stats.json (None when absent).
        summary: the distance summary over every row.
        sample: the sampled pairs.
        queries / docs: texts by id (only those the sample names are used; missing ones show as ids).
        scatter: {"queries"|"positives"|"negatives": [[x, y], ...]}, the first two PCA components of the sampled
            pairs' vectors, or None when the vectors are not reachable.
        texts_note: why texts are missing, shown on the page.
        seed: the seed the sample was drawn with (shown with the count of pairs left out).
    """
    params = art.manifest.get("params") or {}
    stats = dict(stats or art.manifest.get("stats") or {})
    recorded_risk: list[tuple[str, Any]] = []
    if isinstance(stats.get("fn_risk"), dict):
        _flat("", stats["fn_risk"], recorded_risk)
    setting_keys = ("strategy", "num_negatives", "split", "fallback", "fill", "c2_margin", "sampling_strategy",
                    "range_min", "range_max", "max_score", "min_score", "absolute_margin", "relative_margin",
                    "vote", "random_negatives", "candidate_k", "index", "seed", "preset")  # fmt: skip
    pairs = [_pair_json(r, "risk") for r in sample.risky] + [_pair_json(r, "random") for r in sample.random]
    used_q, used_d = sampled_ids(sample)
    return {
        "anchor": art.anchor,
        "rel": art.rel,
        "settings": {k: params[k] for k in setting_keys if k in params and params[k] is not None},
        "selection": {
            k: stats.get(k)
            for k in (
                "queries",
                "pairs",
                "pairs_with_negative",
                "pairs_with_zero",
                "pairs_short",
                "selected",
                "selection_rate",
                "candidates_examined",
                "fallback_pairs",
                "margin_mean",
            )  # fmt: skip
            if k in stats
        },
        "guards": _guards(stats),
        "recorded_risk": recorded_risk,
        "risk": summary.to_json(),
        "thresholds": {"percpos": PERCPOS, "near_duplicate": NEAR_DUPLICATE},
        "hist_margin": stats.get("hist_margin"),
        "scatter": dict(scatter) if scatter else None,
        "browser": {
            "pairs": pairs,
            "total": sample.total,
            "left_out": sample.left_out,
            "seed": seed,
            "queries": {q: snippet(queries[q]) for q in sorted(used_q) if q in queries},
            "docs": {d: snippet(docs[d]) for d in sorted(used_d) if d in docs},
        },
        "texts_note": texts_note,
    }


def training_section(art: ArtifactView) -> dict[str, Any]:
    """One train-reranker artifact: loss curve, budget, and the examples used and skipped."""
    params, stats = art.manifest.get("params") or {}, art.manifest.get("stats") or {}
    curve = [[float(s), float(v)] for s, v in stats.get("loss_curve") or [] if v is not None]
    budget_keys = ("kind", "loss", "base_model", "epochs", "max_steps", "batch_size", "learning_rate",
                   "warmup_ratio", "max_length", "negatives_per_positive", "precision", "seed")  # fmt: skip
    return {
        "anchor": art.anchor,
        "rel": art.rel,
        "budget": {k: params[k] for k in budget_keys if k in params},
        "progress": {
            k: stats[k]
            for k in ("planned_steps", "global_step", "resumed_from_step", "final_loss", "train_seconds", "device")
            if k in stats
        },
        "examples": {
            k: stats[k]
            for k in (
                "pairs",
                "pairs_used",
                "examples",
                "negatives_used",
                "pairs_skipped_no_negative",
                "pairs_in_batch_only",
                "pairs_padded",
                "pairs_positive_only",
                "eval_overlap",
            )  # fmt: skip
            if k in stats
        },
        "loss_curve": curve,
    }


def page(
    *,
    title: str,
    generated_at: str,
    version: str,
    pipeline: Mapping[str, Any],
    vectors: Mapping[str, Any] | None,
    mining: Sequence[Mapping[str, Any]],
    training: Sequence[Mapping[str, Any]],
    evaluation: Sequence[Mapping[str, Any]],
    max_pairs: int,
    seed: int,
) -> dict[str, Any]:
    """The whole page's data: sections present only when their artifacts are."""
    sections = ["pipeline"]
    if vectors and (vectors.get("embed") or vectors.get("reduce")):
        sections.append("vectors")
    sections += ["mining"] * bool(mining) + ["training"] * bool(training) + ["evaluation"] * bool(evaluation)
    return {
        "title": title,
        "generated_at": generated_at,
        "version": version,
        "sections": sections,
        "pipeline": dict(pipeline),
        "vectors": dict(vectors or {}),
        "mining": list(mining),
        "training": list(training),
        "evaluation": list(evaluation),
        "max_pairs": max_pairs,
        "seed": seed,
    }
