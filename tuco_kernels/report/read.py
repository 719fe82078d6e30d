"""Reading score files (.csv, .jsonl, .parquet; list or flat β columns; sidecar and Parquet metadata) into one
table of groups, with flagged rows (a status that is not ok, a TuCo that is missing or outside [0, 1]) marked."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import TucoError


OK_STATUS = {"", "ok", "nan", "none", "null"}         # a status column's values that do not flag a row




@dataclass
class ScoreFile:
    """One input file: where it is, what it held, and its run metadata (sidecar JSON and/or Parquet)."""

    path: Path
    format: str
    rows: int
    columns: list[str]
    meta: dict = field(default_factory=dict)
    meta_sources: list[str] = field(default_factory=list)


@dataclass
class ScoreTable:
    """All rows of all files, one per prompt, in file order.

    ``rows`` columns: ``group``, ``file`` (index into ``files``), ``id`` (str), ``tuco`` (float, NaN where
    missing), ``flagged`` (bool), ``flag_reason`` (str), ``n_tokens``, ``output_co`` (float, NaN where absent),
    ``text`` (str or None), ``beta`` / ``token_tuco`` (float arrays or None), ``tokens`` (list of str or None).
    """

    rows: pd.DataFrame
    files: list[ScoreFile]
    groups: list[str]
    group_by: str | None = None

    @property
    def valid(self) -> pd.DataFrame:
        """The rows that statistics and figures use: not flagged."""
        return self.rows[~self.rows["flagged"]]

    def has(self, column: str) -> bool:
        """Whether any row carries a value in ``column`` (beta, token_tuco, text, output_co, n_tokens)."""
        col = self.rows[column]
        if col.dtype == object:
            return bool(col.map(lambda v: v is not None).any())
        return bool(col.notna().any())


def _read_csv(path: Path) -> pd.DataFrame:
    # Everything as text first: a prompt "NA" stays "NA"; numbers and JSON lists are decoded per column below.
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def _read_jsonl(path: Path) -> pd.DataFrame:
    records = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as exc:
                raise TucoError(f"{path}, line {lineno}: not valid JSON ({exc.msg})") from None
            if not isinstance(rec, dict):
                raise TucoError(f"{path}, line {lineno}: expected a JSON object, got {type(rec).__name__}")
            records.append(rec)
    return pd.DataFrame.from_records(records)


def _read_parquet(path: Path) -> pd.DataFrame:
    import pyarrow.parquet as pq

    return pq.read_table(path).to_pandas()


def _parquet_meta(path: Path) -> dict:
    """Run metadata from Parquet key-value metadata (pandas' and Arrow's own keys left out)."""
    import pyarrow.parquet as pq

    kv = pq.read_schema(path).metadata or {}
    meta = {}
    for key, value in kv.items():
        key = key.decode("utf-8", "replace")
        if key in ("pandas", "ARROW:schema") or key.startswith("ARROW:"):
            continue
        text = value.decode("utf-8", "replace")
        try:
            meta[key] = json.loads(text)
        except json.JSONDecodeError:
            meta[key] = text
    if len(meta) == 1 and isinstance(next(iter(meta.values())), dict):
        return next(iter(meta.values()))      # one key holding the whole record (e.g. b"tuco")
    return meta


def _sidecar(path: Path) -> Path | None:
    """``scores.csv.meta.json`` or ``scores.meta.json`` beside the file, if either exists."""
    for cand in (path.with_name(path.name + ".meta.json"), path.with_suffix(".meta.json")):
        if cand.is_file():
            return cand
    return None


def _read_meta(path: Path, fmt: str) -> tuple[dict, list[str]]:
    meta, sources = {}, []
    side = _sidecar(path)
    if side is not None:
        try:
            data = json.loads(side.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise TucoError(f"{side}: run metadata is not valid JSON ({exc})") from None
        meta.update(data if isinstance(data, dict) else {"metadata": data})
        sources.append(side.name)
    if fmt == "parquet":
        pq_meta = _parquet_meta(path)
        if pq_meta:
            meta.update(pq_meta)
            sources.append("Parquet key-value metadata")
    return meta, sources


def _read_raw(path: Path) -> tuple[pd.DataFrame, str]:
    """The file as a DataFrame, format from the extension; unreadable files raise TucoError naming them."""
    if not path.exists():
        raise TucoError(f"{path}: no such file")
    fmt = path.suffix.lower().lstrip(".")
    readers = {"csv": _read_csv, "jsonl": _read_jsonl, "parquet": _read_parquet}
    if fmt not in readers:
        raise TucoError(f"{path}: unknown score file type {path.suffix!r}; expected .csv, .jsonl or .parquet "
                        "(as written by `tuco score`)")
    try:
        return readers[fmt](path), fmt
    except TucoError:
        raise
    except Exception as exc:  # noqa: BLE001 - pandas/pyarrow raise many types; the user needs the file named
        raise TucoError(f"{path}: cannot read as {fmt}: {exc}") from None


def _float_list(value) -> np.ndarray | None:
    """A per-layer or per-token list from a list, an array or a JSON string; None where absent or unreadable."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, str):
        if not value.strip():
            return None
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            return None
    if isinstance(value, np.ndarray) and value.dtype != object:
        return value.astype(np.float64)              # Parquet list columns arrive as numeric arrays
    if not isinstance(value, (list, tuple, np.ndarray)):
        return None
    return np.array([np.nan if v is None else v for v in value], dtype=np.float64)


def _str_list(value) -> list[str] | None:
    if isinstance(value, str):
        try:
            value = json.loads(value) if value.strip() else None
        except json.JSONDecodeError:
            return None
    if not isinstance(value, (list, tuple, np.ndarray)):
        return None
    return ["" if v is None else str(v) for v in value]


def _flat_columns(raw: pd.DataFrame, name: str) -> list[str]:
    """``beta_0 .. beta_{L-1}`` (CSV's flat form), in layer order; [] when the file has none."""
    found = {int(m.group(1)): c for c in raw.columns if (m := re.fullmatch(rf"{name}_(\d+)", str(c)))}
    return [found[i] for i in range(len(found))] if found and set(found) == set(range(len(found))) else []


def _layer_lists(raw: pd.DataFrame, name: str) -> list:
    """Per-row arrays of a per-layer quantity from a list column or flat numeric columns; None per row if absent."""
    if name in raw.columns:
        return [_float_list(v) for v in raw[name]]
    flat = _flat_columns(raw, name)
    if flat:
        values = raw[flat].apply(pd.to_numeric, errors="coerce").to_numpy(np.float64)
        return [row for row in values]
    return [None] * len(raw)


def _numeric(raw: pd.DataFrame, name: str) -> np.ndarray:
    if name not in raw.columns:
        return np.full(len(raw), np.nan)
    return pd.to_numeric(raw[name], errors="coerce").to_numpy(np.float64)


def _clean_str(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return str(value).strip()


def _flag_reasons(raw: pd.DataFrame, tuco: np.ndarray) -> list[str]:
    """Why each row is flagged ('' = not flagged): a status other than ok, an error, a missing/odd TuCo."""
    reasons = []
    status = raw["status"] if "status" in raw.columns else [None] * len(raw)
    error = raw["error"] if "error" in raw.columns else [None] * len(raw)
    for s, e, t in zip(status, error, tuco):
        why = []
        s, e = _clean_str(s), _clean_str(e)
        if s.lower() not in OK_STATUS:
            why.append(f"status {s}")
        if e and e.lower() not in OK_STATUS:
            why.append(e)
        if not np.isfinite(t):
            why.append("TuCo missing or not finite")
        elif not 0.0 <= t <= 1.0:
            why.append(f"TuCo {t:g} outside [0, 1]")
        reasons.append("; ".join(why))
    return reasons


def _normalise(raw: pd.DataFrame, path: Path, file_index: int, group_by: str | None, group_name: str):
    """The canonical columns of one file (see ScoreTable), with the group of each row."""
    if "tuco" not in raw.columns:
        cols = ", ".join(map(str, raw.columns[:12])) or "none"
        raise TucoError(f"{path}: no 'tuco' column (columns: {cols}); expected a file written by `tuco score`")
    if group_by is not None and group_by not in raw.columns:
        cols = ", ".join(map(str, raw.columns[:20]))
        raise TucoError(f"{path}: no column {group_by!r} to group by (--group); columns: {cols}")
    n = len(raw)
    tuco = _numeric(raw, "tuco")
    reasons = _flag_reasons(raw, tuco)
    ids = [_clean_str(v) for v in raw["id"]] if "id" in raw.columns else [str(i) for i in range(n)]
    if group_by is not None:
        groups = [_clean_str(v) or "(missing)" for v in raw[group_by]]
    else:
        groups = [group_name] * n
    text = [v if isinstance(v, str) else (None if _clean_str(v) == "" else str(v)) for v in raw["text"]] \
        if "text" in raw.columns else [None] * n

    def objects(values):        # explicit dtypes: an empty file must concatenate like any other
        return pd.Series(values, dtype=object, index=raw.index)

    return pd.DataFrame({
        "group": objects(groups), "file": np.full(n, file_index), "id": objects(ids), "tuco": tuco,
        "flagged": np.array([bool(r) for r in reasons], dtype=bool), "flag_reason": objects(reasons),
        "n_tokens": _numeric(raw, "n_tokens"), "output_co": _numeric(raw, "output_co"), "text": objects(text),
        "beta": objects(_layer_lists(raw, "beta")),
        "token_tuco": objects([_float_list(v) for v in raw["token_tuco"]] if "token_tuco" in raw.columns
                              else [None] * n),
        "tokens": objects([_str_list(v) for v in raw["tokens"]] if "tokens" in raw.columns else [None] * n),
    }, index=raw.index)


def _file_names(paths: list[Path], names) -> list[str]:
    """Group names for per-file grouping: --names, else file stems (made unique with their folder, or the path)."""
    if names is not None:
        names = [n.strip() for n in (names.split(",") if isinstance(names, str) else names)]
        if len(names) != len(paths):
            raise TucoError(f"--names gives {len(names)} name(s) for {len(paths)} file(s)")
        if len(set(names)) != len(names):
            raise TucoError(f"--names repeats a name: {','.join(names)}")
        return names
    full = [str(p.resolve()) for p in paths]
    for p, f in zip(paths, full):
        if full.count(f) > 1:
            raise TucoError(f"{p}: the same file is given twice")
    stems = [p.stem for p in paths]
    named = [f"{p.parent.name}/{p.stem}" if stems.count(p.stem) > 1 else p.stem for p in paths]
    return [str(p) if named.count(n) > 1 else n for p, n in zip(paths, named)]


#: the column naming each row's fine-tune in a pair set's scores: the groups unless others are asked for
FINETUNED = "finetuned"


def load_scores(paths, group: str | None = None, names=None) -> ScoreTable:
    """Read score files (.csv, .jsonl, .parquet) into one ScoreTable.

    Without ``group`` each file is a group, named by ``names`` (a list or "a,b") or its file stem, except that files
    of several fine-tunes scored against one base (a ``finetuned`` column in every file, ``tuco score --finetuned A
    --finetuned B``) are grouped by fine-tune; with ``group`` rows are grouped by that column's values (which every
    file must have), in order of appearance.
    """
    paths = [Path(p) for p in paths]
    if not paths:
        raise TucoError("no score files given")
    if group is not None and names is not None:
        raise TucoError("--names names the files' groups; with --group the groups are the column's values")
    file_names = _file_names(paths, names)
    raws = [_read_raw(path) for path in paths]
    if group is None and names is None and all(FINETUNED in raw.columns for raw, _ in raws):
        group = FINETUNED
    files, frames = [], []
    for i, (path, (raw, fmt)) in enumerate(zip(paths, raws)):
        meta, sources = _read_meta(path, fmt)
        files.append(ScoreFile(path, fmt, len(raw), [str(c) for c in raw.columns], meta, sources))
        frames.append(_normalise(raw, path, i, group, file_names[i]))
    rows = pd.concat(frames, ignore_index=True)
    groups = list(dict.fromkeys(rows["group"])) if group is not None else file_names
    return ScoreTable(rows=rows, files=files, groups=groups, group_by=group)
