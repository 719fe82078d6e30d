"""`make gpu-check`: one call of the device machine (at most 540 s of step limits), at most 8 files back.

The dry run goes through every step exactly as on a GPU machine (preflight, the install check, `tuco info`, each
step's output in one log, CSV rows as they are measured, the target lines collected into summary.md, the tarball
delivered after every step), so the first minutes on a GPU are spent measuring, not debugging the script. It
includes bench/stream.py's small shape, whose TuCo must equal the resident pair's, streamed from page-locked memory
and from disk alike.
"""

import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

HERE = Path(__file__).parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
try:
    import gpu_check
finally:
    sys.path.remove(str(HERE))

DEVICE_FILE_LIMIT = 8     # files the device machine hands back from $OUT


@pytest.mark.slow
def test_dry_run_fits_one_call_and_delivers_two_files(tmp_path):
    out, work = tmp_path / "out", tmp_path / "work"
    env = {**os.environ, "OUT": str(out)}          # as on the device machine: $OUT, no --out
    proc = subprocess.run(["make", "-s", "gpu-check", "DRY=1", "PY=" + sys.executable], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    budget = re.match(r"budget: (\d+) s \(preflight \d+, install \d+, gpu tests \d+, kernels \d+, engine 7B \d+, "
                      r"stream \d+ \(what is left\)\)", proc.stdout)
    assert budget and int(budget.group(1)) <= 540, proc.stdout[:500]
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert files == ["gpu-check.tar.gz", "summary.md"] and len(files) <= DEVICE_FILE_LIMIT, files
    with tarfile.open(out / "gpu-check.tar.gz") as tar:
        names = set(tar.getnames())
        summary_in_tar = tar.extractfile("cpu/summary.md").read().decode()
    assert {"cpu/summary.md", "cpu/info.txt", "cpu/gpu-check.log", "cpu/kernels.csv", "cpu/engine_overhead.csv",
            "cpu/stream.csv", "cpu/tests-gpu.xml"} <= names, names
    summary = (out / "summary.md").read_text()
    assert summary == summary_in_tar
    assert "DRY RUN" in summary and "| stream | ok |" in summary and "**passed**: 6 of 6 steps ok" in summary
    assert "CUDA tree:" in summary and "torch: 2." in summary and "compiled ops: tuco_kernels._C" in summary
    assert "small model tuco / one HF forward:" in summary and "(dry run: not judged)" in summary   # a speed
    assert "streamed TuCo = resident TuCo (max |diff|): 0.00e+00 (goal ≤ 1e-6) PASS" in summary
    assert "disk-streamed TuCo = page-locked TuCo (max |diff|): 0.00e+00 (goal 0) PASS" in summary
    assert "prompt-by-prompt streaming, no prefetch" in proc.stdout


def test_gpu_check_refuses_to_run_without_a_gpu():
    """Without --dry-run and without CUDA it stops at once: a GPU check that skips everything must not pass."""
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present: the refusal applies to machines without one")
    proc = subprocess.run([sys.executable, str(HERE / "gpu_check.py"), "--phase", "tests"], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 2 and "no CUDA device is visible" in proc.stderr


@pytest.mark.parametrize("dry", [False, True], ids=["gpu", "dry"])
@pytest.mark.parametrize("phase", ["all", *gpu_check.PHASES])
def test_every_call_fits_the_budget(phase, dry):
    steps = gpu_check.plan(phase, dry)
    assert sum(s.limit for s in steps) <= gpu_check.TOTAL_SECONDS <= 540
    assert [s.name for s in steps[:2]] == ["preflight", "install"]      # one install, before anything uses it
    if phase == "all":
        assert [s.name for s in steps] == ["preflight", "install", "gpu tests", "kernels", "engine 7B", "stream"]
        assert steps[-1].takes_the_rest and steps[-1].limit >= 120
    if not dry and phase in ("all", "tests"):
        assert steps[2].env == {"TUCO_REQUIRE_GPU": "1"} and "gpu" in steps[2].command


def test_the_one_call_measures_the_targets_shape():
    kernels = next(s for s in gpu_check.plan("all", dry=False) if s.name == "kernels").command
    assert kernels[kernels.index("--shapes") + 1] == "16384x5120" and kernels[kernels.index("--dtypes") + 1] == "bfloat16"
    assert kernels[kernels.index("--norms") + 1] == "both" and "--sweep-configs" in kernels
    engine = next(s for s in gpu_check.plan("all", dry=False) if s.name == "engine 7B").command
    assert engine[engine.index("--preset") + 1] == "llama2-7b"


@pytest.mark.parametrize("seconds", [600, 300, 250, 200, 140, 20])
def test_stream_is_sized_to_the_time_left(seconds):
    """Fewer prompts, budgets and disk layers as time runs short; the 8 GiB budget (the target) always stays."""
    args, sizing = gpu_check.stream_sizing(seconds, dry=False)
    prompts = int(args[args.index("--prompts") + 1])
    assert "8GiB" in args[args.index("--budgets") + 1] and str(prompts) in sizing
    assert prompts == (512 if seconds >= 300 else 256 if seconds >= 200 else 128)
    sys.path.insert(0, str(HERE))
    try:
        import stream          # bench/stream.py's own parser accepts them
    finally:
        sys.path.remove(str(HERE))
    parsed = stream.parse_args(args)
    assert parsed.prompts == prompts and parsed.disk_layers >= 2


def test_a_step_past_its_limit_is_killed_and_the_results_still_delivered(tmp_path):
    run = gpu_check.Run("all", False, tmp_path / "work", tmp_path / "out")
    steps = [gpu_check.Step("hangs", 3, [sys.executable, "-c", "print('target: x: 1 (goal 0) PASS', flush=True); "
                                                              "import time; time.sleep(120)"])]
    outcome = run.run_step(steps[0])
    run.outcomes.append(outcome)
    run.deliver(steps, "cpu")
    assert outcome.status == "FAIL: killed after 3 s" and outcome.seconds < 30
    assert outcome.targets == ["x: 1 (goal 0) PASS"]        # what it printed before it was killed is kept
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["gpu-check.tar.gz", "summary.md"]
    assert "| hangs | FAIL: killed after 3 s |" in (tmp_path / "out" / "summary.md").read_text()
    assert run.failed()


def test_every_file_a_gpu_step_runs_exists():
    """The GPU steps name test files and scripts that exist (a moved test once made the real run fail at once,
    which the dry run, taking another slice, did not show)."""
    named = {arg for phase in ("all", *gpu_check.PHASES) for step in gpu_check.plan(phase, dry=False)
             for arg in step.command or [] if arg.startswith(("tests", "bench/"))}
    assert named and all((ROOT / arg).exists() for arg in named), sorted(a for a in named if not (ROOT / a).exists())
