"""Generation for lm-eval's ``generate_until`` on a streamed pair: HF ``generate``'s loop, each step's logits from
the whole α-steered sequence through the engine.

A streamed pair has no resident model whose ``generate`` could run, so this loop does what HF's greedy/sample
loop does with lm-eval's arguments: the next token is the argmax of the last position's fp32 logits (or a draw
after temperature, top-k and top-p), a row that produced an EOS token of the model's generation config is padded
from then on, every row's attention mask grows by one, and the loop ends when every row is finished, when
lm-eval's stop-sequence criteria say so, or at ``max_length`` tokens. Without a KV cache each step recomputes
the sequence through every layer (docs/math.md §3: the same tokens as a cached run).
"""

from __future__ import annotations

import torch

from ..core.engine import decompose_batch
from ..generate import pick_tokens, row_generators


@torch.no_grad()
def last_logits(pair, ids: torch.Tensor, mask: torch.Tensor, alphas: list[float], backend=None) -> torch.Tensor:
    """fp32 logits [B, V] after each row's last token, under α (a left-padded batch: the last column)."""
    dec = decompose_batch(pair, ids, mask, alphas, keep_final=True, backend=backend)
    rows = torch.arange(ids.shape[0], device=dec.x_final.device)
    return pair.family.logits(pair.finetuned, dec.x_final[rows, dec.last_idx]).float()


def eos_ids_of(model) -> list[int]:
    """The EOS ids HF's ``generate`` stops a row at: the model's generation config's."""
    eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if eos is None:
        eos = getattr(model.config, "eos_token_id", None)
    return [] if eos is None else list(eos) if isinstance(eos, (list, tuple)) else [eos]


@torch.no_grad()
def generate_recomputed(pair, alphas: list[float], input_ids: torch.Tensor, attention_mask: torch.Tensor, *,
                        max_length: int, stopping_criteria=None, pad_token_id: int, do_sample: bool = False,
                        temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0, seed: int | None = 0,
                        backend: str | None = None) -> torch.Tensor:
    """The prompt and its continuation, [B, ≤ max_length] (see the module docstring)."""
    ids, mask = input_ids.to(pair.device), attention_mask.to(pair.device)
    eos = torch.tensor(eos_ids_of(pair.finetuned), dtype=torch.long, device=ids.device)
    unfinished = torch.ones(ids.shape[0], dtype=torch.bool, device=ids.device)
    gens = row_generators(ids.tolist(), [0] * ids.shape[0], seed) if do_sample else None
    while ids.shape[1] < max_length:
        logits = last_logits(pair, ids, mask, alphas, backend)
        nxt = pick_tokens(logits, do_sample=do_sample, temperature=temperature, top_k=top_k, top_p=top_p,
                          generators=gens)
        nxt = torch.where(unfinished, nxt, torch.full_like(nxt, pad_token_id))
        ids = torch.cat([ids, nxt[:, None]], 1)
        mask = torch.cat([mask, mask.new_ones((mask.shape[0], 1))], 1)
        finished = torch.isin(nxt, eos)
        if stopping_criteria is not None:
            finished = finished | torch.as_tensor(stopping_criteria(ids, None), device=ids.device)
        unfinished &= ~finished
        if not bool(unfinished.any()):
            break
    return ids
