"""The fused TuCo layer update and its backends. The engine calls :func:`fused_update`, nothing else.

Backends, each tested against the eager reference:

    "triton"  Triton kernel (fused_update_triton.py): the GPU path; on CPU only in the interpreter
    "cuda"    C++/CUDA op from csrc/fused_update_cuda.cu    (torch.ops.tuco.fused_update on CUDA tensors)
    "cpu"     C++ ATen/OpenMP op from csrc/fused_update_cpu.cpp (torch.ops.tuco.fused_update on CPU tensors)
    "torch"   eager PyTorch reference (reference.py)

The best available backend for the tensors' device is used (CUDA: triton, cuda, torch; CPU: cpu, torch,
then the Triton interpreter when TRITON_INTERPRET=1); ``backend=`` or ``TUCO_BACKEND`` forces one.
"""

from __future__ import annotations

import functools
import importlib.util
import os

import torch

from ..errors import TucoError
from . import extension
from .reference import fused_update_reference

BACKENDS = ("triton", "cuda", "cpu", "torch")
_PREFERENCE = {"cuda": ("triton", "cuda", "torch"), "cpu": ("cpu", "torch", "triton")}


def _default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _triton_status(device: torch.device) -> str:
    if importlib.util.find_spec("triton") is None:
        return "triton is not installed (pip install triton)"
    interpreting = os.environ.get("TRITON_INTERPRET") == "1"
    if device.type == "cuda":
        if not torch.cuda.is_available():
            return "no CUDA device"
        if interpreting:
            return "TRITON_INTERPRET=1 is set: kernels would run in the CPU interpreter, not on the GPU"
        return "available"
    if device.type == "cpu":
        if interpreting:
            return "available"
        return "no GPU (on CPU tensors it runs only in the interpreter, TRITON_INTERPRET=1, for tests)"
    return f"not supported on {device.type} tensors"


def _compiled_status(backend: str, device: torch.device) -> str:
    if backend == "cuda":
        if torch.version.cuda is None:
            return "torch built without CUDA"
        if not torch.cuda.is_available():
            return "no CUDA device"
    if device.type != backend:
        return f"runs on {backend.upper()} tensors only"
    state = extension.load()
    if not state.loaded:
        return state.how
    if backend == "cuda" and not state.with_cuda:
        return f"the compiled ops have no CUDA implementation ({state.how})"
    return "available"


def backend_status(device: torch.device | str | None = None) -> dict[str, str]:
    """For every backend, 'available' or why it cannot run on tensors of ``device`` (default: the best here).

    May compile the C++ ops on first call (see :mod:`tuco_kernels.ops.extension`).
    """
    device = torch.device(device) if device is not None else _default_device()
    return dict(_status_of(device.type, os.environ.get("TRITON_INTERPRET")))


@functools.lru_cache(maxsize=None)
def _status_of(device_type: str, triton_interpret: str | None) -> tuple[tuple[str, str], ...]:
    """Cached per device type and interpreter setting: the dispatch runs once per layer and batch."""
    device = torch.device(device_type)
    return (("triton", _triton_status(device)), ("cuda", _compiled_status("cuda", device)),
            ("cpu", _compiled_status("cpu", device)), ("torch", "available"))


def available_backends(device: torch.device | str | None = None) -> tuple[str, ...]:
    """Backends that can run on tensors of ``device`` (default: CUDA if present, else CPU), best first."""
    device = torch.device(device) if device is not None else _default_device()
    status = backend_status(device)
    return tuple(b for b in _PREFERENCE.get(device.type, ("torch",)) if status[b] == "available")


def resolve_backend(backend: str | None = None, device: torch.device | str | None = None) -> str:
    """The backend to run: ``backend``, else $TUCO_BACKEND, else the best available for ``device``."""
    choice = backend or os.environ.get("TUCO_BACKEND") or None
    device = torch.device(device) if device is not None else _default_device()
    if choice is None:
        return available_backends(device)[0]
    if choice not in BACKENDS:
        raise TucoError(f"unknown kernel backend {choice!r}; choose one of {BACKENDS}")
    status = backend_status(device)[choice]
    if status != "available":
        raise TucoError(f"kernel backend {choice!r} cannot run on {device.type} tensors here ({status}); "
                        f"available: {available_backends(device)}")
    return choice


def _check(x, out_pt, out_ft, last_idx, acc_ptc, acc_ftc, out, norms):
    if not (x.shape == out_pt.shape == out_ft.shape) or x.dim() != 3:
        raise ValueError(f"x, out_pt, out_ft must share one [B, T, d] shape; got {tuple(x.shape)}, "
                         f"{tuple(out_pt.shape)}, {tuple(out_ft.shape)}")
    if not (x.dtype == out_pt.dtype == out_ft.dtype):
        raise ValueError(f"x, out_pt, out_ft must share one dtype; got {x.dtype}, {out_pt.dtype}, {out_ft.dtype}")
    if x.dtype not in (torch.float32, torch.bfloat16, torch.float16):
        raise ValueError(f"x, out_pt, out_ft must be float32, bfloat16 or float16; got {x.dtype}")
    B, T, d = x.shape
    if last_idx.shape != (B,) or last_idx.dtype != torch.int64:
        raise ValueError(f"last_idx must be int64 [{B}]; got {last_idx.dtype} {tuple(last_idx.shape)}")
    for name, acc in (("acc_ptc", acc_ptc), ("acc_ftc", acc_ftc)):
        if acc.dtype != torch.float32 or tuple(acc.shape) not in ((B, d), (B, T, d)):
            raise ValueError(f"{name} must be fp32 [{B}, {d}] or [{B}, {T}, {d}]; got {acc.dtype} {tuple(acc.shape)}")
    if acc_ptc.shape != acc_ftc.shape:
        raise ValueError("acc_ptc and acc_ftc must have the same shape")
    if out is not None and (out.shape != x.shape or out.dtype != x.dtype):
        raise ValueError(f"out must be {x.dtype} {tuple(x.shape)}; got {out.dtype} {tuple(out.shape)}")
    if norms is not None and (norms.shape != (B, 4) or norms.dtype != torch.float32):
        raise ValueError(f"norms must be fp32 [{B}, 4]; got {norms.dtype} {tuple(norms.shape)}")
    named = {"x": x, "out_pt": out_pt, "out_ft": out_ft, "last_idx": last_idx, "acc_ptc": acc_ptc,
             "acc_ftc": acc_ftc, "out": out, "norms": norms}
    for name, t in named.items():
        if t is not None and t.device != x.device:
            raise ValueError(f"{name} is on {t.device} but x is on {x.device}")
    for name in ("acc_ptc", "acc_ftc", "out", "norms"):  # written in place: cannot be silently copied
        if named[name] is not None and not named[name].is_contiguous():
            raise ValueError(f"{name} must be contiguous (it is written in place)")
    if x.device.type == "cpu" and B and ((last_idx < 0) | (last_idx >= T)).any():
        bad = int(((last_idx < 0) | (last_idx >= T)).nonzero()[0])
        raise ValueError(f"last_idx[{bad}] = {int(last_idx[bad])} is outside [0, {T})")


def fused_update(x: torch.Tensor, out_pt: torch.Tensor, out_ft: torch.Tensor, alpha: float,
                 last_idx: torch.Tensor, acc_ptc: torch.Tensor, acc_ftc: torch.Tensor, *,
                 out: torch.Tensor | None = None, norms: torch.Tensor | None = None,
                 backend: str | None = None) -> torch.Tensor:
    """One decoder layer's TuCo update, fused (docs/math.md §4): returns x_{l+1} = out_pt + α·(out_ft − out_pt) and adds
    the last-token PTC = out_pt − x and FTC = out_ft − out_pt into the fp32 accumulators, in place.

    x, out_pt, out_ft are [B, T, d] in one of fp32, bf16, fp16 (out_pt, out_ft: the two blocks' outputs on x);
    arithmetic is fp32. ``acc_*`` of shape [B, T, d] instead of [B, d] accumulate every position (token maps).
    ``norms`` (fp32 [B, 4]) receives |PTC_l[b, last]|₁, |FTC_l[b, last]|₁, |acc_ptc[b(, last)]|₁,
    |acc_ftc[b(, last)]|₁ after the update. x_{l+1} is written into ``out`` when given (it may be x
    itself, or out_ft when α = 1, in which case nothing is written), else into a new tensor; it is
    returned in the input dtype. ``alpha`` is the layer's α (a per-layer schedule passes its value).
    """
    _check(x, out_pt, out_ft, last_idx, acc_ptc, acc_ftc, out, norms)
    alpha = float(alpha)
    chosen = resolve_backend(backend, x.device)
    if out is None:
        out = torch.empty_like(x, memory_format=torch.contiguous_format)
    if chosen == "torch":
        fused_update_reference(x, out_pt, out_ft, alpha, last_idx, acc_ptc, acc_ftc, out=out, norms=norms)
        return out
    x, out_pt, out_ft, last_idx = (t.contiguous() for t in (x, out_pt, out_ft, last_idx))  # no-ops normally
    if chosen == "triton":
        from .fused_update_triton import fused_update_triton  # imports triton: only when it runs

        fused_update_triton(x, out_pt, out_ft, alpha, last_idx, acc_ptc, acc_ftc, out, norms)
    else:  # "cpu" and "cuda": one op, dispatched by torch on the tensors' device
        torch.ops.tuco.fused_update(x, out_pt, out_ft, alpha, last_idx, acc_ptc, acc_ftc, out, norms)
    return out
