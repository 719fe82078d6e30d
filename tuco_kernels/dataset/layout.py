"""The output directory on disk: where each file lies (:class:`Layout`), what must hold before a run may use it
(:meth:`Layout.check_usable`: a directory of tuco's, its own subfolders, a lock that is a regular file, writable),
the timestamps files carry, and the lock that keeps a second run out of a directory one is writing
(:class:`DirectoryLock`). Files are written whole by :func:`tuco_kernels.files.write_atomically`."""

from __future__ import annotations

import datetime
import fcntl
import os
import socket
from pathlib import Path

from ..errors import OutputError
from ..files import check_writable, nearest_existing, open_lock

ROW = "_row"                        # the prompt's position in the input, kept in shards for the merge


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


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
        """Before any work: a new directory (whose nearest existing parent is writable), an empty one, or one a run
        of tuco made (it has plan.json), writable, with ``shards/`` and ``errors/`` folders of its own (not links,
        not files) and a lock that is a regular file; never a file or a directory of the user's own files, whose
        ``scores.parquet`` the merge would replace."""
        root = self.root
        if root.exists() and not root.is_dir():
            raise OutputError(f"{root}: exists and is not a directory; a sharded --out is a directory (DIR/)")
        if not root.is_dir():
            parent = nearest_existing(root)
            if not parent.is_dir():
                raise OutputError(f"{root}: cannot be created: {parent} is not a directory")
            check_writable(parent, root)
            return
        for sub in (self.shards, self.errors):
            if sub.is_symlink():
                raise OutputError(f"{sub}: is a symbolic link; a run keeps its {sub.name} in a folder of its own "
                                  f"(tuco never writes through a link it did not make). Remove the link, or use "
                                  f"another --out")
            if sub.exists() and not sub.is_dir():
                raise OutputError(f"{sub}: exists and is not a directory, so {root} is not a tuco run's directory; "
                                  f"give a new or empty directory")
        lock = root / ".lock"
        if os.path.lexists(lock) and (lock.is_symlink() or not lock.is_file()):
            open_lock(lock)   # raises, naming what the lock is
        if not self.plan.is_file():
            others = sorted(p.name for p in root.iterdir()
                            if p.name not in ("shards", "errors", ".lock") and not p.name.endswith(".partial"))
            if others:
                raise OutputError(f"{root}: holds other files ({', '.join(others[:3])}{', ...' if len(others) > 3 else ''})"
                                  f" and no plan.json, so it is not a tuco run; give a new or empty directory")
        for d in (root, self.shards, self.errors):
            if d.is_dir():
                check_writable(d, d)

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
    """An exclusive ``flock`` on OUT/.lock for the run's rank 0: two jobs on one directory would race. The lock is
    opened without following links (:func:`tuco_kernels.files.open_lock`)."""

    def __init__(self, root: Path):
        self.path = root / ".lock"
        self.fd = open_lock(self.path)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(self.fd, 200, 0).decode(errors="replace").strip()
            os.close(self.fd)
            raise OutputError(f"{root}: another run is writing this directory ({holder or 'unknown'}); wait for it "
                              f"or use another --out") from None
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, f"{socket.gethostname()} pid {os.getpid()} since {now()}\n".encode(), 0)

    def release(self) -> None:
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None
