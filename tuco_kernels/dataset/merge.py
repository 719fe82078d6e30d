"""The merge: every finished shard's rows in input order into ``scores.parquet`` (and ``scores.csv`` /
``scores.jsonl``, byte for byte what ``tuco score`` writes), refused when the shards' rows are not each prompt once."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..errors import TucoError
from ..prompts.output import write_records
from .layout import ROW, Layout, atomic_write

EXTRA_FORMATS = ("csv", "jsonl")
MERGE_CHUNK = 50_000


def merge_shards(layout: Layout, n_shards: int, n_rows: int, formats=()) -> Path:
    """Every shard's rows in input order into ``scores.parquet`` (+ ``scores.<fmt>`` for ``formats``)."""
    tables = [pq.read_table(layout.shard(k)).replace_schema_metadata(None) for k in range(n_shards)]
    try:
        table = pa.concat_tables(tables, promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise TucoError(f"{layout.shards}: shards with incompatible columns ({exc})") from None
    table = table.take(pc.sort_indices(table[ROW]))
    rows = table[ROW].to_numpy()
    if len(rows) != n_rows or not np.array_equal(rows, np.arange(n_rows)):
        raise TucoError(f"{layout.shards}: the shards hold {len(rows)} rows for {n_rows} prompts "
                        f"({len(np.unique(rows))} distinct); delete the directory to start over")
    table = table.drop_columns([ROW])
    atomic_write(layout.scores("parquet"), lambda f: pq.write_table(table, f))
    for fmt in formats:
        write_rows(table, layout.scores(fmt))
    return layout.scores("parquet")


def write_rows(table: pa.Table, path: Path) -> Path:
    """``table`` as ``tuco score`` writes a .csv / .jsonl file (:func:`~tuco_kernels.prompts.output.write_records`,
    byte for byte), ``MERGE_CHUNK`` rows at a time so that a million rows never become a million dicts at once."""
    def write(f):
        with tempfile.TemporaryDirectory(dir=path.parent, prefix=".merge-") as tmp:
            for start in range(0, max(table.num_rows, 1), MERGE_CHUNK):
                part = write_records(table.slice(start, MERGE_CHUNK).to_pylist(), Path(tmp) / f"part{path.suffix}")
                data = part.read_bytes()
                if start and path.suffix == ".csv":
                    data = data.split(b"\n", 1)[1]  # one header
                f.write(data)

    return atomic_write(path, write)
