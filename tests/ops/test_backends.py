"""Every fused-update backend against the eager reference (bit-exact) and the float64 loop (per-dtype tolerance).

CPU backends run here: "cpu" (the C++ op) and "triton" (in the interpreter, TRITON_INTERPRET=1, small
shapes because each program is interpreted in Python). On a machine with a GPU the same cases run for
"cuda" and "triton" on CUDA tensors; without one those cases skip, with the reason shown by ``make test``.

What "exact" means: x_{l+1} and the accumulators are computed with the same fp32 operations as the
reference (α·FTC rounded before the add, round-to-nearest-even at the store), so they must be
bit-identical for fp32, bf16 and fp16. The norms are sums over d whose order differs per backend:
they are compared with NORM_TOL.
"""

import pytest
import torch

from tuco_kernels import ops
from tuco_kernels.ops.reference import fused_update_reference

from tests.fixtures.update_oracle import TOL, loop_oracle

NORM_TOL = dict(rtol=1e-5, atol=1e-5)   # fp32 sums of d terms in another order
DTYPES = [torch.float32, torch.bfloat16, torch.float16]
ALPHAS = [0.0, 0.75, 1.0, 1.25]

GPU = pytest.mark.gpu
# (backend, device): every pair a machine may have; unavailable ones skip with the dispatch's reason.
TARGETS = [("cpu", "cpu"), ("triton", "cpu"),
           pytest.param("cuda", "cuda", marks=GPU), pytest.param("triton", "cuda", marks=GPU)]


def _skip_unless_available(backend, device):
    status = ops.backend_status(device)[backend]
    if status != "available":
        pytest.skip(f"{backend} on {device}: {status}")


def _interpreted(backend, device):
    return backend == "triton" and device == "cpu"


def make_case(shape, dtype, all_tokens, device, seed=0):
    gen = torch.Generator().manual_seed(seed)
    B, T, d = shape
    x, pt, ft = (torch.randn(shape, generator=gen).to(dtype).to(device) for _ in range(3))
    last = torch.randint(0, T, (B,), generator=gen).to(device)   # last tokens on different rows (left padding)
    acc_shape = shape if all_tokens else (B, d)
    acc_p, acc_f = (torch.randn(acc_shape, generator=gen).to(device) for _ in range(2))
    return x, pt, ft, last, acc_p, acc_f


def run_both(backend, x, pt, ft, alpha, last, acc_p, acc_f):
    """(reference outputs, backend outputs); outputs and norms poisoned with NaN before each call."""
    B = x.shape[0]
    results = []
    for which in ("reference", backend):
        ap, af = acc_p.clone(), acc_f.clone()
        out = torch.full(x.shape, float("nan"), dtype=x.dtype, device=x.device)
        norms = torch.full((B, 4), float("nan"), device=x.device)
        if which == "reference":
            fused_update_reference(x, pt, ft, alpha, last, ap, af, out=out, norms=norms)
        else:
            got = ops.fused_update(x, pt, ft, alpha, last, ap, af, out=out, norms=norms, backend=backend)
            assert got.data_ptr() == out.data_ptr()
        results.append((out, ap, af, norms))
    return results


def assert_matches_reference(ref, got):
    (r_out, r_ap, r_af, r_norms), (g_out, g_ap, g_af, g_norms) = ref, got
    assert not g_out.isnan().any() and not g_norms.isnan().any(), "an output element was left unwritten"
    assert torch.equal(g_out, r_out), f"x_next differs: max |Δ| {(g_out.double() - r_out.double()).abs().max()}"
    assert torch.equal(g_ap, r_ap) and torch.equal(g_af, r_af), "accumulators differ"
    torch.testing.assert_close(g_norms, r_norms, **NORM_TOL)


@pytest.mark.parametrize("backend, device", TARGETS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("alpha", ALPHAS)
def test_odd_shape_matches_reference_exactly(backend, device, dtype, alpha):
    """5×123×123: 615 rows and d = 123, a multiple of no block size; last tokens on different rows."""
    _skip_unless_available(backend, device)
    x, pt, ft, last, acc_p, acc_f = make_case((5, 123, 123), dtype, False, device)
    ref, got = run_both(backend, x, pt, ft, alpha, last, acc_p, acc_f)
    assert_matches_reference(ref, got)
    exp_next, exp_p, exp_f, exp_norms = loop_oracle(x.cpu(), pt.cpu(), ft.cpu(), alpha, last.cpu(),
                                                    acc_p.cpu(), acc_f.cpu(), False)
    torch.testing.assert_close(got[0].cpu().double(), exp_next, **TOL[dtype])
    torch.testing.assert_close(got[3].cpu().double(), exp_norms, atol=1e-4, rtol=1e-5)
    if alpha == 1.0:
        assert torch.equal(got[0], ft)       # the fine-tuned forward, bit for bit
    if alpha == 0.0:
        assert torch.equal(got[0], pt)       # the pre-trained block's output, bit for bit


SHAPES = [(3, 1, 7), (2, 3, 2100), (7, 300, 128), (1, 2, 8192)]


@pytest.mark.parametrize("backend, device", TARGETS)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("all_tokens", [False, True], ids=["last-token", "all-tokens"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_shapes_and_modes_match_reference_exactly(backend, device, shape, all_tokens, dtype):
    """T = 1 (every row a last row), d over one block, many rows per thread chunk, d = 8192; both modes."""
    _skip_unless_available(backend, device)
    if _interpreted(backend, device) and shape[0] * shape[1] > 64:
        pytest.skip("too many rows for the Triton interpreter (covered by the compiled backends)")
    x, pt, ft, last, acc_p, acc_f = make_case(shape, dtype, all_tokens, device, seed=1)
    for alpha in (0.75, 1.0):
        assert_matches_reference(*run_both(backend, x, pt, ft, alpha, last, acc_p, acc_f))


@pytest.mark.parametrize("backend, device", TARGETS)
def test_in_place_and_no_write_forms(backend, device):
    """out=x updates the stream in place; out=out_ft with α = 1 writes nothing and still accumulates."""
    _skip_unless_available(backend, device)
    x, pt, ft, last, acc_p, acc_f = make_case((3, 5, 40), torch.bfloat16, False, device, seed=2)
    (r_out, r_ap, r_af, _), _ = run_both(backend, x, pt, ft, 1.25, last, acc_p, acc_f)
    stream, ap, af = x.clone(), acc_p.clone(), acc_f.clone()
    got = ops.fused_update(stream, pt, ft, 1.25, last, ap, af, out=stream, backend=backend)
    assert got.data_ptr() == stream.data_ptr()
    assert torch.equal(stream, r_out) and torch.equal(ap, r_ap) and torch.equal(af, r_af)

    (_, r_ap1, r_af1, r_norms1), _ = run_both(backend, x, pt, ft, 1.0, last, acc_p, acc_f)
    ft_copy, ap, af = ft.clone(), acc_p.clone(), acc_f.clone()
    norms = torch.full((3, 4), float("nan"), device=device)
    got = ops.fused_update(x, pt, ft_copy, 1.0, last, ap, af, out=ft_copy, norms=norms, backend=backend)
    assert got.data_ptr() == ft_copy.data_ptr() and torch.equal(ft_copy, ft)
    assert torch.equal(ap, r_ap1) and torch.equal(af, r_af1)
    torch.testing.assert_close(norms, r_norms1, **NORM_TOL)


@pytest.mark.parametrize("backend, device", TARGETS)
def test_non_contiguous_inputs(backend, device):
    """Inputs that are views (e.g. a transposed buffer) are accepted and give the same numbers."""
    _skip_unless_available(backend, device)
    x, pt, ft, last, acc_p, acc_f = make_case((2, 6, 32), torch.float32, False, device, seed=3)
    ref = run_both(backend, x, pt, ft, 0.5, last, acc_p, acc_f)[0]
    views = [t.transpose(0, 1).contiguous().transpose(0, 1) for t in (x, pt, ft)]
    assert not views[0].is_contiguous()
    got = run_both(backend, *views, 0.5, last, acc_p, acc_f)[1]
    assert_matches_reference(ref, got)


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")   # numpy, in the interpreter
@pytest.mark.parametrize("backend, device", TARGETS)
def test_non_finite_values_propagate(backend, device):
    """A NaN or inf in a block's output reaches x_{l+1}, the accumulators and the norms, as in the reference."""
    _skip_unless_available(backend, device)
    x, pt, ft, last, acc_p, acc_f = make_case((2, 3, 16), torch.bfloat16, False, device, seed=4)
    last = torch.tensor([2, 1], device=device)
    ft[0, 2, 5] = float("nan")
    pt[1, 1, 7] = float("inf")
    ref, got = run_both(backend, x, pt, ft, 0.75, last, acc_p, acc_f)
    for r, g in zip(ref, got):
        torch.testing.assert_close(g, r, rtol=0, atol=0, equal_nan=True)
    out, acc_ptc, acc_ftc, norms = got
    assert out[0, 2, 5].isnan() and acc_ftc[0, 5].isnan() and norms[0, 1].isnan()   # FTC = NaN − pt
    assert acc_ptc[1, 7].isinf() and norms[1, 0].isinf()                             # PTC = inf − x
