"""Eager PyTorch reference for the fused TuCo layer update. Every other backend is tested against it.

Per decoder layer l, with x = x_l, out_pt = x_l + f_PT(x_l, l), out_ft = x_l + f_FT(x_l, l):

    PTC_l = out_pt - x                     (the pre-trained block's contribution)
    FTC_l = out_ft - out_pt                (the fine-tuning contribution)
    x_{l+1} = x + PTC_l + α·FTC_l = out_pt + α·FTC_l,   and exactly out_ft when α = 1
    acc_ptc[b] += PTC_l[b, last_b],  acc_ftc[b] += FTC_l[b, last_b]          (fp32)

All arithmetic is in fp32; x_{l+1} is rounded to the input dtype once, at the store. When α = 1
x_{l+1} is a copy of out_ft (bit-exact: the fine-tuned model's own forward). In all-tokens mode
(accumulators of shape [B, T, d]) every position is accumulated, for per-token TuCo maps.

``norms`` [B, 4] (fp32), when given, receives after the update
    |PTC_l[b, last_b]|₁, |FTC_l[b, last_b]|₁, |acc_ptc[b(, last_b)]|₁, |acc_ftc[b(, last_b)]|₁.
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
