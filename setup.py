"""tuco_kernels: exact, fast TuCo (Tuning Contribution) for HuggingFace model pairs.

Requirements are ranges, not pins, so the package also installs onto a GPU image's own stack
(torch 2.11 / triton 3.6 / transformers 5.17 / Python 3.12). The pinned development environment is
requirements.txt + constraints.txt, installed by the Makefile.
"""

from setuptools import find_packages, setup

setup(
    name="tuco_kernels",
    version="0.1.0",
    description="Exact, fast TuCo (Tuning Contribution; Nuti et al., ICML 2025) for HF decoder pairs",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["tuco_kernels", "tuco_kernels.*"]),
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
        "dev": ["pytest>=8", "pytest-benchmark>=4", "ninja>=1.11"],
    },
    entry_points={"console_scripts": ["tuco=tuco_kernels.cli:main"]},
)
