"""The safetensors reader against the safetensors library's own, and its errors on damaged files."""

import json
import struct

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from tuco_kernels.offload.checkpoint import Checkpoint, read_header
from tuco_kernels.errors import TucoError


@pytest.fixture
def tensors():
    g = torch.Generator().manual_seed(0)
    return {"a.weight": torch.randn(7, 5, generator=g), "b.bias": torch.randn(3, generator=g).bfloat16(),
            "c.half": torch.randn(2, 3, 4, generator=g).half(), "d.ids": torch.arange(6, dtype=torch.int64),
            "e.scalar": torch.tensor(2.5), "f.empty": torch.zeros(0, 4)}


def test_reads_what_safetensors_wrote(tmp_path, tensors):
    save_file(tensors, tmp_path / "model.safetensors", metadata={"format": "pt"})
    ckpt = Checkpoint(tmp_path)
    assert sorted(ckpt.names()) == sorted(tensors)
    with safe_open(tmp_path / "model.safetensors", "pt") as f:
        for name in tensors:
            ours = ckpt.read(name)
            assert ours.dtype == f.get_tensor(name).dtype and torch.equal(ours, f.get_tensor(name))
    out = torch.empty(5, 7).t()  # non-contiguous destination, converted dtype
    ckpt.read_into("a.weight", out)
    assert torch.equal(out, tensors["a.weight"])
    assert torch.equal(ckpt.read("b.bias", torch.float32), tensors["b.bias"].float())


def test_sharded_index(tmp_path, tensors):
    names = sorted(tensors)
    save_file({n: tensors[n] for n in names[:3]}, tmp_path / "m-1.safetensors")
    save_file({n: tensors[n] for n in names[3:]}, tmp_path / "m-2.safetensors")
    index = {"weight_map": {n: ("m-1.safetensors" if i < 3 else "m-2.safetensors") for i, n in enumerate(names)}}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    ckpt = Checkpoint(tmp_path)
    assert all(torch.equal(ckpt.read(n), tensors[n]) for n in names)
    index["weight_map"]["z.missing"] = "m-2.safetensors"
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(TucoError, match="'z.missing' is listed in m-2.safetensors but not stored there"):
        Checkpoint(tmp_path)
    index["weight_map"]["z.missing"] = "m-3.safetensors"
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(TucoError, match="lists m-3.safetensors, which is missing"):
        Checkpoint(tmp_path)


def test_damaged_files_name_file_and_tensor(tmp_path, tensors):
    file = tmp_path / "model.safetensors"
    save_file(tensors, file)
    data = file.read_bytes()
    file.write_bytes(data[: len(data) - 10])
    with pytest.raises(TucoError, match=r"model.safetensors: tensor '.+' .* does not fit its offsets"):
        read_header(file)
    file.write_bytes(b"\x05")
    with pytest.raises(TucoError, match="not a safetensors file"):
        read_header(file)
    file.write_bytes(struct.pack("<Q", 4) + b"{{{{")
    with pytest.raises(TucoError, match="corrupt safetensors header"):
        read_header(file)
    (tmp_path / "empty").mkdir()
    with pytest.raises(TucoError, match="no \\*.safetensors files"):
        Checkpoint(tmp_path / "empty")
