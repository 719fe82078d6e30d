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

    def sums_at_last(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.acc_ptc.dim() == 3:
            rows = torch.arange(self.acc_ptc.shape[0], device=self.acc_ptc.device)
            return self.acc_ptc[rows, self.last_idx], self.acc_ftc[rows, self.last_idx]
        return self.acc_ptc, self.acc_ftc


@torch.no_grad()
def decompose_batch(pair, input_ids: torch.Tensor, attention_mask: torch.Tensor, alphas: list[float], *,
                    layers: bool = False, token_map: bool = False, keep_final: bool = False,
                    backend: str | None = None) -> BatchDecomposition:
    """Run one padded batch through both models layer by layer; see the module docstring."""
    device = pair.device
    input_ids, attention_mask = input_ids.to(device), attention_mask.to(device)
    pt_layers, ft_layers = pair.family.layers(pair.pretrained), pair.family.layers(pair.finetuned)
    rec = capture(pair.finetuned, ft_layers, input_ids, attention_mask)

    x = rec.x0
    B, T, d = x.shape
    last_idx = last_token_index(attention_mask)
    acc_shape = (B, T, d) if token_map else (B, d)
    acc_ptc = torch.zeros(acc_shape, dtype=torch.float32, device=device)
    acc_ftc = torch.zeros_like(acc_ptc)
    norms = torch.zeros((B, len(ft_layers), 4), dtype=torch.float32, device=device) if layers else None
    spare = torch.empty_like(x)
    for l, (pt_block, ft_block, kwargs) in enumerate(zip(pt_layers, ft_layers, rec.block_kwargs)):
        out_pt = pt_block(x, **kwargs)
        out_ft = ft_block(x, **kwargs)
        layer_norms = torch.empty((B, 4), dtype=torch.float32, device=device) if layers else None
        nxt = ops.fused_update(x, out_pt, out_ft, alphas[l], last_idx, acc_ptc, acc_ftc,
                               out=spare, norms=layer_norms, backend=backend)
        if layers:
            norms[:, l] = layer_norms
        spare, x = x, nxt  # x_l is dead now: its buffer receives x_{l+2}
    return BatchDecomposition(last_idx, acc_ptc, acc_ftc, norms, x if keep_final else None)


@torch.no_grad()
def own_final_stream(model, family, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """x_L of ``model``'s own forward (its own embedding and blocks), pre final norm, [B, T, d]."""
    device = next(model.parameters()).device
    input_ids, attention_mask = input_ids.to(device), attention_mask.to(device)
    blocks = family.layers(model)
    rec = capture(model, blocks, input_ids, attention_mask)
    x = rec.x0
    for block, kwargs in zip(blocks, rec.block_kwargs):
        x = block(x, **kwargs)
    return x
