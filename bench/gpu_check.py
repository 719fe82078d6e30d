"""`make gpu-check`: the GPU path checked and measured on one GPU machine, in phases of at most ~9 minutes.

The GPU machines have Python with torch, triton, transformers, peft, pytest and nvcc preinstalled and no network,
so nothing is downloaded: the package is installed into that Python as it is (``pip install --no-deps
--no-build-isolation -e .``, which compiles tuco_kernels._C with its CUDA op; the build is reused when csrc/ has
not changed). Then, by phase:

    tests     every test marked ``gpu`` (TUCO_REQUIRE_GPU=1: a GPU test that skips is a failure), then the
              ops, engine and streaming tests
    kernels   bench/kernels.py at the 13B shape with and without norms (and the Triton launch-config sweep),
              bench/engine_overhead.py on the small model and on a Llama-2-7B-shaped pair
    stream    bench/stream.py: the Llama-2-13B-shaped pair resident, streamed at 8 and 24 GiB, the
              prompt-by-prompt baseline, and an 8-layer pair of the same width streamed from local safetensors

Every figure is written as soon as it is measured: CSV rows with device, versions and date in the output folder
(``--out``; default ``$OUT`` on the device machine, else bench/results/gpu-check/<device>/), each step's log,
``info.txt`` (``tuco info``) and ``summary.md`` (each step's status and every ``target:`` line). The exit status
is non-zero when a step failed or a target was missed.

``--dry-run`` runs the same plumbing on the CPU with tiny shapes (CI checks it; the numbers mean nothing).

    make gpu-check                 # every phase, one after another
    make gpu-check PHASE=stream    # one phase (each fits one 10-minute call on the device machine)
    make gpu-check DRY=1           # the plumbing, on CPU
"""

from __future__ import annotations

import argparse
import datetime
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PHASES = ("tests", "kernels", "stream")
# the CPU-side tests that also run on the GPU machine (ops, engine, streaming): on CUDA they pick other backends
REST_TESTS = ("tests/ops", "tests/core/test_engine.py", "tests/offload/test_streamed.py", "tests/offload/test_budget.py")
PHASE_SECONDS = 540          # each phase must end within one 10-minute device call, install included


def steps(phase: str, dry: bool) -> list[tuple[str, list[str], dict, int]]:
    """(name, command, extra environment, timeout in seconds) of each step of a phase."""
    py = sys.executable
    if phase == "tests":
        gpu = [py, "-m", "pytest", "tests", "bench", "-m", "gpu", "-q", "-rs", "-p", "no:cacheprovider",
               "--benchmark-disable", "--junitxml", "{out}/tests-gpu.xml"]
        rest = [py, "-m", "pytest", *REST_TESTS, "-m", "not gpu and not slow", "-q", "-rs", "-p", "no:cacheprovider",
                "--junitxml", "{out}/tests-rest.xml"]
        if dry:   # CPU: the GPU tests all skip; a small slice of the rest
            return [("gpu tests (skip on CPU)", gpu, {}, 300),
                    ("ops tests (a slice)", [py, "-m", "pytest", "tests/ops/test_reference.py", "-q",
                                             "-p", "no:cacheprovider"], {}, 300)]
        return [("gpu tests", gpu, {"TUCO_REQUIRE_GPU": "1"}, 300), ("ops, engine and streaming tests", rest, {}, 240)]
    if phase == "kernels":
        if dry:
            return [("kernels", [py, "bench/kernels.py", "--device", "cpu", "--shapes", "256x512", "--dtypes",
                                 "float32", "--norms", "both", "--repeats", "1", "--no-compile"], {}, 300),
                    ("engine overhead (small)", [py, "bench/engine_overhead.py", "--device", "cpu", "--hidden", "128",
                                                 "--layers", "2", "--batch", "2", "--seq", "32", "--repeats", "1"],
                     {}, 300)]
        return [("kernels", [py, "bench/kernels.py", "--shapes", "16384x5120,4096x4096", "--dtypes",
                             "bfloat16,float32", "--norms", "both", "--sweep-configs"], {}, 300),
                ("engine overhead (small)", [py, "bench/engine_overhead.py"], {}, 60),
                ("engine overhead (Llama-2-7B shape)", [py, "bench/engine_overhead.py", "--preset", "llama2-7b",
                                                        "--batch", "32", "--seq", "256", "--repeats", "3"], {}, 180)]
    if dry:
        return [("stream", [py, "bench/stream.py", "--small", "--device", "cpu"], {}, 300)]
    return [("stream", [py, "bench/stream.py"], {}, 520)]


def device_slug() -> str:
    try:
        import torch

        if torch.cuda.is_available():
            return re.sub(r"[^A-Za-z0-9]+", "-", torch.cuda.get_device_name(0)).strip("-").lower()
    except ImportError:
        pass
    return "cpu"


def ensure_installed(dry: bool, log) -> None:
    """The package importable from this Python with a tuco_kernels._C built from the current csrc/."""
    check = [sys.executable, "-c", "import tuco_kernels.ops.extension as e; s = e.load(); "
             "print(s.loaded and s.how.startswith('tuco_kernels._C (built by setup.py)') and (s.with_cuda or "
             "not __import__('torch').cuda.is_available()))"]
    if subprocess.run(check, capture_output=True, text=True, cwd=ROOT).stdout.strip().endswith("True"):
        log("install: tuco_kernels._C is built from the current csrc/; reused")
        return
    if dry:
        log("install: dry run; not installing (the tests use this checkout as it is)")
        return
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
           "MAX_JOBS": str(os.cpu_count() or 4)}
    t0 = time.perf_counter()
    pip = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "-e", "."],
                         cwd=ROOT, env=env, capture_output=True, text=True)
    log(f"install: pip install --no-deps --no-build-isolation -e . -> exit {pip.returncode} "
        f"in {time.perf_counter() - t0:.0f} s")
    if pip.returncode != 0:
        log(pip.stdout[-3000:] + pip.stderr[-3000:])
        inplace = subprocess.run([sys.executable, "setup.py", "build_ext", "--inplace"], cwd=ROOT, env=env,
                                 capture_output=True, text=True)
        log(f"install: setup.py build_ext --inplace -> exit {inplace.returncode}; PYTHONPATH set to the checkout")
        os.environ["PYTHONPATH"] = f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"
    for line in (pip.stderr or "").splitlines():
        if line.startswith("tuco_kernels:"):
            log(f"install: {line}")


def run_step(name, command, extra_env, timeout, out: Path, deadline: float, log) -> tuple[str, list[str]]:
    """Run one step, its output teed to <out>/<phase>.log as it comes; returns (status, target lines)."""
    left = deadline - time.monotonic()
    if left < 30:
        log(f"## {name}: NOT RUN (the phase's {PHASE_SECONDS} s are spent)")
        return "not run (time)", []
    env = {**os.environ, "TUCO_BENCH_RESULTS": str(out), "PYTHONUNBUFFERED": "1", **extra_env}
    cwd = ROOT / "bench" if command[1].startswith("bench/") else ROOT
    if cwd != ROOT:
        command = [command[0], command[1].removeprefix("bench/"), *command[2:]]
    command = [c.replace("{out}", str(out)) for c in command]
    log(f"## {name}: {' '.join(command)}")
    t0 = time.perf_counter()
    targets, status = [], "ok"
    proc = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    limit = min(timeout, left)
    watchdog = threading.Timer(limit, proc.kill)   # also when the step hangs without printing anything
    watchdog.start()
    try:
        for line in proc.stdout:
            log(line.rstrip("\n"))
            if line.startswith("target: "):
                targets.append(line.strip())
        proc.wait()
    finally:
        watchdog.cancel()
        if proc.poll() is None:
            proc.kill()
    if time.perf_counter() - t0 >= limit - 1 and proc.returncode != 0:
        status = f"killed after {limit:.0f} s"
    if status == "ok" and proc.returncode != 0:
        status = f"exit {proc.returncode}"
    log(f"## {name}: {status} in {time.perf_counter() - t0:.0f} s")
    return status, targets


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--phase", default="all", choices=("all", *PHASES))
    ap.add_argument("--dry-run", action="store_true", help="the plumbing on CPU with tiny shapes")
    ap.add_argument("--out", help="output folder (default: $OUT, else bench/results/gpu-check/<device>/)")
    args = ap.parse_args()

    import torch

    if not args.dry_run and not torch.cuda.is_available():
        print("gpu-check: error: no CUDA device is visible (torch.cuda.is_available() is False); a GPU check without "
              "a GPU would pass by skipping everything. Use DRY=1 for the plumbing on CPU.", file=sys.stderr)
        return 2
    out = Path(args.out or os.environ.get("OUT") or ROOT / "bench" / "results" / "gpu-check" / device_slug())
    out.mkdir(parents=True, exist_ok=True)
    phases = PHASES if args.phase == "all" else (args.phase,)
    summary_path = out / "summary.md"
    failed = False
    for phase in phases:
        log_file = (out / f"{phase}.log").open("a", encoding="utf-8")

        def log(text, _f=log_file):
            _f.write(text + "\n")
            _f.flush()
            print(text, flush=True)

        deadline = time.monotonic() + PHASE_SECONDS
        stamp = datetime.datetime.now().isoformat(timespec="seconds")
        log(f"# gpu-check {phase}{' (dry run)' if args.dry_run else ''}, {stamp}")
        ensure_installed(args.dry_run, log)
        info = subprocess.run([sys.executable, "-m", "tuco_kernels.cli", "info"], cwd=ROOT, capture_output=True,
                              text=True)
        (out / "info.txt").write_text(info.stdout + info.stderr)
        log(info.stdout.rstrip())
        results = [(name, *run_step(name, cmd, env, timeout, out, deadline, log))
                   for name, cmd, env, timeout in steps(phase, args.dry_run)]
        log_file.close()
        versions = [ln.split(None, 1) for ln in info.stdout.splitlines()
                    if ln.split(None, 1)[0] in ("python", "torch", "triton", "transformers", "cuda")]
        lines = [f"## {phase}{' (dry run: CPU, tiny shapes, numbers meaningless)' if args.dry_run else ''}",
                 f"{stamp}; " + "; ".join(f"{k} {v.strip()}" for k, v in versions if len((k, v)) == 2), ""]
        for name, status, targets in results:
            if args.dry_run:   # tiny shapes on a CPU: speeds mean nothing; equalities (streamed = resident) still hold
                targets = [t if "=" in t.split(":")[1] else t.rsplit(" ", 1)[0] + " (dry run: not judged)"
                           for t in targets]
            lines.append(f"- {name}: **{status}**")
            lines += [f"  - {t.removeprefix('target: ')}" for t in targets]
            failed |= status != "ok" or any(t.endswith("FAIL") for t in targets)
        with summary_path.open("a", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n\n")
    print(f"\ngpu-check: results in {out} (summary.md, *.csv, *.log)")
    print(summary_path.read_text())
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
