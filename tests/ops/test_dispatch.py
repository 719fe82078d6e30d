"""Backend choice: best available per device, forced by keyword or $TUCO_BACKEND, refusals that say why."""

import os

import pytest
import torch

from tuco_kernels import ops
from tuco_kernels.errors import TucoError


INTERPRETING = os.environ.get("TRITON_INTERPRET") == "1"


def small_case():
    x = torch.randn(2, 3, 4)
    return x, torch.zeros(2, 4), torch.tensor([2, 1])


def test_rejects_bad_arguments():
    x, acc, last = small_case()
    with pytest.raises(ValueError, match="share one"):
        ops.fused_update(x, x[:, :2], x, 1.0, last, acc, acc.clone())
    with pytest.raises(ValueError, match="float32, bfloat16 or float16"):
        ops.fused_update(x.double(), x.double(), x.double(), 1.0, last, acc, acc.clone())
    with pytest.raises(ValueError, match="last_idx must be int64"):
        ops.fused_update(x, x, x, 1.0, last.int(), acc, acc.clone())
    with pytest.raises(ValueError, match=r"last_idx\[1\] = 3 is outside \[0, 3\)"):
        ops.fused_update(x, x, x, 1.0, torch.tensor([0, 3]), acc, acc.clone())
    with pytest.raises(ValueError, match="acc_ptc must be fp32"):
        ops.fused_update(x, x, x, 1.0, last, acc.double(), acc.clone())
    with pytest.raises(ValueError, match="norms must be fp32"):
        ops.fused_update(x, x, x, 1.0, last, acc, acc.clone(), norms=torch.zeros(2, 3))
    with pytest.raises(ValueError, match="out must be contiguous"):
        ops.fused_update(x, x, x, 1.0, last, acc, acc.clone(), out=torch.empty(3, 2, 4).transpose(0, 1))
    with pytest.raises(TucoError, match="unknown kernel backend 'nope'"):
        ops.fused_update(x, x, x, 1.0, last, acc, acc.clone(), backend="nope")


def test_compiled_op_checks_its_own_arguments():
    """torch.ops.tuco.fused_update called directly (bypassing the Python checks) still names the problem."""
    if ops.backend_status("cpu")["cpu"] != "available":
        pytest.skip(ops.backend_status("cpu")["cpu"])
    x, acc, last = small_case()
    with pytest.raises(RuntimeError, match=r"last_idx\[0\] = 7 is outside \[0, 3\)"):
        torch.ops.tuco.fused_update(x, x, x, 1.0, torch.tensor([7, 0]), acc, acc.clone(), torch.empty_like(x), None)
    with pytest.raises(RuntimeError, match="must share one dtype"):
        torch.ops.tuco.fused_update(x, x.half(), x, 1.0, last, acc, acc.clone(), torch.empty_like(x), None)


def test_status_lists_every_backend_with_a_reason():
    status = ops.backend_status("cpu")
    assert set(status) == set(ops.BACKENDS) and status["torch"] == "available"
    assert status["cpu"] == "available"                   # built by `make` (setup.py) or JIT
    if torch.version.cuda is None:
        assert status["cuda"] == "torch built without CUDA"
    elif not torch.cuda.is_available():
        assert status["cuda"] == "no CUDA device"
    if INTERPRETING:                                      # TRITON_INTERPRET=1 (conftest, on machines without CUDA)
        assert status["triton"] == "available"
    else:
        assert "TRITON_INTERPRET=1" in status["triton"]


def test_default_is_the_fastest_available_for_the_device(monkeypatch):
    monkeypatch.delenv("TUCO_BACKEND", raising=False)
    # the interpreter comes last on CPU: never chosen by default
    assert ops.available_backends("cpu") == (("cpu", "torch", "triton") if INTERPRETING else ("cpu", "torch"))
    assert ops.resolve_backend(None, "cpu") == "cpu"
    if torch.cuda.is_available():
        assert ops.available_backends("cuda")[0] == "triton"


def test_environment_variable_and_keyword_force_a_backend(monkeypatch):
    monkeypatch.setenv("TUCO_BACKEND", "torch")
    assert ops.resolve_backend(None, "cpu") == "torch"
    assert ops.resolve_backend("cpu", "cpu") == "cpu"     # the keyword wins over the environment
    monkeypatch.setenv("TUCO_BACKEND", "cuda")
    if not torch.cuda.is_available():
        with pytest.raises(TucoError, match=r"kernel backend 'cuda' cannot run on cpu tensors here \("):
            ops.resolve_backend(None, "cpu")


def test_triton_is_refused_on_cpu_without_the_interpreter(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    assert "TRITON_INTERPRET=1" in ops.backend_status("cpu")["triton"]
    assert "triton" not in ops.available_backends("cpu")
    with pytest.raises(TucoError, match="kernel backend 'triton' cannot run on cpu tensors"):
        ops.resolve_backend("triton", "cpu")


def test_torch_backend_matches_reference_call():
    """The 'torch' backend is the reference itself, reached through the dispatch."""
    x, acc, last = small_case()
    pt, ft = torch.randn_like(x), torch.randn_like(x)
    out = ops.fused_update(x, pt, ft, 0.5, last, acc, acc.clone(), backend="torch")
    assert torch.equal(out, (pt + 0.5 * (ft - pt)))


def test_only_the_dispatch_calls_a_backend():
    """Outside tuco_kernels/ops/, the package reaches the kernels through ops.fused_update only."""
    from pathlib import Path

    import tuco_kernels

    root = Path(tuco_kernels.__file__).parent
    direct = ("torch.ops.tuco", "fused_update_reference", "fused_update_triton", "tuco_kernels._C")
    offenders = [f"{path.relative_to(root)}: {name}" for path in root.rglob("*.py")
                 if "ops" not in path.parts and path.name != "_build_info.py"   # written by setup.py
                 for name in direct if name in path.read_text()]
    assert offenders == []
    assert "ops.fused_update(" in (root / "core" / "engine.py").read_text()
