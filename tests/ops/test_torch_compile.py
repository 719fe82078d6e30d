"""The registered ops compose with torch.compile (mutations are functionalised, results unchanged)."""

import pytest
import torch

from tuco_kernels import ops
from tuco_kernels.ops.reference import fused_update_reference


def layer_step_cpu_op(x, pt, ft, last, acc_p, acc_f, out, norms):
    torch.ops.tuco.fused_update(x, pt * 1.0, ft, 0.75, last, acc_p, acc_f, out, norms)
    return out * 2.0                     # eager ops around the custom op, as in a compiled model


def layer_step_triton_op(x, pt, ft, last, acc_p, acc_f, out, norms):
    torch.ops.tuco.fused_update_triton(x, pt * 1.0, ft, 0.75, last, acc_p, acc_f, out, norms, True)
    return out * 2.0


GPU = pytest.mark.gpu   # torch.compile cannot trace the Triton interpreter


@pytest.mark.parametrize("backend, device, step, compiler", [
    ("cpu", "cpu", layer_step_cpu_op, "aot_eager"),
    ("cpu", "cpu", layer_step_cpu_op, "inductor"),
    pytest.param("cuda", "cuda", layer_step_cpu_op, "inductor", marks=GPU),
    pytest.param("triton", "cuda", layer_step_triton_op, "inductor", marks=GPU),
])
def test_compiled_step_matches_reference(backend, device, step, compiler):
    status = ops.backend_status(device)[backend]
    if status != "available":
        pytest.skip(f"{backend}: {status}")
    if backend == "triton":
        from tuco_kernels.ops.fused_update_triton import _registered_op
        _registered_op()                   # registers torch.ops.tuco.fused_update_triton
    torch._dynamo.reset()
    x, pt, ft = (torch.randn(2, 4, 24, device=device) for _ in range(3))
    last = torch.tensor([3, 1], device=device)
    acc = [torch.zeros(2, 24, device=device) for _ in range(4)]
    out, norms = torch.empty_like(x), torch.empty(2, 4, device=device)
    got = torch.compile(step, backend=compiler, fullgraph=True)(x, pt, ft, last, acc[0], acc[1], out, norms)
    ref_norms = torch.empty(2, 4, device=device)
    ref = fused_update_reference(x, pt, ft, 0.75, last, acc[2], acc[3], norms=ref_norms)
    assert torch.equal(got, ref * 2.0) and torch.equal(out, ref)
    assert torch.equal(acc[0], acc[2]) and torch.equal(acc[1], acc[3])
    torch.testing.assert_close(norms, ref_norms, rtol=1e-5, atol=1e-5)
