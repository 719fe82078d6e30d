"""Shared by the benchmarks: what machine this is, timing that waits for the device, CSV rows with provenance."""

from __future__ import annotations

import csv
import datetime
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "results"


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
    """Seconds per call of ``fn`` (median of ``repeats`` by default), waiting for the device each time."""
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
    """Append rows to bench/results/<name>.csv (header written when the file is new)."""
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.csv"
    new = not path.exists()
    with path.open("a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        if new:
            writer.writeheader()
        writer.writerows(rows)
    return path
