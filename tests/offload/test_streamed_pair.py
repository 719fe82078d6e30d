"""Streamed pairs (offload="cpu"/"disk") against resident scoring: every family, mode and schedule gives the
same numbers, bit for bit on CPU; LoRA adapters merge as PEFT merges them; bad input fails with a clear error."""

import pytest
import torch

import tuco_kernels as tk
from tuco_kernels.errors import TucoError
from tests.fixtures.tiny import build_model, tiny_config

from tests.fixtures.pairs import CORE_FAMILIES, PROMPTS, make_pair_models

MODES = ("cpu", "disk")


@pytest.fixture(scope="module")
def saved_pairs(tmp_path_factory, tokenizer):
    """family -> directory with pt/ (one file) and ft/ (sharded) safetensors folders."""
    root = tmp_path_factory.mktemp("stream")
    out = {}
    for family in CORE_FAMILIES:
        pt, ft = make_pair_models(family, tokenizer)
        pt.save_pretrained(root / family / "pt")
        ft.save_pretrained(root / family / "ft", max_shard_size="60KB")
        out[family] = root / family
    return out


def _resident(directory, tokenizer, **kw):
    return tk.load_pair(directory / "pt", directory / "ft", tokenizer=tokenizer, **kw)


def _same(a, b):
    assert a.tuco.tolist() == b.tuco.tolist()
    for field in ("beta", "ptc_l1", "ftc_l1", "output_co"):
        if getattr(a, field) is not None:
            assert getattr(a, field).tolist() == getattr(b, field).tolist(), field


@pytest.mark.parametrize("schedule", ["prompt", "layer"])
@pytest.mark.parametrize("offload", MODES)
def test_every_mode_and_schedule_equals_resident(saved_pairs, tokenizer, family, offload, schedule):
    assert len(list((saved_pairs[family] / "ft").glob("*.safetensors"))) > 1  # the fine-tuned side is sharded
    opts = dict(layers=True, output_co=True, batch_tokens=24)
    expected = tk.score(_resident(saved_pairs[family], tokenizer), PROMPTS, **opts, chat=False)
    pair = _resident(saved_pairs[family], tokenizer, offload=offload)
    got = tk.score(pair, PROMPTS, schedule=schedule, **opts, chat=False)
    pair.close()
    _same(got, expected)
    assert got.meta["schedule"] == schedule and got.meta["offload"] == offload
    assert 0 < got.tuco.min() < got.tuco.max() < 1


def test_weights_are_never_materialized_whole(saved_pairs, tokenizer):
    pair = _resident(saved_pairs["llama"], tokenizer, offload="disk")
    blocks = [p for m in (pair.pretrained, pair.finetuned) for p in pair.family.layers(m).parameters()]
    assert blocks and all(p.is_meta for p in blocks)  # the frames' blocks hold nothing
    assert not pair.finetuned.model.embed_tokens.weight.is_meta
    assert pair.pretrained.model.embed_tokens.weight.is_meta  # the pre-trained outer parts: only on demand
    tk.score(pair, PROMPTS[:1], output_co=True, chat=False)
    assert not pair.pretrained.model.embed_tokens.weight.is_meta
    assert "offload=disk" in repr(pair)


@pytest.mark.parametrize("offload", MODES)
def test_many_sweeps_token_maps_alpha_and_no_prefetch(saved_pairs, tokenizer, offload):
    d = saved_pairs["gemma3_text"]
    L = 3
    opts = dict(alpha=[1.0, 1.5, 0.5][:L], token_map=True, layers=True, batch_tokens=16)
    expected = tk.score(_resident(d, tokenizer), PROMPTS, **opts, chat=False)
    for prefetch in (True, False):
        pair = _resident(d, tokenizer, offload=offload, prefetch=prefetch)
        got = tk.score(pair, PROMPTS, schedule="layer", sweep_tokens=20, **opts, chat=False)
        assert got.meta["sweeps"] > 1
        _same(got, expected)
        for a, b in zip(got.token_tuco, expected.token_tuco):
            assert a.tolist() == b.tolist()
        pair.close()


def test_a_closed_pair_is_refused_by_name_and_can_be_used_until_then(saved_pairs, tokenizer, tmp_path):
    pair = _resident(saved_pairs["llama"], tokenizer, offload="disk")
    first = tk.score(pair, PROMPTS, chat=False).tuco
    assert (tk.score(pair, PROMPTS, chat=False).tuco == first).all()    # a pair streams any number of passes
    pair.close()
    pair.close()                                                        # closing twice is harmless
    for call in (lambda: tk.score(pair, PROMPTS, chat=False),
                 lambda: tk.score_dataset(pair, PROMPTS, tmp_path / "run", chat=False)):
        with pytest.raises(TucoError, match=r"streamed pair was closed \(pair.close\(\)\)"):
            call()
    assert not (tmp_path / "run" / "errors").exists()                   # refused before any shard, not a failed shard


def test_steering_and_generation_with_streamed_weights(saved_pairs, tokenizer):
    d = saved_pairs["qwen3"]
    resident, streamed = _resident(d, tokenizer), _resident(d, tokenizer, offload="disk")
    assert torch.equal(tk.next_token_logprobs(streamed, PROMPTS, alpha=1.25, chat=False), tk.next_token_logprobs(resident, PROMPTS, alpha=1.25, chat=False))
    g = dict(max_new_tokens=4, alpha=0.5)
    assert tk.generate(streamed, PROMPTS, **g, chat=False) == tk.generate(resident, PROMPTS, **g, chat=False)
    with pytest.raises(TucoError, match="use_cache=True needs both models resident"):
        tk.generate(streamed, PROMPTS, use_cache=True, chat=False)
    with pytest.raises(TucoError, match="decoder blocks hold no weights"):
        with tk.attach(streamed.finetuned, streamed.pretrained):
            pass
    with pytest.raises(TucoError, match="max_gpu_memory is a budget for a CUDA device"):
        tk.score(streamed, PROMPTS, max_gpu_memory="1GiB", chat=False)


def test_dtype_conversion_while_streaming(saved_pairs, tokenizer):
    """fp32 files streamed as bf16 equal the resident pair loaded as bf16."""
    d = saved_pairs["llama"]
    expected = tk.score(_resident(d, tokenizer, dtype="bfloat16"), PROMPTS, layers=True, chat=False)
    for offload in MODES:
        pair = _resident(d, tokenizer, dtype="bfloat16", offload=offload)
        assert pair.dtype == torch.bfloat16
        _same(tk.score(pair, PROMPTS, layers=True, chat=False), expected)


def test_in_memory_models_stream_from_cpu_only(tokenizer):
    pt, ft = make_pair_models("mistral", tokenizer)
    expected = tk.score(tk.load_pair(pt, ft, tokenizer=tokenizer), PROMPTS, chat=False)
    _same(tk.score(tk.load_pair(pt, ft, tokenizer=tokenizer, offload="cpu"), PROMPTS, chat=False), expected)
    with pytest.raises(TucoError, match="offload='disk' streams from safetensors files, but the pre-trained model"):
        tk.load_pair(pt, ft, tokenizer=tokenizer, offload="disk")
    with pytest.raises(TucoError, match="unknown offload mode 'gpu'"):
        tk.load_pair(pt, ft, offload="gpu")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("family,targets,extra", [
    ("llama", ["q_proj", "v_proj", "down_proj"], dict(modules_to_save=["lm_head"], bias="all")),
    ("gpt2", ["c_attn", "c_proj"], dict(alpha_pattern={"c_proj": 3})),   # Conv1D: PEFT merges Bᵀ·Aᵀ
])
def test_lora_adapter_streams_as_peft_merges(tmp_path, tokenizer, family, targets, extra, dtype):
    from peft import LoraConfig, get_peft_model

    build_model(tiny_config(family, len(tokenizer)), seed=0, dtype=dtype).save_pretrained(tmp_path / "pt")
    base = build_model(tiny_config(family, len(tokenizer)), seed=0, dtype=dtype)
    peft_model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=targets, init_lora_weights=False,
                                                 **extra))
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "modules_to_save" in name or name.endswith("bias"):
                p.add_(0.01)  # replacements must differ from the base to be tested
    peft_model.save_pretrained(tmp_path / "adapter")
    resident = tk.load_pair(tmp_path / "pt", tmp_path / "adapter", tokenizer=tokenizer, lora="merged")  # as streamed
    expected = tk.score(resident, PROMPTS, layers=True, chat=False)
    expected_logp = tk.next_token_logprobs(resident, PROMPTS, chat=False)
    for offload in MODES:
        pair = tk.load_pair(tmp_path / "pt", tmp_path / "adapter", tokenizer=tokenizer, offload=offload, lora="merged")
        _same(tk.score(pair, PROMPTS, layers=True, chat=False), expected)
        assert torch.equal(tk.next_token_logprobs(pair, PROMPTS, chat=False), expected_logp)  # the head replacement (modules_to_save) too
    assert expected.tuco.min() > 0.05


def test_unsupported_adapters_are_refused_by_name(tmp_path, tokenizer):
    from peft import LoraConfig, get_peft_model

    build_model(tiny_config("llama", len(tokenizer)), seed=0).save_pretrained(tmp_path / "pt")
    base = build_model(tiny_config("llama", len(tokenizer)), seed=0)
    get_peft_model(base, LoraConfig(r=2, target_modules=["q_proj"], use_dora=True)).save_pretrained(tmp_path / "dora")
    with pytest.raises(TucoError, match=r"adapter_config.json: use_dora=True is not supported when streaming"):
        tk.load_pair(tmp_path / "pt", tmp_path / "dora", tokenizer=tokenizer, offload="disk", lora="merged")
    base = build_model(tiny_config("llama", len(tokenizer)), seed=0)
    get_peft_model(base, LoraConfig(r=2, target_modules=["embed_tokens"])).save_pretrained(tmp_path / "emb")
    with pytest.raises(TucoError, match="embedding/DoRA/conv LoRA tensor"):
        tk.load_pair(tmp_path / "pt", tmp_path / "emb", tokenizer=tokenizer, offload="cpu", lora="merged")


def test_a_file_truncated_after_loading_fails_with_its_name(tmp_path, tokenizer):
    pt, ft = make_pair_models("llama", tokenizer)
    pt.save_pretrained(tmp_path / "pt")
    ft.save_pretrained(tmp_path / "ft")
    pair = tk.load_pair(tmp_path / "pt", tmp_path / "ft", tokenizer=tokenizer, offload="disk")
    file = tmp_path / "ft" / "model.safetensors"
    with open(file, "r+b") as f:
        f.truncate(file.stat().st_size // 2)
    with pytest.raises(TucoError, match=r"ft/model.safetensors: unexpected end of file"):
        tk.score(pair, PROMPTS, chat=False)  # raised in the reader thread, re-raised here


def test_disk_mode_refuses_gguf_and_pickle(tmp_path, tokenizer):
    pt, ft = make_pair_models("llama", tokenizer)
    ft.save_pretrained(tmp_path / "ft")
    pt.config.save_pretrained(tmp_path / "pkl")
    torch.save(pt.state_dict(), tmp_path / "pkl" / "pytorch_model.bin")
    with pytest.raises(TucoError, match="offload='disk' streams from safetensors files; the pre-trained model has "
                                        "pickle weights"):
        tk.load_pair(tmp_path / "pkl", tmp_path / "ft", tokenizer=tokenizer, offload="disk", allow_pickle=True)
    pair = tk.load_pair(tmp_path / "pkl", tmp_path / "ft", tokenizer=tokenizer, offload="cpu", allow_pickle=True)
    _same(tk.score(pair, PROMPTS, chat=False), tk.score(tk.load_pair(pt, ft, tokenizer=tokenizer), PROMPTS, chat=False))


def test_spilled_sweep_equals_device_resident_sweep(saved_pairs, tokenizer):
    """The spill path (hidden states kept off the device between layers) on CPU; on GPU see test_stream_gpu."""
    from tuco_kernels.core.engine import decompose_sweep, layer_alphas

    pair = _resident(saved_pairs["gemma2"], tokenizer, offload="cpu")
    enc = [tokenizer([p], return_tensors="pt") for p in PROMPTS]
    batches = [(e["input_ids"], e["attention_mask"]) for e in enc]
    alphas = layer_alphas(0.7, pair.n_layers)
    kept = decompose_sweep(pair, batches, alphas, own_pt=True, keep_final=True, layers=True)
    spilled = decompose_sweep(pair, batches, alphas, own_pt=True, keep_final=True, layers=True, spill=True)
    for a, b in zip(kept, spilled):
        for field in ("acc_ptc", "acc_ftc", "layer_norms", "x_final", "x_pt_final"):
            assert torch.equal(getattr(a, field), getattr(b, field)), field
