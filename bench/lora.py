"""A LoRA pair on one copy of the base (``lora="shared"``) against the merged pair (``lora="merged"``): memory and
speed, each mode in a fresh process (issue 23, item 5).

    peak_mib     the process's peak memory above its import baseline (torch, transformers, peft and tuco_kernels
                 imported): on the CPU VmHWM − VmRSS after the imports, on a GPU torch.cuda.max_memory_allocated
    pair_peak_mib  the same above the baseline with the tokenizer loaded too (the same in both modes; gemma-3's
                 262k-token tokenizer alone holds ~320 MiB, peak ~460 MiB)
    load_s       load_pair's wall time
    tokens_per_s the scored tokens over the median of ``--repeats`` timed tk.score calls (after one warm-up)
    reuse_hits   (shared) the fine-tuned Linear calls answered by the pre-trained block's output (core/reuse.py)

The modes alternate over ``--rounds`` (shared, merged, shared, merged, ...) so that a busy machine slows both
alike; ratios are of the medians over rounds. Targets: peak shared ≤ 0.55 × merged; tokens/s shared ≥ merged.
Default pair: gemma-3-270m (268M parameters, the offline cache) and the package's chat LoRA of it (r = 8 on every
projection of all 18 blocks). Appends rows to <results>/lora/resident.csv.

    python bench/lora.py [--base DIR --adapter DIR] [--prompts 8 --tokens 64 --repeats 3 --rounds 2]
    python bench/lora.py --device cuda --dtype bfloat16        # on a GPU
    python bench/lora.py --streamed [--offload disk]             # streamed rows (<results>/lora/streamed.csv)

``--streamed`` compares, with ``offload`` "disk" (or "cpu"), three streamed pairs: base + adapter shared (PEFT's
modules around each streamed base layer, the adapter unmerged on the device: PEFT's unmerged forward),
base + adapter merged per layer on the device (``lora="merged"``: PEFT's merge), and base + a merged copy saved as a
second full checkpoint (two models moved per layer): bytes read per sweep, peak memory, tokens/s.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

TEXT = ("The river rose after three days of rain, and the old bridge was closed to traffic. Can you help me write a "
        "polite email to my landlord about the broken heater? Photosynthesis converts light energy into chemical "
        "energy stored in sugar molecules, which plants use to grow. What is the capital of France? The committee "
        "published its annual report on regional water quality in March. ")


def _status(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {key} in /proc/self/status")


def child(args) -> dict:
    """One mode in this (fresh) process; returns its measurements."""
    import peft  # noqa: F401 - part of the baseline: both modes import it
    import torch
    import transformers  # noqa: F401

    import tuco_kernels as tk
    tk.load_pair, tk.score   # the package imports lazily: its modules are part of the baseline, as in both modes

    from tuco_kernels.models.hf import tokenizers_for

    torch.set_num_threads(args.threads)
    cuda = args.device.startswith("cuda")
    memory = (lambda: torch.cuda.max_memory_allocated()) if cuda else (lambda: _status("VmHWM"))
    baseline = torch.cuda.memory_allocated() if cuda else _status("VmRSS")
    tokenizer = tokenizers_for(None, args.base, args.adapter, None, None)[0]   # what load_pair would load
    with_tokenizer = memory()
    t0 = time.perf_counter()
    pair = tk.load_pair(args.base, args.adapter, lora=args.child, dtype=args.dtype, device=args.device,
                        tokenizer=tokenizer)
    load_s = time.perf_counter() - t0
    ids = pair.tokenizer(TEXT * (1 + args.tokens // 40), add_special_tokens=False)["input_ids"]
    prompts = [{"input_ids": ids[7 * i: 7 * i + args.tokens]} for i in range(args.prompts)]
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    result = tk.score(pair, prompts, chat=False)   # warm-up
    times = []
    for _ in range(args.repeats):
        sync()
        t0 = time.perf_counter()
        result = tk.score(pair, prompts, chat=False)
        sync()
        times.append(time.perf_counter() - t0)
    peak = torch.cuda.max_memory_allocated() if cuda else _status("VmHWM")
    n_params = sum(p.numel() for p in pair.pretrained.parameters())
    return dict(mode=pair.lora["mode"], reason=pair.lora["reason"], peak_bytes=peak - baseline,
                pair_peak_bytes=peak - with_tokenizer, load_s=load_s,
                tokens=args.prompts * args.tokens, score_s=statistics.median(times), times=times,
                tuco=[float(t) for t in result.tuco], base_params=n_params, device_bytes=pair.device_bytes(),
                reuse_hits=pair.reuse.hits if getattr(pair, "reuse", None) else 0,
                reuse_calls=pair.reuse.calls if getattr(pair, "reuse", None) else 0)


def streamed_child(args) -> dict:
    """One streamed pair (``args.child`` "stream-shared"/"stream-merged": base + adapter in that LoRA mode;
    "stream-two": base + merged folder)."""
    import peft  # noqa: F401
    import torch
    import transformers  # noqa: F401

    import tuco_kernels as tk
    tk.load_pair, tk.score   # the package imports lazily: its modules are part of the baseline, as in both modes
    from tuco_kernels.models.hf import tokenizers_for

    torch.set_num_threads(args.threads)
    baseline = _status("VmRSS")
    tokenizer = tokenizers_for(None, args.base, args.adapter, None, None)[0]
    with_tokenizer = _status("VmHWM")
    finetuned = args.merged if args.child == "stream-two" else args.adapter
    pair = tk.load_pair(args.base, finetuned, offload=args.offload, tokenizer=tokenizer, device=args.device,
                        lora="merged" if args.child == "stream-merged" else "shared")
    ids = pair.tokenizer(TEXT * (1 + args.tokens // 40), add_special_tokens=False)["input_ids"]
    prompts = [{"input_ids": ids[7 * i: 7 * i + args.tokens]} for i in range(args.prompts)]
    tk.score(pair, prompts, chat=False, schedule="layer")   # warm-up
    t0 = time.perf_counter()
    result = tk.score(pair, prompts, chat=False, schedule="layer", profile=True)
    seconds = time.perf_counter() - t0
    prof = result.run.profile
    peak = _status("VmHWM")
    out = dict(mode=args.child, lora=pair.lora and pair.lora["mode"], peak_bytes=peak - baseline, pair_peak_bytes=peak - with_tokenizer,
               tokens=args.prompts * args.tokens, score_s=seconds, sweeps=result.run.sweeps,
               bytes_read=prof.bytes_read, bytes_h2d=prof.bytes_h2d, host_bytes=pair.streamer.host_bytes,
               tuco=[float(t) for t in result.tuco])
    pair.close()
    return out


def run_child(args, mode: str) -> dict:
    cmd = [sys.executable, __file__, "--child", mode, "--base", str(args.base), "--adapter", str(args.adapter),
           "--offload", args.offload] + (["--merged", str(args.merged)] if args.merged else []) + [
           "--prompts", str(args.prompts), "--tokens", str(args.tokens), "--repeats", str(args.repeats),
           "--device", args.device, "--threads", str(args.threads)] + (["--dtype", args.dtype] if args.dtype else [])
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--base")
    p.add_argument("--adapter")
    p.add_argument("--prompts", type=int, default=8)
    p.add_argument("--tokens", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype")
    p.add_argument("--threads", type=int, default=1, help="torch threads in each run (default 1: steadier on a "
                                                          "shared CPU)")
    p.add_argument("--child", choices=("shared", "merged", "stream-shared", "stream-merged", "stream-two"))
    p.add_argument("--streamed", action="store_true", help="the streamed comparison (see the module docstring)")
    p.add_argument("--offload", default="disk", choices=("cpu", "disk"))
    p.add_argument("--merged", help="(--streamed) a folder with the adapter merged into the base, made when absent")
    args = p.parse_args()
    if args.base is None or args.adapter is None:
        from tuco_kernels.models import default_pair

        args.base, args.adapter = default_pair.paths()
    if args.child:
        print(json.dumps(streamed_child(args) if args.child.startswith("stream") else child(args)))
        return
    if args.streamed:
        streamed(args)
        return

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from common import append_rows, provenance, results_dir, target

    runs = {"shared": [], "merged": []}
    for r in range(args.rounds):
        for mode in ("shared", "merged"):
            m = run_child(args, mode)
            runs[mode].append(m)
            print(f"round {r + 1} {mode:6s}: peak {m['peak_bytes'] / 2**20:8.1f} MiB above imports "
                  f"({m['pair_peak_bytes'] / 2**20:8.1f} above imports + tokenizer), load "
                  f"{m['load_s']:5.1f} s, {m['tokens'] / m['score_s']:7.1f} tokens/s, device_bytes "
                  f"{m['device_bytes'] / 2**20:.1f} MiB" + (f", reuse {m['reuse_hits']}/{m['reuse_calls']}"
                                                            if m["reuse_calls"] else ""), flush=True)
    med = {mode: dict(peak=statistics.median(m["peak_bytes"] for m in ms),
                      pair_peak=statistics.median(m["pair_peak_bytes"] for m in ms),
                      tps=statistics.median(m["tokens"] / m["score_s"] for m in ms),
                      load=statistics.median(m["load_s"] for m in ms)) for mode, ms in runs.items()}
    peak_ratio = med["shared"]["peak"] / med["merged"]["peak"]
    pair_ratio = med["shared"]["pair_peak"] / med["merged"]["pair_peak"]
    speed_ratio = med["shared"]["tps"] / med["merged"]["tps"]
    tuco_diff = max(abs(a - b) for a, b in zip(runs["shared"][0]["tuco"], runs["merged"][0]["tuco"]))
    print(f"peak memory shared / merged: {peak_ratio:.3f} above imports, {pair_ratio:.3f} above imports + "
          f"tokenizer; tokens/s shared / merged: {speed_ratio:.3f}; "
          f"max |TuCo shared - merged| {tuco_diff:.2e}")
    target("LoRA shared peak memory / merged (resident)", peak_ratio, "<= 0.55", peak_ratio <= 0.55)
    target("LoRA shared peak memory / merged (resident, the tokenizer in the baseline)", pair_ratio, "<= 0.55",
           pair_ratio <= 0.55)
    target("LoRA shared tokens/s / merged (resident)", speed_ratio, ">= 1.0", speed_ratio >= 1.0)
    (results_dir() / "lora").mkdir(parents=True, exist_ok=True)
    prov = provenance(args.device)
    import peft

    rows = []
    for mode, ms in runs.items():
        rows.append(dict(**prov, peft=peft.__version__, base=Path(args.base).name, adapter=Path(args.adapter).name,
                         base_params=ms[0]["base_params"], dtype=args.dtype or "as stored", lora=mode,
                         prompts=args.prompts, tokens=args.tokens, rounds=args.rounds, repeats=args.repeats,
                         threads=args.threads, peak_mib=round(med[mode]["peak"] / 2**20, 1),
                         pair_peak_mib=round(med[mode]["pair_peak"] / 2**20, 1),
                         device_bytes_mib=round(ms[0]["device_bytes"] / 2**20, 1),
                         load_s=round(med[mode]["load"], 2), tokens_per_s=round(med[mode]["tps"], 1),
                         reuse_hits=ms[0]["reuse_hits"], reuse_calls=ms[0]["reuse_calls"],
                         peak_ratio=round(peak_ratio, 3), pair_peak_ratio=round(pair_ratio, 3), speed_ratio=round(speed_ratio, 3),
                         max_tuco_diff=f"{tuco_diff:.2e}"))
    print(f"rows appended to {append_rows('lora/resident', rows)}")


def make_merged(args) -> Path:
    """The base with the adapter merged by PEFT (merge_and_unload), saved as a full checkpoint."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    folder = Path(args.merged or "/tmp/tuco-bench-lora-merged")
    if not (folder / "config.json").is_file():
        base = AutoModelForCausalLM.from_pretrained(args.base, dtype=torch.float32)
        PeftModel.from_pretrained(base, args.adapter).merge_and_unload().save_pretrained(folder)
    return folder


def streamed(args) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from common import append_rows, provenance, results_dir, target

    args.merged = make_merged(args)
    runs = {"stream-shared": [], "stream-merged": [], "stream-two": []}
    for r in range(args.rounds):
        for mode in runs:
            m = run_child(args, mode)
            runs[mode].append(m)
            print(f"round {r + 1} {mode:13s}: read {m['bytes_read'] / m['sweeps'] / 2**20:8.1f} MiB per sweep, h2d "
                  f"{m['bytes_h2d'] / m['sweeps'] / 2**20:8.1f} MiB per sweep, peak {m['pair_peak_bytes'] / 2**20:8.1f} "
                  f"MiB above imports + tokenizer ({m['peak_bytes'] / 2**20:.1f} above imports), host "
                  f"{m['host_bytes'] / 2**20:.1f} MiB, {m['tokens'] / m['score_s']:6.1f} tokens/s", flush=True)
    med = {mode: {k: statistics.median(m[k] / (m["sweeps"] if k.startswith("bytes") else 1) for m in ms)
                  for k in ("bytes_read", "bytes_h2d", "peak_bytes", "pair_peak_bytes", "host_bytes")}
           | {"tps": statistics.median(m["tokens"] / m["score_s"] for m in ms)} for mode, ms in runs.items()}
    moved = "bytes_read" if args.offload == "disk" else "bytes_h2d"
    lora, merged, two = med["stream-shared"], med["stream-merged"], med["stream-two"]
    bytes_ratio = lora[moved] / two[moved] if two[moved] else float("nan")
    peak_ratio = lora["pair_peak_bytes"] / two["pair_peak_bytes"]
    print(f"streamed ({args.offload}) shared LoRA / two models: bytes per sweep {bytes_ratio:.3f}, peak above imports "
          f"+ tokenizer {peak_ratio:.3f}, tokens/s {lora['tps'] / two['tps']:.3f}; shared / merged per layer: tokens/s "
          f"{lora['tps'] / merged['tps']:.3f}, peak {lora['pair_peak_bytes'] / merged['pair_peak_bytes']:.3f}")
    if two[moved]:
        target(f"streamed shared LoRA bytes per sweep / two models ({args.offload})", bytes_ratio, "<= 0.55",
               bytes_ratio <= 0.55)
    target(f"streamed shared LoRA peak memory / two models ({args.offload}, the tokenizer in the baseline)",
           peak_ratio, "<= 0.55", peak_ratio <= 0.55)
    (results_dir() / "lora").mkdir(parents=True, exist_ok=True)
    import peft

    rows = [dict(**provenance(args.device), peft=peft.__version__, base=Path(args.base).name,
                 adapter=Path(args.adapter).name, offload=args.offload, pair=mode, prompts=args.prompts,
                 tokens=args.tokens, rounds=args.rounds, threads=args.threads,
                 mib_read_per_sweep=round(m["bytes_read"] / 2**20, 1), mib_h2d_per_sweep=round(m["bytes_h2d"] / 2**20, 1),
                 host_mib=round(m["host_bytes"] / 2**20, 1), peak_mib=round(m["peak_bytes"] / 2**20, 1),
                 pair_peak_mib=round(m["pair_peak_bytes"] / 2**20, 1), tokens_per_s=round(m["tps"], 1),
                 bytes_ratio=round(bytes_ratio, 3), pair_peak_ratio=round(peak_ratio, 3))
            for mode, m in med.items()]
    print(f"rows appended to {append_rows('lora/streamed', rows)}")


if __name__ == "__main__":
    main()
