"""`make gpu-check`: the GPU path checked and measured in ONE call of the device machine (10 minutes at most).

A lent GPU comes with 15 minutes of device time in all (its start included), 10 minutes a command, no network,
and only 8 files back from ``$OUT``. So one run does everything, most valuable first, each step under its own
time limit; the limits add up to at most 540 s, printed first as ``budget: N s``:

    preflight    the device, the CUDA tree and nvcc chosen (and how), torch/triton/transformers versions
    install      one ``pip install --no-deps --no-build-isolation -e .`` (none when tuco_kernels._C is already
                 built from the current csrc/ with its CUDA op); on a CUDA machine a build without the CUDA op
                 fails the step (TUCO_BUILD_CUDA=require), it is never a quiet fallback
    gpu tests    every test marked ``gpu`` with TUCO_REQUIRE_GPU=1 (a GPU test that skips is a failure)
    kernels      bench/kernels.py at the target shape 16384x5120 bf16, with and without norms, and the Triton
                 launch-config sweep
    engine 7B    bench/engine_overhead.py on a Llama-2-7B-shaped pair
    stream       bench/stream.py on the Llama-2-13B-shaped pair, sized to the time left (fewer prompts, budgets
                 or disk layers; the same targets)

A step that fails or runs out of time is recorded and the next one runs. Everything is written to a work folder
(logs, CSVs with device, versions and date, junit XML, ``summary.md``); after every step ``$OUT`` (or ``--out``)
receives two files: ``summary.md`` and ``gpu-check.tar.gz`` holding the work folder as ``<device>/...``, so that a
run killed at its limit still returns what it measured. To commit a run's results:
``tar -xzf gpu-check.tar.gz -C bench/results/gpu-check/``. The exit status is 1 when a step failed or a target
was missed, 2 when there is no GPU.

    python3 bench/gpu_check.py                  # all steps in one call (make gpu-check)
    python3 bench/gpu_check.py --phase stream   # one phase, fuller, for a second call: tests | kernels | stream
    python3 bench/gpu_check.py --dry-run        # the same plumbing on CPU with tiny shapes (CI runs it)
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import os
import platform
import re
import shutil
import subprocess
import sys
import tarfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _load_build_config():
    """tuco_kernels/ops/build_config.py by path (standard library only): usable before anything is installed."""
    spec = importlib.util.spec_from_file_location("tuco_build_config", ROOT / "tuco_kernels" / "ops" / "build_config.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


build_config = _load_build_config()

TOTAL_SECONDS = 540            # one 10-minute call, with a minute for the machine's own start and the transfers
PHASES = ("tests", "kernels", "stream")
REST_TESTS = ("tests/ops", "tests/core/test_engine.py", "tests/offload/test_streamed_pair.py", "tests/core/test_budget.py")
TARGET_SHAPE = "16384x5120"    # a 13B layer's hidden states for 16384 tokens


@dataclass
class Step:
    name: str
    limit: int                              # seconds
    command: list[str] | None = None        # None: run in this process (preflight, install)
    env: dict = field(default_factory=dict)
    takes_the_rest: bool = False            # the last step gets whatever the earlier ones left of the total


@dataclass
class Outcome:
    name: str
    status: str = "not run"
    seconds: float = 0.0
    limit: float = 0.0
    targets: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def stream_sizing(seconds_left: float, dry: bool) -> tuple[list[str], str]:
    """bench/stream.py's arguments for the time left: the full protocol when it fits, else fewer prompts, one
    budget and fewer disk layers (the targets are ratios and hold at any size)."""
    if dry:
        return ["--small", "--device", "cpu"], "dry run: the small shape"
    tiers = [(300, 512, "8GiB,24GiB", 8, 4, 64), (200, 256, "8GiB", 4, 2, 32), (0, 128, "8GiB", 2, 2, 16)]
    for floor, prompts, budgets, disk_layers, baseline, lora_prompts in tiers:
        if seconds_left >= floor:
            args = ["--prompts", str(prompts), "--budgets", budgets, "--disk-layers", str(disk_layers),
                    "--baseline-prompts", str(baseline), "--lora-prompts", str(lora_prompts)]
            full = "the full protocol" if floor == tiers[0][0] else "reduced from 512 prompts, 8GiB,24GiB, 8 disk layers"
            return args, f"{seconds_left:.0f} s left: {prompts} prompts, budgets {budgets}, {disk_layers} disk layers ({full})"
    raise AssertionError("unreachable")


def plan(phase: str, dry: bool) -> list[Step]:
    """The steps of one call, in order of value."""
    py = sys.executable
    pytest = [py, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", "--benchmark-disable"]
    gpu_tests = Step("gpu tests", 120, [*pytest, "tests", "bench", "-m", "gpu", "--junitxml", "{work}/tests-gpu.xml"],
                     {} if dry else {"TUCO_REQUIRE_GPU": "1"})
    rest_tests = Step("ops, engine and streaming tests", 200,
                      [*pytest, *REST_TESTS, "-m", "not gpu and not slow", "--junitxml", "{work}/tests-rest.xml"])
    if dry:
        rest_tests.command = [*pytest, "tests/ops/test_reference.py"]
    kernels_target = ["bench/kernels.py", "--shapes", TARGET_SHAPE, "--dtypes", "bfloat16", "--norms", "both",
                      "--sweep-configs"]
    kernels_full = ["bench/kernels.py", "--shapes", f"{TARGET_SHAPE},4096x4096", "--dtypes", "bfloat16,float32",
                    "--norms", "both", "--sweep-configs"]
    kernels_dry = ["bench/kernels.py", "--device", "cpu", "--shapes", "256x512", "--dtypes", "float32", "--norms",
                   "both", "--repeats", "1", "--no-compile"]
    engine_7b = ["bench/engine_overhead.py", "--preset", "llama2-7b", "--batch", "32", "--seq", "256", "--repeats", "3"]
    engine_dry = ["bench/engine_overhead.py", "--device", "cpu", "--hidden", "128", "--layers", "2", "--batch", "2",
                  "--seq", "32", "--repeats", "1"]
    preflight, install = Step("preflight", 15), Step("install", 120)
    stream = Step("stream", 0, ["bench/stream.py"], takes_the_rest=True)
    if phase == "all":
        steps = [preflight, install, gpu_tests,
                 Step("kernels", 90, [py, *(kernels_dry if dry else kernels_target)]),
                 Step("engine 7B", 60, [py, *(engine_dry if dry else engine_7b)]), stream]
    elif phase == "tests":
        gpu_tests.limit = 200
        steps = [preflight, install, gpu_tests, rest_tests]
    elif phase == "kernels":
        steps = [preflight, install, Step("kernels", 200, [py, *(kernels_dry if dry else kernels_full)]),
                 Step("engine small", 60, [py, *(engine_dry if dry else ["bench/engine_overhead.py"])]),
                 Step("engine 7B", 120, [py, *(engine_dry if dry else engine_7b)])]
    else:
        steps = [preflight, install, stream]
    fixed = sum(s.limit for s in steps if not s.takes_the_rest)
    for s in steps:
        if s.takes_the_rest:
            s.limit = TOTAL_SECONDS - fixed
    for s in steps:
        if s.command and s.command[0] != py:
            s.command = [py, *s.command]
    assert sum(s.limit for s in steps) <= TOTAL_SECONDS, [(s.name, s.limit) for s in steps]
    return steps


def device_slug() -> str:
    import torch

    if torch.cuda.is_available():
        return re.sub(r"[^A-Za-z0-9]+", "-", torch.cuda.get_device_name(0)).strip("-").lower()
    return "cpu"


class Run:
    """One call: its work folder, its log, the summary and the delivery to $OUT after every step."""

    def __init__(self, phase: str, dry: bool, work: Path, out: Path | None):
        self.phase, self.dry, self.work, self.out = phase, dry, work, out
        self.work.mkdir(parents=True, exist_ok=True)
        self.log_file = (work / "gpu-check.log").open("a", encoding="utf-8")
        self.outcomes: list[Outcome] = []
        self.facts: list[tuple[str, str]] = []
        self.started = time.monotonic()
        self.stamp = datetime.datetime.now().isoformat(timespec="seconds")
        self.env = {**os.environ, "TUCO_BENCH_RESULTS": str(work), "PYTHONUNBUFFERED": "1"}

    def log(self, text: str) -> None:
        self.log_file.write(text + "\n")
        self.log_file.flush()
        print(text, flush=True)

    # ---------------------------------------------------------------------------------------- steps

    def preflight(self, outcome: Outcome) -> None:
        import torch

        facts = self.facts
        facts.append(("python", platform.python_version() + f" ({sys.executable})"))
        facts.append(("torch", f"{torch.__version__} (CUDA {torch.version.cuda or 'none'})"))
        for name in ("triton", "transformers"):
            try:
                facts.append((name, __import__(name).__version__))
            except ImportError:
                facts.append((name, "not installed"))
        cuda = torch.cuda.is_available()
        if cuda:
            props = torch.cuda.get_device_properties(0)
            facts.append(("device", f"{props.name}, sm_{props.major}{props.minor}, {props.multi_processor_count} SMs, "
                                    f"{props.total_memory / 2**30:.1f} GiB"))
            smi = shutil.which("nvidia-smi")
            if smi:
                q = subprocess.run([smi, "--query-gpu=driver_version,clocks.sm,clocks.mem,temperature.gpu",
                                    "--format=csv,noheader"], capture_output=True, text=True, timeout=30)
                facts.append(("driver, clocks, temperature", q.stdout.strip() or q.stderr.strip()))
        else:
            facts.append(("device", "no CUDA device (dry run: CPU)" if self.dry else "no CUDA device"))
        from torch.utils import cpp_extension

        tree = build_config.find_cuda_tree(cpp_extension.CUDA_HOME)
        facts.append(("torch's CUDA_HOME guess", str(cpp_extension.CUDA_HOME)))
        facts.append(("CUDA tree", f"{tree.path} (found from {tree.how})" if tree.path else tree.how))
        facts.append(("nvcc on PATH", str(shutil.which("nvcc"))))
        if tree.path:
            self.env["CUDA_HOME"] = tree.path
            version = subprocess.run([os.path.join(tree.path, "bin", "nvcc"), "--version"], capture_output=True,
                                     text=True, timeout=60).stdout
            release = re.search(r"release [^\n]*", version)
            facts.append(("nvcc", release.group(0) if release else version.strip()[-200:]))
        for key, value in facts:
            self.log(f"{key}: {value}")
        if cuda:
            problem = build_config.cuda_build_problem(torch.version.cuda, tree.path)
            if problem is not None:
                outcome.status = f"FAIL: the CUDA op cannot be built: {problem}"

    def install(self, outcome: Outcome) -> None:
        import torch

        want_cuda = torch.cuda.is_available()
        probe = [sys.executable, "-c", "from tuco_kernels.ops import extension as e; s = e.prebuilt(); "
                 "print('PREBUILT', s.loaded, s.with_cuda, '|', s.how)"]

        def prebuilt() -> tuple[bool, bool, str]:
            out = subprocess.run(probe, cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=300)
            line = next((ln for ln in out.stdout.splitlines() if ln.startswith("PREBUILT")), "")
            if not line:
                return False, False, (out.stderr.strip().splitlines() or ["the probe printed nothing"])[-1]
            flags, how = line.split(" | ", 1)
            _, loaded, with_cuda = flags.split()
            return loaded == "True", with_cuda == "True", how

        loaded, with_cuda, how = prebuilt()
        if loaded and (with_cuda or not want_cuda):
            self.log(f"install: {how}: built from the current csrc/; reused")
        elif self.dry:
            self.log(f"install: dry run, not installing; the compiled ops here: {how}")
        else:
            env = {**self.env, "TUCO_BUILD_CUDA": "require", "MAX_JOBS": str(os.cpu_count() or 4),
                   "PATH": f"{Path(sys.executable).parent}{os.pathsep}{self.env.get('PATH', '')}"}
            command = [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "-e", "."]
            status = self.stream_command(command, env, outcome.limit - 20, self.work / "install.log")
            loaded, with_cuda, how = prebuilt()
            self.log(f"install: {' '.join(command[2:])} -> {status}; compiled ops: {how}")
            if status != "ok":
                outcome.status = f"FAIL: pip install {status}"
        if want_cuda and not with_cuda and outcome.status == "ok":
            outcome.status = "FAIL: tuco_kernels._C has no CUDA op on a CUDA machine"
        info = subprocess.run([sys.executable, "-m", "tuco_kernels.cli", "info"], cwd=ROOT, env=self.env,
                              capture_output=True, text=True, timeout=300)
        (self.work / "info.txt").write_text(info.stdout + info.stderr)
        self.log(info.stdout.rstrip())
        self.facts.append(("compiled ops", how))

    def stream_command(self, command: list[str], env: dict, limit: float, log_path: Path | None = None) -> str:
        """Run ``command``, its output into the log as it comes, killed after ``limit`` s; 'ok', 'exit N' or
        'killed after N s'."""
        cwd = ROOT / "bench" if len(command) > 1 and command[1].startswith("bench/") else ROOT
        if cwd != ROOT:
            command = [command[0], command[1].removeprefix("bench/"), *command[2:]]
        extra_log = log_path.open("a", encoding="utf-8") if log_path else None
        proc = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True)
        killed = threading.Event()

        def kill():
            killed.set()
            try:
                os.killpg(proc.pid, 9)        # the step and everything it started (pytest's workers, compilers)
            except ProcessLookupError:
                pass

        watchdog = threading.Timer(max(1.0, limit), kill)
        watchdog.start()
        try:
            for line in proc.stdout:
                if extra_log:
                    extra_log.write(line)
                self.log(line.rstrip("\n"))
                if line.startswith("target: "):
                    self._current.targets.append(line.strip().removeprefix("target: "))
            proc.wait()
        finally:
            watchdog.cancel()
            if extra_log:
                extra_log.close()
        if killed.is_set():
            return f"killed after {limit:.0f} s"
        return "ok" if proc.returncode == 0 else f"exit {proc.returncode}"

    def run_step(self, step: Step) -> Outcome:
        outcome = Outcome(step.name, status="ok")
        self._current = outcome
        elapsed = time.monotonic() - self.started
        budget_left = TOTAL_SECONDS - elapsed
        outcome.limit = min(step.limit, budget_left) if not step.takes_the_rest else budget_left
        if budget_left < 20:
            outcome.status = f"not run ({budget_left:.0f} s of the {TOTAL_SECONDS} s left)"
            self.log(f"## {step.name}: {outcome.status}")
            return outcome
        command = [c.replace("{work}", str(self.work)) for c in step.command] if step.command else None
        if command and step.name == "stream":
            args, sizing = stream_sizing(outcome.limit, self.dry)
            command += args
            outcome.notes.append(f"sized: {sizing}")
        self.log(f"## {step.name} (limit {outcome.limit:.0f} s): {' '.join(command) if command else 'in process'}")
        t0 = time.monotonic()
        try:
            if step.name == "preflight":
                self.preflight(outcome)
            elif step.name == "install":
                self.install(outcome)
            else:
                status = self.stream_command(command, {**self.env, **step.env}, outcome.limit)
                if status != "ok":
                    outcome.status = f"FAIL: {status}"
        except Exception as exc:    # a broken step is a finding; the next steps still run
            outcome.status = f"FAIL: {type(exc).__name__}: {exc}"
        outcome.seconds = time.monotonic() - t0
        if self.dry:   # tiny shapes on a CPU: speeds mean nothing; equalities (streamed = resident) still hold
            outcome.targets = [t if "=" in t.split(":")[0] else t.rsplit(" ", 1)[0] + " (dry run: not judged)"
                               for t in outcome.targets]
        self.log(f"## {step.name}: {outcome.status} in {outcome.seconds:.0f} s")
        return outcome

    # ---------------------------------------------------------------------------------------- results

    def failed(self) -> bool:
        return any(o.status != "ok" or any(t.endswith("FAIL") for t in o.targets) for o in self.outcomes)

    def summary(self, steps: list[Step]) -> str:
        title = "all steps, one call" if self.phase == "all" else f"phase {self.phase}"
        lines = [f"# gpu-check ({title}){' — DRY RUN: CPU, tiny shapes, speeds not judged' if self.dry else ''}", "",
                 f"{self.stamp}; budget {sum(s.limit for s in steps)} s; elapsed "
                 f"{time.monotonic() - self.started:.0f} s", ""]
        lines += [f"- {key}: {value}" for key, value in self.facts]
        lines += ["", "| step | status | seconds | limit |", "|---|---|---|---|"]
        done = {o.name: o for o in self.outcomes}
        for s in steps:
            o = done.get(s.name)
            lines.append(f"| {s.name} | {o.status if o else 'not reached'} | {o.seconds:.0f} | {o.limit:.0f} |"
                         if o else f"| {s.name} | not reached | | {s.limit} |")
        targets = [(o.name, t) for o in self.outcomes for t in o.targets]
        notes = [(o.name, n) for o in self.outcomes for n in o.notes]
        if notes:
            lines += ["", "## Notes", *[f"- {name}: {n}" for name, n in notes]]
        lines += ["", "## Targets", *([f"- {name}: {t}" for name, t in targets] or ["- none measured"])]
        verdict = "FAILED" if self.failed() else "passed"
        lines += ["", f"**{verdict}**: {sum(o.status == 'ok' for o in self.outcomes)} of {len(steps)} steps ok, "
                      f"{sum(t.endswith('FAIL') for _, t in targets)} of {len(targets)} targets missed."]
        return "\n".join(lines) + "\n"

    def deliver(self, steps: list[Step], slug: str) -> None:
        """summary.md into the work folder, and summary.md + one tarball of the work folder into --out/$OUT."""
        text = self.summary(steps)
        (self.work / "summary.md").write_text(text, encoding="utf-8")
        if self.out is None:
            return
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "summary.md").write_text(text, encoding="utf-8")
        partial = self.out / "gpu-check.tar.gz.partial"
        with tarfile.open(partial, "w:gz") as tar:
            tar.add(self.work, arcname=slug)
        partial.replace(self.out / "gpu-check.tar.gz")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--phase", default="all", choices=("all", *PHASES))
    ap.add_argument("--dry-run", action="store_true", help="the plumbing on CPU with tiny shapes")
    ap.add_argument("--out", help="where summary.md and gpu-check.tar.gz go (default: $OUT when set)")
    ap.add_argument("--work", help="the work folder (default: out/gpu-check/<device>-<time> in the checkout)")
    args = ap.parse_args()

    import torch

    if not args.dry_run and not torch.cuda.is_available():
        print("gpu-check: error: no CUDA device is visible (torch.cuda.is_available() is False); a GPU check without "
              "a GPU would pass by skipping everything. Use --dry-run (make gpu-check DRY=1) for the plumbing on CPU.",
              file=sys.stderr)
        return 2
    slug = device_slug()
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    work = Path(args.work) if args.work else ROOT / "out" / "gpu-check" / f"{slug}-{stamp}"
    out = Path(args.out) if args.out else (Path(os.environ["OUT"]) if os.environ.get("OUT") else None)
    steps = plan(args.phase, args.dry_run)
    run = Run(args.phase, args.dry_run, work, out)
    shares = ", ".join(f"{s.name} {s.limit}" + (" (what is left)" if s.takes_the_rest else "") for s in steps)
    run.log(f"budget: {sum(s.limit for s in steps)} s ({shares})")
    run.log(f"work folder: {work}" + (f"; delivered to {out} (summary.md, gpu-check.tar.gz)" if out else ""))
    for step in steps:
        run.outcomes.append(run.run_step(step))
        run.deliver(steps, slug)
    run.log("")
    run.log(run.summary(steps))
    run.log(f"gpu-check: results in {work}" + (f" and {out}" if out else ""))
    return 1 if run.failed() else 0


if __name__ == "__main__":
    sys.exit(main())
