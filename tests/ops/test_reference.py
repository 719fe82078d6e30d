"""The eager reference (the oracle every backend is tested against) against a float64 loop over rows."""

import pytest
import torch

from tuco_kernels import ops
from tests.fixtures.update_oracle import TOL, loop_oracle


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("shape", [(2, 4, 64), (5, 123, 123), (3, 1, 7)])
@pytest.mark.parametrize("alpha", [0.0, 0.75, 1.0, 1.25])
@pytest.mark.parametrize("all_tokens", [False, True])
def test_fused_update_matches_loop(dtype, shape, alpha, all_tokens):
    B, T, d = shape
    x, pt, ft = (torch.randn(shape).to(dtype) for _ in range(3))
    last = torch.randint(0, T, (B,))                      # last tokens at different rows (left padding)
    acc_shape = shape if all_tokens else (B, d)
    acc_p, acc_f = torch.randn(acc_shape), torch.randn(acc_shape)
    exp_next, exp_p, exp_f, exp_norms = loop_oracle(x, pt, ft, alpha, last, acc_p, acc_f, all_tokens)
    out = torch.full_like(x, float("nan"))                # poisoned: an unwritten element fails
    norms = torch.full((B, 4), float("nan"))
    got = ops.fused_update(x, pt, ft, alpha, last, acc_p, acc_f, out=out, norms=norms, backend="torch")
    assert got.data_ptr() == out.data_ptr() and got.dtype == dtype
    torch.testing.assert_close(got.double(), exp_next, **TOL[dtype])
    torch.testing.assert_close(acc_p.double(), exp_p, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(acc_f.double(), exp_f, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(norms.double(), exp_norms, atol=1e-4, rtol=1e-5)
    if alpha == 1.0:
        assert torch.equal(got, ft)                       # α = 1 is the fine-tuned forward, bit-exact
    if alpha == 0.0:
        assert torch.equal(got, pt)
