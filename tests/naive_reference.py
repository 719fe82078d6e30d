"""An independent, deliberately naive TuCo: hooks on two ordinary HF models, one prompt at a time.

It shares no code with the engine: the fine-tuned model runs its normal forward (no recorder, no
batching, no padding) while forward hooks record each block's input, call arguments and output; the
pre-trained block is then called on that same input, and PTC/FTC are summed in float64.
"""

import torch

LAYER_PATHS = {"gpt2": "transformer.h"}  # every other supported family keeps its blocks at model.layers


def blocks_of(model):
    obj = model
    for part in LAYER_PATHS.get(model.config.model_type, "model.layers").split("."):
        obj = getattr(obj, part)
    return obj


@torch.no_grad()
def naive_decomposition(pt, ft, input_ids: list[int]):
    """Per-layer last-token PTC_l and FTC_l ([L, d] float64), x_0 and the FT model's last block output."""
    calls, outputs = [], []
    handles = []
    for block in blocks_of(ft):
        handles.append(block.register_forward_pre_hook(
            lambda m, args, kwargs: calls.append((args, dict(kwargs))), with_kwargs=True))
        handles.append(block.register_forward_hook(lambda m, args, out: outputs.append(out)))
    try:
        ft(input_ids=torch.tensor([input_ids]), use_cache=False)
    finally:
        for h in handles:
            h.remove()
    ptc, ftc = [], []
    for pt_block, (args, kwargs), out_ft in zip(blocks_of(pt), calls, outputs):
        x = args[0] if args else kwargs["hidden_states"]
        out_pt = pt_block(*args, **kwargs)
        ptc.append((out_pt - x)[0, -1].double())
        ftc.append((out_ft - out_pt)[0, -1].double())
    x0 = calls[0][0][0] if calls[0][0] else calls[0][1]["hidden_states"]
    return torch.stack(ptc), torch.stack(ftc), x0, outputs[-1]


def naive_tuco(pt, ft, input_ids: list[int]) -> float:
    ptc, ftc, _, _ = naive_decomposition(pt, ft, input_ids)
    f = ftc.sum(0).abs().sum()
    return float(f / (ptc.sum(0).abs().sum() + f))
