"""Tensors of a checkpoint, by name, read one at a time: safetensors files, in-memory modules, LoRA adapters.

Streaming needs one layer's tensors at a time, never the whole model. A safetensors file is an 8-byte
little-endian header length, a JSON header ``{name: {dtype, shape, data_offsets: [begin, end]}}`` and
the raw data; so an index of every tensor (file, dtype, shape, byte offset) costs one small read per
file, and a tensor is then read straight into a caller's buffer with ``preadv`` -- into pinned staging
memory on a GPU host. Reading instead of memory-mapping keeps the file's pages out of the process's
resident memory (a mapping counts every page it has touched until it is unmapped).

Sharded checkpoints (``model.safetensors.index.json``) are one index over several files. A LoRA
adapter (PEFT ``adapter_model.safetensors``) is read whole -- it is small -- and merged layer by layer
exactly as PEFT merges it: ``W_ft = W_pt + scaling · (B @ A)`` (transposed for GPT-2's Conv1D).
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

from .errors import TucoError

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
            raise TucoError(f"{file}: not a safetensors file (shorter than its 8-byte header length)")
        (n,) = struct.unpack("<Q", raw)
        if n > min(_MAX_HEADER, size - 8):
            raise TucoError(f"{file}: not a safetensors file, or truncated (header length {n}, file size {size})")
        try:
            header = json.loads(f.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise TucoError(f"{file}: corrupt safetensors header ({exc})") from None
    entries = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype = _DTYPES[info["dtype"]]
            shape = tuple(int(s) for s in info["shape"])
            begin, end = (int(o) for o in info["data_offsets"])
        except (KeyError, TypeError, ValueError):
            raise TucoError(f"{file}: tensor {name!r} has an unreadable header entry {info!r}") from None
        nbytes = math.prod(shape) * dtype.itemsize
        if end - begin != nbytes or begin < 0 or 8 + n + end > size:
            raise TucoError(f"{file}: tensor {name!r} ({info['dtype']} {list(shape)}) does not fit its offsets "
                            f"{begin}..{end} (file size {size}); the file is truncated or corrupt")
        entries[name] = TensorEntry(file, dtype, shape, 8 + n + begin, nbytes)
    return entries


def _read_exact(fd: int, dest: memoryview, offset: int, file: Path) -> None:
    done = 0
    while done < len(dest):
        got = os.preadv(fd, [dest[done:]], offset + done)
        if got == 0:
            raise TucoError(f"{file}: unexpected end of file at byte {offset + done} (truncated while reading?)")
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
                raise TucoError(f"{index}: not a safetensors index ({exc!r})") from None
            files = sorted(set(weight_map.values()))
        else:
            files = sorted(p.name for p in self.directory.glob("*.safetensors"))
            weight_map = None
        if not files:
            raise TucoError(f"{self.directory}: no *.safetensors files (streaming reads safetensors only)")
        self.entries: dict[str, TensorEntry] = {}
        for name in files:
            path = self.directory / name
            if not path.is_file():
                raise TucoError(f"{index}: lists {name}, which is missing")
            for key, entry in read_header(path).items():
                if weight_map is not None and weight_map.get(key, name) != name:
                    continue  # the index says another shard holds it
                self.entries[key] = entry
        if weight_map is not None:
            missing = sorted(set(weight_map) - set(self.entries))
            if missing:
                raise TucoError(f"{index}: tensor {missing[0]!r} is listed in {weight_map[missing[0]]} but not "
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
            raise TucoError(f"{e.file}: tensor {name!r} has shape {list(e.shape)}, expected {list(dest.shape)}")
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


def resolve_name(source: TensorSource, name: str, model_prefix: str | None, aliases: list[str]) -> str:
    """The name under which ``source`` stores parameter ``name``.

    Tries the name itself, the name without the base-model prefix (older GPT-2 files store ``h.0...``
    for ``transformer.h.0...``), and the names of parameters tied to it (a tied LM head is stored once,
    as the embedding).
    """
    candidates = [name] + list(aliases)
    if model_prefix:
        candidates += [c[len(model_prefix) + 1:] for c in candidates if c.startswith(model_prefix + ".")]
    for c in candidates:
        if c in source:
            return c
    raise TucoError(f"{source.where}: no tensor {name!r} in the checkpoint"
                    + (f" (nor {', '.join(repr(a) for a in aliases)})" if aliases else ""))


# ----------------------------------------------------------------------------------------------- LoRA


def _pattern_value(patterns: dict, module_name: str, default):
    """PEFT's rank/alpha pattern lookup: a key matches a module name that ends with it at a dot boundary."""
    for key, value in patterns.items():
        if re.match(rf"(.*\.)?({key})$", module_name):
            return value
    return default


@dataclass
class LoraDelta:
    """One adapted weight: W_ft = W_pt + scaling · (B @ A), transposed when ``fan_in_fan_out`` (Conv1D)."""

    lora_a: torch.Tensor   # [r, in] fp32
    lora_b: torch.Tensor   # [out, r] fp32
    scaling: float
    fan_in_fan_out: bool

    def merge(self, weight: torch.Tensor) -> torch.Tensor:
        """The merged weight in ``weight``'s dtype, on its device: what PEFT's ``merge_and_unload`` computes
        with fp32 adapter weights (its default): ``W += delta`` rounds W + delta once to W's dtype."""
        a, b = self.lora_a.to(weight.device), self.lora_b.to(weight.device)
        delta = b @ a
        if self.fan_in_fan_out:
            delta = delta.T
        delta = delta * self.scaling
        if weight.dtype == torch.float32:
            return weight + delta
        return (weight.float() + delta).to(weight.dtype)


class LoraAdapter:
    """A PEFT LoRA adapter directory: per base-model parameter, a :class:`LoraDelta` or a full replacement.

    Replacements are what PEFT stores whole: ``modules_to_save`` (e.g. ``lm_head``) and trained biases.
    Variants whose merge is not ``W + s·B·A`` (DoRA, LoRA biases, embedding or conv LoRA, other PEFT
    methods) are refused with the field named; load such pairs with ``offload="none"``.
    """

    PREFIX = "base_model.model."

    def __init__(self, directory: Path):
        self.directory = Path(directory)
        cfg_path = self.directory / "adapter_config.json"
        try:
            cfg = json.loads(cfg_path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise TucoError(f"{cfg_path}: cannot read the adapter config ({exc})") from None
        unsupported = [(k, cfg.get(k)) for k, ok in (("peft_type", "LORA"),) if cfg.get(k) != ok]
        unsupported += [(k, cfg[k]) for k in ("use_dora", "lora_bias") if cfg.get(k)]
        if cfg.get("target_parameters"):
            unsupported.append(("target_parameters", cfg["target_parameters"]))
        if unsupported:
            field, value = unsupported[0]
            raise TucoError(f"{cfg_path}: {field}={value!r} is not supported when streaming weights (only plain "
                            f"LoRA merges as W + scaling·B·A); load this pair with offload='none'")
        file = self.directory / "adapter_model.safetensors"
        if not file.is_file():
            raise TucoError(f"{self.directory}: no adapter_model.safetensors (streaming reads safetensors only)")
        ckpt = Checkpoint(self.directory, file.name)
        self.lora_alpha = float(cfg.get("lora_alpha", 8))
        self.use_rslora = bool(cfg.get("use_rslora", False))
        self.alpha_pattern = cfg.get("alpha_pattern") or {}
        pairs: dict[str, dict[str, torch.Tensor]] = {}
        self.replacements: dict[str, torch.Tensor] = {}
        for key in ckpt.names():
            if not key.startswith(self.PREFIX):
                raise TucoError(f"{file}: unexpected tensor {key!r} (PEFT keys start with {self.PREFIX!r})")
            rest = key[len(self.PREFIX):]
            m = re.fullmatch(r"(.+)\.(lora_A|lora_B)\.weight", rest)
            if m:
                pairs.setdefault(m.group(1), {})[m.group(2)] = ckpt.read(key, torch.float32)
            elif re.search(r"\.lora_(embedding_[AB]|magnitude_vector)\b|\.lora_[AB]\.", rest):
                raise TucoError(f"{file}: {key!r} is an embedding/DoRA/conv LoRA tensor, not supported when "
                                f"streaming weights; load this pair with offload='none'")
            else:
                self.replacements[rest.replace(".base_layer.", ".").replace(".modules_to_save.default", "")] = \
                    ckpt.read(key)
        ckpt.close()
        self.modules: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        for module, ab in pairs.items():
            if set(ab) != {"lora_A", "lora_B"}:
                raise TucoError(f"{file}: module {module!r} has {sorted(ab)} but needs both lora_A and lora_B")
            self.modules[module] = (ab["lora_A"], ab["lora_B"])

    def delta_for(self, param_name: str, module: torch.nn.Module | None) -> LoraDelta | None:
        """The LoRA delta for base parameter ``param_name`` (``<module>.weight``), if the adapter has one."""
        if not param_name.endswith(".weight") or param_name[: -len(".weight")] not in self.modules:
            return None
        module_name = param_name[: -len(".weight")]
        a, b = self.modules[module_name]
        r = a.shape[0]  # the module's rank (rank_pattern included)
        alpha = float(_pattern_value(self.alpha_pattern, module_name, self.lora_alpha))
        scaling = alpha / math.sqrt(r) if self.use_rslora else alpha / r
        fan_in_fan_out = module is not None and type(module).__name__ == "Conv1D"  # PEFT forces it for Conv1D
        return LoraDelta(a, b, scaling, fan_in_fan_out)

    def adapted_parameters(self) -> set[str]:
        return {m + ".weight" for m in self.modules} | set(self.replacements)
