"""Prompts from Parquet files and Hugging Face datasets (the local datasets cache, read offline, and save_to_disk
folders), through tk.read_prompts and `tuco score --prompts`: rows, ids, chats, carried columns, named errors."""

import json
import re

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import tuco_kernels as tk
from tuco_kernels.cli import main
from tuco_kernels.errors import PromptError

from tests.fixtures.hf_datasets import cache_dataset
from tests.fixtures.pairs import PROMPTS, save_pair

datasets = pytest.importorskip("datasets")

CHAT = [{"role": "user", "content": "Can you help me?"}]


def _parquet(path, rows):
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def test_parquet_prompts_ids_chats_and_carried_columns(tmp_path):
    path = _parquet(tmp_path / "p.parquet", [{"id": 7, "prompt": "Hi there", "source": "web", "score": 0.5},
                                             {"id": 9, "prompt": "Photosynthesis", "source": "chat", "score": None}])
    recs = tk.read_prompts(path)
    assert [(r.id, r.text, r.where) for r in recs] == [(7, "Hi there", f"{path} row 0"),
                                                       (9, "Photosynthesis", f"{path} row 1")]
    assert recs[0].extra["columns"] == {"source": "web", "score": 0.5}
    assert recs[1].extra["columns"] == {"source": "chat", "score": None}
    chats = tk.read_prompts(_parquet(tmp_path / "c.parquet", [{"messages": CHAT}, {"messages": CHAT * 2}]))
    assert [r.messages for r in chats] == [CHAT, CHAT * 2] and [r.id for r in chats] == [0, 1]
    assert "columns" not in chats[0].extra
    mixed = tk.read_prompts(_parquet(tmp_path / "m.parquet", [{"id": "a", "prompt": "x"}, {"id": None, "prompt": "y"}]))
    assert [r.id for r in mixed] == ["a", "1"]   # a missing id is the row's index; one id type per input


@pytest.mark.parametrize("rows, message", [
    ([{"text": "hi", "id": 1}], "no 'prompt' or 'messages' column (the columns are text, id)"),
    ([{"prompt": "hi"}, {"prompt": None}], "row 1: the 'prompt' cell is empty"),
    ([{"prompt": "hi"}, {"prompt": "   "}], "row 1: empty prompt"),
    ([{"prompt": "hi", "id": 1.5}], "row 0: id must be a string or an integer, got 1.5"),
    ([{"prompt": "hi", "id": 1}, {"prompt": "ho", "id": 1}], "row 1: duplicate id 1 (first at"),
    ([{"messages": [{"role": "user"}]}], "row 0: message 0 must be an object with string 'role' and 'content'"),
])
def test_parquet_mistakes_name_the_file_and_row(tmp_path, rows, message):
    path = _parquet(tmp_path / "p.parquet", rows)
    with pytest.raises(PromptError, match=re.escape(message)):
        tk.read_prompts(path)


def test_unreadable_or_empty_parquet_and_unknown_types(tmp_path):
    (tmp_path / "bad.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(PromptError, match="bad.parquet: not a readable Parquet file"):
        tk.read_prompts(tmp_path / "bad.parquet")
    pq.write_table(pa.table({"prompt": pa.array([], pa.string())}), tmp_path / "empty.parquet")
    with pytest.raises(PromptError, match="empty.parquet: no prompts"):
        tk.read_prompts(tmp_path / "empty.parquet")
    with pytest.raises(PromptError, match="missing.parquet: prompt file not found"):
        tk.read_prompts(tmp_path / "missing.parquet")
    (tmp_path / "p.tsv").write_text("prompt\nhi\n")
    with pytest.raises(PromptError, match=r"unknown prompt file type '.tsv'; use .jsonl, .csv, .txt, .parquet, or hf:"):
        tk.read_prompts(tmp_path / "p.tsv")
    (tmp_path / "folder").mkdir()
    with pytest.raises(PromptError, match="is a directory, not a prompt file"):
        tk.read_prompts(tmp_path / "folder")


@pytest.fixture
def hf_cache(tmp_path, monkeypatch):
    """A datasets cache holding 'tuco_tiny_prompts' (train and test splits), as datasets itself prepares it."""
    cache = tmp_path / "hf_datasets_cache"
    cache_dataset(cache, "tuco_tiny_prompts", {
        "train": [{"id": i, "prompt": p, "question": f"Q{i}?", "label": i % 2} for i, p in enumerate(PROMPTS)],
        "test": [{"id": 100, "prompt": "Hi", "question": "Why?", "label": 1}]}, tmp_path / "work")
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(cache))
    return cache


def test_hf_dataset_from_the_local_cache(hf_cache):
    train = tk.read_prompts("hf:tuco_tiny_prompts:train")
    assert [r.text for r in train] == PROMPTS and [r.id for r in train] == [0, 1, 2, 3]
    assert train[2].where == "hf:tuco_tiny_prompts:train row 2"
    assert train[1].extra["columns"] == {"question": "Q1?", "label": 1}
    # another column as the prompt: the table's own 'prompt' column would be carried under an output column's name
    with pytest.raises(PromptError, match=r"hf:tuco_tiny_prompts:test row 0: the column 'prompt' has the "
                                          r"name of an output column; rename it"):
        tk.read_prompts("hf:tuco_tiny_prompts:test:question")
    assert datasets.config.HF_HUB_OFFLINE is True   # the tests run offline; reading leaves the setting as it was


@pytest.mark.parametrize("source, message", [
    ("hf:tuco_tiny_prompts", "the dataset has splits train, test; name one (hf:NAME:SPLIT, e.g. "
                             "hf:tuco_tiny_prompts:train)"),
    ("hf:tuco_tiny_prompts:validation", "no split 'validation'; the dataset has train, test"),
    ("hf:tuco_tiny_prompts:train:answer", "no column 'answer'; the columns are id, prompt, question, label"),
    ("hf:tuco_tiny_prompts:train:label", "row 0: prompt must be a string, got int"),
    ("hf:nobody/not_cached", "dataset 'nobody/not_cached' is not in the local Hugging Face datasets cache ("),
    ("hf:", "write hf:NAME, hf:NAME:SPLIT or hf:NAME:SPLIT:COLUMN"),
    ("hf:a:b:c:d", "write hf:NAME, hf:NAME:SPLIT or hf:NAME:SPLIT:COLUMN"),
])
def test_hf_dataset_mistakes_are_named(hf_cache, source, message):
    with pytest.raises(PromptError, match=re.escape(message)):
        tk.read_prompts(source)


def test_save_to_disk_folders(tmp_path):
    rows = {"prompt": PROMPTS[:2], "topic": ["a", "b"]}
    datasets.Dataset.from_dict(rows).save_to_disk(str(tmp_path / "one"))
    recs = tk.read_prompts(tmp_path / "one")
    assert [r.text for r in recs] == PROMPTS[:2] and recs[1].extra["columns"] == {"topic": "b"}
    assert recs[0].where == f"hf:{tmp_path / 'one'} row 0"
    with pytest.raises(PromptError, match="the column 'prompt' has the name of an output column"):   # no splits:
        tk.read_prompts(f"hf:{tmp_path / 'one'}:topic")                                             # hf:FOLDER:COLUMN
    with pytest.raises(PromptError, match="the saved dataset has no splits, so no split 'nope'"):
        tk.read_prompts(f"hf:{tmp_path / 'one'}:nope")
    datasets.DatasetDict({"train": datasets.Dataset.from_dict(rows),
                          "test": datasets.Dataset.from_dict({"messages": [CHAT]})}).save_to_disk(str(tmp_path / "two"))
    assert [r.messages for r in tk.read_prompts(f"hf:{tmp_path / 'two'}:test")] == [CHAT]
    with pytest.raises(PromptError, match="the dataset has splits train, test; name one"):
        tk.read_prompts(tmp_path / "two")
    (tmp_path / "plain").mkdir()
    with pytest.raises(PromptError, match="is a folder but not one written by datasets' save_to_disk"):
        tk.read_prompts(f"hf:{tmp_path / 'plain'}")


def test_tuco_score_reads_parquet_and_hf_prompts(tmp_path, tokenizer, hf_cache, capsys):
    d = save_pair(tmp_path / "pair", tokenizer)
    src = _parquet(tmp_path / "p.parquet", [{"id": f"p{i}", "prompt": p, "source": "x"} for i, p in enumerate(PROMPTS)])
    expected = tk.score(tk.load_pair(d / "pt", d / "ft"), PROMPTS).tuco
    for i, prompts in enumerate([str(src), "hf:tuco_tiny_prompts:train"]):
        out = tmp_path / f"s{i}.jsonl"
        assert main(["score", "--pretrained", str(d / "pt"), "--finetuned", str(d / "ft"), "--prompts", prompts,
                     "--out", str(out)]) == 0
        got = [json.loads(line) for line in out.read_text().splitlines()]
        assert [g["tuco"] for g in got] == pytest.approx(list(expected), abs=1e-6)
    assert [g["id"] for g in got] == [0, 1, 2, 3]
    assert main(["score", "--pretrained", str(d / "pt"), "--finetuned", str(d / "ft"), "--prompts",
                 "hf:tuco_tiny_prompts:nope", "--out", str(tmp_path / "x.jsonl")]) == 2
    assert "tuco: error: hf:tuco_tiny_prompts:nope: no split 'nope'" in capsys.readouterr().err
