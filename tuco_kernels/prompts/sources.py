"""Where prompts come from: prompt files (:mod:`.records`), Parquet tables and Hugging Face datasets.

``read_prompts(source)`` (``tk.read_prompts``, ``tuco score/steer --prompts``) takes

* a ``.jsonl``, ``.csv`` or ``.txt`` prompt file (:func:`~.records.read_prompt_file`);
* a ``.parquet`` file: a ``prompt`` (text) or ``messages`` (a chat: a list of ``{role, content}``) column, an
  optional ``id`` column, every other column carried in each prompt's ``extra["columns"]``;
* ``hf:NAME[:SPLIT[:COLUMN]]``: a dataset from the local Hugging Face datasets cache (``HF_DATASETS_CACHE``),
  read offline (nothing is downloaded; a dataset that is not cached is named, with how to get it); NAME may also be
  a folder written by ``datasets.save_to_disk``. SPLIT is needed when the dataset has several; COLUMN names the
  prompt column when it is neither ``prompt`` nor ``messages`` (its values text, or chats); a saved dataset
  without splits takes ``hf:FOLDER:COLUMN``;
* a ``datasets.save_to_disk`` folder itself (one split, or ``hf:FOLDER:SPLIT``).

Rows follow the same rules as prompt files (:mod:`.records`: ids, empty prompts, chats), and every error names
the source and the row (``data.parquet row 7``, ``hf:org/name:test row 7``; rows count from 0).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from ..errors import PromptError
from .records import Prompt, _check_id, _check_messages, _check_text, carry_columns, read_prompt_file, unify_ids

HF_PREFIX = "hf:"
FILE_SUFFIXES = (".jsonl", ".csv", ".txt", ".parquet")
PROMPT_COLUMNS = ("prompt", "messages")   # in this order, when no column is named
_SAVED_DATASET_MARKERS = ("dataset_info.json", "state.json", "dataset_dict.json")


def read_prompts(source) -> list[Prompt]:
    """Prompts from a prompt file, a Parquet file, ``hf:NAME[:SPLIT[:COLUMN]]`` or a save_to_disk folder (see the
    module docstring); every row checked."""
    text = os.fspath(source) if isinstance(source, os.PathLike) else source
    if isinstance(text, str) and text.startswith(HF_PREFIX):
        return read_hf_dataset(text)
    path = Path(text)
    if path.is_dir():
        if is_saved_dataset(path):
            return read_hf_dataset(f"{HF_PREFIX}{path}")
        raise PromptError(f"{path}: is a directory, not a prompt file ({', '.join(FILE_SUFFIXES)}) nor a folder "
                          f"written by datasets' save_to_disk")
    if path.suffix.lower() == ".parquet":
        return read_parquet(path)
    if path.suffix.lower() not in FILE_SUFFIXES and path.is_file():
        raise PromptError(f"{path}: unknown prompt file type {path.suffix!r}; use {', '.join(FILE_SUFFIXES)}, or "
                          f"hf:NAME[:SPLIT[:COLUMN]] for a Hugging Face dataset")
    return read_prompt_file(path)


def is_saved_dataset(path: Path) -> bool:
    """A folder written by ``datasets``' ``save_to_disk`` (a Dataset or a DatasetDict)."""
    return any((path / marker).is_file() for marker in _SAVED_DATASET_MARKERS)


# ------------------------------------------------------------------------------------------------- Parquet

def read_parquet(path) -> list[Prompt]:
    """Prompts from a Parquet table (``prompt`` or ``messages``, optional ``id``, other columns carried)."""
    path = Path(path)
    if path.is_dir():
        raise PromptError(f"{path}: is a directory, not a Parquet file")
    if not path.is_file():
        raise PromptError(f"{path}: prompt file not found")
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise PromptError(f"{path}: reading Parquet needs pyarrow (pip install 'tuco_kernels[io]')") from None
    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as exc:
        raise PromptError(f"{path}: not a readable Parquet file ({str(exc).splitlines()[0]})") from None
    return table_prompts(table.to_pylist(), table.column_names, str(path))


# ---------------------------------------------------------------------------------------- HF datasets

def parse_hf_source(text: str) -> tuple[str, str | None, str | None]:
    """``hf:NAME[:SPLIT[:COLUMN]]`` -> (NAME, SPLIT or None, COLUMN or None)."""
    parts = text[len(HF_PREFIX):].split(":")
    if not parts[0] or len(parts) > 3 or any(p == "" for p in parts[1:]):
        raise PromptError(f"{text}: write hf:NAME, hf:NAME:SPLIT or hf:NAME:SPLIT:COLUMN (NAME a dataset in the "
                          f"local Hugging Face cache, or a save_to_disk folder)")
    parts += [None] * (3 - len(parts))
    return parts[0], parts[1], parts[2]


def read_hf_dataset(text: str) -> list[Prompt]:
    """Prompts from ``hf:NAME[:SPLIT[:COLUMN]]``, read offline from the local cache or a save_to_disk folder."""
    name, split, column = parse_hf_source(text)
    with _offline_datasets() as datasets:
        folder = Path(name)
        if folder.is_dir():
            if not is_saved_dataset(folder):
                raise PromptError(f"{text}: {folder} is a folder but not one written by datasets' save_to_disk "
                                  f"(no dataset_info.json, state.json or dataset_dict.json)")
            try:
                data = datasets.load_from_disk(str(folder))
            except Exception as exc:   # a damaged folder: its files named by datasets' own message
                raise PromptError(f"{text}: cannot read the saved dataset ({_first_line(exc)})") from None
        else:
            data = _load_cached(datasets, name, split, text)
        if not hasattr(data, "keys") and split is not None and column is None and split in data.column_names:
            split, column = None, split   # a dataset without splits: hf:NAME:COLUMN
        dataset, split = _one_split(data, split, text)
        source = f"{HF_PREFIX}{name}:{split}" if split else f"{HF_PREFIX}{name}"
        return table_prompts(dataset.to_list(), list(dataset.column_names), source, column=column)


def _load_cached(datasets, name: str, split: str | None, text: str):
    cache = datasets.config.HF_DATASETS_CACHE
    try:
        return datasets.load_dataset(name)
    except (ConnectionError, FileNotFoundError) as exc:
        raise PromptError(f"{text}: dataset {name!r} is not in the local Hugging Face datasets cache ({cache}) and "
                          f"nothing is downloaded here; load it once where the hub is reachable "
                          f"(datasets.load_dataset({name!r})), or save it with save_to_disk and give the folder "
                          f"({_first_line(exc)})") from None
    except Exception as exc:   # a cached copy datasets cannot read back
        raise PromptError(f"{text}: the cached dataset {name!r} cannot be read ({type(exc).__name__}: "
                          f"{_first_line(exc)})") from None


def _one_split(data, split: str | None, text: str):
    """The Dataset to read: ``split`` of a DatasetDict (the only one when not named), or the Dataset itself."""
    splits = list(data.keys()) if hasattr(data, "keys") else None
    if splits is None:
        if split is not None:
            raise PromptError(f"{text}: the saved dataset has no splits, so no split {split!r}; leave it out")
        return data, None
    if split is None:
        if len(splits) != 1:
            raise PromptError(f"{text}: the dataset has splits {', '.join(splits)}; name one "
                              f"(hf:NAME:SPLIT, e.g. {text}:{splits[0]})")
        split = splits[0]
    if split not in splits:
        raise PromptError(f"{text}: no split {split!r}; the dataset has {', '.join(splits)}")
    return data[split], split


@contextlib.contextmanager
def _offline_datasets():
    """The ``datasets`` package with the hub switched off for the duration (only what is cached is read)."""
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")   # read when datasets is first imported
    try:
        import datasets
    except ImportError:
        raise PromptError("hf: prompts need the datasets package (pip install 'tuco_kernels[eval]' or datasets)") from None
    import huggingface_hub.constants as hub_constants

    saved = datasets.config.HF_HUB_OFFLINE, hub_constants.HF_HUB_OFFLINE
    datasets.config.HF_HUB_OFFLINE = hub_constants.HF_HUB_OFFLINE = True
    try:
        yield datasets
    finally:
        datasets.config.HF_HUB_OFFLINE, hub_constants.HF_HUB_OFFLINE = saved


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]


# ------------------------------------------------------------------------------------------------- tables

def table_prompts(rows: list[dict], columns: list[str], source: str, *, column: str | None = None) -> list[Prompt]:
    """Prompts from a table's rows: the prompt column (``column``, else ``prompt``, else ``messages``), the ``id``
    column when there is one, every other column in ``extra["columns"]``."""
    if column is not None and column not in columns:
        raise PromptError(f"{source}: no column {column!r}; the columns are {', '.join(columns)}")
    key = column or next((c for c in PROMPT_COLUMNS if c in columns), None)
    if key is None:
        raise PromptError(f"{source}: no 'prompt' or 'messages' column (the columns are {', '.join(columns)}); "
                          f"name the prompt column, e.g. hf:NAME:SPLIT:COLUMN")
    carried = [c for c in columns if c not in (key, "id")]
    records = []
    for i, row in enumerate(rows):
        where = f"{source} row {i}"
        value = row.get(key)
        pid = i if row.get("id") is None else _check_id(row["id"], where)
        if isinstance(value, list):
            rec = Prompt(pid, where, messages=_check_messages(value, where))
        elif value is None:
            raise PromptError(f"{where}: the {key!r} cell is empty")
        else:
            rec = Prompt(pid, where, text=_check_text(value, where))
        if carried:
            rec.extra["columns"] = {c: row.get(c) for c in carried}
        records.append(rec)
    if not records:
        raise PromptError(f"{source}: no prompts (the table has no rows)")
    return carry_columns(unify_ids(records))
