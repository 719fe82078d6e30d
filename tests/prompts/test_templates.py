"""The paper's prompt templates (App. E.2) and scoring a user's own pair from local folders with them.

The stand-ins are config-built Llama models saved the way a Llama-2-7b / Llama-2-7b-chat download is laid out
(config.json, sharded safetensors, tokenizer files beside the chat model); only their size differs.
"""

import copy
import json

import pytest

from tests.fixtures.naive_reference import naive_tuco
from tuco_kernels.cli import main as tuco
from tuco_kernels.errors import TucoError
from tuco_kernels.prompts.templates import (LLAMA2_SYSTEM_PROMPT, MISTRAL_SYSTEM_PROMPT, PAPER_TEMPLATES, paper_template,
                                    use_paper_template)
from tests.fixtures.tiny import build_model, perturbed_copy, tiny_config

EXPECTED = {
    "llama2": "<bos>[INST] <<SYS>>\n" + LLAMA2_SYSTEM_PROMPT + "\n<</SYS>>\n\nHow do I bake bread? [/INST]",
    "vicuna": "<bos>[INST] <<SYS>>\n" + LLAMA2_SYSTEM_PROMPT + "\n<</SYS>>\n\nHow do I bake bread? [/INST]",
    "llama3": ("<bos><|start_header_id|>system<|end_header_id|>\n\n" + LLAMA2_SYSTEM_PROMPT + "<|eot_id|>"
               "<|start_header_id|>user<|end_header_id|>\n\nHow do I bake bread?<|eot_id|>"
               "<|start_header_id|>assistant<|end_header_id|>\n\n"),
    "gemma": "<bos><start_of_turn>user\nHow do I bake bread?<end_of_turn>\n<start_of_turn>model",
    "zephyr-gemma": "<bos><start_of_turn>user\nHow do I bake bread?<end_of_turn>\n<start_of_turn>model",
    "mistral": "<bos>[INST] <<SYS>>\n" + MISTRAL_SYSTEM_PROMPT + "\n<</SYS>>\n\nHow do I bake bread? [/INST]",
}


def _render(tokenizer, name, messages):
    use_paper_template(tokenizer, name)
    return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


@pytest.mark.parametrize("name", PAPER_TEMPLATES)
def test_each_template_renders_the_papers_format(tokenizer, name):
    import copy

    tok = copy.deepcopy(tokenizer)
    assert _render(tok, name, [{"role": "user", "content": "How do I bake bread?"}]) == EXPECTED[name]


def test_system_message_replaces_the_default_and_turns_are_checked(tokenizer):
    import copy

    tok = copy.deepcopy(tokenizer)
    got = _render(tok, "llama2", [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}])
    assert got == "<bos>[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nHi [/INST]"
    with pytest.raises(Exception, match="one user turn"):
        _render(tok, "llama2", [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}])
    with pytest.raises(Exception, match="no system prompt"):
        _render(tok, "gemma", [{"role": "system", "content": "s"}, {"role": "user", "content": "Hi"}])
    with pytest.raises(TucoError, match="unknown paper template 'llama4'"):
        paper_template("llama4")


@pytest.fixture(scope="module")
def llama2_download(tmp_path_factory, tokenizer):
    """Folders laid out like Llama-2-7b-hf and Llama-2-7b-chat-hf (sharded safetensors), from tiny configs."""
    root = tmp_path_factory.mktemp("llama2")
    config = tiny_config("llama", len(tokenizer), layers=3)
    config.max_position_embeddings = 4096   # as Llama 2's: the paper's system prompt alone is ~400 tiny-BPE tokens
    pt = build_model(config, seed=0)
    ft = perturbed_copy(pt, scale=0.1, seed=1)
    for model, name in ((pt, "Llama-2-7b-hf"), (ft, "Llama-2-7b-chat-hf")):
        model.save_pretrained(root / name, max_shard_size="40KB")
        tokenizer.save_pretrained(root / name)
    assert (root / "Llama-2-7b-hf" / "model.safetensors.index.json").is_file()
    return root, pt, ft


@pytest.mark.parametrize("offload", ["none", "disk"])
def test_a_users_llama2_pair_scored_with_the_papers_template(tmp_path, tokenizer, llama2_download, offload):
    root, pt, ft = llama2_download
    prompts = ["How do I bake bread?", "Write a poem about rivers."]
    src = tmp_path / "prompts.txt"
    src.write_text("\n".join(prompts) + "\n")
    out = tmp_path / "scores.jsonl"
    rc = tuco(["score", "--pretrained", str(root / "Llama-2-7b-hf"), "--finetuned", str(root / "Llama-2-7b-chat-hf"),
               "--template", "llama2", "--prompts", str(src), "--out", str(out), "--offload", offload,
               "--no-progress"])
    assert rc == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    for p, row in zip(prompts, rows):
        text = "<bos>[INST] <<SYS>>\n" + LLAMA2_SYSTEM_PROMPT + "\n<</SYS>>\n\n" + p + " [/INST]"
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        assert row["n_tokens"] == len(ids)
        assert row["tuco"] == pytest.approx(naive_tuco(pt, ft, ids), abs=2e-6)


def test_unknown_template_fails_before_loading(tmp_path, capsys, llama2_download):
    root, _, _ = llama2_download
    src = tmp_path / "p.txt"
    src.write_text("hi\n")
    rc = tuco(["score", "--pretrained", str(root / "nope"), "--finetuned", str(root / "nope2"), "--template", "llama9",
               "--prompts", str(src), "--out", str(tmp_path / "o.jsonl")])
    assert rc == 2 and "argument --template: invalid choice: 'llama9'" in capsys.readouterr().err


def test_one_rendering_default_in_python_and_the_cli(tmp_path, tokenizer, capsys):
    """Text prompts are chat user turns when the tokenizer has a chat template, in tk.score and tuco score alike,
    and the CLI says so at the start of the run; chat=False / --raw-text give raw text."""
    import json

    import tuco_kernels as tk
    from tests.fixtures.pairs import PROMPTS, make_pair_models
    from tuco_kernels.cli import main as tuco
    from tuco_kernels.prompts.tokenize import rendering

    pt, ft = make_pair_models("llama", tokenizer)
    for name, model in (("pt", pt), ("ft", ft)):
        model.save_pretrained(tmp_path / name)
        tokenizer.save_pretrained(tmp_path / name)
    pair = tk.load_pair(tmp_path / "pt", tmp_path / "ft")
    (tmp_path / "p.txt").write_text("\n".join(PROMPTS) + "\n")
    for flags, chat in (([], None), (["--raw-text"], False), (["--chat"], True)):
        out = tmp_path / f"o{len(flags)}{chat}.jsonl"
        assert tuco(["score", "--pretrained", str(tmp_path / "pt"), "--finetuned", str(tmp_path / "ft"), "--prompts",
                     str(tmp_path / "p.txt"), "--out", str(out), "--no-progress", *flags]) == 0
        cli_tuco = [json.loads(line)["tuco"] for line in out.read_text().splitlines()]
        result = tk.score(pair, PROMPTS, chat=chat)
        assert cli_tuco == pytest.approx(result.tuco.tolist(), abs=1e-12)
        assert f"tuco: rendering: {rendering(pair.tokenizer, chat)}" in capsys.readouterr().err
        assert result.run.rendering == rendering(pair.tokenizer, chat)
    assert tk.score(pair, PROMPTS).tuco.tolist() == tk.score(pair, PROMPTS, chat=True).tuco.tolist()
    assert rendering(pair.tokenizer, None).startswith("chat template of ")
    no_template = copy.deepcopy(pair.tokenizer)
    no_template.chat_template = None
    assert rendering(no_template, None) == "raw text with the tokenizer's special tokens (the tokenizer has no chat template)"


def test_a_template_of_another_family_warns(tokenizer, capsys, tmp_path):
    import tuco_kernels as tk
    from tests.fixtures.pairs import make_pair_models
    from tuco_kernels.prompts.templates import TemplateMismatchWarning

    pt, ft = make_pair_models("qwen2", tokenizer)
    pair = tk.load_pair(pt, ft, tokenizer=copy.deepcopy(tokenizer))
    with pytest.warns(TemplateMismatchWarning, match="'llama2' template is the paper's format for Llama 2 chat / "
                                                     "Vicuna models; this pair is 'qwen2'"):
        tk.use_paper_template(pair, "llama2")
    with pytest.warns(TemplateMismatchWarning, match="this tokenizer has no '<start_of_turn>' token"):
        tk.use_paper_template(copy.deepcopy(tokenizer), "gemma")
    llama_pt, llama_ft = make_pair_models("llama", tokenizer)
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tk.use_paper_template(tk.load_pair(llama_pt, llama_ft, tokenizer=copy.deepcopy(tokenizer)), "llama2")
