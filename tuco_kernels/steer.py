"""FTC α-scaling (paper Def. 5.1): next-token log-probabilities and generation under α.

x_{l+1} = x_l + PTC(x_l, l) + α·FTC(x_l, l) on the α-model's own stream; α = 1 is the fine-tuned model.
The final norm, LM head and soft-capping of the fine-tuned model turn x_L into logits.
"""

from __future__ import annotations

import torch

from .batching import make_batches
from .engine import decompose_batch, layer_alphas
from .errors import TucoError
from .score import DEFAULT_BATCH_TOKENS, pad_id_of, prepare


@torch.no_grad()
def steer(pair, prompts, alpha=1.0, *, chat: bool = False, system_prompt: str | None = None,
          batch_tokens: int = DEFAULT_BATCH_TOKENS, backend: str | None = None) -> torch.Tensor:
    """Next-token log-probabilities [N, V] (fp32, input order) after each prompt under α."""
    _, token_lists = prepare(pair, prompts, chat=chat, system_prompt=system_prompt)
    alphas = layer_alphas(alpha, pair.n_layers)
    out = None
    for batch in make_batches(token_lists, batch_tokens, pad_id_of(pair.tokenizer)):
        logp = _next_logprobs(pair, batch.input_ids, batch.attention_mask, alphas, backend)
        if out is None:
            out = torch.empty((len(token_lists), logp.shape[-1]), dtype=torch.float32)
        out[batch.indices] = logp.cpu()
    return out


def _next_logprobs(pair, input_ids, attention_mask, alphas, backend):
    dec = decompose_batch(pair, input_ids, attention_mask, alphas, keep_final=True, backend=backend)
    rows = torch.arange(input_ids.shape[0], device=dec.x_final.device)
    logits = pair.family.logits(pair.finetuned, dec.x_final[rows, dec.last_idx].to(pair.device))
    return torch.log_softmax(logits.float(), dim=-1)


def _pick(logp: torch.Tensor, do_sample: bool, temperature: float, top_k: int, top_p: float, gen) -> torch.Tensor:
    if not do_sample:
        return logp.argmax(-1)
    logits = logp / temperature
    if top_k > 0:
        kth = logits.topk(min(top_k, logits.shape[-1]), dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_l, order = logits.sort(dim=-1, descending=True)
        cum = sorted_l.softmax(-1).cumsum(-1)
        drop = cum - sorted_l.softmax(-1) > top_p
        logits = logits.scatter(-1, order, sorted_l.masked_fill(drop, float("-inf")))
    return torch.multinomial(logits.softmax(-1).cpu(), 1, generator=gen).squeeze(-1).to(logp.device)


@torch.no_grad()
def generate(pair, prompts, alpha=1.0, *, max_new_tokens: int = 32, do_sample: bool = False,
             temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0, seed: int | None = None,
             use_cache: bool = False, chat: bool = False, system_prompt: str | None = None,
             batch_tokens: int = DEFAULT_BATCH_TOKENS, backend: str | None = None) -> list[dict]:
    """Decode under α, greedily or by sampling; returns ``{"id", "text", "token_ids"}`` per prompt (input order).

    ``use_cache=False`` recomputes both models' blocks on the whole steered sequence at every step (the
    definition). ``use_cache=True`` runs HF's own ``generate`` with :func:`attach`, each model keeping its
    KV cache on the steered stream; tests check that both paths agree.
    """
    if temperature <= 0:
        raise TucoError("temperature must be positive")
    if use_cache and pair.streamer is not None:
        raise TucoError(f"use_cache=True needs both models resident (it runs HF's generate with attach); this pair "
                        f"streams its weights (offload={pair.offload!r}): use use_cache=False")
    records, token_lists = prepare(pair, prompts, chat=chat, system_prompt=system_prompt)
    alphas = layer_alphas(alpha, pair.n_layers)
    eos = getattr(pair.tokenizer, "eos_token_id", None) if pair.tokenizer is not None else None
    pad = pad_id_of(pair.tokenizer)
    gen = torch.Generator().manual_seed(seed) if seed is not None else None
    new_tokens: list[list[int]] = [[] for _ in token_lists]
    for batch in make_batches(token_lists, batch_tokens, pad):
        if use_cache:
            rows = _generate_cached(pair, batch, alphas, max_new_tokens, do_sample, temperature, top_k, top_p,
                                    eos, pad, seed, backend)
        else:
            rows = _generate_uncached(pair, batch, alphas, max_new_tokens, do_sample, temperature, top_k, top_p,
                                      eos, pad, gen, backend)
        for i, toks in zip(batch.indices, rows):
            new_tokens[i] = toks
    out = []
    for rec, toks in zip(records, new_tokens):
        text = pair.tokenizer.decode(toks, skip_special_tokens=True) if pair.tokenizer is not None else None
        out.append({"id": rec.id, "text": text, "token_ids": toks})
    return out


def _generate_uncached(pair, batch, alphas, max_new, do_sample, temperature, top_k, top_p, eos, pad, gen, backend):
    ids, mask = batch.input_ids.to(pair.device), batch.attention_mask.to(pair.device)
    done = torch.zeros(ids.shape[0], dtype=torch.bool, device=ids.device)
    rows: list[list[int]] = [[] for _ in range(ids.shape[0])]
    for _ in range(max_new):
        logp = _next_logprobs(pair, ids, mask, alphas, backend)
        nxt = _pick(logp, do_sample, temperature, top_k, top_p, gen)
        for r in range(ids.shape[0]):
            if not done[r]:
                rows[r].append(int(nxt[r]))
        ids = torch.cat([ids, torch.where(done, torch.full_like(nxt, pad), nxt)[:, None]], 1)
        mask = torch.cat([mask, (~done).long()[:, None]], 1)
        if eos is not None:
            done |= nxt == eos
        if bool(done.all()):
            break
    return rows


def _generate_cached(pair, batch, alphas, max_new, do_sample, temperature, top_k, top_p, eos, pad, seed, backend):
    from .attach import attach

    ids, mask = batch.input_ids.to(pair.device), batch.attention_mask.to(pair.device)
    if seed is not None:
        torch.manual_seed(seed)
    kwargs = dict(max_new_tokens=max_new, do_sample=do_sample, pad_token_id=pad, use_cache=True)
    if do_sample:
        kwargs.update(temperature=temperature, top_k=top_k or None, top_p=top_p)
    if eos is not None:
        kwargs["eos_token_id"] = eos
    with attach(pair.finetuned, pair.pretrained, alphas, backend=backend):
        seqs = pair.finetuned.generate(input_ids=ids, attention_mask=mask, **kwargs)
    rows = []
    for r in range(ids.shape[0]):
        toks = seqs[r, ids.shape[1]:].tolist()
        if eos is not None and eos in toks:
            toks = toks[: toks.index(eos) + 1]
        rows.append(toks)
    return rows
