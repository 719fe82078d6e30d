"""``next_token_logprobs``: next-token log-probabilities under FTC α-scaling, x_{l+1} = x_l + PTC + α·FTC on the
α-model's own stream (docs/math.md §3). Generation under α (what ``tuco steer`` does) is
:func:`tuco_kernels.generate.generate`."""

from __future__ import annotations

import torch

from .core.engine import layer_alphas
from .generate import DEFAULT_BATCH_TOKENS, next_logprobs
from .prompts.batching import make_batches
from .prompts.tokenize import pad_id_of, prepare


@torch.no_grad()
def next_token_logprobs(pair, prompts, alpha=1.0, *, chat: bool | None = None, system_prompt: str | None = None,
                        batch_tokens: int = DEFAULT_BATCH_TOKENS, backend: str | None = None) -> torch.Tensor:
    """Next-token log-probabilities [N, V] (fp32, input order) after each prompt under α."""
    pair = pair.one_pair("next_token_logprobs")
    _, token_lists = prepare(pair, prompts, chat=chat, system_prompt=system_prompt)
    alphas = layer_alphas(alpha, pair.n_layers)
    out = None
    for batch in make_batches(token_lists, batch_tokens, pad_id_of(pair.tokenizer),
                              alone=not pair.family.pads_invariant):
        logp = next_logprobs(pair, batch.input_ids.to(pair.device), batch.attention_mask.to(pair.device), alphas,
                             backend)
        if out is None:
            out = torch.empty((len(token_lists), logp.shape[-1]), dtype=torch.float32)
        out[batch.indices] = logp.cpu()
    return out
