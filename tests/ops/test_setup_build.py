"""setup.py never fails a user's install because of CUDA: a toolkit that cannot work is detected before compiling,
and a CUDA build that fails to compile falls back to the CPU ops, with the reason kept for ``tuco info``. Under
``TUCO_BUILD_CUDA=require`` (make gpu-check) either is an error instead."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tuco_kernels.ops import build_config

ROOT = Path(__file__).resolve().parents[2]
CUDA_HOME = build_config.find_cuda_tree().path


def minimal_source_tree(tree: Path) -> Path:
    """What setup.py needs to build tuco_kernels._C, copied (the build writes _build_info.py into it)."""
    (tree / "tuco_kernels" / "ops").mkdir(parents=True)
    for name in ("setup.py", "pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, tree / name)
    shutil.copytree(ROOT / "csrc", tree / "csrc")
    shutil.copy(ROOT / "tuco_kernels" / "ops" / "build_config.py", tree / "tuco_kernels" / "ops")
    shutil.copy(ROOT / "tuco_kernels" / "_version.py", tree / "tuco_kernels")
    for init in ("tuco_kernels/__init__.py", "tuco_kernels/ops/__init__.py"):
        (tree / init).touch()
    return tree


def test_unusable_toolkits_are_named_before_compiling(monkeypatch, tmp_path):
    monkeypatch.delenv("TUCO_BUILD_CUDA", raising=False)
    assert build_config.cuda_build_problem(None, "/usr/local/cuda") == "torch built without CUDA"
    assert "no CUDA toolkit (nvcc)" in build_config.cuda_build_problem("13.0", None)
    assert "no CUDA toolkit (nvcc)" in build_config.cuda_build_problem("13.0", str(tmp_path))
    monkeypatch.setenv("TUCO_BUILD_CUDA", "0")
    assert build_config.cuda_build_problem("13.0", "/usr/local/cuda") == "TUCO_BUILD_CUDA=0 at build time"


@pytest.mark.skipif(CUDA_HOME is None, reason="nvcc not found: no toolkit to compare versions with")
def test_a_toolkit_of_another_major_version_is_refused(monkeypatch):
    monkeypatch.delenv("TUCO_BUILD_CUDA", raising=False)
    out = subprocess.run([str(Path(CUDA_HOME) / "bin" / "nvcc"), "--version"], capture_output=True, text=True).stdout
    major = int(out.split("release ")[1].split(".")[0])
    problem = build_config.cuda_build_problem(f"{major - 1}.8", CUDA_HOME)
    assert problem.startswith(f"nvcc is CUDA {major}.") and f"torch was built with CUDA {major - 1}.8" in problem
    assert build_config.cuda_build_problem(f"{major}.0", CUDA_HOME) is None


@pytest.mark.slow
@pytest.mark.skipif(CUDA_HOME is None, reason="nvcc not found: the CUDA compile cannot even start here")
def test_failed_cuda_build_falls_back_to_the_cpu_ops(tmp_path):
    """TUCO_BUILD_CUDA=force attempts the CUDA op with this CPU-only torch: nvcc fails (the CPU wheel lacks torch's
    CUDA headers), and the build goes on with the CPU ops, exit 0, the reason recorded."""
    tree = minimal_source_tree(tmp_path / "src")
    env = {**os.environ, "TUCO_BUILD_CUDA": "force", "CUDA_HOME": CUDA_HOME, "TORCH_CUDA_ARCH_LIST": "9.0",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    result = subprocess.run([sys.executable, "setup.py", "-q", "build_ext", "--inplace"], cwd=tree, env=env,
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "the CUDA build of tuco_kernels._C failed" in result.stderr
    assert list((tree / "tuco_kernels").glob("_C*.so"))
    info = (tree / "tuco_kernels" / "_build_info.py").read_text()
    assert "WHY_NO_CUDA = " in info and "the CUDA build failed: Error compiling objects" in info
    check = subprocess.run([sys.executable, "-c", "import torch, tuco_kernels._C; print(torch.ops.tuco.build_info())"],
                           cwd=tree, capture_output=True, text=True, timeout=300)
    assert check.returncode == 0 and check.stdout.strip().endswith("cuda=0"), check.stderr[-2000:]


def test_require_refuses_a_build_without_the_cuda_op(tmp_path):
    """make gpu-check installs with TUCO_BUILD_CUDA=require: on a CUDA machine a missing toolkit must fail the
    install, not leave a CPU-only op that skips every CUDA test. Here torch has no CUDA, which it names."""
    import torch

    if torch.version.cuda is not None:
        pytest.skip("this torch has CUDA: the CUDA op can be built here, so there is nothing to refuse")
    tree = minimal_source_tree(tmp_path / "src")
    env = {**os.environ, "TUCO_BUILD_CUDA": "require"}
    result = subprocess.run([sys.executable, "setup.py", "-q", "build_ext", "--inplace"], cwd=tree, env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode != 0 and not list((tree / "tuco_kernels").glob("_C*.so"))
    assert "TUCO_BUILD_CUDA=require, but the CUDA op cannot be built: torch built without CUDA" in result.stderr
