"""The cases a second, independent sweep of bad input found (167 cases, written without reading the first sweep's
tests): each is now a named error before any work, or the right result. Complements tests/test_faults.py."""

import json

import numpy as np
import pytest

import tuco_kernels as tk
from tests.fixtures.pairs import PROMPTS, save_pair
from tests.fixtures.tiny import build_model, perturbed_copy, tiny_config
from tuco_kernels import cli
from tuco_kernels.errors import ModelError, OptionError, PromptError, TucoError
from tuco_kernels.prompts.records import read_prompt_file


@pytest.fixture(scope="module")
def saved(tmp_path_factory, tokenizer):
    root = tmp_path_factory.mktemp("fresh")
    save_pair(root, tokenizer)
    (root / "p.txt").write_text("\n".join(PROMPTS) + "\n")
    return root


def run(*args):
    return cli.main([*map(str, args)])


def models(saved):
    return ["--pretrained", saved / "pt", "--finetuned", saved / "ft"]


def one_line_error(capsys, *needles):
    err = capsys.readouterr().err
    assert "Traceback" not in err
    line = [x for x in err.splitlines() if x.startswith("tuco: error:")]
    assert line, err
    for n in needles:
        assert n in line[-1], line[-1]


# ------------------------------------------------------------------------------------------ prompt files


def test_only_newlines_separate_prompts(tmp_path):
    """U+2028 and U+0085 are characters of a prompt (str.splitlines would cut there)."""
    (tmp_path / "p.txt").write_text("Hi\u2028there\nsecond\u0085line\r\nthird\n", encoding="utf-8")
    assert [r.text for r in read_prompt_file(tmp_path / "p.txt")] == ["Hi\u2028there", "second\u0085line", "third"]
    (tmp_path / "p.jsonl").write_text(json.dumps({"prompt": "a\u2028b"}, ensure_ascii=False) + "\n", encoding="utf-8")
    assert [r.text for r in read_prompt_file(tmp_path / "p.jsonl")] == ["a\u2028b"]


def test_an_id_too_large_for_64_bits_is_refused_before_loading(tmp_path):
    (tmp_path / "p.jsonl").write_text(json.dumps({"id": 10**30, "prompt": "Hi"}) + "\n")
    with pytest.raises(PromptError, match=r"p.jsonl:1: id 1000000000000000000000000000000 does not fit in a 64-bit"):
        read_prompt_file(tmp_path / "p.jsonl")
    (tmp_path / "q.jsonl").write_text(json.dumps({"id": 2**63 - 1, "prompt": "Hi"}) + "\n")
    assert read_prompt_file(tmp_path / "q.jsonl")[0].id == 2**63 - 1


def test_a_directory_as_the_prompt_file_is_named_as_one(tmp_path, capsys, saved):
    (tmp_path / "pdir").mkdir()
    assert run("score", *models(saved), "--prompts", tmp_path / "pdir", "--out", tmp_path / "o.csv") == 2
    one_line_error(capsys, "pdir: is a directory, not a prompt file")


@pytest.mark.parametrize("prompts,what", [(123, "got int"), (None, "got NoneType"), (b"Hi", "not bytes"),
                                          ({1, 2}, "got set")])
def test_prompts_of_the_wrong_type_are_named(llama_pair, prompts, what):
    for call in (tk.score, tk.next_token_logprobs):
        with pytest.raises(PromptError, match=what):
            call(llama_pair, prompts)


# ------------------------------------------------------------------------------------------ options


@pytest.mark.parametrize("kwargs,name", [({"batch_tokens": "4096"}, "batch_tokens"), ({"batch_tokens": 0}, "batch_tokens"),
                                         ({"batch_tokens": 2.5}, "batch_tokens")])
def test_numeric_options_of_the_wrong_type_are_option_errors(llama_pair, kwargs, name):
    with pytest.raises(OptionError, match=f"{name} must be a positive integer"):
        tk.score(llama_pair, PROMPTS, chat=False, **kwargs)


@pytest.mark.parametrize("value", [2.5, "3", 0, True])
def test_max_new_tokens_must_be_a_positive_integer(llama_pair, value):
    with pytest.raises(OptionError, match="max_new_tokens must be a positive integer"):
        tk.generate(llama_pair, ["Hi"], max_new_tokens=value, chat=False)


def test_numpy_integers_are_integers(llama_pair):
    out = tk.generate(llama_pair, ["Hi"], max_new_tokens=np.int64(2), chat=False)
    assert len(out[0]["token_ids"]) <= 2


def test_a_system_prompt_with_raw_text_is_refused(llama_pair, saved, tmp_path, capsys):
    with pytest.raises(OptionError, match="system prompt .* needs chat rendering"):
        tk.score(llama_pair, PROMPTS, chat=False, system_prompt="Be nice.")
    assert run("score", *models(saved), "--prompts", saved / "p.txt", "--out", tmp_path / "o.csv", "--raw-text",
               "--system-prompt", "Be nice.") == 2
    one_line_error(capsys, "needs chat rendering")
    assert not (tmp_path / "o.csv").exists()


def test_a_template_with_raw_text_is_refused(saved, tmp_path, capsys):
    assert run("score", *models(saved), "--prompts", saved / "p.txt", "--out", tmp_path / "o.csv", "--raw-text",
               "--template", "llama2") == 2
    one_line_error(capsys, "--template llama2 and --raw-text contradict each other")


@pytest.mark.parametrize("flag,value", [("--shard-tokens", "0"), ("--shard-tokens", "-5"), ("--rank-timeout", "nan"),
                                        ("--rank-timeout", "-1"), ("--rank-timeout", "inf")])
def test_sharded_options_are_checked(saved, tmp_path, capsys, flag, value):
    assert run("score", *models(saved), "--prompts", saved / "p.txt", "--out", f"{tmp_path}/run/", flag, value) == 2
    one_line_error(capsys, flag)
    assert not (tmp_path / "run").exists()


# ------------------------------------------------------------------------------------------ outputs


def test_a_sharded_out_that_is_a_file_is_named(saved, tmp_path, capsys):
    (tmp_path / "o.csv").write_text("mine\n")
    assert run("score", *models(saved), "--prompts", saved / "p.txt", "--out", f"{tmp_path}/o.csv/") == 2
    one_line_error(capsys, "o.csv: exists and is not a directory")
    assert (tmp_path / "o.csv").read_text() == "mine\n"


def test_a_directory_of_the_users_own_files_is_not_taken_for_a_run(saved, tmp_path, capsys, llama_pair):
    mine = tmp_path / "mydata"
    mine.mkdir()
    (mine / "scores.parquet").write_bytes(b"my own results")
    assert run("score", *models(saved), "--prompts", saved / "p.txt", "--out", f"{mine}/") == 2
    one_line_error(capsys, "mydata: holds other files (scores.parquet) and no plan.json")
    with pytest.raises(TucoError, match="no plan.json, so it is not a tuco run"):
        tk.score_dataset(llama_pair, PROMPTS, mine, chat=False)
    assert (mine / "scores.parquet").read_bytes() == b"my own results" and sorted(p.name for p in mine.iterdir()) == [
        "scores.parquet"]
    # an empty directory, and a finished run's own directory, are fine
    (tmp_path / "empty").mkdir()
    run_dir = tmp_path / "empty"
    first = tk.score_dataset(llama_pair, PROMPTS, run_dir, chat=False).read()
    again = tk.score_dataset(llama_pair, PROMPTS, run_dir, chat=False).read()
    assert first.equals(again)


# ------------------------------------------------------------------------------------------ models and generation


def test_a_model_argument_of_the_wrong_type_is_named(saved):
    with pytest.raises(ModelError, match="finetuned: expected a model directory, .* got int 5"):
        tk.load_pair(saved / "pt", 5)


def test_a_tokenizer_folder_without_tokenizer_files_is_named(saved, tmp_path, capsys):
    empty = tmp_path / "tok"
    empty.mkdir()
    assert run("score", *models(saved), "--tokenizer", empty, "--prompts", saved / "p.txt",
               "--out", tmp_path / "o.csv") == 2
    one_line_error(capsys, f"{empty}: the tokenizer given (--tokenizer, tokenizer=) has no tokenizer files")


@pytest.fixture(scope="module")
def short_gpt2(tmp_path_factory, tokenizer):
    """A GPT-2 pair with 64 learned positions: generating past them would index past its position embedding."""
    root = tmp_path_factory.mktemp("gpt2-64")
    config = tiny_config("gpt2", len(tokenizer))
    config.n_positions = 64
    pt = build_model(config, seed=0)
    for name, m in (("pt", pt), ("ft", perturbed_copy(pt, scale=0.1, seed=1))):
        m.save_pretrained(root / name)
        tokenizer.save_pretrained(root / name)
    words = 1
    while len(tokenizer(" ".join(["river"] * words))["input_ids"]) < 40:   # a prompt of 40-odd tokens
        words += 1
    prompt = " ".join(["river"] * words)
    (root / "long.txt").write_text(prompt + "\n")
    return root, prompt


def test_generation_that_would_pass_the_models_positions_is_refused_up_front(short_gpt2, tmp_path, capsys):
    root, prompt = short_gpt2
    pair = tk.load_pair(root / "pt", root / "ft")
    n = len(pair.tokenizer(prompt)["input_ids"])
    assert n < 64 < n + 32
    with pytest.raises(PromptError, match=rf"{n} tokens \+ max_new_tokens 32 .* exceed the model's 64 positions; "
                                          rf"ask for at most {64 - n} new tokens"):
        tk.generate(pair, [prompt], max_new_tokens=32, chat=False)
    assert len(tk.generate(pair, [prompt], max_new_tokens=64 - n, chat=False)[0]["token_ids"]) <= 64 - n
    assert run("steer", "--pretrained", root / "pt", "--finetuned", root / "ft", "--prompts", root / "long.txt",
               "--raw-text", "--max-new-tokens", "32", "--out", tmp_path / "g.jsonl") == 2
    one_line_error(capsys, "long.txt:1", "exceed the model's 64 positions")
    assert not (tmp_path / "g.jsonl").exists()



def test_a_config_that_disagrees_with_its_weights_names_a_tensor_and_both_shapes(saved, tmp_path):
    for side in ("pt", "ft"):
        (tmp_path / side).mkdir()
        for f in (saved / side).iterdir():
            (tmp_path / side / f.name).write_bytes(f.read_bytes())
        config = json.loads((tmp_path / side / "config.json").read_text())
        config["hidden_size"] = 96
        (tmp_path / side / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelError, match=r"pt: config.json disagrees with the stored weights: \S+ is stored as "
                                         r"\[\d+, 64\] but the config makes it \[\d+, 96\]"):
        tk.load_pair(tmp_path / "pt", tmp_path / "ft")
