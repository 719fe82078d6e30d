"""Loading pairs from real files: safetensors (single and sharded), PEFT adapters, pickle refusal,
and incompatible pairs failing before any compute with the field named."""

import copy

import pytest
import torch
import transformers
from packaging.version import Version

import tuco_kernels as tk
from tuco_kernels.errors import IncompatiblePairError, TucoError
from tests.fixtures.tiny import build_model, tiny_config

from tests.fixtures.pairs import PROMPTS, make_pair_models


@pytest.fixture(scope="module")
def saved(tmp_path_factory, tokenizer):
    """Tiny llama pair saved as HF folders: pt (single file), ft (sharded), with the tokenizer."""
    root = tmp_path_factory.mktemp("models")
    pt, ft = make_pair_models("llama", tokenizer)
    pt.save_pretrained(root / "pt")
    ft.save_pretrained(root / "ft", max_shard_size="100KB")
    for d in ("pt", "ft"):
        tokenizer.save_pretrained(root / d)
    return root


def test_load_from_directories(saved, tokenizer):
    assert len(list((saved / "ft").glob("*.safetensors"))) > 1  # really sharded
    pair = tk.load_pair(saved / "pt", saved / "ft")
    pt, ft = make_pair_models("llama", tokenizer)
    expected = tk.score(tk.load_pair(pt, ft, tokenizer=tokenizer), PROMPTS, chat=False).tuco
    assert tk.score(pair, PROMPTS, chat=False).tuco == pytest.approx(expected, abs=0)
    gguf_vocab = pair.tokenizer.get_vocab()
    assert all(gguf_vocab.get(t) == i for t, i in tokenizer.get_vocab().items())  # every token keeps its id


def test_dtype_and_repr(saved):
    pair = tk.load_pair(saved / "pt", saved / "ft", dtype="bfloat16")
    assert pair.dtype == torch.bfloat16 and pair.pretrained.dtype == torch.bfloat16
    assert "llama, 3 layers" in repr(pair)
    with pytest.raises(TucoError, match="unknown dtype 'int3'"):
        tk.load_pair(saved / "pt", saved / "ft", dtype="int3")


def test_pickle_weights_refused_unless_allowed(tmp_path, saved, tokenizer):
    pt, _ = make_pair_models("llama", tokenizer)
    pt.config.save_pretrained(tmp_path / "pkl")  # a legacy pickle checkpoint, as old downloads have them
    torch.save(pt.state_dict(), tmp_path / "pkl" / "pytorch_model.bin")
    with pytest.raises(TucoError, match=r"pytorch_model.bin: pickle weights can run arbitrary code"):
        tk.load_pair(tmp_path / "pkl", saved / "ft")
    pair = tk.load_pair(tmp_path / "pkl", saved / "ft", allow_pickle=True, tokenizer=tokenizer)
    assert torch.equal(pair.pretrained.model.embed_tokens.weight, pt.model.embed_tokens.weight)


def test_peft_adapter_as_finetuned_side(tmp_path, saved, tokenizer):
    from peft import LoraConfig, get_peft_model

    base, _ = make_pair_models("llama", tokenizer)
    cfg = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"], init_lora_weights=False)
    peft_model = get_peft_model(copy.deepcopy(base), cfg)
    peft_model.save_pretrained(tmp_path / "adapter")
    merged = copy.deepcopy(peft_model).merge_and_unload()
    pair = tk.load_pair(saved / "pt", tmp_path / "adapter")
    direct = tk.score(tk.load_pair(base, merged, tokenizer=tokenizer), PROMPTS, chat=False).tuco
    got = tk.score(pair, PROMPTS, chat=False).tuco
    assert got == pytest.approx(direct, abs=1e-6) and (got > 0).all()
    # the PEFT model's own forward (adapter active, unmerged) agrees with the fine-tuned side
    ids = torch.tensor([tokenizer(PROMPTS[0])["input_ids"]])
    torch.testing.assert_close(pair.finetuned(input_ids=ids).logits, peft_model(input_ids=ids).logits,
                               atol=1e-5, rtol=1e-5)


def test_bad_paths(tmp_path, saved):
    with pytest.raises(TucoError, match="missing: not a model directory, a .gguf file or a Hugging Face hub id"):
        tk.load_pair(tmp_path / "missing", saved / "ft")
    (tmp_path / "empty").mkdir()
    with pytest.raises(TucoError, match="empty: no config.json"):
        tk.load_pair(tmp_path / "empty", saved / "ft")
    with pytest.raises(TucoError, match="GGUF file not found"):
        tk.load_pair(tmp_path / "m.gguf", saved / "ft")


@pytest.mark.parametrize("field,change", [
    ("model_type", lambda t: tiny_config("qwen2", len(t))),
    ("num_hidden_layers", lambda t: tiny_config("llama", len(t), layers=2)),
    ("hidden_size", lambda t: tiny_config("llama", len(t), hidden=32)),
    ("vocab_size", lambda t: tiny_config("llama", len(t) + 8)),
])
def test_incompatible_pairs_name_the_field(tokenizer, field, change):
    pt, _ = make_pair_models("llama", tokenizer)
    other = build_model(change(tokenizer))
    with pytest.raises(IncompatiblePairError, match=f"incompatible pair: {field} differs") as err:
        tk.load_pair(pt, other, tokenizer=tokenizer)
    assert err.value.field == field


def test_incompatible_tokenizers(tmp_path, tokenizer):
    from tests.fixtures.tiny import train_tokenizer

    pt, ft = make_pair_models("llama", tokenizer)
    other_tok = train_tokenizer(["completely different words entirely, zebra quartz"] * 3, vocab_size=len(tokenizer))
    for name, model, tok in (("pt", pt, tokenizer), ("ft", ft, other_tok)):
        model.save_pretrained(tmp_path / name)
        tok.save_pretrained(tmp_path / name)
    with pytest.raises(IncompatiblePairError, match="tokenizer vocabulary differs"):
        tk.load_pair(tmp_path / "pt", tmp_path / "ft")


def test_gguf_files(tmp_path, tokenizer):
    """Both sides as GGUF files (F32, llama.cpp layout), with the tokenizer read from the GGUF metadata."""
    from tests.fixtures.gguf_writer import write_llama_gguf

    pt, ft = make_pair_models("llama", tokenizer)
    write_llama_gguf(pt, tokenizer, tmp_path / "pt.gguf")
    write_llama_gguf(ft, tokenizer, tmp_path / "ft.gguf")
    pair = tk.load_pair(tmp_path / "pt.gguf", tmp_path / "ft.gguf")
    assert pair.dtype == torch.float32
    gguf_vocab = pair.tokenizer.get_vocab()
    assert all(gguf_vocab.get(t) == i for t, i in tokenizer.get_vocab().items())  # every token keeps its id
    bos_from_gguf = Version(transformers.__version__) >= Version("5.23")  # seen: 5.17 drops BOS, 5.23 keeps it
    for p in PROMPTS:
        ours = tokenizer(p)["input_ids"]
        assert pair.tokenizer(p)["input_ids"] == (ours if bos_from_gguf else ours[1:])
    token_ids = [{"input_ids": tokenizer(p)["input_ids"]} for p in PROMPTS]
    expected = tk.score(tk.load_pair(pt, ft, tokenizer=tokenizer), token_ids, chat=False).tuco
    assert tk.score(pair, token_ids, chat=False).tuco == pytest.approx(expected, abs=1e-6)
    same_dir = tk.load_pair(tmp_path, tmp_path, gguf_file=("pt.gguf", "ft.gguf"))
    assert tk.score(same_dir, token_ids, chat=False).tuco == pytest.approx(expected, abs=1e-6)


def test_incompatible_directories_fail_before_loading_weights(tmp_path, saved, tokenizer):
    """Only config.json on the fine-tuned side: the field mismatch is reported, no weight file is touched."""
    tiny_config("llama", len(tokenizer), hidden=32).save_pretrained(tmp_path / "cfg_only")
    with pytest.raises(IncompatiblePairError, match="hidden_size differs"):
        tk.load_pair(saved / "pt", tmp_path / "cfg_only")


def test_result_exports(llama_pair):
    r = tk.score(llama_pair, PROMPTS, layers=True, output_co=True, token_map=True, chat=False)
    df = r.to_pandas()
    assert list(df.columns[:5]) == ["id", "text", "tuco", "preco", "n_tokens"] and len(df) == len(PROMPTS)
    assert df["text"].tolist() == PROMPTS
    assert (df["tuco"] + df["preco"]).tolist() == pytest.approx([1.0] * len(PROMPTS))
    rec = r.to_records()[2]
    assert set(rec) == {"id", "text", "tuco", "preco", "n_tokens", "status", "output_co", "ptc_l1", "ftc_l1", "beta",
                        "tokens", "token_tuco"}
    assert len(rec["tokens"]) == len(rec["token_tuco"]) and "".join(rec["tokens"]).endswith(PROMPTS[2][-10:])
    assert rec["status"] == "ok"
    assert len(rec["token_tuco"]) == rec["n_tokens"] and len(rec["beta"]) == llama_pair.n_layers
    assert "TuCoResult(n=4" in repr(r)


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_half_precision_pair_is_the_model_hf_loads(saved, tokenizer, dtype):
    """α = 1 logits equal those of HF's own ``from_pretrained(dtype=...)``: loading must not cast the fp32
    rotary buffers (inv_freq) that HF keeps in fp32."""
    from transformers import AutoModelForCausalLM

    pair = tk.load_pair(saved / "pt", saved / "ft", dtype=dtype)
    hf = AutoModelForCausalLM.from_pretrained(saved / "ft", dtype=getattr(torch, dtype)).eval()
    assert {n: b.dtype for n, b in pair.finetuned.named_buffers()} == {n: b.dtype for n, b in hf.named_buffers()}
    logp = tk.next_token_logprobs(pair, PROMPTS, batch_tokens=1, chat=False)  # unpadded, like the HF calls below
    for i, p in enumerate(PROMPTS):
        ids = torch.tensor([tokenizer(p)["input_ids"]])
        torch.testing.assert_close(logp[i], torch.log_softmax(hf(input_ids=ids).logits[0, -1].float(), -1),
                                   atol=0, rtol=0)
