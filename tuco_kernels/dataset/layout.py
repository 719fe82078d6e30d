"""The output directory on disk: where each file lies (:class:`Layout`), files written whole or not at all
(:func:`atomic_write`: a temporary name, fsync, rename), the timestamps they carry, and the lock that keeps a second
run out of a directory one is writing (:class:`DirectoryLock`)."""

from __future__ import annotations

import datetime
import fcntl
import json
import os
import socket
import tempfile
from pathlib import Path

from ..errors import TucoError

ROW = "_row"                        # the prompt's position in the input, kept in shards for the merge


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: Path, write) -> Path:
    """``write(binary file)`` into a temporary file beside ``path``, fsync, rename over ``path``."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


def write_json(path: Path, value) -> Path:
    return atomic_write(path, lambda f: f.write((json.dumps(value, indent=1, default=str) + "\n").encode()))


class Layout:
    """The files of an output directory (see :mod:`tuco_kernels.dataset`)."""

    def __init__(self, out_dir, n_shards: int | None = None):
        self.root = Path(out_dir)
        self.shards = self.root / "shards"
        self.errors = self.root / "errors"
        self.plan = self.root / "plan.json"
        self.success = self.root / "_SUCCESS"
        self.width = max(6, len(str(max((n_shards or 1) - 1, 0))))

    def shard(self, k: int) -> Path:
        return self.shards / f"{k:0{self.width}d}.parquet"

    def error(self, k: int) -> Path:
        return self.errors / f"{k:0{self.width}d}.json"

    def scores(self, fmt: str = "parquet") -> Path:
        return self.root / f"scores.{fmt}"

    def check_usable(self) -> None:
        """A new directory, an empty one, or one a run of tuco made (it has plan.json); never a file or a directory
        of the user's own files, whose ``scores.parquet`` the merge would replace."""
        if self.root.exists() and not self.root.is_dir():
            raise TucoError(f"{self.root}: exists and is not a directory; a sharded --out is a directory (DIR/)")
        if self.root.is_dir() and not self.plan.is_file():
            others = sorted(p.name for p in self.root.iterdir()
                            if p.name not in ("shards", "errors", ".lock") and not p.name.endswith(".partial"))
            if others:
                raise TucoError(f"{self.root}: holds other files ({', '.join(others[:3])}{', ...' if len(others) > 3 else ''})"
                                f" and no plan.json, so it is not a tuco run; give a new or empty directory")

    def make(self) -> None:
        self.check_usable()
        for d in (self.root, self.shards, self.errors):
            d.mkdir(parents=True, exist_ok=True)

    def remove_partials(self) -> int:
        """Temporary files a killed writer left behind (only while no writer runs: rank 0, holding the lock)."""
        stale = [p for d in (self.root, self.shards, self.errors) if d.is_dir() for p in d.glob(".*.partial")]
        for p in stale:
            p.unlink(missing_ok=True)
        return len(stale)


class DirectoryLock:
    """An exclusive ``flock`` on OUT/.lock for the run's rank 0: two jobs on one directory would race."""

    def __init__(self, root: Path):
        self.path = root / ".lock"
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(self.fd, 200, 0).decode(errors="replace").strip()
            os.close(self.fd)
            raise TucoError(f"{root}: another run is writing this directory ({holder or 'unknown'}); wait for it "
                            f"or use another --out") from None
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, f"{socket.gethostname()} pid {os.getpid()} since {now()}\n".encode(), 0)

    def release(self) -> None:
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None
