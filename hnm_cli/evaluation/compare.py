"""Comparing runs like an IR paper: arms over seeds, per-query seed means, deltas and p-values, length groups.

Pure: per-query values in, report parts out.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from hnm_cli.artifacts.reranker import RerankerRef
from hnm_cli.choices import Significance
from hnm_cli.errors import ConfigError
from hnm_cli.evaluation.significance import paired_test
from hnm_cli.inputs import Records
from hnm_cli.qrels import Qrels

#: The run name of the first-stage scores themselves (reserved: no `--model` may take it).
FIRST_STAGE_RUN = "first-stage"


def group_arms(refs: Sequence[RerankerRef]) -> dict[str, list[RerankerRef]]:
    """Group models into arms by run name: several sources under one name are seeds of one arm.

    Args:
        refs: the classified `--model` values, in command-line order.

    Returns:
        {arm name: [seed refs, in the order given]}, arms in order of first appearance.

    Raises:
        ConfigError: a reserved run name (`first-stage`, `*+rrf`), or one source given twice for an arm.
    """
    arms: dict[str, list[RerankerRef]] = {}
    for ref in refs:
        if ref.name == FIRST_STAGE_RUN or ref.name.endswith("+rrf"):
            raise ConfigError(f"--model {ref.name}={ref.source}: the run name '{ref.name}' is reserved")
        seeds = arms.setdefault(ref.name, [])
        if any(r.source == ref.source for r in seeds):
            raise ConfigError(f"--model {ref.name}={ref.source} is given twice (seeds of one arm must differ)")
        seeds.append(ref)
    return arms


def arm_per_query(
    seed_values: Sequence[Mapping[str, Mapping[str, float]]], metrics: Sequence[str]
) -> dict[str, dict[str, float]]:
    """Per-query mean over seeds: {query_id: {metric: value}} (queries of the first seed, same in all).

    Args:
        seed_values: one {query_id: {metric: value}} per seed.
        metrics: the metric keys to average.

    Returns:
        {query_id: {metric: mean over seeds}}.
    """
    qids = list(seed_values[0])
    return {q: {m: sum(s[q][m] for s in seed_values) / len(seed_values) for m in metrics} for q in qids}


def compare(
    arm: Mapping[str, Mapping[str, float]],
    base: Mapping[str, Mapping[str, float]],
    metrics: Sequence[str],
    *,
    method: Significance,
    trials: int,
    seed: int,
) -> dict[str, dict[str, float | None]]:
    """Absolute and relative deltas of the means, and a paired test p-value per metric, arm vs baseline.

    Args:
        arm: the arm's per-query values, {query_id: {metric: value}}.
        base: the baseline's per-query values; its queries are the ones compared.
        metrics: the metric keys to compare.
        method: the paired test (`significance.paired_test`'s `method`).
        trials: the test's trials.
        seed: the test's seed.

    Returns:
        {"delta": {metric: ...}, "relative_delta": {metric: ... or None when the baseline mean is 0},
        "p_value": {metric: ...}}.
    """
    qids = sorted(base)
    out: dict[str, dict[str, float | None]] = {"delta": {}, "relative_delta": {}, "p_value": {}}
    for m in metrics:
        a = [arm[q][m] for q in qids]
        b = [base[q][m] for q in qids]
        mean_a, mean_b = sum(a) / len(a) if a else 0.0, sum(b) / len(b) if b else 0.0
        out["delta"][m] = mean_a - mean_b
        out["relative_delta"][m] = (mean_a - mean_b) / mean_b if mean_b > 0 else None
        out["p_value"][m] = paired_test(a, b, method=method, trials=trials, seed=seed)
    return out


def length_groups(qrels: Qrels, corpus: Records, split_tokens: int) -> dict[str, list[str]]:
    """Queries whose relevant documents all have fewer than `split_tokens` whitespace tokens ("short"),
    and the rest ("long"). Token counts are over `Doc.full_text`.

    Args:
        qrels: the judged queries (each has a relevant document).
        corpus: the corpus records.
        split_tokens: the token count that starts "long".

    Returns:
        {"short": [query ids], "long": [query ids]}, each sorted.
    """
    groups: dict[str, list[str]] = {"short": [], "long": []}
    for qid in sorted(qrels):
        pos = [d for d, r in qrels[qid].items() if r > 0]
        longest = max(len(corpus[d].full_text.split()) for d in pos)
        groups["short" if longest < split_tokens else "long"].append(qid)
    return groups
