"""The decomposition step: one batch through every layer of both models.

For a batch, the fine-tuned model's own forward is recorded (capture.py): x_0 and each block's call
arguments. Then for l = 0..L-1, on the same stream x_l:

    out_pt = block_l^PT(x_l; kwargs_l),   out_ft = block_l^FT(x_l; kwargs_l)
    x_{l+1} = out_pt + α_l·(out_ft − out_pt)       (α_l = 1: out_ft exactly, the fine-tuned forward)

with the last-token PTC_l = out_pt − x_l and FTC_l = out_ft − out_pt folded into fp32 accumulators by
the fused update (ops/). Under α ≠ 1 the stream is the α-model's own, re-decomposed at every layer
(paper Def. 5.1).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from . import ops
from .batching import last_token_index
from .capture import capture
from .errors import TucoError


def layer_alphas(alpha, n_layers: int) -> list[float]:
    """A scalar α or one value per layer, validated, as a list of n_layers floats."""
    if isinstance(alpha, torch.Tensor):
        alpha = alpha.tolist()
    if isinstance(alpha, (int, float)):
        values = [float(alpha)] * n_layers
    else:
        values = [float(a) for a in alpha]
        if len(values) != n_layers:
            raise TucoError(f"alpha has {len(values)} values but the model has {n_layers} layers")
    bad = [a for a in values if not math.isfinite(a)]
    if bad:
        raise TucoError(f"alpha must be finite, got {bad[0]}")
    return values


@dataclass
class BatchDecomposition:
    """Everything one batch yields. Rows follow the batch; sums are at each row's last real token."""

    last_idx: torch.Tensor              # [B] int64
    acc_ptc: torch.Tensor               # [B, d] fp32: Σ_l PTC_l[last]   ([B, T, d] with token_map)
    acc_ftc: torch.Tensor               # [B, d] fp32: Σ_l FTC_l[last]
    layer_norms: torch.Tensor | None    # [B, L, 4] fp32: |PTC_l|₁, |FTC_l|₁, |Σ_{≤l} PTC|₁, |Σ_{≤l} FTC|₁
    x_final: torch.Tensor | None        # [B, T, d] model dtype: x_L (pre final norm)
    x_pt_final: torch.Tensor | None = None  # [B, T, d]: the pre-trained model's own x_L (OutputCo)

    def sums_at_last(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.acc_ptc.dim() == 3:
            rows = torch.arange(self.acc_ptc.shape[0], device=self.acc_ptc.device)
            return self.acc_ptc[rows, self.last_idx], self.acc_ftc[rows, self.last_idx]
        return self.acc_ptc, self.acc_ftc


class _Rows:
    """One micro-batch's state while a sweep walks the layers: its stream x_l, call arguments, sums."""

    def __init__(self, pair, input_ids, attention_mask, *, layers, token_map, own_pt, spill):
        device = pair.device
        input_ids, attention_mask = input_ids.to(device), attention_mask.to(device)
        rec = capture(pair.finetuned, pair.family.layers(pair.finetuned), input_ids, attention_mask)
        B, T, d = rec.x0.shape
        self.kwargs = rec.block_kwargs
        self.last_idx = last_token_index(attention_mask)
        shape = (B, T, d) if token_map else (B, d)
        self.acc_ptc = torch.zeros(shape, dtype=torch.float32, device=device)
        self.acc_ftc = torch.zeros_like(self.acc_ptc)
        self.norms = torch.zeros((len(self.kwargs), B, 4), dtype=torch.float32, device=device) if layers else None
        self.spill = spill
        self.x = _to_host(rec.x0) if spill else rec.x0
        self.x_pt = self.kwargs_pt = None
        if own_pt:
            pt = pair.pretrained_frame()
            rec_pt = capture(pt, pair.family.layers(pt), input_ids, attention_mask)
            self.x_pt, self.kwargs_pt = (_to_host(rec_pt.x0) if spill else rec_pt.x0), rec_pt.block_kwargs

    def step(self, l: int, run_pt, run_ft, alpha: float, backend, device):
        """Layer l on this micro-batch: both blocks on x_l, then the fused update writes x_{l+1} over x_l."""
        x = self.x.to(device, non_blocking=True) if self.spill else self.x
        out_pt = run_pt(x, **self.kwargs[l])
        out_ft = run_ft(x, **self.kwargs[l])
        norms = self.norms[l] if self.norms is not None else None
        ops.fused_update(x, out_pt, out_ft, alpha, self.last_idx, self.acc_ptc, self.acc_ftc, out=x, norms=norms,
                         backend=backend)
        if self.spill:
            self.x.copy_(x, non_blocking=True)
        if self.x_pt is not None:
            x_pt = self.x_pt.to(device, non_blocking=True) if self.spill else self.x_pt
            x_pt = run_pt(x_pt, **self.kwargs_pt[l])
            self.x_pt = self.x_pt.copy_(x_pt, non_blocking=True) if self.spill else x_pt

    def finish(self, keep_final: bool) -> BatchDecomposition:
        norms = self.norms.transpose(0, 1).contiguous() if self.norms is not None else None
        device = self.last_idx.device
        x = self.x.to(device) if keep_final else None  # a spilled stream comes back (stream-ordered after its copy)
        x_pt = self.x_pt.to(device) if self.x_pt is not None else None
        return BatchDecomposition(self.last_idx, self.acc_ptc, self.acc_ftc, norms, x, x_pt)


def _to_host(t: torch.Tensor) -> torch.Tensor:
    """A pinned host copy of a device tensor (the spill of a sweep's hidden states past the device budget)."""
    host = torch.empty(t.shape, dtype=t.dtype, pin_memory=t.device.type == "cuda")
    return host.copy_(t)


def _resident_layers(pair):
    for l, (pt_block, ft_block) in enumerate(zip(pair.family.layers(pair.pretrained),
                                                 pair.family.layers(pair.finetuned))):
        yield l, pt_block, ft_block


def layer_weights(pair, profile=None):
    """(l, run_pt, run_ft) per layer: the resident blocks, or the streamer's skeleton with each model's weights."""
    if pair.streamer is None:
        return _resident_layers(pair)
    return pair.streamer.layers(profile)


@torch.no_grad()
def decompose_sweep(pair, batches, alphas: list[float], *, layers: bool = False, token_map: bool = False,
                    keep_final: bool = False, own_pt: bool = False, spill: bool = False,
                    backend: str | None = None, profile=None, on_layer=None) -> list[BatchDecomposition]:
    """Layer-major over micro-batches: each layer's weights are fetched once and every batch runs through it.

    ``batches`` are (input_ids, attention_mask) pairs. One batch is the prompt-major step; both schedules
    run this same code, so they give the same numbers. ``spill`` keeps the hidden states in pinned host
    memory between layers; ``own_pt`` also runs the pre-trained model's own stream (OutputCo).
    """
    device = pair.device
    rows = [_Rows(pair, ids, mask, layers=layers, token_map=token_map, own_pt=own_pt, spill=spill)
            for ids, mask in batches]
    for l, run_pt, run_ft in layer_weights(pair, profile):
        for r in rows:
            r.step(l, run_pt, run_ft, alphas[l], backend, device)
        if on_layer is not None:
            on_layer(l)
    return [r.finish(keep_final) for r in rows]


@torch.no_grad()
def decompose_batch(pair, input_ids: torch.Tensor, attention_mask: torch.Tensor, alphas: list[float], *,
                    layers: bool = False, token_map: bool = False, keep_final: bool = False,
                    backend: str | None = None) -> BatchDecomposition:
    """Run one padded batch through both models layer by layer; see the module docstring."""
    return decompose_sweep(pair, [(input_ids, attention_mask)], alphas, layers=layers, token_map=token_map,
                           keep_final=keep_final, backend=backend)[0]
