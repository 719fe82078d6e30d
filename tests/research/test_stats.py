"""The studies' evaluation statistics against brute-force counting."""

import numpy as np
import pytest

from tuco_research.stats import auc, tpr_at_fpr


def test_auc_against_pair_counting():
    rng = np.random.default_rng(0)
    pos, neg = rng.normal(1, 1, 40).round(1), rng.normal(0, 1, 30).round(1)  # rounding makes ties
    brute = np.mean([(p > n) + 0.5 * (p == n) for p in pos for n in neg])
    assert auc(pos, neg) == pytest.approx(brute)
    assert auc([1, 2], [0]) == 1.0 and auc([0], [1, 2]) == 0.0
    with pytest.raises(ValueError):
        auc([], [1.0])


def test_tpr_at_fpr():
    neg = np.arange(20) / 20.0           # 0.00 … 0.95
    pos = np.array([0.5, 0.93, 0.96, 0.97, 0.99])
    # t = 0.90 lets through one negative of 20 (0.95 > 0.90): FPR 5%; positives above 0.90: 4 of 5
    assert tpr_at_fpr(pos, neg, 0.05) == 0.8
    # FPR 0 needs t ≥ 0.95, the largest negative: 0.96, 0.97, 0.99 remain, 3 of 5
    assert tpr_at_fpr(pos, neg, 0.0) == 0.6
    assert tpr_at_fpr([2.0], [1.0]) == 1.0 and tpr_at_fpr([1.0], [2.0]) == 0.0
    with pytest.raises(ValueError):
        tpr_at_fpr([], [1.0])
