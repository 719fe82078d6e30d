"""pytest-benchmark microbenchmarks of the fused update: one per backend that runs here, plus eager.

    make bench                                    # timed (pytest-benchmark's table), then bench/kernels.py
    pytest bench --benchmark-disable              # CI: each body runs once, as a smoke test

Shape [4 × 1024, 4096] bf16 for the compiled backends and eager; the Triton interpreter (CPU, tests only)
gets a [2 × 8, 256] case so that the benchmark stays a smoke test there. GB/s and comparisons with the
copy bandwidth live in bench/kernels.py.
"""

import pytest
import torch

from tuco_kernels import ops
from tuco_kernels.ops.reference import fused_update_reference

pytestmark = pytest.mark.bench
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
PROVIDERS = [*ops.BACKENDS[:3], "eager"]


def make_inputs(B, T, d, dtype=torch.bfloat16):
    x, pt, ft = (torch.randn(B, T, d, device=DEVICE, dtype=dtype) for _ in range(3))
    last = torch.full((B,), T - 1, dtype=torch.int64, device=DEVICE)
    return x, pt, ft, last, torch.zeros(B, d, device=DEVICE), torch.zeros(B, d, device=DEVICE)


@pytest.mark.parametrize("provider", PROVIDERS)
def test_fused_update(benchmark, provider):
    if provider != "eager":
        status = ops.backend_status(DEVICE)[provider]
        if status != "available":
            pytest.skip(f"{provider} on {DEVICE}: {status}")
    interpreted = provider == "triton" and DEVICE == "cpu"
    x, pt, ft, last, acc_p, acc_f = make_inputs(2, 8, 256) if interpreted else make_inputs(4, 1024, 4096)
    out, norms = torch.empty_like(x), torch.empty(x.shape[0], 4, device=DEVICE)
    sync = torch.cuda.synchronize if DEVICE == "cuda" else (lambda: None)

    def step():
        if provider == "eager":
            fused_update_reference(x, pt, ft, 0.75, last, acc_p, acc_f, out=out, norms=norms)
        else:
            ops.fused_update(x, pt, ft, 0.75, last, acc_p, acc_f, out=out, norms=norms, backend=provider)
        sync()

    benchmark.extra_info.update(device=DEVICE, shape=list(x.shape), dtype=str(x.dtype))
    benchmark(step)
    expected = pt.float() + 0.75 * (ft.float() - pt.float())
    torch.testing.assert_close(out.float(), expected, rtol=2 ** -8, atol=1e-2)   # the timed call did the work
