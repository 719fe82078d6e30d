"""The chain probe: prove on the model's own forward, at load, that the decomposition is exact for it.

TuCo is exact for a model exactly when its decoder loop is x_{l+1} = block_l(x_l, ...) with nothing between blocks
and its head reads x_L (docs/math.md §1). On a short probe (two rows of six tokens, one right-padded) the model's
own HF forward runs with every block's input, call arguments and output recorded, and this module checks, bit for
bit:

1. every block is called once, in order, on a [batch, tokens, hidden] stream;
2. block l's output is block l+1's input, and the last block's output is what the next module (the final norm)
   reads: nothing is added, scaled or mixed between blocks;
3. the call arguments the engine records (capture.py, without running the blocks) are the ones HF passed while
   running them: no block's arguments depend on an earlier block's output (shared KV, carried state);
4. the model's head turned into logits by head.py reproduces HF's logits from the last block's output.

It also runs the padded row alone: a model whose outputs depend on the other rows of a batch (``pads_invariant``
False) is scored one prompt per batch rather than refused.

A model that passes gets its completed :class:`~.families.Family`; one that fails is refused with the layer and
the reason (:class:`~tuco_kernels.errors.UnsupportedModelError`), never mis-scored. For a streamed pair the probe
runs the fine-tuned frame with its blocks' weights streamed (``runners``).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import UnsupportedModelError
from .capture import bind_block_call, capture, forward_kwargs, restore_forward, saved_forward
from .families import BATCH_DEPENDENT, Family, find_family, text_config

log = logging.getLogger("tuco_kernels")

PROBE_TOKENS = 6


@dataclass
class ProbeReport:
    """What the probe found: the completed family and what it cost."""

    family: Family
    seconds: float


def same_bits(a, b) -> bool:
    """Tensors equal bit for bit (NaN included), or other values equal."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)):
            return False
        if a.shape != b.shape or a.dtype != b.dtype:
            return False
        if a.is_floating_point():
            width = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}[a.element_size()]
            return torch.equal(a.contiguous().view(width), b.contiguous().view(width))
        return torch.equal(a, b)
    if isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)):
        return len(a) == len(b) and all(same_bits(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same_bits(a[k], b[k]) for k in a)
    if a is None or b is None or isinstance(a, (bool, int, float, str)):
        return a == b
    return type(a) is type(b)   # objects (a config, a cache, a layer-type enum): the same kind of thing


def probe_inputs(model: nn.Module, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Two rows of PROBE_TOKENS token ids, the second right-padded by two (as scoring pads), from the lower middle
    of the vocabulary."""
    vocab = model.get_input_embeddings().weight.shape[0]
    ids = (torch.arange(2 * PROBE_TOKENS).reshape(2, PROBE_TOKENS) * 7 + 11) % max(vocab - 3, 1) + 3
    mask = torch.ones_like(ids)
    mask[1, -2:] = 0
    return ids.to(device), mask.to(device)


class _Recording:
    """Every block's input, arguments and output, and the first module to read the last block's output."""

    def __init__(self, n: int):
        self.inputs: list = [None] * n
        self.kwargs: list = [None] * n
        self.outputs: list = [None] * n
        self.calls: list[int] = []
        self.input_copies: list = [None] * n
        self.returns = 0                 # 0: blocks return a tensor; k: a tuple of k items
        self.mutates_input = False       # a block writes into the tensor it was given
        self.reader: str | None = None   # the first module called on the last block's output
        self.done = False
        self.inner = False               # a stand-in block is running its streamed weights (not a new call)


def _record_forward(model: nn.Module, family: Family, ids, mask, runners=None):
    """HF's forward on the probe with every block recorded; returns (recording, logits)."""
    blocks = family.layers(model)
    rec = _Recording(len(blocks))
    handles = []
    stack_prefix = family.layers_path + "."

    def pre(l):
        def hook(block, args, kwargs):
            if rec.inner:
                return
            _, hidden, named = bind_block_call(block, args, kwargs)
            rec.calls.append(l)
            rec.inputs[l], rec.kwargs[l] = hidden, named
            rec.input_copies[l] = hidden.clone() if isinstance(hidden, torch.Tensor) else hidden
        return hook

    def post(l):
        def hook(block, args, kwargs, out):
            if rec.inner:
                return
            if not isinstance(out, torch.Tensor):
                rec.returns = max(rec.returns, len(out))
            rec.outputs[l] = out if isinstance(out, torch.Tensor) else out[0]
            rec.mutates_input = rec.mutates_input or not same_bits(rec.inputs[l], rec.input_copies[l])
            rec.done = l == len(blocks) - 1
        return hook

    def reader(name):
        def hook(module, args, kwargs):
            if rec.done and rec.reader is None:
                first = next((a for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)), None)
                if first is not None and same_bits(first, rec.outputs[-1]):
                    rec.reader = name
        return hook

    for l, block in enumerate(blocks):
        handles.append(block.register_forward_pre_hook(pre(l), with_kwargs=True))
        handles.append(block.register_forward_hook(post(l), with_kwargs=True))
    for name, module in model.named_modules():
        if name and name != family.layers_path and not name.startswith(stack_prefix) \
                and not family.layers_path.startswith(name + "."):
            handles.append(module.register_forward_pre_hook(reader(name), with_kwargs=True))
    saved = [saved_forward(b) for b in blocks]
    if runners is not None:
        _run_blocks_with(blocks, runners(), rec)
    try:
        logits = model(**forward_kwargs(model, ids, mask)).logits
    finally:
        for h in handles:
            h.remove()
        for b, previous in zip(blocks, saved):
            restore_forward(b, previous)
    return rec, logits


def _run_blocks_with(blocks: nn.ModuleList, runners, rec: _Recording) -> None:
    """Blocks of a frame (no weights) run by a streamer's per-layer runners, in the order HF calls them.

    A runner calls the block itself with its weights swapped in, so while it runs the stand-in forward is put
    away and the recording hooks ignore that inner call."""
    layers = iter(runners)

    def make(l, block):
        def forward(*args, **kwargs):
            index, _, run_ft = next(layers)
            if index != l:
                raise UnsupportedModelError(f"the model called decoder block {l} where block {index} was next")
            _, hidden, named = bind_block_call(block, args, kwargs)
            stand_in = vars(block).pop("forward")
            rec.inner = True
            try:
                return run_ft(hidden, **named)
            finally:
                rec.inner = False
                block.forward = stand_in
        return forward

    for l, block in enumerate(blocks):
        block.forward = make(l, block)


def _refuse(family: Family, why: str):
    raise UnsupportedModelError(f"model_type {family.model_type!r} cannot be decomposed exactly: {why}; refused "
                                f"rather than mis-scored")


def _check_calls(family: Family, rec: _Recording, hidden_size: int, batch: int, tokens: int) -> None:
    n = len(rec.inputs)
    if rec.calls != list(range(n)):
        counts = {l: rec.calls.count(l) for l in range(n)}
        twice = [l for l, c in counts.items() if c > 1]
        never = [l for l, c in counts.items() if c == 0]
        if twice:
            _refuse(family, f"decoder block {twice[0]} is called {counts[twice[0]]} times per forward")
        if never:
            _refuse(family, f"the forward never calls decoder block {never[0]}")
        _refuse(family, f"the forward calls the decoder blocks out of order ({rec.calls[:8]}...)")
    x0 = rec.inputs[0]
    if not isinstance(x0, torch.Tensor) or x0.dim() != 3 or x0.shape != (batch, tokens, hidden_size):
        shape = tuple(x0.shape) if isinstance(x0, torch.Tensor) else type(x0).__name__
        _refuse(family, f"the blocks carry a stream of shape {shape}, not [batch={batch}, tokens={tokens}, "
                        f"hidden={hidden_size}]")


def _check_chain(family: Family, rec: _Recording) -> None:
    for l in range(len(rec.inputs) - 1):
        if not same_bits(rec.outputs[l], rec.inputs[l + 1]):
            _refuse(family, f"layer {l + 1}'s input is not layer {l}'s output: the model changes the stream between "
                            f"blocks (per-layer inputs, scaling or mixing outside the blocks)")


def _check_arguments(family: Family, rec: _Recording, recorded: list[dict]) -> None:
    for l, (real, ours) in enumerate(zip(rec.kwargs, recorded)):
        if real.keys() != ours.keys():
            _refuse(family, f"block {l}'s call arguments differ between a full forward and the engine's record "
                            f"({sorted(set(real) ^ set(ours))})")
        for name in real:
            if not same_bits(real[name], ours[name]):
                _refuse(family, f"block {l}'s argument {name!r} depends on what earlier blocks computed (shared "
                                f"KV or carried state between layers)")


@torch.no_grad()
def prove_chain(model: nn.Module, family: Family | None = None, *, runners=None) -> ProbeReport:
    """Run the probe on ``model`` (see the module docstring) and return its completed, proven :class:`Family`.

    ``runners``: a callable giving a fresh iterator of ``(l, run_pt, run_ft)`` (a streamed pair's ``layers``) whose
    ``run_ft`` stands in for the blocks of a frame without weights (one pass per forward of the probe). Raises :class:`UnsupportedModelError` naming the layer and the reason.
    """
    t0 = time.perf_counter()
    family = family or find_family(model)
    device = model.get_input_embeddings().weight.device
    ids, mask = probe_inputs(model, device)
    try:
        rec, logits = _record_forward(model, family, ids, mask, runners)
    except UnsupportedModelError:
        raise
    except Exception as exc:  # the model's own forward failed on a plain text batch
        _refuse(family, f"its forward fails on a plain text batch ({type(exc).__name__}: {str(exc)[:200]})")
    hidden = getattr(text_config(model.config), "hidden_size", None) or rec.inputs[0].shape[-1]
    _check_calls(family, rec, hidden, *ids.shape)
    if rec.mutates_input:
        _refuse(family, "its decoder blocks write into their input tensor (both models' blocks must read the same "
                        "x_l)")
    _check_chain(family, rec)
    found = family.with_probe(norm_path=rec.reader, block_returns=rec.returns)
    if rec.reader is not None and found.final_norm(model) is model.get_output_embeddings():
        found = found.with_probe(norm_path=None)   # no final norm: the LM head reads x_L itself
    try:
        recorded = capture(model, found, ids, mask)
    except Exception as exc:
        _refuse(family, f"its block calls cannot be recorded without running them ({type(exc).__name__}: "
                        f"{str(exc)[:200]})")
    _check_arguments(found, rec, recorded.block_kwargs)
    if not same_bits(recorded.x0, rec.inputs[0]):
        _refuse(family, "the first block's input differs between a full forward and the engine's record")
    ours = found.logits(model, rec.outputs[-1])
    if not same_bits(ours, logits):
        _refuse(family, "its head's logits cannot be reproduced from the last block's output (the model does more "
                        "than a final norm and its LM head after the last block)")
    found = found.with_probe(proven=True, pads_invariant=_pads_invariant(model, found, ids, mask, rec, runners))
    return ProbeReport(found, time.perf_counter() - t0)


def _pads_invariant(model, family: Family, ids, mask, rec: _Recording, runners) -> bool:
    """Whether the padded probe row's x_L equals that row run alone (up to the rounding a different batch shape
    brings). Not so for models that mix information across the rows of a batch (capacity-limited expert routing,
    batch statistics): scoring then gives each prompt a batch of its own, and says so."""
    if family.model_type in BATCH_DEPENDENT:
        log.warning("model_type %r: %s; scoring one prompt per batch", family.model_type,
                    BATCH_DEPENDENT[family.model_type])
        return False
    n = int(mask[1].sum())
    alone, _ = _record_forward(model, family, ids[1:, :n], mask[1:, :n], runners)
    batched, single = rec.outputs[-1][1, :n].double(), alone.outputs[-1][0].double()
    tolerance = 1e-4 if rec.outputs[-1].dtype in (torch.float32, torch.float64) else 3e-2
    if not (bool(torch.isfinite(batched).all()) and bool(torch.isfinite(single).all())):
        log.warning("model_type %r: the probe's hidden states are not finite (a NaN or inf in the weights, or an "
                    "overflow in this dtype), so whether a prompt's scores depend on its batch cannot be told; "
                    "scoring one prompt per batch (rows that are not finite are flagged)", family.model_type)
        return False
    error = float((batched - single).norm() / single.norm().clamp(min=1e-30))
    if error <= tolerance:
        return True
    log.warning("model_type %r: a prompt's hidden states depend on the other prompts of its batch (relative change "
                "%.1e on the probe); scoring one prompt per batch", family.model_type, error)
    return False
