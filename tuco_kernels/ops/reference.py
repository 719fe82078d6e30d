"""Eager PyTorch reference for the fused TuCo layer update (docs/math.md §4); every other backend is tested
against it, bit for bit.

    x_{l+1} = out_pt + α·(out_ft − out_pt);   acc_ptc[b] += (out_pt − x)[b, last_b];   acc_ftc[b] += (out_ft − out_pt)[b, last_b]

in fp32, rounded to the input dtype once, at the store (α = 1: a copy of out_ft). Accumulators of shape [B, T, d]
accumulate every position (token maps). ``norms`` [B, 4] receives the L1 norms of the layer's last-token PTC and
FTC and of the two sums after the update.
"""

from __future__ import annotations

import torch


def fused_update_reference(x: torch.Tensor, out_pt: torch.Tensor, out_ft: torch.Tensor, alpha: float,
                           last_idx: torch.Tensor, acc_ptc: torch.Tensor, acc_ftc: torch.Tensor, *,
                           out: torch.Tensor | None = None, norms: torch.Tensor | None = None) -> torch.Tensor:
    alpha = float(alpha)
    x32, pt32, ft32 = x.float(), out_pt.float(), out_ft.float()
    ptc = pt32 - x32
    ftc = ft32 - pt32
    if out is None:
        out = torch.empty_like(x)
    if alpha == 1.0:
        out.copy_(out_ft)
    else:
        out.copy_(pt32 + alpha * ftc)

    rows = torch.arange(x.shape[0], device=x.device)
    ptc_last, ftc_last = ptc[rows, last_idx], ftc[rows, last_idx]
    if acc_ptc.dim() == 3:  # all-tokens mode
        acc_ptc += ptc
        acc_ftc += ftc
        sum_ptc, sum_ftc = acc_ptc[rows, last_idx], acc_ftc[rows, last_idx]
    else:
        acc_ptc += ptc_last
        acc_ftc += ftc_last
        sum_ptc, sum_ftc = acc_ptc, acc_ftc
    if norms is not None:
        norms[:, 0] = ptc_last.abs().sum(-1)
        norms[:, 1] = ftc_last.abs().sum(-1)
        norms[:, 2] = sum_ptc.abs().sum(-1)
        norms[:, 3] = sum_ftc.abs().sum(-1)
    return out
