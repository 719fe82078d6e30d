"""The paper's toy vectors (App. A and Example B.1) and the metric helpers."""

import numpy as np
import pytest
import torch

from tuco_kernels.core.metrics import beta_profile, contribution_ratio, output_co, tuco_from_components


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
