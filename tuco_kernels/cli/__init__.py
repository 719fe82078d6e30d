"""The ``tuco`` command: ``tuco score``, ``tuco steer``, ``tuco eval``, ``tuco report`` and ``tuco info``.

Exit status: 0 a clean run; 2 a mistake the user can fix (a bad option, prompt file, model or output path), printed
as one line ``tuco: error: ...`` naming it; 3 the run finished but some rows are flagged (their numbers are not
finite: see the ``status`` column); 1 an internal error (a bug: one line, the traceback saved to a file to report);
130 interrupted; 143 terminated (SIGTERM); 141 stdout closed by its reader (``| head``). Everything that can be checked without the models (options, the output path, every line of the
prompt file, α against the config's layer count) is checked before any model loads.

parser.py     the options, their groups, types and examples
console.py    exit codes, the console (quiet unless -v), errors as one line
prepare.py    checks before loading, then the pair and its rendering
scoring.py    tuco score (to one file)
sharded.py    tuco score --out DIR/ (shards, resumable, torchrun)
steering.py   tuco steer
evaluating.py tuco eval (lm-evaluation-harness on the α-steered model)
reporting.py  tuco report
info.py       tuco info
"""

from __future__ import annotations

import sys

from .console import (EXIT_FLAGGED, EXIT_INTERNAL, EXIT_INTERRUPTED, EXIT_OK, EXIT_PIPE, EXIT_TERMINATED, EXIT_USER,
                      console, lenient_streams, run_command)
from .evaluating import cmd_eval
from .info import cmd_info
from .parser import build_parser, join_dash_values
from .reporting import cmd_report
from .scoring import cmd_score
from .steering import cmd_steer

COMMANDS = {"score": cmd_score, "steer": cmd_steer, "eval": cmd_eval, "report": cmd_report, "info": cmd_info}

__all__ = ["main", "build_parser", "COMMANDS", "EXIT_OK", "EXIT_INTERNAL", "EXIT_USER", "EXIT_FLAGGED",
           "EXIT_INTERRUPTED", "EXIT_PIPE", "EXIT_TERMINATED"]


def main(argv=None) -> int:
    lenient_streams()
    parser = build_parser()
    try:
        args = parser.parse_args(join_dash_values(parser, sys.argv[1:] if argv is None else argv))
    except SystemExit as exc:   # --help, --version (0) or an option argparse refused (2, already printed as one line)
        return exc.code
    with console(getattr(args, "verbose", False)):
        return run_command(COMMANDS[args.command], args)
