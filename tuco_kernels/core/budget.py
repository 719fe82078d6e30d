"""Device-memory budgets: parse them, and size micro-batches and sweeps to fit.

Bytes on the device during layer-major scoring, for a sweep of S tokens in micro-batches of N tokens
(d hidden, I intermediate, H/K query/key-value heads of size h, b bytes per element, T padded length):

    fixed        weight slots (2 layers × both models, streamer) or both whole models (resident),
                 the fine-tuned embedding/norm/head (+ the pre-trained ones for OutputCo)
    per token    kept for the whole sweep: x_l (d·b), the rotary cos/sin per layer type (2·h·b each),
    of the sweep the padding mask (T bytes; eager: T·b), fp32 sums (8·d per row, per token with token maps),
                 and the pre-trained stream for OutputCo (d·b)
    per token    transient, one micro-batch inside one block: out_pt, out_ft, the normed input (3·d·b),
    of a batch   q/k/v before and after rotary (2·(H+2K)·h·b), the attention output (H·h·b), the MLP's
                 gate/up/product (3·I·b); eager attention adds its scores and probabilities (H·T·(2b+4))

The transient term gets a 1.5× margin for allocator rounding and kernels' scratch; a fixed 5% of the
budget is kept free. The plan is an estimate: the scoring loop checks the real peak
(``torch.cuda.max_memory_allocated``) after every layer and stops with an error naming both numbers
rather than silently exceed the budget.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

import torch

from ..errors import TucoError

_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9, "gb": 10**9,
          "t": 10**12, "tb": 10**12, "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}
MIN_SWEEP_TOKENS = 32768   # tokens per layer visit that hide a layer's weight copy on an H100-class GPU (below)
DEFAULT_SWEEP_TOKENS = 262144  # without a budget: hidden states of at most this many tokens at once
WORK_MARGIN = 1.5
FREE_FRACTION = 0.05


def parse_size(value) -> int | None:
    """'8GiB', '24GB', '512 MiB', 8e9 -> bytes; None stays None."""
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if value <= 0:
            raise TucoError(f"a memory size must be positive, got {value}")
        return int(value)
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", str(value))
    if not m or m.group(2).lower() not in _UNITS or float(m.group(1)) <= 0:
        raise TucoError(f"cannot read the memory size {value!r}; write e.g. 8GiB, 24GB or 512MiB")
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


def host_memory_available() -> int:
    """MemAvailable from /proc/meminfo (bytes), else total physical memory."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


@dataclass(frozen=True)
class Footprint:
    """Estimated device bytes per token: kept for a sweep (``state``) and transient in a batch (``work``)."""

    state: float
    work: float


def footprint(config, dtype: torch.dtype, padded_len: int, *, attn_implementation: str = "sdpa",
              own_pt: bool = False, token_map: bool = False) -> Footprint:
    """Bytes per token; see the module docstring for the terms."""
    b = dtype.itemsize
    d = getattr(config, "hidden_size", None) or config.n_embd
    inter = getattr(config, "intermediate_size", None) or getattr(config, "n_inner", None) or 4 * d
    heads = getattr(config, "num_attention_heads", None) or config.n_head
    kv = getattr(config, "num_key_value_heads", None) or heads
    hd = getattr(config, "head_dim", None) or d // heads
    layer_types = set(getattr(config, "layer_types", None) or ["full_attention"])
    eager = attn_implementation == "eager"
    state = d * b + 2 * hd * b * len(layer_types) + padded_len * (b if eager else 1) * len(layer_types) + 8
    state += (8 * d if token_map else 8 * d / max(padded_len, 1))
    if own_pt:
        state += d * b
    work = 3 * d * b + 2 * (heads + 2 * kv) * hd * b + heads * hd * b + 3 * inter * b
    if eager:
        work += heads * padded_len * (2 * b + 4)
    return Footprint(state=state, work=WORK_MARGIN * work)


@dataclass(frozen=True)
class SweepPlan:
    """How a dataset is walked: micro-batches of ``batch_tokens``, sweeps of ``sweep_tokens``, spilled or not."""

    batch_tokens: int
    sweep_tokens: int
    spill: bool
    budget: int | None
    fixed: int

    def describe(self) -> str:
        where = "pinned host memory" if self.spill else "the device"
        text = f"micro-batches of ≤{self.batch_tokens} tokens, sweeps of ≤{self.sweep_tokens} tokens on {where}"
        if self.budget is not None:
            text += f" (budget {self.budget / 2**30:.2f} GiB, {self.fixed / 2**30:.2f} GiB fixed)"
        return text


@dataclass(frozen=True)
class BatchPlan:
    """The micro-batch size that fits, and what is left for a sweep's hidden states (see :func:`plan_batches`)."""

    batch_tokens: int
    budget: int | None
    fixed: int
    fp: Footprint | None
    usable: float | None

    def sweeps(self, total_tokens: int, sweep_tokens: int | None = None) -> SweepPlan:
        """Sweeps over ``total_tokens`` padded tokens: on the device when at least ``MIN_SWEEP_TOKENS`` (or all)
        fit beside a micro-batch's transients, else spilled to pinned host memory (one micro-batch on the device)."""
        if self.budget is None:
            return SweepPlan(self.batch_tokens, sweep_tokens or min(total_tokens, DEFAULT_SWEEP_TOKENS), False, None,
                             self.fixed)
        room = self.usable - self.batch_tokens * self.fp.work
        on_device = int(room / self.fp.state)
        want = sweep_tokens or total_tokens
        if on_device >= min(want, MIN_SWEEP_TOKENS) or on_device >= total_tokens:
            return SweepPlan(self.batch_tokens, max(self.batch_tokens, min(want, on_device)), False, self.budget,
                             self.fixed)
        return SweepPlan(self.batch_tokens, want, True, self.budget, self.fixed)


def plan_batches(*, budget: int | None, fixed: int, fp: Footprint, batch_tokens: int, longest: int) -> BatchPlan:
    """The micro-batch size within ``budget`` bytes (None: no limit, the caller's ``batch_tokens``).

    The batch keeps the caller's token budget when it fits; at most half the room left beside the fixed bytes
    goes to one batch's transients, the rest holds the sweep's hidden states.
    """
    if budget is None:
        return BatchPlan(batch_tokens, None, fixed, None, None)
    usable = budget * (1 - FREE_FRACTION) - fixed
    if usable <= 0:
        raise TucoError(f"max_gpu_memory {budget / 2**30:.2f} GiB cannot hold even the weights in flight "
                        f"({fixed / 2**30:.2f} GiB: two layers of both models and the embedding/head); raise it")
    per_batch_token = fp.work + fp.state
    fit = int(usable / (2 * per_batch_token))
    if fit < longest:
        need = fixed + 2 * per_batch_token * longest
        raise TucoError(f"max_gpu_memory {budget / 2**30:.2f} GiB is too small for the longest prompt ({longest} "
                        f"tokens): that needs about {need / 0.95 / 2**30:.2f} GiB")
    return BatchPlan(max(longest, min(batch_tokens, fit)), budget, fixed, fp, usable)


def plan_sweeps(*, budget: int | None, fixed: int, fp: Footprint, batch_tokens: int, longest: int,
                total_tokens: int, sweep_tokens: int | None = None) -> SweepPlan:
    """Micro-batches and sweeps in one call: :func:`plan_batches`, then :meth:`BatchPlan.sweeps`."""
    return plan_batches(budget=budget, fixed=fixed, fp=fp, batch_tokens=batch_tokens,
                        longest=longest).sweeps(total_tokens, sweep_tokens)


def plan_for(pair, lengths: list[int], *, batch_tokens: int, budget: int | None, own_pt: bool,
             token_map: bool) -> BatchPlan:
    """:func:`plan_batches` for ``pair`` (its fixed device bytes, its config's footprint) and prompts of ``lengths``;
    the sweeps follow from the batches' padded total (:meth:`BatchPlan.sweeps`)."""
    longest = max(lengths, default=1)
    config = pair.finetuned.config
    fp = footprint(config, pair.dtype, longest, attn_implementation=getattr(config, "_attn_implementation", "sdpa"),
                   own_pt=own_pt, token_map=token_map)
    sides = len(pair.sides)   # a pair set keeps each fine-tune's stream of every prompt for the whole sweep
    fp = Footprint(state=fp.state * sides, work=fp.work)
    return plan_batches(budget=budget, fixed=pair.device_bytes(own_pt=own_pt), fp=fp, batch_tokens=batch_tokens,
                        longest=longest)


def group_sweeps(batches, sweep_tokens: int) -> list[list]:
    """Consecutive micro-batches grouped so that each sweep's padded tokens stay within ``sweep_tokens``."""
    groups, size = [], 0
    for b in batches:
        tokens = b.input_ids.numel()
        if groups and size + tokens <= sweep_tokens:
            groups[-1].append(b)
            size += tokens
        else:
            groups.append([b])
            size = tokens
    return groups


def check_peak(device, budget: int, plan: SweepPlan) -> None:
    """Raise (naming both numbers) when the device's real peak went over the budget."""
    peak = torch.cuda.max_memory_allocated(device)
    if peak > budget:
        raise TucoError(f"device memory peaked at {peak / 2**30:.2f} GiB, over max_gpu_memory "
                        f"{budget / 2**30:.2f} GiB (plan: {plan.describe()}); lower batch_tokens (--batch-tokens) or raise the budget")
