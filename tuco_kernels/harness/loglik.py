"""Log-likelihoods of continuations under α through the engine, every request of a call scheduled layer-major.

This is how :class:`~tuco_kernels.harness.LMEvalModel` answers lm-eval's ``loglikelihood`` requests for a streamed
pair (``offload="cpu"|"disk"``): the requests' inputs are deduplicated (the four answers of a multiple-choice
question that are one token each share one input), cut into micro-batches by a token budget (right-padded,
length-sorted, as scoring does) and walked in sweeps: each layer's weights are brought to the device once per
sweep and every micro-batch of the sweep runs through it (:func:`~tuco_kernels.core.engine.decompose_sweep`,
docs/math.md §3 for the α-model's stream). The final states x_L of each micro-batch then go through the fine-tuned
model's own head (:func:`~tuco_kernels.core.head.head_logits`) at the positions that predict a continuation
token, and each request gets lm-eval's answer: the summed log-probability of its continuation tokens and whether
each was the greedy (argmax) token.

A request is ``(input_ids, continuation)`` with ``input_ids = (context + continuation)[-(max_length + 1):][:-1]``,
as lm-eval's ``hf`` backend builds it: the logits at the last ``len(continuation)`` positions of ``input_ids``
predict the continuation. The log-softmax is taken in the logits' dtype unless ``softmax_dtype`` says otherwise,
as the ``hf`` backend does.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from ..core.engine import decompose_sweep
from ..errors import DeviceMemoryError
from ..core.budget import group_sweeps, parse_size, plan_for
from ..prompts.batching import Batch, make_batches, split_batch
from ..prompts.tokenize import pad_id_of

#: logits held at once while reading continuations: rows × vocabulary ≤ this many elements (fp32: 256 MiB)
HEAD_CHUNK_ELEMENTS = 2**26


def unique_inputs(requests: Sequence[tuple[Sequence[int], Sequence[int]]]) -> tuple[list[list[int]], list[int],
                                                                                    list[list[int]]]:
    """The distinct inputs, how many trailing positions of each are read (its longest continuation), and which
    requests use each one."""
    index: dict[tuple, int] = {}
    inputs: list[list[int]] = []
    needed: list[int] = []
    users: list[list[int]] = []
    for r, (inp, cont) in enumerate(requests):
        key = tuple(inp)
        k = index.setdefault(key, len(inputs))
        if k == len(inputs):
            inputs.append(list(inp))
            needed.append(0)
            users.append([])
        needed[k] = max(needed[k], len(cont))
        users[k].append(r)
    return inputs, needed, users


def sweep_groups(pair, inputs: list[list[int]], *, batch_tokens: int, max_gpu_memory=None,
                 sweep_tokens: int | None = None) -> list[list[Batch]]:
    """Micro-batches (right-padded, longest first) grouped into layer-major sweeps whose hidden states stay on the
    device (the final states are read back per micro-batch, so a sweep is sized to hold them)."""
    budget = parse_size(max_gpu_memory)
    batch_plan = plan_for(pair, [len(t) for t in inputs], batch_tokens=batch_tokens, budget=budget, own_pt=False,
                          token_map=False)
    batches = make_batches(inputs, batch_plan.batch_tokens, pad_id_of(pair.tokenizer),
                           alone=not pair.family.pads_invariant)
    plan = batch_plan.sweeps(sum(b.input_ids.numel() for b in batches), sweep_tokens)
    cap = plan.sweep_tokens
    if plan.spill:   # the states do not all fit: sweeps of what does fit beside one micro-batch's transients
        room = batch_plan.usable - batch_plan.batch_tokens * batch_plan.fp.work
        cap = max(batch_plan.batch_tokens, int(room / batch_plan.fp.state))
    return group_sweeps(batches, cap)


@torch.no_grad()
def continuation_logprobs(pair, requests: Sequence[tuple[Sequence[int], Sequence[int]]], alphas: list[float], *,
                          batch_tokens: int, max_gpu_memory=None, sweep_tokens: int | None = None,
                          backend: str | None = None, softmax_dtype: torch.dtype | None = None,
                          on_done: Callable[[int], None] | None = None) -> list[tuple[float, bool]]:
    """(Σ log p(continuation token), all greedy) per request, in request order (see the module docstring).

    ``on_done(n)`` is called as requests are answered (a progress bar)."""
    inputs, needed, users = unique_inputs(requests)
    answers: list[tuple[float, bool] | None] = [None] * len(requests)
    groups = sweep_groups(pair, inputs, batch_tokens=batch_tokens, max_gpu_memory=max_gpu_memory,
                          sweep_tokens=sweep_tokens)
    for group in groups:
        for batch, x_final in _final_states(pair, group, alphas, backend):
            for row, k in enumerate(batch.indices):
                n = len(inputs[k])
                logp = _logprobs(pair, x_final[row, n - needed[k]:n], softmax_dtype)   # [needed, V]
                greedy = logp.argmax(-1)
                for r in users[k]:
                    cont = torch.as_tensor(list(requests[r][1]), dtype=torch.long, device=logp.device)
                    picked = logp[-len(cont):].gather(-1, cont[:, None]).squeeze(-1)
                    answers[r] = (float(picked.sum()), bool((greedy[-len(cont):] == cont).all()))
                if on_done is not None:
                    on_done(len(users[k]))
    return answers


def _final_states(pair, group: list[Batch], alphas, backend):
    """(batch, x_L [B, T, d]) for each micro-batch of a sweep; on running out of device memory the sweep's
    micro-batches are halved and it runs again, down to one input per batch."""
    try:
        decs = decompose_sweep(pair, [(b.input_ids, b.attention_mask) for b in group], alphas, keep_final=True,
                               backend=backend)
    except torch.OutOfMemoryError:
        if pair.device.type == "cuda":
            torch.cuda.empty_cache()
        if all(len(b.indices) == 1 for b in group):
            if len(group) > 1:
                for b in group:
                    yield from _final_states(pair, [b], alphas, backend)
                return
            raise DeviceMemoryError(f"an input of {group[0].input_ids.shape[1]} tokens runs out of device memory even "
                                    f"alone; load the pair with offload='cpu' or 'disk' (--offload cpu|disk) or a smaller dtype (--dtype), or use "
                                    f"shorter tasks") from None
        yield from _final_states(pair, [half for b in group for half in split_batch(b)], alphas, backend)
        return
    for batch, dec in zip(group, decs):
        yield batch, dec.x_final


def _logprobs(pair, x: torch.Tensor, softmax_dtype: torch.dtype | None) -> torch.Tensor:
    """Log-probabilities [n, V] of the states ``x`` [n, d] by the fine-tuned head, a chunk of rows at a time."""
    rows = max(1, HEAD_CHUNK_ELEMENTS // pair.vocab_size)
    parts = []
    for start in range(0, x.shape[0], rows):
        logits = pair.family.logits(pair.finetuned, x[start:start + rows])
        parts.append(torch.log_softmax(logits, dim=-1, dtype=softmax_dtype))
    return torch.cat(parts)
