"""The `hnm mine --update` path: the earlier artifact checked, the texts' state, the incremental mining, its summary."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from hnm_cli.artifacts import mined
from hnm_cli.artifacts.manifest import Manifest
from hnm_cli.artifacts.vectors import open_vector_source, space_key
from hnm_cli.choices import Fallback, Strategy
from hnm_cli.config import MineConfig
from hnm_cli.errors import ArtifactMismatchError, ConfigError
from hnm_cli.mining.strategies import Ids, Texts
from hnm_cli.stages.mine_context import MineContext

log = logging.getLogger("hnm")


@dataclass(frozen=True)
class UpdateBase:
    """The earlier mine artifact an update starts from."""

    path: Path
    rows: dict[tuple[str, str], dict[str, Any]]
    state: mined.MineState


def update_base(
    update: Path,
    params: dict[str, Any],
    vectors: Manifest | None,
    cfg: MineConfig,
    *,
    audit: bool,
    from_audit: Path | None,
    deep: bool,
) -> UpdateBase:
    """The earlier artifact, checked to be updatable into this run (same settings, written with a state)."""
    if audit or from_audit is not None:
        raise ConfigError("--update mines incrementally; it cannot write an audit or re-select from one")
    manifest = mined.require_mined(update, deep=deep)
    ignore = {"export", "plot"}  # extras written beside the rows, not what the rows are
    theirs = {k: v for k, v in manifest.params.items() if k not in ignore}
    # through JSON, as the manifest stored them (tuples come back as lists)
    ours = orjson.loads(orjson.dumps({k: v for k, v in params.items() if k not in ignore}))
    if theirs != ours:
        differ = sorted(k for k in {*theirs, *ours} if theirs.get(k) != ours.get(k))
        raise ConfigError(
            f"--update {update} was mined with other settings ({', '.join(differ)}); give the same options, or "
            "mine in full"
        )
    state = mined.read_state(update)
    if state is None:
        raise ConfigError(f"--update {update} was mined before incremental updates existed; mine it once in full")
    if vectors is not None and state.space != space_key(vectors):
        raise ArtifactMismatchError(
            f"--update {update}: these vectors are not in the space it was mined in (another model or PCA fit); "
            "embed with the same models and reduce with --fit-from, or mine in full"
        )
    rows = {(r["query_id"], r["positive_id"]): r for _, r in mined.iter_rows(update)}
    return UpdateBase(Path(update), rows, state)


def _exclusion_digest(ids: set[str]) -> str:
    return hashlib.sha256("\n".join(sorted(ids)).encode()).hexdigest()[:16]


def _exact_hash(text: str) -> str:
    # Exact, not normalised: a change of case or spacing changes the vector, so it is a changed document.
    return hashlib.blake2b(text.encode(), digest_size=12).hexdigest()


def mine_state(ctx: MineContext, results: Sequence[Any] = ()) -> mined.MineState:
    """What a later `--update` compares against: each text's hash, each query's exclusions, the vectors' space,
    and the head of each query's ranking where `results` (top-k's) carry one."""
    assert ctx.space is not None
    docs = {d: _exact_hash(ctx.corpus[d].full_text) for d in ctx.corpus_ids}
    queries = {q: (_exact_hash(ctx.queries[q].text), _exclusion_digest(ctx.excluded_ids[q])) for q in ctx.query_ids}
    heads = {ctx.query_ids[r.pair.query_row]: (r.head.rows, r.head.floor) for r in results if r.head is not None}
    return mined.MineState(docs, queries, ctx.space, heads or None)


def cannot_update(cfg: MineConfig) -> str | None:
    """Why `cfg` cannot be updated incrementally (said once on stderr; the run is then a cold one), or None."""
    from hnm_cli.mining.update import unsupported

    if (why := unsupported(cfg)) is not None:
        log.warning("mine: --update recomputes every pair: %s", why)
    return why


def mine_incrementally(ctx: MineContext, cfg: MineConfig, base: UpdateBase) -> tuple[list[Any], Any]:
    """Mine incrementally from `base`: `mining.update` plans and merges, this reads what it needs."""
    from hnm_cli.mining.update import plan_update, update_negatives

    assert ctx.vectors_dir is not None
    now = mine_state(ctx)
    plan = plan_update(
        base.state.docs,
        base.state.queries,
        {k: r["negatives"] for k, r in base.rows.items()},
        now.docs,
        now.queries,
        ctx.pair_ids,
        ctx.corpus_row,
        old_heads=base.state.heads,
    )
    texts = None
    if cfg.strategy == Strategy.BM25 or cfg.fallback == Fallback.BM25:
        texts = Texts(corpus=[ctx.corpus[d].full_text for d in ctx.corpus_ids],
                      queries=[ctx.queries[q].text for q in ctx.query_ids])  # fmt: skip
    results, stats, counts = update_negatives(
        ctx.load_query_vectors(),
        open_vector_source(ctx.vectors_dir / "corpus"),
        ctx.pairs(),
        ctx.excluded_rows(),
        cfg,
        plan,
        ids=Ids(ctx.corpus_ids, ctx.query_ids),
        texts=texts,
    )
    ctx.update_counts = counts.to_json()
    if counts.pairs_drifted:
        # A nightly job that silently re-mines everything would pay a full run every night: say so, once.
        log.warning(
            "mine: --update re-mined %d of %d pairs whose texts did not change because their vectors did (by a "
            "bit: an encoder that does not answer a text the same way twice, or a rebuilt embedding cache)",
            counts.pairs_drifted, len(ctx.pair_ids),
        )  # fmt: skip
    return results, stats


def update_part(stats: dict[str, Any]) -> str:
    """The summary line's account of an update."""
    u = stats["update"]
    if u.get("recomputed_in_full"):
        return f"update: every pair mined again ({u['recomputed_in_full']})"
    why = f"{u['pairs_new']} new, {u['pairs_inputs_changed']} with changed inputs"
    if u.get("pairs_remined_with_their_query"):
        why += f", {u['pairs_remined_with_their_query']} with their query's top-k list"
    if u["pairs_drifted"]:
        why += f", {u['pairs_drifted']} forced by vector drift"
    return f"update: {u['pairs_reused']} pairs reused, {u['pairs_remined']} mined again ({why})"
