"""The report's figures (matplotlib, no pyplot state): TuCo histograms as small multiples on shared bins, kernel
densities, TuCo against prompt length, β profiles. Each is rendered three ways at once: inline SVG for the page
(text kept as text so the page's font renders it), and a standalone SVG and a PNG for papers and slides."""

from __future__ import annotations

import html
import io
import math
import re
from dataclasses import dataclass

import numpy as np

from .stats import Profile

# Okabe & Ito (2008): distinguishable with every common form of colour-vision deficiency; yellow last.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#000000", "#F0E442")
DASHES = ("solid", (0, (5, 2)), (0, (1, 1.5)), (0, (5, 2, 1, 2)))   # cycled once the palette is used up


def group_styles(groups: list[str]) -> dict[str, tuple[str, object]]:
    """(colour, line dash) per group: the Okabe-Ito palette, then the same colours dashed."""
    return {g: (PALETTE[i % len(PALETTE)], DASHES[(i // len(PALETTE)) % len(DASHES)]) for i, g in enumerate(groups)}


def _mpl_text(text: str, limit: int = 40) -> str:
    """A data string safe for a matplotlib label: '$' would start mathtext; long names are cut."""
    text = text if len(text) <= limit else text[: limit - 1] + "…"
    return text.replace("$", r"\$")


def _style(key: str):
    """matplotlib settings for one figure (a context, so nothing global changes); ``key`` salts its SVG ids."""
    import matplotlib

    return matplotlib.rc_context({
        "svg.fonttype": "none", "svg.hashsalt": f"tuco-{key}", "font.family": "sans-serif",
        "font.sans-serif": ["DejaVu Sans"], "font.size": 9, "axes.spines.top": False, "axes.spines.right": False,
        "axes.edgecolor": "#555555", "axes.labelcolor": "#222222", "xtick.color": "#444444",
        "ytick.color": "#444444", "axes.titlesize": 9, "legend.frameon": False})


@dataclass(frozen=True)
class RenderedFigure:
    """One figure: its file name stem, its accessible label, the page's inline SVG, and standalone SVG and PNG."""

    name: str
    label: str
    inline: str
    svg: bytes
    png: bytes


def _render(fig, key: str, name: str, label: str) -> RenderedFigure:
    """Inline SVG, standalone SVG and PNG of ``fig`` (called inside its style context, which the files need too)."""
    svg, png = io.BytesIO(), io.BytesIO()
    fig.savefig(svg, format="svg", metadata={"Creator": None, "Date": None, "Format": None, "Type": None})
    fig.savefig(png, format="png", dpi=160, metadata={"Software": None})
    return RenderedFigure(name, label, _svg(fig, key, label), svg.getvalue(), png.getvalue())


def _svg(fig, key: str, label: str) -> str:
    """The figure as an inline <svg> element: no XML prologue, no namespaces to fetch, scales with its box."""
    buf = io.StringIO()
    fig.savefig(buf, format="svg", metadata={"Creator": None, "Date": None, "Format": None, "Type": None})
    svg = buf.getvalue()
    svg = svg[svg.index("<svg"):]
    svg = re.sub(r"<!--.*?-->", "", svg, flags=re.S)
    svg = svg.replace("xlink:href=", "href=")
    svg = re.sub(r'\s+xmlns(:xlink)?="[^"]*"', "", svg)
    # matplotlib numbers its ids per figure (figure_1, axes_1, ...): prefix them so the page's ids stay unique
    svg = re.sub(r'(\sid="|url\(#|href="#)([^")]+)', lambda m: f"{m.group(1)}{key}-{m.group(2)}", svg)
    width = float(re.search(r'<svg[^>]*\swidth="([\d.]+)pt"', svg).group(1))
    svg = re.sub(r'(<svg[^>]*?)\swidth="[^"]*"\s+height="[^"]*"',
                 rf'\1 width="100%" style="max-width:{width * 4 / 3:.0f}px" role="img" '
                 rf'aria-label="{html.escape(label)}"', svg, count=1)
    return svg.strip()


def _legend(ax, entries: int) -> None:
    """Inside the axes for a few groups; to the right of it for more, where it cannot hide a line."""
    if entries <= 5:
        ax.legend(loc="best", fontsize=8.5, handlelength=2.2)
    else:
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8.5, handlelength=2.2)


def _figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def _tuco_range(values: list[np.ndarray]) -> tuple[float, float]:
    """The x range shared by the TuCo figures: the data's range, padded, within [0, 1]."""
    allv = np.concatenate([v for v in values if v.size]) if any(v.size for v in values) else np.array([0.0, 1.0])
    lo, hi = float(allv.min()), float(allv.max())
    pad = max((hi - lo) * 0.06, 0.01)
    return max(0.0, lo - pad), min(1.0, hi + pad)


def _bins(values: list[np.ndarray], lo: float, hi: float) -> np.ndarray:
    """Common bin edges: Freedman-Diaconis width on the pooled data, 12 to 50 bins over [lo, hi]."""
    pooled = np.concatenate([v for v in values if v.size]) if any(v.size for v in values) else np.array([0.5])
    iqr = np.subtract(*np.percentile(pooled, [75, 25]))
    width = 2 * iqr / max(pooled.size, 1) ** (1 / 3) if iqr > 0 else (hi - lo) / 20
    n = int(np.clip(round((hi - lo) / width), 12, 50)) if width > 0 else 20
    return np.linspace(lo, hi, n + 1)


HIST_COLUMNS_FROM = 9     # this many groups or more: the histogram panels go in three columns


def figure_histograms(values: dict[str, np.ndarray], styles) -> RenderedFigure:
    """Small multiples: one histogram per group on one shared TuCo axis and bins, median marked."""
    groups = list(values)
    lo, hi = _tuco_range(list(values.values()))
    edges = _bins(list(values.values()), lo, hi)
    ncols = 1 if len(groups) < HIST_COLUMNS_FROM else 3
    nrows = math.ceil(len(groups) / ncols)
    with _style("hist"):
        fig = _figure(5.4 * ncols ** 0.8, 0.35 + 1.05 * nrows)
        grid = fig.subplots(nrows, ncols, sharex=True, squeeze=False)
        axes = list(grid.T.ravel()) if ncols > 1 else list(grid[:, 0])   # fill column by column
        for ax in axes[len(groups):]:
            ax.set_visible(False)
        top = 0.0
        for ax, g in zip(axes, groups):
            v = values[g]
            colour = styles[g][0]
            if v.size:
                weights = np.full(v.size, 100.0 / v.size)
                counts, _, _ = ax.hist(v, bins=edges, weights=weights, color=colour, edgecolor="white", linewidth=0.4)
                top = max(top, counts.max())
                ax.axvline(np.median(v), color="#222222", linewidth=1, linestyle=(0, (3, 2)))
            ax.set_title(f"{_mpl_text(g)}   (n = {v.size}, median {np.median(v):.3f})" if v.size
                         else f"{_mpl_text(g)}   (no valid rows)", loc="left", color="#222222", fontweight="bold")
            ax.set_ylabel("% of prompts")
            ax.grid(axis="y", color="#e6e6e6", linewidth=0.6)
            ax.set_axisbelow(True)
        for ax in axes:
            ax.set_ylim(0, top * 1.08 if top else 1)
        for ax in grid[-1]:
            ax.set_xlim(lo, hi)
            ax.set_xlabel("TuCo (last token)")
            ax.xaxis.set_tick_params(labelbottom=True)
        return _render(fig, "hist", "tuco_histograms", "TuCo histograms, one panel per group")


def _kde(v: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """Gaussian kernel density (Silverman's bandwidth), reflected at 0 and 1 so no mass leaves [0, 1]."""
    sd = v.std(ddof=1)
    iqr = np.subtract(*np.percentile(v, [75, 25])) / 1.34
    spread = min(sd, iqr) if iqr > 0 else sd
    h = 0.9 * spread * v.size ** (-0.2) if spread > 0 else 0.005
    # bin the data finely first: the cost then does not grow with the number of prompts
    counts, edges = np.histogram(v, bins=2048, range=(v.min() - 1e-9, v.max() + 1e-9))
    centres = (edges[:-1] + edges[1:]) / 2
    keep = counts > 0
    c, w = centres[keep], counts[keep]
    dens = np.zeros_like(grid)
    for mirror in (c, -c, 2 - c):
        dens += (w * np.exp(-0.5 * ((grid[:, None] - mirror) / h) ** 2)).sum(axis=1)
    return dens / (v.size * h * math.sqrt(2 * math.pi))


def figure_densities(values: dict[str, np.ndarray], styles) -> RenderedFigure:
    """Kernel density of TuCo per group as lines on one axis (groups with fewer than 2 rows left out)."""
    lo, hi = _tuco_range(list(values.values()))
    grid = np.linspace(lo, hi, 400)
    with _style("kde"):
        fig = _figure(5.4, 3.2)
        ax = fig.add_subplot()
        for g, v in values.items():
            if v.size < 2:
                continue
            colour, dash = styles[g]
            ax.plot(grid, _kde(v, grid), color=colour, linestyle=dash, linewidth=1.8,
                    label=f"{_mpl_text(g)} (n = {v.size})")
        ax.set_xlim(lo, hi)
        ax.set_ylim(bottom=0)
        ax.set_xlabel("TuCo (last token)")
        ax.set_ylabel("density")
        ax.grid(color="#ececec", linewidth=0.6)
        ax.set_axisbelow(True)
        if ax.lines:
            _legend(ax, len(ax.lines))
        return _render(fig, "kde", "tuco_densities", "TuCo kernel densities per group")


def figure_profiles(profiles: list[Profile], styles) -> RenderedFigure:
    """Mean cumulative β_l per group against the layer, with its 95% interval as a band."""
    with _style("beta"):
        fig = _figure(7.2, 3.5)
        ax = fig.add_subplot()
        longest = 1
        for p in profiles:
            colour, dash = styles[p.group]
            x = np.arange(p.mean.size)
            longest = max(longest, p.mean.size)
            ax.fill_between(x, p.mean - p.half_width, p.mean + p.half_width, color=colour, alpha=0.18, linewidth=0)
            ax.plot(x, p.mean, color=colour, linestyle=dash, linewidth=1.8, marker="o", markersize=2.8,
                    label=f"{_mpl_text(p.group)} (n = {p.n})")
            if len(profiles) <= 5:     # more would overlap; the summary table has the values
                ax.annotate(f"{p.mean[-1]:.3f}", (x[-1], p.mean[-1]), xytext=(5, 0), textcoords="offset points",
                            va="center", fontsize=8, color=colour)
        step = 1 if longest <= 20 else max(1, longest // 16)
        ax.set_xticks(np.arange(0, longest, step))
        ax.set_xlim(-0.4, longest - 1 + max(1.2, longest * 0.06))
        ax.set_xlabel("layer $l$ (0 = first decoder block; the last layer's β is TuCo)")
        ax.set_ylabel("cumulative β$_l$ (mean over prompts)")
        ax.grid(color="#ececec", linewidth=0.6)
        ax.set_axisbelow(True)
        _legend(ax, len(profiles))
        return _render(fig, "beta", "beta_profiles", "Mean cumulative beta profile per group")


def _average_ranks(v: np.ndarray) -> np.ndarray:
    """Ranks 0 … n-1, tied values sharing their average rank."""
    order = np.argsort(v, kind="mergesort")
    ordered = v[order]
    ranks = np.empty(v.size)
    i = 0
    while i < v.size:
        j = i
        while j + 1 < v.size and ordered[j + 1] == ordered[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2
        i = j + 1
    return ranks


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's rank correlation (ties: average ranks); NaN with fewer than 3 points or a constant side."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    if x.size < 3:
        return float("nan")
    rx, ry = _average_ranks(x), _average_ranks(y)
    if rx.std() == 0 or ry.std() == 0:
        return float("nan")
    return float(np.corrcoef(rx, ry)[0, 1])


def figure_length(points: dict[str, tuple[np.ndarray, np.ndarray]], styles) -> RenderedFigure:
    """TuCo against prompt length (tokens), one colour per group, Spearman's ρ per group in the legend: the first
    confound a reviewer asks about."""
    lengths = np.concatenate([n for n, _ in points.values() if n.size]) if points else np.array([1.0])
    with _style("length"):
        fig = _figure(7.4, 3.4)
        ax = fig.add_subplot()
        for g, (n, t) in points.items():
            if not n.size:
                continue
            colour = styles[g][0]
            rho = spearman(n, t)
            ax.scatter(n, t, s=10, color=colour, alpha=0.65, linewidths=0,
                       label=f"{_mpl_text(g)} (n = {n.size}, ρ = {rho:.2f})" if np.isfinite(rho)
                       else f"{_mpl_text(g)} (n = {n.size})")
        if lengths.size and lengths.min() > 0 and lengths.max() / lengths.min() > 8:
            ax.set_xscale("log")
        ax.set_xlabel("prompt length (tokens)")
        ax.set_ylabel("TuCo (last token)")
        ax.grid(color="#ececec", linewidth=0.6)
        ax.set_axisbelow(True)
        if ax.collections:   # beside the axes: points fill the whole plot area
            ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8.5, markerscale=2.5, handletextpad=0.3)
        return _render(fig, "length", "tuco_vs_length", "TuCo against prompt length per group")
