"""Fused-update microbenchmark: every backend beside eager PyTorch and torch.compile of it, in one run.

For each [rows, d], dtype and norms setting it times every backend that runs on the device (the Triton
interpreter is a test vehicle and is not timed), the eager composition (tuco_kernels/ops/reference.py, what the
engine ran before the kernels), torch.compile of that same eager code, and the device's copy bandwidth
(``dst.copy_(src)`` of one tensor of the same size: 2 accesses per element), all in the same process. On a GPU
each time is ``triton.testing.do_bench``'s median (CUDA events, L2 flushed between calls), so Python dispatch
does not count. Every backend's output is checked bit for bit against the reference before it is timed.
Prints a table and target lines and appends to <results>/kernels.csv with device, versions and date.

Byte counting, two ways, the same for every provider (so GB/s ratios are time ratios):
  gbps_4acc  the nominal count: 4 accesses per element (read x, out_pt, out_ft; write x_{l+1}).
  gbps_min   the bytes the update must move at least: 3 accesses per element (x_{l+1} = out_pt + α·FTC
             does not need x, which matters only on the last-token rows). pct_copy = gbps_min / copy
             bandwidth: the fraction of what the memory system delivered in the same run.

``--sweep-configs`` also times the Triton stream kernel under other launch configurations (block bytes ×
warps) at the first shape and writes <results>/kernel_configs.csv: the data for choosing
``fused_update_triton.STREAM_BLOCK_BYTES`` / ``STREAM_WARPS``.

    python bench/kernels.py [--device cpu|cuda] [--shapes 4096x4096,16384x5120,65536x8192]
                            [--dtypes bfloat16,float32] [--norms with|without|both] [--alpha 0.75] [--seq 512]
"""

from __future__ import annotations

import argparse
import gc

import torch
from common import append_rows, provenance, target, time_call

from tuco_kernels import ops
from tuco_kernels.ops.reference import fused_update_reference

DEFAULT_SHAPES = "4096x4096,16384x5120,65536x8192"
TARGET_SHAPE = (16384, 5120)   # a 13B layer's hidden states for 16384 tokens (issue 11's targets)


def mem_available_bytes(device: str) -> int:
    if device.startswith("cuda"):
        free, _ = torch.cuda.mem_get_info()
        return free
    for line in open("/proc/meminfo"):
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return 1 << 62


class Case:
    """Inputs of one [rows, d] dtype case: B sequences of ``seq`` tokens, left-padded (last token at the end)."""

    def __init__(self, rows: int, d: int, dtype: torch.dtype, device: str, seq: int, norms: bool):
        seq = min(seq, rows)
        self.B = rows // seq
        shape = (self.B, seq, d)
        gen = torch.Generator(device=device).manual_seed(0)
        self.x, self.pt, self.ft = (torch.randn(shape, generator=gen, device=device, dtype=dtype) for _ in range(3))
        self.last = torch.full((self.B,), seq - 1, dtype=torch.int64, device=device)
        self.acc_p, self.acc_f = torch.zeros(self.B, d, device=device), torch.zeros(self.B, d, device=device)
        self.out = torch.empty_like(self.x)
        self.norms = torch.empty(self.B, 4, device=device) if norms else None
        self.elem_bytes = self.x.numel() * self.x.element_size()

    def run(self, alpha, backend):
        return ops.fused_update(self.x, self.pt, self.ft, alpha, self.last, self.acc_p, self.acc_f, out=self.out,
                                norms=self.norms, backend=backend)

    def exact(self, alpha, backend) -> bool:
        """The backend's x_{l+1} and accumulators equal the reference's, bit for bit."""
        acc = [torch.zeros_like(self.acc_p) for _ in range(4)]
        out = torch.full_like(self.x, float("nan"))
        ops.fused_update(self.x, self.pt, self.ft, alpha, self.last, acc[0], acc[1], out=out, backend=backend)
        ref = fused_update_reference(self.x, self.pt, self.ft, alpha, self.last, acc[2], acc[3])
        return torch.equal(out, ref) and torch.equal(acc[0], acc[2]) and torch.equal(acc[1], acc[3])


def bench_case(rows: int, d: int, dtype: torch.dtype, norms: bool, args, compiled_reference) -> list[dict]:
    device = args.device
    c = Case(rows, d, dtype, device, args.seq, norms)
    copy_s = time_call(lambda: c.out.copy_(c.ft), device, args.repeats, warmup=2)
    copy_gbps = 2 * c.elem_bytes / copy_s / 1e9
    timings, exact = {}, {}
    for backend in ops.available_backends(device):
        if backend == "torch" or (backend == "triton" and device == "cpu"):
            continue  # "torch" is timed as eager below; the Triton interpreter is for tests only
        exact[backend] = c.exact(args.alpha, backend)
        timings[backend] = time_call(lambda b=backend: c.run(args.alpha, b), device, args.repeats, warmup=2)
    if compiled_reference is not None:
        def compiled():
            compiled_reference(c.x, c.pt, c.ft, args.alpha, c.last, c.acc_p, c.acc_f, out=c.out, norms=c.norms)
        timings["torch.compile"] = time_call(compiled, device, args.repeats, warmup=2)  # warm-up compiles
    eager_peak = 4 * c.elem_bytes + 7 * c.x.numel() * 4          # inputs, out, and fp32 temporaries
    if eager_peak > 0.8 * mem_available_bytes(device):
        print(f"  [{rows}x{d} {dtype}] eager skipped: it would need about {eager_peak / 2**30:.0f} GiB; "
              f"{mem_available_bytes(device) / 2**30:.0f} GiB are free")
    else:
        def eager():
            fused_update_reference(c.x, c.pt, c.ft, args.alpha, c.last, c.acc_p, c.acc_f, out=c.out, norms=c.norms)
        timings["eager"] = time_call(eager, device, max(2, args.repeats // 2), warmup=1)

    info = provenance(device)
    eager_s, compiled_s = timings.get("eager"), timings.get("torch.compile")
    result = []
    for provider, seconds in timings.items():
        result.append(dict(**info, provider=provider, rows=rows, d=d, dtype=str(dtype).removeprefix("torch."),
                           norms=norms, alpha=args.alpha, time_ms=round(seconds * 1e3, 4),
                           gbps_4acc=round(4 * c.elem_bytes / seconds / 1e9, 1),
                           gbps_min=round(3 * c.elem_bytes / seconds / 1e9, 1), copy_gbps=round(copy_gbps, 1),
                           pct_copy=round(100 * 3 * c.elem_bytes / seconds / 1e9 / copy_gbps, 1),
                           speedup_vs_eager=round(eager_s / seconds, 2) if eager_s else "",
                           speedup_vs_compile=round(compiled_s / seconds, 2) if compiled_s else "",
                           bit_exact=exact.get(provider, "")))
    c = None   # free the case's tensors before the next one
    gc.collect()
    return result


def check_targets(rows: list[dict]) -> None:
    """Issue 11's kernel targets at the 13B shape, with and without norms (GPU only)."""
    for norms in (True, False):
        at = {r["provider"]: r for r in rows if (r["rows"], r["d"]) == TARGET_SHAPE and r["dtype"] == "bfloat16"
              and r["norms"] == norms}
        tri = at.get("triton")
        if tri is None:
            continue
        tag = f"16384x5120 bf16 {'with' if norms else 'without'} norms"
        target(f"triton % of copy bandwidth, {tag}", tri["pct_copy"], "≥ 90", tri["pct_copy"] >= 90, "{:.1f}")
        if tri["speedup_vs_eager"] != "":
            target(f"triton vs eager, {tag}", tri["speedup_vs_eager"], "≥ 3×", tri["speedup_vs_eager"] >= 3)
        if tri["speedup_vs_compile"] != "":
            target(f"triton vs torch.compile, {tag}", tri["speedup_vs_compile"], "≥ 1×", tri["speedup_vs_compile"] >= 1)
        if "cuda" in at:
            ratio = at["cuda"]["time_ms"] / tri["time_ms"]
            target(f"cuda time / triton time, {tag}", ratio, "≤ 1.10", ratio <= 1.10)
        for provider in ("triton", "cuda"):
            if provider in at:
                target(f"{provider} bit-exact to the reference, {tag}", at[provider]["bit_exact"] is True, "True",
                       at[provider]["bit_exact"] is True, "{}")


def sweep_configs(args, shape) -> None:
    """Time the Triton stream kernel under other launch configurations (no norms: the streaming part)."""
    from tuco_kernels.ops import fused_update_triton as ft

    rows, d = shape
    saved = ft.STREAM_BLOCK_BYTES, ft.STREAM_WARPS
    out = []
    for dtype in (torch.bfloat16, torch.float32):
        c = Case(rows, d, dtype, args.device, args.seq, norms=False)
        copy_s = time_call(lambda: c.out.copy_(c.ft), args.device, args.repeats)
        for block_bytes in (4096, 8192, 16384, 32768):
            for warps in (4, 8, 16):
                ft.STREAM_BLOCK_BYTES, ft.STREAM_WARPS = block_bytes, warps
                seconds = time_call(lambda: c.run(args.alpha, "triton"), args.device, args.repeats)
                out.append(dict(**provenance(args.device), dtype=str(dtype).removeprefix("torch."), rows=rows, d=d,
                                block_bytes=block_bytes, warps=warps, time_ms=round(seconds * 1e3, 4),
                                pct_copy=round(100 * 1.5 * copy_s / seconds, 1),
                                default=(block_bytes, warps) == saved))
                print(f"  stream config {block_bytes:>6} B × {warps:>2} warps, {out[-1]['dtype']:>8}: "
                      f"{seconds * 1e3:8.4f} ms, {out[-1]['pct_copy']:5.1f}% of copy", flush=True)
        del c
    ft.STREAM_BLOCK_BYTES, ft.STREAM_WARPS = saved
    print(f"appended {len(out)} rows to {append_rows('kernel_configs', out)}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--shapes", default=DEFAULT_SHAPES, help="comma-separated ROWSxD")
    ap.add_argument("--dtypes", default="bfloat16,float32")
    ap.add_argument("--norms", choices=("with", "without", "both"), default="with",
                    help="time with the per-layer L1 norms (--layers), without, or both")
    ap.add_argument("--alpha", type=float, default=0.75)
    ap.add_argument("--seq", type=int, default=512, help="tokens per sequence (rows = batch × seq)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--no-compile", action="store_true", help="skip torch.compile of the eager code")
    ap.add_argument("--sweep-configs", action="store_true", help="also time other Triton launch configurations")
    ap.add_argument("--no-save", action="store_true", help="print only; do not append to the CSV")
    args = ap.parse_args()

    compiled_reference = None if args.no_compile else torch.compile(fused_update_reference, dynamic=False)
    info = provenance(args.device)
    print(f"{info['device']} | torch {info['torch']} | triton {info['triton']} | Python {info['python']} | "
          f"{info['date']}")
    print(f"backends here: {ops.backend_status(args.device)}", flush=True)
    print(f"{'provider':>14} {'rows':>6} {'d':>5} {'dtype':>9} {'norms':>5} {'ms':>9} {'GB/s(4acc)':>10} "
          f"{'GB/s(min)':>10} {'copy GB/s':>9} {'%copy':>6} {'×eager':>7} {'×compile':>8} {'exact':>5}", flush=True)
    rows = []
    shapes = [tuple(int(v) for v in spec.lower().split("x")) for spec in args.shapes.split(",")]
    norms_settings = {"with": [True], "without": [False], "both": [True, False]}[args.norms]
    for n_rows, d in shapes:
        for name in args.dtypes.split(","):
            for norms in norms_settings:
                case = bench_case(n_rows, d, getattr(torch, name), norms, args, compiled_reference)
                for r in case:
                    print(f"{r['provider']:>14} {r['rows']:>6} {r['d']:>5} {r['dtype']:>9} {str(r['norms']):>5} "
                          f"{r['time_ms']:>9.3f} {r['gbps_4acc']:>10.1f} {r['gbps_min']:>10.1f} {r['copy_gbps']:>9.1f} "
                          f"{r['pct_copy']:>6.1f} {r['speedup_vs_eager']!s:>7} {r['speedup_vs_compile']!s:>8} "
                          f"{r['bit_exact']!s:>5}", flush=True)
                if not args.no_save:
                    append_rows("kernels", case)   # each case as soon as it is measured
                rows += case
    if args.device.startswith("cuda"):
        check_targets(rows)
    if args.sweep_configs and args.device.startswith("cuda"):
        sweep_configs(args, shapes[0])


if __name__ == "__main__":
    main()
