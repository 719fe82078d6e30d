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
@pytest.mark.slow
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
    assert "stream_kernel" in ptx and "accumulate_kernel" in ptx
    assert not re.search(r"\bfma\.rn\.f32\b", ptx), "an FMA contraction: results would differ from the reference"
    assert "cvt.rn.bf16.f32" in ptx and "ld.global.v4" in ptx and "st.global.v4" in ptx


TRITON_AOT = textwrap.dedent("""
    import re, sys
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    from tuco_kernels.ops.fused_update_triton import (_accumulate_kernel, _stream_kernel, accumulate_config,
                                                      compile_options, stream_config)
    arch, exact, fusion = int(sys.argv[1]), sys.argv[2] == "exact", sys.argv[3] == "fusion"

    def build(kernel, types, constexprs, warps):
        names = list(kernel.arg_names)
        sig = dict(zip(names, types + ["constexpr"] * len(constexprs)))
        # what a launch specialises on: 16-byte aligned pointers, sizes divisible by 16
        attrs = {(i,): [["tt.divisibility", 16]] for i, n in enumerate(names)
                 if n.endswith("_ptr") or n in ("d", "n_elements")}
        # Inductor launches user kernels without enable_fp_fusion; "fusion" compiles them that way
        options = {"num_warps": warps} if fusion else compile_options(warps)
        return triton.compile(ASTSource(kernel, sig, constexprs=constexprs, attrs=attrs),
                              target=GPUTarget("cuda", arch, 32), options=options).asm

    block, warps = stream_config(2)
    stream = build(_stream_kernel, ["*bf16"] * 3 + ["fp32", "i32"],
                   dict(ALPHA_ONE=False, EXACT_RN=exact, ROUND_BF16=False, BLOCK=block), warps)
    block_d, acc_warps = accumulate_config(4096)
    acc = build(_accumulate_kernel, ["*bf16"] * 3 + ["*i64", "*fp32", "*fp32", "*fp32", "i32", "i32"],
                dict(ALL_TOKENS=False, HAS_NORMS=True, EXACT_RN=exact, BLOCK_D=block_d), acc_warps)
    fma = any(re.search(r"\\bfma\\.rn", k["ptx"]) for k in (stream, acc))
    print("FMA", fma, "VEC_LD", "ld.global.v4" in stream["ptx"], "VEC_ST", "st.global.v4" in stream["ptx"],
          "CUBIN", len(stream["cubin"]) > 0 and len(acc["cubin"]) > 0)
""")


def compile_triton_for_gpu(arch: int, exact: bool, fusion: bool) -> list[str]:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}  # compiled mode, not the interpreter
    result = subprocess.run([sys.executable, "-c", TRITON_AOT, str(arch), "exact" if exact else "plain",
                             "fusion" if fusion else "nofusion"], capture_output=True, text=True, env=env, timeout=600)
    if result.returncode != 0 and "ptxas" in result.stderr and "not found" in result.stderr.lower():
        pytest.skip("triton's ptxas is missing: cannot compile for the GPU here")
    assert result.returncode == 0, result.stderr[-4000:]
    return result.stdout.split()


@pytest.mark.parametrize("fusion", [False, True], ids=["launch-options", "fusion-allowed"])
@pytest.mark.parametrize("arch", [90, 80])
def test_triton_kernels_compile_for_the_gpu_without_fma(arch, fusion):
    """16-byte accesses in the stream kernel, and no FMA in either kernel, even compiled the way Inductor
    compiles a user kernel (launch options such as enable_fp_fusion dropped): the arithmetic is explicitly
    rounded (libdevice *_rn), which no compiler contracts."""
    assert compile_triton_for_gpu(arch, exact=True, fusion=fusion) == \
        ["FMA", "False", "VEC_LD", "True", "VEC_ST", "True", "CUBIN", "True"]


def test_fma_check_can_fail():
    """Negative control: the plain operators (the interpreter's form) with fusion allowed do contract into FMAs,
    so the check above would catch a kernel that lost its explicitly rounded arithmetic."""
    assert compile_triton_for_gpu(90, exact=False, fusion=True)[:2] == ["FMA", "True"]
