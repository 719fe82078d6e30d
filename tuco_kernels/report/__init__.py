"""``tuco report``: one self-contained HTML page from score files written by ``tuco score``.

The page holds a summary table per group, TuCo histograms (small multiples on a shared axis) and kernel densities,
the mean cumulative β_l profile per group, the AUC between two groups with a bootstrap interval, the top and bottom
prompts with their text and, when the files carry them, per-token TuCo maps. Figures are inline SVG; the page loads
nothing from anywhere, and every string from the data is HTML-escaped.

read.py     score files → one table of groups, flagged rows marked
stats.py    AUC and its bootstrap interval, summaries, β profiles, extremes
figures.py  histograms, densities, profiles as SVG
page.py     the HTML page, written whole

The command line's ``tuco report`` is :mod:`tuco_kernels.cli.reporting`.
"""

from .page import auc_pairs, check_report_path, render_html, write_report
from .read import ScoreTable, load_scores
from .stats import auc, beta_profile, bootstrap_auc, bootstrap_aucs, compare, extremes, summarise

__all__ = ["auc_pairs", "check_report_path", "render_html", "write_report", "ScoreTable", "load_scores", "auc",
           "beta_profile", "bootstrap_auc", "bootstrap_aucs", "compare", "extremes", "summarise"]
