"""How csrc/ is compiled: sources, flags and the source hash. Standard library only.

One definition for both builds: setup.py (ahead of time, ``tuco_kernels._C``) loads this file by path,
and the JIT fallback (:mod:`tuco_kernels.ops.extension`) imports it. The hash of the sources is compiled
into the binary (``torch.ops.tuco.build_info()``) and written beside it, so a build older than its
sources is detected instead of being used silently.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
from pathlib import Path

CSRC = Path(__file__).resolve().parents[2] / "csrc"
CPU_SOURCES = ("registration.cpp", "fused_update_cpu.cpp")
CUDA_SOURCES = ("fused_update_cuda.cu",)
MODULE_SOURCE = "module.cpp"          # the Python module stub; only the setup.py build needs it
BUILD_INFO_FILE = Path(__file__).resolve().parents[1] / "_build_info.py"

# -ffp-contract=off: alpha*FTC is rounded before the add, as in the eager reference (bit-exact fp32).
CXX_FLAGS = ["-O3", "-fopenmp", "-ffp-contract=off"]
NVCC_FLAGS = ["-O3", "--fmad=false"]     # the C++ standard is left to torch (it matches its headers)
LINK_FLAGS = ["-fopenmp"]


def csrc_hash(csrc: Path = CSRC) -> str | None:
    """16 hex digits over every file in csrc/ (names and bytes); None when csrc/ is not shipped."""
    if not csrc.is_dir():
        return None
    digest = hashlib.sha256()
    for path in sorted(p for p in csrc.iterdir() if p.suffix in {".cpp", ".cu", ".h", ".cuh"}):
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def hash_define(source_hash: str | None) -> str:
    return f"-DTUCO_CSRC_HASH={source_hash or 'unknown'}"


def write_build_info(source_hash: str | None, why_no_cuda: str) -> None:
    """Record what setup.py compiled, beside the package (read before tuco_kernels._C is imported).

    Whether the binary has CUDA kernels is read from the binary itself (``torch.ops.tuco.build_info()``);
    this file keeps only what the binary cannot say: the source hash to compare before importing it, and
    why CUDA was left out.
    """
    BUILD_INFO_FILE.write_text(
        '"""Written by setup.py when it built tuco_kernels._C; do not edit."""\n'
        f"CSRC_HASH = {source_hash!r}\nWHY_NO_CUDA = {why_no_cuda!r}\n", encoding="utf-8")


def cuda_build_problem(torch_cuda: str | None, cuda_home: str | None) -> str | None:
    """Why the CUDA op cannot be built here (None: try it), checked before compiling anything.

    ``torch_cuda`` is ``torch.version.cuda``, ``cuda_home`` cpp_extension's CUDA_HOME. ``TUCO_BUILD_CUDA=0``
    skips CUDA; ``TUCO_BUILD_CUDA=force`` attempts it whatever the checks say (a test of setup.py's fallback to the
    CPU ops when the CUDA build fails).
    """
    choice = os.environ.get("TUCO_BUILD_CUDA", "1")
    if choice == "0":
        return "TUCO_BUILD_CUDA=0 at build time"
    if choice == "force":
        return None
    if torch_cuda is None:
        return "torch built without CUDA"
    nvcc = os.path.join(cuda_home or "", "bin", "nvcc")
    if cuda_home is None or not os.path.exists(nvcc):
        return "no CUDA toolkit (nvcc) found when tuco_kernels._C was built"
    try:
        release = re.search(r"release (\d+)\.(\d+)", subprocess.check_output([nvcc, "--version"], text=True))
    except (OSError, subprocess.CalledProcessError) as exc:
        return f"{nvcc} --version failed ({exc})"
    if torch_cuda is not None and release is not None and release.group(1) != torch_cuda.split(".")[0]:
        return f"nvcc is CUDA {release.group(1)}.{release.group(2)} but torch was built with CUDA {torch_cuda}"
    if not os.path.exists(os.path.join(cuda_home, "include", "cuda_runtime.h")):
        return f"{cuda_home}/include/cuda_runtime.h is missing (an incomplete CUDA toolkit)"
    return None
