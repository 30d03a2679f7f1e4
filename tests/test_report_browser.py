"""`hnm report` in a real browser: headless Chromium opens the report of the bundled example's demo run.

The run is `make demo`'s chain (embed, reduce, mine, train-reranker, eval with the untuned and the tuned model, RRF)
on examples/cloud-docs, made cheap: `hash:` encoders and a tiny BERT built offline, so it needs no weights. The
page must render every section, its triplet browser's search must filter rows, the console must stay clean, no
request may leave the file, and a screenshot must not be blank.

The browser is Debian's `chromium` (`make test` installs it and the `report` extra's Playwright when missing),
driven by Playwright pointed at that executable; without Playwright, by the browser's own `--dump-dom` and
`--screenshot`, with the search given in the page's `#search=` link. The test skips only when no Chromium is found.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
from pathlib import Path

import orjson
import pytest
from conftest import EXAMPLE
from tiny_models import build_tiny_bert

pytestmark = pytest.mark.slow

SECTIONS = ("pipeline", "vectors", "mining", "training", "evaluation")


def find_chromium() -> str | None:
    """The Chromium executable: $HNM_CHROMIUM, Debian's binary (without its wrapper script), or one on PATH."""
    candidates = [os.environ.get("HNM_CHROMIUM"), "/usr/lib/chromium/chromium"]
    candidates += [shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")]
    return next((c for c in candidates if c and os.access(c, os.X_OK)), None)


@pytest.fixture(scope="module")
def demo_report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The report of a cheap `make demo` run on the bundled example."""
    from typer.testing import CliRunner

    from hnm_cli.cli import app

    root = tmp_path_factory.mktemp("demo")
    texts = [r.get("title", "") + " " + r["text"] for r in _jsonl(EXAMPLE / "corpus.jsonl")]
    base = build_tiny_bert(root / "tiny-bert", words=texts + [r["text"] for r in _jsonl(EXAMPLE / "queries.jsonl")])
    run, data = root / "runs" / "cloud-docs", EXAMPLE
    steps = [
        ["embed", "--data", data, "--out", run / "embed", "--model", "hash:32", "--model", "hash:16"],
        ["reduce", "--embeddings", run / "embed", "--out", run / "reduce"],
        ["mine", "--vectors", run / "reduce", "--data", data, "--split", "train", "--out", run / "mine",
         "--num-negatives", "3", "--fallback", "next", "--fill", "short"],
        ["train-reranker", "--mined", run / "mine", "--data", data, "--base-model", base, "--out", run / "reranker",
         "--kind", "bi-encoder", "--loss", "mnrl", "--max-steps", "4", "--batch-size", "8", "--max-length", "32"],
        ["eval", "--data", data, "--split", "test", "--out", run / "eval", "--fuse", "rrf", "--model", f"base={base}",
         "--model", f"tuned={run / 'reranker'}", "--baseline", "base", "--top-k", "20", "--max-length", "32",
         "--by-length", "60"],
        ["report", run],
    ]  # fmt: skip
    runner = CliRunner()
    for step in steps:
        argv = [str(a) for a in step] + ([] if step[0] == "report" else ["-q"])
        result = runner.invoke(app, argv)
        assert result.exit_code == 0, (step[0], result.output)
    page = run / "report.html"
    assert result.stdout.strip() == str(page)
    return page


def _jsonl(path: Path) -> list[dict]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]


def _not_blank(png: bytes) -> None:
    from PIL import Image

    image = Image.open(io.BytesIO(png)).convert("RGB")
    small = image.resize((200, max(1, 200 * image.height // image.width)))
    colors = small.getcolors(maxcolors=1 << 16) or []
    non_white = sum(n for n, c in colors if sum(c) < 720)
    assert len(colors) > 30, "the screenshot has almost no colours: a blank page"
    assert non_white > 0.02 * small.width * small.height, "the screenshot is almost all white"


def _a_query_of(page: Path) -> tuple[str, str, int]:
    """(a sampled query's id, its text, how many sampled pairs have that query) from the page's data."""
    data = orjson.loads(re.search(r"id='hnm-data'>(.*?)</script>", page.read_text(), re.S)[1])  # type: ignore[index]
    browser = data["browsers"][0]
    qid = browser["pairs"][len(browser["pairs"]) // 2]["query_id"]
    return qid, browser["queries"][qid], sum(p["query_id"] == qid for p in browser["pairs"])


def test_report_in_headless_chromium(demo_report: Path, tmp_path: Path) -> None:
    chromium = find_chromium()
    if chromium is None:
        pytest.skip("no Chromium found (Debian: apt-get install chromium; `make test` installs it)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        _check_with_the_browser_alone(chromium, demo_report, tmp_path)
        return
    if os.environ.get("HNM_BROWSER_DRIVER") == "cli":
        _check_with_the_browser_alone(chromium, demo_report, tmp_path)
        return
    _check_with_playwright(chromium, demo_report, tmp_path)


def _check_with_playwright(chromium: str, page_path: Path, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    qid, qtext, matching = _a_query_of(page_path)
    problems: list[str] = []
    requests: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("console", lambda m: problems.append(m.text) if m.type in ("error", "warning") else None)
            page.on("pageerror", lambda e: problems.append(str(e)))
            page.on("request", lambda r: requests.append(r.url) if not r.url.startswith("file:") else None)
            page.goto(page_path.as_uri())
            page.wait_for_function("document.body.dataset.ready === '1'", timeout=10_000)

            for name in SECTIONS:
                section = page.locator(f"section#{name}")
                assert section.is_visible(), name
                assert section.locator("table").count() > 0, name
            for name in ("vectors", "mining", "training", "evaluation"):
                assert page.locator(f"section#{name} svg.fig").count() > 0, f"{name} has no figure"
            assert page.locator("#pipeline .card").count() == 5
            assert page.locator("#evaluation details.wl").count() == 4  # tuned, base+rrf, tuned+rrf vs base, + first

            rows = page.locator("#mining .browser tr.pair")
            total = rows.count()
            assert total > 20
            visible = page.locator("#mining .browser tr.pair:not([hidden])")
            assert visible.count() == total
            search = page.locator("#mining .browser input[type=search]")
            search.fill(qtext)
            assert visible.count() == matching
            assert all(qid in visible.nth(i).inner_text() for i in range(matching))
            search.fill(qid.upper())  # ids match too, case-insensitively
            assert visible.count() == matching
            search.fill("no query says this")
            assert visible.count() == 0
            assert page.locator("#mining .browser .count").inner_text() == f"showing 0 of {total} sampled pairs"
            search.fill("")
            assert visible.count() == total

            page.locator("#mining .browser input.flagged").check()
            flagged = page.locator("#mining .browser tr.pair[data-flagged='1']").count()
            assert visible.count() == flagged
            page.locator("#mining .browser input.flagged").uncheck()
            page.locator("#mining .browser select.sort").select_option("risk-asc")
            risks = [float(x) if x != "–" else -1e9 for x in visible.locator("td.n").all_inner_texts()]
            assert risks == sorted(risks)

            opened = page.locator("#evaluation details.wl[open]")  # the first reranker's wins and losses
            assert opened.count() == 1 and "tuned" in opened.locator("summary").inner_text()
            # the queries that changed, each with its top documents before and after (first-stage vs base has many)
            assert page.locator("#evaluation .q-item ol.rank").count() > 0
            png = page.screenshot(full_page=False)
            (tmp_path / "report.png").write_bytes(png)
        finally:
            browser.close()
    assert problems == []
    assert requests == []
    _not_blank(png)


def _check_with_the_browser_alone(chromium: str, page_path: Path, tmp_path: Path) -> None:
    """No Playwright: the browser's own --dump-dom (after the script ran) and --screenshot."""
    qid, _qtext, matching = _a_query_of(page_path)
    flags = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=5000"]

    def dom(fragment: str) -> str:
        out = subprocess.run([*flags, "--dump-dom", page_path.as_uri() + fragment], capture_output=True, timeout=120)
        assert out.returncode == 0, out.stderr.decode(errors="replace")[-2000:]
        return out.stdout.decode()

    full = dom("")
    assert 'data-ready="1"' in full, "the page's script did not finish"
    assert re.search(r'<pre id="js-errors"></pre>', full), "the page's script reported an error"
    for name in SECTIONS:
        assert f'<section id="{name}">' in full, name
    total = len(re.findall(r'<tr class="pair"', full))
    assert total > 20 and 'hidden=""' not in full
    searched = dom(f"#search={qid}")
    shown = [r for r in re.findall(r'<tr class="pair"[^>]*>', searched) if "hidden" not in r]
    assert len(shown) == matching
    nothing = dom("#search=no%20query%20says%20this")
    assert not [r for r in re.findall(r'<tr class="pair"[^>]*>', nothing) if "hidden" not in r]
    shot = tmp_path / "report.png"
    out = subprocess.run([*flags, "--window-size=1280,900", f"--screenshot={shot}", page_path.as_uri()],
                         capture_output=True, timeout=120)  # fmt: skip
    assert out.returncode == 0 and shot.is_file()
    _not_blank(shot.read_bytes())
