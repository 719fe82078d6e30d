"""Memory-constrained scoring of a Llama-2-13B-shaped pair: streamed vs resident vs prompt-by-prompt, in one run.

The pair has random weights (hidden 5120, 40 layers, intermediate 13824, bf16; ~13B parameters per model),
generated deterministically per tensor on the device -- the resident models and the pinned host copy the
streamer reads hold the same values, so their TuCo is compared too. Measured:

    pinned host-to-device bandwidth     one 1 GiB copy, median of 5
    resident                            both models on the GPU (when they fit), prompt-major
    streamed at 8 GiB and 24 GiB        offload="cpu" (pinned host), layer-major, max_gpu_memory; peak memory
                                        asserted ≤ budget (torch.cuda.max_memory_allocated) under
                                        set_per_process_memory_fraction
    prompt-by-prompt baseline           AirLLM-style: every prompt streams every layer, no prefetch, the copy on
                                        the compute stream (on --baseline-prompts prompts; tokens/s compares)

Targets (issue 4): at 8 GiB ≥ 80% of resident throughput, copies ≥ 80% of the pinned bandwidth, ≥ 50× the
baseline. Prints a table and appends to bench/results/stream.csv with device and versions.

    python bench/stream.py                      # the 13B shape; needs a CUDA GPU and ~60 GB of host memory
    python bench/stream.py --small --device cpu # a tiny shape, to check the script itself (CI runs this)
"""

from __future__ import annotations

import argparse
import time
import zlib

import torch
from common import append_rows, provenance

import tuco_kernels as tk
from tuco_kernels.checkpoint import TensorSource
from tuco_kernels.plan import parse_size
from tuco_kernels.skeleton import empty_model
from tuco_kernels.streamed_pair import streamed_pair

GiB = 2**30


class RandomSource(TensorSource):
    """Deterministic random weights by name (std 0.02; norms 1), generated on ``device`` and copied out."""

    def __init__(self, frame, seed: int, device: str):
        self.where = f"random weights (seed {seed})"
        self.specs = {n: (p.dtype, tuple(p.shape)) for n, p in frame.named_parameters(remove_duplicate=False)}
        self.seed, self.device = seed, torch.device(device)

    def names(self):
        return list(self.specs)

    def spec(self, name):
        return self.specs[name]

    def tensor(self, name, dtype):
        _, shape = self.specs[name]
        if "norm" in name:
            return torch.ones(shape, dtype=dtype, device=self.device)
        g = torch.Generator(self.device).manual_seed(self.seed * 1_000_003 + zlib.crc32(name.encode()))
        return (torch.randn(shape, generator=g, device=self.device) * 0.02).to(dtype)

    def read_into(self, name, dest):
        dest.copy_(self.tensor(name, dest.dtype))


def make_config(small: bool):
    from transformers import LlamaConfig

    if small:
        return LlamaConfig(vocab_size=320, hidden_size=256, intermediate_size=688, num_hidden_layers=4,
                           num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=512)
    return LlamaConfig(vocab_size=32000, hidden_size=5120, intermediate_size=13824, num_hidden_layers=40,
                       num_attention_heads=40, num_key_value_heads=40, max_position_embeddings=4096)


def resident_model(config, source: RandomSource, dtype, device):
    model = empty_model(config, dtype).to_empty(device=device)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(source.tensor(name, dtype))
    for buf, fresh in zip(model.buffers(), empty_model(config, dtype).buffers()):  # to_empty left them garbage
        buf.copy_(fresh)
    return model.eval()


def pinned_h2d_gbps(device, nbytes=GiB) -> float:
    host = torch.empty(nbytes, dtype=torch.uint8, pin_memory=True)
    dev = torch.empty(nbytes, dtype=torch.uint8, device=device)
    times = []
    for _ in range(6):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        dev.copy_(host, non_blocking=True)
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return nbytes / sorted(times[1:])[len(times[1:]) // 2] / 1e9


def timed_score(pair, prompts, device, **kw):
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    result = tk.score(pair, prompts, **kw)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    return result, seconds


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--small", action="store_true", help="tiny shape (checks the script; numbers meaningless)")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--prompts", type=int, default=512)
    ap.add_argument("--tokens", type=int, default=256)
    ap.add_argument("--baseline-prompts", type=int, default=4)
    ap.add_argument("--budgets", default="8GiB,24GiB")
    ap.add_argument("--batch-tokens", type=int, default=8192)
    ap.add_argument("--no-resident", action="store_true")
    ap.add_argument("--no-csv", action="store_true")
    args = ap.parse_args()
    if args.small:
        args.prompts, args.tokens, args.budgets = min(args.prompts, 16), min(args.tokens, 32), ""
    cuda = args.device.startswith("cuda")
    dtype = torch.bfloat16 if cuda else torch.float32
    config = make_config(args.small)
    frame = empty_model(config, dtype)
    n_params = sum(p.numel() for p in frame.parameters())
    sources = [RandomSource(frame, seed, args.device) for seed in (0, 1)]
    g = torch.Generator().manual_seed(0)
    prompts = [{"id": i, "input_ids": torch.randint(3, config.vocab_size, (args.tokens,), generator=g).tolist()}
               for i in range(args.prompts)]
    n_tokens = args.prompts * args.tokens
    rows, prov = [], provenance(args.device)
    print(f"{prov['device']}: pair of {n_params / 1e6:,.0f}M-parameter models ({dtype}), "
          f"{args.prompts} prompts × {args.tokens} tokens")

    def record(setting, seconds, tokens, result=None, **extra):
        row = dict(prov, setting=setting, params_per_model=n_params, prompts=args.prompts, tokens_per_prompt=args.tokens,
                   seconds=round(seconds, 4), tokens_per_s=round(tokens / seconds, 1), **extra)
        if result is not None and "profile" in result.meta:
            p = result.meta["profile"]
            row.update(h2d_gbps=round(p.h2d_gb_per_s, 2), copy_s=round(p.seconds_copy, 3),
                       compute_s=round(p.seconds_compute, 3), overlap=round(p.overlap, 3))
        if result is not None and "peak_gpu_memory" in result.meta:
            row["peak_gib"] = round(result.meta["peak_gpu_memory"] / GiB, 3)
        rows.append(row)
        return row

    bw = pinned_h2d_gbps(args.device) if cuda else float("nan")
    if cuda:
        print(f"pinned host-to-device copy: {bw:.1f} GB/s")

    reference = None
    if not args.no_resident:
        try:
            pt = resident_model(config, sources[0], dtype, args.device)
            ft = resident_model(config, sources[1], dtype, args.device)
            pair = tk.load_pair(pt, ft)
            tk.score(pair, prompts[:2])  # warm-up
            reference, seconds = timed_score(pair, prompts, args.device, batch_tokens=args.batch_tokens)
            record("resident", seconds, n_tokens, reference,
                   peak_gib=round(torch.cuda.max_memory_allocated() / GiB, 3) if cuda else None)
            del pair, pt, ft
        except torch.OutOfMemoryError:
            print("resident: does not fit on this device")
        if cuda:
            torch.cuda.empty_cache()

    streamed = streamed_pair(sources[0], config, sources[1], config, dtype=dtype, device=args.device, offload="cpu")
    budgets = [b for b in args.budgets.split(",") if b] if cuda else []
    for budget in budgets or [None]:
        limit = parse_size(budget) if budget else None
        if limit is not None:
            torch.cuda.empty_cache()
            torch.cuda.set_per_process_memory_fraction(min(1.0, limit / torch.cuda.get_device_properties(
                torch.device(args.device)).total_memory))
        try:
            result, seconds = timed_score(streamed, prompts, args.device, schedule="layer", profile=True,
                                          max_gpu_memory=budget, batch_tokens=args.batch_tokens)
        finally:
            if limit is not None:
                torch.cuda.set_per_process_memory_fraction(1.0)
        extra = {"plan": result.meta["plan"]}
        if reference is not None:
            extra["max_tuco_diff_vs_resident"] = float(abs(result.tuco - reference.tuco).max())
        record(f"streamed, layer-major, {budget or 'no budget'}", seconds, n_tokens, result, **extra)
        if limit is not None:
            assert result.meta["peak_gpu_memory"] <= limit, (result.meta["peak_gpu_memory"], limit)

    base_prompts = prompts[: args.baseline_prompts]
    baseline = streamed_pair(sources[0], config, sources[1], config, dtype=dtype, device=args.device, offload="cpu",
                             prefetch=False)
    result, seconds = timed_score(baseline, base_prompts, args.device, schedule="prompt", batch_tokens=args.tokens,
                                  profile=True)
    record("prompt-by-prompt streaming, no prefetch (AirLLM-style)", seconds, len(base_prompts) * args.tokens, result)

    by = {r["setting"]: r for r in rows}
    res = by.get("resident")
    base = rows[-1]
    print(f"\n{'setting':<58} {'tokens/s':>10} {'peak GiB':>9} {'H2D GB/s':>9} {'overlap':>8}")
    for r in rows:
        print(f"{r['setting']:<58} {r['tokens_per_s']:>10.1f} {r.get('peak_gib') or float('nan'):>9.2f} "
              f"{r.get('h2d_gbps', float('nan')):>9.2f} {r.get('overlap', float('nan')):>8.2f}")
    for r in rows:
        if r["setting"].startswith("streamed"):
            parts = [f"{r['tokens_per_s'] / base['tokens_per_s']:.1f}× the baseline"]
            if res is not None:
                parts.insert(0, f"{100 * r['tokens_per_s'] / res['tokens_per_s']:.0f}% of resident")
            if cuda and r.get("h2d_gbps"):
                parts.append(f"copies at {100 * r['h2d_gbps'] / bw:.0f}% of pinned bandwidth")
            if "max_tuco_diff_vs_resident" in r:
                parts.append(f"TuCo max |diff| vs resident {r['max_tuco_diff_vs_resident']:.2e}")
            print(f"{r['setting']}: " + ", ".join(parts))
            r.update(vs_baseline=round(r["tokens_per_s"] / base["tokens_per_s"], 2),
                     vs_resident=round(r["tokens_per_s"] / res["tokens_per_s"], 3) if res else None,
                     h2d_vs_pinned=round(r["h2d_gbps"] / bw, 3) if cuda and r.get("h2d_gbps") else None)
    for r in rows:
        r["pinned_h2d_gbps"] = round(bw, 2) if cuda else None
    if not args.no_csv:
        print(f"appended to {append_rows('stream', rows)}")


if __name__ == "__main__":
    main()
