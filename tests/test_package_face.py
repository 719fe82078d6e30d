"""What ``import tuco_kernels as tk`` offers: every exception the package raises on purpose, importable from the
top; the old name ``tk.steer`` still working, with a warning."""

import importlib
import pkgutil
import warnings

import pytest

import tuco_kernels as tk


def _modules():
    for info in pkgutil.walk_packages(tk.__path__, "tuco_kernels."):
        if info.name.startswith(("tuco_kernels.harness.lm", "tuco_kernels.ops.fused_update_triton")):
            continue   # lm-eval and triton: optional extras
        if info.name.endswith("__main__"):
            continue
        yield importlib.import_module(info.name)


def test_every_error_class_is_exported():
    defined = {obj for module in _modules() for obj in vars(module).values()
               if isinstance(obj, type) and issubclass(obj, tk.TucoError) and obj.__module__.startswith("tuco_kernels")}
    assert len(defined) >= 10   # the walk really found them
    missing = sorted(c.__name__ for c in defined if getattr(tk, c.__name__, None) is not c)
    assert missing == [], f"not exported from tuco_kernels: {missing}"
    assert all(name in tk.__all__ for name in (c.__name__ for c in defined))


def test_steer_is_the_old_name_of_next_token_logprobs():
    with pytest.warns(DeprecationWarning, match="tk.steer is now tk.next_token_logprobs"):
        old = tk.steer
    assert old is tk.next_token_logprobs
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tk.next_token_logprobs   # the new name warns about nothing
    assert "steer" not in tk.__all__


def test_version_and_import_do_not_import_torch():
    import subprocess
    import sys

    code = ("import sys, tuco_kernels as tk; from tuco_kernels.cli import main; rc = main(['--version']); "
            "assert rc == 0, rc; assert 'torch' not in sys.modules and 'transformers' not in sys.modules; "
            "tk.score; assert 'torch' in sys.modules")   # the first use imports what it needs
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"tuco {tk.__version__}"


def test_a_function_keeps_its_name_when_its_module_is_imported():
    """tk.score, tk.generate and tk.attach are functions, though tuco_kernels.score etc. are modules that other
    modules import (the import system would set the package attribute to the module)."""
    import importlib

    for name in ("score", "generate", "attach"):
        importlib.import_module(f"tuco_kernels.{name}")
        assert callable(getattr(tk, name)) and not isinstance(getattr(tk, name), type(tk)), name
    assert set(tk.__all__) <= set(dir(tk))
