"""``tuco report``: one self-contained HTML page from score files (:mod:`tuco_kernels.report`)."""

from __future__ import annotations

import argparse
import shlex
import sys

from ..errors import TucoError
from ..report import check_report_path, figures_folder, load_scores, write_report


EXAMPLE = """examples:
  tuco report web.csv chat.csv --out report.html
  tuco report scores.parquet --group source --auc chat,web --top 20 --out report.html
  tuco report a.jsonl b.jsonl --names base,tuned --bootstrap 5000 --seed 1 --out report.html
"""


def add_report_parser(subparsers) -> argparse.ArgumentParser:
    """Define ``tuco report`` on the CLI's subparsers."""
    p = subparsers.add_parser(
        "report", help="one self-contained HTML page from score files",
        description="Summarise score files written by `tuco score` as one self-contained HTML page:\n"
                    "a summary table per group, TuCo histograms and densities, the mean cumulative β profile,\n"
                    "the AUC between two groups with a bootstrap interval, TuCo against prompt length, the top and\n"
                    "bottom prompts with their text and, where the files have them, per-token TuCo maps. Each figure\n"
                    "is also written as SVG and PNG into <out>_figures/ beside the page.",
        epilog=EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("scores", nargs="+", metavar="SCORES", help="score files: .csv, .jsonl or .parquet")
    p.add_argument("--out", required=True, help="the HTML file to write (written atomically)")
    g = p.add_argument_group("groups")
    g.add_argument("--group", metavar="COLUMN", help="group rows by this column's values (default: one group per "
                                                     "file, or per fine-tune when every file has a finetuned column)")
    g.add_argument("--names", metavar="A,B,...",
                   help="names of the per-file groups, in file order (default: file stems)")
    c = p.add_argument_group("comparison")
    c.add_argument("--auc", metavar="A,B", action="append",
                   help="AUC of group A above group B (repeatable; default: the first two groups)")
    c.add_argument("--bootstrap", type=int, default=2000, metavar="N", help="bootstrap resamples (default 2000)")
    c.add_argument("--seed", type=int, default=0, help="bootstrap random seed (default 0)")
    s = p.add_argument_group("content")
    s.add_argument("--top", type=int, default=10, metavar="K",
                   help="show the K highest and K lowest prompts (default 10)")
    s.add_argument("--title", help="page title (default: TuCo report)")
    return p


def _command_line(args) -> str:
    parts = ["tuco", "report", *args.scores]
    for flag in ("group", "names", "bootstrap", "seed", "top", "title"):
        value = getattr(args, flag)
        if value is not None:
            parts += [f"--{flag}", str(value)]
    for spec in args.auc or []:
        parts += ["--auc", spec]
    parts += ["--out", str(args.out)]
    return shlex.join(parts)


def cmd_report(args) -> int:
    """``tuco report``: read, compute, write; user mistakes raise TucoError (the CLI prints them, exits 2)."""
    if args.top < 1:
        raise TucoError(f"--top {args.top}: must be at least 1")
    if args.bootstrap < 1:
        raise TucoError(f"--bootstrap {args.bootstrap}: must be at least 1")
    check_report_path(args.out)   # before reading anything: a folder that cannot take the page
    table = load_scores(args.scores, group=args.group, names=args.names)
    out = write_report(table, args.out, auc=args.auc, top=args.top, n_boot=args.bootstrap, seed=args.seed,
                       title=args.title, command=_command_line(args))
    flagged = int(table.rows["flagged"].sum())
    print(f"tuco: report of {len(table.rows):,} rows in {len(table.groups)} group(s)"
          + (f" ({flagged:,} flagged)" if flagged else "")
          + f" written to {out} ({out.stat().st_size / 1024:.0f} KB); its figures as SVG and PNG in "
          f"{figures_folder(out)}/", file=sys.stderr)
    return 0
