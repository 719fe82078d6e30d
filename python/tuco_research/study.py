"""Shared plumbing of the studies: output folders, provenance, tables, loading the default pair.

Completions come from ``tk.generate``, the package's one generation path (the stop tokens, sampling and caching
of ``tuco steer``).

The studies are modules of this package, run as ``python -m tuco_research.studies.<name>``; they set
``HF_HUB_OFFLINE=1`` (nothing is fetched from a model hub) through :func:`offline`.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import time
from datetime import date
from pathlib import Path

import torch

import tuco_kernels as tk

ROOT = Path(__file__).resolve().parents[2]   # the checkout (editable install): out/ is written there


def offline() -> None:
    """Nothing from a model hub, and only errors from transformers' logging."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


def add_common_args(ap):
    ap.add_argument("--out", type=Path, default=None, help="output folder (default out/studies/<study>)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    return ap


def output_dir(args, study: str) -> Path:
    out = args.out or ROOT / "out" / "studies" / study
    out.mkdir(parents=True, exist_ok=True)
    return out


def provenance(started: float, **extra) -> dict:
    """Device, versions, date and wall time of a study run, written beside its table."""
    import transformers

    try:
        commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True).stdout.strip()
    except OSError:
        commit = ""
    device = (torch.cuda.get_device_name() if torch.cuda.is_available()
              else f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} threads)")
    return {"date": date.today().isoformat(), "device": device, "torch": torch.__version__,
            "transformers": transformers.__version__, "python": platform.python_version(), "commit": commit,
            "pair": tk.default_pair.NAME, "seconds": round(time.perf_counter() - started, 1), **extra}


def write_outputs(out: Path, name: str, table: str, frame, meta: dict) -> None:
    """Write <name>.md (the table + provenance), <name>.csv (rows) and <name>.json (provenance), atomically."""
    md = table + "\n\n" + ", ".join(f"{k}: {v}" for k, v in meta.items()) + "\n"
    for suffix, text in ((".md", md), (".json", json.dumps(meta, indent=1))):
        tmp = out / f".{name}{suffix}.part"
        tmp.write_text(text)
        os.replace(tmp, out / f"{name}{suffix}")
    tmp = out / f".{name}.csv.part"
    frame.to_csv(tmp, index=False)
    os.replace(tmp, out / f"{name}.csv")
    print("\n" + md)


def load_default(device: str):
    torch.set_num_threads(os.cpu_count() or 1)
    t0 = time.perf_counter()
    pair = tk.load_pair(device=device)
    print(f"{pair}  [{time.perf_counter() - t0:.0f} s]", flush=True)
    return pair
