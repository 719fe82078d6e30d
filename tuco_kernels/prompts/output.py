"""Writing results: .jsonl, .csv or .parquet chosen by extension, atomically.

The file is written to a temporary name in the target directory, flushed to disk and renamed over
the target, so an interrupted run leaves either the old file or the complete new one, never half.
"""

from __future__ import annotations

import csv
import json
import os
import tempfile
from pathlib import Path

from ..errors import TucoError

OUTPUT_SUFFIXES = (".jsonl", ".csv", ".parquet")


def check_output_path(path) -> Path:
    path = Path(path)
    if path.suffix.lower() not in OUTPUT_SUFFIXES:
        raise TucoError(f"{path}: unknown output type {path.suffix!r}; use .jsonl, .csv or .parquet")
    if not path.parent.exists():
        raise TucoError(f"{path}: directory {path.parent} does not exist")
    return path


def _write_jsonl(records, f):
    for rec in records:
        f.write((json.dumps(rec, ensure_ascii=False) + "\n").encode("utf-8"))


def _write_csv(records, f):
    import io

    text = io.StringIO()
    fields = list(records[0]) if records else ["id"]
    writer = csv.DictWriter(text, fieldnames=fields)
    writer.writeheader()
    for rec in records:
        writer.writerow({k: json.dumps(v) if isinstance(v, (list, dict)) else v for k, v in rec.items()})
    f.write(text.getvalue().encode("utf-8"))


def _write_parquet(records, f):
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pylist(records)
    pq.write_table(table, f)


def write_records(records: list[dict], path) -> Path:
    """Write one record per row to ``path`` (format from its extension), atomically."""
    path = check_output_path(path)
    writer = {".jsonl": _write_jsonl, ".csv": _write_csv, ".parquet": _write_parquet}[path.suffix.lower()]
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            writer(records, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
