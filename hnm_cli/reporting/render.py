"""The report page as one self-contained HTML document: inline CSS, inline SVG figures, one inline script for the
triplet browser (search, sort, flagged-only filter), and the sampled pairs as an inline JSON block.
The stylesheet's and the script's text is in `assets.py`.

Nothing is fetched: no CDN, no font, no image URL, so the file opens offline with a double click and can be
attached to a pull request. Every text that comes from the data is escaped here, or set as text by the script.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from html import escape
from typing import Any

import orjson

from hnm_cli.reporting import svg
from hnm_cli.reporting.assets import CSS, JS

SECTION_TITLES = {
    "pipeline": "Pipeline",
    "vectors": "Vectors",
    "mining": "Mining",
    "training": "Training",
    "evaluation": "Evaluation",
}


def _e(value: Any) -> str:
    return escape("" if value is None else str(value))


def _num(value: Any, digits: int = 4) -> str:
    if isinstance(value, bool) or value is None:
        return _e(value) if value is not None else "–"
    if isinstance(value, float):
        if value and abs(value) < 10**-digits:
            return f"{value:.2g}"  # a learning rate, a p-value: not 0.0000
        return f"{value:,.1f}" if abs(value) >= 100 else f"{value:.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return _e(value)


def _pct(value: Any) -> str:
    return "–" if not isinstance(value, int | float) else f"{value * 100:.1f}%"


def _kv_table(items: Mapping[str, Any], *, cls: str = "") -> str:
    rows = "".join(
        f"<tr><th>{_e(k)}</th><td class='n'>{_num(v) if not isinstance(v, dict | list) else _e(_json(v))}</td></tr>"
        for k, v in items.items()
    )
    return f"<table class='{cls}'>{rows}</table>" if rows else ""


def _json(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()


def _status(status: str) -> str:
    cls = {"up to date": "ok", "stale": "bad"}.get(status, "warn")
    return f"<span class='chip {cls}'>{_e(status)}</span>"


# ---------------------------------------------------------------------------------------------


def _pipeline(data: Mapping[str, Any]) -> str:
    cards = data["artifacts"]
    flow = " <span class='arrow'>→</span> ".join(
        f"<a class='st' href='#{_e(c['anchor'])}'><b>{_e(c['stage'])}</b> <span class='mut'>{_e(c['rel'])}</span> "
        f"{_status(c['status'])}</a>"
        for c in cards
    )
    out = [f"<div class='flow'>{flow}</div>", "<div class='cards'>"]
    for c in cards:
        inputs = "".join(
            f"<tr><td>{_e(i['role'])}</td><td>"
            + (
                f"<a href='#{_e(i['link'])}'>{_e(i['link_rel'])}</a> ({_e(i['stage'])})"
                if i["link"]
                else f"<span class='id'>{_e(i['path'])}</span>"
            )
            + f"</td><td class='{'ok' if i['state'] == 'ok' else 'bad' if i['state'] == 'changed' else 'warn'}'>"
            f"{_e(i['state'])}</td></tr>"
            for i in c["inputs"]
        )
        notes = "".join(f"<li>{_e(n)}</li>" for n in c["notes"])
        out.append(
            f"<div class='card' id='{_e(c['anchor'])}'><h3>{_e(c['stage'])} <span class='mut'>{_e(c['rel'])}</span> "
            f"{_status(c['status'])}</h3>"
            + (f"<ul class='bad'>{notes}</ul>" if notes else "")
            + _kv_table(
                {
                    "created": c["created_at"],
                    "hnm version": c["version"],
                    "fingerprint": (c["fingerprint"] or "")[:23] + "…",
                    "seconds": c["seconds"],
                    "outputs": f"{c['outputs']} files, {c['output_bytes']:,} bytes",
                    **c["counts"],
                }
            )
            + f"<table><tr><th>input</th><th>from</th><th>now</th></tr>{inputs}</table>"
            + f"<details><summary>settings</summary><pre>{_e(orjson.dumps(c['params'], option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode())}</pre></details>"
            + "</div>"
        )
    out.append("</div>")
    return "".join(out)


def _vectors(data: Mapping[str, Any]) -> str:
    out = []
    for emb in data.get("embed") or []:
        head = ("model", "source", "dim", "rows", "texts/s", "precision", "backend", "long texts", "max length",
                "from cache")  # fmt: skip
        rows = "".join(
            "<tr>"
            + "".join(
                f"<td class='n'>{_num(m[k])}</td>"
                for k in (
                    "name",
                    "source",
                    "dim",
                    "rows",
                    "texts_per_s",
                    "precision",
                    "backend",
                    "long_texts",
                    "max_seq_length",
                    "from_cache",
                )  # fmt: skip
            )
            + "</tr>"
            for m in emb["models"]
        )
        out.append(
            f"<h3 id='v-{_e(emb['anchor'])}'>embed <span class='mut'>{_e(emb['rel'])}</span></h3>"
            f"<table><tr>{''.join(f'<th>{h}</th>' for h in head)}</tr>{rows}</table>"
        )
    for red in data.get("reduce") or []:
        figs = svg.hbars("Each model's share of the kept variance", sorted(red["model_variance_share"].items()))
        if red["cumulative_variance"]:
            pts = [[i + 1, v] for i, v in enumerate(red["cumulative_variance"])]
            figs += svg.line_chart(
                "Cumulative explained variance", {"kept": pts}, "components", "variance", y_zero=True
            )
        info = {
            "PCA": "yes" if red["pca"] else "no (concatenation only)",
            "target variance": red["target_variance"],
            "components kept": red["components"],
            "variance reached": red["variance_reached"],
            "concatenated dim": red["concat_dim"],
            "input dims": ", ".join(f"{k} {v}" for k, v in red["input_dims"].items()),
            "weights": ", ".join(f"{k} {v}" for k, v in red["weights"].items()),
            "fit rows": red["fit_rows"],
        }
        if red.get("fit_from"):
            info["fit from"] = red["fit_from"]
        out.append(
            f"<h3>reduce <span class='mut'>{_e(red['rel'])}</span></h3><div class='side'>{_kv_table(info)}"
            f"<div class='figs'>{figs}</div></div>"
        )
    return "".join(out)


def _mining_compare(minings: Sequence[Mapping[str, Any]]) -> str:
    keys = sorted({k for m in minings for k in m["settings"]})
    sel = [k for k in ("pairs", "pairs_with_negative", "pairs_with_zero", "selected", "selection_rate")]
    risk = [("share_above_positive", "above the positive"), ("share_percpos", f"above {minings[0]['thresholds']['percpos']:.0%} of the positive"),
            ("share_near_duplicate", "near-duplicate of the positive"), ("share_risky", "risky (either)")]  # fmt: skip
    head = "".join(f"<th>{_e(m['rel'])}</th>" for m in minings)
    rows = [f"<tr><th>{_e(k)}</th>" + "".join(f"<td class='n'>{_num(m['settings'].get(k))}</td>" for m in minings)
            + "</tr>" for k in keys]  # fmt: skip
    rows += [f"<tr><th>{_e(k)}</th>" + "".join(f"<td class='n'>{_num(m['selection'].get(k))}</td>" for m in minings)
             + "</tr>" for k in sel]  # fmt: skip
    rows += [f"<tr><th>{_e(label)}</th>" + "".join(f"<td class='n'>{_pct(m['risk'][k])}</td>" for m in minings)
             + "</tr>" for k, label in risk]  # fmt: skip
    return f"<h3>Side by side</h3><table><tr><th></th>{head}</tr>{''.join(rows)}</table>"


def _mining(minings: Sequence[Mapping[str, Any]], start: int) -> str:
    out = [_mining_compare(minings)] if len(minings) > 1 else []
    for k, m in enumerate(minings):
        risk = m["risk"]
        th = m["thresholds"]
        guards = "".join(
            f"<tr><td>{_e(g['label'])}</td><td class='id'>{_e(g['name'])}</td><td class='n'>{_num(g['removed'])}</td></tr>"
            for g in m["guards"]
        )
        risk_rows = {
            "negatives (with distances)": f"{risk['negatives']:,} ({risk['with_distances']:,})",
            "scoring above the positive, d(Q,D) < d(Q,PD)": _pct(risk["share_above_positive"]),
            f"scoring above {th['percpos']:.0%} of the positive (TopK-PercPos ceiling)": _pct(risk["share_percpos"]),
            f"near-duplicates of the positive, s(PD,D) ≥ {th['near_duplicate']}": _pct(risk["share_near_duplicate"]),
            "risky (either of the last two)": _pct(risk["share_risky"]),
            "pairs without a negative": risk["pairs_without_negative"],
            "suspected positives (pairs)": f"{risk['suspected']:,} ({risk['pairs_with_suspected']:,})",
            "negatives by source": ", ".join(f"{s} {n:,}" for s, n in risk["sources"].items()),
        }
        recorded = "".join(f"<tr><th>{_e(k2)}</th><td class='n'>{_num(v)}</td></tr>" for k2, v in m["recorded_risk"])
        figs = svg.histogram(
            "Distances of every mined negative",
            risk["hist_edges"],
            {"d(Q,D)": risk["hist"]["d_qd"], "d(Q,PD)": risk["hist"]["d_qp"], "d(PD,D)": risk["hist"]["d_pd"]},
            "cosine distance",
        )
        hm = m.get("hist_margin")
        if isinstance(hm, dict) and hm.get("edges") and hm.get("counts"):
            figs += svg.histogram(
                "Margin d(Q,D) − d(Q,PD) (stats.json)", hm["edges"], {"margin": hm["counts"]}, "margin"
            )
        if m.get("scatter"):
            figs += svg.scatter(
                "Queries, positives and negatives (first two PCA components, sampled pairs)", m["scatter"]
            )
        b = m["browser"]
        left = (
            f"{b['left_out']:,} of {b['total']:,} pairs left out: the page embeds the {len(b['pairs']):,} most risky "
            f"first, then a random draw (seed {b['seed']})."
            if b["left_out"]
            else f"All {b['total']:,} pairs are shown."
        )
        note = f"<p class='warn'>{_e(m['texts_note'])}</p>" if m.get("texts_note") else ""
        out.append(
            f"<h3 id='m-{_e(m['anchor'])}'>mine <span class='mut'>{_e(m['rel'])}</span></h3>"
            f"<div class='side'><div><h4>Strategy and settings</h4>{_kv_table(m['settings'])}</div>"
            f"<div><h4>Selection</h4>{_kv_table(m['selection'])}</div>"
            f"<div><h4>Candidates removed, by guard</h4><table><tr><th>guard</th><th>key</th><th>removed</th></tr>"
            f"{guards}</table></div></div>"
            f"<div class='side'><div><h4>False-negative risk (computed from every row)</h4>{_kv_table(risk_rows)}</div>"
            + (
                f"<div><h4>False-negative risk recorded by hnm mine</h4><table>{recorded}</table></div>"
                if recorded
                else ""
            )
            + f"</div><div class='figs'>{figs}</div>"
            f"<h4>Triplet browser</h4><p class='mut'>{_e(left)} Risk = max(s(Q,D) − {th['percpos']}·s(Q,PD), "
            f"s(PD,D) − {th['near_duplicate']}) with s = 1 − d: past 0 (red) the negative scores above "
            f"{th['percpos']:.0%} of the positive or is a near-duplicate of it, a likely false negative; yellow: a "
            f"candidate a false-negative guard set aside (a suspected positive, to review or relabel). Click a text "
            f"to see all of it.</p>{note}"
            f"<div class='browser' data-browser='{start + k}'><div class='controls'>"
            f"<input type='search' placeholder='search query text or id' aria-label='search'>"
            f"<label><input type='checkbox' class='flagged'> flagged only</label>"
            f"<label>sort <select class='sort'><option value='risk-desc'>most risky first</option>"
            f"<option value='risk-asc'>least risky first</option><option value='query'>query id</option>"
            f"<option value='sample'>sample order</option></select></label><span class='count mut'></span></div>"
            f"<table class='pairs'><thead><tr><th>query</th><th>positive</th><th>negatives and suspected positives</th>"
            f"<th data-sort='risk' title='click to reverse'>risk ⇅</th></tr></thead><tbody></tbody></table></div>"
        )
    return "".join(out)


def _training(trainings: Sequence[Mapping[str, Any]]) -> str:
    out = []
    for t in trainings:
        fig = svg.line_chart("Training loss", {"loss": t["loss_curve"]}, "step", "loss") if t["loss_curve"] else ""
        out.append(
            f"<h3>train-reranker <span class='mut'>{_e(t['rel'])}</span></h3><div class='side'>"
            f"<div><h4>Budget</h4>{_kv_table(t['budget'])}{_kv_table(t['progress'])}</div>"
            f"<div><h4>Examples used and skipped</h4>{_kv_table(t['examples'])}</div>"
            f"<div class='figs'>{fig or '<p class=mut>no loss curve recorded</p>'}</div></div>"
        )
    return "".join(out)


def _ranking(items: Sequence[Mapping[str, Any]] | None) -> str:
    if items is None:
        return "<p class='mut'>not recorded (an eval artifact from before rankings.jsonl: rerun hnm eval --force)</p>"
    lis = "".join(
        f"<li class='{'rel' if d['relevance'] > 0 else ''}'><span class='id'>{_e(d['doc_id'])}</span> "
        f"<span class='d'>{d['score']:.3f}</span>{' ✓' if d['relevance'] > 0 else ''} {_e(d['text'] or '')}</li>"
        for d in items
    )
    return f"<ol class='rank'>{lis}</ol>"


def _evaluation(evals: Sequence[Mapping[str, Any]]) -> str:
    out = []
    for ev in evals:
        metrics, base = ev["metrics"], ev["baseline"]
        fs = ev["first_stage"]
        head = "".join(f"<th>{_e(m)}</th>" for m in metrics)
        rows = []
        for r in ev["table"]:
            cells = []
            for m in metrics:
                cell = f"{r['mean'].get(m, 0):.4f}"
                if (r["seeds"] or 1) > 1:
                    cell += f" ± {r['std'].get(m, 0):.4f}"
                if not r["baseline"] and m in r["delta"]:
                    p = r["p_value"].get(m)
                    cls = "ok" if r["delta"][m] > 0 else "bad" if r["delta"][m] < 0 else "mut"
                    sig = " †" if p is not None and p < 0.05 else ""
                    cell += (
                        f"<br><span class='{cls}'>{r['delta'][m]:+.4f}</span> <span class='mut'>p={p:.3g}{sig}</span>"
                    )
                cells.append(f"<td class='n'>{cell}</td>")
            label = _e(r["name"]) + (" <span class='chip mut'>baseline</span>" if r["baseline"] else "")
            rows.append(
                f"<tr><td>{label}<div class='id'>{_e(r['kind'])}, {r['seeds']} seed(s)</div></td>{''.join(cells)}</tr>"
            )
        sig = ev["significance"]
        parts = [
            f"<h3>eval <span class='mut'>{_e(ev['rel'])}</span></h3>",
            f"<p>Split <b>{_e(ev['split'])}</b>, {_num(ev['queries'])} queries. First stage {_e(fs['method'])} "
            f"top-{_e(fs['top_k'])}: {_e(fs['ceiling_key'])} = <b>{_num(fs['ceiling'])}</b>, the ceiling of every "
            f"reranker (a positive outside the list is a miss).</p>",
            f"<table class='metrics'><tr><th>run</th>{head}</tr>{''.join(rows)}</table>",
            f"<p class='mut'>Differences against <b>{_e(base)}</b>; p from a paired {_e(sig.get('test'))} test "
            f"({_e(sig.get('trials'))} trials, seed {_e(sig.get('seed'))}); † p &lt; 0.05.</p>",
        ]
        bl = ev.get("by_length")
        if bl:
            rows_bl = "".join(
                f"<tr><td>{_e(name)}</td><td>{_e(g)}</td><td class='n'>{gd['queries']}</td>"
                + "".join(f"<td class='n'>{_num(gd['runs'][name].get(m))}</td>" for m in metrics)
                + "</tr>"
                for name in (r["name"] for r in ev["table"])
                for g, gd in bl["groups"].items()
                if name in gd["runs"]
            )
            parts.append(
                f"<h4>By document length (split at {_e(bl['split_tokens'])} whitespace tokens)</h4>"
                f"<table><tr><th>run</th><th>group</th><th>queries</th>{head}</tr>{rows_bl}</table>"
            )
        else:
            parts.append("<p class='mut'>Metrics by document length: not computed (hnm eval --by-length N).</p>")
        parts.append(f"<h4>Per query, against {_e(base)} ({_e(ev['primary'])})</h4>")
        runs = list(ev["wins_losses"])
        opened = next((r for r in runs if r != "first-stage"), runs[0] if runs else None)  # a reranker, not BM25
        for run, wl in ev["wins_losses"].items():
            items = []
            for q in wl["queries"]:
                cls = "bad" if q["kind"] == "loss" else "ok"
                rel = ", ".join(r["doc_id"] for r in q["relevant"]) or "–"
                items.append(
                    f"<div class='q-item'><b class='{cls}'>{q['delta']:+.3f}</b> "
                    f"<span class='id'>{_e(q['query_id'])}</span> {_e(q['query'] or '')} "
                    f"<span class='mut'>({q['before']:.3f} → {q['after']:.3f}; relevant: {_e(rel)})</span>"
                    f"<div class='cols'><div><h4>before: {_e(base)}</h4>{_ranking(q['top_before'])}</div>"
                    f"<div><h4>after: {_e(run)}</h4>{_ranking(q['top_after'])}</div></div></div>"
                )
            parts.append(
                f"<details class='wl'{' open' if run == opened else ''}><summary><b>{_e(run)}</b>: "
                f"<span class='ok'>{wl['wins']} wins</span>, <span class='bad'>{wl['losses']} losses</span>, "
                f"{wl['ties']} ties</summary>"
                + svg.delta_bars(f"{run} vs {base}", wl["deltas"], ev["primary"])
                + ("".join(items) or "<p class='mut'>no query changed</p>")
                + "</details>"
            )
        out.append("".join(parts))
    return "".join(out)


def _script_json(value: Any) -> str:
    """JSON safe inside a <script> element: no `</` or `<!--` can end it early."""
    return orjson.dumps(value).decode().replace("</", "<\\/").replace("<!--", "<\\!--")


def render_html(page: Mapping[str, Any]) -> str:
    """The report page for `page` (`sections.page`'s dict): one HTML document, nothing fetched."""
    body = []
    bodies = {
        "pipeline": lambda: _pipeline(page["pipeline"]),
        "vectors": lambda: _vectors(page["vectors"]),
        "mining": lambda: _mining(page["mining"], 0),
        "training": lambda: _training(page["training"]),
        "evaluation": lambda: _evaluation(page["evaluation"]),
    }
    for name in page["sections"]:
        body.append(f"<section id='{name}'><h2>{SECTION_TITLES[name]}</h2>{bodies[name]()}</section>")
    nav = "".join(f"<a href='#{n}'>{SECTION_TITLES[n]}</a>" for n in page["sections"])
    data = {"browsers": [m["browser"] for m in page["mining"]]}
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>{_e(page['title'])}</title><style>{CSS}</style></head><body>"
        f"<header><h1>{_e(page['title'])}</h1><div class='meta'>generated {_e(page['generated_at'])} by hnm "
        f"{_e(page['version'])}</div><nav>{nav}</nav></header><pre id='js-errors'></pre>"
        f"<main>{''.join(body)}</main>"
        f"<script type='application/json' id='hnm-data'>{_script_json(data)}</script>"
        f"<script>{JS}</script></body></html>\n"
    )
