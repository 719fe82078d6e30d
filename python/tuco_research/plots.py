"""Figures shared by the demo and the studies (matplotlib, Agg backend, PNG).

Histograms are small multiples on one shared TuCo axis (one panel per set, the set's name, n and median in the
panel), never translucent bars laid over each other. Colours come from the Okabe–Ito palette (distinguishable with
every common colour-vision deficiency), assigned in the order the sets are given, so a caller names each set
exactly as it should read in the legend. Every band says what it is.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

PALETTE = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#000000")


def _colours(names) -> dict:
    return {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(names)}


def _save(fig, path: Path) -> Path:
    fig.savefig(path, dpi=130, bbox_inches="tight")
    plt.close(fig)
    return path


def tuco_histograms(sets: dict, path: Path, title: str, xlabel: str = "TuCo (last token)") -> Path:
    """One histogram panel per set ({label: values}), stacked on a shared x axis with shared bins; each panel
    names its set, n and median (a dashed line). Bar heights are the share of the set's prompts."""
    sets = {name: np.asarray(v, dtype=float)[np.isfinite(v)] for name, v in sets.items()}
    colours = _colours(sets)
    values = np.concatenate([v for v in sets.values() if v.size]) if any(v.size for v in sets.values()) else np.zeros(1)
    lo, hi = float(values.min()), float(values.max())
    pad = 0.02 * (hi - lo or 1.0)
    bins = np.linspace(lo - pad, hi + pad, 31)
    fig, axes = plt.subplots(len(sets), 1, figsize=(6.4, 1.2 + 1.45 * len(sets)), sharex=True, squeeze=False)
    for ax, (name, v) in zip(axes[:, 0], sets.items()):
        weights = np.full(v.size, 100.0 / v.size) if v.size else None
        ax.hist(v, bins=bins, weights=weights, color=colours[name], edgecolor="white", linewidth=0.5)
        if v.size:
            ax.axvline(np.median(v), color="#222222", linestyle="--", linewidth=1)
        ax.set_ylabel("% of set", fontsize=8)
        ax.set_title(f"{name}  (n={v.size}, median {np.median(v):.3f}, dashed)" if v.size else f"{name} (n=0)",
                     loc="left", fontsize=9, color=colours[name], fontweight="bold")
        ax.spines[["top", "right"]].set_visible(False)
        ax.tick_params(labelsize=8)
    axes[-1, 0].set_xlabel(xlabel)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def beta_profiles(sets: dict, path: Path, title: str) -> Path:
    """Mean cumulative β_l per layer for each set ({label: array [N, L]}), with a band of ± 1.96 standard errors of
    the mean (a 95% confidence interval of the mean). Each legend entry is its set's line over its own band, and a
    note under the axes says what the band is and why the cumulative ratio can fall."""
    from matplotlib.patches import Patch

    colours = _colours(sets)
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    handles, labels = [], []
    for name, beta in sets.items():
        beta = np.asarray(beta, dtype=float)
        beta = beta[np.isfinite(beta).all(1)]
        layers = np.arange(beta.shape[1])
        mean = beta.mean(0)
        sem = beta.std(0, ddof=1) / np.sqrt(len(beta)) if len(beta) > 1 else np.zeros_like(mean)
        (line,) = ax.plot(layers, mean, color=colours[name], linewidth=1.6)
        ax.fill_between(layers, mean - 1.96 * sem, mean + 1.96 * sem, color=colours[name], alpha=0.2, linewidth=0)
        handles.append((Patch(facecolor=colours[name], alpha=0.2, linewidth=0), line))   # the band, with its line
        labels.append(f"{name} (n={len(beta)})")
    ax.set_xticks(range(0, beta.shape[1], max(1, beta.shape[1] // 9)))
    ax.set_xlabel(r"layer $l$ (sums over layers 0 … $l$)")
    ax.set_ylabel(r"cumulative $\beta_l$ at the last token")
    ax.set_title(title, fontsize=10)
    ax.legend(handles, labels, frameon=False, fontsize=8)
    ax.spines[["top", "right"]].set_visible(False)
    fig.text(0.01, 0.01, "lines: mean over the set's prompts; bands: 95% CI of the mean (± 1.96 SE).\n"
             r"$\beta_l$ can fall: a later layer may add a large pre-trained update, or a fine-tuning change may "
             "cancel an earlier one.", fontsize=7.5, color="#444444", va="bottom")
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    return _save(fig, path)


def line_plot(x, series: dict, path: Path, *, xlabel: str, ylabel: str, title: str, logx: bool = False,
              right: dict | None = None, right_label: str = "", error_label: str | None = None) -> Path:
    """Lines ({label: (y, yerr or None)}), optionally a second y axis for ``right`` series; ``error_label`` says
    what the error bars are."""
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    colours = _colours(list(series) + list(right or {}))
    for label, (y, err) in series.items():
        ax.errorbar(x, y, yerr=err, marker="o", capsize=3, color=colours[label],
                    label=label + (f" (bars: {error_label})" if err is not None and error_label else ""))
    if logx:
        ax.set_xscale("log", base=2)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    handles, labels = ax.get_legend_handles_labels()
    if right:
        ax2 = ax.twinx()
        for label, y in right.items():
            ax2.plot(x, y, marker="s", linestyle="--", color=colours[label], label=label)
        ax2.set_ylabel(right_label)
        h2, l2 = ax2.get_legend_handles_labels()
        handles, labels = handles + h2, labels + l2
    # below the axes, where no line can run under it (loc="best" only sees the left axis' lines)
    fig.legend(handles, labels, frameon=False, fontsize=8, loc="lower center", ncol=min(len(labels), 4))
    rows = -(-len(labels) // 4)
    fig.tight_layout(rect=(0, 0.06 * rows, 1, 1))
    return _save(fig, path)
