"""Which offload mode a device-memory budget calls for, counted from the checkpoints without loading them, and
what offload="cpu" then really holds."""

import tuco_kernels as tk
from tests.fixtures.pairs import make_pair_models
from tuco_kernels.models import loaders as load
from tuco_kernels.models.loaders import choose_offload


def test_choose_offload(monkeypatch, tokenizer):
    pt, ft = make_pair_models("llama", tokenizer)
    size = sum(p.numel() * 4 for p in pt.parameters())
    assert choose_offload(pt, ft, None, "cuda", None) == "none"
    assert choose_offload(pt, ft, 4 * size, "cuda", None) == "none"
    monkeypatch.setattr(load, "host_memory_available", lambda: 100 * size)
    assert choose_offload(pt, ft, size, "cuda", None) == "cpu"
    monkeypatch.setattr(load, "host_memory_available", lambda: size)
    assert choose_offload(pt, ft, size, "cuda", None) == "disk"


def test_offload_cpu_holds_exactly_what_choose_offload_counts(tmp_path, tokenizer, monkeypatch):
    """The host memory offload="cpu" holds for the weights is the blocks' bytes (64-byte aligned per tensor: no
    power-of-two rounding), within what choose_offload assumes; a LoRA side adds nothing there."""
    pt, ft = make_pair_models("llama", tokenizer)
    pt.save_pretrained(tmp_path / "pt")
    ft.save_pretrained(tmp_path / "ft")
    pair = tk.load_pair(tmp_path / "pt", tmp_path / "ft", tokenizer=tokenizer, offload="cpu")
    blocks = [p for b in pair.family.layers(pt) for p in b.parameters()]
    exact = 2 * sum(p.numel() * p.element_size() for p in blocks)
    assert exact <= pair.streamer.host_bytes <= exact + 2 * 64 * len(blocks)
    counted = 2 * sum(p.numel() * 4 for p in pt.parameters())
    assert pair.streamer.host_bytes <= counted
    pair.close()
    # a host that holds one model's blocks but not two: "cpu" for a LoRA pair, "disk" for two full models
    one = sum(p.numel() * 4 for p in pt.parameters())
    monkeypatch.setattr(load, "host_memory_available", lambda: 1.5 * one / 0.9)
    assert choose_offload(tmp_path / "pt", tmp_path / "ft", one, "cuda", None) == "disk"
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    assert choose_offload(tmp_path / "pt", adapter, one, "cuda", None) == "cpu"


def test_a_shared_lora_pair_counts_one_copy_of_the_base(tmp_path, tokenizer, monkeypatch):
    """Resident, a shared LoRA pair holds the base once (lora="shared"); merged, twice: a budget that holds one copy
    with a quarter to spare keeps the shared pair on the device and streams the merged one."""
    pt, _ = make_pair_models("llama", tokenizer)
    pt.save_pretrained(tmp_path / "pt")
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    one = sum(p.numel() * 4 for p in pt.parameters())
    monkeypatch.setattr(load, "host_memory_available", lambda: 100 * one)
    assert choose_offload(tmp_path / "pt", adapter, 1.5 * one, "cuda", None, shared=True) == "none"
    assert choose_offload(tmp_path / "pt", adapter, 1.5 * one, "cuda", None) == "cpu"
