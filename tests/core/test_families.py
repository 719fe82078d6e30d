"""Every causal-LM family of the installed transformers: exact, or refused with its reason.

For each model type in transformers' ``AutoModelForCausalLM`` mapping, a small model is built from the type's own
config class (tests/fixtures/family_configs.py) and a fine-tuned twin made by perturbing its decoder blocks. The
pair is loaded as a user would load it: the chain probe (tuco_kernels/core/chain.py) proves the decomposition
exact on the model's own forward, or refuses with the reason. For every type it accepts, this module then checks,
against oracles the engine does not share code with:

* α = 1 replays the fine-tuned model: x_L and the next-token log-probabilities equal HF's forward bit for bit, on
  a batch whose second row is right-padded (as scoring pads);
* x_0 + ΣPTC + ΣFTC = x_L at each row's last token (paper, Prop. D.3 ii);
* a model paired with itself has FTC = 0 exactly, so TuCo = 0;
* the engine's TuCo on the padded batch equals the naive hooks reference run one prompt at a time (fp32);
* the pair streamed from its safetensors files (offload="disk") gives the resident pair's sums bit for bit.

A refused type, or one whose small config cannot be built, is skipped with the reason (``pytest -rs`` lists
them); ``test_coverage`` holds the floor. The outcome of every type is written to out/families.json, from which
``python bench/families.py`` writes docs/families.md.
"""

from __future__ import annotations

import json
import os
import time
import warnings
from pathlib import Path

import pytest
import torch
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

import tuco_kernels as tk
from tests.fixtures.family_configs import VOCAB, tiny_config
from tests.fixtures.naive_reference import naive_tuco
from tests.fixtures.tiny import build_model, perturbed_copy
from tuco_kernels.core.engine import decompose_batch
from tuco_kernels.errors import UnsupportedModelError

TYPES = sorted(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES)
RESULTS_FILE = Path(os.environ.get("TUCO_FAMILIES_JSON", "out/families.json"))

#: families that must stay exact (the engine's core set and mixture-of-experts models of several layouts)
MUST_BE_EXACT = ("llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text", "phi3", "gpt2",
                 "mixtral", "qwen2_moe", "qwen3_moe", "olmoe", "deepseek_v3")
MIN_EXACT = 60

#: the test batch: two rows, the second right-padded by two (ids avoid the small special ids)
_LENGTHS = (7, 5)

RESULTS: dict[str, dict] = {}


def _batch():
    gen = torch.Generator().manual_seed(0)
    T = max(_LENGTHS)
    ids = torch.zeros(len(_LENGTHS), T, dtype=torch.long)
    mask = torch.zeros(len(_LENGTHS), T, dtype=torch.long)
    rows = []
    for i, n in enumerate(_LENGTHS):
        row = torch.randint(5, VOCAB, (n,), generator=gen)
        ids[i, :n], mask[i, :n] = row, 1
        rows.append(row.tolist())
    return ids, mask, rows


def _is_moe(config) -> bool:
    return any(getattr(config, f, None) for f in ("num_experts", "num_local_experts", "n_routed_experts",
                                                    "moe_num_experts"))


@pytest.fixture(scope="module", autouse=True)
def _write_results():
    yield
    if not RESULTS:
        return
    import transformers

    RESULTS_FILE.parent.mkdir(parents=True, exist_ok=True)
    RESULTS_FILE.write_text(json.dumps({
        "transformers": transformers.__version__, "torch": torch.__version__,
        "date": time.strftime("%Y-%m-%d"), "types": dict(sorted(RESULTS.items()))}, indent=1) + "\n")


def _hf_forward(model, layers_path, ids, mask):
    """HF's own forward on the batch: the first block's input (x_0), the last block's output (x_L), the logits."""
    blocks, seen = model.get_submodule(layers_path), {}

    def first_input(module, args, kwargs):
        seen.setdefault("x_0", args[0] if args else kwargs["hidden_states"])

    def last_output(module, args, out):
        seen.setdefault("x_L", out if isinstance(out, torch.Tensor) else out[0])

    hooks = [blocks[0].register_forward_pre_hook(first_input, with_kwargs=True),
             blocks[-1].register_forward_hook(last_output)]
    try:
        logits = model(input_ids=ids, attention_mask=mask, use_cache=False).logits
    finally:
        for hook in hooks:
            hook.remove()
    return seen["x_0"], seen["x_L"], logits


@pytest.mark.slow
@pytest.mark.parametrize("model_type", TYPES)
def test_family(model_type, tmp_path):
    record = RESULTS[model_type] = {"status": "unbuildable"}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            config = tiny_config(model_type)
            pt = build_model(config, seed=0)
    except Exception as e:  # a type the generic small config cannot build: not a refusal by the engine
        record["reason"] = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
        pytest.skip(f"{model_type}: no small text config ({record['reason']})")
    record.update({"class": type(pt).__name__, "moe": _is_moe(config)})
    t0 = time.perf_counter()
    try:
        ft = perturbed_copy(pt, scale=0.1, seed=1)   # finds the blocks the way the engine does
        pair = tk.load_pair(pt, ft)
    except UnsupportedModelError as e:
        assert model_type in str(e), "a refusal names the model type"
        record.update(status="refused", reason=str(e))
        pytest.skip(f"refused: {e}")
    record.update(status="checking", load_s=round(time.perf_counter() - t0, 3), layers_path=pair.family.layers_path,
                  norm_path=pair.family.norm_path)
    family, L = pair.family, pair.n_layers
    ids, mask, rows = _batch()
    real = mask.bool()

    # α = 1 is the fine-tuned model's own forward, bit for bit (x_L and next-token log-probabilities)
    dec = decompose_batch(pair, ids, mask, [1.0] * L, keep_final=True)
    hf_x0, hf_x, hf_logits = _hf_forward(ft, family.layers_path, ids, mask)
    if not hf_x[real].isfinite().all():   # randomly initialised at this size, HF's own forward overflows
        record.update(status="unbuildable", reason="HF's own forward of the small random model is not finite")
        pytest.skip(f"{model_type}: HF's own forward of the small random model is not finite; nothing to compare")
    assert torch.equal(dec.x_final[real], hf_x[real]), "α = 1 x_L differs from HF's last block output"
    ours = family.logits(ft, dec.x_final)
    assert torch.equal(ours[real].log_softmax(-1), hf_logits[real].log_softmax(-1)), "next-token log-probs differ"

    # x_0 + ΣPTC + ΣFTC = x_L at each row's last token (x_0 and x_L from HF's forward)
    last = torch.arange(len(rows)), dec.last_idx
    torch.testing.assert_close(hf_x0[last].double() + dec.acc_ptc.double() + dec.acc_ftc.double(),
                               hf_x[last].double(), atol=1e-4, rtol=1e-5)

    # the engine on the padded batch (one prompt per batch where the probe found the model batch-dependent, as
    # scoring does) = the naive reference, one prompt at a time
    record["pads_invariant"] = family.pads_invariant
    if family.pads_invariant:
        ptc, ftc = dec.acc_ptc.double(), dec.acc_ftc.double()
    else:
        alone = [decompose_batch(pair, torch.tensor([row]), torch.ones(1, len(row), dtype=torch.long), [1.0] * L)
                 for row in rows]
        ptc, ftc = (torch.cat([getattr(d, f) for d in alone]).double() for f in ("acc_ptc", "acc_ftc"))
    engine_tuco = (ftc.abs().sum(-1) / (ptc.abs().sum(-1) + ftc.abs().sum(-1))).tolist()
    naive = [naive_tuco(pt, ft, row, layers_path=family.layers_path) for row in rows]
    assert engine_tuco == pytest.approx(naive, abs=1e-5), "engine (padded batch) vs naive reference (one by one)"
    assert 0 < min(engine_tuco) and max(engine_tuco) < 1

    # a model paired with itself: FTC = 0 exactly
    same = decompose_batch(tk.load_pair(pt, pt), ids, mask, [1.0] * L)
    assert not same.acc_ftc.any(), "PT paired with itself has a non-zero FTC"

    # streamed from its safetensors files: the resident pair's sums, bit for bit
    pt.save_pretrained(tmp_path / "pt")
    ft.save_pretrained(tmp_path / "ft")
    try:
        streamed = tk.load_pair(tmp_path / "pt", tmp_path / "ft", offload="disk", dtype=torch.float32)
    except UnsupportedModelError as e:   # checkpoints that transformers converts while loading (stored per expert)
        assert "offload='none'" in str(e)
        record.update(status="exact", streamed=False, streamed_reason=str(e).split(": ", 1)[1],
                      tuco=[round(t, 6) for t in engine_tuco])
        return
    try:
        from_disk = decompose_batch(streamed, ids, mask, [1.0] * L)
    finally:
        streamed.close()
    assert torch.equal(from_disk.acc_ptc, dec.acc_ptc) and torch.equal(from_disk.acc_ftc, dec.acc_ftc), \
        "the disk-streamed pair differs from the resident one"
    record.update(status="exact", streamed=True, tuco=[round(t, 6) for t in engine_tuco])


def test_coverage():
    """The floor: this many families exact, and the core and MoE families among them (run with the sweep)."""
    if len(RESULTS) < len(TYPES):
        pytest.skip(f"the sweep ran {len(RESULTS)} of {len(TYPES)} types (run the whole module)")
    exact = sorted(t for t, r in RESULTS.items() if r["status"] == "exact")
    lost = [t for t in MUST_BE_EXACT if t in RESULTS and RESULTS[t]["status"] != "exact"]
    assert not lost, f"no longer exact: {lost}"
    assert len(exact) >= MIN_EXACT, f"{len(exact)} exact families: {exact}"
    assert sum(RESULTS[t].get("moe", False) for t in exact) >= 5
    failed = sorted(t for t, r in RESULTS.items() if r["status"] == "checking")
    assert not failed, f"accepted by the probe but failed a check: {failed}"
