"""Device-memory budgets: parse them, pick the offload mode, and size micro-batches and sweeps to fit.

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

import math
import os
import re
from dataclasses import dataclass

import torch

from .errors import TucoError

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


def _model_bytes(model, gguf, dtype) -> int:
    """Parameter bytes of one side at ``dtype`` (default: as stored), without reading any weights."""
    from .checkpoint import Checkpoint
    from .pair import _is_adapter_dir, _resolve_source

    if isinstance(model, torch.nn.Module):
        return sum(p.numel() * (dtype or p.dtype).itemsize for p in model.parameters())
    if _is_adapter_dir(model):
        return 0
    directory, g = _resolve_source(model, gguf)
    if g:
        return (directory / g).stat().st_size * 4  # an estimate: GGUF is dequantized to fp32 on load
    try:
        ckpt = Checkpoint(directory)
    except TucoError:
        return sum(p.stat().st_size for p in directory.iterdir() if p.is_file())
    return sum(math.prod(e.shape) * (dtype or e.dtype).itemsize for e in ckpt.entries.values())


def choose_offload(pretrained, finetuned, max_gpu_memory, device, dtype, g_pt=None, g_ft=None) -> str:
    """'none' if both models fit the budget with a quarter of it left to compute in, else 'cpu' if host
    memory holds what offload="cpu" pins (with 10% spare), else 'disk'. Without a budget: 'none'.

    offload="cpu" page-locks exactly the bytes of each streamed model's blocks (no power-of-two rounding,
    see stream.HostArena); a LoRA fine-tuned side is merged on the device from the pre-trained weights, so it
    adds nothing there, while resident it is a full second model."""
    from .pair import _is_adapter_dir

    budget = parse_size(max_gpu_memory)
    if budget is None:
        return "none"
    pt = _model_bytes(pretrained, g_pt, dtype)
    ft = 0 if _is_adapter_dir(finetuned) else _model_bytes(finetuned, g_ft, dtype)
    if pt + (ft or pt) <= 0.75 * budget:
        return "none"
    return "cpu" if pt + ft <= 0.9 * host_memory_available() else "disk"


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


def plan_sweeps(*, budget: int | None, fixed: int, fp: Footprint, batch_tokens: int, longest: int,
                total_tokens: int, sweep_tokens: int | None = None) -> SweepPlan:
    """Fit micro-batches and sweeps into ``budget`` bytes (None: no limit; then ``DEFAULT_SWEEP_TOKENS``).

    The batch keeps the caller's token budget when it fits; the rest of the memory holds the sweep's
    hidden states. When fewer than ``MIN_SWEEP_TOKENS`` fit (or the caller asked for more than fit), the
    hidden states spill to pinned host memory and only a batch at a time is on the device.
    """
    if budget is None:
        return SweepPlan(batch_tokens, sweep_tokens or min(total_tokens, DEFAULT_SWEEP_TOKENS), False, None, fixed)
    usable = budget * (1 - FREE_FRACTION) - fixed
    if usable <= 0:
        raise TucoError(f"max_gpu_memory {budget / 2**30:.2f} GiB cannot hold even the weights in flight "
                        f"({fixed / 2**30:.2f} GiB: two layers of both models and the embedding/head); raise it")
    per_batch_token = fp.work + fp.state
    fit = int(usable / (2 * per_batch_token))  # at most half the room goes to the batch's transients
    if fit < longest:
        need = fixed + 2 * per_batch_token * longest
        raise TucoError(f"max_gpu_memory {budget / 2**30:.2f} GiB is too small for the longest prompt ({longest} "
                        f"tokens): that needs about {need / 0.95 / 2**30:.2f} GiB")
    batch = max(longest, min(batch_tokens, fit))
    room = usable - batch * fp.work
    on_device = int(room / fp.state)
    want = sweep_tokens or total_tokens
    if on_device >= min(want, MIN_SWEEP_TOKENS) or on_device >= total_tokens:
        return SweepPlan(batch, max(batch, min(want, on_device)), False, budget, fixed)
    return SweepPlan(batch, want, True, budget, fixed)
