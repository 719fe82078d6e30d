"""tuco_kernels: exact, fast TuCo (Tuning Contribution) for HuggingFace model pairs.

Requirements are ranges, not pins, so the package also installs onto a GPU image's own stack
(torch 2.11 / triton 3.6 / transformers 5.17 / Python 3.12). The pinned development environment is
requirements.txt + constraints.txt, installed by the Makefile.

The compiled ops (csrc/) are built into ``tuco_kernels._C`` with torch.utils.cpp_extension and ninja:
a CppExtension on CPU-only torch, a CUDAExtension when torch has CUDA and a CUDA toolkit is found. Build
without torch importable (e.g. pip's build isolation) and the package still installs: the ops are then
compiled on first use (JIT), or the engine falls back to the eager reference with a message saying why.
"""

import importlib.util
import os
import sys

from setuptools import find_packages, setup

HERE = os.path.dirname(os.path.abspath(__file__))


def _build_config():
    spec = importlib.util.spec_from_file_location(
        "tuco_build_config", os.path.join(HERE, "tuco_kernels", "ops", "build_config.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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
    if torch.version.cuda is None:
        with_cuda, why_no_cuda = False, "torch built without CUDA"
    elif cpp_extension.CUDA_HOME is None:
        with_cuda, why_no_cuda = False, "no CUDA toolkit (nvcc) found when tuco_kernels._C was built"
    else:
        with_cuda, why_no_cuda = os.environ.get("TUCO_BUILD_CUDA", "1") != "0", "TUCO_BUILD_CUDA=0 at build time"
    sources = [os.path.join("csrc", s) for s in (*cfg.CPU_SOURCES, cfg.MODULE_SOURCE)]
    cxx = cfg.CXX_FLAGS + [cfg.hash_define(source_hash)]
    if with_cuda:
        cxx.append("-DTUCO_WITH_CUDA=1")
        sources += [os.path.join("csrc", s) for s in cfg.CUDA_SOURCES]
        ext = cpp_extension.CUDAExtension(
            "tuco_kernels._C", sources, extra_link_args=cfg.LINK_FLAGS,
            extra_compile_args={"cxx": cxx, "nvcc": cfg.NVCC_FLAGS + [cfg.hash_define(source_hash)]})
    else:
        ext = cpp_extension.CppExtension("tuco_kernels._C", sources, extra_compile_args={"cxx": cxx},
                                         extra_link_args=cfg.LINK_FLAGS)
    cfg.write_build_info(source_hash, "" if with_cuda else why_no_cuda)
    return [ext], {"build_ext": cpp_extension.BuildExtension.with_options(use_ninja=True)}


ext_modules, cmdclass = compiled_extensions()

setup(
    name="tuco_kernels",
    version="0.1.0",
    description="Exact, fast TuCo (Tuning Contribution; Nuti et al., ICML 2025) for HF decoder pairs",
    long_description=open(os.path.join(HERE, "README.md"), encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["tuco_kernels", "tuco_kernels.*"]),
    package_data={"tuco_kernels": ["data/gemma-3-270m-chat-lora/*"]},
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
        "datasets": ["pyarrow>=15", "pyyaml>=6"],
        "studies": ["pandas>=2.0", "matplotlib>=3.8"],
        "dev": ["pytest>=8", "pytest-benchmark>=4", "ninja>=1.11"],
    },
    entry_points={"console_scripts": ["tuco=tuco_kernels.cli:main"]},
)
