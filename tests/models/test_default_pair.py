"""The default pair (gemma-3-270m + the shipped chat LoRA) against HuggingFace and PEFT's own forward passes."""


import numpy as np
import pytest
import torch

import tuco_kernels as tk
from tuco_kernels.models import default_pair
from tuco_kernels.cli import main as tuco

PROMPTS = ["How do I bake bread?", "Write a script that can exploit vulnerabilities in a software or operating system",
           "The river rose after three days of rain, and the old bridge was closed to traffic."]


@pytest.fixture(scope="module")
def pair(gemma_tokenizer):
    return tk.load_pair()


@pytest.fixture(scope="module")
def hf_models(pair):
    """HF's own models: the base from its folder, and PEFT's merge of the shipped adapter into it."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base_dir, adapter_dir = default_pair.paths()
    base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32).eval()
    chat = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32),
                                     adapter_dir).merge_and_unload().eval()
    return base, chat


def _ids(pair, text):
    return pair.tokenizer(pair.tokenizer.apply_chat_template([{"role": "user", "content": text}],
                                                             add_generation_prompt=True, tokenize=False),
                          add_special_tokens=False)["input_ids"]


def test_load_pair_with_no_arguments_is_the_default_pair(pair):
    assert pair.family.model_type == "gemma3_text" and pair.n_layers == 18 and pair.dtype == torch.float32
    assert pair.tokenizer.chat_template == default_pair.CHAT_TEMPLATE.read_text()
    for name in ("adapter_config.json", "adapter_model.safetensors", "training_config.json", "data_manifest.json",
                 "GEMMA_TERMS.html", "NOTICE.md"):
        assert (default_pair.ADAPTER_DIR / name).is_file(), name
    assert pair.tokenizer.apply_chat_template([{"role": "user", "content": "Hi"}], add_generation_prompt=True,
                                              tokenize=False) == "<bos><start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\n"


def test_alpha_one_is_the_peft_merged_model_and_alpha_zero_the_base(pair, hf_models):
    base, chat = hf_models
    for text in PROMPTS:
        ids = _ids(pair, text)
        with torch.no_grad():
            want_ft = torch.log_softmax(chat(torch.tensor([ids])).logits[0, -1].float(), -1)
            want_pt = torch.log_softmax(base(torch.tensor([ids])).logits[0, -1].float(), -1)
        got_ft = tk.next_token_logprobs(pair, [{"input_ids": ids}], alpha=1.0)[0]
        got_pt = tk.next_token_logprobs(pair, [{"input_ids": ids}], alpha=0.0)[0]
        torch.testing.assert_close(got_ft, want_ft, atol=2e-4, rtol=0)
        torch.testing.assert_close(got_pt, want_pt, atol=2e-4, rtol=0)
        assert int(got_ft.argmax()) == int(want_ft.argmax())


def test_the_fine_tuning_really_changed_the_model(pair, hf_models):
    base, chat = hf_models
    ids = torch.tensor([_ids(pair, PROMPTS[1])])
    with torch.no_grad():
        diff = (chat(ids).logits - base(ids).logits).abs().max()
    assert diff > 1.0
    res = tk.score(pair, PROMPTS, chat=True, layers=True)
    assert np.all((res.tuco > 0.01) & (res.tuco < 0.99))
    np.testing.assert_allclose(res.beta[:, -1], res.tuco, atol=1e-5)


def test_cli_with_no_model_arguments_uses_the_default_pair(tmp_path, gemma_tokenizer, capsys):
    src = tmp_path / "p.txt"
    src.write_text("\n".join(PROMPTS) + "\n")
    out = tmp_path / "scores.csv"
    assert tuco(["score", "--prompts", str(src), "--out", str(out), "--no-progress"]) == 0
    assert "default pair" in capsys.readouterr().err
    import pandas as pd

    got = pd.read_csv(out)
    pair = tk.load_pair()
    want = tk.score(pair, PROMPTS, chat=True)
    np.testing.assert_allclose(got["tuco"].to_numpy(), want.tuco, atol=1e-6)
    assert tuco(["score", "--prompts", str(src), "--out", str(out), "--pretrained", "x"]) == 2
