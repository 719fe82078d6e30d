"""``attach``: run any ordinary HF call on the fine-tuned model with the decomposition and α-scaling.

    with tuco_kernels.attach(ft_model, pt_model, alpha=1.25) as probe:
        out = ft_model.generate(**inputs)           # generation under α
    probe.tuco, probe.history                      # TuCo of the last call, and of every call

Inside the block each fine-tuned decoder block's ``forward`` is wrapped (on the instance) so that it
also runs the pre-trained block on the same input and returns out_pt + α·(out_ft − out_pt), folding
the PTC/FTC of each call's last position into fp32 accumulators. During cached generation the
pre-trained blocks keep their own KV cache, built on the same (steered) stream. Leaving the block
puts back what was there before (nothing, or another tool's wrapper, which runs inside ours meanwhile), which
restores the model exactly. With left padding (HF's generation default
for decoder-only models) each call's last position is each row's last real token.
"""

from __future__ import annotations

import functools
from contextlib import contextmanager

import torch

from . import ops
from .core.capture import NO_FORWARD, bind_block_call, restore_forward, saved_forward
from .core.compat import check_compatible, prove_pair
from .core.engine import layer_alphas
from .core.metrics import contribution_ratio, tuco_from_sums
from .errors import TucoError

_CACHE_ARG_NAMES = ("cache", "past_key_values", "past_key_value", "layer_past")   # transformers ≥ 5.24: cache


class Probe:
    """What the attached model measured. Per call of the model: TuCo [B] and per-layer norms [B, L]."""

    def __init__(self, pt_model, n_layers: int, alphas: list[float], backend: str | None):
        self.alpha = alphas
        self.n_layers = n_layers
        self.history: list[torch.Tensor] = []  # TuCo [B] of every forward call, in order
        self.tuco: torch.Tensor | None = None
        self.ptc_l1: torch.Tensor | None = None
        self.ftc_l1: torch.Tensor | None = None
        self.beta: torch.Tensor | None = None
        self._pt_model = pt_model
        self._backend = backend
        self._ft_cache = None
        self._pt_cache = None

    def _pt_cache_for(self, ft_cache):
        """The pre-trained blocks' own cache paired with the fine-tuned model's current one."""
        if ft_cache is None:
            return None
        if ft_cache is not self._ft_cache:
            from transformers import DynamicCache

            if type(ft_cache) is not DynamicCache:
                raise TucoError(f"attach supports generation with DynamicCache only (got {type(ft_cache).__name__})")
            self._ft_cache = ft_cache
            self._pt_cache = DynamicCache(config=self._pt_model.config)
        return self._pt_cache

    def _start_call(self, x):
        B, _, d = x.shape
        self._acc_ptc = torch.zeros((B, d), dtype=torch.float32, device=x.device)
        self._acc_ftc = torch.zeros_like(self._acc_ptc)
        self._norms = torch.zeros((B, self.n_layers, 4), dtype=torch.float32, device=x.device)
        self._layer_norms = torch.empty((B, 4), dtype=torch.float32, device=x.device)
        self._last = torch.full((B,), x.shape[1] - 1, dtype=torch.long, device=x.device)  # left padding

    def _finish_call(self):
        n = self._norms
        self.ptc_l1, self.ftc_l1 = n[..., 0], n[..., 1]
        self.beta = contribution_ratio(n[..., 3], n[..., 2])
        self.tuco = tuco_from_sums(self._acc_ptc, self._acc_ftc)
        self.history.append(self.tuco)


def _wrap_block(probe: Probe, family, l: int, ft_block, pt_block, previous):
    """The wrapper of one fine-tuned block; ``previous`` is another tool's instance-level forward, kept in the chain."""
    run_ft = previous if previous is not NO_FORWARD else functools.partial(type(ft_block).forward, ft_block)

    def forward(*args, **kwargs):
        _, x, named = bind_block_call(ft_block, args, kwargs)
        if l == 0:
            probe._start_call(x)
        out_ft = family.block_output(run_ft(x, **named))
        pt_named = dict(named)
        for name in _CACHE_ARG_NAMES:
            if name in pt_named:
                pt_named[name] = probe._pt_cache_for(pt_named[name])
        out_pt = family.block_output(pt_block(x, **pt_named))
        x_next = ops.fused_update(x, out_pt, out_ft, probe.alpha[l], probe._last, probe._acc_ptc, probe._acc_ftc,
                                  norms=probe._layer_norms, backend=probe._backend)
        probe._norms[:, l] = probe._layer_norms
        if l == probe.n_layers - 1:
            probe._finish_call()
        return family.block_return(x_next)

    forward._tuco_attach = True
    return forward


@contextmanager
def attach(ft_model, pt_model, alpha=1.0, *, backend: str | None = None, family=None):
    """Wrap ``ft_model``'s decoder blocks in place for the duration of the ``with`` block; yields a :class:`Probe`.

    ``family``: the pair's proven family (``pair.family``); without it the models are checked and the chain probe
    runs on both (a fraction of a second for small models)."""
    if family is None or not family.proven:
        family = check_compatible(pt_model, ft_model)
    for side, model in (("fine-tuned", ft_model), ("pre-trained", pt_model)):
        if any(p.is_meta for p in family.layers(model).parameters()):
            raise TucoError(f"the {side} model's decoder blocks hold no weights (a streamed pair's frame, "
                            f"offload='cpu'/'disk'); attach needs resident models (offload='none')")
    if not family.proven:
        family = prove_pair(pt_model, ft_model, family)
    ft_blocks, pt_blocks = family.layers(ft_model), family.layers(pt_model)
    if any(getattr(vars(b).get("forward"), "_tuco_attach", False) for b in ft_blocks):
        raise TucoError("the fine-tuned model's blocks are already wrapped by attach (nested attach?)")
    probe = Probe(pt_model, len(ft_blocks), layer_alphas(alpha, len(ft_blocks)), backend)
    saved = [saved_forward(fb) for fb in ft_blocks]   # another tool's wrappers: called inside ours, put back after
    for l, (fb, pb, previous) in enumerate(zip(ft_blocks, pt_blocks, saved)):
        fb.forward = _wrap_block(probe, family, l, fb, pb, previous)
    try:
        yield probe
    finally:
        for fb, previous in zip(ft_blocks, saved):
            restore_forward(fb, previous)
