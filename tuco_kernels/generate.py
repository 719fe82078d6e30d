"""Generation under FTC α-scaling: the one decoding path of the package (``tk.generate``, ``tuco steer``, the studies).

Each step turns the prompt-so-far into next-token log-probabilities under α (docs/math.md §3), picks a token
(greedy, or sampled with temperature / top-k / top-p from a seeded generator) and stops a row at a stop token.
Two ways to get the log-probabilities, with the same picking and stopping:

* cached (resident pairs, the default): the fine-tuned model's own HF forward with its KV cache, its blocks
  wrapped by :func:`~tuco_kernels.attach.attach` so that the pre-trained blocks keep their own cache on the
  same steered stream; with α = 1 everywhere the fine-tuned model runs alone (bit-identical, half the work);
* recomputed (``use_cache=False``; streamed pairs): the whole steered sequence through the engine at every
  step (the definition; tests check that both ways give the same tokens).

A row whose log-probabilities stop being finite stops at that token and says why in its ``status``, as scoring
flags its rows (nothing is picked, let alone sampled, from NaN).

Stop tokens: the tokenizer's EOS, the model's generation-config EOS ids, and, when the prompts are chats, the
chat template's end-of-turn token (``<end_of_turn>``, ``<|im_end|>``, ``<|eot_id|>``...), found by rendering a
turn with the template itself. ``token_ids`` keep the stop token; ``text`` is decoded without special tokens.
"""

from __future__ import annotations

import inspect
import zlib
from array import array
from contextlib import nullcontext

import torch

from .attach import attach
from .core.capture import position_ids_from_mask
from .core.engine import decompose_batch, layer_alphas
from .errors import PromptError, TucoError, positive_int
from .prompts.batching import make_batches
from .prompts.tokenize import max_positions, pad_id_of, prepare, use_chat

DEFAULT_BATCH_TOKENS = 4096


@torch.no_grad()
def next_logprobs(pair, input_ids: torch.Tensor, attention_mask: torch.Tensor, alphas: list[float],
                  backend: str | None = None) -> torch.Tensor:
    """Log-probabilities [B, V] (fp32) of the token after each row under α, recomputed through the engine."""
    dec = decompose_batch(pair, input_ids, attention_mask, alphas, keep_final=True, backend=backend)
    rows = torch.arange(input_ids.shape[0], device=dec.x_final.device)
    logits = pair.family.logits(pair.finetuned, dec.x_final[rows, dec.last_idx].to(pair.device))
    return torch.log_softmax(logits.float(), dim=-1)


def end_of_turn_id(tokenizer) -> int | None:
    """The special token the chat template closes an assistant turn with, or None (no template, or none found)."""
    if tokenizer is None or not getattr(tokenizer, "chat_template", None):
        return None
    marker = "\u2063TUCO\u2063"
    try:
        text = tokenizer.apply_chat_template([{"role": "user", "content": "hi"},
                                              {"role": "assistant", "content": marker}], tokenize=False)
    except Exception:  # a template that takes one user turn only (the paper's): no end-of-turn to find
        return None
    if marker not in text:
        return None
    special = set(tokenizer.all_special_ids) | {i for i, t in tokenizer.added_tokens_decoder.items() if t.special}
    for token in tokenizer(text.split(marker, 1)[1], add_special_tokens=False)["input_ids"]:
        if token in special:
            return token
    return None


def stop_token_ids(pair, chats: bool) -> set[int]:
    """EOS (tokenizer and generation config) and, for chat prompts, the template's end-of-turn token."""
    ids: set[int] = set()
    tok = pair.tokenizer
    candidates = [getattr(tok, "eos_token_id", None) if tok is not None else None,
                  getattr(getattr(pair.finetuned, "generation_config", None), "eos_token_id", None)]
    if chats:
        candidates.append(end_of_turn_id(tok))
    for c in candidates:
        ids.update(c if isinstance(c, (list, tuple)) else [c])
    unk = getattr(tok, "unk_token_id", None) if tok is not None else None
    return {i for i in ids if i is not None and i != unk and 0 <= i < pair.vocab_size}


def row_generators(token_lists: list[list[int]], samples: list[int], seed: int | None) -> list[torch.Generator]:
    """One CPU generator per row, seeded from (seed, the prompt's token ids, the sample's index): a prompt's
    samples do not depend on which other prompts share its batch or where it stands in the input."""
    if seed is None:
        seed = int(torch.randint(0, 2**62, (1,)))
    gens = []
    for ids, k in zip(token_lists, samples):
        digest = zlib.crc32(array("q", ids).tobytes())
        gens.append(torch.Generator().manual_seed(((seed * 1_000_003 + digest) * 1009 + k) % 2**63))
    return gens


def pick_tokens(logp: torch.Tensor, *, do_sample: bool, temperature: float, top_k: int, top_p: float,
                generators: list[torch.Generator] | None) -> torch.Tensor:
    """Next token per row: argmax, or a sample after temperature, top-k and top-p (nucleus) filtering, each row
    drawn with its own generator."""
    if not do_sample:
        return logp.argmax(-1)
    logits = logp / temperature
    if top_k > 0:
        kth = logits.topk(min(top_k, logits.shape[-1]), dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_l, order = logits.sort(dim=-1, descending=True)
        probs = sorted_l.softmax(-1)
        drop = probs.cumsum(-1) - probs > top_p
        logits = logits.scatter(-1, order, sorted_l.masked_fill(drop, float("-inf")))
    probs = logits.softmax(-1).cpu()
    picks = [torch.multinomial(probs[r], 1, generator=generators[r]) for r in range(probs.shape[0])]
    return torch.cat(picks).to(logp.device)


class _Cached:
    """Log-probabilities from the fine-tuned model's own forward with its KV cache (under attach unless α ≡ 1)."""

    def __init__(self, pair, alphas, backend):
        self.model = pair.finetuned
        steer = any(a != 1.0 for a in alphas)
        self.context = attach(pair.finetuned, pair.pretrained, alphas, backend=backend, family=pair.family) if steer else nullcontext()
        self.cache = None
        # transformers 5.24 renamed the forward's past_key_values to cache (the old name warns, then goes in 5.40)
        self.cache_arg = "cache" if "cache" in inspect.signature(self.model.forward).parameters else "past_key_values"

    def first(self, ids, mask):
        return self._run(ids, mask, position_ids_from_mask(mask))

    def next(self, ids, mask, nxt):
        position = position_ids_from_mask(mask)[:, -1:]
        return self._run(nxt[:, None], mask, position)

    def _run(self, ids, mask, position_ids):
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=position_ids, use_cache=True,
                         logits_to_keep=1, **{self.cache_arg: self.cache})
        self.cache = out[self.cache_arg] if self.cache_arg in out else out.past_key_values
        return torch.log_softmax(out.logits[:, -1].float(), dim=-1)


class _Recomputed:
    """Log-probabilities of the whole steered sequence through the engine at every step."""

    def __init__(self, pair, alphas, backend):
        self.pair, self.alphas, self.backend = pair, alphas, backend
        self.context = nullcontext()

    def first(self, ids, mask):
        return next_logprobs(self.pair, ids, mask, self.alphas, self.backend)

    def next(self, ids, mask, nxt):
        return next_logprobs(self.pair, ids, mask, self.alphas, self.backend)


@torch.no_grad()
def _decode(stepper, ids, mask, *, max_new_tokens, stop, pad, pick) -> tuple[list[list[int]], list[int | None]]:
    """(new tokens per row, the step at which each row's next-token log-probabilities stopped being finite, or
    None). A row whose log-probabilities are not finite stops there: nothing is picked from NaN."""
    rows: list[list[int]] = [[] for _ in range(ids.shape[0])]
    broke: list[int | None] = [None] * ids.shape[0]
    done = torch.zeros(ids.shape[0], dtype=torch.bool, device=ids.device)
    stop_ids = torch.tensor(sorted(stop), dtype=torch.long, device=ids.device)
    with stepper.context:
        logp = stepper.first(ids, mask)
        for step in range(max_new_tokens):
            nonfinite = ~torch.isfinite(logp).all(-1)
            if bool(nonfinite.any()):
                for r in (nonfinite & ~done).nonzero().flatten().tolist():
                    broke[r] = step
                done |= nonfinite
                logp = torch.where(nonfinite[:, None], torch.zeros_like(logp), logp)   # pickable; the row is done
            if bool(done.all()):
                break
            nxt = pick(logp)
            for r in range(ids.shape[0]):
                if not done[r]:
                    rows[r].append(int(nxt[r]))
            nxt = torch.where(done, torch.full_like(nxt, pad), nxt)
            mask = torch.cat([mask, (~done).long()[:, None]], 1)
            ids = torch.cat([ids, nxt[:, None]], 1)
            done |= torch.isin(nxt, stop_ids)
            if bool(done.all()) or step + 1 == max_new_tokens:
                break
            logp = stepper.next(ids, mask, nxt)
    return rows, broke


def nonfinite_status(pair, token_ids: list[int], alphas: list[float], backend, step: int) -> str:
    """Why the log-probabilities after ``token_ids`` (a prompt and the ``step`` tokens generated before) are not
    finite, in the words scoring uses for its rows: the first layer whose block output is not finite and which
    block, found by one pass of the engine over the sequence; or the head, when the stream stayed finite."""
    ids = torch.tensor([token_ids], device=pair.device)
    dec = decompose_batch(pair, ids, torch.ones_like(ids), alphas, backend=backend)
    layer, side = int(dec.nonfinite_layer[0]), int(dec.nonfinite_side[0])
    where = (f"from layer {layer}, the {'pre-trained' if side == 0 else 'fine-tuned'} block's output" if layer >= 0
             else "the embedding output (x_0) has NaN/inf" if layer == -2
             else "the next-token logits (the head), with the residual stream finite")
    return f"non-finite: {where} (at new token {step + 1})"


def prepare_generation(pair, prompts, max_new_tokens: int, *, chat=None, system_prompt=None):
    """Prompts and their token ids, each checked to leave room for ``max_new_tokens`` in the model's positions
    (a model with learned positions would otherwise fail inside its embedding at the first token past the end)."""
    records, token_lists = prepare(pair, prompts, chat=chat, system_prompt=system_prompt)
    limit = max_positions(pair.finetuned.config)
    for rec, ids in zip(records, token_lists):
        if limit is not None and len(ids) + max_new_tokens > limit:
            raise PromptError(f"{rec.where} (id {rec.id!r}): {len(ids)} tokens + max_new_tokens {max_new_tokens} "
                              f"(--max-new-tokens) exceed the model's {limit} positions; ask for at most "
                              f"{max(limit - len(ids), 0)} new tokens, or shorten the prompt")
    return records, token_lists


@torch.no_grad()
def generate(pair, prompts, alpha=1.0, *, max_new_tokens: int = 32, do_sample: bool = False,
             temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0, num_samples: int = 1,
             seed: int | None = None, use_cache: bool | None = None, chat: bool | None = None,
             system_prompt: str | None = None, batch_tokens: int = DEFAULT_BATCH_TOKENS,
             backend: str | None = None) -> list[dict]:
    """Decode under α, greedily or by sampling (see the module docstring).

    Args:
        prompts, chat, system_prompt: as in :func:`~tuco_kernels.score` (by default text prompts become chat user
            turns when the tokenizer has a chat template).
        alpha: a scalar or one value per layer; 1.0 is the fine-tuned model itself.
        num_samples: completions per prompt (sampling: independent draws; greedy: identical).
        seed: seeds the sampler: each (prompt, sample) row draws from its own CPU generator seeded from ``seed``, the
            prompt's token ids and the sample's index, so results do not depend on batching; None: unseeded.
        use_cache: the cached way (default for resident pairs) or recomputation (``False``; streamed pairs).

    Returns one record per prompt and sample, prompts in input order and samples within each:
    ``{"id", "sample", "text", "token_ids", "status"}``. ``status`` is "ok", or, when the next-token
    log-probabilities stopped being finite (a NaN or inf in a weight, an fp16 overflow, a huge α), why, in the
    words scoring uses (the first layer and block whose output is not finite) with the new token where it happened;
    such a completion stops there (``text`` holds what came before).
    """
    pair = pair.one_pair("generate")
    max_new_tokens = positive_int("max_new_tokens", max_new_tokens)
    if do_sample and not temperature > 0:
        raise TucoError("temperature must be positive")
    if not 0 < top_p <= 1:
        raise TucoError(f"top_p must be in (0, 1], got {top_p}")
    num_samples = positive_int("num_samples", num_samples)
    if use_cache is None:
        use_cache = pair.resident
    if use_cache and not pair.resident:
        raise TucoError(f"use_cache=True needs both models resident (it runs the fine-tuned model's own forward); "
                        f"this pair streams its weights (offload={pair.offload!r}): use use_cache=False")
    records, token_lists = prepare_generation(pair, prompts, max_new_tokens, chat=chat, system_prompt=system_prompt)
    alphas = layer_alphas(alpha, pair.n_layers)
    chats = use_chat(pair.tokenizer, chat) or any(r.messages is not None for r in records)
    stop, pad = stop_token_ids(pair, chats), pad_id_of(pair.tokenizer)
    expanded = [t for t in token_lists for _ in range(num_samples)]
    gens = row_generators(expanded, [k % num_samples for k in range(len(expanded))], seed) if do_sample else None
    new_tokens: list[list[int]] = [[] for _ in expanded]
    status = ["ok"] * len(expanded)
    for batch in make_batches(expanded, batch_tokens, pad, side="left", alone=not pair.family.pads_invariant):
        stepper = (_Cached if use_cache else _Recomputed)(pair, alphas, backend)
        ids, mask = batch.input_ids.to(pair.device), batch.attention_mask.to(pair.device)
        batch_gens = [gens[i] for i in batch.indices] if gens is not None else None

        def pick(logp, batch_gens=batch_gens):
            return pick_tokens(logp, do_sample=do_sample, temperature=temperature, top_k=top_k, top_p=top_p,
                               generators=batch_gens)

        rows, broke = _decode(stepper, ids, mask, max_new_tokens=max_new_tokens, stop=stop, pad=pad, pick=pick)
        for i, toks, step in zip(batch.indices, rows, broke):
            new_tokens[i] = toks
            if step is not None:
                status[i] = nonfinite_status(pair, list(expanded[i]) + toks, alphas, backend, step)
    out = []
    for k, toks in enumerate(new_tokens):
        rec = records[k // num_samples]
        text = pair.tokenizer.decode(toks, skip_special_tokens=True) if pair.tokenizer is not None else None
        out.append({"id": rec.id, "sample": k % num_samples, "text": text, "token_ids": toks, "status": status[k]})
    return out
