"""A LoRA fine-tuned side on one copy of the base (load_pair(..., lora="shared"), the default), against oracles
built from PEFT itself: ``PeftModel.from_pretrained(fresh base, adapter)``, adapter active and NOT merged, and the
same model with ``disable_adapter()`` for the pre-trained blocks. Merged mode against PEFT's merge_and_unload."""

import json

import numpy as np
import pandas as pd
import pytest
import torch

import tuco_kernels as tk
from tuco_kernels.cli import main
from tuco_kernels.core.engine import decompose_batch
from tuco_kernels.result import run_metadata
from tuco_kernels.errors import ModelError, OptionError
from tuco_kernels.models.shared import shared_parameters

from tests.fixtures.naive_reference import blocks_of
from tests.fixtures.pairs import CORE_FAMILIES, PROMPTS
from tests.fixtures.tiny import build_model, tiny_config

#: adapter configurations PEFT computes differently; each must be reproduced as PEFT computes it unmerged
ADAPTERS = {
    "plain": dict(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"]),
    "patterns": dict(r=4, lora_alpha=8, target_modules=["q_proj", "k_proj", "o_proj", "gate_proj", "up_proj"],
                     rank_pattern={"k_proj": 2, "up_proj": 6}, alpha_pattern={"o_proj": 3, "gate_proj": 32}),
    "rslora": dict(r=8, lora_alpha=4, target_modules=["q_proj", "down_proj"], use_rslora=True),
    "lora_bias": dict(r=4, lora_alpha=8, target_modules=["v_proj", "up_proj"], lora_bias=True),
    "modules_to_save": dict(r=4, lora_alpha=8, target_modules=["q_proj"], modules_to_save=["lm_head"]),
    "embedding": dict(r=4, lora_alpha=8, target_modules=["embed_tokens", "q_proj"]),
    "head": dict(r=4, lora_alpha=8, target_modules=["lm_head", "v_proj"]),
    "dora": dict(r=4, lora_alpha=8, target_modules=["q_proj", "down_proj"], use_dora=True),
    "dropout": dict(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], lora_dropout=0.5),
    "trainable_tokens": dict(r=4, lora_alpha=8, target_modules=["q_proj"], trainable_token_indices=[3, 5, 7]),
}


def _base(tokenizer, family="llama"):
    return build_model(tiny_config(family, len(tokenizer)), seed=0)


def _save_adapter(tmp_path, tokenizer, name, family="llama"):
    """``tmp_path/pt`` (the base, with the tokenizer) and ``tmp_path/name`` (a trained-looking adapter)."""
    from peft import LoraConfig, get_peft_model

    if not (tmp_path / "pt").is_dir():
        _base(tokenizer, family).save_pretrained(tmp_path / "pt")
        tokenizer.save_pretrained(tmp_path / "pt")
    peft_model = get_peft_model(_base(tokenizer, family), LoraConfig(init_lora_weights=False, **ADAPTERS[name]))
    with torch.no_grad():
        for pname, p in peft_model.named_parameters():
            if ("modules_to_save" in pname or "lora_B" in pname and pname.endswith("bias") or "lora_magnitude" in pname
                    or "trainable_tokens_delta" in pname):
                p.add_(0.05 * torch.randn_like(p))   # every part of the adapter differs from the base
    peft_model.save_pretrained(tmp_path / name)
    return tmp_path / "pt", tmp_path / name


def _oracle(tokenizer, adapter, family="llama"):
    """PEFT's own model on a freshly built base: adapter active, unmerged."""
    from peft import PeftModel

    return PeftModel.from_pretrained(_base(tokenizer, family), adapter).eval()


def _ids(tokenizer):
    return [tokenizer(p)["input_ids"] for p in PROMPTS]


@torch.no_grad()
def _oracle_alpha(oracle, ids, alpha):
    """PEFT's forward with every block's output replaced by out_pt + α(out_ft − out_pt), out_pt the same block with
    the adapter disabled (PEFT's ``disable_adapter``) on the same input; the last-token PTC/FTC summed in fp32 and the
    last block's output (x_L) as the engine defines them (docs/math.md §3, §4)."""
    state = {"inner": False, "ptc": 0, "ftc": 0}

    def hook(module, args, kwargs, out_ft):
        if state["inner"]:
            return None
        state["inner"] = True
        try:
            with oracle.disable_adapter():
                out_pt = module(*args, **kwargs)
        finally:
            state["inner"] = False
        x = args[0] if args else kwargs["hidden_states"]
        state["ptc"] = state["ptc"] + (out_pt - x)[0, -1].float()
        state["ftc"] = state["ftc"] + (out_ft - out_pt)[0, -1].float()
        state["x_L"] = out_ft if alpha == 1 else out_pt + alpha * (out_ft - out_pt)
        return state["x_L"]

    blocks = blocks_of(oracle.get_base_model())
    handles = [b.register_forward_hook(hook, with_kwargs=True) for b in blocks]
    try:
        logits = oracle(input_ids=torch.tensor([ids]), use_cache=False).logits[0, -1]
    finally:
        for h in handles:
            h.remove()
    return torch.log_softmax(logits.float(), -1), state["ptc"], state["ftc"], state["x_L"]


@pytest.mark.parametrize("name", sorted(ADAPTERS))
def test_alpha_one_is_peft_unmerged_bit_for_bit(tmp_path, tokenizer, name):
    pt_dir, adapter = _save_adapter(tmp_path, tokenizer, name)
    pair = tk.load_pair(pt_dir, adapter)
    assert pair.lora == {"mode": "shared", "reason": None} and "lora=shared" in repr(pair)
    oracle, fresh = _oracle(tokenizer, adapter), _base(tokenizer)
    for i, ids in enumerate(_ids(tokenizer)):
        ids_t = torch.tensor([ids])
        dec = decompose_batch(pair, ids_t, torch.ones_like(ids_t), [1.0] * pair.n_layers, keep_final=True)
        logp = pair.family.logits(pair.finetuned, dec.x_final)[0, -1].float().log_softmax(-1)
        with torch.no_grad():
            expected = oracle(input_ids=ids_t).logits[0, -1].float().log_softmax(-1)
            assert torch.equal(pair.pretrained(input_ids=ids_t).logits, fresh(input_ids=ids_t).logits), \
                "the pre-trained side is the base as loaded"
        assert torch.equal(logp, expected), f"prompt {i}: next-token log-probs differ from PEFT's unmerged forward"
    assert not torch.allclose(tk.next_token_logprobs(pair, PROMPTS, 1.0, chat=False), tk.next_token_logprobs(pair, PROMPTS, 0.0, chat=False),
                              atol=1e-4)   # the adapter really changes the output
    # one copy of the base: every pre-trained tensor is also the fine-tuned side's (the same storage)
    n_pt = len(list(pair.pretrained.parameters()))
    assert shared_parameters(pair.pretrained, pair.finetuned) == n_pt
    base_bytes = sum(p.numel() * p.element_size() for p in fresh.parameters())
    extra = pair.device_bytes() - base_bytes
    adapter_bytes = sum(p.numel() * p.element_size() for n, p in oracle.named_parameters()
                        if "lora_" in n or "modules_to_save" in n or "trainable_tokens" in n)
    assert extra == adapter_bytes, "the pair holds the base once plus the adapter"


@pytest.mark.parametrize("name", ["plain", "modules_to_save", "embedding", "dora"])
@pytest.mark.parametrize("alpha", [0.0, 0.5, 1.5])
def test_decomposition_exact_at_every_alpha_against_peft(tmp_path, tokenizer, name, alpha):
    pt_dir, adapter = _save_adapter(tmp_path, tokenizer, name)
    pair, oracle = tk.load_pair(pt_dir, adapter), _oracle(tokenizer, adapter)
    L = pair.n_layers
    for ids in _ids(tokenizer):
        ids_t, mask = torch.tensor([ids]), torch.ones(1, len(ids), dtype=torch.long)
        dec = decompose_batch(pair, ids_t, mask, [alpha] * L, keep_final=True)
        logp, ptc, ftc, x_L = _oracle_alpha(oracle, ids, alpha)
        assert torch.equal(dec.x_final, x_L), "the α-model's stream differs from PEFT's with hooked blocks"
        assert torch.equal(dec.acc_ptc[0], ptc) and torch.equal(dec.acc_ftc[0], ftc)
        ours = pair.family.logits(pair.finetuned, dec.x_final)[0, -1].float().log_softmax(-1)
        assert torch.equal(ours, logp), "next-token log-probs under α differ from PEFT's hooked forward"


def test_decomposition_sums_to_peft_forward(tmp_path, tokenizer):
    """x_0 + ΣPTC + ΣFTC = x_L of PEFT's unmerged forward (docs/math.md (1)), on a second family (tied head)."""
    pt_dir, adapter = _save_adapter(tmp_path, tokenizer, "plain", family="gemma3_text")
    pair, oracle = tk.load_pair(pt_dir, adapter), _oracle(tokenizer, adapter, "gemma3_text")
    for ids in _ids(tokenizer):
        seen = []
        blocks = blocks_of(oracle.get_base_model())
        h0 = blocks[0].register_forward_pre_hook(lambda m, a, k: seen.append(a[0] if a else k["hidden_states"]),
                                                 with_kwargs=True)
        h1 = blocks[-1].register_forward_hook(lambda m, a, o: seen.append(o if torch.is_tensor(o) else o[0]))
        with torch.no_grad():
            oracle(input_ids=torch.tensor([ids]), use_cache=False)
        h0.remove(), h1.remove()
        dec = decompose_batch(pair, torch.tensor([ids]), torch.ones(1, len(ids), dtype=torch.long),
                                             [1.0] * pair.n_layers, keep_final=True)
        assert torch.equal(dec.x_final, seen[1])
        torch.testing.assert_close(seen[0][0, -1].double() + dec.acc_ptc[0].double() + dec.acc_ftc[0].double(),
                                   seen[1][0, -1].double(), atol=1e-5, rtol=1e-5)


def test_merged_mode_is_peft_merge_and_unload(tmp_path, tokenizer):
    pt_dir, adapter = _save_adapter(tmp_path, tokenizer, "plain")
    merged = _oracle(tokenizer, adapter).merge_and_unload()
    pair = tk.load_pair(pt_dir, adapter, lora="merged")
    assert pair.lora == {"mode": "merged", "reason": None}
    assert shared_parameters(pair.pretrained, pair.finetuned) == 0   # two copies, as before
    expected = tk.score(tk.load_pair(_base(tokenizer), merged, tokenizer=tokenizer), PROMPTS, chat=False)
    assert tk.score(pair, PROMPTS, chat=False).tuco == pytest.approx(expected.tuco, abs=0)
    shared = tk.score(tk.load_pair(pt_dir, adapter), PROMPTS, chat=False)
    assert shared.tuco == pytest.approx(expected.tuco, abs=1e-5)   # the two differ by the merge's rounding only


def test_a_model_object_given_as_base_is_left_as_it_was(tmp_path, tokenizer):
    pt_dir, adapter = _save_adapter(tmp_path, tokenizer, "modules_to_save")
    base = _base(tokenizer)
    before = {n: (type(m), m) for n, m in base.named_modules()}
    pair = tk.load_pair(base, adapter, tokenizer=tokenizer)
    assert pair.pretrained is base and {n: (type(m), m) for n, m in base.named_modules()} == before
    assert shared_parameters(base, pair.finetuned) == len(list(base.parameters()))


def test_what_cannot_be_shared_is_merged_with_its_reason_or_refused(tmp_path, tokenizer):
    from peft import IA3Config, get_peft_model

    pt_dir, adapter = _save_adapter(tmp_path, tokenizer, "plain")
    get_peft_model(_base(tokenizer), IA3Config(target_modules=["k_proj", "down_proj"],
                                               feedforward_modules=["down_proj"])).save_pretrained(tmp_path / "ia3")
    ia3 = tk.load_pair(pt_dir, tmp_path / "ia3")
    assert ia3.lora == {"mode": "merged", "reason": "peft_type IA3: sharing the base is for LoRA adapters"}
    for key, value, words in (("layer_replication", [[0, 2], [1, 3]], "more layers"),
                              ("alora_invocation_tokens", [5, 6], "activated LoRA")):
        bad = tmp_path / key
        bad.mkdir()
        cfg = json.loads((adapter / "adapter_config.json").read_text())
        (bad / "adapter_config.json").write_text(json.dumps({**cfg, key: value}))
        with pytest.raises(ModelError, match=rf"{key}: cannot score this adapter: .*{words}.*\({key}="):
            tk.load_pair(pt_dir, bad)
    with pytest.raises(OptionError, match="unknown lora mode 'both'; use one of shared, merged"):
        tk.load_pair(pt_dir, adapter, lora="both")


def test_cli_lora_shared_and_merged(tmp_path, tokenizer):
    pt_dir, adapter = _save_adapter(tmp_path, tokenizer, "plain")
    (tmp_path / "p.txt").write_text("\n".join(PROMPTS) + "\n")
    tucos = {}
    for mode in ("shared", "merged"):
        out = tmp_path / f"{mode}.csv"
        assert main(["score", "--pretrained", str(pt_dir), "--finetuned", str(adapter), "--prompts",
                     str(tmp_path / "p.txt"), "--out", str(out), "--raw-text", "--lora", mode, "--no-progress"]) == 0
        meta = json.loads((tmp_path / f"{mode}.csv.meta.json").read_text())
        assert meta["lora"] == {"mode": mode, "reason": None}
        tucos[mode] = pd.read_csv(out)["tuco"].to_numpy()
        expected = tk.score(tk.load_pair(pt_dir, adapter, lora=mode), PROMPTS, chat=False).tuco
        assert tucos[mode] == pytest.approx(expected, abs=1e-7)   # the CSV's printed digits
    steer_out = tmp_path / "steer.csv"
    assert main(["steer", "--pretrained", str(pt_dir), "--finetuned", str(adapter), "--prompts",
                 str(tmp_path / "p.txt"), "--out", str(steer_out), "--raw-text", "--lora", "merged",
                 "--alpha", "0.5", "--max-new-tokens", "2"]) == 0
    assert json.loads((tmp_path / "steer.csv.meta.json").read_text())["lora"]["mode"] == "merged"


def test_projections_both_blocks_compute_alike_are_computed_once(tmp_path, tokenizer):
    """The first norm and q/k/v read the same stream on both sides (the adapter changes q and v only through their
    LoRA path): the fine-tuned block gets the pre-trained block's outputs; o and the MLP read what attention changed
    and compute. Nothing changes but the work: every number equals the pair without reuse, bit for bit."""
    pt_dir, adapter = _save_adapter(tmp_path, tokenizer, "plain")
    pair = tk.load_pair(pt_dir, adapter)
    assert pair.reuse is not None
    ids = _ids(tokenizer)[2]
    ids_t, mask = torch.tensor([ids]), torch.ones(1, len(ids), dtype=torch.long)
    for alpha in (1.0, 0.5):
        pair.reuse.hits = pair.reuse.calls = 0
        with_reuse = decompose_batch(pair, ids_t, mask, [alpha] * pair.n_layers, keep_final=True, layers=True)
        # of the 10 leaf calls of a llama block (2 norms, 7 projections, the activation): the first norm and q, k, v
        assert (pair.reuse.hits, pair.reuse.calls) == (4 * pair.n_layers, 10 * pair.n_layers)
        reuse, pair.reuse = pair.reuse, None
        without = decompose_batch(pair, ids_t, mask, [alpha] * pair.n_layers, keep_final=True, layers=True)
        pair.reuse = reuse
        for a, b in ((with_reuse.x_final, without.x_final), (with_reuse.acc_ptc, without.acc_ptc),
                     (with_reuse.acc_ftc, without.acc_ftc), (with_reuse.layer_norms, without.layer_norms)):
            assert torch.equal(a, b)
    assert all("forward" not in vars(m) for m in pair.pretrained.modules())   # the modules are as they were after
    plain = tk.load_pair(pt_dir, adapter)
    plain.reuse = None
    assert tk.score(pair, PROMPTS, chat=False, layers=True).tuco.tolist() == \
        tk.score(plain, PROMPTS, chat=False, layers=True).tuco.tolist()   # batched, padded: the same too


def test_generation_on_a_shared_pair(tmp_path, tokenizer):
    """α = 1 decodes as PEFT's unmerged model's own generate; under α the KV-cached decode equals the uncached one
    (each side keeps its own cache though the two share their weights)."""
    pt_dir, adapter = _save_adapter(tmp_path, tokenizer, "patterns")
    pair, oracle = tk.load_pair(pt_dir, adapter), _oracle(tokenizer, adapter)
    outs = tk.generate(pair, PROMPTS, 1.0, max_new_tokens=6, chat=False)
    for p, o in zip(PROMPTS, outs):
        ids = torch.tensor([tokenizer(p)["input_ids"]])
        hf = oracle.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=6, do_sample=False,
                             pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
        toks = hf[0, ids.shape[1]:].tolist()
        if tokenizer.eos_token_id in toks:
            toks = toks[: toks.index(tokenizer.eos_token_id) + 1]
        assert o["token_ids"] == toks
    cached = tk.generate(pair, PROMPTS, 0.5, max_new_tokens=6, chat=False, use_cache=True)
    uncached = tk.generate(pair, PROMPTS, 0.5, max_new_tokens=6, chat=False, use_cache=False)
    assert [o["token_ids"] for o in cached] == [o["token_ids"] for o in uncached]


@pytest.mark.parametrize("family", CORE_FAMILIES)
def test_every_core_family_shares_exactly(tmp_path, tokenizer, family):
    """LoRA on every linear layer (PEFT's "all-linear"; GPT-2's Conv1D included): α = 1 is PEFT's unmerged forward
    and α = 0.5 its hooked forward, bit for bit, with the projections both blocks compute alike computed once."""
    from peft import LoraConfig, get_peft_model

    _base(tokenizer, family).save_pretrained(tmp_path / "pt")
    tokenizer.save_pretrained(tmp_path / "pt")
    get_peft_model(_base(tokenizer, family), LoraConfig(r=4, lora_alpha=8, target_modules="all-linear",
                                                        init_lora_weights=False)).save_pretrained(tmp_path / "ad")
    pair, oracle = tk.load_pair(tmp_path / "pt", tmp_path / "ad"), _oracle(tokenizer, tmp_path / "ad", family)
    assert pair.lora["mode"] == "shared"
    ids = _ids(tokenizer)[2]
    ids_t, mask = torch.tensor([ids]), torch.ones(1, len(ids), dtype=torch.long)
    for alpha in (1.0, 0.5):
        dec = decompose_batch(pair, ids_t, mask, [alpha] * pair.n_layers, keep_final=True)
        logp, ptc, ftc, x_L = _oracle_alpha(oracle, ids, alpha)
        ours = pair.family.logits(pair.finetuned, dec.x_final)[0, -1].float().log_softmax(-1)
        assert torch.equal(dec.x_final, x_L) and torch.equal(ours, logp)
        assert torch.equal(dec.acc_ptc[0], ptc) and torch.equal(dec.acc_ftc[0], ftc)
    assert pair.reuse.hits > 0


def test_bfloat16_shared_is_peft_on_the_bfloat16_base(tmp_path, tokenizer):
    """dtype="bfloat16": the base is cast first and PEFT then loads its adapter onto it as PEFT itself would
    (``PeftModel.from_pretrained`` on the bf16 base), so α = 1 still equals PEFT's unmerged forward bit for bit; the
    base's config is left as it was."""
    from peft import PeftModel

    pt_dir, adapter = _save_adapter(tmp_path, tokenizer, "patterns")
    pair = tk.load_pair(pt_dir, adapter, dtype="bfloat16")
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(pt_dir, dtype=torch.bfloat16)   # HF's own bf16 load of the base
    config = base.config.to_dict()
    oracle = PeftModel.from_pretrained(base, adapter).eval()
    assert {p.dtype for n, p in pair.finetuned.named_parameters() if "lora_" in n} == \
        {p.dtype for n, p in oracle.named_parameters() if "lora_" in n}
    for ids in _ids(tokenizer):
        ids_t = torch.tensor([ids])
        dec = decompose_batch(pair, ids_t, torch.ones_like(ids_t), [1.0] * pair.n_layers, keep_final=True)
        with torch.no_grad():
            expected = oracle(input_ids=ids_t).logits[0, -1].float().log_softmax(-1)
        assert torch.equal(pair.family.logits(pair.finetuned, dec.x_final)[0, -1].float().log_softmax(-1), expected)
    assert pair.pretrained.config.to_dict() == {**config, "dtype": pair.pretrained.config.to_dict()["dtype"]}


def test_a_sharded_run_does_not_mix_shared_and_merged_shards(tmp_path, tokenizer):
    pt_dir, adapter = _save_adapter(tmp_path, tokenizer, "plain")
    prompts = [{"id": f"p{i}", "prompt": p} for i, p in enumerate(PROMPTS)]
    tk.score_dataset(tk.load_pair(pt_dir, adapter), prompts, tmp_path / "out", chat=False, shard_tokens=64)
    with pytest.raises(tk.PlanMismatch, match=r"other lora\b.*shared → merged"):
        tk.score_dataset(tk.load_pair(pt_dir, adapter, lora="merged"), prompts, tmp_path / "out", chat=False,
                         shard_tokens=64)


@pytest.mark.parametrize("bias", ["all", "lora_only"])
def test_trained_biases_get_their_own_copy(tmp_path, tokenizer, bias, monkeypatch):
    """PEFT's bias="all"/"lora_only" stores trained base biases and loads them into the base modules: the fine-tuned
    side gets its own copy of those biases (every other tensor still shared), the pre-trained side stays the base,
    and α = 1 is PEFT's unmerged forward bit for bit. Without the copies PEFT would write into the shared base, and
    the load refuses by name."""
    from tuco_kernels.models import shared

    _save_bias_adapter(tmp_path, tokenizer, bias, ["q_proj", "v_proj"])
    pair, oracle, fresh = tk.load_pair(tmp_path / "pt", tmp_path / "ad"), _oracle(tokenizer, tmp_path / "ad", "qwen2"), \
        _base(tokenizer, "qwen2")
    n_stored = len(shared.differing(fresh, shared.stored_base_tensors(tmp_path / "ad")))
    if n_stored == 0:   # seen with peft 0.18 (the declared floor) and bias="lora_only": no base bias is saved
        import peft
        pytest.skip(f"peft {peft.__version__} saved no trained base bias for bias={bias!r}: nothing to copy")
    assert pair.lora["mode"] == "shared"
    assert shared_parameters(pair.pretrained, pair.finetuned) == len(list(fresh.parameters())) - n_stored
    for ids in _ids(tokenizer):
        ids_t = torch.tensor([ids])
        dec = decompose_batch(pair, ids_t, torch.ones_like(ids_t), [1.0] * pair.n_layers, keep_final=True)
        with torch.no_grad():
            assert torch.equal(pair.pretrained(input_ids=ids_t).logits, fresh(input_ids=ids_t).logits)
            expected = oracle(input_ids=ids_t).logits[0, -1].float().log_softmax(-1)
        assert torch.equal(pair.family.logits(pair.finetuned, dec.x_final)[0, -1].float().log_softmax(-1), expected)
    monkeypatch.setattr(shared, "give_own_tensors", lambda model, names: None)
    with pytest.raises(ModelError, match=r"ad: loading the adapter wrote into the pre-trained weights \(model\.layers"
                                         r"\.\d+\.self_attn\.[qkv]_proj\.bias\).*lora='merged'"):
        tk.load_pair(tmp_path / "pt", tmp_path / "ad")


@pytest.mark.parametrize("offload", ["cpu", "disk"])
@pytest.mark.parametrize("name", ["plain", "modules_to_save", "embedding", "dora"])
def test_a_streamed_shared_pair_is_the_resident_one(tmp_path, tokenizer, name, offload):
    """offload="cpu"|"disk": PEFT's modules around the streamed base layer, the adapter on the device: every number
    equals the resident shared pair's (so PEFT's unmerged forward) bit for bit, and one model's blocks are read
    per sweep, as for the merged streamed pair."""
    pt_dir, adapter = _save_adapter(tmp_path, tokenizer, name)
    resident = tk.load_pair(pt_dir, adapter)
    expected = tk.score(resident, PROMPTS, chat=False, layers=True)
    pair = tk.load_pair(pt_dir, adapter, offload=offload)
    assert pair.lora == {"mode": "shared", "reason": None} and run_metadata(pair)["lora"] == pair.lora
    got = tk.score(pair, PROMPTS, chat=False, layers=True, schedule="layer", profile=True)
    assert got.tuco.tolist() == expected.tuco.tolist() and np.array_equal(got.beta, expected.beta)
    assert torch.equal(tk.next_token_logprobs(pair, PROMPTS, 0.5, chat=False), tk.next_token_logprobs(resident, PROMPTS, 0.5, chat=False))
    if offload == "disk":
        blocks = sum(p.numel() * p.element_size() for b in resident.family.layers(resident.pretrained)
                     for n, p in b.named_parameters())
        assert got.run.profile.bytes_read == blocks * got.run.sweeps   # the base's blocks once per sweep, no adapter
    pair.close()


def test_a_streamed_pair_merges_what_it_cannot_share(tmp_path, tokenizer):
    """Trained biases stored in the adapter live in the streamed blocks: such a pair is merged per layer on the
    device (as before), with the reason."""
    _save_bias_adapter(tmp_path, tokenizer, "all", ["q_proj"])
    pair = tk.load_pair(tmp_path / "pt", tmp_path / "ad", offload="cpu")
    assert pair.lora["mode"] == "merged"
    assert pair.lora["reason"].startswith("offload='cpu': the adapter stores base tensors with values of its own "
                                          "(model.layers.0.")
    merged = tk.score(tk.load_pair(tmp_path / "pt", tmp_path / "ad", lora="merged"), PROMPTS, chat=False)
    assert tk.score(pair, PROMPTS, chat=False).tuco == pytest.approx(merged.tuco, abs=1e-6)
    pair.close()


def test_a_streamed_shared_pair_computes_once_what_both_blocks_compute_alike(tmp_path, tokenizer):
    pt_dir, adapter = _save_adapter(tmp_path, tokenizer, "plain")
    pair = tk.load_pair(pt_dir, adapter, offload="cpu")
    with_reuse = tk.score(pair, PROMPTS, chat=False, layers=True)
    assert pair.reuse.hits > 0
    pair.reuse = None
    assert tk.score(pair, PROMPTS, chat=False, layers=True).tuco.tolist() == with_reuse.tuco.tolist()
    pair.close()


@pytest.mark.parametrize("offload", ["none", "cpu"])
def test_damaged_or_missing_adapter_weights_are_named(tmp_path, tokenizer, offload):
    pt_dir, adapter = _save_adapter(tmp_path, tokenizer, "plain")
    weights = adapter / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(ModelError, match=r"adapter_model.safetensors: (cannot read the adapter weights|not a "
                                         r"safetensors file, or truncated)"):
        tk.load_pair(pt_dir, adapter, offload=offload)
    weights.unlink()
    with pytest.raises(ModelError, match=r"plain: no adapter weights \(adapter_model.safetensors\)"):
        tk.load_pair(pt_dir, adapter, offload=offload)


def _save_bias_adapter(tmp_path, tokenizer, bias: str, targets: list[str]) -> None:
    """A qwen2 base in tmp_path/pt and a LoRA adapter in tmp_path/ad whose biases (PEFT's ``bias=``) were trained
    (moved by 0.1), so the adapter stores base tensors with values of its own."""
    from peft import LoraConfig, get_peft_model

    _base(tokenizer, "qwen2").save_pretrained(tmp_path / "pt")
    tokenizer.save_pretrained(tmp_path / "pt")
    peft_model = get_peft_model(_base(tokenizer, "qwen2"), LoraConfig(r=4, lora_alpha=8, bias=bias,
                                                                       target_modules=targets, init_lora_weights=False))
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if name.endswith("bias"):
                p.add_(0.1)
    peft_model.save_pretrained(tmp_path / "ad")
