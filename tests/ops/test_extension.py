"""The compiled ops come from setup.py's tuco_kernels._C, else from a JIT build; failures are reported, not raised."""

import os
import subprocess
import sys
import textwrap

import pytest

from tuco_kernels.ops import build_config, extension

CHECK = textwrap.dedent("""
    import torch
    from tuco_kernels import ops
    from tuco_kernels.ops.reference import fused_update_reference
    state = ops.extension.load()
    print("LOADED", state.loaded, "|", state.how)
    print("STATUS", ops.backend_status("cpu")["cpu"])
    x, pt, ft = (torch.randn(2, 5, 33, dtype=torch.bfloat16) for _ in range(3))
    last = torch.tensor([4, 2])
    accs = [torch.zeros(2, 33) for _ in range(4)]
    got = ops.fused_update(x, pt, ft, 0.75, last, accs[0], accs[1])
    ref = fused_update_reference(x, pt, ft, 0.75, last, accs[2], accs[3])
    print("BACKEND", ops.resolve_backend(None, "cpu"), "EXACT", torch.equal(got, ref) and torch.equal(accs[1], accs[3]))
""")


def run_check(tmp_path, **env):
    full_env = {**os.environ, "TUCO_EXTENSIONS_DIR": str(tmp_path / "ext"), **env}
    return subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True, env=full_env, timeout=600)


def test_setup_py_build_is_used_here():
    """`make` builds tuco_kernels._C from the current csrc/; the loader takes it (no JIT in a built checkout)."""
    if os.environ.get("TUCO_FORCE_JIT") == "1":
        pytest.skip("TUCO_FORCE_JIT=1 is set")
    state = extension.load()
    assert state.loaded, state.how
    assert state.how.startswith("tuco_kernels._C (built by setup.py)"), state.how
    import torch
    assert torch.ops.tuco.build_info().startswith(f"csrc={build_config.csrc_hash()} ")


@pytest.mark.slow
def test_jit_build_takes_over_when_the_extension_is_not_used(tmp_path):
    result = run_check(tmp_path, TUCO_FORCE_JIT="1")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "LOADED True | JIT build of csrc/" in result.stdout, result.stdout + result.stderr[-2000:]
    assert "compiling csrc/ now with torch.utils.cpp_extension" in result.stderr
    assert "BACKEND cpu EXACT True" in result.stdout
    assert list((tmp_path / "ext").rglob("tuco_ops_*.so")), "the JIT build is cached under TUCO_EXTENSIONS_DIR"


@pytest.mark.slow
def test_failed_jit_build_is_reported_and_the_reference_takes_over(tmp_path):
    result = run_check(tmp_path, TUCO_FORCE_JIT="1", CXX="/nonexistent/c++")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "LOADED False | TUCO_FORCE_JIT=1, and the JIT build in" in result.stdout, result.stdout
    assert "STATUS TUCO_FORCE_JIT=1, and the JIT build in" in result.stdout
    assert "/nonexistent/c++: not found" in result.stdout          # the line that says what went wrong
    assert "BACKEND torch EXACT True" in result.stdout


def test_stale_build_is_detected_before_it_is_imported(monkeypatch):
    if os.environ.get("TUCO_FORCE_JIT") == "1":
        pytest.skip("TUCO_FORCE_JIT=1 is set")
    monkeypatch.setattr(build_config, "csrc_hash", lambda: "0123456789abcdef")
    reason = extension._try_prebuilt("0123456789abcdef")
    assert isinstance(reason, str) and reason.startswith("tuco_kernels._C is stale (built from csrc ")
