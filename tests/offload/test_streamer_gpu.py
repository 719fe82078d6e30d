"""GPU-only: the side-stream prefetch (events, double buffers, reader thread) against resident scoring, the
device-memory budget, overlapped spilling, LoRA merged on the copy stream, and launches on a non-current device.
Skipped, visibly, without a CUDA device (marker ``gpu``).

The ordering tests slow the compute stream down on purpose (``torch.cuda._sleep`` before every block), so that
a copy that did not wait for the compute still reading its slot would overwrite weights in use; the negative
control removes those waits and checks that the test then sees wrong numbers.
"""

import pytest
import torch

import tuco_kernels as tk
from tuco_kernels.offload import streamer as stream_module

from tests.fixtures.pairs import PROMPTS, make_pair_models

pytestmark = pytest.mark.gpu
SLEEP_CYCLES = 20_000_000   # ~10 ms at H100 clocks per block call: far longer than a tiny layer's copy


@pytest.fixture(scope="module")
def deep_pair_dir(tmp_path_factory, tokenizer):
    """12 layers: many slot reuses, so a missing wait would let a copy overwrite weights still in use."""
    root = tmp_path_factory.mktemp("gpu")
    pt, ft = make_pair_models("llama", tokenizer, layers=12)
    pt.save_pretrained(root / "pt")
    ft.save_pretrained(root / "ft", max_shard_size="200KB")
    return root


@pytest.fixture(scope="module")
def resident_scores(deep_pair_dir, tokenizer):
    resident = tk.load_pair(deep_pair_dir / "pt", deep_pair_dir / "ft", tokenizer=tokenizer, device="cuda")
    return tk.score(resident, PROMPTS * 16, layers=True, batch_tokens=64, chat=False)


@pytest.fixture
def slow_compute(monkeypatch):
    """Every streamed block call first keeps the compute stream busy for SLEEP_CYCLES."""
    run_block = stream_module._run_block

    def slow(block, weights, x, **kwargs):
        torch.cuda._sleep(SLEEP_CYCLES)
        return run_block(block, weights, x, **kwargs)

    monkeypatch.setattr(stream_module, "_run_block", slow)


@pytest.mark.parametrize("offload", ["cpu", "disk"])
@pytest.mark.parametrize("prefetch", [True, False])
def test_streamed_on_gpu_equals_resident(deep_pair_dir, tokenizer, resident_scores, offload, prefetch):
    prompts = PROMPTS * 16
    pair = tk.load_pair(deep_pair_dir / "pt", deep_pair_dir / "ft", tokenizer=tokenizer, device="cuda",
                        offload=offload, prefetch=prefetch)
    for schedule in ("prompt", "layer"):
        got = tk.score(pair, prompts, layers=True, batch_tokens=64, schedule=schedule, profile=True, chat=False)
        assert got.tuco == pytest.approx(resident_scores.tuco, abs=1e-6)
        assert got.beta == pytest.approx(resident_scores.beta, abs=1e-5)
        prof = got.meta["profile"]
        assert prof.bytes_h2d > 0 and prof.seconds_h2d > 0
    assert pair.streamer.pinned_bytes == pair.streamer.host_bytes > 0   # page-locked, exactly the size needed
    pair.close()


@pytest.mark.parametrize("offload", ["cpu", "disk"])
def test_slow_compute_never_reads_overwritten_weights(deep_pair_dir, tokenizer, resident_scores, slow_compute,
                                                      offload):
    pair = tk.load_pair(deep_pair_dir / "pt", deep_pair_dir / "ft", tokenizer=tokenizer, device="cuda",
                        offload=offload)
    got = tk.score(pair, PROMPTS * 16, layers=True, batch_tokens=64, schedule="layer", chat=False)
    assert got.tuco == pytest.approx(resident_scores.tuco, abs=1e-6)
    pair.close()


def test_negative_control_a_missing_wait_is_caught(deep_pair_dir, tokenizer, resident_scores, slow_compute):
    """Without the copy stream's waits for compute, the same slowed run reads the next layers' weights."""
    pair = tk.load_pair(deep_pair_dir / "pt", deep_pair_dir / "ft", tokenizer=tokenizer, device="cuda",
                        offload="cpu")
    pair.streamer._order_copies = False
    got = tk.score(pair, PROMPTS * 16, layers=True, batch_tokens=64, schedule="layer", chat=False)
    assert abs(got.tuco - resident_scores.tuco).max() > 1e-3, "the ordering test cannot see a missing wait"
    pair.close()


def test_an_abandoned_pass_does_not_corrupt_the_next(deep_pair_dir, tokenizer, resident_scores, slow_compute):
    """A pass stopped half-way (here by an exception after layer 5, as the budget check would) leaves compute
    queued on its slots; the next pass's first copies must wait for it."""
    from tuco_kernels.core.engine import decompose_sweep, layer_alphas

    pair = tk.load_pair(deep_pair_dir / "pt", deep_pair_dir / "ft", tokenizer=tokenizer, device="cuda",
                        offload="cpu")
    ids = tokenizer(PROMPTS[:2], return_tensors="pt", padding=True, padding_side="left")

    def stop(layer):
        if layer == 5:
            raise RuntimeError("stop")

    with pytest.raises(RuntimeError, match="stop"):
        decompose_sweep(pair, [(ids["input_ids"], ids["attention_mask"])], layer_alphas(1.0, pair.n_layers),
                        on_layer=stop)
    got = tk.score(pair, PROMPTS * 16, layers=True, batch_tokens=64, schedule="layer", chat=False)
    assert got.tuco == pytest.approx(resident_scores.tuco, abs=1e-6)
    pair.close()


def test_budget_is_never_exceeded(deep_pair_dir, tokenizer):
    budget = 256 * 2**20
    torch.cuda.empty_cache()
    torch.cuda.set_per_process_memory_fraction(budget / torch.cuda.get_device_properties(0).total_memory * 1.5)
    try:
        pair = tk.load_pair(deep_pair_dir / "pt", deep_pair_dir / "ft", tokenizer=tokenizer, device="cuda",
                            offload="disk")
        result = tk.score(pair, PROMPTS * 64, max_gpu_memory=budget, chat=False)
        assert result.meta["peak_gpu_memory"] <= budget
        pair.close()
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0)


@pytest.mark.parametrize("slow", [False, True], ids=["normal", "slow-compute"])
def test_spilled_hidden_states_give_the_same_scores(deep_pair_dir, tokenizer, monkeypatch, slow):
    """Spilled streams move on a side stream (upload of micro-batch i+1 and write-back of i overlap the compute
    of i); with compute slowed, a write-back that did not wait for its compute would save stale states."""
    from tuco_kernels.core.engine import decompose_sweep, layer_alphas

    pair = tk.load_pair(deep_pair_dir / "pt", deep_pair_dir / "ft", tokenizer=tokenizer, device="cuda",
                        offload="cpu")
    ids = [tokenizer(p, return_tensors="pt") for p in PROMPTS]
    batches = [(t["input_ids"], t["attention_mask"]) for t in ids]
    alphas = layer_alphas(1.0, pair.n_layers)
    on_device = decompose_sweep(pair, batches, alphas, own_pt=True, keep_final=True)
    if slow:
        run_block = stream_module._run_block
        monkeypatch.setattr(stream_module, "_run_block",
                            lambda b, w, x, **kw: (torch.cuda._sleep(SLEEP_CYCLES), run_block(b, w, x, **kw))[1])
    spilled = decompose_sweep(pair, batches, alphas, own_pt=True, keep_final=True, spill=True)
    for a, b in zip(on_device, spilled):
        assert torch.equal(a.acc_ftc, b.acc_ftc) and torch.equal(a.x_final, b.x_final)
        assert torch.equal(a.x_pt_final, b.x_pt_final)
    pair.close()


def test_lora_merged_on_the_copy_stream_matches_peft(tmp_path, tokenizer, slow_compute):
    """A LoRA fine-tuned side streamed on CUDA: merged per layer on the copy stream into the merge slots."""
    from peft import LoraConfig, get_peft_model

    from tests.fixtures.tiny import build_model, tiny_config

    config = tiny_config("llama", len(tokenizer), layers=6)
    build_model(config, seed=0).save_pretrained(tmp_path / "pt")
    peft_model = get_peft_model(build_model(config, seed=0),
                                LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"],
                                           init_lora_weights=False))
    peft_model.save_pretrained(tmp_path / "adapter")
    resident = tk.load_pair(tmp_path / "pt", tmp_path / "adapter", tokenizer=tokenizer, device="cuda")
    expected = tk.score(resident, PROMPTS * 8, layers=True, batch_tokens=64, chat=False)
    pair = tk.load_pair(tmp_path / "pt", tmp_path / "adapter", tokenizer=tokenizer, device="cuda", offload="cpu")
    got = tk.score(pair, PROMPTS * 8, layers=True, batch_tokens=64, schedule="layer", chat=False)
    # PEFT merged on the CPU at load time, the streamer on the GPU: the same operations, another matmul library
    assert got.tuco == pytest.approx(expected.tuco, abs=1e-5)
    assert expected.tuco.min() > 0.01
    pair.close()


@pytest.mark.gpu(devices=2)
def test_kernels_launch_on_the_tensors_device(tokenizer):
    """Tensors on cuda:1 while cuda:0 is current: every backend launches on cuda:1 (a device guard)."""
    from tuco_kernels import ops
    from tuco_kernels.ops.reference import fused_update_reference

    torch.cuda.set_device(0)
    x, pt, ft = (torch.randn(2, 5, 64, device="cuda:1") for _ in range(3))
    last = torch.tensor([4, 2], device="cuda:1")
    ref = fused_update_reference(x, pt, ft, 0.75, last, torch.zeros(2, 64, device="cuda:1"),
                                 torch.zeros(2, 64, device="cuda:1"))
    for backend in ops.available_backends("cuda:1"):
        acc = [torch.zeros(2, 64, device="cuda:1") for _ in range(2)]
        got = ops.fused_update(x, pt, ft, 0.75, last, *acc, backend=backend)
        assert torch.equal(got, ref), backend
