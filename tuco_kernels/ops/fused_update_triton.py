"""The fused TuCo layer update as a Triton kernel (the GPU path), registered as torch.ops.tuco.fused_update_triton.

Math (contract: :mod:`tuco_kernels.ops.reference`): per element of [B, T, d], in fp32,

    FTC = out_ft − out_pt,   x_{l+1} = out_pt + α·FTC   (α = 1: a bit-exact copy of out_ft)
    on each sequence's last-token row: PTC = out_pt − x,  acc_ptc[b] += PTC,  acc_ftc[b] += FTC,
    and the L1 norms |PTC|₁, |FTC|₁, |acc_ptc[b]|₁, |acc_ftc[b]|₁ into norms[b].

Why fusing pays (the byte count): the update is memory-bound. An ordinary row needs out_pt and out_ft
read once and x_{l+1} written once — 3 accesses per element; the eager composition makes about eleven,
several through fp32 temporaries twice the input's width. x and the accumulators are touched only on the
B last-token rows (every row in all-tokens mode), through masked loads that issue no memory traffic
elsewhere. One program handles one row, looping over d in BLOCK_D chunks, so the norms of a last-token
row are reduced in registers with no atomics and no second pass.

Exactness: every load is widened to fp32 at once and rounded to the output dtype only at the store;
the kernel is compiled with FMA contraction off, so α·FTC is rounded before the add as in eager PyTorch.
Under TRITON_INTERPRET=1 (CPU tests) the bf16 store truncates instead of rounding to nearest even, so
there the kernel rounds by hand (:func:`_round_to_bf16_rne`).
"""

# No `from __future__ import annotations`: torch.library.triton_op reads the annotations as types.
import functools
import os

import torch
import triton
import triton.language as tl

__all__ = ["compile_options", "fused_update_triton", "launch_config"]


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
def _fused_update_kernel(x_ptr, pt_ptr, ft_ptr, out_ptr, last_ptr, acc_ptc_ptr, acc_ftc_ptr, norms_ptr,
                         alpha, T, d,
                         ALPHA_ONE: tl.constexpr, WRITE_OUT: tl.constexpr, ALL_TOKENS: tl.constexpr,
                         HAS_NORMS: tl.constexpr, ROUND_BF16: tl.constexpr, BLOCK_D: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    b = row // T
    is_last = (row - b * T) == tl.load(last_ptr + b)
    base = row * d
    acc_base = base if ALL_TOKENS else b * d
    n_ptc = tl.zeros([BLOCK_D], dtype=tl.float32)
    n_ftc = tl.zeros([BLOCK_D], dtype=tl.float32)
    n_acc_p = tl.zeros([BLOCK_D], dtype=tl.float32)
    n_acc_f = tl.zeros([BLOCK_D], dtype=tl.float32)
    for start in range(0, d, BLOCK_D):
        cols = start + tl.arange(0, BLOCK_D)
        m = cols < d
        ft_raw = tl.load(ft_ptr + base + cols, mask=m, other=0.0)
        p = tl.load(pt_ptr + base + cols, mask=m, other=0.0).to(tl.float32)
        f = ft_raw.to(tl.float32)
        ftc = f - p
        if ALL_TOKENS:
            am = m
        else:
            am = m & is_last
        xv = tl.load(x_ptr + base + cols, mask=am, other=0.0).to(tl.float32)  # before the store: out may be x
        ptc = p - xv
        if WRITE_OUT:
            if ALPHA_ONE:
                tl.store(out_ptr + base + cols, ft_raw, mask=m)
            else:
                y = p + alpha * ftc
                if ROUND_BF16:
                    y = _round_to_bf16_rne(y)
                tl.store(out_ptr + base + cols, y.to(out_ptr.dtype.element_ty), mask=m)
        acc_p = tl.load(acc_ptc_ptr + acc_base + cols, mask=am, other=0.0) + ptc
        acc_f = tl.load(acc_ftc_ptr + acc_base + cols, mask=am, other=0.0) + ftc
        tl.store(acc_ptc_ptr + acc_base + cols, acc_p, mask=am)
        tl.store(acc_ftc_ptr + acc_base + cols, acc_f, mask=am)
        if HAS_NORMS:
            n_ptc += tl.where(am, tl.abs(ptc), 0.0)
            n_ftc += tl.where(am, tl.abs(ftc), 0.0)
            n_acc_p += tl.where(am, tl.abs(acc_p), 0.0)
            n_acc_f += tl.where(am, tl.abs(acc_f), 0.0)
    if HAS_NORMS:
        tl.store(norms_ptr + b * 4 + 0, tl.sum(n_ptc, axis=0), mask=is_last)
        tl.store(norms_ptr + b * 4 + 1, tl.sum(n_ftc, axis=0), mask=is_last)
        tl.store(norms_ptr + b * 4 + 2, tl.sum(n_acc_p, axis=0), mask=is_last)
        tl.store(norms_ptr + b * 4 + 3, tl.sum(n_acc_f, axis=0), mask=is_last)


def launch_config(d: int, element_size: int) -> tuple[int, int]:
    """(BLOCK_D, num_warps): one row per program, ≤ 8 KiB of each input per chunk, 16-byte accesses."""
    block = 1 << max(0, (d - 1).bit_length())
    block = max(64, min(block, 8192 // element_size))
    return block, max(1, min(16, block * element_size // (32 * 16)))


def compile_options(num_warps: int) -> dict:
    """GPU compile options. No FMA contraction: α·FTC is rounded before the add, as in the reference."""
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
        block, warps = launch_config(d, x.element_size())
        alpha_one = alpha == 1.0
        interpreting = _interpreting()
        options = {} if interpreting else compile_options(warps)
        wrap_triton(_fused_update_kernel)[(B * T,)](
            x, out_pt, out_ft, out, last_idx, acc_ptc, acc_ftc, acc_ptc if norms is None else norms,
            float(alpha), T, d,
            ALPHA_ONE=alpha_one, WRITE_OUT=write_out,
            ALL_TOKENS=acc_ptc.dim() == 3, HAS_NORMS=norms is not None,
            ROUND_BF16=interpreting and x.dtype == torch.bfloat16, BLOCK_D=block, **options)

    return fused_update_triton_op


def fused_update_triton(x, out_pt, out_ft, alpha, last_idx, acc_ptc, acc_ftc, out, norms) -> None:
    """Host entry: arguments already checked and contiguous (see tuco_kernels.ops.fused_update).

    With α = 1 and ``out`` being ``out_ft`` itself there is nothing to write (decided here, in eager
    code: the registered op cannot look at data pointers while torch.compile traces it).
    """
    write_out = not (float(alpha) == 1.0 and out.data_ptr() == out_ft.data_ptr())
    _registered_op()(x, out_pt, out_ft, float(alpha), last_idx, acc_ptc, acc_ftc, out, norms, write_out)
