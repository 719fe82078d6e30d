"""Which CUDA toolkit builds the CUDA op (build_config.find_cuda_tree), on fake toolkits laid out as real ones are.

torch's own guess takes the folder above the first ``nvcc`` on the PATH. Where that nvcc is a wrapper script (as on
the development machines) or a link, the guess has no CUDA headers, and the build used to fall back to the CPU op
without a word; on a GPU that skipped every CUDA-backend test.
"""

import os
import shutil
from pathlib import Path

import pytest

from tuco_kernels.ops import build_config


def fake_toolkit(root: Path) -> Path:
    """bin/nvcc answering --version and --dryrun (with the TOP line real nvcc prints) and include/cuda_runtime.h."""
    (root / "bin").mkdir(parents=True)
    (root / "include").mkdir()
    (root / "include" / "cuda_runtime.h").write_text("/* fake */\n")
    nvcc = root / "bin" / "nvcc"
    nvcc.write_text('#!/bin/sh\ncase "$*" in\n'
                    f'  *--dryrun*) echo "#\\$ _HERE_={root}/bin" >&2; echo "#\\$ TOP={root}/bin/.." >&2 ;;\n'
                    '  *) echo "Cuda compilation tools, release 13.0, V13.0.88" ;;\nesac\n')
    nvcc.chmod(0o755)
    return root


@pytest.fixture
def clean(monkeypatch, tmp_path):
    """No CUDA_HOME/CUDA_PATH, an empty PATH folder first, no pip toolkit, no default location."""
    for var in ("CUDA_HOME", "CUDA_PATH"):
        monkeypatch.delenv(var, raising=False)
    path_dir = tmp_path / "path"
    path_dir.mkdir()
    monkeypatch.setenv("PATH", f"{path_dir}{os.pathsep}/usr/bin{os.pathsep}/bin")
    monkeypatch.setattr(build_config, "_pip_toolkits", lambda: [])
    monkeypatch.setattr(build_config, "DEFAULT_CUDA_HOME", str(tmp_path / "usr-local-cuda"))
    return path_dir


def test_cuda_home_is_taken_first(clean, tmp_path, monkeypatch):
    tree = fake_toolkit(tmp_path / "cuda-12.9")
    monkeypatch.setenv("CUDA_HOME", str(tree))
    found = build_config.find_cuda_tree(torch_guess="/elsewhere")
    assert found == build_config.CudaTree(str(tree), "$CUDA_HOME")


def test_a_linked_nvcc_is_followed_to_its_toolkit(clean, tmp_path, monkeypatch):
    tree = fake_toolkit(tmp_path / "opt" / "cuda-13.0")
    (clean / "nvcc").symlink_to(tree / "bin" / "nvcc")
    monkeypatch.setenv("CUDA_HOME", str(tmp_path / "missing"))
    found = build_config.find_cuda_tree(torch_guess=str(clean.parent))
    assert found.path == str(tree)
    assert found.how.startswith(f"nvcc's real location ({clean / 'nvcc'} -> {tree / 'bin' / 'nvcc'})")
    assert f"passed over: $CUDA_HOME: {tmp_path / 'missing'} does not exist" in found.how


def test_a_wrapper_script_is_asked_for_its_toolkit(clean, tmp_path):
    """The development machines' case: /usr/local/bin/nvcc is `exec /usr/local/cuda-13.0/bin/nvcc "$@"`, and
    /usr/local (torch's guess) has bin/nvcc but no CUDA headers."""
    tree = fake_toolkit(tmp_path / "cuda-13.0")
    wrapper = clean / "nvcc"
    wrapper.write_text(f'#!/bin/sh\nexec {tree / "bin" / "nvcc"} "$@"\n')
    wrapper.chmod(0o755)
    found = build_config.find_cuda_tree(torch_guess=str(clean.parent))
    assert found.path == str(tree), found
    assert found.how.startswith(f"nvcc's own report (TOP of `{wrapper} --dryrun`)")
    assert f"{clean.parent} has no bin/nvcc" in found.how        # what torch would have taken, and why not


def test_torch_guess_then_the_default_location(clean, tmp_path, monkeypatch):
    tree = fake_toolkit(tmp_path / "torch-guess")
    assert build_config.find_cuda_tree(torch_guess=str(tree)).how.startswith("torch's own guess")
    default = fake_toolkit(tmp_path / "usr-local-cuda")
    found = build_config.find_cuda_tree(torch_guess=None)
    assert found == build_config.CudaTree(str(default), "the default location")


def test_no_toolkit_says_what_each_place_lacked(clean, tmp_path, monkeypatch):
    half = tmp_path / "half"
    (half / "bin").mkdir(parents=True)
    monkeypatch.setenv("CUDA_PATH", str(half))
    found = build_config.find_cuda_tree(torch_guess=None)
    assert found.path is None
    assert found.how.startswith("no CUDA toolkit found: no nvcc on the PATH; $CUDA_PATH: ")
    assert f"{half} has no bin/nvcc" in found.how and "the default location: " in found.how
    assert "no CUDA toolkit (nvcc) found" in build_config.cuda_build_problem("13.0", found.path)


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="no nvcc on this machine's PATH")
def test_this_machines_nvcc_leads_to_a_toolkit_with_headers():
    found = build_config.find_cuda_tree(torch_guess=None)
    assert found.path is not None and build_config.cuda_tree_problem(found.path) is None, found
