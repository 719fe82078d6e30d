"""Fused-update microbenchmark: every backend beside eager PyTorch and torch.compile of it, in one run.

For each [rows, d] and dtype it times every backend that runs on the device (the Triton interpreter is a
test vehicle and is not timed), the eager composition (tuco_kernels/ops/reference.py, what the engine
ran before the kernels), torch.compile of that same eager code, and the device's copy bandwidth
(``dst.copy_(src)`` of one tensor of the same size: 2 accesses per element), then prints a table and
appends to bench/results/kernels.csv with device, versions and date.

Byte counting, two ways, the same for every provider (so GB/s ratios are time ratios):
  gbps_4acc  the nominal count: 4 accesses per element (read x, out_pt, out_ft; write x_{l+1}).
  gbps_min   the bytes the update must move at least: 3 accesses per element (x_{l+1} = out_pt + α·FTC
             does not need x, which matters only on the last-token rows). pct_copy = gbps_min / copy
             bandwidth: the fraction of what the memory system delivered in the same run, not inflated
             by counting reads that a good implementation never makes.

    python bench/kernels.py [--device cpu|cuda] [--shapes 4096x4096,16384x5120,65536x8192]
                            [--dtypes bfloat16,float32] [--alpha 0.75] [--seq 512] [--repeats 5]
"""

from __future__ import annotations

import argparse
import gc

import torch
from common import append_rows, provenance, time_call

from tuco_kernels import ops
from tuco_kernels.ops.reference import fused_update_reference

DEFAULT_SHAPES = "4096x4096,16384x5120,65536x8192"


def mem_available_bytes(device: str) -> int:
    if device.startswith("cuda"):
        free, _ = torch.cuda.mem_get_info()
        return free
    for line in open("/proc/meminfo"):
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return 1 << 62


def bench_case(rows: int, d: int, dtype: torch.dtype, args, compiled_reference) -> list[dict]:
    device = args.device
    seq = min(args.seq, rows)
    B = rows // seq
    shape = (B, seq, d)
    gen = torch.Generator(device=device).manual_seed(0)
    x, pt, ft = (torch.randn(shape, generator=gen, device=device, dtype=dtype) for _ in range(3))
    last = torch.full((B,), seq - 1, dtype=torch.int64, device=device)    # left-padded batch
    acc_p, acc_f = torch.zeros(B, d, device=device), torch.zeros(B, d, device=device)
    out, norms = torch.empty_like(x), torch.empty(B, 4, device=device)
    elem_bytes = x.numel() * x.element_size()

    copy_s = time_call(lambda: out.copy_(ft), device, args.repeats, warmup=2)
    copy_gbps = 2 * elem_bytes / copy_s / 1e9
    timings = {}
    for backend in ops.available_backends(device):
        if backend == "torch" or (backend == "triton" and device == "cpu"):
            continue  # "torch" is timed as eager below; the Triton interpreter is for tests only
        timings[backend] = time_call(
            lambda b=backend: ops.fused_update(x, pt, ft, args.alpha, last, acc_p, acc_f, out=out, norms=norms,
                                               backend=b), device, args.repeats, warmup=2)
    if compiled_reference is not None:
        def compiled():
            compiled_reference(x, pt, ft, args.alpha, last, acc_p, acc_f, out=out, norms=norms)
        timings["torch.compile"] = time_call(compiled, device, args.repeats, warmup=2)  # warm-up compiles
    eager_peak = 4 * elem_bytes + 7 * x.numel() * 4          # inputs, out, and fp32 temporaries
    if eager_peak > 0.8 * mem_available_bytes(device):
        print(f"  [{rows}x{d} {dtype}] eager skipped: it would need about {eager_peak / 2**30:.0f} GiB; "
              f"{mem_available_bytes(device) / 2**30:.0f} GiB are free")
    else:
        def eager():
            fused_update_reference(x, pt, ft, args.alpha, last, acc_p, acc_f, out=out, norms=norms)
        timings["eager"] = time_call(eager, device, max(2, args.repeats // 2), warmup=1)
        gc.collect()

    info = provenance(device)
    eager_s, compiled_s = timings.get("eager"), timings.get("torch.compile")
    result = []
    for provider, seconds in timings.items():
        row = dict(**info, provider=provider, rows=rows, d=d, dtype=str(dtype).removeprefix("torch."),
                   alpha=args.alpha, time_ms=round(seconds * 1e3, 3),
                   gbps_4acc=round(4 * elem_bytes / seconds / 1e9, 1),
                   gbps_min=round(3 * elem_bytes / seconds / 1e9, 1), copy_gbps=round(copy_gbps, 1),
                   pct_copy=round(100 * 3 * elem_bytes / seconds / 1e9 / copy_gbps, 1),
                   speedup_vs_eager=round(eager_s / seconds, 2) if eager_s else "",
                   speedup_vs_compile=round(compiled_s / seconds, 2) if compiled_s else "")
        result.append(row)
    del x, pt, ft, out
    gc.collect()
    return result


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--shapes", default=DEFAULT_SHAPES, help="comma-separated ROWSxD")
    ap.add_argument("--dtypes", default="bfloat16,float32")
    ap.add_argument("--alpha", type=float, default=0.75)
    ap.add_argument("--seq", type=int, default=512, help="tokens per sequence (rows = batch × seq)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--no-compile", action="store_true", help="skip torch.compile of the eager code")
    ap.add_argument("--no-save", action="store_true", help="print only; do not append to the CSV")
    args = ap.parse_args()

    compiled_reference = None if args.no_compile else torch.compile(fused_update_reference, dynamic=False)
    info = provenance(args.device)
    print(f"{info['device']} | torch {info['torch']} | triton {info['triton']} | Python {info['python']} | "
          f"{info['date']}")
    print(f"backends here: {ops.backend_status(args.device)}")
    header = f"{'provider':>14} {'rows':>6} {'d':>5} {'dtype':>9} {'ms':>9} {'GB/s(4acc)':>10} " \
             f"{'GB/s(min)':>10} {'copy GB/s':>9} {'%copy':>6} {'×eager':>7} {'×compile':>8}"
    print(header)
    rows = []
    for spec in args.shapes.split(","):
        n_rows, d = (int(v) for v in spec.lower().split("x"))
        for name in args.dtypes.split(","):
            case = bench_case(n_rows, d, getattr(torch, name), args, compiled_reference)
            for r in case:
                print(f"{r['provider']:>14} {r['rows']:>6} {r['d']:>5} {r['dtype']:>9} {r['time_ms']:>9.2f} "
                      f"{r['gbps_4acc']:>10.1f} {r['gbps_min']:>10.1f} {r['copy_gbps']:>9.1f} "
                      f"{r['pct_copy']:>6.1f} {r['speedup_vs_eager']!s:>7} {r['speedup_vs_compile']!s:>8}")
            rows += case
    if not args.no_save:
        print(f"appended {len(rows)} rows to {append_rows('kernels', rows)}")


if __name__ == "__main__":
    main()
