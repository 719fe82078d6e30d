"""Where a model comes from: a local directory (safetensors, single or sharded), a GGUF file, or a PEFT adapter
directory; its config read without its weights; dtypes by name. Pickle weights are refused unless allowed;
remote code never runs."""

from __future__ import annotations

import functools
import json
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
        raise OptionError(f"unknown device {device!r}; use 'cpu', 'cuda' or 'cuda:N'") from None
    if dev.type == "cuda":
        if torch.version.cuda is None or not torch.cuda.is_available():
            why = "torch is built without CUDA" if torch.version.cuda is None else "no CUDA device is visible"
            raise OptionError(f"device {device!r}: {why}; use device='cpu' (--device cpu)")
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
    """(directory, gguf file name or None) for a path source; a GGUF file is checked to be one (:func:`check_gguf`)."""
    path = Path(os.fspath(source)).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise ModelError(f"{path}: GGUF file not found")
        check_gguf(path)
        return path.parent, path.name
    if not path.is_dir():
        raise ModelError(f"{path}: not a model directory, a .gguf file or a Hugging Face hub id (org/name)")
    if gguf_file is not None:
        if not (path / gguf_file).is_file():
            raise ModelError(f"{path / gguf_file}: GGUF file not found")
        check_gguf(path / gguf_file)
    return path, gguf_file


GGUF_MAGIC, GGUF_HEADER = b"GGUF", 24     # magic, version (u32), tensor count (u64), metadata count (u64)


def check_gguf(file: Path) -> None:
    """A :class:`ModelError` naming ``file`` unless it reads as a GGUF file: not empty, the magic bytes, a whole
    header, and metadata and tensor records that the gguf reader can parse within the file."""
    st = file.stat()
    _check_gguf(str(file), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=16)
def _check_gguf(file: str, size: int, mtime_ns: int) -> None:
    if size == 0:
        raise ModelError(f"{file}: empty file (0 bytes), not a GGUF model")
    with open(file, "rb") as f:
        head = f.read(GGUF_HEADER)
    if head[:len(GGUF_MAGIC)] != GGUF_MAGIC:
        raise ModelError(f"{file}: not a GGUF file (it does not start with the bytes 'GGUF')")
    if len(head) < GGUF_HEADER:
        raise ModelError(f"{file}: a truncated GGUF file ({size} bytes: not even its header)")
    try:
        from gguf import GGUFReader

        GGUFReader(file)
    except Exception:  # noqa: BLE001 - the reader fails in numpy, struct or mmap terms; what it means is this
        raise ModelError(f"{file}: a truncated or damaged GGUF file ({size:,} bytes; its records run past its end "
                         f"or do not parse); download or convert it again") from None


def read_adapter_config(directory) -> dict:
    """A PEFT adapter's ``adapter_config.json``, checked: JSON, an object, a ``peft_type`` that PEFT knows; a
    :class:`ModelError` names the file and what is wrong, before any weights load."""
    path = Path(os.fspath(directory)) / "adapter_config.json"
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise ModelError(f"{path}: not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise ModelError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})") from None
    except OSError as exc:
        raise ModelError(f"{path}: cannot be read ({exc.strerror})") from None
    if not isinstance(cfg, dict):
        raise ModelError(f"{path}: not a JSON object")
    from peft import PeftType

    known = [t.value for t in PeftType]
    if cfg.get("peft_type") not in known:
        raise ModelError(f"{path}: peft_type {cfg.get('peft_type')!r} is not a PEFT method (LORA, LOHA, IA3, ...); "
                         f"not an adapter PEFT can load")
    return cfg


def read_config(source, gguf_file=None):
    from transformers import AutoConfig

    directory, gguf = resolve_source(source, gguf_file)
    if not gguf and not (directory / "config.json").is_file():
        raise ModelError(f"{directory}: no config.json (not a HuggingFace model directory)")
    try:
        return AutoConfig.from_pretrained(directory, trust_remote_code=False, **({"gguf_file": gguf} if gguf else {}))
    except Exception as exc:  # a JSON error, an unknown model_type, a missing file inside a GGUF, ...
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()] or [type(exc).__name__]
        where = directory / gguf if gguf else directory
        raise ModelError(f"{where}: cannot read the model config: {lines[0][:300]}") from None


def is_adapter_dir(source) -> bool:
    return isinstance(source, (str, os.PathLike)) and (Path(os.fspath(source)) / "adapter_config.json").is_file()
