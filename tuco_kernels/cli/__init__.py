"""The ``tuco`` command: ``tuco score``, ``tuco steer``, ``tuco eval``, ``tuco report`` and ``tuco info``.

Exit status: 0 a clean run; 2 a mistake the user can fix (a bad option, prompt file, model or output path), printed
as one line ``tuco: error: ...`` naming it; 3 the run finished but some rows are flagged (their numbers are not
finite: see the ``status`` column); 1 an internal error (a bug: one line, the traceback saved to a file to report);
130 interrupted; 143 terminated (SIGTERM); 141 stdout closed by its reader (``| head``). Everything that can be checked without the models (options, the output path, every line of the
prompt file, α against the config's layer count) is checked before any model loads.

command.py    the command itself: parse, check, run one subcommand in the console
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

import importlib
import sys

from .._version import __version__

__all__ = ["main", "build_parser", "COMMANDS", "EXIT_OK", "EXIT_INTERNAL", "EXIT_USER", "EXIT_FLAGGED",
           "EXIT_INTERRUPTED", "EXIT_PIPE", "EXIT_TERMINATED"]

_LAZY = {"build_parser": ".parser", "COMMANDS": ".command", **{name: ".console" for name in __all__ if name[:5] == "EXIT_"}}


def main(argv=None) -> int:
    """``tuco ARGS``: its exit status. ``tuco --version`` answers before torch or transformers are imported."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv == ["--version"]:
        print(f"tuco {__version__}")
        return 0
    from .command import run   # the commands import torch and transformers

    return run(argv)


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
