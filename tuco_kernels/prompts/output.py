"""Writing results: .jsonl, .csv or .parquet chosen by extension, checked before any work, written atomically.

Before a run (:func:`OutputTarget.claim`): the extension is known, the folder exists and is writable, the path is
not a folder and not one of the inputs, it does not exist yet unless ``force``, the disk has room for an estimate
of the output, and a lock file (``.<name>.lock`` beside it, ``flock``) keeps a second run from writing the same
file at the same time. At the end (:func:`OutputTarget.write`): the file is written to a temporary name in the
same folder, flushed to disk and renamed over the target, so an interrupted run leaves the old file or the
complete new one, never half; the new file gets the permissions the user's umask gives (an existing file keeps
its own). Numbers that are not finite are written as JSON ``null``, an empty CSV cell or a Parquet null, never a
bare ``NaN``. If the final write fails anyway (a disk that filled up meanwhile), the rows go to a rescue file in
the temporary folder and the error names it: no scored row is lost.
"""

from __future__ import annotations

import csv
import fcntl
import io
import json
import math
import os
import shutil
import tempfile
from pathlib import Path

from ..errors import OutputError

OUTPUT_SUFFIXES = (".jsonl", ".csv", ".parquet")


def check_output_path(path, *, inputs=(), force: bool = True) -> Path:
    """The output path, refused (naming why) when it cannot or must not be written."""
    path = Path(path)
    if path.suffix.lower() not in OUTPUT_SUFFIXES:
        raise OutputError(f"{path}: unknown output type {path.suffix!r}; use .jsonl, .csv or .parquet")
    if path.is_dir():
        raise OutputError(f"{path}: is a directory; name a file ending in .jsonl, .csv or .parquet")
    if not path.parent.is_dir():
        raise OutputError(f"{path}: directory {path.parent} does not exist")
    if not os.access(path.parent, os.W_OK | os.X_OK):
        raise OutputError(f"{path}: directory {path.parent} is not writable")
    for other in inputs:
        if other is not None and _same_file(path, Path(other)):
            raise OutputError(f"{path}: is also an input ({other}); writing the scores there would replace it")
    if path.exists() and not force:
        raise OutputError(f"{path}: exists; pass --force (force=True) to replace it")
    return path


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return a.resolve() == b.resolve()


class OutputTarget:
    """An output file claimed for one run: checked, locked, written once (see the module docstring)."""

    def __init__(self, path, *, inputs=(), force: bool = False, estimated_bytes: int = 0):
        self.path = check_output_path(path, inputs=inputs, force=force)
        self.force = force
        self._lock = None
        free = shutil.disk_usage(self.path.parent).free
        if estimated_bytes and free < 2 * estimated_bytes:
            raise OutputError(f"{self.path}: only {free / 2**20:.1f} MiB free in {self.path.parent}, and the output "
                              f"needs about {estimated_bytes / 2**20:.1f} MiB")

    def claim(self) -> OutputTarget:
        """Take the lock beside the output (released by :meth:`release`, or when the process ends)."""
        lock_path = self.path.parent / f".{self.path.name}.lock"
        try:
            handle = open(lock_path, "a+")
        except OSError as exc:
            raise OutputError(f"{self.path}: cannot create the lock file {lock_path} ({exc.strerror})") from None
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            owner = handle.read().strip() or "another process"
            handle.close()
            raise OutputError(f"{self.path}: another tuco run ({owner}) is writing this file; wait for it or choose "
                              f"another --out") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}")
        handle.flush()
        self._lock, self._lock_path = handle, lock_path
        if self.path.exists() and not self.force:   # appeared since the check
            self.release()
            raise OutputError(f"{self.path}: exists; pass --force (force=True) to replace it")
        return self

    def release(self) -> None:
        if self._lock is not None:
            self._lock_path.unlink(missing_ok=True)
            fcntl.flock(self._lock, fcntl.LOCK_UN)
            self._lock.close()
            self._lock = None

    def __enter__(self):
        return self.claim()

    def __exit__(self, *exc):
        self.release()

    def write(self, records: list[dict], metadata: dict | None = None) -> Path:
        """Write the rows (atomically); on failure save them to a rescue file and raise naming both."""
        try:
            return write_records(records, self.path, metadata=metadata)
        except OSError as exc:
            rescue = Path(tempfile.gettempdir()) / f"tuco-rescue-{os.getpid()}.jsonl"
            try:
                write_records(records, rescue, metadata=metadata)
                saved = f"; the {len(records)} scored rows were saved to {rescue}"
            except OSError:
                saved = ""
            raise OutputError(f"{self.path}: cannot write the output ({exc.strerror or exc}){saved}") from None


def finite_or_none(value):
    """``value`` with every non-finite float (also inside lists) replaced by None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, list):
        return [finite_or_none(v) for v in value]
    return value


def _write_jsonl(records, f, metadata):
    for rec in records:
        line = json.dumps({k: finite_or_none(v) for k, v in rec.items()}, ensure_ascii=False, allow_nan=False)
        f.write((line + "\n").encode("utf-8"))


FLAT_IN_CSV = ("ptc_l1", "ftc_l1", "beta")   # one value per layer: flat numeric columns beta_0 … beta_{L-1} in CSV


def _flatten(rec: dict) -> dict:
    out = {}
    for k, v in rec.items():
        if k in FLAT_IN_CSV and isinstance(v, list):
            out.update({f"{k}_{i}": x for i, x in enumerate(v)})
        else:
            out[k] = v
    return out


def _write_csv(records, f, metadata):
    text = io.StringIO()
    records = [_flatten(rec) for rec in records]
    fields = list(dict.fromkeys(k for rec in records for k in rec)) if records else ["id"]
    writer = csv.DictWriter(text, fieldnames=fields)
    writer.writeheader()
    for rec in records:
        row = {}
        for k, v in rec.items():
            v = finite_or_none(v)
            row[k] = json.dumps(v, allow_nan=False) if isinstance(v, (list, dict)) else ("" if v is None else v)
        writer.writerow(row)
    f.write(text.getvalue().encode("utf-8"))


def _write_parquet(records, f, metadata):
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pylist([{k: finite_or_none(v) for k, v in rec.items()} for rec in records])
    if metadata:
        table = table.replace_schema_metadata({**(table.schema.metadata or {}),
                                               b"tuco": json.dumps(metadata).encode("utf-8")})
    pq.write_table(table, f)


def sidecar_path(path) -> Path:
    """Where a results file's run metadata goes: ``<file>.meta.json`` beside it."""
    path = Path(path)
    return path.with_name(path.name + ".meta.json")


def write_records(records: list[dict], path, *, metadata: dict | None = None) -> Path:
    """Write one record per row to ``path`` (format from its extension), atomically, with the umask's permissions
    (an existing file keeps its own). ``metadata`` (the run: models, revisions, dtype, versions, options, date) goes
    into a Parquet file's key-value metadata (key ``tuco``) and, for every format, a ``<file>.meta.json`` sidecar.
    In CSV, per-layer lists become flat numeric columns (``beta_0`` …); JSONL and Parquet keep lists."""
    path = Path(path)
    if metadata is not None:
        _write_atomically(sidecar_path(path), json.dumps(metadata, indent=1, default=str).encode("utf-8") + b"\n")
    if path.suffix.lower() not in OUTPUT_SUFFIXES:
        raise OutputError(f"{path}: unknown output type {path.suffix!r}; use .jsonl, .csv or .parquet")
    writer = {".jsonl": _write_jsonl, ".csv": _write_csv, ".parquet": _write_parquet}[path.suffix.lower()]
    buffer = io.BytesIO()
    writer(records, buffer, metadata)
    return _write_atomically(path, buffer.getvalue())


def write_atomically(path, data: bytes) -> Path:
    """``data`` written to ``path`` through a temporary file in the same folder, flushed and renamed over it."""
    return _write_atomically(Path(path), data)


def _write_atomically(path: Path, data: bytes) -> Path:
    mode = path.stat().st_mode & 0o777 if path.exists() else 0o666 & ~_umask()
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _umask() -> int:
    try:   # Linux says it without changing it (os.umask would, briefly, for every thread)
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    current = os.umask(0)
    os.umask(current)
    return current
