"""α-steering, generation and the drop-in `attach`, against HF's own forward and generate."""

import pytest
import torch

import tuco_kernels as tk
from tuco_kernels.errors import TucoError

from tests.fixtures.pairs import PROMPTS
from tests.fixtures.naive_reference import blocks_of


@torch.no_grad()
def hooked_alpha_logprobs(pt, ft, ids, alpha):
    """Oracle: HF's own forward of the FT model, each block's output replaced by a forward hook with
    out_pt + α(out_ft − out_pt), out_pt from the PT block on the same input and arguments."""
    def hook(pt_block):
        def fn(module, args, kwargs, out_ft):
            out_pt = pt_block(*args, **kwargs)
            return out_pt + alpha * (out_ft - out_pt)
        return fn
    handles = [fb.register_forward_hook(hook(pb), with_kwargs=True) for fb, pb in zip(blocks_of(ft), blocks_of(pt))]
    try:
        logits = ft(input_ids=torch.tensor([ids]), use_cache=False).logits[0, -1]  # no KV cache shared by both blocks
    finally:
        for h in handles:
            h.remove()
    return torch.log_softmax(logits.float(), -1)


@pytest.mark.parametrize("alpha", [0.0, 0.75, 1.25])
def test_steer_matches_hooked_hf_forward(pair, tokenizer, alpha):
    logp = tk.next_token_logprobs(pair, PROMPTS, alpha, chat=False)
    for i, p in enumerate(PROMPTS):
        exp = hooked_alpha_logprobs(pair.pretrained, pair.finetuned, tokenizer(p)["input_ids"], alpha)
        torch.testing.assert_close(logp[i], exp, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(logp, tk.next_token_logprobs(pair, PROMPTS, 1.0, chat=False), atol=1e-4)  # α really changes the output


def test_attach_alpha_one_is_bit_identical_and_restores(pair, tokenizer):
    ids = torch.tensor([tokenizer(PROMPTS[2])["input_ids"]])
    before = pair.finetuned(input_ids=ids).logits
    with tk.attach(pair.finetuned, pair.pretrained, alpha=1.0) as probe:
        inside = pair.finetuned(input_ids=ids).logits
    assert torch.equal(inside, before)
    assert probe.tuco[0].item() == pytest.approx(tk.score(pair, [PROMPTS[2]], chat=False).tuco[0], abs=1e-6)
    assert probe.beta.shape == (1, pair.n_layers)
    with tk.attach(pair.finetuned, pair.pretrained, alpha=1.25):
        steered = pair.finetuned(input_ids=ids).logits
    assert not torch.equal(steered, before)
    assert torch.equal(pair.finetuned(input_ids=ids).logits, before)  # restored exactly
    assert all("forward" not in vars(b) for b in blocks_of(pair.finetuned))


def test_attach_alpha_matches_oracle_and_rejects_nesting(llama_pair, tokenizer):
    ids = tokenizer(PROMPTS[0])["input_ids"]
    with tk.attach(llama_pair.finetuned, llama_pair.pretrained, alpha=0.75):
        got = torch.log_softmax(llama_pair.finetuned(input_ids=torch.tensor([ids])).logits[0, -1], -1)
        with pytest.raises(TucoError, match="already wrapped"):
            with tk.attach(llama_pair.finetuned, llama_pair.pretrained):
                pass
    torch.testing.assert_close(got, hooked_alpha_logprobs(llama_pair.pretrained, llama_pair.finetuned, ids, 0.75),
                               atol=1e-5, rtol=1e-5)
    assert all("forward" not in vars(b) for b in blocks_of(llama_pair.finetuned))


def test_attach_restores_after_an_exception(llama_pair):
    with pytest.raises(RuntimeError, match="boom"):
        with tk.attach(llama_pair.finetuned, llama_pair.pretrained):
            raise RuntimeError("boom")
    assert all("forward" not in vars(b) for b in blocks_of(llama_pair.finetuned))


def test_generate_alpha_one_equals_hf_generate(pair, tokenizer):
    outs = tk.generate(pair, PROMPTS, 1.0, max_new_tokens=6, chat=False)
    for p, o in zip(PROMPTS, outs):
        ids = torch.tensor([tokenizer(p)["input_ids"]])
        hf = pair.finetuned.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=6,
                                     do_sample=False, pad_token_id=tokenizer.pad_token_id,
                                     eos_token_id=tokenizer.eos_token_id)
        toks = hf[0, ids.shape[1]:].tolist()
        if tokenizer.eos_token_id in toks:
            toks = toks[: toks.index(tokenizer.eos_token_id) + 1]
        assert o["token_ids"] == toks
        assert o["text"] == tokenizer.decode(toks, skip_special_tokens=True)


@pytest.mark.parametrize("alpha", [0.5, 1.25])
def test_cached_generation_equals_uncached(pair, alpha):
    """HF generate under attach (both models keep KV caches on the steered stream) = full recomputation."""
    uncached = tk.generate(pair, PROMPTS, alpha, max_new_tokens=6, use_cache=False, chat=False)
    cached = tk.generate(pair, PROMPTS, alpha, max_new_tokens=6, use_cache=True, chat=False)
    assert [o["token_ids"] for o in cached] == [o["token_ids"] for o in uncached]


def test_probe_history_during_generation(llama_pair, tokenizer):
    ids = torch.tensor([tokenizer(PROMPTS[0])["input_ids"]])
    with tk.attach(llama_pair.finetuned, llama_pair.pretrained, alpha=1.0) as probe:
        llama_pair.finetuned.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=4,
                                      min_new_tokens=4, do_sample=False, pad_token_id=0)
    assert len(probe.history) == 4  # the prompt call and three decoding steps
    assert probe.history[0][0].item() == pytest.approx(tk.score(llama_pair, [PROMPTS[0]], chat=False).tuco[0], abs=1e-6)


def test_sampling_is_seeded(llama_pair):
    a = tk.generate(llama_pair, PROMPTS[:2], 1.0, max_new_tokens=5, do_sample=True, seed=3, top_p=0.9, chat=False)
    b = tk.generate(llama_pair, PROMPTS[:2], 1.0, max_new_tokens=5, do_sample=True, seed=3, top_p=0.9, chat=False)
    assert a == b
    with pytest.raises(TucoError, match="temperature must be positive"):
        tk.generate(llama_pair, PROMPTS[:1], 1.0, do_sample=True, temperature=0, chat=False)


def test_samples_do_not_depend_on_the_batch(llama_pair):
    """Each (prompt, sample) row draws from its own seeded generator: alone or beside others, the same text."""
    alone = tk.generate(llama_pair, PROMPTS[:1], 1.0, max_new_tokens=6, do_sample=True, seed=7, num_samples=3, chat=False)
    mixed = tk.generate(llama_pair, PROMPTS[2:3] + PROMPTS[:1], 1.0, max_new_tokens=6, do_sample=True, seed=7,
                        num_samples=3, batch_tokens=10**6, chat=False)
    assert [o["token_ids"] for o in mixed[3:]] == [o["token_ids"] for o in alone]
    assert [o["sample"] for o in alone] == [0, 1, 2] and len({tuple(o["token_ids"]) for o in alone}) > 1


def test_chat_prompts_stop_at_the_templates_end_of_turn(llama_pair, tokenizer):
    from tuco_kernels.generate import end_of_turn_id, stop_token_ids

    eot = tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert end_of_turn_id(tokenizer) == eot
    assert stop_token_ids(llama_pair, chats=True) == {tokenizer.eos_token_id, eot}
    assert stop_token_ids(llama_pair, chats=False) == {tokenizer.eos_token_id}
