"""What is on disk, checked before it counts: a finished shard is this run's only when its file is a regular
Parquet file that reads whole, carries this run's fingerprint and its own number, and holds exactly the rows the
plan gives it with this run's prompt ids (:func:`shard_problem`); merged outputs beside ``_SUCCESS`` are the ones
the merge wrote when their sizes and row count agree with what ``_SUCCESS`` recorded (:func:`merged_problem`).

A shard that fails is moved aside (``shards/<k>.parquet.rejected``; never deleted: it may be a copy the user
made) and scored again; the caller says so in one line naming the shard and why.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pyarrow.parquet as pq

from .layout import ROW, Layout
from .shards import Shard

SHARD_META = b"tuco_shard"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:160]


def read_shard(path: Path):
    """(table, the shard's metadata) of a shard file; raises ValueError saying why it is not one."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        raise ValueError("missing") from None
    if not stat.S_ISREG(st.st_mode):
        raise ValueError("not a regular file (a link or another kind of file), so not one this run wrote")
    try:
        table = pq.read_table(path)
    except Exception as exc:  # noqa: BLE001 - pyarrow raises several kinds for a file that is not whole
        raise ValueError(f"damaged: not a readable Parquet file ({_first_line(exc)})") from None
    try:
        meta = json.loads((table.schema.metadata or {})[SHARD_META])
        if not isinstance(meta, dict):
            raise TypeError
    except (KeyError, TypeError, ValueError):
        raise ValueError("damaged: no shard record in its metadata (not written by a tuco run)") from None
    return table, meta


def check_shard(path: Path, shard: Shard, fingerprint_sha: str, ids: list, n_sides: int = 1):
    """(the shard's table, None) when ``path`` is this run's shard ``shard.k`` (``ids``: every prompt's; ``n_sides``:
    the fine-tunes each prompt is scored by), else (None, why not, in words: "missing" when absent)."""
    try:
        table, meta = read_shard(path)
    except ValueError as exc:
        return None, str(exc)
    if meta.get("fingerprint_sha256") != fingerprint_sha:
        return None, ("from another run: its fingerprint differs from this run's (other models, options, α or "
                      "prompts), so its rows cannot be mixed with this run's")
    if meta.get("k") != shard.k:
        return None, f"holds shard {meta.get('k')!r} of this run, not shard {shard.k}"
    if ROW not in table.column_names or "id" not in table.column_names:
        return None, "damaged: no row positions or ids"
    rows = table.column(ROW).to_pylist()
    prompts = [i for g in shard.batches for i in g]
    planned = [side * len(ids) + i for side in range(n_sides) for i in prompts]
    if rows != planned:
        return None, (f"holds other rows than the plan gives shard {shard.k} ({len(rows)} rows for {len(prompts)} "
                      f"prompts{f' × {n_sides} fine-tunes' if n_sides > 1 else ''})")
    if table.column("id").to_pylist() != [ids[i] for _ in range(n_sides) for i in prompts]:
        return None, "its prompt ids differ from this run's prompts"
    return table, None


def shard_problem(path: Path, shard: Shard, fingerprint_sha: str, ids: list, n_sides: int = 1) -> str | None:
    """None when ``path`` is this run's shard ``shard.k``, else why not (see :func:`check_shard`)."""
    return check_shard(path, shard, fingerprint_sha, ids, n_sides)[1]


def set_aside(path: Path) -> Path:
    """Move a rejected shard file out of the way (kept, renamed ``<name>.rejected``); returns the new path."""
    target = path.with_name(path.name + ".rejected")
    os.replace(path, target)
    return target


def merged_problem(layout: Layout, formats, fingerprint_sha: str, n_rows: int) -> str | None:
    """None when ``_SUCCESS`` and every merged output (scores.parquet and ``formats``) are what the last merge of
    this run wrote, else why the merge must run again: a sentence to print, or "" when there is nothing to say (no
    _SUCCESS yet, or one an earlier version wrote without the outputs' sizes)."""
    try:
        success = json.loads(layout.success.read_text(encoding="utf-8"))
        if not isinstance(success, dict):
            raise TypeError
    except FileNotFoundError:
        return ""
    except (OSError, TypeError, ValueError):
        return f"{layout.success} is damaged"
    if success.get("fingerprint_sha256") != fingerprint_sha:
        return f"{layout.success} is another run's"
    sizes = success.get("sizes")
    if not isinstance(sizes, dict):
        return ""
    for fmt in ("parquet", *formats):
        path = layout.scores(fmt)
        if not path.is_file() or path.is_symlink():
            return f"{path} is missing"
        if path.stat().st_size != sizes.get(path.name):
            return f"{path} is damaged or not the merge's (its size differs from the one recorded in _SUCCESS)"
    try:
        if pq.ParquetFile(layout.scores("parquet")).metadata.num_rows != n_rows:
            return f"{layout.scores('parquet')} does not hold {n_rows} rows"
    except Exception:  # noqa: BLE001
        return f"{layout.scores('parquet')} is damaged (not a readable Parquet file)"
    return None


def output_sizes(layout: Layout, formats) -> dict:
    """The merged outputs' sizes, recorded in _SUCCESS for :func:`merged_problem`."""
    return {layout.scores(fmt).name: layout.scores(fmt).stat().st_size for fmt in ("parquet", *formats)}
