"""tuco_kernels: exact, fast TuCo (Tuning Contribution) for HuggingFace model pairs.

Requirements are ranges, not pins, so the package also installs onto a GPU image's own stack
(torch 2.11 / triton 3.6 / transformers 5.17 / Python 3.12). The pinned development environment is
requirements.txt + constraints.txt, installed by the Makefile.

The compiled ops (csrc/) are built into ``tuco_kernels._C`` with torch.utils.cpp_extension and ninja:
a CppExtension on CPU-only torch, a CUDAExtension when torch has CUDA and a matching CUDA toolkit is found.
A CUDA build that cannot work (no nvcc, nvcc of another major version than torch's CUDA, missing headers) or
that fails to compile falls back to the CPU-only extension, with the reason recorded for ``tuco info``; the
install never fails for it. Build without torch importable (e.g. pip's build isolation) and the package still
installs: the ops are then compiled on first use (JIT), or the engine falls back to the eager reference
with a message saying why.
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
                if fallback is None:
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


def compiled_extensions():
    if os.environ.get("TUCO_SKIP_EXTENSION") == "1":
        return [], {}
    try:
        import torch
        from torch.utils import cpp_extension
    except ImportError:
        print("tuco_kernels: torch is not importable at build time; the compiled ops will be built on "
              "first use (JIT) instead", file=sys.stderr)
        return [], {}
    cfg = _build_config()
    source_hash = cfg.csrc_hash()
    cxx = cfg.CXX_FLAGS + [cfg.hash_define(source_hash)]
    cpu_sources = [os.path.join("csrc", s) for s in (*cfg.CPU_SOURCES, cfg.MODULE_SOURCE)]

    def cpu_extension():
        return cpp_extension.CppExtension("tuco_kernels._C", cpu_sources, extra_compile_args={"cxx": list(cxx)},
                                          extra_link_args=cfg.LINK_FLAGS)

    why_no_cuda = cfg.cuda_build_problem(torch.version.cuda, cpp_extension.CUDA_HOME)
    if why_no_cuda is not None:
        cfg.write_build_info(source_hash, why_no_cuda)
        return [cpu_extension()], {"build_ext": _build_ext_class(cpp_extension, None)}
    if os.environ.get("TUCO_BUILD_CUDA") == "force" and cpp_extension.CUDA_HOME is None:
        cpp_extension.CUDA_HOME = os.environ.get("CUDA_HOME")  # the fallback test: a CPU torch and a real nvcc
    try:
        ext = cpp_extension.CUDAExtension(
            "tuco_kernels._C", cpu_sources + [os.path.join("csrc", s) for s in cfg.CUDA_SOURCES],
            extra_link_args=cfg.LINK_FLAGS,
            extra_compile_args={"cxx": cxx + ["-DTUCO_WITH_CUDA=1"],
                                "nvcc": cfg.NVCC_FLAGS + [cfg.hash_define(source_hash), "-DTUCO_WITH_CUDA=1"]})
    except (OSError, RuntimeError, ValueError) as exc:
        reason = f"the CUDA build could not be set up: {str(exc).splitlines()[0]}"
        print(f"tuco_kernels: {reason}; building the CPU ops only", file=sys.stderr)
        cfg.write_build_info(source_hash, reason)
        return [cpu_extension()], {"build_ext": _build_ext_class(cpp_extension, None)}
    cfg.write_build_info(source_hash, "")
    return [ext], {"build_ext": _build_ext_class(cpp_extension, _Fallback(cfg, source_hash, cpu_extension))}


def _version() -> str:
    spec = importlib.util.spec_from_file_location("tuco_version", os.path.join(HERE, "tuco_kernels", "_version.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.__version__


ext_modules, cmdclass = compiled_extensions()

setup(
    name="tuco_kernels",
    version=_version(),
    description="Exact, fast TuCo (Tuning Contribution; Nuti et al., ICML 2025) for HF decoder pairs",
    long_description=open(os.path.join(HERE, "README.md"), encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    # the library, and beside it the research package of the studies (python/tuco_research; not needed to score)
    packages=find_packages(include=["tuco_kernels", "tuco_kernels.*"])
    + find_packages("python", include=["tuco_research", "tuco_research.*"]),
    package_dir={"tuco_research": "python/tuco_research"},
    package_data={"tuco_kernels": ["models/data/gemma-3-270m-chat-lora/*"]},
    ext_modules=ext_modules,
    cmdclass=cmdclass,
    install_requires=[
        "torch>=2.4",
        "numpy>=1.26",
        "transformers>=5.17,<6",
        "safetensors>=0.4",
        "tqdm>=4.66",
    ],
    extras_require={
        "gguf": ["gguf>=0.10", "accelerate>=1.0"],
        "peft": ["peft>=0.17"],
        "io": ["pandas>=2.0", "pyarrow>=15"],
        "triton": ["triton>=3.4"],
        "default-pair": ["gguf>=0.10", "accelerate>=1.0", "peft>=0.17"],   # load_pair() with no arguments
        "research": ["pyarrow>=15", "pyyaml>=6", "pandas>=2.0", "matplotlib>=3.8", "gguf>=0.10", "accelerate>=1.0",
                     "peft>=0.17"],   # tuco_research: datasets, studies, demo, the adapter's training
        "eval": ["lm-eval>=0.4.13", "matplotlib>=3.8"],   # tuco eval, tk.LMEvalModel (lm-eval brings datasets)
        "dev": ["pytest>=8", "pytest-benchmark>=4", "ninja>=1.11"],
    },
    entry_points={"console_scripts": ["tuco=tuco_kernels.cli:main"]},
)
