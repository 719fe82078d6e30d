"""Memory budgets: parsing and the batch/sweep plan (pure arithmetic, no device)."""

import pytest
import torch

from tests.fixtures.tiny import tiny_config
from tuco_kernels.errors import TucoError
from tuco_kernels.core import budget
from tuco_kernels.core.budget import Footprint, footprint, parse_size, plan_sweeps


@pytest.mark.parametrize("text,value", [("8GiB", 8 * 2**30), ("24GB", 24 * 10**9), ("512 MiB", 512 * 2**20),
                                        ("1.5gib", int(1.5 * 2**30)), (1000, 1000), ("100", 100)])
def test_parse_size(text, value):
    assert parse_size(text) == value


@pytest.mark.parametrize("bad", ["eight", "8XB", "-1GiB", 0, "0GB"])
def test_parse_size_errors(bad):
    with pytest.raises(TucoError, match="memory size"):
        parse_size(bad)


FP = Footprint(state=10_000.0, work=100_000.0)


def test_plan_fits_everything_on_the_device():
    p = plan_sweeps(budget=8 * 2**30, fixed=2 * 2**30, fp=FP, batch_tokens=4096, longest=256, total_tokens=131072)
    assert (p.batch_tokens, p.sweep_tokens, p.spill) == (4096, 131072, False)
    used = p.fixed + p.batch_tokens * FP.work + p.sweep_tokens * FP.state
    assert used <= 0.95 * 8 * 2**30


def test_plan_splits_sweeps_then_spills_as_the_budget_shrinks():
    many = plan_sweeps(budget=3 * 2**30, fixed=2 * 2**30, fp=FP, batch_tokens=4096, longest=256,
                       total_tokens=10**6)
    assert not many.spill and 32768 <= many.sweep_tokens < 10**6  # several device-resident sweeps
    spill = plan_sweeps(budget=int(2.3 * 2**30), fixed=2 * 2**30, fp=FP, batch_tokens=4096, longest=256,
                        total_tokens=10**6)
    assert spill.spill and spill.batch_tokens < 4096 and spill.batch_tokens >= 256


def test_plan_errors_name_the_numbers():
    with pytest.raises(TucoError, match="cannot hold even the weights in flight"):
        plan_sweeps(budget=2**30, fixed=2 * 2**30, fp=FP, batch_tokens=4096, longest=256, total_tokens=1000)
    with pytest.raises(TucoError, match=r"too small for the longest prompt \(100000 tokens\)"):
        plan_sweeps(budget=3 * 2**30, fixed=2 * 2**30, fp=FP, batch_tokens=4096, longest=100_000, total_tokens=10**5)


def test_no_budget_keeps_the_callers_batch():
    p = plan_sweeps(budget=None, fixed=0, fp=FP, batch_tokens=123, longest=10, total_tokens=10**7)
    assert (p.batch_tokens, p.sweep_tokens, p.spill) == (123, budget.DEFAULT_SWEEP_TOKENS, False)


def test_footprint_terms():
    cfg = tiny_config("llama", 320, hidden=64)
    sdpa = footprint(cfg, torch.bfloat16, 100)
    eager = footprint(cfg, torch.bfloat16, 100, attn_implementation="eager")
    assert eager.work > sdpa.work and eager.state > sdpa.state
    assert footprint(cfg, torch.float32, 100).state > sdpa.state
    both = footprint(cfg, torch.bfloat16, 100, own_pt=True, token_map=True).state
    assert both == pytest.approx(sdpa.state + 64 * 2 + 8 * 64 - 8 * 64 / 100)  # x_pt; fp32 sums per token
