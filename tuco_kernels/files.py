"""Every file the package writes, written one way.

- **Whole or not at all** (:func:`write_atomically`): into a temporary file beside the target (``mkstemp``: created
  exclusively, so never through a link someone planted), flushed and fsynced, then renamed over the target. An
  interrupted write leaves the old file or the complete new one; a target that is a symbolic link is replaced by
  the file, and what the link pointed to is never touched.
- **With the user's permissions**: a new file gets what the umask gives (0666 & ~umask), as ``open()`` would; a
  regular file that is replaced keeps its own mode.
- **Locks** (:func:`open_lock`) are opened without following links and must be regular files.
- **Folders are probed before any work** (:func:`check_writable`): by creating and removing a file there, which
  answers for read-only mounts, virtual filesystems such as /proc and missing permissions alike (``os.access``
  says yes to root on a read-only folder and cannot see a read-only mount's reasons).
"""

from __future__ import annotations

import json
import os
import stat
import tempfile
from pathlib import Path

from .errors import OutputError

TEMP_SUFFIX = ".partial"


def umask() -> int:
    """The process's umask, read without changing it where Linux says it (``os.umask`` sets it, briefly, for every
    thread)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    current = os.umask(0o022)
    os.umask(current)
    return current


def _mode_for(path: Path) -> int:
    try:
        st = os.lstat(path)
    except OSError:
        st = None
    if st is not None and stat.S_ISREG(st.st_mode):
        return stat.S_IMODE(st.st_mode)
    return 0o666 & ~umask()


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_atomically(path, data) -> Path:
    """Write ``data`` (bytes, or a function that writes to a binary file) to ``path`` whole (see the module
    docstring); returns ``path``."""
    path = Path(path)
    mode = _mode_for(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            if callable(data):
                data(f)
            else:
                f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


def write_json(path, value) -> Path:
    """``value`` as indented JSON, written whole."""
    return write_atomically(path, (json.dumps(value, indent=1, default=str) + "\n").encode("utf-8"))


def open_lock(path) -> int:
    """A file descriptor of the lock file ``path`` (created when missing), opened without following a link: a
    lock that is a link, a folder or anything but a regular file raises :class:`OutputError` naming it, and what a
    planted link points to is never opened, truncated or written."""
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                     0o666 & ~umask())
    except OSError as exc:
        if os.path.islink(path):
            raise OutputError(f"{path}: the lock file is a symbolic link; tuco never writes through a link it did "
                              f"not make. Remove it (it is not tuco's) and run again") from None
        kind = _kind(path)
        if kind is not None:
            raise OutputError(f"{path}: the lock file is {kind}, not a regular file; remove it and run again") from None
        raise OutputError(f"{path}: cannot create the lock file ({exc.strerror})") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OutputError(f"{path}: the lock file is {_kind(path) or 'not a regular file'}, not a regular file; "
                          f"remove it and run again")
    return fd


def _kind(path: Path) -> str | None:
    """What ``path`` is when it exists and is not a regular file ("a folder", "a symbolic link", ...)."""
    try:
        mode = os.lstat(path).st_mode
    except OSError:
        return None
    for test, name in ((stat.S_ISLNK, "a symbolic link"), (stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a pipe"),
                       (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a device"), (stat.S_ISBLK, "a device")):
        if test(mode):
            return name
    return None


def check_writable(directory, what) -> None:
    """Raise :class:`OutputError` (``what``: the path the user gave) unless a file can be created in the existing
    folder ``directory`` right now."""
    directory = Path(directory)
    try:
        fd, tmp = tempfile.mkstemp(prefix=".tuco-probe-", suffix=TEMP_SUFFIX, dir=directory)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise OutputError(f"{what}: the folder {directory} is not writable ({reason})") from None
    os.close(fd)
    os.unlink(tmp)


def nearest_existing(path) -> Path:
    """``path`` or its nearest ancestor that exists (where creating ``path`` would start)."""
    path = Path(os.path.abspath(path))
    while not path.exists() and path != path.parent:
        path = path.parent
    return path
