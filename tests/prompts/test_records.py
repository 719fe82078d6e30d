"""Prompt normalisation, prompt files and tokenization; every error names its prompt or file:line."""

import pytest

import tuco_kernels as tk
from tuco_kernels.errors import PromptError
from tuco_kernels.prompts.records import normalize_prompts, read_prompt_file
from tuco_kernels.prompts.tokenize import tokenize
from tuco_kernels.errors import TucoError


def test_prompt_kinds(tokenizer):
    chat = [{"role": "user", "content": "Can you help me?"}]
    recs = normalize_prompts(["plain text", chat, {"input_ids": [1, 5, 7], "id": "x"}, {"prompt": "p", "id": 9}])
    assert [r.id for r in recs] == ["0", "1", "x", "9"]   # one id type per input: strings when any id is one
    ids = tokenize(recs, tokenizer, chat=False)
    assert ids[0] == tokenizer("plain text")["input_ids"] and ids[0][0] == tokenizer.bos_token_id
    rendered = tokenizer.apply_chat_template(chat, add_generation_prompt=True, tokenize=False)
    assert ids[1] == tokenizer(rendered, add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(ids[1]).endswith("<|im_start|>assistant\n")  # last token is the template's
    assert ids[2] == [1, 5, 7]
    assert normalize_prompts(chat)[0].messages == chat  # a single chat is one prompt


def test_chat_flag_and_system_prompt(tokenizer):
    ids = tokenize(normalize_prompts(["Hi"]), tokenizer, chat=True, system_prompt="Be brief.")
    text = tokenizer.decode(ids[0])
    assert text.startswith("<|im_start|>system\nBe brief.<|im_end|>") and "<|im_start|>user\nHi<|im_end|>" in text


@pytest.mark.parametrize("bad,match", [
    ("", "prompt 0: empty prompt"),
    ({"prompt": "a", "messages": []}, "exactly one of"),
    ({"messages": [{"role": "user"}]}, "message 0 must be an object"),
    ({"input_ids": []}, "non-empty list of integers"),
    (3.5, "unsupported prompt type float"),
])
def test_bad_prompts(bad, match):
    with pytest.raises(TucoError, match=match):
        normalize_prompts([bad])


def test_token_ids_outside_vocab_and_no_tokenizer(tokenizer):
    with pytest.raises(TucoError, match="prompt 0: token id 999 is outside the model's vocabulary"):
        tokenize(normalize_prompts([{"input_ids": [1, 999]}]), tokenizer, vocab_size=320)
    with pytest.raises(TucoError, match="no tokenizer"):
        tokenize(normalize_prompts(["text"]), None)


def test_chat_without_template(tokenizer):
    import copy
    tok = copy.deepcopy(tokenizer)
    tok.chat_template = None
    with pytest.raises(TucoError, match="prompt 0: chat formatting requested but the fine-tuned tokenizer has no"):
        tokenize(normalize_prompts(["hi"]), tok, chat=True)


def test_prompt_files(tmp_path):
    (tmp_path / "p.jsonl").write_text('{"prompt": "a", "id": "first"}\n\n{"messages": [{"role": "user", "content": "b"}]}\n')
    (tmp_path / "p.csv").write_text('id,prompt\nr1,"hello, world"\n,second\n')
    (tmp_path / "p.txt").write_text("one\n\ntwo\n")
    j = read_prompt_file(tmp_path / "p.jsonl")
    assert [r.id for r in j] == ["first", "2"] and j[1].messages[0]["content"] == "b"   # one id type: strings; line 3 (0-based 2)
    c = read_prompt_file(tmp_path / "p.csv")
    assert [(r.id, r.text) for r in c] == [("r1", "hello, world"), ("1", "second")]
    t = read_prompt_file(tmp_path / "p.txt")
    assert [r.text for r in t] == ["one", "two"] and t[1].where.endswith("p.txt:3")


@pytest.mark.parametrize("name,content,match", [
    ("bad.jsonl", '{"prompt": "ok"}\n{"prompt": oops}\n', r"bad.jsonl:2: invalid JSON"),
    ("arr.jsonl", '["x"]\n', r"arr.jsonl:1: each line must be a JSON object"),
    ("nofield.jsonl", '{"id": 3}\n', r"nofield.jsonl:1: expected exactly one of"),
    ("empty.jsonl", '{"prompt": "  "}\n', r"empty.jsonl:1: empty prompt"),
    ("h.csv", "text\nabc\n", r"h.csv:1: CSV header must have a 'prompt' column"),
    ("e.csv", "prompt\nok\n\"\"\n", r"e.csv:3: empty prompt"),
    ("none.txt", "\n\n", r"none.txt: no prompts in file"),
    ("x.tsv", "a\n", r"unknown prompt file type '.tsv'"),
])
def test_bad_prompt_files(tmp_path, name, content, match):
    (tmp_path / name).write_text(content)
    with pytest.raises(TucoError, match=match):
        read_prompt_file(tmp_path / name)


def test_missing_and_binary_files(tmp_path):
    with pytest.raises(TucoError, match="prompt file not found"):
        read_prompt_file(tmp_path / "nope.jsonl")
    (tmp_path / "bin.txt").write_bytes(b"\xff\xfe\x00abc")
    with pytest.raises(TucoError, match="bin.txt: not UTF-8"):
        read_prompt_file(tmp_path / "bin.txt")


def test_csv_with_a_byte_order_mark_keeps_its_id_column(tmp_path):
    """Excel's "CSV UTF-8" starts with a BOM; the first column is still `id`, not `\ufeffid`."""
    (tmp_path / "x.csv").write_bytes("id,prompt\nr1,hello\nr2,world\n".encode("utf-8-sig"))
    assert [r.id for r in read_prompt_file(tmp_path / "x.csv")] == ["r1", "r2"]


@pytest.mark.parametrize("name,content,match", [
    ("dup.jsonl", '{"id": "a", "prompt": "x"}\n{"id": "b", "prompt": "y"}\n{"id": "a", "prompt": "z"}\n',
     r"dup.jsonl:3: duplicate id 'a' \(first at .*dup.jsonl:1\)"),
    ("dup.csv", "id,prompt\n7,x\n7,y\n", r"dup.csv:3: duplicate id '7' \(first at .*dup.csv:2\)"),
    ("mixed.jsonl", '{"id": 1, "prompt": "x"}\n{"id": "1", "prompt": "y"}\n', r"mixed.jsonl:2: duplicate id '1'"),
    ("nan.jsonl", '{"id": NaN, "prompt": "x"}\n', r"nan.jsonl:1: id must be a string or an integer, got nan"),
    ("float.jsonl", '{"id": 1.5, "prompt": "x"}\n', r"float.jsonl:1: id must be a string or an integer"),
    ("bool.jsonl", '{"id": true, "prompt": "x"}\n', r"bool.jsonl:1: id must be a string or an integer"),
    ("nanstr.csv", "id,prompt\nNaN,x\n", r"nanstr.csv:2: id 'NaN' reads as a missing value"),
    ("quote.csv", 'id,prompt\na,"unterminated\nb,fine\n', r"quote.csv:2: malformed CSV .*never closed"),
    ("wide.csv", "id,prompt\na,x,extra\n", r"wide.csv:2: more fields than the header's 2"),
])
def test_ids_and_csv_mistakes_are_named(tmp_path, name, content, match):
    (tmp_path / name).write_text(content)
    with pytest.raises(TucoError, match=match):
        read_prompt_file(tmp_path / name)


def test_one_id_type_per_input():
    assert [r.id for r in normalize_prompts([{"prompt": "a", "id": 3}, {"prompt": "b", "id": 4}])] == [3, 4]
    assert [r.id for r in normalize_prompts([{"prompt": "a", "id": 3}, {"prompt": "b", "id": "x"}])] == ["3", "x"]


def test_prompts_longer_than_the_model_are_refused_or_cut(llama_pair):
    from tuco_kernels.prompts.tokenize import prepare

    long = {"id": "long", "input_ids": [5] * 300}        # the tiny models have 256 positions
    with pytest.raises(TucoError, match=r"prompt 1 \(id 'long'\): 300 tokens, but the model has 256 positions"):
        prepare(llama_pair, ["short", long])
    for side, kept in (("left", slice(-256, None)), ("right", slice(0, 256))):
        records, ids = prepare(llama_pair, ["short", {"id": "long", "input_ids": list(range(3, 303))}], truncate=side)
        assert ids[1] == list(range(3, 303))[kept] and records[1].extra["truncated_from"] == 300
        assert "truncated_from" not in records[0].extra


# ---------------------------------------------------------------------------------------------- labels and ids


def test_extra_csv_columns_and_jsonl_fields_are_carried_as_labels(tmp_path):
    (tmp_path / "p.csv").write_text("id,prompt,source,set\na,hello there,web,1\nb,how are you,chat,2\n")
    rows = tk.read_prompts(tmp_path / "p.csv")
    assert [r.extra["columns"] for r in rows] == [{"source": "web", "set": "1"}, {"source": "chat", "set": "2"}]
    (tmp_path / "p.jsonl").write_text('{"prompt": "hi", "source": "web", "n": 1}\n'
                                      '{"prompt": "yo", "source": "chat", "n": 2.5, "tags": ["x", "y"]}\n')
    rows = tk.read_prompts(tmp_path / "p.jsonl")
    # every row gets every label; ints mixed with floats are numbers; a list is written as JSON text
    assert [r.extra["columns"] for r in rows] == [{"source": "web", "n": 1.0, "tags": None},
                                                  {"source": "chat", "n": 2.5, "tags": '["x", "y"]'}]


@pytest.mark.parametrize("name", ["tuco", "status", "text", "n_tokens", "finetuned"])
def test_a_label_named_like_an_output_column_is_refused_by_name(tmp_path, name):
    (tmp_path / "p.csv").write_text(f"prompt,{name}\nhello,1\n")
    with pytest.raises(PromptError, match=rf"p\.csv:2: the column '{name}' has the name of an output column"):
        tk.read_prompts(tmp_path / "p.csv")


def test_labels_of_mixed_kinds_become_text_so_every_format_can_hold_them():
    rows = normalize_prompts([{"prompt": "a", "y": 1}, {"prompt": "b", "y": "two"}, {"prompt": "c", "y": True},
                              {"prompt": "d"}])
    assert [r.extra["columns"]["y"] for r in rows] == ["1", "two", "True", None]


def test_ids_of_a_txt_or_jsonl_file_are_line_numbers_blank_lines_counted(tmp_path):
    (tmp_path / "p.txt").write_text("first\n\nthird\n   \nfifth\n")
    assert [r.id for r in tk.read_prompts(tmp_path / "p.txt")] == [0, 2, 4]
    (tmp_path / "p.jsonl").write_text('{"prompt": "a"}\n\n{"prompt": "b"}\n')
    assert [r.id for r in tk.read_prompts(tmp_path / "p.jsonl")] == [0, 2]


def test_any_sequence_or_iterable_of_prompts_is_accepted():
    import numpy as np
    import pandas as pd

    texts = ["one prompt", "another prompt"]
    for given in (tuple(texts), np.array(texts), (t for t in texts), pd.Series(texts)):
        rows = normalize_prompts(given)
        assert [(r.id, r.text) for r in rows] == [(0, "one prompt"), (1, "another prompt")], type(given)
    series = pd.Series(texts, index=[7, 3])        # a filtered frame's column: its index are the ids
    assert [r.id for r in normalize_prompts(series)] == [7, 3]
    with pytest.raises(PromptError, match="got int"):
        normalize_prompts(5)
    with pytest.raises(PromptError, match="got dict"):
        normalize_prompts({"prompt": "a mapping is one prompt's fields, not a list"})


def test_a_dataframe_keeps_its_other_columns_as_labels_and_its_index_as_ids():
    import numpy as np
    import pandas as pd

    frame = pd.DataFrame({"prompt": ["a b", "c d"], "source": ["web", "chat"], "score": [1.5, np.nan]},
                         index=[10, 20])
    rows = normalize_prompts(frame)
    assert [r.id for r in rows] == [10, 20]
    assert [r.extra["columns"] for r in rows] == [{"source": "web", "score": 1.5}, {"source": "chat", "score": None}]
    frame["id"] = ["x", "y"]
    assert [r.id for r in normalize_prompts(frame)] == ["x", "y"]
    with pytest.raises(PromptError, match="DataFrame: no 'prompt' or 'messages' column"):
        normalize_prompts(pd.DataFrame({"question": ["a"]}))


def test_a_header_that_is_not_csv_is_named(tmp_path):
    """Found by the hypothesis suite: a file holding only an opened quote failed inside the reader (an internal
    error) instead of naming line 1."""
    (tmp_path / "p.csv").write_bytes(b'"')
    with pytest.raises(PromptError, match=r"p\.csv:1: malformed CSV .*a quote opened there is never closed"):
        read_prompt_file(tmp_path / "p.csv")
