"""What both blocks of a shared LoRA pair compute alike, computed once (docs/math.md §6).

In a shared pair (``load_pair(..., lora="shared")``) the pre-trained block's leaf modules (norms, Linear layers,
activations) are the very modules the fine-tuned block calls (directly, or as a LoRA layer's ``base_layer``).
Where the fine-tuned block calls one of them on an input equal, bit for bit, to the one the pre-trained block gave
it (the first norm, and the base projections after a norm the adapter leaves alone: q/k/v), the output the
pre-trained block got is returned instead of computing it again: the same module on the same bits gives the same
bits, so nothing changes but the time.

:class:`ProjectionReuse` does this around one layer at a time: while the pre-trained block runs each leaf's
(input, output) is kept; while the fine-tuned block runs, a call whose input is the kept one (the same tensor, or
same version, shape and ``torch.equal``) gets the kept output; any other call computes as usual, and a module whose
input once differed is not kept again (o_proj, the MLP: they read what the adapter changed). Only calls with one
tensor argument and a tensor result are kept.
"""

from __future__ import annotations

from contextlib import contextmanager
from functools import partial

import torch
from torch import nn


class ProjectionReuse:
    """See the module docstring. ``hits``/``calls``: fine-tuned leaf calls answered from the record / made."""

    def __init__(self):
        self.mode: str | None = None   # "record" while the pre-trained block runs, "reuse" while the fine-tuned one
        self.kept: dict[int, tuple[torch.Tensor, int, torch.Tensor, int]] = {}
        self.differs: set[int] = set()
        self.hits = self.calls = 0

    @contextmanager
    def around(self, pt_block: nn.Module, run_pt, run_fts: list):
        """(run_pt, [run_ft, ...]) for one layer, the pre-trained block's leaf modules answering through this object
        (``run_pt``/``run_fts``: the blocks, or a streamer's runners of them; several fine-tuned blocks, one per
        adapter on the same base: each call of one reuses what the pre-trained block's call just before it kept)."""
        linears = [m for m in pt_block.modules() if not m._modules and "forward" not in vars(m)]
        for m in linears:
            m.forward = partial(self._call, m)
        try:
            yield partial(self._run, "record", run_pt), [partial(self._run, "reuse", run_ft) for run_ft in run_fts]
        finally:
            for m in linears:
                del m.forward
            self.kept.clear()
            self.mode = None

    def _run(self, mode: str, block: nn.Module, *args, **kwargs):
        if mode == "record":
            self.kept.clear()
        self.mode = mode
        try:
            return block(*args, **kwargs)
        finally:
            self.mode = None
            if mode == "reuse":
                self.kept.clear()

    def _call(self, module: nn.Module, x, *args, **kwargs):
        key = id(module)
        if self.mode == "reuse":
            self.calls += 1
            kept = self.kept.pop(key, None)
            if kept is not None and not args and not kwargs and isinstance(x, torch.Tensor):
                x0, version, out, out_version = kept
                if x0._version == version and out._version == out_version and _same(x, x0):
                    self.hits += 1
                    return out
                self.differs.add(key)
        out = type(module).forward(module, x, *args, **kwargs)
        if (self.mode == "record" and key not in self.differs and not args and not kwargs
                and isinstance(x, torch.Tensor) and isinstance(out, torch.Tensor)):
            self.kept[key] = (x, x._version, out, out._version)
        return out


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a is b or (a.shape == b.shape and a.dtype == b.dtype and a.device == b.device and torch.equal(a, b))
