"""Where a model comes from: a local directory (safetensors, single or sharded), a GGUF file, or a PEFT adapter
directory; its config read without its weights; dtypes by name. Pickle weights are refused unless allowed;
remote code never runs."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from ..errors import ModelError, OptionError

_PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt")
_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "float": torch.float32,
           "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
           "float16": torch.float16, "fp16": torch.float16, "half": torch.float16}


def parse_device(device) -> torch.device | None:
    """A device that exists here, or an :class:`OptionError` saying why not ("cuda" without a GPU, "cuda:3" with
    one GPU, "mps" off a Mac, a misspelling)."""
    if device is None:
        return None
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise OptionError(f"unknown device {device!r}; use cpu, cuda or cuda:N") from None
    if dev.type == "cuda":
        if torch.version.cuda is None or not torch.cuda.is_available():
            why = "torch is built without CUDA" if torch.version.cuda is None else "no CUDA device is visible"
            raise OptionError(f"device {device!r}: {why}; use --device cpu")
        count = torch.cuda.device_count()
        if dev.index is not None and dev.index >= count:
            raise OptionError(f"device {device!r}: this machine has {count} CUDA device(s), cuda:0 to cuda:{count - 1}")
    elif dev.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise OptionError(f"device {device!r}: MPS is not available on this machine")
    elif dev.type not in ("cpu", "cuda", "mps"):
        raise OptionError(f"device {device!r}: tuco_kernels runs on cpu or cuda")
    return dev


def parse_dtype(dtype) -> torch.dtype | None:
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    if isinstance(dtype, str) and dtype.lower() in _DTYPES:
        return _DTYPES[dtype.lower()]
    if dtype == "auto":
        return None
    raise OptionError(f"unknown dtype {dtype!r}; use one of float32, bfloat16, float16")


def weights_kind(directory: Path, allow_pickle: bool) -> str:
    """'safetensors' or 'pickle' for a model directory; refuses pickle unless allowed."""
    names = [p.name for p in directory.iterdir() if p.is_file()]
    if any(n.endswith(".safetensors") for n in names):
        return "safetensors"
    pickles = sorted(n for n in names if n.endswith(_PICKLE_SUFFIXES))
    if pickles:
        if not allow_pickle:
            raise ModelError(f"{directory / pickles[0]}: pickle weights can run arbitrary code when loaded and are "
                            f"refused; convert them to safetensors or pass allow_pickle=True (--allow-pickle)")
        return "pickle"
    raise ModelError(f"{directory}: no model weights found (expected *.safetensors)")


def resolve_source(source, gguf_file):
    """(directory, gguf file name or None) for a path source."""
    path = Path(os.fspath(source)).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise ModelError(f"{path}: GGUF file not found")
        return path.parent, path.name
    if not path.is_dir():
        raise ModelError(f"{path}: not a model directory, a .gguf file or a Hugging Face hub id (org/name)")
    if gguf_file is not None and not (path / gguf_file).is_file():
        raise ModelError(f"{path / gguf_file}: GGUF file not found")
    return path, gguf_file


def read_config(source, gguf_file=None):
    from transformers import AutoConfig

    directory, gguf = resolve_source(source, gguf_file)
    if not gguf and not (directory / "config.json").is_file():
        raise ModelError(f"{directory}: no config.json (not a HuggingFace model directory)")
    try:
        return AutoConfig.from_pretrained(directory, trust_remote_code=False, **({"gguf_file": gguf} if gguf else {}))
    except Exception as exc:  # a JSON error, an unknown model_type, a missing file inside a GGUF, ...
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()] or [type(exc).__name__]
        raise ModelError(f"{directory}: cannot read the model config: {lines[0][:300]}") from None


def is_adapter_dir(source) -> bool:
    return isinstance(source, (str, os.PathLike)) and (Path(os.fspath(source)) / "adapter_config.json").is_file()
