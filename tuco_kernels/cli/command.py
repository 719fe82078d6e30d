"""The ``tuco`` command: parse the options, keep them as given, run the subcommand in the console."""

from __future__ import annotations

from .console import console, lenient_streams, run_command
from .evaluating import cmd_eval
from .info import cmd_info
from .parser import build_parser, join_dash_values
from .reporting import cmd_report
from .scoring import cmd_score
from .steering import cmd_steer

COMMANDS = {"score": cmd_score, "steer": cmd_steer, "eval": cmd_eval, "report": cmd_report, "info": cmd_info}


def run(argv: list[str]) -> int:
    """The exit status of ``tuco`` with ``argv``."""
    lenient_streams()
    parser = build_parser()
    try:
        args = parser.parse_args(join_dash_values(parser, argv))
    except SystemExit as exc:   # --help, --version (0) or an option argparse refused (2, already printed as one line)
        return exc.code
    args.given = dict(vars(args))   # the options as the user gave them, before any check resolves or rewrites one
    args.argv = argv
    with console(getattr(args, "verbose", False)):
        return run_command(COMMANDS[args.command], args)
