"""Builds tuco_kernels' compiled ops; the metadata and requirements are declared in pyproject.toml.

The compiled ops (csrc/) are built into ``tuco_kernels._C`` with torch.utils.cpp_extension and ninja, against
the torch already installed in the environment being installed into (never a torch of the build's own): a
CppExtension on CPU-only torch, a CUDAExtension when torch has CUDA and a CUDA toolkit of the same major version
is found (``build_config.find_cuda_tree``: $CUDA_HOME, nvcc's real location or its own report, torch's guess,
a pip toolkit, /usr/local/cuda). Without a usable toolkit, or when the CUDA compile fails, the CPU op is built
instead with a one-line notice and the reason kept for ``tuco info``; the Triton kernels still run on the GPU.
``TUCO_BUILD_CUDA=require`` (make gpu-check) turns that fallback into an error; ``=0`` skips CUDA.

pip builds in an isolated environment by default, where the user's torch is not importable: setup.py then asks
the installing Python (``sys.executable -I``) where its torch is and builds against that. If there is none,
the package still installs and the ops are compiled on first use (JIT). ``--no-build-isolation`` skips the
detour (and the download of setuptools and ninja for the isolated environment).
"""

import importlib.util
import os
import subprocess
import sys

from setuptools import find_packages, setup

HERE = os.path.dirname(os.path.abspath(__file__))


def _build_config():
    spec = importlib.util.spec_from_file_location(
        "tuco_build_config", os.path.join(HERE, "tuco_kernels", "ops", "build_config.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module   # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


class _Fallback:
    """What to build instead when the CUDA build fails: the CPU-only extension, with the reason recorded."""

    def __init__(self, cfg, source_hash, cpu_extension):
        self.cfg, self.source_hash, self.cpu_extension = cfg, source_hash, cpu_extension


def _build_ext_class(cpp_extension, fallback: _Fallback | None):
    class BuildExtensionWithFallback(cpp_extension.BuildExtension):
        """torch's BuildExtension (ninja), falling back to the CPU-only ops when compiling the CUDA op fails."""

        def build_extensions(self):
            try:
                super().build_extensions()
            except Exception as exc:  # a compiler or linker error, a missing header, a toolkit mismatch
                if fallback is None or fallback.cfg.cuda_required():
                    raise
                lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()] or [type(exc).__name__]
                reason = next((ln for ln in lines if "error" in ln.lower()), lines[0])[:300]
                if isinstance(exc.__cause__, subprocess.CalledProcessError):
                    reason += " (the compiler's message is printed above)"
                print(f"tuco_kernels: the CUDA build of tuco_kernels._C failed ({reason}); building the CPU "
                      f"ops only. The Triton backend still runs on the GPU.", file=sys.stderr)
                fallback.cfg.write_build_info(fallback.source_hash, f"the CUDA build failed: {reason}")
                cpu = fallback.cpu_extension()
                for ext in self.extensions:  # the same Extension objects setuptools prepared, CPU sources and flags
                    for attr in ("sources", "include_dirs", "library_dirs", "libraries", "runtime_library_dirs",
                                 "extra_compile_args", "extra_link_args", "define_macros", "language"):
                        setattr(ext, attr, getattr(cpu, attr))
                super().build_extensions()

    return BuildExtensionWithFallback.with_options(use_ninja=True)


def _environment_torch():
    """The torch to build against: importable here, or, inside pip's isolated build environment (which hides the
    target environment's packages), the one the installing Python itself imports. None when there is none."""
    try:
        import torch
        return torch
    except ImportError:
        pass
    probe = "import os, torch; print(os.path.dirname(os.path.dirname(torch.__file__)))"
    try:   # -I: without PYTHONPATH, so without the isolated environment's overlay
        found = subprocess.run([sys.executable, "-I", "-c", probe], capture_output=True, text=True, timeout=600)
    except (OSError, subprocess.SubprocessError):
        return None
    site = found.stdout.strip().splitlines()[-1] if found.returncode == 0 and found.stdout.strip() else ""
    if not os.path.isdir(os.path.join(site, "torch")):
        return None
    sys.path.append(site)   # after the build environment's own packages (setuptools, ninja)
    try:
        import torch
    except ImportError:
        sys.path.remove(site)
        return None
    print(f"tuco_kernels: building against the torch of the environment being installed into ({torch.__version__}, "
          f"{site})", file=sys.stderr)
    return torch


def _torch_cuda_arches(torch) -> str:
    """torch's own CUDA architectures as TORCH_CUDA_ARCH_LIST ('7.5;8.0;...;12.0+PTX'); '' when unknown."""
    try:
        flags = torch._C._cuda_getArchFlags().split()
    except (AttributeError, RuntimeError):
        return ""
    versions = [f"{int(f[3:]) // 10}.{int(f[3:]) % 10}" for f in flags if f.startswith("sm_") and f[3:].isdigit()]
    return ";".join(versions) + "+PTX" if versions else ""


def compiled_extensions():
    if os.environ.get("TUCO_SKIP_EXTENSION") == "1":
        return [], {}
    torch = _environment_torch()
    if torch is None:
        print("tuco_kernels: torch is not installed in this environment; the compiled ops will be built on first "
              "use (JIT) instead. Install torch first to build them now.", file=sys.stderr)
        return [], {}
    from torch.utils import cpp_extension

    cfg = _build_config()
    source_hash = cfg.csrc_hash()
    cxx = cfg.CXX_FLAGS + [cfg.hash_define(source_hash)]
    cpu_sources = [os.path.join("csrc", s) for s in (*cfg.CPU_SOURCES, cfg.MODULE_SOURCE)]

    def cpu_extension():
        return cpp_extension.CppExtension("tuco_kernels._C", cpu_sources, extra_compile_args={"cxx": list(cxx)},
                                          extra_link_args=cfg.LINK_FLAGS)

    def cpu_only(reason: str):
        if cfg.cuda_required():
            raise SystemExit(f"tuco_kernels: TUCO_BUILD_CUDA=require, but the CUDA op cannot be built: {reason}")
        if torch.version.cuda is not None and os.environ.get("TUCO_BUILD_CUDA") != "0":
            print(f"tuco_kernels: building the CPU op only ({reason}); on the GPU the Triton kernels run. "
                  "`tuco info` shows what was built.", file=sys.stderr)
        cfg.write_build_info(source_hash, reason)
        return [cpu_extension()], {"build_ext": _build_ext_class(cpp_extension, None)}

    tree = None
    if torch.version.cuda is not None or os.environ.get("TUCO_BUILD_CUDA") == "force":
        tree = cfg.find_cuda_tree(cpp_extension.CUDA_HOME)
        if tree.path is not None:   # torch's own guess is wrong where nvcc is a wrapper or a link
            cpp_extension.CUDA_HOME = tree.path
            os.environ["CUDA_HOME"] = tree.path
            print(f"tuco_kernels: CUDA toolkit {tree.path} (found from {tree.how})", file=sys.stderr)
    why_no_cuda = cfg.cuda_build_problem(torch.version.cuda, tree.path if tree else None)
    if why_no_cuda is not None:
        if tree is not None and tree.path is None:
            why_no_cuda += f"; {tree.how}"
        return cpu_only(why_no_cuda)
    if not torch.cuda.is_available() and not os.environ.get("TORCH_CUDA_ARCH_LIST"):
        # no GPU to read the architecture from (a login node, a container build): torch would fail with an
        # IndexError; build for the architectures torch itself was built for instead
        arches = _torch_cuda_arches(torch)
        if arches:
            os.environ["TORCH_CUDA_ARCH_LIST"] = arches
            print(f"tuco_kernels: no GPU visible; compiling the CUDA op for torch's own architectures "
                  f"(TORCH_CUDA_ARCH_LIST={arches}; set it to build for fewer)", file=sys.stderr)
    try:
        ext = cpp_extension.CUDAExtension(
            "tuco_kernels._C", cpu_sources + [os.path.join("csrc", s) for s in cfg.CUDA_SOURCES],
            extra_link_args=cfg.LINK_FLAGS,
            extra_compile_args={"cxx": cxx + ["-DTUCO_WITH_CUDA=1"],
                                "nvcc": cfg.NVCC_FLAGS + [cfg.hash_define(source_hash), "-DTUCO_WITH_CUDA=1"]})
    except (OSError, RuntimeError, ValueError) as exc:
        return cpu_only(f"the CUDA build could not be set up: {str(exc).splitlines()[0]}")
    cfg.write_build_info(source_hash, "", tree.path)
    return [ext], {"build_ext": _build_ext_class(cpp_extension, _Fallback(cfg, source_hash, cpu_extension))}


ext_modules, cmdclass = compiled_extensions()

setup(
    # the library, and beside it the research package of the studies (python/tuco_research; not needed to score)
    packages=find_packages(include=["tuco_kernels", "tuco_kernels.*"])
    + find_packages("python", include=["tuco_research", "tuco_research.*"]),
    package_dir={"tuco_research": "python/tuco_research"},
    package_data={"tuco_kernels": ["models/data/gemma-3-270m-chat-lora/*"]},
    ext_modules=ext_modules,
    cmdclass=cmdclass,
)
