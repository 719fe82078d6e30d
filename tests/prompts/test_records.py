"""Prompt normalisation, prompt files and tokenization; every error names its prompt or file:line."""

import pytest

from tuco_kernels.prompts.records import normalize_prompts, read_prompt_file
from tuco_kernels.prompts.tokenize import tokenize
from tuco_kernels.errors import TucoError


def test_prompt_kinds(tokenizer):
    chat = [{"role": "user", "content": "Can you help me?"}]
    recs = normalize_prompts(["plain text", chat, {"input_ids": [1, 5, 7], "id": "x"}, {"prompt": "p", "id": 9}])
    assert [r.id for r in recs] == [0, 1, "x", 9]
    ids = tokenize(recs, tokenizer)
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
    assert [r.id for r in j] == ["first", 1] and j[1].messages[0]["content"] == "b"
    c = read_prompt_file(tmp_path / "p.csv")
    assert [(r.id, r.text) for r in c] == [("r1", "hello, world"), (1, "second")]
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
