"""Memory budgets: parsing, the offload choice and the batch/sweep plan (pure arithmetic, no device)."""

import pytest
import torch

from tuco_kernels import plan
from tuco_kernels.errors import TucoError
from tuco_kernels.plan import Footprint, choose_offload, footprint, parse_size, plan_sweeps
from tests.fixtures.tiny import tiny_config


@pytest.mark.parametrize("text,value", [("8GiB", 8 * 2**30), ("24GB", 24 * 10**9), ("512 MiB", 512 * 2**20),
                                        ("1.5gib", int(1.5 * 2**30)), (1000, 1000), ("100", 100)])
def test_parse_size(text, value):
    assert parse_size(text) == value


@pytest.mark.parametrize("bad", ["eight", "8XB", "-1GiB", 0, "0GB"])
def test_parse_size_errors(bad):
    with pytest.raises(TucoError, match="memory size"):
        parse_size(bad)


FP = Footprint(state=10_000.0, work=100_000.0)


def test_plan_fits_everything_on_the_device():
    p = plan_sweeps(budget=8 * 2**30, fixed=2 * 2**30, fp=FP, batch_tokens=4096, longest=256, total_tokens=131072)
    assert (p.batch_tokens, p.sweep_tokens, p.spill) == (4096, 131072, False)
    used = p.fixed + p.batch_tokens * FP.work + p.sweep_tokens * FP.state
    assert used <= 0.95 * 8 * 2**30


def test_plan_splits_sweeps_then_spills_as_the_budget_shrinks():
    many = plan_sweeps(budget=3 * 2**30, fixed=2 * 2**30, fp=FP, batch_tokens=4096, longest=256,
                       total_tokens=10**6)
    assert not many.spill and 32768 <= many.sweep_tokens < 10**6  # several device-resident sweeps
    spill = plan_sweeps(budget=int(2.3 * 2**30), fixed=2 * 2**30, fp=FP, batch_tokens=4096, longest=256,
                        total_tokens=10**6)
    assert spill.spill and spill.batch_tokens < 4096 and spill.batch_tokens >= 256


def test_plan_errors_name_the_numbers():
    with pytest.raises(TucoError, match="cannot hold even the weights in flight"):
        plan_sweeps(budget=2**30, fixed=2 * 2**30, fp=FP, batch_tokens=4096, longest=256, total_tokens=1000)
    with pytest.raises(TucoError, match=r"too small for the longest prompt \(100000 tokens\)"):
        plan_sweeps(budget=3 * 2**30, fixed=2 * 2**30, fp=FP, batch_tokens=4096, longest=100_000, total_tokens=10**5)


def test_no_budget_keeps_the_callers_batch():
    p = plan_sweeps(budget=None, fixed=0, fp=FP, batch_tokens=123, longest=10, total_tokens=10**7)
    assert (p.batch_tokens, p.sweep_tokens, p.spill) == (123, plan.DEFAULT_SWEEP_TOKENS, False)


def test_footprint_terms():
    cfg = tiny_config("llama", 320, hidden=64)
    sdpa = footprint(cfg, torch.bfloat16, 100)
    eager = footprint(cfg, torch.bfloat16, 100, attn_implementation="eager")
    assert eager.work > sdpa.work and eager.state > sdpa.state
    assert footprint(cfg, torch.float32, 100).state > sdpa.state
    both = footprint(cfg, torch.bfloat16, 100, own_pt=True, token_map=True).state
    assert both == pytest.approx(sdpa.state + 64 * 2 + 8 * 64 - 8 * 64 / 100)  # x_pt; fp32 sums per token


def test_choose_offload(monkeypatch, tokenizer):
    from tests.fixtures.pairs import make_pair_models

    pt, ft = make_pair_models("llama", tokenizer)
    size = sum(p.numel() * 4 for p in pt.parameters())
    assert choose_offload(pt, ft, None, "cuda", None) == "none"
    assert choose_offload(pt, ft, 4 * size, "cuda", None) == "none"
    monkeypatch.setattr(plan, "host_memory_available", lambda: 100 * size)
    assert choose_offload(pt, ft, size, "cuda", None) == "cpu"
    monkeypatch.setattr(plan, "host_memory_available", lambda: size)
    assert choose_offload(pt, ft, size, "cuda", None) == "disk"


def test_offload_cpu_holds_exactly_what_choose_offload_counts(tmp_path, tokenizer, monkeypatch):
    """The host memory offload="cpu" holds for the weights is the blocks' bytes (64-byte aligned per tensor: no
    power-of-two rounding), within what choose_offload assumes; a LoRA side adds nothing there."""
    import tuco_kernels as tk

    from tests.fixtures.pairs import make_pair_models

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
    monkeypatch.setattr(plan, "host_memory_available", lambda: 1.5 * one / 0.9)
    assert choose_offload(tmp_path / "pt", tmp_path / "ft", one, "cuda", None) == "disk"
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    assert choose_offload(tmp_path / "pt", adapter, one, "cuda", None) == "cpu"
