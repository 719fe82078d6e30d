"""The decomposition against oracles nobody here wrote: HF's own forward, the paper's identities,
and an independent hooks-based reference (tests/fixtures/naive_reference.py)."""

import pytest
import torch

import tuco_kernels as tk
from tuco_kernels.core.engine import decompose_batch, layer_alphas
from tuco_kernels.errors import TucoError, UnsupportedModelError

from tests.fixtures.pairs import PROMPTS, make_pair_models
from tests.fixtures.tiny import build_model
from tests.fixtures.naive_reference import blocks_of, naive_decomposition, naive_tuco


def _ids(tokenizer, prompts=PROMPTS):
    return [tokenizer(p)["input_ids"] for p in prompts]


@pytest.mark.parametrize("dtype,atol", [(torch.float32, 1e-5), (torch.bfloat16, 2e-2)])
@pytest.mark.parametrize("batch_tokens", [10_000, 1], ids=["padded-batch", "one-at-a-time"])
def test_engine_matches_naive_reference(family, tokenizer, dtype, atol, batch_tokens):
    pt, ft = make_pair_models(family, tokenizer, dtype)
    pair = tk.load_pair(pt, ft, tokenizer=tokenizer)
    result = tk.score(pair, PROMPTS, batch_tokens=batch_tokens, chat=False)
    expected = [naive_tuco(pt, ft, ids) for ids in _ids(tokenizer)]
    assert result.tuco == pytest.approx(expected, abs=atol)
    assert 0 < result.tuco.min() and result.tuco.max() < 1  # a real, non-degenerate difference


def test_identity_x0_plus_sums_is_final_block_output(pair, tokenizer):
    """x_L = x_0 + ΣPTC + ΣFTC (paper Prop. D.3 ii), x_L taken from HF's own last block via a hook."""
    for ids in _ids(tokenizer):
        _, _, x0, hf_last_block_out = naive_decomposition(pair.pretrained, pair.finetuned, ids)
        dec = decompose_batch(pair, torch.tensor([ids]), torch.ones(1, len(ids), dtype=torch.long),
                              [1.0] * pair.n_layers, keep_final=True)
        torch.testing.assert_close(x0[0, -1].double() + dec.acc_ptc[0].double() + dec.acc_ftc[0].double(),
                                   hf_last_block_out[0, -1].double(), atol=1e-5, rtol=1e-5)
        assert torch.equal(dec.x_final, hf_last_block_out)  # α = 1 replays the fine-tuned forward bit-for-bit


def test_alpha_one_logits_equal_hf(pair, tokenizer):
    logp = tk.next_token_logprobs(pair, PROMPTS, alpha=1.0, chat=False)
    for i, ids in enumerate(_ids(tokenizer)):
        hf = torch.log_softmax(pair.finetuned(input_ids=torch.tensor([ids])).logits[0, -1].float(), -1)
        torch.testing.assert_close(logp[i], hf, atol=2e-6, rtol=1e-6)


def test_alpha_zero_is_pretrained_model_with_shared_embeddings(pair, tokenizer):
    """With identical embeddings, α = 0 reproduces the pre-trained model's own final hidden state."""
    for ids in _ids(tokenizer):
        ids_t, mask = torch.tensor([ids]), torch.ones(1, len(ids), dtype=torch.long)
        dec = decompose_batch(pair, ids_t, mask, [0.0] * pair.n_layers, keep_final=True)
        seen = {}
        hook = blocks_of(pair.pretrained)[-1].register_forward_hook(lambda m, a, o: seen.setdefault("x_L", o))
        pair.pretrained(input_ids=ids_t)  # HF's own forward: its last block's output is the pre-trained x_L
        hook.remove()
        assert torch.equal(dec.x_final, seen["x_L"])
        hf_pt = pair.pretrained(input_ids=ids_t, output_hidden_states=True)
        # HF's last hidden state is after the final norm: compare the norm of ours with it
        torch.testing.assert_close(pair.family.final_norm(pair.pretrained)(dec.x_final), hf_pt.hidden_states[-1])


def test_identical_models_give_zero(family, tokenizer):
    pt, _ = make_pair_models(family, tokenizer)
    result = tk.score(tk.load_pair(pt, pt, tokenizer=tokenizer), PROMPTS, layers=True, chat=False)
    assert (result.tuco == 0).all()
    assert (result.ftc_l1 == 0).all() and (result.ptc_l1 > 0).all()


def test_batching_does_not_change_results(pair):
    together = tk.score(pair, PROMPTS, batch_tokens=100_000, layers=True, chat=False)
    alone = [tk.score(pair, [p], layers=True, chat=False) for p in PROMPTS]
    assert together.tuco == pytest.approx([a.tuco[0] for a in alone], abs=1e-6)
    for i, a in enumerate(alone):
        assert together.beta[i] == pytest.approx(a.beta[0], abs=1e-5)


def test_layers_profile_is_consistent(llama_pair, tokenizer):
    r = tk.score(llama_pair, PROMPTS, layers=True, chat=False)
    assert r.ptc_l1.shape == r.ftc_l1.shape == r.beta.shape == (len(PROMPTS), llama_pair.n_layers)
    assert r.beta[:, -1] == pytest.approx(r.tuco, abs=1e-5)  # β after the last layer is TuCo (fp32 norms)
    pt, ft = llama_pair.pretrained, llama_pair.finetuned
    for i, ids in enumerate(_ids(tokenizer)):
        ptc, ftc, _, _ = naive_decomposition(pt, ft, ids)
        assert r.ptc_l1[i] == pytest.approx(ptc.abs().sum(-1).numpy(), rel=1e-4)
        assert r.ftc_l1[i] == pytest.approx(ftc.abs().sum(-1).numpy(), rel=1e-4)
        cp, cf = ptc.cumsum(0).abs().sum(-1), ftc.cumsum(0).abs().sum(-1)
        assert r.beta[i] == pytest.approx((cf / (cp + cf)).numpy(), abs=1e-5)


def test_token_map_last_position_is_tuco(llama_pair, tokenizer):
    r = tk.score(llama_pair, PROMPTS, token_map=True, chat=False)
    for i, ids in enumerate(_ids(tokenizer)):
        assert len(r.token_tuco[i]) == len(ids)
        assert r.token_tuco[i][-1] == pytest.approx(r.tuco[i], abs=1e-6)
        # position t's TuCo is the last-token TuCo of the prompt cut after t (causal attention)
        t = len(ids) // 2
        assert r.token_tuco[i][t - 1] == pytest.approx(naive_tuco(llama_pair.pretrained, llama_pair.finetuned,
                                                                  ids[:t]), abs=1e-5)


def test_output_co_matches_definition(pair, tokenizer):
    r = tk.score(pair, PROMPTS, output_co=True, chat=False)
    for i, ids in enumerate(_ids(tokenizer)):
        outs = {}
        for name, model in (("pt", pair.pretrained), ("ft", pair.finetuned)):
            h = blocks_of(model)[-1].register_forward_hook(lambda m, a, o, name=name: outs.__setitem__(name, o))
            model(input_ids=torch.tensor([ids]))
            h.remove()
        diff = (outs["ft"][0, -1] - outs["pt"][0, -1]).double().abs().sum()
        assert r.output_co[i] == pytest.approx(float(diff / (outs["pt"][0, -1].double().abs().sum() + diff)), rel=1e-5)


def test_per_layer_alpha(llama_pair):
    L = llama_pair.n_layers
    ones = tk.score(llama_pair, PROMPTS, alpha=[1.0] * L, chat=False)
    assert ones.tuco == pytest.approx(tk.score(llama_pair, PROMPTS, chat=False).tuco, abs=0)
    # scaling only the last layer's FTC leaves every earlier layer's stream, hence TuCo, unchanged
    last_only = tk.score(llama_pair, PROMPTS, alpha=[1.0] * (L - 1) + [3.0], chat=False)
    assert last_only.tuco == pytest.approx(ones.tuco, abs=0)
    first = tk.score(llama_pair, PROMPTS, alpha=[3.0] + [1.0] * (L - 1), chat=False)
    assert (abs(first.tuco - ones.tuco) > 1e-4).all()
    with pytest.raises(TucoError, match="alpha has 2 values but the model has 3 layers"):
        layer_alphas([1.0, 1.0], 3)
    with pytest.raises(TucoError, match="finite"):
        layer_alphas(float("nan"), 3)


def test_model_outside_the_decomposition_is_refused_with_the_reason():
    """DeepSeek-V4 carries several residual streams between blocks (hyper-connections): no single x_l to split."""
    from tests.fixtures.family_configs import tiny_config

    model = build_model(tiny_config("deepseek_v4"))
    with pytest.raises(UnsupportedModelError, match=r"model_type 'deepseek_v4' cannot be decomposed exactly: the "
                                                    r"blocks carry a stream of shape \(2, 6, 4, 64\), not \[batch=2, tokens=6, hidden=64\]"):
        tk.load_pair(model, model)


def test_encoder_decoder_is_refused_before_loading():
    from transformers import AutoConfig

    from tuco_kernels.core.families import check_config

    with pytest.raises(UnsupportedModelError, match="model_type 't5' is an encoder-decoder model"):
        check_config(AutoConfig.for_model("t5"))


@pytest.mark.gpu
def test_engine_on_gpu_matches_cpu(tokenizer):
    pt, ft = make_pair_models("llama", tokenizer)
    cpu = tk.score(tk.load_pair(pt, ft, tokenizer=tokenizer), PROMPTS, chat=False)
    import copy
    gpu_pair = tk.load_pair(copy.deepcopy(pt), copy.deepcopy(ft), tokenizer=tokenizer, device="cuda")
    assert tk.score(gpu_pair, PROMPTS, chat=False).tuco == pytest.approx(cpu.tuco, abs=1e-4)


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_scores_do_not_depend_on_the_kernel_backend(tokenizer, dtype, device):
    """Every backend that runs on the device gives the same TuCo, token maps and α-steered log-probs: the stream
    and the accumulators are bit-identical by construction (only the per-layer norms are sums in another order)."""
    import copy
    import os

    from tuco_kernels import ops

    pt, ft = make_pair_models("llama", tokenizer, dtype=dtype)
    pair = tk.load_pair(copy.deepcopy(pt), copy.deepcopy(ft), tokenizer=tokenizer, device=device)
    backends = ops.available_backends(device)
    if device == "cpu":   # the Triton interpreter counts only where conftest switched it on (no CUDA)
        expected = {"cpu", "torch"} | ({"triton"} if os.environ.get("TRITON_INTERPRET") == "1" else set())
    else:                 # the CUDA op is required too: tests/ops/test_extension.py says why it is missing
        expected = {"triton", "torch"}
    assert expected <= set(backends), ops.backend_status(device)
    runs = {b: (tk.score(pair, PROMPTS[:3], layers=True, token_map=True, backend=b, chat=False),
                tk.next_token_logprobs(pair, PROMPTS[:3], alpha=0.5, backend=b, chat=False)) for b in backends}
    ref_scores, ref_logp = runs["torch"]
    for backend, (scores, logp) in runs.items():
        assert (scores.tuco == ref_scores.tuco).all(), backend
        assert all((a == b).all() for a, b in zip(scores.token_tuco, ref_scores.token_tuco)), backend
        assert torch.equal(logp, ref_logp), backend
        for field in ("ptc_l1", "ftc_l1", "beta"):
            torch.testing.assert_close(torch.from_numpy(getattr(scores, field)),
                                       torch.from_numpy(getattr(ref_scores, field)), rtol=1e-5, atol=1e-6)
