"""Shared by the benchmarks: the machine, device-side timing, random models from configs, CSV rows with
provenance, and target lines.

Timing: on a GPU, ``time_call`` uses ``triton.testing.do_bench`` (CUDA events around each call, the L2 cache
flushed between calls, the median of many), so Python dispatch does not count against small shapes; on the
CPU, ``perf_counter`` around each call. Results go to ``bench/results/`` or ``$TUCO_BENCH_RESULTS``
(``make gpu-check`` points it at its own folder). A target line reads
``target: <what>: <measured> (goal <goal>) PASS|FAIL`` so that ``bench/gpu_check.py`` can collect them.
"""

from __future__ import annotations

import csv
import datetime
import os
import platform
import statistics
import sys
import time
import zlib
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "results"


def results_dir() -> Path:
    path = Path(os.environ.get("TUCO_BENCH_RESULTS") or RESULTS)
    path.mkdir(parents=True, exist_ok=True)
    return path


def machine(device: str = "cpu") -> str:
    """The device's name: the GPU's, or the CPU model with its core and thread counts."""
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu} ({os.cpu_count()} cores, {torch.get_num_threads()} threads)"


def provenance(device: str = "cpu") -> dict:
    """Date, device and versions, to go with every figure."""
    try:
        import triton
        triton_version = triton.__version__
    except ImportError:
        triton_version = "-"
    import transformers
    return dict(date=datetime.date.today().isoformat(), device=machine(device), torch=torch.__version__,
                triton=triton_version, transformers=transformers.__version__,
                python=".".join(map(str, sys.version_info[:3])))


def synchronizer(device: str):
    return torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)


def time_call(fn, device: str = "cpu", repeats: int = 5, warmup: int = 1, reducer=statistics.median) -> float:
    """Seconds per call of ``fn``: on CUDA the median of ``do_bench`` (events, L2 flushed); on CPU ``reducer``
    of ``repeats`` wall-clock timings."""
    if device.startswith("cuda"):
        from triton.testing import do_bench

        return do_bench(fn, warmup=25, rep=max(100, 20 * repeats), return_mode="median") / 1e3
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return reducer(times)


def time_wall(fn, device: str = "cpu", repeats: int = 3, warmup: int = 1, reducer=min) -> float:
    """Seconds per call of a long ``fn`` (a whole forward or scoring call), waiting for the device each time."""
    sync = synchronizer(device)
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return reducer(times)


def append_rows(name: str, rows: list[dict]) -> Path:
    """Append rows to <results>/<name>.csv (header written when the file is new; when rows bring new columns,
    the file is rewritten with them, older rows left empty there)."""
    path = results_dir() / f"{name}.csv"
    old_rows, fields = [], []
    if path.exists():
        with path.open(newline="") as f:
            reader = csv.DictReader(f)
            fields = list(reader.fieldnames or [])
            old_rows = list(reader)
    added = [k for r in rows for k in r if k not in fields]
    fields += list(dict.fromkeys(added))
    mode = "w" if added or not old_rows else "a"
    with path.open(mode, newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields, restval="")
        if mode == "w":
            writer.writeheader()
            writer.writerows(old_rows)
        writer.writerows(rows)
    return path


def target(what: str, measured: float, goal: str, ok: bool, fmt: str = "{:.3g}") -> bool:
    """Print one target line (collected by bench/gpu_check.py); return ``ok``."""
    print(f"target: {what}: {fmt.format(measured)} (goal {goal}) {'PASS' if ok else 'FAIL'}", flush=True)
    return ok


# ------------------------------------------------------------------------------------ random models


def random_tensor(name: str, shape, dtype, device, seed: int) -> torch.Tensor:
    """Deterministic per (seed, name): std 0.02, or ones for norms. Generated on ``device``."""
    if "norm" in name or name.endswith("ln_f.weight"):
        return torch.ones(shape, dtype=dtype, device=device)
    g = torch.Generator(torch.device(device)).manual_seed(seed * 1_000_003 + zlib.crc32(name.encode()))
    return (torch.randn(shape, generator=g, device=device) * 0.02).to(dtype)


def random_model(config, dtype, device, seed: int = 0):
    """``config``'s CausalLM with random weights straight on ``device`` (nothing materialised on the host)."""
    from tuco_kernels.offload.skeleton import empty_model

    model = empty_model(config, dtype).to_empty(device=device)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(random_tensor(name, p.shape, dtype, device, seed))
        for buf, fresh in zip(model.buffers(), empty_model(config, dtype).buffers()):  # to_empty left them empty
            buf.copy_(fresh)
    return model.eval()


def llama_config(preset: str):
    """Llama-2 shapes from their published configs (random weights are generated for them)."""
    from transformers import LlamaConfig

    shapes = {
        "llama2-7b": dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
                          num_key_value_heads=32),
        "llama2-13b": dict(hidden_size=5120, intermediate_size=13824, num_hidden_layers=40, num_attention_heads=40,
                           num_key_value_heads=40),
        "small": dict(hidden_size=256, intermediate_size=688, num_hidden_layers=4, num_attention_heads=4,
                      num_key_value_heads=4),
    }[preset]
    vocab = 320 if preset == "small" else 32000
    return LlamaConfig(vocab_size=vocab, max_position_embeddings=4096, rms_norm_eps=1e-5, **shapes)


def block_params(config) -> int:
    """Parameters of all decoder blocks of one Llama-shaped model (the matmul weights and norms)."""
    d, i, L = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    kv = config.num_key_value_heads * (d // config.num_attention_heads)
    return L * (2 * d * d + 2 * d * kv + 3 * d * i + 2 * d)
