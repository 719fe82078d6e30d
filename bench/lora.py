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

``--sets N`` (N = 4 when given bare) compares N LoRA adapters of the base scored in one sweep per layer
(``load_pair(base, [a1, ..., aN])``, a PairSet) against N separate pairs (``load_pair(base, a_k)`` and tk.score, one
after another in one process, each closed, deleted and garbage-collected before the next), resident (``--offload
none``, the default here) or streamed (``--offload disk|cpu``). The adapters: ``--adapter`` (the package's chat
LoRA) and N − 1 random ones made once under ``--set-dir`` with its LoraConfig (same rank, alpha and target modules)
and PEFT's own A initialisation, B drawn from N(0, σ) with σ the chat adapter's B standard deviation, seed k for
adapter k; each gets the chat adapter's chat_template.jinja (byte for byte) so that the set sees one tokenizer.
Each configuration runs in a fresh process, alternating over ``--rounds`` (set, separate, startup, ...):

    load_s / score_s / total_s   wall time of load_pair / of tk.score (summed over the N pairs for "separate")
    peak_mib, pair_peak_mib      as above (the whole configuration's peak)
    mib_read_per_sweep           (disk) profile.bytes_read / run.sweeps, summed over the N pairs for "separate"
    load_rchar_mib               bytes read by read()/preadv() during loading (/proc/self/io rchar; mmap reads,
                                 i.e. resident safetensors loading, are not counted)
    startup_s                    a fresh process importing torch, transformers, peft and tuco_kernels and loading
                                 the tokenizer, timed by the parent: what each of N separate runs pays once more

The TuCo values of each adapter in the set are compared with its separate pair's (max |difference|, and whether
they are identical). Rows go to <results>/lora/sets.csv.

    python bench/lora.py --sets 4 --rounds 3                    # resident
    python bench/lora.py --sets 4 --rounds 3 --offload disk     # streamed
"""

from __future__ import annotations

import argparse
import gc
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


def set_adapters(args) -> list[Path]:
    """The chat adapter and the N − 1 random ones of ``--sets N`` (made by :func:`make_set`)."""
    return [Path(args.adapter)] + [Path(args.set_dir) / f"random-{k}" for k in range(1, args.sets)]


def _rchar() -> int:
    with open("/proc/self/io") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("rchar:"))


def sets_child(args) -> dict:
    """One ``--sets`` configuration in this (fresh) process: ``args.child`` "set" (one PairSet of the N adapters, one
    tk.score), "separate" (N pairs, one after another) or "startup" (the imports and the tokenizer only)."""
    t_start = time.perf_counter()
    import peft  # noqa: F401 - part of the baseline in every configuration
    import torch
    import transformers  # noqa: F401

    import tuco_kernels as tk
    tk.load_pair, tk.score   # the package imports lazily: its modules are part of the baseline
    from tuco_kernels.models.hf import tokenizers_for

    torch.set_num_threads(args.threads)
    import_s = time.perf_counter() - t_start
    baseline = _status("VmRSS")
    adapters = set_adapters(args)
    t0 = time.perf_counter()
    tokenizer = tokenizers_for(None, args.base, adapters[0], None, None)[0]   # what load_pair would load
    tokenizer_s = time.perf_counter() - t0
    with_tokenizer = _status("VmHWM")
    out = dict(mode=args.child, import_s=import_s, tokenizer_s=tokenizer_s)
    if args.child == "startup":
        return out
    ids = tokenizer(TEXT * (1 + args.tokens // 40), add_special_tokens=False)["input_ids"]
    prompts = [{"input_ids": ids[7 * i: 7 * i + args.tokens]} for i in range(args.prompts)]
    opts = dict(offload=args.offload, tokenizer=tokenizer, device=args.device, dtype=args.dtype)
    streamed = args.offload != "none"
    runs = []

    def measure(finetuned) -> dict:
        rchar = _rchar()
        t0 = time.perf_counter()
        pair = tk.load_pair(args.base, finetuned, **opts)
        load_s, load_rchar = time.perf_counter() - t0, _rchar() - rchar
        t0 = time.perf_counter()
        result = tk.score(pair, prompts, chat=False, profile=streamed)
        score_s = time.perf_counter() - t0
        parts = result.by_finetuned() if isinstance(finetuned, list) else {str(finetuned): result}
        prof = result.run.profile
        run = dict(load_s=load_s, score_s=score_s, load_rchar=load_rchar, sweeps=result.run.sweeps,
                   bytes_read=prof.bytes_read if prof else 0, bytes_h2d=prof.bytes_h2d if prof else 0,
                   tuco={name: [float(t) for t in part.tuco] for name, part in parts.items()})
        pair.close()
        del pair, result, parts
        gc.collect()
        run["rss_after"] = _status("VmRSS") - baseline   # what the closed pair left behind
        return run

    if args.child == "set":
        runs.append(measure([str(a) for a in adapters]))
    else:
        for a in adapters:
            runs.append(measure(str(a)))
    peak = _status("VmHWM")
    tuco = {name: values for r in runs for name, values in r["tuco"].items()}
    return out | dict(load_s=sum(r["load_s"] for r in runs), score_s=sum(r["score_s"] for r in runs),
                      load_rchar=sum(r["load_rchar"] for r in runs),
                      bytes_read_per_sweep=sum(r["bytes_read"] / r["sweeps"] for r in runs),
                      bytes_h2d_per_sweep=sum(r["bytes_h2d"] / r["sweeps"] for r in runs),
                      sweeps=[r["sweeps"] for r in runs], runs_load_s=[r["load_s"] for r in runs],
                      runs_score_s=[r["score_s"] for r in runs], rss_after=[r["rss_after"] for r in runs],
                      peak_bytes=peak - baseline, pair_peak_bytes=peak - with_tokenizer,
                      tokens=args.prompts * args.tokens * len(adapters), tuco=tuco)


def run_child(args, mode: str) -> dict:
    cmd = [sys.executable, __file__, "--child", mode, "--base", str(args.base), "--adapter", str(args.adapter)] + (
           ["--offload", args.offload] if args.offload else []) + (["--merged", str(args.merged)] if args.merged else []) + (
           ["--sets", str(args.sets), "--set-dir", str(args.set_dir)] if args.sets else []) + [
           "--prompts", str(args.prompts), "--tokens", str(args.tokens), "--repeats", str(args.repeats),
           "--device", args.device, "--threads", str(args.threads)] + (["--dtype", args.dtype] if args.dtype else [])
    t0 = time.perf_counter()
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    return json.loads(out.stdout.strip().splitlines()[-1]) | {"process_s": time.perf_counter() - t0}


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
    p.add_argument("--child", choices=("shared", "merged", "stream-shared", "stream-merged", "stream-two", "set",
                                       "separate", "startup"))
    p.add_argument("--streamed", action="store_true", help="the streamed comparison (see the module docstring)")
    p.add_argument("--offload", choices=("none", "cpu", "disk"),
                   help="where the base's blocks live: --streamed default disk, --sets default none (resident)")
    p.add_argument("--merged", help="(--streamed) a folder with the adapter merged into the base, made when absent")
    p.add_argument("--sets", type=int, nargs="?", const=4, metavar="N",
                   help="N adapters in one PairSet against N separate pairs (see the module docstring; N = 4 bare)")
    p.add_argument("--set-dir", default="/tmp/tuco-bench-lora-set",
                   help="(--sets) where the random adapters are made once (random-1, random-2, ...)")
    args = p.parse_args()
    if args.base is None or args.adapter is None:
        from tuco_kernels.models import default_pair

        args.base, args.adapter = default_pair.paths()
    if args.sets is not None and args.sets < 1:
        p.error("--sets N needs N >= 1")
    if args.child:
        print(json.dumps(sets_child(args) if args.child in ("set", "separate", "startup") else
                         streamed_child(args) if args.child.startswith("stream") else child(args)))
        return
    if args.sets:
        args.offload = args.offload or "none"
        sets(args)
        return
    if args.streamed:
        args.offload = args.offload or "disk"
        if args.offload == "none":
            p.error("--streamed compares streamed pairs: --offload cpu or disk")
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


def make_set(args) -> list[Path]:
    """The N − 1 random adapters of ``--sets N`` (see the module docstring), made once; returns all N."""
    import shutil

    import torch
    from peft import LoraConfig, get_peft_model
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    adapters = set_adapters(args)
    chat = Path(args.adapter)
    missing = [a for a in adapters[1:] if not (a / "adapter_model.safetensors").is_file()]
    if missing:
        trained = load_file(chat / "adapter_model.safetensors")
        sigma = torch.cat([v.flatten() for k, v in trained.items() if "lora_B" in k]).std().item()
        config = json.loads((chat / "adapter_config.json").read_text())
        for folder in missing:
            seed = int(folder.name.rsplit("-", 1)[1])
            base = AutoModelForCausalLM.from_pretrained(args.base, dtype=torch.float32)
            torch.manual_seed(seed)
            lora = get_peft_model(base, LoraConfig(r=config["r"], lora_alpha=config["lora_alpha"],
                                                   target_modules=sorted(config["target_modules"]),
                                                   lora_dropout=0.0, bias="none", task_type="CAUSAL_LM"))
            with torch.no_grad():
                for name, p in lora.named_parameters():
                    if "lora_B" in name:
                        p.normal_(0, sigma)
            lora.save_pretrained(folder)
            del lora, base
            print(f"made {folder} (seed {seed}, B ~ N(0, {sigma:.2e}))", flush=True)
    for folder in adapters[1:]:   # one tokenizer for the set: the same chat template file beside every adapter
        if (chat / "chat_template.jinja").is_file():
            shutil.copyfile(chat / "chat_template.jinja", folder / "chat_template.jinja")
    return adapters


def git_commit() -> str:
    """HEAD of the checkout the bench runs from, "+dirty" when the package or the bench scripts differ from it."""
    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=root, check=True, capture_output=True,
                              text=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", "tuco_kernels",
                                "bench/*.py"], cwd=root, check=True, capture_output=True, text=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "-"
    return head + ("+dirty" if dirty else "")


def sets(args) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from common import append_rows, provenance, results_dir

    adapters = make_set(args)
    modes = ("set", "separate", "startup")
    runs = {mode: [] for mode in modes}
    for r in range(args.rounds):
        for mode in modes:
            m = run_child(args, mode)
            runs[mode].append(m)
            if mode == "startup":
                print(f"round {r + 1} {mode:8s}: process {m['process_s']:5.1f} s (imports {m['import_s']:4.1f} s, "
                      f"tokenizer {m['tokenizer_s']:4.1f} s)", flush=True)
                continue
            print(f"round {r + 1} {mode:8s}: load {m['load_s']:5.1f} s, score {m['score_s']:5.1f} s, total "
                  f"{m['load_s'] + m['score_s']:5.1f} s (load per pair " + " ".join(f"{t:.1f}" for t in m["runs_load_s"])
                  + ", score per pair " + " ".join(f"{t:.1f}" for t in m["runs_score_s"]) + f"), peak "
                  f"{m['peak_bytes'] / 2**20:7.1f} MiB above imports ({m['pair_peak_bytes'] / 2**20:7.1f} above imports + "
                  f"tokenizer), read {m['bytes_read_per_sweep'] / 2**20:7.1f} MiB per sweep, load rchar "
                  f"{m['load_rchar'] / 2**20:7.1f} MiB, sweeps {m['sweeps']}, RSS left after each close "
                  + " ".join(f"{b / 2**20:.0f}" for b in m["rss_after"]) + " MiB", flush=True)
    keys = ("load_s", "score_s", "total_s", "peak_bytes", "pair_peak_bytes", "bytes_read_per_sweep",
            "bytes_h2d_per_sweep", "load_rchar", "process_s")
    for mode in ("set", "separate"):
        for m in runs[mode]:
            m["total_s"] = m["load_s"] + m["score_s"]
    med = {mode: {k: statistics.median(m[k] for m in runs[mode]) for k in keys} for mode in ("set", "separate")}
    startup = statistics.median(m["process_s"] for m in runs["startup"])
    one, sep = med["set"], med["separate"]
    ratio = {k: one[k] / sep[k] if sep[k] else float("nan") for k in keys}
    n = args.sets
    with_start = (startup + one["total_s"]) / (n * startup + sep["total_s"])
    diffs, identical = [], True
    for m_set, m_sep in zip(runs["set"], runs["separate"]):
        for name, values in m_set["tuco"].items():
            other = m_sep["tuco"][name]
            identical &= values == other
            diffs += [abs(a - b) for a, b in zip(values, other)]
    tuco_diff = max(diffs)
    between = max(abs(a - b) for name, v in runs["set"][0]["tuco"].items() if name != str(adapters[0])
                  for a, b in zip(v, runs["set"][0]["tuco"][str(adapters[0])]))
    print(f"{n} adapters, offload={args.offload}: set / separate: load {ratio['load_s']:.3f}, score "
          f"{ratio['score_s']:.3f}, total {ratio['total_s']:.3f} (with process start + imports + tokenizer, "
          f"{startup:.1f} s a process: {with_start:.3f}), peak above imports {ratio['peak_bytes']:.3f} (above imports "
          f"+ tokenizer {ratio['pair_peak_bytes']:.3f})" + (f", MiB read per sweep {one['bytes_read_per_sweep'] / 2**20:.1f}"
          f" / {sep['bytes_read_per_sweep'] / 2**20:.1f} = {ratio['bytes_read_per_sweep']:.3f}"
          if args.offload == "disk" else "") + f", load rchar {ratio['load_rchar']:.3f}; TuCo set vs separate: "
          f"{'identical' if identical else 'differ'} (max |diff| {tuco_diff:.2e}; the random adapters' TuCo differs "
          f"from the chat adapter's by up to {between:.3f})", flush=True)
    (results_dir() / "lora").mkdir(parents=True, exist_ok=True)
    import peft

    prov = provenance(args.device)
    commit = git_commit()
    rows = [dict(**prov, peft=peft.__version__, commit=commit, base=Path(args.base).name,
                 adapters=" ".join(a.name for a in adapters), n_adapters=n, offload=args.offload,
                 dtype=args.dtype or "as stored", config=mode, prompts=args.prompts, tokens=args.tokens,
                 rounds=args.rounds, threads=args.threads, load_s=round(m["load_s"], 2),
                 score_s=round(m["score_s"], 2), total_s=round(m["total_s"], 2), startup_s=round(startup, 2),
                 peak_mib=round(m["peak_bytes"] / 2**20, 1), pair_peak_mib=round(m["pair_peak_bytes"] / 2**20, 1),
                 mib_read_per_sweep=round(m["bytes_read_per_sweep"] / 2**20, 1),
                 mib_h2d_per_sweep=round(m["bytes_h2d_per_sweep"] / 2**20, 1),
                 load_rchar_mib=round(m["load_rchar"] / 2**20, 1), load_ratio=round(ratio["load_s"], 3),
                 score_ratio=round(ratio["score_s"], 3), total_ratio=round(ratio["total_s"], 3),
                 total_ratio_with_startup=round(with_start, 3), peak_ratio=round(ratio["peak_bytes"], 3),
                 pair_peak_ratio=round(ratio["pair_peak_bytes"], 3),
                 bytes_ratio=round(ratio["bytes_read_per_sweep"], 3) if args.offload == "disk" else "",
                 tuco_identical=identical, max_tuco_diff=f"{tuco_diff:.2e}")
            for mode, m in med.items()]
    print(f"rows appended to {append_rows('lora/sets', rows)}")


if __name__ == "__main__":
    main()
