"""Figures shared by the demo and the studies (matplotlib, Agg backend, PNG)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

COLORS = {"web": "#4c72b0", "chat": "#dd8452", "harmful": "#c44e52", "raw": "#8172b2"}


def _finish(fig, ax, path: Path, title: str, xlabel: str, ylabel: str, legend_loc: str = "best") -> Path:
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.legend(frameon=False, loc=legend_loc)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def tuco_histograms(sets: dict, path: Path, title: str) -> Path:
    """Overlaid TuCo histograms, one per set ({name: values})."""
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    lo = min(float(np.min(v)) for v in sets.values())
    hi = max(float(np.max(v)) for v in sets.values())
    bins = np.linspace(lo, hi, 31)
    for name, values in sets.items():
        ax.hist(values, bins=bins, alpha=0.55, label=f"{name} (n={len(values)})", color=COLORS.get(name))
    return _finish(fig, ax, path, title, "TuCo", "prompts")


def beta_profiles(sets: dict, path: Path, title: str) -> Path:
    """Mean cumulative β_l per layer (± 1 sd band) per set ({name: array [N, L]})."""
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    for name, beta in sets.items():
        beta = np.asarray(beta)
        layers = np.arange(beta.shape[1])
        mean, sd = beta.mean(0), beta.std(0)
        ax.plot(layers, mean, label=name, color=COLORS.get(name))
        ax.fill_between(layers, mean - sd, mean + sd, alpha=0.2, color=COLORS.get(name))
    ax.set_xticks(range(0, beta.shape[1], 2))
    return _finish(fig, ax, path, title, "layer l", "cumulative β_l (last token)")


def line_plot(x, series: dict, path: Path, *, xlabel: str, ylabel: str, title: str, logx: bool = False,
              right: dict | None = None, right_label: str = "") -> Path:
    """Lines ({label: (y, yerr or None)}), optionally a second y axis for ``right`` series."""
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    for label, (y, err) in series.items():
        ax.errorbar(x, y, yerr=err, marker="o", capsize=3, label=label)
    if logx:
        ax.set_xscale("log", base=2)
    if right:
        ax2 = ax.twinx()
        for label, y in right.items():
            ax2.plot(x, y, marker="s", linestyle="--", color="#c44e52", label=label)
        ax2.set_ylabel(right_label)
        ax2.legend(frameon=False, loc="upper right")
    return _finish(fig, ax, path, title, xlabel, ylabel, "upper left" if right else "best")
