"""Installing into your own environment, as the README's "Install" section says: a clean clone, the README's own
`pip install` command, into a fresh venv that already holds torch (not through make). The compiled ops are built
against that torch, which pip must neither replace nor upgrade, and `tuco info` works from outside the checkout.
"""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TORCH_PIN = "2.13.0"     # the CPU wheel this machine has (requirements.txt)


def readme_install_command() -> list[str]:
    """The first `pip install` line of the README's Install section, without its comment."""
    from tests.fixtures.readme import code_blocks

    text = (ROOT / "README.md").read_text(encoding="utf-8")
    start, end = text.index("## Install"), text.index("\n## ", text.index("## Install") + 1)
    first_line = text[:start].count("\n") + 1
    last_line = text[:end].count("\n") + 1
    for block in code_blocks(ROOT / "README.md"):
        if block.lang == "bash" and first_line <= block.line <= last_line:
            for line in block.code.splitlines():
                if line.startswith("pip install"):
                    return line.split("#")[0].split()
    raise AssertionError("the README's Install section has no `pip install` line")


def run(cmd, **kw):
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=1500, **kw)
    assert result.returncode == 0, f"{' '.join(map(str, cmd))}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


@pytest.mark.slow
@pytest.mark.network
@pytest.mark.skipif(not (ROOT / ".git").exists() or shutil.which("git") is None, reason="not a git checkout")
def test_pip_install_of_a_clean_clone_builds_against_the_environments_torch(tmp_path):
    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(ROOT), str(clone)])
    venv = tmp_path / "env"
    run([sys.executable, "-m", "venv", str(venv)])
    py, env = venv / "bin" / "python", {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}/usr/bin{os.pathsep}/bin"      # not this checkout's .venv
    run([py, "-m", "pip", "install", "-q", f"torch=={TORCH_PIN}"], env=env)
    command = readme_install_command()
    assert command == ["pip", "install", "."], command
    # the README's command, in the clone (the constraints only keep the other packages at the versions the suite
    # passed with; they do not change what is built or whether torch is touched)
    install = run([py, "-m", *command[:2], "-c", "constraints.txt", *command[2:]], env=env, cwd=clone)
    installed = re.search(r"Successfully installed (.*)", install.stdout)
    assert installed and "tuco-kernels" in installed.group(1).replace("_", "-"), install.stdout[-2000:]
    assert not re.search(r"\btorch-\d", installed.group(1)), "pip replaced the environment's torch"
    info = run([venv / "bin" / "tuco", "info"], env=env, cwd=tmp_path)
    assert re.search(rf"^torch\s+{re.escape(TORCH_PIN)}\+cpu$", info.stdout, re.MULTILINE), info.stdout
    assert re.search(r"^compiled ops\s+tuco_kernels\._C \(built by setup\.py\)", info.stdout, re.MULTILINE), info.stdout
    assert re.search(r"^backend cpu\s+available$", info.stdout, re.MULTILINE), info.stdout
    where = run([py, "-c", "import tuco_kernels; print(tuco_kernels.__file__)"], env=env, cwd=tmp_path).stdout
    assert str(venv) in where and str(clone) not in where          # the installed package, not the clone
