"""How csrc/ is compiled: sources, flags, the source hash and the CUDA tree. Standard library only.

One definition for both builds: setup.py (ahead of time, ``tuco_kernels._C``) loads this file by path,
and the JIT fallback (:mod:`tuco_kernels.ops.extension`) imports it. The hash of the sources is compiled
into the binary (``torch.ops.tuco.build_info()``) and written beside it, so a build older than its
sources is detected instead of being used silently.

The CUDA tree (the toolkit holding ``bin/nvcc`` and ``include/cuda_runtime.h``) is found by
:func:`find_cuda_tree`, not by torch's guess alone: torch takes the folder above the first ``nvcc`` on the
PATH, which is wrong where that ``nvcc`` is a wrapper script or a link outside the toolkit.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

CSRC = Path(__file__).resolve().parents[2] / "csrc"
CPU_SOURCES = ("registration.cpp", "fused_update_cpu.cpp")
CUDA_SOURCES = ("fused_update_cuda.cu",)
MODULE_SOURCE = "module.cpp"          # the Python module stub; only the setup.py build needs it
BUILD_INFO_FILE = Path(__file__).resolve().parents[1] / "_build_info.py"
DEFAULT_CUDA_HOME = "/usr/local/cuda"   # where CUDA installs itself when nothing says otherwise

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


def write_build_info(source_hash: str | None, why_no_cuda: str, cuda_tree: str = "") -> None:
    """Record what setup.py compiled, beside the package (read before tuco_kernels._C is imported).

    Whether the binary has CUDA kernels is read from the binary itself (``torch.ops.tuco.build_info()``);
    this file keeps only what the binary cannot say: the source hash to compare before importing it, why
    CUDA was left out, and which CUDA tree compiled it.
    """
    BUILD_INFO_FILE.write_text(
        '"""Written by setup.py when it built tuco_kernels._C; do not edit."""\n'
        f"CSRC_HASH = {source_hash!r}\nWHY_NO_CUDA = {why_no_cuda!r}\nCUDA_TREE = {cuda_tree!r}\n",
        encoding="utf-8")


@dataclass(frozen=True)
class CudaTree:
    """A CUDA toolkit folder (``path``; None when none was found) and how it was found, or why none was."""

    path: str | None
    how: str


def cuda_tree_problem(folder: str | os.PathLike) -> str | None:
    """What ``folder`` lacks to be a CUDA toolkit one can build with (None: an executable ``bin/nvcc`` and
    ``include/cuda_runtime.h`` are there)."""
    root = Path(folder)
    if not root.is_dir():
        return "does not exist"
    nvcc = root / "bin" / "nvcc"
    if not (nvcc.is_file() and os.access(nvcc, os.X_OK)):
        return "has no bin/nvcc"
    if not (root / "include" / "cuda_runtime.h").is_file():
        return "has no include/cuda_runtime.h"
    return None


def _nvcc_reported_top(nvcc: str) -> str | None:
    """The toolkit folder nvcc itself reports (``#$ TOP=...`` of a dry run): it holds also when ``nvcc`` on the
    PATH is a wrapper script that execs the real one."""
    try:
        out = subprocess.run([nvcc, "--dryrun", "-E", "-x", "cu", os.devnull], capture_output=True, text=True,
                             timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(r"^#\$ TOP=(.+?)\s*$", out.stdout + out.stderr, re.MULTILINE)
    return os.path.normpath(match.group(1)) if match else None


def _pip_toolkits() -> list[str]:
    """CUDA toolkits installed by pip (the nvidia-* wheels: nvidia/cu13, nvidia/cuda_nvcc) beside this Python."""
    found = []
    for site in sys.path:
        base = Path(site or ".") / "nvidia"
        if base.is_dir():
            found += [str(p) for p in sorted(base.glob("cu[0-9]*"), reverse=True)] + [str(base / "cuda_nvcc")]
    return found


def find_cuda_tree(torch_guess: str | None = None) -> CudaTree:
    """The CUDA toolkit to compile the CUDA op with, and how it was found (printed by setup.py and gpu-check).

    In order, the first folder without a :func:`cuda_tree_problem`: ``$CUDA_HOME`` / ``$CUDA_PATH`` (the user's choice);
    the folder of ``nvcc``'s real location (links resolved); the folder ``nvcc`` reports for itself (a wrapper
    script); ``torch_guess`` (``torch.utils.cpp_extension.CUDA_HOME``); a toolkit installed by pip; and
    ``/usr/local/cuda``. When none is, ``path`` is None and ``how`` lists what each candidate lacked.
    """
    tried: list[str] = []
    candidates: list[tuple[str | None, str]] = []
    for var in ("CUDA_HOME", "CUDA_PATH"):
        if os.environ.get(var):
            candidates.append((os.environ[var], f"${var}"))
    nvcc = shutil.which("nvcc")
    if nvcc:
        real = os.path.realpath(nvcc)
        where = f"nvcc's real location ({nvcc}" + (f" -> {real})" if real != nvcc else ")")
        candidates.append((str(Path(real).parent.parent), where))
        if cuda_tree_problem(Path(real).parent.parent):   # a wrapper outside the toolkit: ask nvcc itself
            candidates.append((_nvcc_reported_top(nvcc), f"nvcc's own report (TOP of `{nvcc} --dryrun`)"))
    candidates.append((torch_guess, "torch's own guess (torch.utils.cpp_extension.CUDA_HOME)"))
    candidates += [(p, "the CUDA toolkit installed by pip") for p in _pip_toolkits()]
    candidates.append((DEFAULT_CUDA_HOME, "the default location"))
    for path, where in candidates:
        problem = cuda_tree_problem(path) if path else "is unknown"
        if problem is None:
            note = f"; passed over: {'; '.join(tried)}" if tried else ""
            return CudaTree(os.path.normpath(path), f"{where}{note}")
        if path and where != "the CUDA toolkit installed by pip":
            tried.append(f"{where}: {path} {problem}")
    if not nvcc:
        tried.insert(0, "no nvcc on the PATH")
    return CudaTree(None, "no CUDA toolkit found: " + "; ".join(tried))


def cuda_required() -> bool:
    """``TUCO_BUILD_CUDA=require``: a build without the CUDA op is an error, not a fallback (make gpu-check)."""
    return os.environ.get("TUCO_BUILD_CUDA") == "require"


def cuda_build_problem(torch_cuda: str | None, cuda_home: str | None) -> str | None:
    """Why the CUDA op cannot be built here (None: try it), checked before compiling anything.

    ``torch_cuda`` is ``torch.version.cuda``, ``cuda_home`` the tree :func:`find_cuda_tree` chose.
    ``TUCO_BUILD_CUDA=0`` skips CUDA; ``force`` attempts it whatever the checks say (a test of setup.py's fallback
    to the CPU ops when the CUDA build fails); ``require`` checks as usual, and setup.py then fails instead of
    falling back.
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
        return "no CUDA toolkit (nvcc) found when tuco_kernels._C was built (set CUDA_HOME to one and reinstall)"
    try:
        release = re.search(r"release (\d+)\.(\d+)", subprocess.check_output([nvcc, "--version"], text=True))
    except (OSError, subprocess.CalledProcessError) as exc:
        return f"{nvcc} --version failed ({exc})"
    if torch_cuda is not None and release is not None and release.group(1) != torch_cuda.split(".")[0]:
        return f"nvcc is CUDA {release.group(1)}.{release.group(2)} but torch was built with CUDA {torch_cuda}"
    if not os.path.exists(os.path.join(cuda_home, "include", "cuda_runtime.h")):
        return f"{cuda_home}/include/cuda_runtime.h is missing (an incomplete CUDA toolkit)"
    return None
