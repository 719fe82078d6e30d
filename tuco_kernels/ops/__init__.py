"""The fused TuCo layer update and its backends. The engine calls :func:`fused_update`, nothing else.

Backends are chosen best-first among :func:`available_backends`; ``backend=`` or the environment
variable ``TUCO_BACKEND`` forces one. Today only the eager reference ("torch") exists; the compiled
backends (Triton, CUDA C++, C++ CPU) plug in here under the same contract.
"""

from __future__ import annotations

import os

import torch

from ..errors import TucoError
from .reference import fused_update_reference

_BACKENDS = {"torch": fused_update_reference}
_PREFERENCE = ("triton", "cuda", "cpu", "torch")


def available_backends() -> tuple[str, ...]:
    """Backends that can run on this machine, best first."""
    return tuple(b for b in _PREFERENCE if b in _BACKENDS)


def backend_status() -> dict[str, str]:
    """For every known backend, 'available' or the reason it is not (shown by ``tuco info``)."""
    reasons = {
        "triton": "not implemented yet",
        "cuda": "not implemented yet",
        "cpu": "not implemented yet",
    }
    return {b: ("available" if b in _BACKENDS else reasons.get(b, "unknown")) for b in _PREFERENCE}


def resolve_backend(backend: str | None = None) -> str:
    choice = backend or os.environ.get("TUCO_BACKEND") or None
    if choice is None:
        return available_backends()[0]
    if choice not in _BACKENDS:
        status = backend_status().get(choice, "unknown backend")
        raise TucoError(f"kernel backend {choice!r} cannot run here ({status}); available: {available_backends()}")
    return choice


def _check(x, out_pt, out_ft, last_idx, acc_ptc, acc_ftc, out, norms):
    if not (x.shape == out_pt.shape == out_ft.shape) or x.dim() != 3:
        raise ValueError(f"x, out_pt, out_ft must share one [B, T, d] shape; got {tuple(x.shape)}, "
                         f"{tuple(out_pt.shape)}, {tuple(out_ft.shape)}")
    if not (x.dtype == out_pt.dtype == out_ft.dtype):
        raise ValueError(f"x, out_pt, out_ft must share one dtype; got {x.dtype}, {out_pt.dtype}, {out_ft.dtype}")
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


def fused_update(x: torch.Tensor, out_pt: torch.Tensor, out_ft: torch.Tensor, alpha: float,
                 last_idx: torch.Tensor, acc_ptc: torch.Tensor, acc_ftc: torch.Tensor, *,
                 out: torch.Tensor | None = None, norms: torch.Tensor | None = None,
                 backend: str | None = None) -> torch.Tensor:
    """x_{l+1} = out_pt + α·(out_ft − out_pt), folding last-token PTC/FTC into fp32 accumulators.

    See :mod:`tuco_kernels.ops.reference` for the exact contract; every backend implements it.
    """
    _check(x, out_pt, out_ft, last_idx, acc_ptc, acc_ftc, out, norms)
    return _BACKENDS[resolve_backend(backend)](x, out_pt, out_ft, alpha, last_idx, acc_ptc, acc_ftc,
                                                out=out, norms=norms)
