"""`tuco report` in a real browser: headless Chromium, driven over the DevTools protocol on a pipe
(tests/fixtures/chromium.py). The page must load from a file:// URL with no console error or warning and no
request beyond itself, and every figure must render with a real size.

Chromium comes from Debian: ``apt-get install -y --no-install-recommends chromium``. Without it these tests skip
and say so, or fail under ``TUCO_REQUIRE_CHROMIUM=1`` (for CI, which installs it). ``TUCO_UPDATE_DOCS=1`` also
writes docs/report_example.html and docs/figures/report_example.png.
"""

import os
import shutil
import struct
from pathlib import Path

import pytest

from tuco_kernels import report

from .fixtures.chromium import Chromium, find_chromium
from tests.fixtures.report_data import make_rows, write_example_page, write_scores

CHROMIUM = find_chromium()
MISSING = ("Chromium is not installed (apt-get install -y --no-install-recommends chromium, "
           "or point TUCO_CHROMIUM at a Chrome/Chromium binary)")
ROOT = Path(__file__).resolve().parents[1]
UPDATE_DOCS = os.environ.get("TUCO_UPDATE_DOCS") == "1"

FIGURES_JS = """
Array.from(document.querySelectorAll('figure svg, img')).map(el => {
  const r = el.getBoundingClientRect();
  return {tag: el.tagName.toLowerCase(), label: el.getAttribute('aria-label') || el.getAttribute('alt'),
          width: r.width, height: r.height,
          drawn: el.tagName.toLowerCase() === 'img' ? (el.complete && el.naturalWidth > 0 ? 1 : 0)
                 : Array.from(el.querySelectorAll('path, use, rect, line, polyline'))
                        .filter(s => { const b = s.getBBox(); return b.width > 0 || b.height > 0; }).length,
          texts: Array.from(el.querySelectorAll('text')).filter(t => t.getBBox().width > 0).length};
})
"""
LAYOUT_JS = """({
  overflow: document.documentElement.scrollWidth - document.documentElement.clientWidth,
  summaryRows: document.querySelectorAll('section:nth-of-type(1) tbody tr').length,
  tokens: document.querySelectorAll('.tokmap .tok').length,
  colouredTokens: Array.from(document.querySelectorAll('.tokmap .tok:not(.na)'))
                   .filter(t => getComputedStyle(t).backgroundColor !== 'rgba(0, 0, 0, 0)').length,
  sections: Array.from(document.querySelectorAll('h2')).map(h => h.textContent),
})"""


@pytest.fixture(scope="module")
def browser():
    if CHROMIUM is None:
        if os.environ.get("TUCO_REQUIRE_CHROMIUM") == "1":      # CI installs it: a skip there would hide a failure
            pytest.fail(f"TUCO_REQUIRE_CHROMIUM=1 but {MISSING}")
        pytest.skip(MISSING)
    with Chromium(CHROMIUM, width=1280, height=900) as b:
        yield b


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", data[16:24])


def _save_for_docs(shot: Path, target: Path) -> None:
    """The screenshot, reduced to a 256-colour palette (a third of the bytes; text stays crisp) when Pillow is there."""
    try:
        from PIL import Image
    except ImportError:
        shutil.copyfile(shot, target)
        return
    with Image.open(shot) as im:
        im.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(
            target, optimize=True)


def test_example_page_in_chromium(browser, tmp_path):
    page = write_example_page(tmp_path / "report_example.html", tmp_path)
    browser.open(page.as_uri())
    assert browser.problems() == []
    assert browser.requests() == [page.as_uri()]                    # nothing fetched beyond the page itself
    figures = browser.evaluate(FIGURES_JS)
    assert [f["label"] for f in figures] == ["TuCo histograms, one panel per group", "TuCo kernel densities per group",
                                             "TuCo against prompt length per group",
                                             "Mean cumulative beta profile per group"]
    for f in figures:
        assert f["width"] > 300 and f["height"] > 200, f
        assert f["drawn"] > 20 and f["texts"] > 10, f                 # bars/lines/ticks and labels laid out
    layout = browser.evaluate(LAYOUT_JS)
    assert layout["overflow"] <= 0, "the page scrolls sideways at 1280 px"
    assert layout["summaryRows"] == 3
    assert layout["tokens"] > 100 and layout["colouredTokens"] > 0.9 * layout["tokens"]
    assert layout["sections"][:5] == ["Summary", "Separation between groups (AUC)", "Distribution of TuCo",
                                      "TuCo against prompt length", "Cumulative β profile over layers"]
    assert layout["sections"][-1] == "Score files and run metadata"
    assert browser.evaluate("!document.querySelector('details.meta-fold').open")     # the metadata is folded
    clipped = browser.evaluate("Array.from(document.querySelectorAll('.prompt'))"
                               ".filter(e => e.scrollHeight > e.clientHeight + 1 || e.scrollWidth > e.clientWidth + 1)"
                               ".length")
    assert clipped == 0, "a prompt's text is cut off inside its cell"
    shot = tmp_path / "report_example.png"
    width, height = browser.screenshot(shot)
    assert _png_size(shot) == (width, height) and width == 1280 and height > 3000
    if UPDATE_DOCS:
        shutil.copyfile(page, ROOT / "docs" / "report_example.html")
        _save_for_docs(shot, ROOT / "docs" / "figures" / "report_example.png")


def test_figure_files_beside_the_page_render_on_their_own(browser, tmp_path):
    """Each figure's standalone SVG opens in the browser with no error and draws; its PNG has the figure's size."""
    page = write_example_page(tmp_path / "report.html", tmp_path)
    folder = report.figures_folder(page)
    svgs = sorted(folder.glob("*.svg"))
    assert [p.stem for p in svgs] == ["beta_profiles", "tuco_densities", "tuco_histograms", "tuco_vs_length"]
    for svg in svgs:
        browser.open(svg.as_uri())
        assert browser.problems() == [], svg.name
        drawn = browser.evaluate("Array.from(document.querySelectorAll('path, use, rect, line'))"
                                 ".filter(s => { const b = s.getBBox(); return b.width > 0 || b.height > 0; }).length")
        assert drawn > 20, svg.name
        shot = tmp_path / f"{svg.stem}-shot.png"
        width, height = browser.screenshot(shot)
        assert _png_size(shot) == (width, height)
        w, h = _png_size(svg.with_suffix(".png"))
        assert w > 600 and h > 300, (svg.name, w, h)


def test_narrow_window_keeps_the_page_readable(browser, tmp_path):
    page = write_example_page(tmp_path / "r.html", tmp_path)
    browser.send("Emulation.setDeviceMetricsOverride", {"width": 760, "height": 900, "deviceScaleFactor": 1,
                                                        "mobile": False}, session=browser.session)
    try:
        browser.open(page.as_uri())
        assert browser.problems() == []
        assert browser.evaluate(LAYOUT_JS)["overflow"] <= 0      # wide tables scroll in their own box
        assert all(f["width"] <= 760 for f in browser.evaluate(FIGURES_JS))
    finally:
        browser.send("Emulation.setDeviceMetricsOverride", {"width": 1280, "height": 900, "deviceScaleFactor": 1,
                                                            "mobile": False}, session=browser.session)


def test_hostile_text_runs_nothing(browser, tmp_path):
    rows = make_rows("chat", 6, seed=2, token_maps=6)
    evil = '<script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2">'
    rows[0]["text"] = evil
    rows[1]["tokens"] = ["<script>window.__pwned=3</script>"] + rows[1]["tokens"][1:]
    for r in rows:
        r["source"] = '<img src=y onerror="window.__pwned = 4">'
    path = write_scores(rows, tmp_path / "h.jsonl", meta={"note": evil})
    out = report.write_report(report.load_scores([path], group="source"), tmp_path / "h.html", top=6)
    browser.open(out.as_uri())
    assert browser.problems() == []
    assert browser.evaluate("window.__pwned === undefined && document.querySelectorAll('script, img').length === 0")
    assert browser.evaluate(f"document.body.innerText.includes({evil!r})")     # shown as text
    assert browser.requests() == [out.as_uri()]


def test_the_checks_see_a_broken_page(browser, tmp_path):
    """Negative control: an external image, a missing file, a console warning, an exception, an empty figure."""
    bad = tmp_path / "bad.html"
    bad.write_text('<!DOCTYPE html><html><head><meta charset="utf-8"><title>b</title></head><body>'
                   '<img src="https://example.invalid/x.png" alt="remote"><img src="missing.png" alt="missing">'
                   '<script>console.warn("w"); throw new Error("boom")</script>'
                   '<figure><svg width="0" height="0"></svg></figure></body></html>')
    browser.open(bad.as_uri())
    problems = "\n".join(browser.problems())
    assert "console.warning: w" in problems and "Uncaught Error: boom" in problems
    assert "ERR_FILE_NOT_FOUND" in problems
    assert "https://example.invalid/x.png" in browser.requests()
    figures = browser.evaluate(FIGURES_JS)
    assert [f["drawn"] for f in figures] == [0, 0, 0] and figures[2]["width"] == 0
