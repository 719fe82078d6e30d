"""The prompt readers (tuco_kernels/prompts/records.py) as properties over what hypothesis draws: prompts written as a
user would write them read back as written, in order, with their ids; and whatever bytes or JSON a file holds,
reading it gives records that keep the readers' promises or one PromptError naming the file, never another
exception. (A separate file from test_records.py, so that other work on the readers merges without conflicts.)"""

from __future__ import annotations

import csv
import io
import json
import re
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tuco_kernels.errors import PromptError
from tuco_kernels.prompts.records import CHAT_ROLES, normalize_prompts, read_prompt_file

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

# text as people write it: any character but the surrogates (not text) and, for one-line formats, no line break
TEXT = st.text(st.characters(exclude_categories=("Cs",)), min_size=1, max_size=80).filter(lambda t: t.strip())
LINE = TEXT.filter(lambda t: "\n" not in t and "\r" not in t)
IDS = st.one_of(st.integers(-2**63, 2**63 - 1),
                st.text(st.characters(exclude_categories=("Cs",)), min_size=1, max_size=12).filter(
                    lambda t: t.strip().lower() not in {"", "nan", "na", "n/a", "null", "none", "<na>"}))


def read(name: str, data: bytes):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        path.write_bytes(data)
        return read_prompt_file(path)


def keeps_promises(records) -> None:
    """What every reader promises about the records it returns."""
    assert records
    ids = [r.id for r in records]
    assert len(set(ids)) == len(ids)
    assert all(isinstance(i, int) for i in ids) or all(isinstance(i, str) for i in ids)
    for r in records:
        kinds = [r.text is not None, r.messages is not None, r.input_ids is not None]
        assert sum(kinds) == 1
        if r.text is not None:
            assert r.text.strip()
            r.text.encode("utf-8")
        if r.messages is not None:
            assert all(m["role"] in CHAT_ROLES and m["content"].strip() for m in r.messages)
            for m in r.messages:
                m["content"].encode("utf-8")
        if r.input_ids is not None:
            assert r.input_ids and all(type(t) is int for t in r.input_ids)


@given(st.lists(st.tuples(IDS, TEXT), min_size=1, max_size=8, unique_by=lambda p: str(p[0])))
@SETTINGS
def test_jsonl_prompts_read_back_as_written(rows):
    data = "".join(json.dumps({"id": i, "prompt": t}) + "\n" for i, t in rows).encode()
    records = read("p.jsonl", data)
    keeps_promises(records)
    assert [r.text for r in records] == [t for _, t in rows]
    same_kind = all(isinstance(i, int) for i, _ in rows)
    assert [r.id for r in records] == [i if same_kind else str(i) for i, _ in rows]


@given(st.lists(st.tuples(IDS, TEXT), min_size=1, max_size=8, unique_by=lambda p: str(p[0]).strip()))
@SETTINGS
def test_csv_prompts_read_back_as_written(rows):
    buf = io.StringIO(newline="")
    writer = csv.writer(buf)
    writer.writerow(["id", "prompt"])
    writer.writerows([str(i), t] for i, t in rows)
    records = read("p.csv", buf.getvalue().encode())
    keeps_promises(records)
    assert [r.text for r in records] == [t for _, t in rows]
    assert [str(r.id) for r in records] == [str(i) for i, _ in rows]


@given(st.lists(LINE, min_size=1, max_size=10))
@SETTINGS
def test_txt_prompts_are_the_non_blank_lines(lines):
    records = read("p.txt", ("\n".join(lines) + "\n").encode())
    keeps_promises(records)
    assert [r.text for r in records] == lines and [r.id for r in records] == list(range(len(lines)))


@given(st.sampled_from(["p.jsonl", "p.csv", "p.txt"]), st.binary(max_size=300))
@SETTINGS
def test_any_bytes_give_records_or_one_named_error(name, data):
    try:
        records = read(name, data)
    except PromptError as exc:
        assert re.match(rf"^\S*/{re.escape(name)}(:\d+)?: ", str(exc)), str(exc)   # names the file (and line)
        return
    keeps_promises(records)


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
                    max_leaves=8)
ITEM = st.fixed_dictionaries({}, optional={
    "id": JSON | IDS, "prompt": JSON | TEXT, "text": JSON, "input_ids": st.lists(st.integers(-3, 10**6), max_size=4) | JSON,
    "messages": st.lists(st.fixed_dictionaries({"role": st.sampled_from([*CHAT_ROLES, "usr", ""]) | JSON,
                                                "content": TEXT | st.just("") | JSON}), max_size=3) | JSON})


@given(st.lists(ITEM | JSON, min_size=1, max_size=5))
@SETTINGS
def test_any_json_lines_give_records_or_one_named_error(items):
    data = "".join(json.dumps(i) + "\n" for i in items).encode()
    try:
        records = read("p.jsonl", data)
    except PromptError as exc:
        assert re.match(r"^\S*/p\.jsonl:\d+: ", str(exc)), str(exc)   # names the file and the line
        return
    keeps_promises(records)


@given(st.integers(0xD800, 0xDFFF), st.sampled_from(["prompt", "id", "content"]))
@SETTINGS
def test_a_lone_surrogate_anywhere_is_named(code, where):
    escape = f"\\u{code:04x}"
    line = {"prompt": f'{{"prompt": "a{escape}b"}}',
            "id": f'{{"id": "x{escape}", "prompt": "fine"}}',
            "content": f'{{"messages": [{{"role": "user", "content": "{escape}"}}]}}'}[where]
    with pytest.raises(PromptError, match=r"p\.jsonl:1: .*lone surrogate"):
        read("p.jsonl", (line + "\n").encode())


def test_input_ids_as_a_tensor_or_an_array():
    import numpy as np
    import torch

    for ids in (torch.tensor([5, 6, 7]), np.array([5, 6, 7]), [np.int64(5), 6, 7]):
        (record,) = normalize_prompts([{"input_ids": ids}])
        assert record.input_ids == [5, 6, 7] and all(type(t) is int for t in record.input_ids)
    with pytest.raises(PromptError, match="non-empty list of integers"):
        normalize_prompts([{"input_ids": torch.tensor([[1, 2]])}])


def test_roles_and_empty_content():
    with pytest.raises(PromptError, match=r"prompt 0: message 1 has role 'bot'; use one of system, developer"):
        normalize_prompts([[{"role": "user", "content": "hi"}, {"role": "bot", "content": "yo"}]])
    with pytest.raises(PromptError, match=r"prompt 0: message 0 \(system\) has empty content"):
        normalize_prompts([[{"role": "system", "content": " "}, {"role": "user", "content": "hi"}]])
