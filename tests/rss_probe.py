"""Run in a fresh process by test_memory.py: score a saved pair and print the peak resident memory (bytes).

    python -m tests.rss_probe {resident|cpu|disk} DIR
"""

import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


def main(mode: str, directory: str) -> None:
    import tuco_kernels as tk

    pair = tk.load_pair(f"{directory}/pt", f"{directory}/ft", offload="none" if mode == "resident" else mode)
    prompts = [{"input_ids": [1, 5, 9, 17, 33, 65, 129, 200][: n]} for n in (8, 5, 3)]
    result = tk.score(pair, prompts)
    assert 0 < result.tuco.min() and result.tuco.max() < 1, result.tuco
    print(peak_rss(), " ".join(f"{t:.6f}" for t in result.tuco))


def peak_rss() -> int:
    """VmHWM, the process's peak resident memory. Not getrusage's ru_maxrss: Linux carries that across
    execve, so a child forked from a large parent (pytest holding the weights it wrote) reports the parent's."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


if __name__ == "__main__":
    main(*sys.argv[1:])
