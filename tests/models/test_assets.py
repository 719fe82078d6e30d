"""The asset fetcher: pinned wheels by sha256, atomic extraction, the GGUF join and conversion."""

import re
import zipfile

import pytest

from tests.fixtures.assets import fetch_or_skip
from tuco_kernels.models import assets
from tuco_kernels.errors import TucoError


def test_every_package_is_pinned_by_version_file_and_sha256():
    for name, pkg in assets.PACKAGES.items():
        assert name == pkg.name
        assert re.fullmatch(r"[0-9a-f]{64}", pkg.sha256), name
        normalized = pkg.name.replace("-", "_")
        assert pkg.wheel.startswith(f"{normalized}-{pkg.version}-") and pkg.wheel.endswith(".whl"), name
        assert pkg.licence


def test_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("TUCO_KERNELS_CACHE", str(tmp_path / "c"))
    assert assets.cache_dir() == tmp_path / "c"
    monkeypatch.delenv("TUCO_KERNELS_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert assets.cache_dir() == tmp_path / "x" / "tuco_kernels"


@pytest.mark.network
def test_fetch_checks_sha256_and_replaces_a_damaged_copy(tmp_path):
    fetch_or_skip("chatterbot-corpus")
    path = assets.wheel_path("chatterbot-corpus", tmp_path)
    assert path.parent == tmp_path / "wheels" and assets.sha256_of(path) == assets.PACKAGES["chatterbot-corpus"].sha256
    path.write_bytes(b"damaged")
    again = assets.wheel_path("chatterbot-corpus", tmp_path)
    assert assets.sha256_of(again) == assets.PACKAGES["chatterbot-corpus"].sha256
    assert not [p for p in (tmp_path / "wheels").iterdir() if p.name.startswith(".download")]


@pytest.mark.network
def test_a_wrong_pin_is_an_error_naming_the_file(tmp_path, monkeypatch):
    fetch_or_skip("chatterbot-corpus")
    pkg = assets.PACKAGES["chatterbot-corpus"]
    monkeypatch.setitem(assets.PACKAGES, pkg.name, assets.Package(pkg.name, pkg.version, pkg.wheel, "0" * 64, pkg.licence))
    with pytest.raises(TucoError, match=rf"{re.escape(pkg.wheel)}: sha256 .* does not match the pinned"):
        assets.wheel_path(pkg.name, tmp_path)
    assert not (tmp_path / "wheels" / pkg.wheel).exists()


def test_unknown_package_and_unreachable_version(tmp_path, monkeypatch):
    with pytest.raises(TucoError, match="unknown asset package 'nope'"):
        assets.wheel_path("nope", tmp_path)
    monkeypatch.setitem(assets.PACKAGES, "chatterbot-corpus",
                        assets.Package("chatterbot-corpus", "999.0.0", "chatterbot_corpus-999.0.0-py3-none-any.whl",
                                       "0" * 64, "BSD"))
    with pytest.raises(TucoError, match=r"could not fetch chatterbot-corpus==999\.0\.0"):
        assets.wheel_path("chatterbot-corpus", tmp_path)


@pytest.mark.network
def test_extract_takes_only_what_is_asked_and_names_missing_members(tmp_path):
    fetch_or_skip("chatterbot-corpus")
    root = assets.extract("chatterbot-corpus", ["chatterbot_corpus/data/english/ai.yml"], tmp_path)
    files = [p for p in root.rglob("*") if p.is_file()]
    assert [p.name for p in files] == ["ai.yml"]
    with zipfile.ZipFile(assets.wheel_path("chatterbot-corpus", tmp_path)) as zf:
        assert files[0].read_bytes() == zf.read("chatterbot_corpus/data/english/ai.yml")
    with pytest.raises(TucoError, match="has no member 'chatterbot_corpus/nope.yml'"):
        assets.extract("chatterbot-corpus", ["chatterbot_corpus/nope.yml"], tmp_path)
    folder = assets.extract("chatterbot-corpus", ["chatterbot_corpus/data/english/"], tmp_path)
    assert len(list((folder / "chatterbot_corpus/data/english").glob("*.yml"))) >= 20


def test_unsafe_member_paths_are_refused():
    assert assets._safe_member("a/b.txt")
    assert not assets._safe_member("../etc/passwd")
    assert not assets._safe_member("/abs/path")
    assert not assets._safe_member("a/../../b")


@pytest.mark.slow
def test_gguf_is_joined_from_the_parts_and_converted(gemma_tokenizer):
    gguf = assets.gguf_path()
    assert gguf.stat().st_size == 253_113_024
    assert assets.sha256_of(gguf) == assets.GGUF_SHA256
    folder = assets.base_model_dir()
    import json

    cfg = json.loads((folder / "config.json").read_text())
    assert cfg["model_type"] == "gemma3_text" and cfg["num_hidden_layers"] == 18 and "quantization_config" not in cfg
    assert (folder / "GEMMA_TERMS.html").is_file() and (folder / "model.safetensors").is_file()
    assert json.loads((folder / "provenance.json").read_text())["source"].startswith(assets.GGUF_NAME)


@pytest.mark.slow
def test_converted_weights_equal_the_gguf_dequantized_by_the_gguf_library(gemma_tokenizer):
    """An oracle independent of transformers: gguf's own dequantizer on two quantized block tensors."""
    import numpy as np
    from gguf import GGUFReader
    from gguf.quants import dequantize
    from safetensors import safe_open

    reader = GGUFReader(assets.gguf_path())
    tensors = {t.name: t for t in reader.tensors}
    with safe_open(assets.base_model_dir() / "model.safetensors", "np") as f:
        for gguf_name, hf_name in (("blk.0.ffn_down.weight", "model.layers.0.mlp.down_proj.weight"),
                                   ("blk.17.attn_v.weight", "model.layers.17.self_attn.v_proj.weight")):
            t = tensors[gguf_name]
            assert t.tensor_type.name.startswith(("Q4", "Q5", "Q6", "Q8")), t.tensor_type.name
            expected = dequantize(t.data, t.tensor_type).reshape(f.get_slice(hf_name).get_shape())
            np.testing.assert_array_equal(f.get_tensor(hf_name), expected.astype(np.float32))
