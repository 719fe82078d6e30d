"""`make gpu-check DRY=1`: the GPU check's plumbing runs on CPU (tiny shapes) and leaves every result file.

The dry run goes through every phase exactly as on a GPU machine (install check, `tuco info`, each step's
log, CSV rows as they are measured, the target lines collected into summary.md), so the first hour on a GPU is
spent measuring, not debugging the script. It includes bench/stream.py's small shape, whose TuCo must equal the
resident pair's, streamed from page-locked memory and from disk alike.
"""

import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent


@pytest.mark.slow
def test_gpu_check_dry_run_writes_every_result(tmp_path):
    out = tmp_path / "gpu-check"
    proc = subprocess.run([sys.executable, str(HERE / "gpu_check.py"), "--dry-run", "--out", str(out)],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    files = {p.name for p in out.iterdir()}
    assert {"summary.md", "info.txt", "tests.log", "kernels.log", "stream.log", "kernels.csv", "engine_overhead.csv",
            "stream.csv", "tests-gpu.xml"} <= files, files
    summary = (out / "summary.md").read_text()
    for phase in ("tests", "kernels", "stream"):
        assert f"## {phase} (dry run" in summary
    assert "**ok**" in summary and "FAIL" not in summary and "exit " not in summary
    assert "small model tuco / one HF forward:" in summary and "(dry run: not judged)" in summary   # a speed
    assert "streamed TuCo = resident TuCo (max |diff|): 0.00e+00 (goal ≤ 1e-6) PASS" in summary
    assert "disk-streamed TuCo = page-locked TuCo (max |diff|): 0.00e+00 (goal 0) PASS" in summary
    assert "prompt-by-prompt streaming, no prefetch" in (out / "stream.log").read_text()
    rows = (out / "kernels.csv").read_text().splitlines()
    assert rows[0].startswith("date,device,torch,triton,transformers,python,provider") and len(rows) > 2


def test_gpu_check_refuses_to_run_without_a_gpu():
    """Without --dry-run and without CUDA it stops at once: a GPU check that skips everything must not pass."""
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present: the refusal applies to machines without one")
    proc = subprocess.run([sys.executable, str(HERE / "gpu_check.py"), "--phase", "tests"], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 2 and "no CUDA device is visible" in proc.stderr


def test_every_file_a_gpu_phase_runs_exists():
    """The GPU phases name test files and scripts that exist (a moved test once made the real run fail at once,
    which the dry run, taking another slice, did not show)."""
    sys.path.insert(0, str(HERE))
    try:
        import gpu_check
    finally:
        sys.path.remove(str(HERE))
    root = HERE.parent
    named = {arg for phase in gpu_check.PHASES for _, cmd, _, _ in gpu_check.steps(phase, dry=False)
             for arg in cmd if arg.startswith(("tests", "bench/"))}
    assert named and all((root / arg).exists() for arg in named), sorted(a for a in named if not (root / a).exists())
