"""GPU code that cannot run here is at least compiled here, so that an error in it cannot land unseen.

- csrc/*.cu: nvcc compile-only against the CPU torch wheel's headers (toolchain.md §4: a stub for the one
  generated header the CPU wheel lacks), with the flags cpp_extension itself passes, for sm_90, keeping the PTX to check that no FMA contraction
  crept into the arithmetic (it would break bit-exactness with the reference).
- the Triton kernel: compiled ahead of time for sm_90 (and sm_80) with the launch's own options; its PTX
  must have 16-byte vector loads and stores, and no fma.
"""

import os
import re
import shutil
import subprocess
import sys
import textwrap

import pytest

from tuco_kernels.ops import build_config

NVCC = shutil.which("nvcc")


@pytest.mark.skipif(NVCC is None, reason="nvcc not found: the CUDA sources are not compile-checked here")
@pytest.mark.parametrize("source", build_config.CUDA_SOURCES)
def test_cuda_sources_compile_with_nvcc(source, tmp_path):
    from torch.utils.cpp_extension import COMMON_NVCC_FLAGS, include_paths

    stub = tmp_path / "stub" / "c10" / "cuda" / "impl"
    stub.mkdir(parents=True)
    (stub / "cuda_cmake_macros.h").write_text("#pragma once\n#define C10_CUDA_BUILD_SHARED_LIBS\n")
    keep = tmp_path / "keep"
    keep.mkdir()
    cmd = [NVCC, *COMMON_NVCC_FLAGS, *build_config.NVCC_FLAGS, "-std=c++20", "-gencode", "arch=compute_90,code=sm_90", "-Xcompiler", "-fPIC",
           f"-I{tmp_path / 'stub'}", *[a for p in include_paths() for a in ("-isystem", p)],
           build_config.hash_define("test"), "--keep", f"--keep-dir={keep}",
           "-c", str(build_config.CSRC / source), "-o", str(tmp_path / "op.o")]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-4000:]
    assert "warning" not in result.stderr.lower(), result.stderr[-4000:]
    ptx = "\n".join(p.read_text() for p in keep.glob("*.ptx"))
    assert "fused_update_kernel" in ptx
    assert not re.search(r"\bfma\.rn\.f32\b", ptx), "an FMA contraction: results would differ from the reference"
    assert "cvt.rn.bf16.f32" in ptx and "ld.global.v4" in ptx


TRITON_AOT = textwrap.dedent("""
    import re, sys
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    from tuco_kernels.ops.fused_update_triton import _fused_update_kernel, compile_options, launch_config
    d, arch = 4096, int(sys.argv[1])
    block, warps = launch_config(d, 2)
    names = list(_fused_update_kernel.arg_names)
    sig = dict(zip(names, ["*bf16"] * 4 + ["*i64", "*fp32", "*fp32", "*fp32", "fp32", "i32", "i32"]
                   + ["constexpr"] * 6))
    constexprs = dict(ALPHA_ONE=False, WRITE_OUT=True, ALL_TOKENS=False, HAS_NORMS=True, ROUND_BF16=False,
                      BLOCK_D=block)
    # what a launch specialises on: 16-byte aligned pointers and d divisible by 16
    attrs = {(i,): [["tt.divisibility", 16]] for i, n in enumerate(names) if n.endswith("_ptr") or n == "d"}
    kernel = triton.compile(ASTSource(_fused_update_kernel, sig, constexprs=constexprs, attrs=attrs),
                            target=GPUTarget("cuda", arch, 32), options=compile_options(warps))
    ptx = kernel.asm["ptx"]
    print("FMA", bool(re.search(r"\\bfma\\.rn", ptx)), "VEC_LD", "ld.global.v4" in ptx,
          "VEC_ST", "st.global.v4" in ptx, "CUBIN", len(kernel.asm["cubin"]) > 0)
""")


@pytest.mark.parametrize("arch", [90, 80])
def test_triton_kernel_compiles_for_the_gpu(arch):
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}  # compiled mode, not the interpreter
    result = subprocess.run([sys.executable, "-c", TRITON_AOT, str(arch)], capture_output=True, text=True,
                            env=env, timeout=600)
    if result.returncode != 0 and "ptxas" in result.stderr and "not found" in result.stderr.lower():
        pytest.skip("triton's ptxas is missing: cannot compile for the GPU here")
    assert result.returncode == 0, result.stderr[-4000:]
    assert result.stdout.split() == ["FMA", "False", "VEC_LD", "True", "VEC_ST", "True", "CUBIN", "True"]
