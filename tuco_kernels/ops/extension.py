"""Loading the compiled ops (``torch.ops.tuco.fused_update``, CPU and CUDA): tuco_kernels._C or a JIT build.

Order: the ``tuco_kernels._C`` module that setup.py built, when it was compiled from the csrc/ sources
present now (their hash is recorded beside it); otherwise, in a checkout that has csrc/, a one-off JIT
build with ``torch.utils.cpp_extension.load`` (ninja), cached per source hash, torch version and Python.
If neither works the CPU/CUDA backends report why and the dispatch uses another backend.
Set ``TUCO_FORCE_JIT=1`` to skip ``tuco_kernels._C``; ``TUCO_EXTENSIONS_DIR`` moves the JIT cache.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from . import build_config

log = logging.getLogger("tuco_kernels")


@dataclass(frozen=True)
class ExtensionState:
    loaded: bool
    how: str                 # where the ops came from, or why they could not be loaded
    with_cuda: bool = False  # the loaded library has the CUDA implementation


_state: ExtensionState | None = None


def load() -> ExtensionState:
    """Load the compiled ops once per process (may compile them: a few seconds to a minute, once)."""
    global _state
    if _state is None:
        _state = _load()
    return _state


def prebuilt() -> ExtensionState:
    """``tuco_kernels._C`` as setup.py built it, never a JIT build: loaded, or why it cannot be (make gpu-check
    asks this before installing, so that a checkout is compiled once)."""
    state = _try_prebuilt(build_config.csrc_hash())
    return state if isinstance(state, ExtensionState) else ExtensionState(False, state)


def _jit_directory(source_hash: str, with_cuda: bool) -> Path:
    root = os.environ.get("TUCO_EXTENSIONS_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "tuco_kernels")
    flavour = f"cu{torch.version.cuda}" if with_cuda else "cpu"
    tag = f"torch{torch.__version__.split('+')[0]}-py{sys.version_info[0]}{sys.version_info[1]}-{flavour}"
    return Path(root) / tag / source_hash


def _binary_matches(source_hash: str | None) -> bool:
    return source_hash is None or torch.ops.tuco.build_info().startswith(f"csrc={source_hash} ")


def _load() -> ExtensionState:
    source_hash = build_config.csrc_hash()
    reason = _try_prebuilt(source_hash)
    if isinstance(reason, ExtensionState):
        return reason
    if source_hash is None:
        return ExtensionState(False, f"{reason}, and csrc/ is not shipped with this install, so it cannot be "
                                     "compiled here")
    return _jit_build(source_hash, reason)


def _try_prebuilt(source_hash: str | None) -> ExtensionState | str:
    if os.environ.get("TUCO_FORCE_JIT") == "1":
        return "TUCO_FORCE_JIT=1"
    try:
        from .. import _build_info
    except ImportError:
        return "tuco_kernels._C is not built"
    if source_hash is not None and _build_info.CSRC_HASH != source_hash:
        return f"tuco_kernels._C is stale (built from csrc {_build_info.CSRC_HASH}, csrc is now {source_hash})"
    try:
        from .. import _C  # noqa: F401  (importing runs the TORCH_LIBRARY registrations)
    except ImportError as exc:
        return f"tuco_kernels._C does not import ({exc})"
    if not _binary_matches(source_hash):
        return ExtensionState(False, f"tuco_kernels._C reports {torch.ops.tuco.build_info()!r} but csrc is "
                                     f"{source_hash}; rebuild it: pip install --no-build-isolation -e .")
    with_cuda = torch.ops.tuco.build_info().endswith("cuda=1")
    how = "tuco_kernels._C (built by setup.py)"
    if not with_cuda:
        how += f"; CPU only: {_build_info.WHY_NO_CUDA}"
    elif getattr(_build_info, "CUDA_TREE", ""):
        how += f"; with the CUDA op (compiled with {_build_info.CUDA_TREE})"
    return ExtensionState(True, how, with_cuda)


def _first_error(exc: Exception) -> str:
    """The informative line of a failed build (compiler errors come after ninja's command lines)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    telling = [line for line in lines if re.search(r"error|not found|no such file", line, re.IGNORECASE)
               and not line.startswith("Error building extension")]
    return (telling or lines or [type(exc).__name__])[0]


def _jit_build(source_hash: str, reason: str) -> ExtensionState:
    from torch.utils import cpp_extension

    with_cuda = False
    if torch.version.cuda and torch.cuda.is_available():
        tree = build_config.find_cuda_tree(cpp_extension.CUDA_HOME)
        if tree.path is not None and build_config.cuda_build_problem(torch.version.cuda, tree.path) is None:
            cpp_extension.CUDA_HOME = tree.path   # torch's guess is wrong where nvcc is a wrapper or a link
            os.environ["CUDA_HOME"] = tree.path
            with_cuda = True
    sources = [str(build_config.CSRC / s) for s in build_config.CPU_SOURCES]
    if with_cuda:
        sources += [str(build_config.CSRC / s) for s in build_config.CUDA_SOURCES]
    directory = _jit_directory(source_hash, with_cuda)
    directory.mkdir(parents=True, exist_ok=True)
    log.warning("tuco_kernels: %s; compiling csrc/ now with torch.utils.cpp_extension (once; cached in %s)",
                reason, directory)
    defines = [build_config.hash_define(source_hash)] + (["-DTUCO_WITH_CUDA=1"] if with_cuda else [])
    try:
        cpp_extension.load(
            name=f"tuco_ops_{source_hash}", sources=sources, build_directory=str(directory),
            extra_cflags=build_config.CXX_FLAGS + defines, extra_ldflags=build_config.LINK_FLAGS,
            extra_cuda_cflags=build_config.NVCC_FLAGS + defines, is_python_module=False,
            verbose=os.environ.get("TUCO_JIT_VERBOSE") == "1")
    except Exception as exc:  # a compiler error, a missing compiler or ninja: report, never crash the caller
        return ExtensionState(False, f"{reason}, and the JIT build in {directory} failed: {_first_error(exc)} "
                                     "(TUCO_JIT_VERBOSE=1 shows the whole build)")
    how = f"JIT build of csrc/ in {directory} ({reason})"
    if not with_cuda:
        how += "; CPU only"
    return ExtensionState(True, how, with_cuda)
