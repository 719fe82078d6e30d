"""The eager reference (the oracle every backend is tested against) against a float64 loop over rows."""

import pytest
import torch

from tuco_kernels import ops
from tuco_kernels.errors import TucoError


def loop_oracle(x, pt, ft, alpha, last, acc_p, acc_f, all_tokens):
    """Row by row, in float64, straight from the definitions."""
    x64, p64, f64 = x.double(), pt.double(), ft.double()
    nxt = p64 + alpha * (f64 - p64)
    acc_p, acc_f = acc_p.double().clone(), acc_f.double().clone()
    norms = torch.zeros(x.shape[0], 4, dtype=torch.float64)
    for b in range(x.shape[0]):
        t = int(last[b])
        ptc, ftc = p64[b] - x64[b], f64[b] - p64[b]
        if all_tokens:
            acc_p[b] += ptc
            acc_f[b] += ftc
            sp, sf = acc_p[b, t], acc_f[b, t]
        else:
            acc_p[b] += ptc[t]
            acc_f[b] += ftc[t]
            sp, sf = acc_p[b], acc_f[b]
        norms[b] = torch.stack([ptc[t].abs().sum(), ftc[t].abs().sum(), sp.abs().sum(), sf.abs().sum()])
    return nxt, acc_p, acc_f, norms


# x_{l+1} is rounded once to the input dtype: within one rounding (half an ulp, relative) of the exact value.
TOL = {torch.float32: dict(atol=1e-5, rtol=1e-5), torch.bfloat16: dict(atol=2e-2, rtol=2 ** -8),
       torch.float16: dict(atol=2e-3, rtol=2 ** -11)}


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
