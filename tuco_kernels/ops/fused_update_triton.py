"""The fused TuCo layer update as Triton kernels (the GPU path), registered as torch.ops.tuco.fused_update_triton.

The update (contract: :mod:`tuco_kernels.ops.reference`; math: docs/math.md §4) is split by the rows it
touches, so that the kernel that moves almost every byte is a plain vectorised stream:

    _accumulate_kernel   the B last-token rows (every row in all-tokens mode): reads x, out_pt, out_ft
                         there, adds PTC = out_pt − x and FTC = out_ft − out_pt into the fp32
                         accumulators and reduces the four L1 norms of each last row in registers.
    _stream_kernel       every element: x_{l+1} = out_pt + α·(out_ft − out_pt), 2 loads and 1 store
                         per element, flat over B·T·d, no per-row logic and no norm registers.

The accumulate kernel runs first, on the same stream, because ``out`` may be ``x`` itself (the engine
updates the stream in place) and x must be read before it is overwritten.

Exactness: every load is widened to fp32 at once and rounded to the output dtype only at the store. On
the GPU the arithmetic is written with explicitly rounded operations (``libdevice.sub_rn/mul_rn/add_rn``),
which no compiler contracts into an FMA -- also not when Inductor recompiles the kernel under
``torch.compile`` and drops launch options such as ``enable_fp_fusion``. So α·FTC is rounded before the
add, exactly as eager PyTorch does. The Triton interpreter (CPU tests) has no libdevice; there the plain
operators are used (numpy never contracts) and, since its bf16 store truncates, bf16 is rounded to
nearest even by hand (:func:`_round_to_bf16_rne`).
"""

# No `from __future__ import annotations`: torch.library.triton_op reads the annotations as types.
import functools
import os

import torch
import triton
import triton.language as tl
from triton.language.extra import libdevice

__all__ = ["compile_options", "fused_update_triton", "stream_config", "accumulate_config"]


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1"


@triton.jit
def _round_to_bf16_rne(y):
    """fp32 → fp32 holding the nearest-even bf16 value (the interpreter's own cast truncates)."""
    bits = y.to(tl.uint32, bitcast=True)
    bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
    rounded = bits.to(tl.float32, bitcast=True)
    return tl.where(y != y, y, rounded)


@triton.jit
def _sub(a, b, EXACT_RN: tl.constexpr):
    if EXACT_RN:
        return libdevice.sub_rn(a, b)
    else:
        return a - b


@triton.jit
def _add(a, b, EXACT_RN: tl.constexpr):
    if EXACT_RN:
        return libdevice.add_rn(a, b)
    else:
        return a + b


@triton.jit
def _mul(a, b, EXACT_RN: tl.constexpr):
    if EXACT_RN:
        return libdevice.mul_rn(a, b)
    else:
        return a * b


@triton.jit
def _stream_kernel(pt_ptr, ft_ptr, out_ptr, alpha, n_elements,
                   ALPHA_ONE: tl.constexpr, EXACT_RN: tl.constexpr, ROUND_BF16: tl.constexpr,
                   BLOCK: tl.constexpr):
    """out = out_pt + α·(out_ft − out_pt) over a flat range (α = 1: a bit-exact copy of out_ft)."""
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    m = offs < n_elements
    f_raw = tl.load(ft_ptr + offs, mask=m)
    if ALPHA_ONE:
        tl.store(out_ptr + offs, f_raw, mask=m)
    else:
        p = tl.load(pt_ptr + offs, mask=m).to(tl.float32)
        y = _add(p, _mul(alpha, _sub(f_raw.to(tl.float32), p, EXACT_RN), EXACT_RN), EXACT_RN)
        if ROUND_BF16:
            y = _round_to_bf16_rne(y)
        tl.store(out_ptr + offs, y.to(out_ptr.dtype.element_ty), mask=m)


@triton.jit
def _accumulate_kernel(x_ptr, pt_ptr, ft_ptr, last_ptr, acc_ptc_ptr, acc_ftc_ptr, norms_ptr, T, d,
                       ALL_TOKENS: tl.constexpr, HAS_NORMS: tl.constexpr, EXACT_RN: tl.constexpr,
                       BLOCK_D: tl.constexpr):
    """One program per accumulated row: acc_ptc += out_pt − x, acc_ftc += out_ft − out_pt, and the norms."""
    r = tl.program_id(0).to(tl.int64)
    if ALL_TOKENS:
        b = r // T
        row = r
        is_last = (r - b * T) == tl.load(last_ptr + b)
        acc_base = r * d
    else:
        b = r
        row = b * T + tl.load(last_ptr + b)
        is_last = True
        acc_base = b * d
    base = row * d
    n_ptc = tl.zeros([BLOCK_D], dtype=tl.float32)
    n_ftc = tl.zeros([BLOCK_D], dtype=tl.float32)
    n_acc_p = tl.zeros([BLOCK_D], dtype=tl.float32)
    n_acc_f = tl.zeros([BLOCK_D], dtype=tl.float32)
    for start in range(0, d, BLOCK_D):
        cols = start + tl.arange(0, BLOCK_D)
        m = cols < d
        xv = tl.load(x_ptr + base + cols, mask=m, other=0.0).to(tl.float32)
        p = tl.load(pt_ptr + base + cols, mask=m, other=0.0).to(tl.float32)
        f = tl.load(ft_ptr + base + cols, mask=m, other=0.0).to(tl.float32)
        ptc = _sub(p, xv, EXACT_RN)
        ftc = _sub(f, p, EXACT_RN)
        acc_p = _add(tl.load(acc_ptc_ptr + acc_base + cols, mask=m, other=0.0), ptc, EXACT_RN)
        acc_f = _add(tl.load(acc_ftc_ptr + acc_base + cols, mask=m, other=0.0), ftc, EXACT_RN)
        tl.store(acc_ptc_ptr + acc_base + cols, acc_p, mask=m)
        tl.store(acc_ftc_ptr + acc_base + cols, acc_f, mask=m)
        if HAS_NORMS:
            n_ptc += tl.where(m, tl.abs(ptc), 0.0)
            n_ftc += tl.where(m, tl.abs(ftc), 0.0)
            n_acc_p += tl.where(m, tl.abs(acc_p), 0.0)
            n_acc_f += tl.where(m, tl.abs(acc_f), 0.0)
    if HAS_NORMS:
        tl.store(norms_ptr + b * 4 + 0, tl.sum(n_ptc, axis=0), mask=is_last)
        tl.store(norms_ptr + b * 4 + 1, tl.sum(n_ftc, axis=0), mask=is_last)
        tl.store(norms_ptr + b * 4 + 2, tl.sum(n_acc_p, axis=0), mask=is_last)
        tl.store(norms_ptr + b * 4 + 3, tl.sum(n_acc_f, axis=0), mask=is_last)


# Launch configuration. The stream kernel moves 8 KiB of each input per program (4096 bf16/fp16 or 2048
# fp32 elements) with 8 warps: two 16-byte accesses per thread per input, all issued before the first
# use. ``TUCO_TRITON_STREAM`` ("BLOCK_BYTES:WARPS", e.g. "16384:8") overrides it, for bench/kernels.py's
# --sweep-configs; the numbers do not depend on it.
STREAM_BLOCK_BYTES = 8192
STREAM_WARPS = 8


def stream_config(element_size: int) -> tuple[int, int]:
    """(BLOCK elements per program, num_warps) of the stream kernel."""
    block_bytes, warps = STREAM_BLOCK_BYTES, STREAM_WARPS
    override = os.environ.get("TUCO_TRITON_STREAM")
    if override:
        block_bytes, warps = (int(v) for v in override.split(":"))
    return max(16, block_bytes // element_size), warps


def accumulate_config(d: int) -> tuple[int, int]:
    """(BLOCK_D, num_warps) of the accumulate kernel: ≤ 1024 columns per step, one row per program."""
    block = max(32, min(1 << max(0, (d - 1).bit_length()), 1024))
    return block, max(1, min(8, block // 128))


def compile_options(num_warps: int) -> dict:
    """GPU launch options. Exactness does not rest on them (the arithmetic is explicitly rounded); fusion is
    still switched off here so that an eager launch matches even a kernel edited without the _rn forms."""
    return {"num_warps": num_warps, "enable_fp_fusion": False}


@functools.cache
def _registered_op():
    from torch.library import triton_op, wrap_triton

    @triton_op("tuco::fused_update_triton", mutates_args={"acc_ptc", "acc_ftc", "out", "norms"})
    def fused_update_triton_op(x: torch.Tensor, out_pt: torch.Tensor, out_ft: torch.Tensor, alpha: float,
                               last_idx: torch.Tensor, acc_ptc: torch.Tensor, acc_ftc: torch.Tensor,
                               out: torch.Tensor, norms: torch.Tensor | None, write_out: bool) -> None:
        B, T, d = x.shape
        if B * T == 0 or d == 0:
            return
        interpreting = _interpreting()
        # interpreted kernels launch as they are: torch.compile cannot trace them anyway, and torch < 2.13's
        # wrap_triton refuses them ("only works on functions annotated with triton.jit"; the GPU image has 2.11)
        launch = (lambda kernel: kernel) if interpreting else wrap_triton
        exact_rn = not interpreting
        all_tokens = acc_ptc.dim() == 3
        block_d, acc_warps = accumulate_config(d)
        launch(_accumulate_kernel)[(B * T if all_tokens else B,)](
            x, out_pt, out_ft, last_idx, acc_ptc, acc_ftc, acc_ptc if norms is None else norms, T, d,
            ALL_TOKENS=all_tokens, HAS_NORMS=norms is not None, EXACT_RN=exact_rn, BLOCK_D=block_d,
            **({} if interpreting else compile_options(acc_warps)))
        if write_out:
            n = B * T * d
            block, warps = stream_config(x.element_size())
            launch(_stream_kernel)[(triton.cdiv(n, block),)](
                out_pt, out_ft, out, float(alpha), n,
                ALPHA_ONE=alpha == 1.0, EXACT_RN=exact_rn,
                ROUND_BF16=interpreting and x.dtype == torch.bfloat16, BLOCK=block,
                **({} if interpreting else compile_options(warps)))

    return fused_update_triton_op


def fused_update_triton(x, out_pt, out_ft, alpha, last_idx, acc_ptc, acc_ftc, out, norms) -> None:
    """Host entry: arguments already checked and contiguous (see tuco_kernels.ops.fused_update).

    With α = 1 and ``out`` being ``out_ft`` itself there is nothing to write (decided here, in eager
    code: the registered op cannot look at data pointers while torch.compile traces it). Kernels are
    launched on the tensors' own device, whatever the current device is.
    """
    write_out = not (float(alpha) == 1.0 and out.data_ptr() == out_ft.data_ptr())
    op = _registered_op()
    if x.device.type == "cuda" and x.device.index != torch.cuda.current_device():
        with torch.cuda.device(x.device):
            op(x, out_pt, out_ft, float(alpha), last_idx, acc_ptc, acc_ftc, out, norms, write_out)
    else:
        op(x, out_pt, out_ft, float(alpha), last_idx, acc_ptc, acc_ftc, out, norms, write_out)
