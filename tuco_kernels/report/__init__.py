"""``tuco report``: one self-contained HTML page from score files written by ``tuco score``.

The page names the pair and the prompt files, then holds the results: a summary table per group, the AUC between
two groups with a bootstrap interval, TuCo histograms (small multiples on a shared axis) and kernel densities, TuCo
against prompt length, the mean cumulative β_l profile per group, the top and bottom prompts with their text and,
when the files carry them, per-token TuCo maps; the score files and the run metadata come last, folded. Figures are
inline SVG, and each is also written as SVG and PNG into ``<report>_figures/``; the page loads nothing from
anywhere, and every string from the data is HTML-escaped.

read.py     score files → one table of groups, flagged rows marked
stats.py    AUC and its bootstrap interval, summaries, β profiles, extremes
figures.py  histograms, densities, length, profiles (inline SVG, SVG and PNG files)
page.py     the HTML page and the figure files, written atomically

The command line's ``tuco report`` is :mod:`tuco_kernels.cli.reporting`.
"""

from .page import auc_pairs, build_page, check_report_path, figures_folder, render_html, write_report
from .read import ScoreTable, load_scores
from .stats import auc, beta_profile, bootstrap_auc, bootstrap_aucs, compare, extremes, summarise

__all__ = ["auc_pairs", "build_page", "check_report_path", "figures_folder", "render_html", "write_report",
           "ScoreTable", "load_scores", "auc",
           "beta_profile", "bootstrap_auc", "bootstrap_aucs", "compare", "extremes", "summarise"]
