"""`tuco report`: reading every score-file form, grouping, statistics, flagged rows, escaping, self-containment
and the CLI end to end. Inputs are synthetic rows with the shapes `tuco score` writes (tests/fixtures/report_data.py);
no model runs. The page in a real browser: tests/test_report_browser.py."""

import itertools
import json
import re
from pathlib import Path

import numpy as np
import pytest

from tuco_kernels import files, report
from tuco_kernels.cli import build_parser, main
from tuco_kernels.errors import TucoError

from tests.fixtures.report_data import LAYERS, flag, make_rows, run_meta, write_scores

ROOT = Path(__file__).resolve().parents[1]
EXTERNAL = re.compile(r"""(?:src|href|xlink:href|action|poster|data)\s*=\s*["']?\s*(?:[a-z][a-z0-9+.-]*:)?//""", re.I)


def _rows(n=12):
    rows = make_rows("chat", n, seed=1, token_maps=3)
    rows[5] = flag(rows[5])
    return rows


def _page(table, **kw):
    return report.render_html(table, generated="2026-01-01", **kw)


# ---------------------------------------------------------------------------------------------------------------
# reading
# ---------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("form", ["csv", "csv-flat", "jsonl", "parquet"])
def test_every_input_form(tmp_path, form):
    rows = _rows()
    suffix = form.split("-")[0]
    meta = run_meta("chat")
    path = write_scores(rows, tmp_path / f"chat.{suffix}", flat=form == "csv-flat", meta=meta,
                        sidecar=form != "parquet")   # Parquet: metadata only inside the file
    if form == "csv-flat":
        header = path.read_text().splitlines()[0].split(",")
        assert "beta_0" in header and f"beta_{LAYERS - 1}" in header and "beta" not in header
    table = report.load_scores([path])
    got = table.rows
    assert table.groups == ["chat"] and len(got) == len(rows)
    assert list(got["id"]) == [r["id"] for r in rows]
    ok = [i for i, r in enumerate(rows) if np.isfinite(r["tuco"])]
    np.testing.assert_allclose(got["tuco"].to_numpy()[ok], [rows[i]["tuco"] for i in ok], rtol=0, atol=1e-15)
    assert np.isnan(got["tuco"][5]) and got["flagged"][5] and not got["flagged"][0]
    for i in range(len(rows)):
        np.testing.assert_allclose(got["beta"][i], rows[i]["beta"], atol=1e-15)
        assert got["text"][i] == rows[i]["text"]
    assert got["tokens"][0] == rows[0]["tokens"]
    assert np.isnan(got["token_tuco"][0][0])                 # JSON null / NaN -> NaN
    np.testing.assert_allclose(got["token_tuco"][0][1:], rows[0]["token_tuco"][1:], atol=1e-15)
    assert got["token_tuco"][4] is None and got["tokens"][4] is None
    assert table.files[0].meta == meta
    assert table.files[0].meta_sources == (["Parquet key-value metadata"] if form == "parquet"
                                          else ["chat." + suffix + ".meta.json"])


def test_parquet_metadata_keys_and_sidecar_named_by_stem(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pylist([{"id": "a", "tuco": 0.2}]).replace_schema_metadata(
        {b"models": b'{"pretrained": "P", "finetuned": "F"}', b"dtype": b"bfloat16"})
    pq.write_table(table, tmp_path / "s.parquet")
    (tmp_path / "s.meta.json").write_text(json.dumps({"date": "2026-11-22"}))   # <stem>.meta.json also found
    f = report.load_scores([tmp_path / "s.parquet"]).files[0]
    assert f.meta == {"date": "2026-11-22", "models": {"pretrained": "P", "finetuned": "F"}, "dtype": "bfloat16"}
    assert "pandas" not in f.meta


def test_minimal_file_and_csv_text_kept_verbatim(tmp_path):
    path = tmp_path / "bare.csv"
    path.write_text("tuco,text\n0.1,NA\n0.3,\n0.2,null\n")
    table = report.load_scores([path])
    assert list(table.rows["id"]) == ["0", "1", "2"]           # no id column: the row index
    assert list(table.rows["text"]) == ["NA", "", "null"]       # no NA guessing on prompt text
    assert not table.has("beta") and not table.has("token_tuco") and not table.has("output_co")
    page = _page(table)
    assert "Cumulative β profile" not in page and "Token maps" not in page and "OutputCo" not in page
    assert "Only one group: no AUC" in page


def test_ids_shown_without_text(tmp_path):
    rows = [{k: v for k, v in r.items() if k not in ("text", "tokens", "token_tuco")} for r in _rows()]
    page = _page(report.load_scores([write_scores(rows, tmp_path / "a.jsonl")]))
    assert "no <code>text</code> column" in page and rows[0]["id"] in page and "<th>prompt</th>" not in page


def test_token_maps_without_token_strings(tmp_path):
    rows = _rows()
    for r in rows:
        r.pop("tokens", None)
    page = _page(report.load_scores([write_scores(rows, tmp_path / "a.jsonl")]), top=12)
    assert "Token maps" in page and "positions are shown as [i]" in page and ">[1]</span>" in page


# ---------------------------------------------------------------------------------------------------------------
# grouping
# ---------------------------------------------------------------------------------------------------------------

def test_one_group_per_file_names_and_stems(tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "y").mkdir()
    a = write_scores(make_rows("web_text", 5, seed=1), tmp_path / "x" / "s.jsonl")
    b = write_scores(make_rows("chat", 4, seed=2), tmp_path / "y" / "s.csv")
    assert report.load_scores([a, b]).groups == ["x/s", "y/s"]        # equal stems: the folder tells them apart
    (tmp_path / "z" / "x").mkdir(parents=True)
    c = write_scores(make_rows("chat", 2, seed=3), tmp_path / "z" / "x" / "s.csv")
    assert report.load_scores([a, b, c]).groups == [str(a), "y/s", str(c)]   # still ambiguous: the paths
    with pytest.raises(TucoError, match="the same file is given twice"):
        report.load_scores([a, a])
    table = report.load_scores([a, b], names="web, chat")
    assert table.groups == ["web", "chat"]
    assert table.rows.groupby("group", sort=False).size().to_dict() == {"web": 5, "chat": 4}
    with pytest.raises(TucoError, match="--names gives 1 name"):
        report.load_scores([a, b], names=["one"])
    with pytest.raises(TucoError, match="--names names the files"):
        report.load_scores([a, b], group="source", names="p,q")


def test_group_by_column(tmp_path):
    rows = ([{**r, "source": "web"} for r in make_rows("web_text", 6, seed=1)]
            + [{**r, "source": "chat"} for r in make_rows("chat", 5, seed=2)])
    rows[2]["source"] = None
    a = write_scores(rows[:8], tmp_path / "a.parquet")
    b = write_scores(rows[8:], tmp_path / "b.csv")
    table = report.load_scores([a, b], group="source")
    assert table.groups == ["web", "(missing)", "chat"]
    assert table.rows.groupby("group", sort=False).size().to_dict() == {"web": 5, "(missing)": 1, "chat": 5}
    assert report.auc_pairs(table, None) == [("web", "(missing)")]
    assert report.auc_pairs(table, ["chat,web"]) == [("chat", "web")]


def test_group_column_missing_names_file_and_column(tmp_path):
    a = write_scores([{**r, "source": "w"} for r in make_rows("web_text", 3, seed=1)], tmp_path / "a.jsonl")
    b = write_scores(make_rows("chat", 3, seed=2), tmp_path / "b.jsonl")
    with pytest.raises(TucoError, match=r"b\.jsonl: no column 'source' to group by \(--group\)"):
        report.load_scores([a, b], group="source")


# ---------------------------------------------------------------------------------------------------------------
# statistics
# ---------------------------------------------------------------------------------------------------------------

def _brute_auc(a, b):
    return sum((x > y) + 0.5 * (x == y) for x, y in itertools.product(a, b)) / (len(a) * len(b))


def test_auc_known_values_and_brute_force():
    assert report.auc([1, 2, 3], [0, 2]) == 0.75                # 4 wins + one tie of 6 pairs
    assert report.auc([5, 6], [1, 2]) == 1.0 and report.auc([1, 2], [5, 6]) == 0.0
    assert report.auc([1, 1], [1]) == 0.5
    rng = np.random.default_rng(0)
    for _ in range(20):
        a = rng.integers(0, 8, rng.integers(1, 30)) / 8          # many ties
        b = rng.integers(0, 8, rng.integers(1, 30)) / 8
        assert report.auc(a, b) == pytest.approx(_brute_auc(a, b), abs=1e-12)
        assert report.auc(a, b) + report.auc(b, a) == pytest.approx(1.0, abs=1e-12)


def test_bootstrap_interval_seeded_and_contains_estimate():
    rng = np.random.default_rng(3)
    a, b = rng.normal(0.2, 0.05, 80), rng.normal(0.16, 0.05, 70)
    est = report.auc(a, b)
    lo, hi = report.bootstrap_auc(a, b, n_boot=500, seed=7)
    assert lo < est < hi and 0.0 <= lo and hi <= 1.0 and hi - lo < 0.3
    assert report.bootstrap_auc(a, b, n_boot=500, seed=7) == (lo, hi)       # same seed: same interval
    assert report.bootstrap_auc(a, b, n_boot=500, seed=8) != (lo, hi)
    # the counting shortcut gives exactly the AUC of each resample drawn the plain way with the same generator
    a, b = np.round(a, 2), np.round(b, 2)                                    # with ties
    rng = np.random.default_rng(11)
    plain = [report.auc(a[rng.integers(0, a.size, a.size)], b[rng.integers(0, b.size, b.size)]) for _ in range(200)]
    np.testing.assert_allclose(report.bootstrap_aucs(a, b, n_boot=200, seed=11), plain, rtol=0, atol=1e-15)
    # the resampling is of each group on its own: a constant group gives an interval of width 0 only if both are
    assert report.bootstrap_auc([0.3] * 5, [0.1] * 5, n_boot=50) == (1.0, 1.0)


def test_flagged_rows_counted_and_left_out(tmp_path):
    rows = make_rows("chat", 10, seed=4)
    rows[1] = flag(rows[1])                                        # NaN with status + error
    rows[2] = {**rows[2], "status": "error", "error": "overflow in layer 7"}   # finite TuCo but marked
    rows[3] = {**rows[3], "tuco": 1.7}                             # impossible value
    rows[4] = {**rows[4], "tuco": None}                            # null in JSONL
    path = write_scores(rows, tmp_path / "f.jsonl")
    table = report.load_scores([path])
    assert list(table.rows["flagged"]) == [False, True, True, True, True] + [False] * 5
    assert "overflow in layer 7" in table.rows["flag_reason"][2] and "outside [0, 1]" in table.rows["flag_reason"][3]
    s = report.summarise(table)[0]
    good = [rows[i]["tuco"] for i in (0, 5, 6, 7, 8, 9)]
    assert (s["n"], s["flagged"], s["valid"]) == (10, 4, 6)
    assert s["mean"] == pytest.approx(np.mean(good), abs=1e-15) and s["median"] == pytest.approx(np.median(good))
    assert s["sd"] == pytest.approx(np.std(good, ddof=1))
    page = _page(table, top=20)
    assert "Flagged rows (4)" in page and "overflow in layer 7" in page
    top = page[page.index("<h3>Top"):page.index("<h3>Bottom")]
    assert rows[2]["id"] not in top and rows[0]["id"] in top         # flagged rows never ranked


def test_degenerate_inputs_still_give_a_page(tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_text("id,tuco,text\n")
    broken = write_scores([flag(r) for r in make_rows("chat", 3, seed=1)], tmp_path / "broken.jsonl")
    one = write_scores(make_rows("web_text", 1, seed=2), tmp_path / "one.jsonl")
    table = report.load_scores([empty, broken, one])
    assert [s["valid"] for s in report.summarise(table)] == [0, 0, 1]
    page = _page(table)
    assert "No AUC: AUC of &#x27;empty&#x27; above &#x27;broken&#x27;: group &#x27;empty&#x27; has no rows" in page
    assert "(no valid rows)" in page and "Flagged rows (3)" in page
    with pytest.raises(TucoError, match="group 'broken' has no rows with a valid TuCo"):
        _page(table, auc=["one,broken"])


def test_extremes_order_and_ties(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("id,tuco\na,0.2\nb,0.5\nc,0.2\nd,nan\ne,0.1\nf,0.5\n")
    top, bottom = report.extremes(report.load_scores([path]), 3)
    assert list(top["id"]) == ["b", "f", "a"] and list(bottom["id"]) == ["e", "a", "c"]   # ties: file order


def test_profile_band_and_mixed_lengths(tmp_path):
    rows = make_rows("chat", 6, seed=5)
    rows[0]["beta"] = rows[0]["beta"][:10]                           # a row from another model: left out
    table = report.load_scores([write_scores(rows, tmp_path / "p.jsonl")])
    p = report.beta_profile(table, "p")
    stack = np.array([r["beta"] for r in rows[1:]])
    assert p.n == 5 and p.left_out == 1 and p.mean.shape == (LAYERS,)
    np.testing.assert_allclose(p.mean, stack.mean(0))
    np.testing.assert_allclose(p.half_width, 1.96 * stack.std(0, ddof=1) / np.sqrt(5))
    page = _page(table)
    assert "95% confidence interval of that mean" in page and "(p: 1)" in page


# ---------------------------------------------------------------------------------------------------------------
# the page
# ---------------------------------------------------------------------------------------------------------------

HOSTILE = '<script>alert("x")</script><img src=x onerror=alert(1)> & "quotes" \'too\''


def test_hostile_strings_escaped(tmp_path):
    rows = make_rows("chat", 4, seed=6, token_maps=4)
    rows[0]["text"] = HOSTILE
    rows[0]["id"] = "<b>id</b>"
    rows[1]["tokens"] = ["<script>", "</div>", *rows[1]["tokens"][2:]]
    rows[2] = {**flag(rows[2]), "error": "</td><script>bad()</script>"}
    for r in rows:
        r["source"] = "<i>grp</i> $x$"
    meta = {"models": {"pretrained": "<script>m()</script>"}}
    table = report.load_scores([write_scores(rows, tmp_path / "h.jsonl", meta=meta)], group="source")
    page = _page(table, top=3, title="<title>T</title>")
    assert "<script" not in page.lower() and "<img" not in page.lower() and "<b>id" not in page
    assert "<i>grp" not in page and "<title>T" not in page
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&lt;img src=x onerror=alert(1)&gt; &amp; " in page
    assert "&lt;/td&gt;&lt;script&gt;bad()&lt;/script&gt;" in page and "&lt;script&gt;m()" in page


def test_page_is_self_contained(tmp_path):
    paths = [write_scores(make_rows(n, 20, seed=i, token_maps=5), tmp_path / f"{n}.parquet", meta=run_meta(n))
             for i, n in enumerate(("web_text", "chat", "harmful"))]
    page = _page(report.load_scores(paths))
    assert not EXTERNAL.findall(page)
    assert "http://" not in page and "https://" not in page       # not even SVG namespace URIs
    for tag in ("<script", "<link", "<iframe", "<object", "<embed", "@import", "@font-face"):
        assert tag not in page.lower(), tag
    assert not re.findall(r"url\(\s*['\"]?(?!#)", page)            # only url(#clip-path) inside the page
    assert page.count("<svg") == 4 and page.count("</svg>") == 4
    assert len(set(re.findall(r'\sid="([^"]+)"', page))) == len(re.findall(r'\sid="([^"]+)"', page))  # ids unique
    assert "Band: 95% confidence interval" in page and "2,000 resamples" in page and "seed 0" in page


def test_a_page_for_a_paper(tmp_path):
    """The pair and the prompt files first, then the results; the ~45 rows of run metadata folded at the end; every
    figure also as SVG and PNG beside the page; text cells wrap in full; TuCo against prompt length."""
    import xml.etree.ElementTree as ElementTree

    paths = [write_scores(make_rows(n, 30, seed=i, token_maps=4), tmp_path / f"{n}.csv", meta=run_meta(n))
             for i, n in enumerate(("web_text", "chat"))]
    table = report.load_scores(paths)
    out = report.write_report(table, tmp_path / "paper.html", generated="2026-01-01")
    page = out.read_text(encoding="utf-8")
    header = page[page.index("<header>"):page.index("</header>")]
    assert "pre-trained <b>google/gemma-3-270m (Q4_K_M, dequantized)</b> → fine-tuned <b>gemma-3-270m-chat-lora</b>" \
        in header
    assert "Prompts: <code>web_text.jsonl</code>, <code>chat.jsonl</code>." in header
    sections = re.findall(r"<h2>([^<]+)</h2>", page)
    assert sections[:5] == ["Summary", "Separation between groups (AUC)", "Distribution of TuCo",
                            "TuCo against prompt length", "Cumulative β profile over layers"]
    assert sections[-1] == "Score files and run metadata"
    tail = page[page.index("<h2>Score files and run metadata</h2>"):]
    assert '<details class="meta-fold"><summary>Run metadata (' in tail and "versions.torch" in tail
    assert "versions.torch" not in page[:page.index("<h2>Score files and run metadata</h2>")]
    assert "max-height" not in page[page.index(".prompt {"):page.index("}", page.index(".prompt {"))]
    folder = report.figures_folder(out)
    assert folder == tmp_path / "paper_figures"
    names = sorted(p.name for p in folder.iterdir())
    assert names == sorted(f"{n}.{ext}" for n in ("tuco_histograms", "tuco_densities", "tuco_vs_length",
                                                  "beta_profiles") for ext in ("svg", "png"))
    for svg in folder.glob("*.svg"):
        assert ElementTree.parse(svg).getroot().tag.endswith("svg")        # a standalone, well-formed SVG
    for png in folder.glob("*.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000


def test_length_figure_names_each_groups_rank_correlation(tmp_path):
    import pandas as pd

    rows = make_rows("chat", 40, seed=3)
    for i, r in enumerate(rows):          # TuCo rising with length, exactly monotone: rho = 1
        r["n_tokens"] = 10 + 3 * i
        r["tuco"] = 0.1 + 0.004 * i
    table = report.load_scores([write_scores(rows, tmp_path / "c.jsonl")])
    figure = next(f for f in report.build_page(table)[1] if f.name == "tuco_vs_length")
    assert "ρ = 1.00" in figure.inline
    rng = np.random.default_rng(0)
    x, y = rng.integers(5, 50, 60).astype(float), rng.normal(size=60)
    from tuco_kernels.report.figures import spearman
    assert spearman(x, y) == pytest.approx(pd.Series(x).rank().corr(pd.Series(y).rank()), abs=1e-12)


def test_token_colour_scale_fits_the_values():
    """Per-token TuCo of 0.1 to 0.3 spreads over the whole ramp, not over its first third."""
    from tuco_kernels.report.page import token_scale

    lo, hi = token_scale(np.linspace(0.1, 0.3, 500))
    assert 0.05 <= lo <= 0.1 and 0.3 <= hi <= 0.4
    assert token_scale(np.array([])) == (0.0, 1.0)
    assert token_scale(np.full(10, 0.2))[0] < 0.2 <= token_scale(np.full(10, 0.2))[1]


def test_committed_example_page():
    page_path = ROOT / "docs" / "report_example.html"
    assert page_path.exists(), "docs/report_example.html: regenerate with TUCO_UPDATE_DOCS=1 (see test_report_browser)"
    assert page_path.stat().st_size < 500_000
    page = page_path.read_text(encoding="utf-8")
    assert not EXTERNAL.findall(page) and "<script" not in page.lower()


def test_write_is_atomic(tmp_path, monkeypatch):
    table = report.load_scores([write_scores(make_rows("chat", 5, seed=1), tmp_path / "a.jsonl")])
    out = tmp_path / "r.html"
    out.write_text("old")

    def boom(_fd):
        raise OSError("disk full")

    monkeypatch.setattr(files.os, "fsync", boom)   # the one writer every file goes through
    with pytest.raises(OSError, match="disk full"):
        report.write_report(table, out)
    assert out.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["a.jsonl", "r.html"]


# ---------------------------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------------------------

def test_cli_end_to_end(tmp_path, capsys):
    paths = [write_scores(make_rows(n, 15, seed=i, token_maps=3), tmp_path / f"{n}.csv", flat=True)
             for i, n in enumerate(("web_text", "chat"))]
    out = tmp_path / "report.html"
    rc = main(["report", *map(str, paths), "--names", "web,chat", "--auc", "chat,web", "--top", "4",
               "--bootstrap", "300", "--seed", "3", "--title", "My run", "--out", str(out)])
    assert rc == 0
    err = capsys.readouterr().err
    assert f"written to {out}" in err and "30 rows in 2 group(s)" in err
    page = out.read_text(encoding="utf-8")
    assert "<title>My run</title>" in page and "<h3>Top 4 " in page and "300 resamples" in page and "seed 3" in page
    table = report.load_scores(paths, names="web,chat")
    r = report.compare(table, "chat", "web", n_boot=300, seed=3)
    assert f'<span class="big">{r.auc:.3f}</span>' in page and f"{r.lo:.3f} – {r.hi:.3f}" in page


def test_cli_help_has_example_and_groups(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["report", "--help"])
    text = capsys.readouterr().out
    assert "examples:" in text and "tuco report web.csv chat.csv --out report.html" in text
    for heading in ("groups:", "comparison:", "content:"):
        assert heading in text


@pytest.mark.parametrize("case, expect", [
    ("missing", r"nope\.csv: no such file"),
    ("group", r"a\.jsonl: no column 'label' to group by \(--group\)"),
    ("no-tuco", r"notscores\.csv: no 'tuco' column"),
    ("auc-one-group", r"--auc needs two groups"),
    ("auc-unknown", r"--auc: no group 'zzz'"),
    ("out", r"r\.txt: the report is HTML"),
    ("top", r"--top 0"),
    ("jsonl", r"bad\.jsonl, line 2: not valid JSON"),
])
def test_cli_user_mistakes_exit_2(tmp_path, capsys, case, expect):
    a = write_scores(make_rows("chat", 4, seed=1), tmp_path / "a.jsonl")
    b = write_scores(make_rows("web_text", 4, seed=2), tmp_path / "b.jsonl")
    out = str(tmp_path / "r.html")
    (tmp_path / "notscores.csv").write_text("id,prompt\n1,hello\n")
    (tmp_path / "bad.jsonl").write_text('{"tuco": 0.1}\n{"tuco": \n')
    argv = {
        "missing": [str(a), str(tmp_path / "nope.csv"), "--out", out],
        "group": [str(a), "--group", "label", "--out", out],
        "no-tuco": [str(tmp_path / "notscores.csv"), "--out", out],
        "auc-one-group": [str(a), "--auc", "a,b", "--out", out],
        "auc-unknown": [str(a), str(b), "--auc", "a,zzz", "--out", out],
        "out": [str(a), str(b), "--out", str(tmp_path / "r.txt")],
        "top": [str(a), "--top", "0", "--out", out],
        "jsonl": [str(tmp_path / "bad.jsonl"), "--out", out],
    }[case]
    assert main(["report", *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("tuco: error: ") and re.search(expect, err[0]), err
    assert not Path(out).exists()


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
def test_reads_what_tuco_score_writes_today(tmp_path, suffix):
    """The writer `tuco score` uses (TuCoResult.to_records + io.write_records), NaN row and token map included."""
    from tuco_kernels.prompts.output import write_records
    from tuco_kernels.result import TuCoResult

    rng = np.random.default_rng(0)
    beta = rng.uniform(0.1, 0.3, (4, LAYERS))
    tuco = beta[:, -1].copy()
    tuco[2] = np.nan
    res = TuCoResult(ids=["a", "b", "c", "d"], tuco=tuco, n_tokens=np.array([5, 6, 7, 8]), alpha=[1.0],
                     ptc_l1=rng.uniform(1, 2, (4, LAYERS)), ftc_l1=rng.uniform(0, 1, (4, LAYERS)), beta=beta,
                     token_tuco=[np.r_[np.nan, rng.uniform(0, 1, k - 1)] for k in (5, 6, 7, 8)],
                     output_co=rng.uniform(0, 0.2, 4))
    path = write_records(res.to_records(), tmp_path / f"scores{suffix}")
    table = report.load_scores([path])
    assert list(table.rows["flagged"]) == [False, False, True, False]
    np.testing.assert_allclose(np.stack(table.rows["beta"]), beta, atol=1e-15)
    np.testing.assert_allclose(table.rows["token_tuco"][3][1:], res.token_tuco[3][1:], atol=1e-15)
    assert np.isnan(table.rows["token_tuco"][3][0])
    page = _page(table)
    assert "Cumulative β profile" in page and "Token maps" in page and "Flagged rows (1)" in page
