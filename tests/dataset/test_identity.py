"""Model identities (tuco_kernels/dataset/identity.py): a copied checkpoint is the same model, a retrained tensor
is another."""

from __future__ import annotations

import shutil

import pytest
from safetensors.torch import load_file, save_file

import tuco_kernels as tk
from tests.fixtures.pairs import make_pair_models
from tuco_kernels.dataset.identity import directory_identity


@pytest.fixture(scope="module")
def pair(tokenizer):
    pt, ft = make_pair_models("llama", tokenizer)
    return tk.load_pair(pt, ft, tokenizer=tokenizer)


def test_model_identity_follows_the_bytes_not_the_path(pair, tmp_path):
    pair.pretrained.save_pretrained(tmp_path / "a")
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    assert directory_identity(tmp_path / "a")["sha256"] == directory_identity(tmp_path / "b")["sha256"]
    file = tmp_path / "b" / "model.safetensors"
    tensors = load_file(file)
    name = sorted(n for n in tensors if "layers.2.mlp" in n)[0]
    tensors[name] = tensors[name] + 1e-3
    save_file(tensors, file, metadata={"format": "pt"})
    assert directory_identity(tmp_path / "a")["sha256"] != directory_identity(tmp_path / "b")["sha256"]
