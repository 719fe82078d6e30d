"""Tensors of a checkpoint, by name, read one at a time: safetensors files and in-memory modules.

Streaming needs one layer's tensors at a time, never the whole model. A safetensors file is an 8-byte
little-endian header length, a JSON header ``{name: {dtype, shape, data_offsets: [begin, end]}}`` and
the raw data; so an index of every tensor (file, dtype, shape, byte offset) costs one small read per
file, and a tensor is then read straight into a caller's buffer with ``preadv`` -- into pinned staging
memory on a GPU host. Reading instead of memory-mapping keeps the file's pages out of the process's
resident memory (a mapping counts every page it has touched until it is unmapped).

Sharded checkpoints (``model.safetensors.index.json``) are one index over several files. LoRA adapters,
read whole and merged per layer, are in :mod:`tuco_kernels.offload.lora`.
"""

from __future__ import annotations

import json
import math
import os
import re
import struct
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import ModelError, UnsupportedModelError

_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
           "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
           "BOOL": torch.bool, "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2}
_MAX_HEADER = 100 * 2**20  # the format's own limit


@dataclass(frozen=True)
class TensorEntry:
    """Where one tensor's bytes are: ``nbytes`` bytes at absolute ``offset`` in ``file``."""

    file: Path
    dtype: torch.dtype
    shape: tuple[int, ...]
    offset: int
    nbytes: int


def read_header(file: Path) -> dict[str, TensorEntry]:
    """Every tensor of one ``.safetensors`` file, validated against the file's size; no tensor data is read."""
    size = file.stat().st_size
    with open(file, "rb") as f:
        raw = f.read(8)
        if len(raw) < 8:
            raise ModelError(f"{file}: not a safetensors file (shorter than its 8-byte header length)")
        (n,) = struct.unpack("<Q", raw)
        if n > min(_MAX_HEADER, size - 8):
            raise ModelError(f"{file}: not a safetensors file, or truncated (header length {n}, file size {size})")
        try:
            header = json.loads(f.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ModelError(f"{file}: corrupt safetensors header ({exc})") from None
    entries = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype = _DTYPES[info["dtype"]]
            shape = tuple(int(s) for s in info["shape"])
            begin, end = (int(o) for o in info["data_offsets"])
        except (KeyError, TypeError, ValueError):
            raise ModelError(f"{file}: tensor {name!r} has an unreadable header entry {info!r}") from None
        nbytes = math.prod(shape) * dtype.itemsize
        if end - begin != nbytes or begin < 0 or 8 + n + end > size:
            raise ModelError(f"{file}: tensor {name!r} ({info['dtype']} {list(shape)}) does not fit its offsets "
                            f"{begin}..{end} (file size {size}); the file is truncated or corrupt")
        entries[name] = TensorEntry(file, dtype, shape, 8 + n + begin, nbytes)
    return entries


def _read_exact(fd: int, dest: memoryview, offset: int, file: Path) -> None:
    done = 0
    while done < len(dest):
        got = os.preadv(fd, [dest[done:]], offset + done)
        if got == 0:
            raise ModelError(f"{file}: unexpected end of file at byte {offset + done} (truncated while reading?)")
        done += got


class TensorSource:
    """Named tensors that can be read one at a time into a caller's buffer (converted to its dtype)."""

    where: str

    def names(self) -> list[str]:
        raise NotImplementedError

    def spec(self, name: str) -> tuple[torch.dtype, tuple[int, ...]]:
        raise NotImplementedError

    def read_into(self, name: str, dest: torch.Tensor) -> None:
        raise NotImplementedError

    def __contains__(self, name: str) -> bool:
        return name in self.names()

    def read(self, name: str, dtype: torch.dtype | None = None) -> torch.Tensor:
        """A new CPU tensor (in ``dtype``, default the stored one)."""
        stored, shape = self.spec(name)
        out = torch.empty(shape, dtype=dtype or stored)
        self.read_into(name, out)
        return out

    def close(self) -> None:
        pass


class Checkpoint(TensorSource):
    """Every tensor of a safetensors checkpoint directory (one file or shards listed by an index)."""

    def __init__(self, directory: Path, file_name: str | None = None):
        self._fds: dict[Path, int] = {}
        self.directory = Path(directory)
        self.where = str(self.directory / (file_name or ""))
        index = self.directory / "model.safetensors.index.json"
        if file_name is not None:
            files, weight_map = [file_name], None
        elif index.is_file():
            try:
                weight_map = json.loads(index.read_text())["weight_map"]
            except (json.JSONDecodeError, KeyError, TypeError) as exc:
                raise ModelError(f"{index}: not a safetensors index ({exc!r})") from None
            files = sorted(set(weight_map.values()))
        else:
            files = sorted(p.name for p in self.directory.glob("*.safetensors"))
            weight_map = None
        if not files:
            raise ModelError(f"{self.directory}: no *.safetensors files (streaming reads safetensors only)")
        self.entries: dict[str, TensorEntry] = {}
        for name in files:
            path = self.directory / name
            if not path.is_file():
                raise ModelError(f"{index}: lists {name}, which is missing")
            for key, entry in read_header(path).items():
                if weight_map is not None and weight_map.get(key, name) != name:
                    continue  # the index says another shard holds it
                self.entries[key] = entry
        if weight_map is not None:
            missing = sorted(set(weight_map) - set(self.entries))
            if missing:
                raise ModelError(f"{index}: tensor {missing[0]!r} is listed in {weight_map[missing[0]]} but not "
                                f"stored there")
        self._scratch = torch.empty(0, dtype=torch.uint8)

    def names(self) -> list[str]:
        return list(self.entries)

    def __contains__(self, name: str) -> bool:
        return name in self.entries

    def spec(self, name):
        e = self.entries[name]
        return e.dtype, e.shape

    def nbytes(self, name: str) -> int:
        return self.entries[name].nbytes

    def _fd(self, file: Path) -> int:
        if file not in self._fds:
            self._fds[file] = os.open(file, os.O_RDONLY)
        return self._fds[file]

    def read_into(self, name: str, dest: torch.Tensor) -> None:
        """Read tensor ``name`` into CPU tensor ``dest`` (same shape; any dtype, converted if it differs)."""
        e = self.entries[name]
        if tuple(dest.shape) != e.shape:
            raise ModelError(f"{e.file}: tensor {name!r} has shape {list(e.shape)}, expected {list(dest.shape)}")
        if not e.nbytes:
            return
        direct = dest.dtype == e.dtype and dest.is_contiguous()
        if direct:
            buf = dest.view(-1).view(torch.uint8)
        else:
            if self._scratch.numel() < e.nbytes:
                self._scratch = torch.empty(e.nbytes, dtype=torch.uint8)
            buf = self._scratch[: e.nbytes]
        _read_exact(self._fd(e.file), memoryview(buf.numpy()), e.offset, e.file)
        if not direct:
            dest.copy_(buf.view(e.dtype).view(e.shape))

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()

    def __del__(self):
        self.close()


class ModuleTensors(TensorSource):
    """The parameters of an already-built model (GGUF-dequantized, pickle-loaded, or passed in), by name."""

    def __init__(self, model: torch.nn.Module, where: str):
        self.where = where
        self.tensors = {n: p.detach() for n, p in model.named_parameters(remove_duplicate=False)}

    def names(self):
        return list(self.tensors)

    def __contains__(self, name):
        return name in self.tensors

    def spec(self, name):
        t = self.tensors[name]
        return t.dtype, tuple(t.shape)

    def read_into(self, name, dest):
        dest.copy_(self.tensors[name])


@dataclass(frozen=True)
class LoadConversions:
    """How transformers maps a model's checkpoint names onto its parameters while loading
    (``get_model_conversion_mapping``): plain renames, which a tensor-by-tensor reader can undo, and whether any
    tensors are converted (experts stored one by one and fused on load), which it cannot."""

    model_type: str | None = None
    renames: tuple[tuple[str, str], ...] = ()   # (name in the model, name in the checkpoint) fragments
    converts: bool = False

    @classmethod
    def of(cls, model) -> LoadConversions:
        model_type = getattr(getattr(model, "config", None), "model_type", None)
        try:
            from transformers.conversion_mapping import WeightRenaming, get_model_conversion_mapping

            transforms = get_model_conversion_mapping(model)
        except Exception:   # a transformers without load-time conversions, or a model it cannot map
            return cls(model_type)
        renames, converts = [], False
        for t in transforms:
            if not isinstance(t, WeightRenaming):
                converts = True
                continue
            for source, target in zip(t.source_patterns, t.target_patterns):
                stored = re.sub(r"\\(.)", r"\1", source.lstrip("^"))
                if not re.search(r"[\\^$*+?()\[\]{}|]", stored) and not re.search(r"[\\^$*+?()\[\]{}|]", target):
                    renames.append((target, stored))
        return cls(model_type, tuple(renames), converts)

    def stored_names(self, name: str) -> list[str]:
        """Names ``name`` may have in the checkpoint: each rename undone alone, and all of them undone in reverse
        order of loading (transformers ≥ 5.24 stores exaone as ``transformer.h.0.attn.attention.out_proj``, which
        three renames turn into ``model.layers.0.self_attn.o_proj``)."""
        names = [name.replace(target, stored) for target, stored in self.renames if target in name]
        chained = name
        for target, stored in reversed(self.renames):
            chained = chained.replace(target, stored)
        return names + ([chained] if chained != name and chained not in names else [])


def resolve_name(source: TensorSource, name: str, model_prefix: str | None, aliases: list[str],
                 conversions: LoadConversions | None = None) -> str:
    """The name under which ``source`` stores parameter ``name``.

    Tries the name itself, the name without the base-model prefix (older GPT-2 files store ``h.0...``
    for ``transformer.h.0...``), the names of parameters tied to it (a tied LM head is stored once, as the
    embedding) and the names transformers renames on load (``conversions``). A tensor that transformers builds
    from several stored ones (experts fused on load) cannot be read tensor by tensor: that is an
    :class:`~tuco_kernels.errors.UnsupportedModelError` saying to load the pair resident.
    """
    candidates = [name] + list(aliases)
    if conversions is not None:
        candidates += [r for c in list(candidates) for r in conversions.stored_names(c)]
    if model_prefix:
        candidates += [c[len(model_prefix) + 1:] for c in candidates if c.startswith(model_prefix + ".")]
    for c in candidates:
        if c in source:
            return c
    if conversions is not None and conversions.converts:
        raise UnsupportedModelError(
            f"{source.where}: {conversions.model_type} checkpoints store {name!r} in another form than the loaded "
            f"model (transformers converts them while loading); streaming reads tensors as stored: load this pair "
            f"with offload='none'")
    raise ModelError(f"{source.where}: no tensor {name!r} in the checkpoint"
                    + (f" (nor {', '.join(repr(a) for a in aliases)})" if aliases else ""))
