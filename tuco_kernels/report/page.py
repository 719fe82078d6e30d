"""The report page: one self-contained HTML file (no script, font, style or image from outside it), every string
from the data escaped, written atomically; each figure also as SVG and PNG in a folder beside it.

Order, as a paper reads: the pair and the prompt files; the summary, the AUC, the distributions, TuCo against
prompt length, the β profile; the extreme prompts and their token maps; flagged rows; then the score files and
the run metadata, folded."""

from __future__ import annotations

import datetime as _dt
import html
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from .._version import __version__
from ..errors import TucoError
from ..files import check_writable, write_atomically
from .figures import (HIST_COLUMNS_FROM, RenderedFigure, figure_densities, figure_histograms, figure_length,
                      figure_profiles, group_styles)
from .read import ScoreTable
from .stats import AucResult, Profile, beta_profile, compare, extremes, summarise

# ColorBrewer "Blues" (sequential, lightness-ordered, colour-blind safe) for per-token TuCo backgrounds.
TOKEN_RAMP = ("#f7fbff", "#deebf7", "#c6dbef", "#9ecae1", "#6baed6", "#4292c6", "#2171b5", "#08519c", "#08306b")
MAX_TEXT_CHARS = 1500      # prompt text shown per row, wrapped in full (the rest is cut, and the cut is said)
MAX_TOKENS_SHOWN = 400     # token map: the last this many positions (TuCo is measured at the last one)
MAX_FLAGGED_SHOWN = 50


CSS = """
:root { --ink:#1f2328; --muted:#59636e; --line:#d8dee4; --soft:#f6f8fa; --accent:#0072B2;
        --font: system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", "DejaVu Sans", Arial, sans-serif;
        --mono: ui-monospace, "SFMono-Regular", Menlo, Consolas, "DejaVu Sans Mono", monospace; }
* { box-sizing: border-box; }
body { margin: 0; background: #fff; color: var(--ink); font: 15px/1.5 var(--font); }
main { max-width: 1160px; margin: 0 auto; padding: 28px 32px 48px; }
h1 { font-size: 26px; margin: 0 0 4px; letter-spacing: -0.01em; }
h2 { font-size: 19px; margin: 36px 0 6px; padding-top: 14px; border-top: 1px solid var(--line); }
h3 { font-size: 15px; margin: 18px 0 6px; }
p { margin: 6px 0 10px; max-width: 80ch; }
.lede { color: var(--muted); margin-bottom: 14px; }
.explain { color: var(--muted); font-size: 13.5px; }
.note { background: #fff8e6; border-left: 3px solid #E69F00; padding: 6px 10px; font-size: 13.5px; max-width: 80ch; }
code, .mono { font-family: var(--mono); font-size: 0.92em; }
table { border-collapse: collapse; font-size: 13.5px; margin: 8px 0 4px; }
th, td { padding: 5px 10px; border-bottom: 1px solid var(--line); text-align: left; vertical-align: top; }
th { background: var(--soft); font-weight: 600; white-space: nowrap; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
.scroll { overflow-x: auto; }
table.prompts { width: 100%; }
.swatch { display: inline-block; width: 11px; height: 11px; border-radius: 2px; margin-right: 7px;
          vertical-align: -1px; }
.flag { color: #B34700; font-weight: 600; }
.figures { display: grid; grid-template-columns: repeat(auto-fit, minmax(440px, 1fr)); gap: 18px 28px;
           align-items: start; }
figure { margin: 8px 0; }
figure.wide { grid-column: 1 / -1; }
figure svg { display: block; height: auto; }
figure svg text { font-family: var(--font) !important; }
figcaption { color: var(--muted); font-size: 13px; margin-top: 4px; max-width: 75ch; }
.big { font-size: 30px; font-weight: 650; font-variant-numeric: tabular-nums; letter-spacing: -0.01em; }
.auc { display: flex; gap: 18px; align-items: baseline; flex-wrap: wrap; margin: 6px 0; }
.prompt { white-space: pre-wrap; overflow-wrap: anywhere; line-height: 1.45; max-width: 70ch; }
.pair { font-size: 15.5px; margin: 2px 0 6px; }
details.meta-fold > summary { cursor: pointer; color: var(--accent); margin: 6px 0; }
.dim { color: var(--muted); }
table.meta { font-size: 12.5px; }
table.meta td, table.meta th { padding: 3px 10px; }
.meta td:first-child { font-family: var(--mono); font-size: 12px; color: var(--muted); white-space: nowrap; }
.meta td { word-break: break-word; }
.tokgrid { display: grid; grid-template-columns: minmax(150px, max-content) 1fr; border-top: 1px solid var(--line); }
.tokgrid > div { padding: 7px 10px 7px 0; border-bottom: 1px solid var(--line); }
.tokmap { font-family: var(--mono); font-size: 13px; line-height: 1.9; white-space: pre-wrap; word-break: break-word; }
.tok { padding: 2px 0; border-right: 1px solid #fff; }
.tok.na { background: repeating-linear-gradient(45deg, #eee, #eee 3px, #fff 3px, #fff 6px); color: var(--muted); }
.tokhead { font-size: 13px; line-height: 1.45; }
.legend { display: flex; align-items: center; gap: 10px; font-size: 13px; color: var(--muted); margin: 8px 0 14px; }
.ramp { width: 260px; height: 14px; border: 1px solid var(--line); border-radius: 2px; }
footer { margin-top: 40px; padding-top: 12px; border-top: 1px solid var(--line); color: var(--muted);
         font-size: 12.5px; }
@media print { h2 { break-after: avoid; } figure, tr { break-inside: avoid; } }
"""


def _e(value) -> str:
    """HTML-escape anything from the data (quotes too: it may land in an attribute)."""
    return html.escape("" if value is None else str(value), quote=True)


def _num(x, digits: int = 3) -> str:
    return "—" if x is None or not np.isfinite(x) else f"{x:.{digits}f}"


def _count(n: int) -> str:
    return f"{n:,}"


def _plural(n: int, word: str, plural: str | None = None) -> str:
    return f"{_count(n)} {word if n == 1 else (plural or word + 's')}"


def _swatch(colour: str) -> str:
    return f'<span class="swatch" style="background:{colour}"></span>'


def _flatten(meta: dict, prefix: str = "") -> list[tuple[str, str]]:
    """Nested run metadata as (dotted key, text) rows; lists of scalars joined by commas."""
    out = []
    for key, value in meta.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out += _flatten(value, name + ".")
        elif isinstance(value, list) and all(not isinstance(v, (dict, list)) for v in value):
            out.append((name, ", ".join(map(str, value))))
        elif isinstance(value, (dict, list)):
            out.append((name, json.dumps(value, ensure_ascii=False)))
        else:
            out.append((name, str(value)))
    return out


def _model_name(value) -> str:
    """A model as the metadata records it: a hub id, a path, or a record with one of them."""
    if isinstance(value, dict):
        for key in ("id", "repo_id", "name", "path", "source"):
            if value.get(key):
                return str(value[key])
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def _prompt_files(meta: dict) -> list[str]:
    """The prompt files a run read, from its options (or its command line)."""
    options = meta.get("options") if isinstance(meta.get("options"), dict) else {}
    given = options.get("prompts")
    if isinstance(given, str):
        return [given]
    if isinstance(given, list):
        return [str(g) for g in given]
    command = meta.get("command")
    if isinstance(command, str):
        import shlex

        try:
            words = shlex.split(command)
        except ValueError:
            return []
        return [words[i + 1] for i, w in enumerate(words[:-1]) if w == "--prompts"]
    return []


def _section_header(table: ScoreTable, title: str) -> str:
    n_rows = len(table.rows)
    n_flagged = int(table.rows["flagged"].sum())
    metas = [f.meta for f in table.files if f.meta]
    pairs = list(dict.fromkeys(
        (_model_name(m["models"].get("pretrained")), _model_name(m["models"].get("finetuned")))
        for m in metas if isinstance(m.get("models"), dict) and m["models"].get("finetuned") is not None))
    if pairs:
        pair = "; ".join(f"pre-trained <b>{_e(a)}</b> → fine-tuned <b>{_e(b)}</b>" for a, b in pairs)
    else:
        pair = '<span class="dim">the model pair is not recorded in these files (no run metadata)</span>'
    prompts = list(dict.fromkeys(p for m in metas for p in _prompt_files(m)))
    prompt_text = (", ".join(f"<code>{_e(p)}</code>" for p in prompts) if prompts
                   else '<span class="dim">not recorded</span>')
    scores = ", ".join(f"<code>{_e(f.path)}</code>" for f in table.files)
    groups = (f"grouped by column <code>{_e(table.group_by)}</code>" if table.group_by
              else "one group per file")
    flagged = (f'<span class="flag">{_plural(n_flagged, "flagged row")}</span>, counted but left out of every '
               "statistic and figure." if n_flagged else "No flagged rows.")
    lede = (f'{_plural(n_rows, "prompt")} from {_plural(len(table.files), "score file")} ({scores}), {groups}: '
            f'{_plural(len(table.groups), "group")}. {flagged}')
    return (f'<header><h1>{_e(title)}</h1><p class="pair">{pair}</p>'
            f'<p class="lede">Prompts: {prompt_text}. {lede}</p>'
            "<p class=\"explain\">TuCo (Tuning Contribution; Nuti et al., ICML 2025) is the share of the fine-tuned "
            "model's last-token residual update that comes from fine-tuning: |ΣFTC|₁ / (|ΣPTC|₁ + |ΣFTC|₁), "
            "from 0 (all pre-training) to 1 (all fine-tuning).</p></header>")


def _section_files(table: ScoreTable) -> str:
    """The score files and their run metadata, at the end: the results come first."""
    file_rows = []
    for i, f in enumerate(table.files):
        sub = table.rows[table.rows["file"] == i]
        gs = list(dict.fromkeys(sub["group"]))
        shown = ", ".join(_e(g) for g in gs[:6]) + (f", … ({len(gs)} groups)" if len(gs) > 6 else "")
        file_rows.append(f'<tr><td class="mono">{_e(f.path)}</td><td>{_e(f.format)}</td>'
                         f'<td class="num">{_count(f.rows)}</td>'
                         f'<td class="num">{_count(int(sub["flagged"].sum()))}</td>'
                         f'<td>{shown}</td><td>{_e(", ".join(f.meta_sources)) or "—"}</td></tr>')
    files = ('<div class="scroll"><table><thead><tr><th>file</th><th>format</th><th class="num">rows</th>'
             '<th class="num">flagged</th><th>group(s)</th><th>run metadata</th></tr></thead><tbody>'
             + "".join(file_rows) + "</tbody></table></div>")
    return "<section><h2>Score files and run metadata</h2>" + files + _section_meta(table) + "</section>"


def _section_meta(table: ScoreTable) -> str:
    """Run metadata, one row per key: one cell where every file agrees, else one cell per file."""
    with_meta = [f for f in table.files if f.meta]
    if not with_meta:
        return '<p class="explain">No run metadata (no <code>.meta.json</code> sidecar, no Parquet metadata).</p>'
    flat = [dict(_flatten(f.meta)) for f in with_meta]
    keys = list(dict.fromkeys(k for d in flat for k in d))
    rows = []
    for k in keys:
        values = [d.get(k, "—") for d in flat]
        if all(v == values[0] for v in values):
            cells = f'<td colspan="{len(flat)}">{_e(values[0])}</td>'
        else:
            cells = "".join(f"<td>{_e(v)}</td>" for v in values)
        rows.append(f"<tr><td>{_e(k)}</td>{cells}</tr>")
    heads = "".join(f"<th>{_e(f.path.name)}</th>" for f in with_meta)
    return (f'<details class="meta-fold"><summary>Run metadata ({_plural(len(keys), "key")}; click to show)'
            '</summary><p class="explain">From each file\'s <code>.meta.json</code> sidecar or Parquet '
            "metadata; a value that every file shares spans all columns.</p><div class=\"scroll\">"
            f'<table class="meta"><thead><tr><th>key</th>{heads}</tr></thead><tbody>{"".join(rows)}</tbody>'
            "</table></div></details>")


def _section_summary(table: ScoreTable, summary: list[dict], styles) -> str:
    has_oco = any(np.isfinite(s["output_co"]) for s in summary)
    head = ('<tr><th>group</th><th class="num">n</th><th class="num">flagged</th><th class="num">TuCo mean ± sd</th>'
            '<th class="num">median</th><th class="num">IQR (25th–75th pct.)</th><th class="num">mean tokens</th>'
            + ('<th class="num">OutputCo mean</th>' if has_oco else "") + "</tr>")
    rows = []
    for s in summary:
        flagged = f'<span class="flag">{_count(s["flagged"])}</span>' if s["flagged"] else "0"
        rows.append(f'<tr><td>{_swatch(styles[s["group"]][0])}{_e(s["group"])}</td>'
                    f'<td class="num">{_count(s["n"])}</td>'
                    f'<td class="num">{flagged}</td><td class="num">{_num(s["mean"])} ± {_num(s["sd"])}</td>'
                    f'<td class="num">{_num(s["median"])}</td><td class="num">{_num(s["q1"])} – {_num(s["q3"])}</td>'
                    f'<td class="num">{_num(s["tokens"], 1)}</td>'
                    + (f'<td class="num">{_num(s["output_co"])}</td>' if has_oco else "") + "</tr>")
    return ("<section><h2>Summary</h2><p class=\"explain\">One row per group. Statistics are over the rows that are "
            "not flagged (n − flagged); sd is the sample standard deviation; IQR gives the 25th and 75th "
            "percentiles of TuCo" + ("; OutputCo is the paper's output-difference baseline" if has_oco else "")
            + ".</p><div class=\"scroll\"><table><thead>" + head + "</thead><tbody>" + "".join(rows)
            + "</tbody></table></div></section>")


def _section_auc(results: list[AucResult], notes: list[str], styles) -> str:
    head = "<section><h2>Separation between groups (AUC)</h2>"
    if not results:
        return head + '<p class="explain">' + " ".join(_e(n) for n in notes) + "</p></section>"
    lines = "".join(
        f'<div class="auc"><span class="big">{r.auc:.3f}</span><span>95% interval <b>{r.lo:.3f} – {r.hi:.3f}</b>'
        f"</span><span>AUC of TuCo: {_swatch(styles[r.a][0])}<b>{_e(r.a)}</b> (n = {_count(r.n_a)}) above "
        f"{_swatch(styles[r.b][0])}<b>{_e(r.b)}</b> (n = {_count(r.n_b)})</span></div>" for r in results)
    r = results[0]
    meaning = (f"<p>An AUC of {r.auc:.3f} means: a prompt drawn at random from <b>{_e(r.a)}</b> has a higher TuCo "
               f"than one drawn from <b>{_e(r.b)}</b> with probability {r.auc:.3f} (ties count one half). 0.5 means "
               f"TuCo does not separate the two groups, 1 that every <b>{_e(r.a)}</b> prompt scores above every "
               f"<b>{_e(r.b)}</b> prompt, and below 0.5 that <b>{_e(r.b)}</b> tends to score higher.</p>")
    how = (f"95% interval: percentile bootstrap with {_count(r.n_boot)} resamples (each group resampled with "
           f"replacement on its own), random seed {r.seed}. Flagged rows are left out.")
    return head + lines + meaning + f'<p class="explain">{how}</p></section>'


def _section_distributions(hist: RenderedFigure | None, kde: RenderedFigure | None, n_groups: int) -> str:
    if hist is None:
        return "<section><h2>Distribution of TuCo</h2><p class=\"note\">No rows with a valid TuCo.</p></section>"
    wide = ' class="wide"' if n_groups >= HIST_COLUMNS_FROM else ""
    return ("<section><h2>Distribution of TuCo</h2><div class=\"figures\">"
            f"<figure{wide}>{hist.inline}"
            "<figcaption>Histogram of TuCo per group, one panel each, all "
            "on the same TuCo axis and bins; bar height is the share of the group's prompts, so groups of "
            "different sizes compare directly. The dashed line marks the group's median.</figcaption></figure>"
            f"<figure>{kde.inline}<figcaption>The same distributions as kernel densities "
            "(Gaussian kernel, Silverman's bandwidth, reflected at 0 and 1), drawn as lines so they can be "
            "compared on one axis; each curve has area 1.</figcaption></figure></div></section>")


def _section_length(length: RenderedFigure | None) -> str:
    if length is None:
        return ""
    return ("<section><h2>TuCo against prompt length</h2><p class=\"explain\">Length is the first confound to rule "
            "out when groups differ in TuCo: if one group's prompts are longer, is it the length or the group? Each "
            "point is a prompt; the legend gives Spearman's rank correlation ρ within each group (0: no monotone "
            "relation; ±1: TuCo rises or falls with length in strict order).</p>"
            f"<figure>{length.inline}<figcaption>TuCo (last token) against the prompt's length in tokens, as "
            "scored (template included); a log axis when lengths span more than a factor of 8. Flagged rows are "
            "left out.</figcaption></figure></section>")


def _section_profile(profiles: list[Profile], figure: RenderedFigure | None) -> str:
    if not profiles or figure is None:
        return ""
    left = [f"{p.group}: {p.left_out}" for p in profiles if p.left_out]
    note = (f'<p class="note">Rows without a complete β profile of the group\'s length were left out of this figure '
            f"({_e(', '.join(left))}).</p>" if left else "")
    return ("<section><h2>Cumulative β profile over layers</h2>"
            "<p class=\"explain\">β<sub>l</sub> is TuCo computed from the contributions of layers 0 … l only, "
            "|Σ<sub>s≤l</sub> FTC<sub>s</sub>|₁ / (|Σ<sub>s≤l</sub> PTC<sub>s</sub>|₁ + |Σ<sub>s≤l</sub> "
            "FTC<sub>s</sub>|₁) at the last token: it shows where in depth the fine-tuning's share builds up. "
            "At the last layer it is TuCo itself" + (" (printed at each line's end)" if len(profiles) <= 5 else "")
            + ".</p>"
            f"<figure>{figure.inline}"
            "<figcaption>Line: mean β<sub>l</sub> over the group's prompts. It can fall from one layer to the next: "
            "a later layer may add a large pre-trained update, or a fine-tuning change may cancel an earlier one. "
            "<b>Band: 95% confidence interval of that mean</b> (mean ± 1.96 standard errors, normal "
            "approximation): it shows how precisely the mean is known, not the spread of individual prompts."
            f"</figcaption></figure>{note}</section>")


def _text_cell(row) -> str:
    text = row["text"]
    if text is None:
        return '<span class="dim">(no text in the file)</span>'
    cut = len(text) > MAX_TEXT_CHARS
    shown = _e(text[:MAX_TEXT_CHARS]) + (f'<span class="dim"> … ({_count(len(text))} characters)</span>' if cut else "")
    return f'<div class="prompt">{shown}</div>'


def _prompt_table(rows: pd.DataFrame, styles, has_text: bool) -> str:
    head = ('<tr><th class="num">#</th><th class="num">TuCo</th><th>group</th><th>id</th><th class="num">tokens</th>'
            + ("<th>prompt</th>" if has_text else "") + "</tr>")
    body = []
    for rank, (_, r) in enumerate(rows.iterrows(), 1):
        tokens = "—" if not np.isfinite(r["n_tokens"]) else _count(int(r["n_tokens"]))
        body.append(f'<tr><td class="num">{rank}</td><td class="num"><b>{r["tuco"]:.3f}</b></td>'
                    f'<td>{_swatch(styles[r["group"]][0])}{_e(r["group"])}</td><td class="mono">{_e(r["id"])}</td>'
                    f'<td class="num">{tokens}</td>' + (f"<td>{_text_cell(r)}</td>" if has_text else "") + "</tr>")
    return (f'<div class="scroll"><table class="prompts"><thead>{head}</thead><tbody>{"".join(body)}</tbody>'
            "</table></div>")


def _section_extremes(table: ScoreTable, top: pd.DataFrame, bottom: pd.DataFrame, k: int, styles) -> str:
    if top.empty:
        return ""
    has_text = table.has("text")
    missing = "" if has_text else ('<p class="explain">The files have no <code>text</code> column, so prompts are '
                                   "shown by id.</p>")
    return (f"<section><h2>Highest and lowest TuCo</h2><p class=\"explain\">The {k} prompts with the highest and the "
            f"{k} with the lowest TuCo over all groups (flagged rows left out).</p>{missing}"
            f"<h3>Top {len(top)} (most from fine-tuning)</h3>{_prompt_table(top, styles, has_text)}"
            f"<h3>Bottom {len(bottom)} (most from pre-training)</h3>{_prompt_table(bottom, styles, has_text)}"
            "</section>")


def _nice_ceiling(x: float) -> float:
    """Round up to a round number (1, 1.5, 2, 2.5, 3, 4, 5, 6 or 8 × a power of ten): a colour scale's end."""
    if not np.isfinite(x) or x <= 0:
        return 1.0
    base = 10 ** math.floor(math.log10(x))
    for m in (1, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10):
        if x <= m * base + 1e-12:
            return min(1.0, m * base)
    return 1.0


def _nice_floor(x: float) -> float:
    """Round down to a round number (the colour scale's start), 0 for anything at or below 0."""
    if not np.isfinite(x) or x <= 0:
        return 0.0
    base = 10 ** math.floor(math.log10(x))
    for m in (8, 6, 5, 4, 3, 2.5, 2, 1.5, 1):
        if x >= m * base - 1e-12:
            return m * base
    return 0.0


def _ramp_colour(t: float) -> str:
    """Colour of t in [0, 1] on TOKEN_RAMP, linearly interpolated in RGB."""
    t = float(np.clip(t, 0.0, 1.0)) * (len(TOKEN_RAMP) - 1)
    i = min(int(t), len(TOKEN_RAMP) - 2)
    f = t - i
    a, b = (tuple(int(c[j:j + 2], 16) for j in (1, 3, 5)) for c in (TOKEN_RAMP[i], TOKEN_RAMP[i + 1]))
    return "#" + "".join(f"{round(x + (y - x) * f):02x}" for x, y in zip(a, b))


def _token_label(token: str) -> str:
    """A token as shown: SentencePiece/BPE space markers as spaces, newlines as ↵ plus a line break."""
    return token.replace("▁", " ").replace("Ġ", " ").replace("Ċ", "\n").replace("\n", "↵\n")


def _token_map(row, scale: tuple[float, float]) -> str:
    lo, hi = scale
    values = row["token_tuco"]
    tokens = row["tokens"] if row["tokens"] is not None and len(row["tokens"]) == values.size else None
    start = max(0, values.size - MAX_TOKENS_SHOWN)
    spans = []
    if start:
        spans.append(f'<span class="dim">… {start} earlier tokens not shown …\n</span>')
    for pos in range(start, values.size):
        v = values[pos]
        label = _token_label(tokens[pos]) if tokens is not None else f"[{pos}]"
        raw = repr(tokens[pos]) if tokens is not None else f"position {pos}"
        if not np.isfinite(v):
            spans.append(f'<span class="tok na" title="{_e(raw)} · position {pos} · TuCo n/a">{_e(label)}</span>')
            continue
        t = (v - lo) / (hi - lo)
        fg = "#ffffff" if t > 0.55 else "#1f2328"
        spans.append(f'<span class="tok" style="background:{_ramp_colour(t)};color:{fg}" '
                     f'title="{_e(raw)} · position {pos} · TuCo {v:.3f}">{_e(label)}</span>')
    return f'<div class="tokmap">{"".join(spans)}</div>'


def token_scale(values: np.ndarray) -> tuple[float, float]:
    """The token maps' colour scale: the 1st to the 99th percentile of the shown values, rounded outwards to round
    numbers within [0, 1], so that the colours spread over the values there are (not over 0 … 1)."""
    if not values.size:
        return 0.0, 1.0
    lo = _nice_floor(float(np.percentile(values, 1)))
    hi = _nice_ceiling(float(np.percentile(values, 99)))
    if hi - lo < 1e-6:
        lo, hi = 0.0, max(hi, 1e-6)
    return lo, hi


def _section_tokens(shown: list[tuple[str, pd.DataFrame]], styles) -> str:
    entries = [(label, r) for label, rows in shown for _, r in rows.iterrows() if r["token_tuco"] is not None]
    if not entries:
        return ""
    finite = np.concatenate([r["token_tuco"][np.isfinite(r["token_tuco"])] for _, r in entries])
    lo, hi = token_scale(finite)
    gradient = ", ".join(TOKEN_RAMP)
    any_strings = any(r["tokens"] is not None for _, r in entries)
    below = " (lower values get its colour)" if finite.size and finite.min() < lo else ""
    above = " (higher values get its colour)" if finite.size and finite.max() > hi else ""
    legend = (f'<div class="legend"><span>{lo:g}{below}</span><div class="ramp" style="background:linear-gradient('
              f'to right, {gradient})"></div><span>{hi:g}{above}</span><span>· per-token TuCo, linear scale fitted '
              'to the shown values (1st to 99th percentile, rounded); <span class="tok na">hatched</span>: n/a (both '
              'norms zero)</span></div>')
    parts = []
    for label, r in entries:
        parts.append(f'<div class="tokhead"><b>{_e(label)}</b> · TuCo <b>{r["tuco"]:.3f}</b><br>'
                     f'{_swatch(styles[r["group"]][0])}{_e(r["group"])} · <span class="mono dim">{_e(r["id"])}</span>'
                     f"</div>{_token_map(r, (lo, hi))}")
    strings = "" if any_strings else (" The files carry no token strings, so positions are shown as [i].")
    return ("<section><h2>Token maps</h2><p class=\"explain\">Each shown prompt's tokens coloured by TuCo computed at "
            "that position (the ratio of the summed fine-tuning and pre-training contributions to that token's "
            f"residual stream); the last token's value is the prompt's TuCo. Hover a token for its value.{strings}</p>"
            + legend + '<div class="tokgrid">' + "".join(parts) + "</div></section>")


def _section_flagged(table: ScoreTable, styles) -> str:
    flagged = table.rows[table.rows["flagged"]]
    if flagged.empty:
        return ""
    body = "".join(f'<tr><td>{_swatch(styles[r["group"]][0])}{_e(r["group"])}</td><td class="mono">{_e(r["id"])}</td>'
                   f'<td>{_e(table.files[r["file"]].path.name)}</td><td class="flag">{_e(r["flag_reason"])}</td></tr>'
                   for _, r in flagged.head(MAX_FLAGGED_SHOWN).iterrows())
    more = (f'<p class="explain">… and {_count(len(flagged) - MAX_FLAGGED_SHOWN)} more.</p>'
            if len(flagged) > MAX_FLAGGED_SHOWN else "")
    return (f"<section><h2>Flagged rows ({_count(len(flagged))})</h2><p class=\"explain\">Rows whose TuCo is missing, "
            "not finite or outside [0, 1], or that the scorer marked with a status or error. They are counted in the "
            "summary and left out of every statistic and figure.</p><div class=\"scroll\"><table><thead><tr>"
            f"<th>group</th><th>id</th><th>file</th><th>reason</th></tr></thead><tbody>{body}</tbody></table></div>"
            f"{more}</section>")


def auc_pairs(table: ScoreTable, requested: list | None) -> list[tuple[str, str]]:
    """The pairs to compare: each 'A,B' given (both must be groups), else the first two groups."""
    if not requested:
        return [tuple(table.groups[:2])] if len(table.groups) >= 2 else []
    if len(table.groups) < 2:
        raise TucoError(f"--auc needs two groups; there is only {len(table.groups)} ({', '.join(table.groups)})")
    pairs = []
    for spec in requested:
        parts = spec if isinstance(spec, (tuple, list)) else [s.strip() for s in spec.split(",")]
        if len(parts) != 2:
            raise TucoError(f"--auc {spec!r}: expected two group names separated by a comma, e.g. --auc chat,web")
        for name in parts:
            if name not in table.groups:
                raise TucoError(f"--auc: no group {name!r}; the groups are {', '.join(map(repr, table.groups))}")
        pairs.append((parts[0], parts[1]))
    return pairs


def build_page(table: ScoreTable, *, auc=None, top: int = 10, n_boot: int = 2000, seed: int = 0,
               title: str | None = None, generated: str | None = None,
               command: str | None = None) -> tuple[str, list[RenderedFigure]]:
    """The report as one HTML string, and its figures (see the module docstring for what it holds)."""
    styles = group_styles(table.groups)
    valid = table.valid
    values = {g: valid.loc[valid["group"] == g, "tuco"].to_numpy() for g in table.groups}
    results, notes = [], []
    for a, b in auc_pairs(table, auc):
        try:
            results.append(compare(table, a, b, n_boot=n_boot, seed=seed))
        except TucoError as exc:
            if auc:            # asked for by name: the user should hear why it cannot be done
                raise
            notes.append(f"No AUC: {exc}.")
    if len(table.groups) < 2:
        notes.append("Only one group: no AUC to compute (give two files, --group COLUMN, or --auc A,B).")
    profiles = [p for g in table.groups if (p := beta_profile(table, g)) is not None]
    hi_rows, lo_rows = extremes(table, top)
    has_values = any(v.size for v in values.values())
    hist = figure_histograms(values, styles) if has_values else None
    kde = figure_densities(values, styles) if has_values else None
    lengths = {g: (valid.loc[valid["group"] == g, "n_tokens"].to_numpy(dtype=float),
                   valid.loc[valid["group"] == g, "tuco"].to_numpy()) for g in table.groups}
    lengths = {g: (n[np.isfinite(n)], t[np.isfinite(n)]) for g, (n, t) in lengths.items()}
    length = figure_length(lengths, styles) if any(n.size for n, _ in lengths.values()) else None
    profile = figure_profiles(profiles, styles) if profiles else None
    generated = generated or _dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    title = title or "TuCo report"
    body = "".join([
        _section_header(table, title),
        _section_summary(table, summarise(table), styles),
        _section_auc(results, notes, styles),
        _section_distributions(hist, kde, len(table.groups)),
        _section_length(length),
        _section_profile(profiles, profile),
        _section_extremes(table, hi_rows, lo_rows, top, styles),
        _section_tokens([(f"top {i}", hi_rows.iloc[[i - 1]]) for i in range(1, len(hi_rows) + 1)]
                        + [(f"bottom {i}", lo_rows.iloc[[i - 1]]) for i in range(1, len(lo_rows) + 1)], styles),
        _section_flagged(table, styles),
        _section_files(table),
    ])
    footer = (f"<footer>Generated {_e(generated)} by tuco_kernels {_e(__version__)}"
              + (f" with <code>{_e(command)}</code>" if command else "")
              + ". This page is self-contained: it loads nothing from the network.</footer>")
    page = ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{_e(title)}</title><style>{CSS}</style></head><body><main>{body}{footer}</main></body></html>\n")
    return page, [f for f in (hist, kde, length, profile) if f is not None]


def render_html(table: ScoreTable, **options) -> str:
    """The report as one HTML string (:func:`build_page` without the figure files)."""
    return build_page(table, **options)[0]


def figures_folder(out: Path) -> Path:
    """Where the figure files of the report ``out`` go: ``<stem>_figures`` beside it."""
    return Path(out).with_name(f"{Path(out).stem}_figures")


def check_report_path(out) -> Path:
    """``out`` as the report's path, refused (naming why) unless an HTML file can be written there; before any
    input is read."""
    out = Path(out)
    if out.suffix.lower() not in (".html", ".htm"):
        raise TucoError(f"{out}: the report is HTML; give --out a .html file")
    if not out.parent.is_dir():
        what = "is not a directory" if out.parent.exists() else "does not exist"
        raise TucoError(f"{out}: directory {out.parent} {what}")
    if out.is_dir():
        raise TucoError(f"{out}: is a directory; name the .html file to write")
    folder = figures_folder(out)
    if folder.is_symlink() or (folder.exists() and not folder.is_dir()):
        raise TucoError(f"{folder}: the report's figure files go in this folder, and it is "
                        f"{'a symbolic link' if folder.is_symlink() else 'not a folder'}; remove it or choose "
                        f"another --out")
    check_writable(out.parent, out)
    return out


def write_report(table: ScoreTable, out, *, figure_files: bool = True, **options) -> Path:
    """Render the report and write it to ``out`` whole (:func:`tuco_kernels.files.write_atomically`: a temporary
    file in the same folder, then a rename; the umask's permissions), and with ``figure_files`` each figure as SVG
    and PNG into ``<stem>_figures/`` beside it, written the same way."""
    out = check_report_path(out)
    page, figures = build_page(table, **options)
    write_atomically(out, page.encode("utf-8"))
    if figure_files and figures:
        folder = figures_folder(out)
        folder.mkdir(exist_ok=True)
        for figure in figures:
            write_atomically(folder / f"{figure.name}.svg", figure.svg)
            write_atomically(folder / f"{figure.name}.png", figure.png)
    return out
