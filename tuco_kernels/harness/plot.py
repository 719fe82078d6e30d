"""An α sweep as a figure: one panel per task and metric, the metric against α (the paper's Fig. 8 layout: small multiples of
a score against the FTC scale), α = 1 (the fine-tuned model) marked, ± one standard error where lm-eval gives one.
Colours from the Okabe–Ito palette, legend under the panels."""

from __future__ import annotations

import math
from pathlib import Path

PALETTE = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#000000")


def sweep_figure(alphas: list[float], tables: list[dict], path: Path, *, title: str) -> Path:
    """``tables[i]``: {task: {metric: value}} at ``alphas[i]`` (``metrics_of``); one panel per task and metric (their
    scales differ: accuracy, perplexity), ``<metric>_stderr`` entries as error bars. Writes a PNG at ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(dict.fromkeys(t for table in tables for t in table))
    panels = [(t, m) for t in tasks
              for m in dict.fromkeys(m for table in tables for m in table.get(t, {}) if "_stderr" not in m)]
    metrics = list(dict.fromkeys(m for _, m in panels))
    colour = {m: PALETTE[i % len(PALETTE)] for i, m in enumerate(metrics)}
    cols = min(4 if len(panels) <= 16 else 6, len(panels)) or 1
    rows = math.ceil(len(panels) / cols) or 1
    fig, axes = plt.subplots(rows, cols, figsize=(3.0 * cols, 2.4 * rows), squeeze=False)
    order = sorted(range(len(alphas)), key=lambda i: alphas[i])
    xs = [alphas[i] for i in order]
    for ax, (task, m) in zip(axes.flat, panels):
        ys = [tables[i].get(task, {}).get(m, math.nan) for i in order]
        errs = [tables[i].get(task, {}).get(_stderr_name(m), math.nan) for i in order]
        errs = None if all(math.isnan(e) for e in errs) else [0.0 if math.isnan(e) else e for e in errs]
        ax.errorbar(xs, ys, yerr=errs, marker="o", ms=3.5, lw=1.4, capsize=2.5, color=colour[m])
        ax.axvline(1.0, color="0.55", lw=0.9, ls="--")
        ax.set_title(task if len(metrics) == 1 else f"{task}: {m}", fontsize=8)
        ax.set_xlabel("α (FTC scale)", fontsize=7)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.25)
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    handles = [plt.Line2D([], [], color=colour[m], marker="o", lw=1.4, label=m) for m in metrics]
    handles.append(plt.Line2D([], [], color="0.55", lw=0.9, ls="--", label="α = 1 (the fine-tuned model)"))
    handles.append(plt.Line2D([], [], color="0.3", marker="|", lw=0, label="± 1 standard error (lm-eval's)"))
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 4), fontsize=8, frameon=False)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.05 + 0.03 * (len(handles) > 4) + 0.1 / rows, 1, 0.96))
    fig.savefig(path, dpi=130, bbox_inches="tight")
    plt.close(fig)
    return path


def _stderr_name(metric: str) -> str:
    name, paren, rest = metric.partition(" (")
    return f"{name}_stderr" + (f" ({rest}" if paren else "")
