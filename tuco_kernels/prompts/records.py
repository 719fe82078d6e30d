"""Prompts as records: from Python objects or prompt files, checked, each knowing where it came from.

A prompt is raw text, a chat (a list of ``{"role", "content"}`` messages) or pre-tokenized
(``{"input_ids": [...]}``). Every error names the prompt (its index, or file and line).
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import TucoError


@dataclass
class Prompt:
    """One prompt: exactly one of ``text``, ``messages``, ``input_ids`` is set. ``where`` names it in errors."""

    id: object
    where: str
    text: str | None = None
    messages: list | None = None
    input_ids: list | None = None
    extra: dict = field(default_factory=dict)


def _from_mapping(item: dict, idx: int, where: str) -> Prompt:
    pid = item.get("id", idx)
    keys = [k for k in ("prompt", "text", "messages", "input_ids") if k in item]
    if len(keys) != 1:
        raise TucoError(f"{where}: expected exactly one of 'prompt', 'messages' or 'input_ids'; found {keys or 'none'}")
    key = keys[0]
    value = item[key]
    if key in ("prompt", "text"):
        return Prompt(pid, where, text=_check_text(value, where))
    if key == "messages":
        return Prompt(pid, where, messages=_check_messages(value, where))
    return Prompt(pid, where, input_ids=_check_ids(value, where))


def _check_text(value, where: str) -> str:
    if not isinstance(value, str):
        raise TucoError(f"{where}: prompt must be a string, got {type(value).__name__}")
    if not value.strip():
        raise TucoError(f"{where}: empty prompt")
    return value


def _check_messages(value, where: str) -> list:
    if not isinstance(value, list) or not value:
        raise TucoError(f"{where}: 'messages' must be a non-empty list of {{'role', 'content'}} objects")
    for j, m in enumerate(value):
        if not (isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)):
            raise TucoError(f"{where}: message {j} must be an object with string 'role' and 'content'")
    return value


def _check_ids(value, where: str) -> list:
    if not isinstance(value, list) or not value or not all(isinstance(t, int) and not isinstance(t, bool) for t in value):
        raise TucoError(f"{where}: 'input_ids' must be a non-empty list of integers")
    return value


def normalize_prompts(prompts) -> list[Prompt]:
    """Accept a string, a chat, or a list of strings / chats / mappings; return :class:`Prompt` records."""
    if isinstance(prompts, str) or (isinstance(prompts, list) and prompts and isinstance(prompts[0], dict)
                                    and "role" in prompts[0]):
        prompts = [prompts]
    out = []
    for i, item in enumerate(prompts):
        if isinstance(item, Prompt):
            out.append(item)
        elif isinstance(item, str):
            out.append(Prompt(i, f"prompt {i}", text=_check_text(item, f"prompt {i}")))
        elif isinstance(item, dict):
            out.append(_from_mapping(item, i, f"prompt {i}"))
        elif isinstance(item, list):
            out.append(Prompt(i, f"prompt {i}", messages=_check_messages(item, f"prompt {i}")))
        else:
            raise TucoError(f"prompt {i}: unsupported prompt type {type(item).__name__}")
    if not out:
        raise TucoError("no prompts given")
    return out


def read_prompt_file(path) -> list[Prompt]:
    """Read .jsonl (``prompt`` or ``messages``, optional ``id``), .csv (column ``prompt``) or .txt (a prompt a line)."""
    path = Path(path)
    if not path.is_file():
        raise TucoError(f"{path}: prompt file not found")
    suffix = path.suffix.lower()
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise TucoError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    records: list[Prompt] = []
    if suffix == ".jsonl":
        for lineno, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                item = json.loads(line)
            except json.JSONDecodeError as exc:
                raise TucoError(f"{where}: invalid JSON ({exc.msg} at column {exc.colno})") from exc
            if not isinstance(item, dict):
                raise TucoError(f"{where}: each line must be a JSON object")
            records.append(_from_mapping(item, len(records), where))
    elif suffix == ".csv":
        reader = csv.DictReader(text.splitlines())
        if not reader.fieldnames or "prompt" not in reader.fieldnames:
            raise TucoError(f"{path}:1: CSV header must have a 'prompt' column (found {reader.fieldnames})")
        for row in reader:
            where = f"{path}:{reader.line_num}"
            pid = row["id"] if row.get("id") not in (None, "") else len(records)
            records.append(Prompt(pid, where, text=_check_text(row["prompt"] or "", where)))
    elif suffix == ".txt":
        for lineno, line in enumerate(text.splitlines(), 1):
            if line.strip():
                records.append(Prompt(len(records), f"{path}:{lineno}", text=line))
    else:
        raise TucoError(f"{path}: unknown prompt file type {suffix!r}; use .jsonl, .csv or .txt")
    if not records:
        raise TucoError(f"{path}: no prompts in file")
    return records
