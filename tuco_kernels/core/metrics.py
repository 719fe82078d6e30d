"""The paper's metrics on accumulated vectors (docs/math.md §2): TuCo = |FTC̄|₁ / (|PTC̄|₁ + |FTC̄|₁), the cumulative
β_l, and OutputCo. The norm is of the vector sum over layers, so cancellations between layers count."""

from __future__ import annotations

import numpy as np
import torch


def contribution_ratio(ftc_l1, ptc_l1):
    """|FTC|₁ / (|PTC|₁ + |FTC|₁) elementwise; NaN only where both norms are zero."""
    if isinstance(ftc_l1, torch.Tensor):
        return ftc_l1 / (ptc_l1 + ftc_l1)
    ftc_l1, ptc_l1 = np.asarray(ftc_l1, dtype=np.float64), np.asarray(ptc_l1, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        return ftc_l1 / (ptc_l1 + ftc_l1)


def tuco_from_sums(acc_ptc: torch.Tensor, acc_ftc: torch.Tensor) -> torch.Tensor:
    """TuCo from accumulated ΣPTC and ΣFTC vectors [..., d]; L1 norms taken in float64, shape [...]."""
    return contribution_ratio(acc_ftc.double().abs().sum(-1), acc_ptc.double().abs().sum(-1))


def tuco_from_components(ptc, ftc) -> float:
    """TuCo of one token from per-layer contributions, each [L, d] (or [L] for d = 1)."""
    ptc_sum = np.asarray(ptc, dtype=np.float64).sum(0)
    ftc_sum = np.asarray(ftc, dtype=np.float64).sum(0)
    return float(contribution_ratio(np.abs(ftc_sum).sum(), np.abs(ptc_sum).sum()))


def beta_profile(ptc, ftc) -> np.ndarray:
    """Cumulative β_l (sums over layers 0..l) from per-layer contributions [L, d]; last entry = TuCo."""
    cp = np.cumsum(np.asarray(ptc, dtype=np.float64), 0).reshape(len(ptc), -1)
    cf = np.cumsum(np.asarray(ftc, dtype=np.float64), 0).reshape(len(ftc), -1)
    return contribution_ratio(np.abs(cf).sum(-1), np.abs(cp).sum(-1))


def output_co(x_ft_final, x_pt_final):
    """OutputCo from final (pre-norm) residual streams [..., d] of the FT and PT models' own forwards."""
    diff = (x_ft_final.double() - x_pt_final.double()).abs().sum(-1)
    return contribution_ratio(diff, x_pt_final.double().abs().sum(-1))
