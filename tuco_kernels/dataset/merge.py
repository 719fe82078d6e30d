"""The merge: every finished shard's rows in input order into ``scores.parquet`` (and ``scores.csv`` /
``scores.jsonl``, byte for byte what ``tuco score`` writes); each shard checked to be this run's first, and the whole
refused when the shards' rows are not each prompt once."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..errors import TucoError
from ..files import write_atomically, write_json
from ..prompts.output import sidecar_path, write_records
from .layout import ROW, Layout
from .verify import check_shard, set_aside

EXTRA_FORMATS = ("csv", "jsonl")
MERGE_CHUNK = 50_000


def merge_shards(layout: Layout, n_shards: int, n_rows: int, formats=(), *, plan_shards=None, ids=None,
                 fingerprint_sha: str | None = None, metadata: dict | None = None, n_sides: int = 1) -> Path:
    """Every shard's rows in input order into ``scores.parquet`` (+ ``scores.<fmt>`` for ``formats``). With the
    run's ``plan_shards``, prompt ``ids`` and ``fingerprint_sha``, each shard is first checked to be this run's
    (:func:`~tuco_kernels.dataset.verify.check_shard`); one that is not is set aside and named. ``metadata`` (the
    run's) goes where a file run's goes: the Parquet file's ``tuco`` key and ``<file>.meta.json`` beside each file.
    ``n_rows``: the prompts times ``n_sides``, the fine-tunes that scored each (a pair set's)."""
    tables = []
    for k in range(n_shards):
        path = layout.shard(k)
        if plan_shards is None:
            table = pq.read_table(path)
        else:
            table, problem = check_shard(path, plan_shards[k], fingerprint_sha, ids, n_sides)
            if problem is not None:
                moved = set_aside(path) if os.path.lexists(path) else path
                raise TucoError(f"shard {k} ({path}) changed after it was checked: {problem}. It is set aside "
                                f"({moved.name}): rerun the same command to score it again")
        tables.append(table.replace_schema_metadata(None))
    try:
        table = pa.concat_tables(tables, promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise TucoError(f"{layout.shards}: shards with incompatible columns ({exc})") from None
    table = table.take(pc.sort_indices(table[ROW]))
    rows = table[ROW].to_numpy()
    if len(rows) != n_rows or not np.array_equal(rows, np.arange(n_rows)):
        what = "prompts" if n_sides == 1 else f"rows ({n_rows // n_sides} prompts × {n_sides} fine-tunes)"
        raise TucoError(f"{layout.shards}: the shards hold {len(rows)} rows for {n_rows} {what} "
                        f"({len(np.unique(rows))} distinct); delete the directory to start over")
    table = table.drop_columns([ROW])
    if metadata is not None:
        table = table.replace_schema_metadata({b"tuco": json.dumps(metadata, default=str).encode("utf-8")})
    write_atomically(layout.scores("parquet"), lambda f: pq.write_table(table, f))
    for fmt in formats:
        write_rows(table, layout.scores(fmt))
    if metadata is not None:
        for fmt in ("parquet", *formats):
            write_json(sidecar_path(layout.scores(fmt)), metadata)
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

    return write_atomically(path, write)
