"""The paper's toy vectors (App. A and Example B.1) and the metric helpers."""

import numpy as np
import pytest
import torch

from tuco_kernels.metrics import auc, beta_profile, contribution_ratio, output_co, tuco_from_components


def test_app_a_beta_vs_beta_L():
    """App. A: (PTC, FTC) per layer (0, h), (0, −h/2), (h, 0), (−h/2, 0): TuCo = 1/2 while max β_l = 1."""
    h = np.array([0.7, -1.3, 2.0])
    ptc = np.stack([0 * h, 0 * h, h, -h / 2])
    ftc = np.stack([h, -h / 2, 0 * h, 0 * h])
    assert tuco_from_components(ptc, ftc) == pytest.approx(0.5)
    betas = beta_profile(ptc, ftc)
    assert betas.max() == pytest.approx(1.0)
    assert betas[-1] == pytest.approx(0.5)


def test_example_b1_outputco_blind_spot():
    """Example B.1 (table values): PTC = (h, 2h), FTC = (h, −2h): TuCo = 1/4, yet OutputCo = 0."""
    h = np.array([1.0, -2.0, 0.5])
    ptc, ftc = np.stack([h, 2 * h]), np.stack([h, -2 * h])
    assert tuco_from_components(ptc, ftc) == pytest.approx(0.25)
    x_final = torch.tensor(2 * h)  # x_L^PT = x_L^FT = 2h
    assert float(output_co(x_final, x_final.clone())) == 0.0


def test_ratio_edges():
    assert contribution_ratio(0.0, 3.0) == 0.0       # PT == FT: TuCo = 0 exactly
    assert contribution_ratio(2.0, 0.0) == 1.0
    assert np.isnan(contribution_ratio(0.0, 0.0))    # undefined, not silently 0


def test_auc_against_pair_counting():
    rng = np.random.default_rng(0)
    pos, neg = rng.normal(1, 1, 40).round(1), rng.normal(0, 1, 30).round(1)  # rounding makes ties
    brute = np.mean([(p > n) + 0.5 * (p == n) for p in pos for n in neg])
    assert auc(pos, neg) == pytest.approx(brute)
    assert auc([1, 2], [0]) == 1.0 and auc([0], [1, 2]) == 0.0
    with pytest.raises(ValueError):
        auc([], [1.0])


def test_tpr_at_fpr():
    from tuco_kernels.metrics import tpr_at_fpr

    neg = np.arange(20) / 20.0           # 0.00 … 0.95
    pos = np.array([0.5, 0.93, 0.96, 0.97, 0.99])
    # t = 0.90 lets through one negative of 20 (0.95 > 0.90): FPR 5%; positives above 0.90: 4 of 5
    assert tpr_at_fpr(pos, neg, 0.05) == 0.8
    # FPR 0 needs t ≥ 0.95, the largest negative: 0.96, 0.97, 0.99 remain, 3 of 5
    assert tpr_at_fpr(pos, neg, 0.0) == 0.6
    assert tpr_at_fpr([2.0], [1.0]) == 1.0 and tpr_at_fpr([1.0], [2.0]) == 0.0
    with pytest.raises(ValueError):
        tpr_at_fpr([], [1.0])
