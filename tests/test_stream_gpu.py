"""GPU-only: the side-stream prefetch (events, double buffers, reader thread) against resident scoring, and the
device-memory budget. Skipped, visibly, without a CUDA device."""

import pytest
import torch

import tuco_kernels as tk

from .conftest import PROMPTS, make_pair_models

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (stream ordering, budgets)")


@pytest.fixture(scope="module")
def deep_pair_dir(tmp_path_factory, tokenizer):
    """12 layers: many slot reuses, so a missing wait would let a copy overwrite weights still in use."""
    root = tmp_path_factory.mktemp("gpu")
    pt, ft = make_pair_models("llama", tokenizer, layers=12)
    pt.save_pretrained(root / "pt")
    ft.save_pretrained(root / "ft", max_shard_size="200KB")
    return root


@pytest.mark.parametrize("offload", ["cpu", "disk"])
@pytest.mark.parametrize("prefetch", [True, False])
def test_streamed_on_gpu_equals_resident(deep_pair_dir, tokenizer, offload, prefetch):
    prompts = PROMPTS * 16
    resident = tk.load_pair(deep_pair_dir / "pt", deep_pair_dir / "ft", tokenizer=tokenizer, device="cuda")
    expected = tk.score(resident, prompts, layers=True, batch_tokens=64)
    pair = tk.load_pair(deep_pair_dir / "pt", deep_pair_dir / "ft", tokenizer=tokenizer, device="cuda",
                        offload=offload, prefetch=prefetch)
    for schedule in ("prompt", "layer"):
        got = tk.score(pair, prompts, layers=True, batch_tokens=64, schedule=schedule, profile=True)
        assert got.tuco == pytest.approx(expected.tuco, abs=1e-6)
        assert got.beta == pytest.approx(expected.beta, abs=1e-5)
        prof = got.meta["profile"]
        assert prof.bytes_h2d > 0 and prof.seconds_h2d > 0
    pair.close()


def test_budget_is_never_exceeded(deep_pair_dir, tokenizer):
    budget = 256 * 2**20
    torch.cuda.empty_cache()
    torch.cuda.set_per_process_memory_fraction(budget / torch.cuda.get_device_properties(0).total_memory * 1.5)
    try:
        pair = tk.load_pair(deep_pair_dir / "pt", deep_pair_dir / "ft", tokenizer=tokenizer, device="cuda",
                            offload="disk")
        result = tk.score(pair, PROMPTS * 64, max_gpu_memory=budget)
        assert result.meta["peak_gpu_memory"] <= budget
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0)


def test_spilled_hidden_states_give_the_same_scores(deep_pair_dir, tokenizer):
    from tuco_kernels.engine import decompose_sweep, layer_alphas

    pair = tk.load_pair(deep_pair_dir / "pt", deep_pair_dir / "ft", tokenizer=tokenizer, device="cuda",
                        offload="cpu")
    ids = [tokenizer(p, return_tensors="pt") for p in PROMPTS]
    batches = [(t["input_ids"], t["attention_mask"]) for t in ids]
    alphas = layer_alphas(1.0, pair.n_layers)
    on_device = decompose_sweep(pair, batches, alphas, own_pt=True, keep_final=True)
    spilled = decompose_sweep(pair, batches, alphas, own_pt=True, keep_final=True, spill=True)
    for a, b in zip(on_device, spilled):
        assert torch.equal(a.acc_ftc, b.acc_ftc) and torch.equal(a.x_final, b.x_final)
        assert torch.equal(a.x_pt_final, b.x_pt_final)
