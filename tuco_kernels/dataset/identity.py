"""Identities of the models a run scored, cheap enough to compute on every run of a large job.

A sharded dataset run (:mod:`tuco_kernels.dataset`) refuses to resume with other models than the ones its
finished shards were scored with. Each side is identified by what :func:`~tuco_kernels.load_pair` was given:

* a directory of safetensors: the sha256 of its ``config.json`` and, for every tensor, its name, dtype, shape and
  two samples of its stored bytes (the first and the middle ``SAMPLE_BYTES``). A retrained tensor differs in
  both, so another checkpoint of the same architecture is told apart, yet a 70B checkpoint costs a few MiB of
  reads. The files' names, paths and modification times are not part of it: a copied or moved checkpoint is the
  same model.
* a GGUF or pickle file, or any other weight file: its size, its first MiB and ``FILE_SAMPLES`` blocks spread over
  it;
* a PEFT adapter directory: the base model's identity, the adapter's config and its tensors as above;
* a model object: its config (without private keys) and samples of every parameter's values.

The digest is a fingerprint, not a proof: a change confined to bytes no sample reads (one retrained element
of a tensor) goes unseen.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch

from ..errors import TucoError
from ..offload.checkpoint import Checkpoint, ModuleTensors, read_header

SAMPLE_BYTES = 4096        # per tensor, at its start and at its middle
SAMPLE_VALUES = 512        # per parameter of a model object, at its start and middle
FILE_HEAD = 1 << 20        # other weight files: the first MiB ...
FILE_SAMPLES = 256         # ... and this many blocks of SAMPLE_BYTES spread over the rest
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _read_at(f, offset: int, n: int) -> bytes:
    f.seek(offset)
    return f.read(n)


def safetensors_digest(file: Path) -> str:
    """Every tensor's name, dtype, shape and two samples of its bytes (see the module docstring)."""
    h = hashlib.sha256()
    entries = read_header(file)
    with open(file, "rb") as f:
        for name in sorted(entries):
            e = entries[name]
            h.update(f"{name}|{e.dtype}|{list(e.shape)}|{e.nbytes}\n".encode())
            n = min(SAMPLE_BYTES, e.nbytes)
            h.update(_read_at(f, e.offset, n))
            h.update(_read_at(f, e.offset + (e.nbytes - n) // 2, n))
    return h.hexdigest()


def file_digest(file: Path) -> str:
    """Size, first MiB and spread-out blocks of any file (whole when small)."""
    size = file.stat().st_size
    h = hashlib.sha256(f"{size}\n".encode())
    with open(file, "rb") as f:
        if size <= FILE_HEAD + FILE_SAMPLES * SAMPLE_BYTES:
            h.update(f.read())
        else:
            h.update(f.read(FILE_HEAD))
            span = size - FILE_HEAD - SAMPLE_BYTES
            for i in range(FILE_SAMPLES):
                h.update(_read_at(f, FILE_HEAD + span * i // (FILE_SAMPLES - 1), SAMPLE_BYTES))
    return h.hexdigest()


def _weights_digest(file: Path) -> str:
    return safetensors_digest(file) if file.suffix == ".safetensors" else file_digest(file)


def _config_dict_digest(config) -> str:
    d = config.to_dict() if hasattr(config, "to_dict") else dict(config)
    d = {k: v for k, v in d.items() if not k.startswith("_") and k not in ("transformers_version", "dtype",
                                                                            "torch_dtype")}
    return _sha(json.dumps(d, sort_keys=True, default=str).encode())


def directory_identity(directory: Path, gguf: str | None = None) -> dict:
    """A model directory (or the GGUF file ``gguf`` in it): config and weight files."""
    directory = Path(directory)
    if gguf is not None:
        files = [directory / gguf]
    else:
        files = sorted(p for p in directory.iterdir() if p.is_file() and p.suffix in WEIGHT_SUFFIXES
                       and not p.name.startswith("adapter_"))
        if any(p.suffix == ".safetensors" for p in files):  # what load_pair reads when both are there
            files = [p for p in files if p.suffix == ".safetensors"]
    if not files:
        raise TucoError(f"{directory}: no weight files to identify the model by")
    parts = {p.name: _weights_digest(p) for p in files}
    config = directory / "config.json"
    if config.is_file():
        parts["config.json"] = _sha(config.read_bytes())
    # the digest does not depend on the file names (one file or shards of the same tensors differ, though)
    return {"kind": "gguf" if gguf else "directory", "where": str(directory / (gguf or "")),
            "sha256": _sha(json.dumps(sorted(parts.values())).encode())}


def tensors_digest(tensors) -> str:
    """(name, tensor) pairs: name, dtype, shape and the first and middle ``SAMPLE_VALUES`` values of each."""
    h = hashlib.sha256()
    for name, t in sorted(tensors, key=lambda kv: kv[0]):
        h.update(f"{name}|{t.dtype}|{list(t.shape)}\n".encode())
        if t.is_meta or t.numel() == 0:
            continue
        flat = t.detach().reshape(-1)
        n = min(SAMPLE_VALUES, flat.numel())
        mid = (flat.numel() - n) // 2
        for part in (flat[:n], flat[mid:mid + n]):
            h.update(part.to("cpu", torch.float64).numpy().tobytes())
    return h.hexdigest()


def module_identity(model: torch.nn.Module) -> dict:
    """A model object: its config and samples of its parameters (meta parameters: name and shape only)."""
    params = list(model.named_parameters(remove_duplicate=False))
    digest = _sha(f"{_config_dict_digest(model.config) if hasattr(model, 'config') else ''}"
                  f"{tensors_digest(params)}".encode())
    return {"kind": "object", "where": type(model).__name__, "sha256": digest}


def adapter_identity(directory: Path, base: dict) -> dict:
    directory = Path(directory)
    parts = [base["sha256"], _sha((directory / "adapter_config.json").read_bytes())]
    for p in sorted(directory.glob("adapter_model.*")):
        parts.append(_weights_digest(p))
    return {"kind": "adapter", "where": str(directory), "base": base["where"], "sha256": _sha("|".join(parts).encode())}


def source_identity(source, gguf: str | None = None, *, base: dict | None = None) -> dict:
    """The identity of one side as given to load_pair (a path, a ``.gguf`` path or a model object)."""
    if isinstance(source, torch.nn.Module):
        return module_identity(source)
    path = Path(os.fspath(source)).expanduser()
    if (path / "adapter_config.json").is_file():
        if base is None:
            raise TucoError(f"{path}: an adapter needs its base model's identity")
        return adapter_identity(path, base)
    if path.suffix == ".gguf":
        return directory_identity(path.parent, path.name)
    return directory_identity(path, gguf)


def sources_identity(pretrained, finetuned, gguf=(None, None)) -> dict:
    """``{"pretrained": ..., "finetuned": ...}`` from what load_pair is (or was) given (several fine-tunes, a list:
    each one's identity, in order, under one digest)."""
    pt = source_identity(pretrained, gguf[0])
    if isinstance(finetuned, (list, tuple)):
        sides = [source_identity(f, gguf[1], base=pt) for f in finetuned]
        return {"pretrained": pt, "finetuned": {"kind": "set", "sides": sides,
                                                "sha256": _sha("+".join(s["sha256"] for s in sides).encode())}}
    return {"pretrained": pt, "finetuned": source_identity(finetuned, gguf[1], base=pt)}


def _tensor_source_identity(source) -> dict:
    if isinstance(source, Checkpoint):
        files = sorted({e.file for e in source.entries.values()})
        return {"kind": "directory", "where": source.where,
                "sha256": _sha(json.dumps(sorted(safetensors_digest(f) for f in files)).encode())}
    if isinstance(source, ModuleTensors):
        return {"kind": "object", "where": source.where, "sha256": tensors_digest(source.tensors.items())}
    raise TucoError(f"cannot identify the tensor source {source!r}")


def pair_identity(pair) -> dict:
    """Both sides' identities: from ``pair.sources`` when load_pair recorded them, else from the pair itself
    (resident: its models' parameters; streamed: its tensor sources)."""
    src = getattr(pair, "sources", None)
    if src is not None:
        return sources_identity(src["pretrained"], src["finetuned"], src.get("gguf") or (None, None))
    streamer = getattr(pair, "streamer", None)
    if streamer is None:
        return {"pretrained": module_identity(pair.pretrained), "finetuned": module_identity(pair.finetuned)}
    hosts = [_tensor_source_identity(h.source) for h in streamer.hosts]
    ft = hosts[1] if len(hosts) > 1 else {"kind": "streamed LoRA", "where": "?",
                                          "sha256": _sha((hosts[0]["sha256"] + "+lora").encode())}
    return {"pretrained": hosts[0], "finetuned": ft}

