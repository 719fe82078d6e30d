"""What every command shares around its work: the exit codes, the console (tuco's log lines on stderr, other
libraries quiet unless -v; text that a terminal's encoding cannot show escaped, not fatal), SIGTERM handled as an
interrupt is, a closed stdout (``tuco steer ... | head``) as the end of the reader's interest, and errors turned
into one line and an exit code."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import tempfile
import threading
import traceback
import warnings

from .._version import __version__
from ..errors import TucoError

EXIT_OK, EXIT_INTERNAL, EXIT_USER, EXIT_FLAGGED, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
EXIT_PIPE, EXIT_TERMINATED = 141, 143      # 128 + SIGPIPE, 128 + SIGTERM, as a shell reports a process they end
REPORT_URL = "the project's issue tracker"


class Terminated(KeyboardInterrupt):
    """SIGTERM (``kill``, a job's time limit, torchrun stopping its ranks) raised where the run is, so that it ends
    as an interrupt does: temporary files removed, locks released, finished shards kept, and a line said."""


@contextlib.contextmanager
def sigterm_as_exception():
    """While a command runs: the first SIGTERM raises :class:`Terminated` in the main thread; a second one ends
    the process at once (the default)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def lenient_streams() -> None:
    """stdout and stderr escape what their encoding cannot show (an ASCII-only terminal or PYTHONIOENCODING=ascii
    gets ``\\u03b1`` for α) instead of failing the run."""
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            try:
                reconfigure(errors="backslashreplace")
            except (ValueError, OSError):
                pass


def silence_stdout() -> None:
    """stdout's reader is gone (a closed pipe): point the descriptor at /dev/null, so that nothing later (the
    interpreter's last flush included) fails on it again."""
    try:
        fd = os.open(os.devnull, os.O_WRONLY)
        os.dup2(fd, sys.stdout.fileno())
        os.close(fd)
    except (OSError, ValueError, AttributeError):
        pass


class _StderrLines(logging.Handler):
    """tuco's own log lines (loading stages) as ``tuco: ...`` on whatever stderr is when they are written."""

    def emit(self, record):
        print(f"tuco: {record.getMessage()}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def console(verbose: bool):
    """For one command: without -v, no third-party warnings and no HF progress bars (tuco's stage lines and bar
    say what happens); tuco's log lines on stderr, under torchrun from rank 0 only (the other ranks load and probe
    the same way; their warnings and errors still show). Everything is put back afterwards."""
    from transformers.utils import logging as hf_logging

    logger = logging.getLogger("tuco_kernels")
    saved = (logger.level, logger.propagate, hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled())
    handler = _StderrLines()
    with warnings.catch_warnings():
        if not verbose:
            warnings.simplefilter("ignore")
            hf_logging.set_verbosity_error()
            hf_logging.disable_progress_bar()
        logger.addHandler(handler)
        other_rank = os.environ.get("RANK", "0") not in ("", "0")
        logger.setLevel(logging.DEBUG if verbose else (logging.WARNING if other_rank else logging.INFO))
        logger.propagate = False
        try:
            yield
        finally:
            logger.removeHandler(handler)
            logger.setLevel(saved[0])
            logger.propagate = saved[1]
            hf_logging.set_verbosity(saved[2])
            if saved[3]:
                hf_logging.enable_progress_bar()


def run_command(command, args) -> int:
    """``command(args)``'s exit code; a user's mistake as ``tuco: error: ...`` (2), an interrupt (130), SIGTERM
    (143), a closed stdout (141, quietly), a bug as one line with its traceback saved to a file (1)."""
    try:
        with sigterm_as_exception():
            return command(args)
    except TucoError as exc:
        print(f"tuco: error: {exc}", file=sys.stderr)
        return EXIT_USER
    except Terminated:
        print("tuco: terminated (SIGTERM); no output written", file=sys.stderr)
        return EXIT_TERMINATED
    except KeyboardInterrupt:
        print("tuco: interrupted; no output written", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:   # stdout's reader stopped reading (`tuco ... | head`): stop, quietly, as `cat` would
        silence_stdout()
        return EXIT_PIPE
    except Exception as exc:  # a bug: one line here, the traceback in a file for the report
        fd, path = tempfile.mkstemp(prefix="tuco-crash-", suffix=".txt")
        with os.fdopen(fd, "w") as f:
            f.write(f"tuco {__version__}; command line: {' '.join(sys.argv)}\n\n")
            traceback.print_exc(file=f)
        first = str(exc).splitlines()[0][:200] if str(exc) else ""
        print(f"tuco: internal error ({type(exc).__name__}: {first}); this is a bug in tuco_kernels. Please report it "
              f"at {REPORT_URL} with the traceback saved in {path}", file=sys.stderr)
        return EXIT_INTERNAL
