"""Logits from residual states x_L by the model's own forward: whatever a CausalLM does after its last decoder
block (final norm, LM head, soft-capping, logit scales, multipliers) is HF's code, run as it is.

The model's forward runs on placeholder tokens with its decoder blocks stood in for: every block passes its input
through, and the last one returns the given x_L (in the block's own return form). Nothing before the loop reaches
the head, and everything after it runs unchanged. The chain probe (chain.py) checks at load that this reproduces
HF's logits bit for bit, so a model whose head reads anything other than x_L is refused, never approximated.
"""

from __future__ import annotations

import torch
from torch import nn

from .capture import bind_block_call, forward_kwargs, restore_forward, saved_forward


@torch.no_grad()
def head_logits(model: nn.Module, family, x: torch.Tensor) -> torch.Tensor:
    """Logits [..., V] of pre-norm states ``x`` [..., d] ([B, T, d] or [N, d]) as ``model``'s forward makes them."""
    lead = x.shape[:-1]
    x3 = x if x.dim() == 3 else x.reshape(-1, 1, x.shape[-1])
    blocks = family.layers(model)
    last = len(blocks) - 1

    def stand_in(l: int, block: nn.Module):
        def forward(*args, **kwargs):
            hidden = x3 if l == last else bind_block_call(block, args, kwargs)[1]
            return family.block_return(hidden)
        return forward

    ids = torch.zeros(x3.shape[:2], dtype=torch.long, device=x3.device)
    saved = [saved_forward(b) for b in blocks]
    for l, block in enumerate(blocks):
        block.forward = stand_in(l, block)
    try:
        logits = model(**forward_kwargs(model, ids, torch.ones_like(ids))).logits
    finally:
        for block, previous in zip(blocks, saved):
            restore_forward(block, previous)
    return logits.reshape(*lead, logits.shape[-1])
