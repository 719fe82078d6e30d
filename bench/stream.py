"""Memory-constrained scoring of a Llama-2-13B-shaped pair: resident vs streamed vs prompt-by-prompt, in one run.

The pair has random weights (hidden 5120, 40 layers, intermediate 13824, bf16; ~13B parameters per model),
generated deterministically per tensor on the device, so the resident models and the host copy the streamer
reads hold the same values and their TuCo is compared too. In order, each printed as soon as it is measured:

    pinned host-to-device bandwidth     a 1 GiB copy from page-locked memory, CUDA events, median of 5
    resident                            both models on the GPU (when they fit), prompt-major; then freed
    streamed at 8 GiB and 24 GiB        offload="cpu" (one page-locked arena per model, exactly its size),
                                        layer-major, max_gpu_memory; peak memory asserted ≤ budget under
                                        set_per_process_memory_fraction
    prompt-by-prompt baseline           the same streamed pair with prefetch off, AirLLM-style: each prompt
                                        streams every layer, the copy on the compute stream (--baseline-prompts)
    LoRA (issue 23)                     the base streamed (offload="cpu") with a random r = 8 PEFT LoRA
                                        adapter unmerged around each layer, then --lora-adapters of them in one
                                        sweep per layer, on --lora-prompts prompts, at the first budget
    disk                                an --disk-layers pair of the same width written to local safetensors,
                                        evicted from the page cache, streamed with offload="disk"

Targets (issue 11): at 8 GiB ≥ 80% of resident throughput, copies ≥ 80% of the pinned bandwidth, ≥ 50× the
baseline. Appends to <results>/stream.csv with device and versions.

    python bench/stream.py                       # the 13B shape: a CUDA GPU, ~60 GB of host memory, ~12 GB of disk
    python bench/stream.py --small --device cpu  # a tiny shape, to check the script itself (CI runs this)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import torch
from common import append_rows, llama_config, provenance, random_model, random_tensor, target
from safetensors.torch import save_file

import tuco_kernels as tk
from tuco_kernels.offload.checkpoint import TensorSource
from tuco_kernels.core.budget import parse_size
from tuco_kernels.offload.skeleton import empty_model
from tuco_kernels.offload.streamed_pair import streamed_pair

GiB = 2**30


class RandomSource(TensorSource):
    """Deterministic random weights by name (bench/common.random_tensor), generated on ``device``, copied out."""

    def __init__(self, frame, seed: int, device: str):
        self.where = f"random weights (seed {seed})"
        self.specs = {n: (p.dtype, tuple(p.shape)) for n, p in frame.named_parameters(remove_duplicate=False)}
        self.seed, self.device = seed, torch.device(device)

    def names(self):
        return list(self.specs)

    def spec(self, name):
        return self.specs[name]

    def read_into(self, name, dest):
        dest.copy_(random_tensor(name, self.specs[name][1], dest.dtype, self.device, self.seed))


def pinned_h2d_gbps(device, nbytes=GiB) -> float:
    host = torch.empty(nbytes, dtype=torch.uint8, pin_memory=True)   # a power of two: no rounding waste
    dev = torch.empty(nbytes, dtype=torch.uint8, device=device)
    times = []
    for _ in range(6):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        dev.copy_(host, non_blocking=True)
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    return nbytes / sorted(times[1:])[len(times[1:]) // 2] / 1e9


def timed_score(pair, prompts, device, **kw):
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    result = tk.score(pair, prompts, **kw)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return result, time.perf_counter() - t0


def streamed_under_budget(pair, prompts, args, budget):
    """(result, seconds) of a layer-major profiled score under ``budget`` ("8GiB" or None), the process's device
    memory capped at it while it runs (so a plan that overshoots fails instead of borrowing the rest of the GPU)."""
    limit = parse_size(budget) if budget else None
    if limit is not None:
        torch.cuda.empty_cache()
        torch.cuda.set_per_process_memory_fraction(min(1.0, limit / torch.cuda.get_device_properties(
            torch.device(args.device)).total_memory))
    try:
        return timed_score(pair, prompts, args.device, schedule="layer", profile=True, max_gpu_memory=budget,
                           batch_tokens=args.batch_tokens)
    finally:
        if limit is not None:
            torch.cuda.set_per_process_memory_fraction(1.0)


def write_checkpoint(directory: Path, config, dtype, seed: int, device: str) -> int:
    """A random model as sharded safetensors (one shard per layer, as HF shards), flushed and evicted from the page
    cache so that reading it back measures the disk. Returns the bytes written."""
    frame = empty_model(config, dtype)
    groups: dict[str, dict] = {}
    for name, p in frame.named_parameters():
        key = f"layer{int(name.split('.')[2]):03d}" if name.startswith("model.layers.") else "outer"
        groups.setdefault(key, {})[name] = random_tensor(name, p.shape, dtype, device, seed).cpu()
    directory.mkdir(parents=True, exist_ok=True)
    weight_map, total = {}, 0
    for key, tensors in groups.items():
        file = f"model-{key}.safetensors"
        save_file(tensors, str(directory / file), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(tensors, file))
        total += sum(t.numel() * t.element_size() for t in tensors.values())
        fd = os.open(directory / file, os.O_RDONLY)
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)   # drop its clean pages: the read comes from disk
        os.close(fd)
    (directory / "model.safetensors.index.json").write_text(json.dumps({"metadata": {"total_size": total},
                                                                        "weight_map": weight_map}))
    config.save_pretrained(directory)
    return total


def write_lora(directory: Path, config, seed: int, rank: int = 8) -> Path:
    """A PEFT LoRA adapter of the config's model (r = ``rank`` on every attention and MLP projection of every layer;
    A and B random, so that it changes the output), written as PEFT writes one: its LoraConfig's own
    adapter_config.json and the tensors under PEFT's names in adapter_model.safetensors. No base model is built."""
    from peft import LoraConfig

    targets = {"self_attn.q_proj": (config.hidden_size, config.num_attention_heads * config.head_dim),
               "self_attn.k_proj": (config.hidden_size, config.num_key_value_heads * config.head_dim),
               "self_attn.v_proj": (config.hidden_size, config.num_key_value_heads * config.head_dim),
               "self_attn.o_proj": (config.num_attention_heads * config.head_dim, config.hidden_size),
               "mlp.gate_proj": (config.hidden_size, config.intermediate_size),
               "mlp.up_proj": (config.hidden_size, config.intermediate_size),
               "mlp.down_proj": (config.intermediate_size, config.hidden_size)}
    g = torch.Generator().manual_seed(seed)
    tensors = {}
    for l in range(config.num_hidden_layers):
        for module, (d_in, d_out) in targets.items():
            key = f"base_model.model.model.layers.{l}.{module}"
            tensors[f"{key}.lora_A.weight"] = torch.randn(rank, d_in, generator=g) / d_in ** 0.5
            tensors[f"{key}.lora_B.weight"] = torch.randn(d_out, rank, generator=g) * 0.02
    directory.mkdir(parents=True, exist_ok=True)
    LoraConfig(r=rank, lora_alpha=2 * rank, task_type="CAUSAL_LM",
               target_modules=sorted({m.split(".")[-1] for m in targets})).save_pretrained(directory)
    save_file(tensors, str(directory / "adapter_model.safetensors"), metadata={"format": "pt"})
    return directory


def lora_rows(args, config, dtype, base_source, prompts, record, *, budget, full) -> None:
    """Issue 23's rows: the base streamed once with one LoRA adapter unmerged around each layer (a shared pair), and
    with ``--lora-adapters`` adapters in one sweep per layer (a pair set), on ``--lora-prompts`` prompts."""
    from tuco_kernels.core.pair_set import PairSet
    from tuco_kernels.models.shared import streamed_finetuned
    from tuco_kernels.offload.streamed_pair import streamed_pair_set

    root = Path(tempfile.mkdtemp(prefix="tuco-lora-bench-"))
    try:
        adapters = [write_lora(root / f"lora{k}", config, seed=k) for k in range(args.lora_adapters)]
        some = prompts[: args.lora_prompts]
        n_tokens = len(some) * args.tokens
        for n in sorted({1, args.lora_adapters}):
            builders = [(lambda frame, d=d: streamed_finetuned(frame, d, False, args.device)) for d in adapters[:n]]
            t0 = time.perf_counter()
            pair = streamed_pair_set(base_source, config, builders, [d.name for d in adapters[:n]], dtype=dtype,
                                     device=args.device, offload="cpu")
            assert isinstance(pair, PairSet), pair
            loaded = time.perf_counter() - t0
            limit = parse_size(budget) if budget else None
            result, seconds = streamed_under_budget(pair, some, args, budget)
            what = "1 LoRA adapter (shared, unmerged)" if n == 1 else f"{n} LoRA adapters in one sweep per layer"
            extra = {"load_s": round(loaded, 2), "fine_tunes": n,
                     "host_gib": round(pair.streamer.host_bytes / GiB, 3)}
            if full is not None:   # the same base streamed with a full second model: (tokens × fine-tunes)/s
                extra["vs_full_pair"] = round(n * n_tokens / seconds / full["tokens_per_s"], 3)
            record(f"streamed base + {what}, layer-major, {budget or 'no budget'}", seconds, n * n_tokens, result,
                   **extra)
            if limit is not None:
                assert result.meta["peak_gpu_memory"] <= limit, (result.meta["peak_gpu_memory"], limit)
            pair.close()
            del pair
    finally:
        shutil.rmtree(root, ignore_errors=True)


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--small", action="store_true", help="tiny shape (checks the script; numbers meaningless)")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--prompts", type=int, default=512)
    ap.add_argument("--tokens", type=int, default=256)
    ap.add_argument("--baseline-prompts", type=int, default=4)
    ap.add_argument("--budgets", default="8GiB,24GiB")
    ap.add_argument("--batch-tokens", type=int, default=8192)
    ap.add_argument("--disk-layers", type=int, default=8, help="layers of the disk-streamed pair (0: skip)")
    ap.add_argument("--disk-dir", help="where to write it (default: a temporary folder, removed afterwards)")
    ap.add_argument("--lora-adapters", type=int, default=4, help="LoRA rows: the base with one adapter shared, and "
                                                                 "this many in one sweep (0: skip)")
    ap.add_argument("--lora-prompts", type=int, default=64, help="prompts of the LoRA rows")
    ap.add_argument("--no-resident", action="store_true")
    ap.add_argument("--no-csv", action="store_true")
    return ap.parse_args(argv)


def main():
    args = parse_args()
    if args.small:
        args.prompts, args.tokens, args.budgets = min(args.prompts, 16), min(args.tokens, 32), ""
        args.disk_layers = min(args.disk_layers, 2)
    cuda = args.device.startswith("cuda")
    dtype = torch.bfloat16 if cuda else torch.float32
    config = llama_config("small" if args.small else "llama2-13b")
    frame = empty_model(config, dtype)
    n_params = sum(p.numel() for p in frame.parameters())
    sources = [RandomSource(frame, seed, args.device) for seed in (0, 1)]
    g = torch.Generator().manual_seed(0)
    prompts = [{"id": i, "input_ids": torch.randint(3, config.vocab_size, (args.tokens,), generator=g).tolist()}
               for i in range(args.prompts)]
    n_tokens = args.prompts * args.tokens
    rows, prov = [], provenance(args.device)
    print(f"{prov['device']}: pair of {n_params / 1e6:,.0f}M-parameter models ({dtype}), "
          f"{args.prompts} prompts × {args.tokens} tokens", flush=True)
    bw = pinned_h2d_gbps(args.device) if cuda else float("nan")

    def record(setting, seconds, tokens, result=None, **extra):
        row = dict(prov, setting=setting, params_per_model=n_params, prompts=args.prompts,
                   tokens_per_prompt=args.tokens, seconds=round(seconds, 4), tokens_per_s=round(tokens / seconds, 1),
                   pinned_h2d_gbps=round(bw, 2) if cuda else "", **extra)
        if result is not None and "profile" in result.meta:
            p = result.meta["profile"]
            row.update(h2d_gbps=round(p.h2d_gb_per_s, 2), read_gbps=round(p.read_gb_per_s, 2),
                       copy_s=round(p.seconds_copy, 3), compute_s=round(p.seconds_compute, 3), overlap=round(p.overlap, 3))
        if result is not None and "peak_gpu_memory" in result.meta:
            row["peak_gib"] = round(result.meta["peak_gpu_memory"] / GiB, 3)
        rows.append(row)
        shown = ", ".join(f"{k}={row[k]}" for k in ("tokens_per_s", "peak_gib", "h2d_gbps", "read_gbps", "overlap",
                                                     "max_tuco_diff_vs_resident")
                          if row.get(k) not in (None, "") and row[k] == row[k])   # NaN: not measured here
        print(f"{setting}: {seconds:.2f} s; {shown}", flush=True)
        if not args.no_csv:
            append_rows("stream", [row])
        return row

    if cuda:
        print(f"pinned host-to-device copy: {bw:.1f} GB/s", flush=True)

    reference = resident = None
    if not args.no_resident:
        try:
            pt = random_model(config, dtype, args.device, seed=0)
            ft = random_model(config, dtype, args.device, seed=1)
            pair = tk.load_pair(pt, ft)
            tk.score(pair, prompts[:2])  # warm-up
            if cuda:
                torch.cuda.reset_peak_memory_stats()
            reference, seconds = timed_score(pair, prompts, args.device, batch_tokens=args.batch_tokens)
            resident = record("resident", seconds, n_tokens, reference,
                              peak_gib=round(torch.cuda.max_memory_allocated() / GiB, 3) if cuda else None)
            del pair, pt, ft
        except torch.OutOfMemoryError:
            print("resident: does not fit on this device", flush=True)
        if cuda:
            torch.cuda.empty_cache()

    t0 = time.perf_counter()
    streamed = streamed_pair(sources[0], config, sources[1], config, dtype=dtype, device=args.device, offload="cpu")
    print(f"streamed pair ready in {time.perf_counter() - t0:.1f} s: {streamed.streamer.host_bytes / GiB:.2f} GiB of "
          f"host memory for the weights, {streamed.streamer.pinned_bytes / GiB:.2f} GiB of it page-locked", flush=True)
    budgets = [b for b in args.budgets.split(",") if b] if cuda else []
    streamed_rows = []
    for budget in budgets or [None]:
        limit = parse_size(budget) if budget else None
        result, seconds = streamed_under_budget(streamed, prompts, args, budget)
        extra = {"plan": result.meta["plan"]}
        if reference is not None:
            extra["max_tuco_diff_vs_resident"] = float(abs(result.tuco - reference.tuco).max())
        streamed_rows.append(record(f"streamed, layer-major, {budget or 'no budget'}", seconds, n_tokens, result,
                                    **extra))
        if limit is not None:
            assert result.meta["peak_gpu_memory"] <= limit, (result.meta["peak_gpu_memory"], limit)

    streamed.streamer.prefetch = False   # the baseline: the same pair, each layer copied when it is needed
    base_prompts = prompts[: args.baseline_prompts]
    result, seconds = timed_score(streamed, base_prompts, args.device, schedule="prompt", batch_tokens=args.tokens,
                                  profile=True)
    base = record("prompt-by-prompt streaming, no prefetch (AirLLM-style)", seconds,
                  len(base_prompts) * args.tokens, result)
    streamed.close()
    del streamed

    for r in streamed_rows:
        r.update(vs_baseline=round(r["tokens_per_s"] / base["tokens_per_s"], 2),
                 vs_resident=round(r["tokens_per_s"] / resident["tokens_per_s"], 3) if resident else "",
                 h2d_vs_pinned=round(r["h2d_gbps"] / bw, 3) if cuda and r.get("h2d_gbps") else "")
        parts = [f"{r['vs_baseline']}× the baseline"]
        if resident:
            parts.insert(0, f"{100 * r['vs_resident']:.0f}% of resident")
        if r["h2d_vs_pinned"] != "":
            parts.append(f"copies at {100 * r['h2d_vs_pinned']:.0f}% of pinned bandwidth")
        print(f"{r['setting']}: " + ", ".join(parts), flush=True)
        if cuda and "8GiB" in r["setting"]:
            if resident:
                target("13B streamed at 8 GiB, % of resident throughput", 100 * r["vs_resident"], "≥ 80%",
                       r["vs_resident"] >= 0.8, "{:.0f}%")
            target("13B streamed at 8 GiB, peak device memory GiB", r["peak_gib"], "≤ 8", r["peak_gib"] <= 8)
            target("13B streamed, copies % of pinned host-to-device bandwidth", 100 * r["h2d_vs_pinned"], "≥ 80%",
                   r["h2d_vs_pinned"] >= 0.8, "{:.0f}%")
            target("13B streamed at 8 GiB vs prompt-by-prompt baseline", r["vs_baseline"], "≥ 50×",
                   r["vs_baseline"] >= 50)
        if "max_tuco_diff_vs_resident" in r:
            target("streamed TuCo = resident TuCo (max |diff|)", r["max_tuco_diff_vs_resident"], "≤ 1e-6",
                   r["max_tuco_diff_vs_resident"] <= 1e-6, "{:.2e}")
    if not args.no_csv and streamed_rows:   # the ratios need the baseline, measured after the streamed rows
        append_rows("stream_ratios", [{k: r.get(k, "") for k in (*prov, "setting", "tokens_per_s", "vs_baseline",
                                                                  "vs_resident", "h2d_vs_pinned")}
                                      for r in streamed_rows])

    if args.lora_adapters:
        lora_rows(args, config, dtype, sources[0], prompts, record, budget=budgets[0] if budgets else None,
                  full=streamed_rows[0] if streamed_rows else None)

    if args.disk_layers:
        disk_config = llama_config("small" if args.small else "llama2-13b")
        disk_config.num_hidden_layers = args.disk_layers
        root = Path(args.disk_dir or tempfile.mkdtemp(prefix="tuco-disk-bench-"))
        try:
            t0 = time.perf_counter()
            written = sum(write_checkpoint(root / side, disk_config, dtype, seed, args.device)
                          for seed, side in enumerate(("pt", "ft")))
            print(f"disk pair: {args.disk_layers} layers written ({written / 1e9:.1f} GB) in "
                  f"{time.perf_counter() - t0:.1f} s to {root}", flush=True)
            disk_prompts = prompts[: max(2, args.prompts // 4)]
            disk_tokens = len(disk_prompts) * args.tokens
            pinned = tk.load_pair(root / "pt", root / "ft", device=args.device, offload="cpu")
            expected, seconds = timed_score(pinned, disk_prompts, args.device, schedule="layer", profile=True,
                                            batch_tokens=args.batch_tokens)
            record(f"{args.disk_layers}-layer pair, offload=cpu (read once, page-locked)", seconds, disk_tokens,
                   expected)
            pinned.close()
            del pinned
            for side in ("pt", "ft"):
                for file in (root / side).glob("*.safetensors"):
                    fd = os.open(file, os.O_RDONLY)
                    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                    os.close(fd)
            disk = tk.load_pair(root / "pt", root / "ft", device=args.device, offload="disk")
            got, seconds = timed_score(disk, disk_prompts, args.device, schedule="layer", profile=True,
                                       batch_tokens=args.batch_tokens, max_gpu_memory="8GiB" if cuda else None)
            diff = float(abs(got.tuco - expected.tuco).max())
            record(f"{args.disk_layers}-layer pair, offload=disk (read per sweep)", seconds, disk_tokens, got,
                   max_tuco_diff_vs_resident=diff)
            target("disk-streamed TuCo = page-locked TuCo (max |diff|)", diff, "0", diff == 0, "{:.2e}")
            disk.close()
        finally:
            if not args.disk_dir:
                shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
