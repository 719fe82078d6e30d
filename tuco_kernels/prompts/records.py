"""Prompts as records: from Python objects or prompt files, checked, each knowing where it came from.

A prompt is raw text, a chat (a list of ``{"role", "content"}`` messages) or pre-tokenized
(``{"input_ids": [...]}``). Every error names the prompt (its index, or file and line).

Ids: a prompt's ``id`` is a string or an integer (booleans, floats, NaN and null-like strings such as "" or
"NaN", which spreadsheets and pandas read as missing, are refused); within one input, ids are one type (integers
only if every id is one, else all strings) and unique (a duplicate is refused with both places). Without an id
(a line without ``id``, a blank CSV cell), a prompt's id is its position: its 0-based line number in a .txt or .jsonl
file (blank lines count, so an id is the line an editor shows, minus one), its 0-based row in a .csv file, a table or
a list. CSV files may start with a UTF-8 byte-order mark (Excel's "CSV UTF-8").

Labels: every other CSV column, JSONL field or key of a prompt mapping (a ``source``, a ``set``) is carried with the
prompt (``extra["columns"]``) into every output row (:func:`carry_columns`). A name that is also an output column
(:data:`OUTPUT_COLUMNS`) is refused by name.
"""

from __future__ import annotations

import csv
import io
import json
import numbers
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import PromptError


PREVIEW_CHARS = 1000   # the prompt text kept in a results row


@dataclass
class Prompt:
    """One prompt: exactly one of ``text``, ``messages``, ``input_ids`` is set. ``where`` names it in errors."""

    id: object
    where: str
    text: str | None = None
    messages: list | None = None
    input_ids: list | None = None
    extra: dict = field(default_factory=dict)

    def preview(self, tokenizer=None, limit: int = PREVIEW_CHARS) -> str:
        """The prompt as a reader wants to see it in a results table: the text; a chat's turns as "role: content";
        pre-tokenized ids decoded (when a tokenizer is at hand). Cut at ``limit`` characters, the cut marked."""
        if self.text is not None:
            text = self.text
        elif self.messages is not None:
            text = " | ".join(f"{m['role']}: {m['content']}" for m in self.messages)
        elif tokenizer is not None:
            text = tokenizer.decode(self.input_ids)
        else:
            text = f"<{len(self.input_ids)} token ids>"
        return text if len(text) <= limit else text[: limit - 1] + "…"


_MISSING_LIKE = {"", "nan", "na", "n/a", "null", "none", "<na>"}


INT64 = (-2**63, 2**63 - 1)


def _lines(text: str) -> list[str]:
    """The lines of a prompt file: split at \\n (and \\r\\n) only. ``str.splitlines`` also splits at U+2028,
    U+0085 and other characters that JSON strings and prompts may hold as they are."""
    return [line[:-1] if line.endswith("\r") else line for line in text.split("\n")]


def _check_unicode(value: str, where: str, what: str) -> str:
    """``value`` unless it holds a lone surrogate (a JSON "\\ud800" escape without its pair), which is no text."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise PromptError(f"{where}: {what} holds a lone surrogate ({value[exc.start]!r} at character {exc.start}), "
                          f"half of a UTF-16 pair, which is not text; fix the escape") from None
    return value


def _check_id(value, where: str):
    if isinstance(value, str):
        _check_unicode(value, where, "the id")
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise PromptError(f"{where}: id must be a string or an integer, got {value!r}")
    if isinstance(value, int) and not INT64[0] <= value <= INT64[1]:
        raise PromptError(f"{where}: id {value} does not fit in a 64-bit integer (Parquet, pandas); "
                          f"write it as a string (\"{value}\")")
    if isinstance(value, str) and value.strip().lower() in _MISSING_LIKE:
        raise PromptError(f"{where}: id {value!r} reads as a missing value in spreadsheets and pandas; use another id")
    return value


PROMPT_KEYS = ("prompt", "text", "messages", "input_ids")

#: the columns of the rows tuco writes (scores, steering's completions, sharded runs); a carried label may not
#: have one of these names
OUTPUT_COLUMNS = frozenset({"id", "text", "tuco", "preco", "n_tokens", "status", "truncated_from", "output_co",
                            "ptc_l1", "ftc_l1", "beta", "tokens", "token_tuco", "finetuned", "prompt", "alpha",
                            "sample", "token_ids", "_row"})


def _from_mapping(item: dict, idx: int, where: str) -> Prompt:
    pid = _check_id(item["id"], where) if "id" in item else idx
    keys = [k for k in PROMPT_KEYS if k in item]
    if len(keys) != 1:
        raise PromptError(f"{where}: expected exactly one of 'prompt', 'messages' or 'input_ids'; found {keys or 'none'}")
    key = keys[0]
    value = item[key]
    if key in ("prompt", "text"):
        rec = Prompt(pid, where, text=_check_text(value, where))
    elif key == "messages":
        rec = Prompt(pid, where, messages=_check_messages(value, where))
    else:
        rec = Prompt(pid, where, input_ids=_check_ids(value, where))
    labels = {k: v for k, v in item.items() if k != "id" and k not in PROMPT_KEYS}
    if labels:
        rec.extra["columns"] = labels
    return rec


def carry_columns(records: list[Prompt]) -> list[Prompt]:
    """Make the labels carried with ``records`` (``extra["columns"]``) safe to write in every output format, or
    refuse them by name: a label named like an output column is an error; every record gets every label (None
    where it had none); a label's values share one type (integers, numbers, booleans or text: a label mixing
    them, or holding lists, objects or dates, is written as text, JSON for lists and objects), so that a Parquet
    column can hold them and nothing fails after the scoring."""
    names: dict[str, str] = {}
    for r in records:
        for name in r.extra.get("columns", ()):
            if name not in names:
                if not isinstance(name, str) or not name:
                    raise PromptError(f"{r.where}: a column needs a name (got {name!r})")
                if name in OUTPUT_COLUMNS:
                    raise PromptError(f"{r.where}: the column {name!r} has the name of an output column; rename it "
                                      f"(output columns: {', '.join(sorted(c for c in OUTPUT_COLUMNS if c[0] != '_'))})")
                names[name] = r.where
    if not names:
        return records
    for name in names:
        values = [r.extra.get("columns", {}).get(name) for r in records]
        kinds = {_kind_of(v) for v in values if v is not None}
        if kinds <= {"int"} or kinds <= {"bool"} or kinds <= {"str"}:
            converted = values
        elif kinds <= {"int", "float"}:
            converted = [None if v is None else float(v) for v in values]
        else:
            converted = [None if v is None else _as_text(v) for v in values]
        for r, v in zip(records, converted):
            r.extra.setdefault("columns", {})[name] = v
    for r in records:   # the file's column order, the same in every row
        r.extra["columns"] = {name: r.extra["columns"][name] for name in names}
    return records


def _kind_of(value) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, numbers.Integral):
        return "int"
    if isinstance(value, numbers.Real):
        return "float"
    return "str" if isinstance(value, str) else "other"


def _as_text(value) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value, ensure_ascii=False, default=str)
    return str(value)


def _check_text(value, where: str) -> str:
    if not isinstance(value, str):
        raise PromptError(f"{where}: prompt must be a string, got {type(value).__name__}")
    if not value.strip():
        raise PromptError(f"{where}: empty prompt")
    return _check_unicode(value, where, "the prompt")


#: the roles chat templates know (OpenAI's and HF's conventions); anything else is most likely a typo
CHAT_ROLES = ("system", "developer", "user", "assistant", "tool")


def _check_messages(value, where: str) -> list:
    if not isinstance(value, list) or not value:
        raise PromptError(f"{where}: 'messages' must be a non-empty list of {{'role', 'content'}} objects")
    for j, m in enumerate(value):
        if not (isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)):
            raise PromptError(f"{where}: message {j} must be an object with string 'role' and 'content'")
        if m["role"] not in CHAT_ROLES:
            raise PromptError(f"{where}: message {j} has role {m['role']!r}; use one of {', '.join(CHAT_ROLES)}")
        if not m["content"].strip():
            raise PromptError(f"{where}: message {j} ({m['role']}) has empty content")
        _check_unicode(m["content"], where, f"message {j}")
    return value


def _check_ids(value, where: str) -> list:
    if hasattr(value, "tolist") and getattr(value, "ndim", 1) == 1:   # a torch tensor or numpy array of ids
        value = value.tolist()
    if not isinstance(value, list) or not value or not all(isinstance(t, numbers.Integral) and not isinstance(t, bool)
                                                           for t in value):
        raise PromptError(f"{where}: 'input_ids' must be a non-empty list of integers (or a 1-D tensor or array of them)")
    return [int(t) for t in value]


def normalize_prompts(prompts) -> list[Prompt]:
    """Accept a string, a chat, or a sequence or iterable of strings / chats / mappings (a list, a tuple, a pandas
    Series, a numpy array, a generator), or a pandas DataFrame with a ``prompt`` (or ``messages``) column whose other
    columns are carried as labels; return :class:`Prompt` records. A Series' or DataFrame's index gives the ids (unless
    a DataFrame has an ``id`` column)."""
    if isinstance(prompts, (bytes, bytearray)):
        raise PromptError("prompts must be text (str), not bytes: decode them first")
    if _is_dataframe(prompts):
        return _from_dataframe(prompts)
    ids = None
    if _is_series(prompts):
        ids = [_index_id(v, f"prompt {i}") for i, v in enumerate(prompts.index)]
        prompts = prompts.tolist()
    elif isinstance(prompts, str) or (isinstance(prompts, list) and prompts and isinstance(prompts[0], dict)
                                      and "role" in prompts[0]):
        prompts = [prompts]
    elif isinstance(prompts, (set, frozenset)):   # results come back in input order: an input needs one
        raise PromptError(f"prompts must be in an order (a list, tuple, Series, array or generator), got "
                          f"{type(prompts).__name__}, which has none; give sorted(...) or a list")
    elif isinstance(prompts, dict) or not _iterable(prompts):
        raise PromptError(f"prompts must be a string, a chat, a list (or other sequence or iterable) of them or a "
                          f"DataFrame with a 'prompt' column, got {type(prompts).__name__}")
    elif not isinstance(prompts, (list, tuple)):
        prompts = list(prompts.tolist() if hasattr(prompts, "tolist") else prompts)   # numpy arrays, generators
    out = []
    for i, item in enumerate(prompts):
        where = f"prompt {i}" if ids is None else f"prompt {ids[i]!r} (row {i})"
        if isinstance(item, Prompt):
            out.append(item)
        elif isinstance(item, str):
            out.append(Prompt(i, where, text=_check_text(item, where)))
        elif isinstance(item, dict):
            out.append(_from_mapping(item, i, where))
        elif isinstance(item, list):
            out.append(Prompt(i, where, messages=_check_messages(item, where)))
        else:
            raise PromptError(f"{where}: unsupported prompt type {type(item).__name__}")
        if ids is not None:
            out[-1].id = ids[i]
    if not out:
        raise PromptError("no prompts given")
    return carry_columns(unify_ids(out))


def _iterable(value) -> bool:
    try:
        iter(value)
    except TypeError:
        return False
    return True


def _is_dataframe(value) -> bool:
    return type(value).__name__ == "DataFrame" and hasattr(value, "columns") and hasattr(value, "to_dict")


def _is_series(value) -> bool:
    return type(value).__name__ == "Series" and hasattr(value, "index") and hasattr(value, "tolist")


def _index_id(value, where: str):
    """A pandas index label as a prompt id (numpy integers as int)."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        value = int(value)
    return _check_id(value, where)


def _from_dataframe(frame) -> list[Prompt]:
    """A DataFrame's rows: its ``prompt`` (else ``messages``) column, its ``id`` column or else its index, every
    other column as a label."""
    columns = [str(c) for c in frame.columns]
    key = next((c for c in ("prompt", "messages", "input_ids") if c in columns), None)
    if key is None:
        raise PromptError(f"DataFrame: no 'prompt' or 'messages' column (the columns are {', '.join(columns)})")
    records = []
    for i, (label, row) in enumerate(zip(frame.index, frame.to_dict("records"))):
        row = {str(k): _plain(v) for k, v in row.items()}
        where = f"DataFrame row {label!r}"
        if "id" not in row:
            row["id"] = _index_id(label, where)
        if key == "messages" and hasattr(row[key], "tolist"):
            row[key] = row[key].tolist()
        records.append(_from_mapping(row, i, where))
    if not records:
        raise PromptError("DataFrame: no rows")
    return carry_columns(unify_ids(records))


def _plain(value):
    """pandas/numpy cell values as Python ones (NaN and NA as None)."""
    import pandas as pd

    if hasattr(value, "item") and getattr(value, "ndim", 0) == 0:
        value = value.item()
    if pd.api.types.is_scalar(value) and pd.isna(value):   # NaN, None, pandas.NA, NaT
        return None
    return value


def unify_ids(records: list[Prompt]) -> list[Prompt]:
    """One id type per input (integers only if every id is one, else strings) and no id twice."""
    if not all(isinstance(r.id, int) for r in records):
        for r in records:
            r.id = str(r.id)
    seen: dict = {}
    for r in records:
        if r.id in seen:
            raise PromptError(f"{r.where}: duplicate id {r.id!r} (first at {seen[r.id]}); ids must be unique so that "
                              f"results can be joined back to their prompts")
        seen[r.id] = r.where
    return records


def read_prompt_file(path) -> list[Prompt]:
    """Read .jsonl (``prompt`` or ``messages``, optional ``id``), .csv (column ``prompt``) or .txt (a prompt a line)."""
    path = Path(path)
    if path.is_dir():
        raise PromptError(f"{path}: is a directory, not a prompt file (.jsonl, .csv or .txt)")
    if not path.is_file():
        raise PromptError(f"{path}: is not a regular file (a pipe, socket or device); save the prompts to a file"
                          if path.exists() else f"{path}: prompt file not found")
    suffix = path.suffix.lower()
    try:
        raw = path.read_bytes().decode("utf-8-sig")   # a UTF-8 byte-order mark (Excel's "CSV UTF-8") is dropped
    except UnicodeDecodeError as exc:
        raise PromptError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    # line ends as universal newlines read them, except in CSV, whose quoted cells keep a \r as written
    text = raw if suffix == ".csv" else raw.replace("\r\n", "\n").replace("\r", "\n")
    records: list[Prompt] = []
    if suffix == ".jsonl":
        for lineno, line in enumerate(_lines(text), 1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                item = json.loads(line)
            except json.JSONDecodeError as exc:
                raise PromptError(f"{where}: invalid JSON ({exc.msg} at column {exc.colno})") from exc
            except RecursionError:
                raise PromptError(f"{where}: JSON nested too deeply to read") from None
            if not isinstance(item, dict):
                raise PromptError(f"{where}: each line must be a JSON object")
            records.append(_from_mapping(item, lineno - 1, where))
    elif suffix == ".csv":
        reader = csv.DictReader(io.StringIO(text, newline=""), strict=True)
        start = 1   # the header line, until it is read
        try:
            fields = reader.fieldnames
            if fields is None:
                raise PromptError(f"{path}: empty file; a CSV prompt file starts with a header line that has a "
                                  f"'prompt' column")
            if "prompt" not in fields:
                raise PromptError(f"{path}:1: CSV header must have a 'prompt' column (found {fields})")
            start = 2
            for row in reader:
                where = f"{path}:{start}"
                start = reader.line_num + 1
                if None in row:
                    raise PromptError(f"{where}: more fields than the header's {len(fields)}")
                blank = "id" not in fields or not (row["id"] or "").strip()   # a blank id cell: the row's index
                pid = len(records) if blank else _check_id(row["id"], where)
                rec = Prompt(pid, where, text=_check_text(row["prompt"] or "", where))
                labels = {k: v for k, v in row.items() if k not in ("id", "prompt")}
                if labels:
                    rec.extra["columns"] = labels
                records.append(rec)
        except csv.Error as exc:
            hint = ("; a quote opened there is never closed" if "end of data" in str(exc) else "")
            raise PromptError(f"{path}:{start}: malformed CSV ({exc}){hint}") from None
    elif suffix == ".txt":
        for lineno, line in enumerate(_lines(text), 1):
            if line.strip():
                records.append(Prompt(lineno - 1, f"{path}:{lineno}", text=line))
    else:
        raise PromptError(f"{path}: unknown prompt file type {suffix!r}; use .jsonl, .csv or .txt")
    if not records:
        raise PromptError(f"{path}: no prompts in file")
    return carry_columns(unify_ids(records))
