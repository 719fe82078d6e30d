"""``score``: TuCo for a list of prompts, batched by a token budget, results in input order."""

from __future__ import annotations

import numpy as np
import torch

from .batching import make_batches
from .data import normalize_prompts, tokenize
from .engine import decompose_sweep, layer_alphas
from .errors import TucoError
from .metrics import contribution_ratio, output_co as output_co_metric, tuco_from_sums
from .plan import SweepPlan, footprint, parse_size, plan_sweeps
from .result import TuCoResult
from .stream import StreamProfile

DEFAULT_BATCH_TOKENS = 4096


def pad_id_of(tokenizer) -> int:
    pad = getattr(tokenizer, "pad_token_id", None) if tokenizer is not None else None
    return 0 if pad is None else pad  # padded positions are masked; the id only has to be valid


def prepare(pair, prompts, *, chat=False, system_prompt=None):
    """Normalised prompts and their token ids."""
    records = normalize_prompts(prompts)
    ids = tokenize(records, pair.tokenizer, chat=chat, system_prompt=system_prompt, vocab_size=pair.vocab_size)
    return records, ids


SCHEDULES = ("prompt", "layer")


def score(pair, prompts, *, alpha=1.0, chat: bool = False, system_prompt: str | None = None,
          batch_tokens: int = DEFAULT_BATCH_TOKENS, layers: bool = False, token_map: bool = False,
          output_co: bool = False, progress: bool = False, backend: str | None = None,
          schedule: str | None = None, max_gpu_memory=None, sweep_tokens: int | None = None,
          profile: bool = False) -> TuCoResult:
    """TuCo of each prompt's last token under the pair's decomposition (paper Def. 4.3).

    Args:
        pair: a :class:`~tuco_kernels.pair.ModelPair` from :func:`load_pair`.
        prompts: a string, a chat, or a list of strings, chats (lists of messages) or mappings with
            ``prompt`` / ``messages`` / ``input_ids`` (and optional ``id``).
        alpha: FTC scaling (a scalar or one value per layer); 1.0 is the fine-tuned model itself.
        chat: render text prompts as the user turn of the fine-tuned tokenizer's chat template.
        system_prompt: prepended as a system message to chats.
        batch_tokens: rows × padded length per (micro-)batch.
        layers: also return per-layer ``ptc_l1``, ``ftc_l1`` and the cumulative ``beta``.
        token_map: also return TuCo at every token position.
        output_co: also compute the OutputCo baseline (the pre-trained model's own stream, one extra block per layer).
        schedule: "prompt": every layer for one batch, then the next batch; "layer": every batch of a sweep
            through layer l, then layer l+1, so each layer's weights are fetched once per sweep (FlexGen's
            block schedule). Default: "layer" for streamed pairs (offload), "prompt" otherwise. Both give the
            same numbers.
        max_gpu_memory: device-memory budget ("8GiB") for the batches, the sweep's hidden states and the
            weights in flight; sizes them (plan.py), spills hidden states to pinned host memory when they do not
            fit, and raises rather than exceed it.
        sweep_tokens: cap on the tokens of one layer-major sweep (default: as many as the budget allows).
        profile: record where the time went (copies vs compute, bandwidth, overlap) in ``result.meta["profile"]``.
    """
    schedule = schedule or ("layer" if pair.streamer is not None else "prompt")
    if schedule not in SCHEDULES:
        raise TucoError(f"unknown schedule {schedule!r}; use 'prompt' or 'layer'")
    budget = parse_size(max_gpu_memory)
    if budget is not None and pair.device.type != "cuda":
        raise TucoError(f"max_gpu_memory is a budget for a CUDA device, but the pair is on {pair.device}")
    records, token_lists = prepare(pair, prompts, chat=chat, system_prompt=system_prompt)
    alphas = layer_alphas(alpha, pair.n_layers)
    n, L = len(records), pair.n_layers
    tuco = np.full(n, np.nan)
    n_tokens = np.array([len(t) for t in token_lists])
    norms = np.zeros((n, L, 4)) if layers else None
    token_tuco = [None] * n if token_map else None
    oco = np.full(n, np.nan) if output_co else None

    plan = _plan(pair, token_lists, batch_tokens, budget, sweep_tokens, output_co, token_map, None)
    batches = make_batches(token_lists, plan.batch_tokens, pad_id_of(pair.tokenizer))
    padded = sum(b.input_ids.numel() for b in batches)  # the batch size does not depend on it; the sweeps do
    plan = _plan(pair, token_lists, batch_tokens, budget, sweep_tokens, output_co, token_map, padded)
    groups = [[b] for b in batches] if schedule == "prompt" else _sweeps(batches, plan.sweep_tokens)
    prof = StreamProfile() if profile else None
    if budget is not None:
        torch.cuda.reset_peak_memory_stats(pair.device)
    bar = _progress(progress, n, L, len(groups), schedule)

    def after_layer(l):
        if budget is not None:
            _check_peak(pair.device, budget, plan)
        if bar is not None and schedule == "layer":
            bar.update(1)

    for group in groups:
        decs = decompose_sweep(pair, [(b.input_ids, b.attention_mask) for b in group], alphas, layers=layers,
                               token_map=token_map, keep_final=output_co, own_pt=output_co, spill=plan.spill,
                               backend=backend, profile=prof, on_layer=after_layer)
        for batch, dec in zip(group, decs):
            ptc, ftc = dec.sums_at_last()
            rows = batch.indices
            tuco[rows] = tuco_from_sums(ptc, ftc).cpu().numpy()
            if layers:
                norms[rows] = dec.layer_norms.double().cpu().numpy()
            if token_map:
                per_pos = tuco_from_sums(dec.acc_ptc, dec.acc_ftc)
                for r, i in enumerate(rows):
                    token_tuco[i] = per_pos[r, -n_tokens[i]:].cpu().numpy()
            if output_co:
                r_idx = torch.arange(len(rows), device=dec.last_idx.device)
                x_ft = dec.x_final[r_idx, dec.last_idx]
                x_pt = dec.x_pt_final[r_idx, dec.last_idx]
                oco[rows] = output_co_metric(x_ft, x_pt).cpu().numpy()
            if bar is not None and schedule == "prompt":
                bar.update(len(rows))
    if bar is not None:
        bar.close()

    result = TuCoResult(ids=[r.id for r in records], tuco=tuco, n_tokens=n_tokens, alpha=alphas,
                        token_tuco=token_tuco, output_co=oco)
    result.meta.update(schedule=schedule, offload=pair.offload, plan=plan.describe(), sweeps=len(groups))
    if prof is not None:
        result.meta["profile"] = prof
    if budget is not None:
        result.meta["peak_gpu_memory"] = torch.cuda.max_memory_allocated(pair.device)
    if layers:
        result.ptc_l1, result.ftc_l1 = norms[..., 0], norms[..., 1]
        result.beta = contribution_ratio(norms[..., 3], norms[..., 2])
    return result


def _fixed_bytes(pair, own_pt: bool) -> int:
    """Device bytes held before any batch: weights in flight (or both whole models) and the frames' outer parts."""
    def param_bytes(model):
        return sum(p.numel() * p.element_size() for p in model.parameters() if not p.is_meta)

    if pair.streamer is None:
        return param_bytes(pair.pretrained) + param_bytes(pair.finetuned)
    outer = param_bytes(pair.finetuned)
    return pair.streamer.device_bytes + outer * (2 if own_pt else 1)


def _plan(pair, token_lists, batch_tokens, budget, sweep_tokens, own_pt, token_map, padded_total) -> SweepPlan:
    longest = max((len(t) for t in token_lists), default=1)
    config = pair.finetuned.config
    fp = footprint(config, pair.dtype, longest, attn_implementation=getattr(config, "_attn_implementation", "sdpa"),
                   own_pt=own_pt, token_map=token_map)
    return plan_sweeps(budget=budget, fixed=_fixed_bytes(pair, own_pt), fp=fp, batch_tokens=batch_tokens,
                       longest=longest, total_tokens=padded_total or sum(len(t) for t in token_lists) or 1,
                       sweep_tokens=sweep_tokens)


def _sweeps(batches, sweep_tokens: int):
    """Consecutive micro-batches grouped so that each sweep's padded tokens stay within ``sweep_tokens``."""
    groups, size = [], 0
    for b in batches:
        tokens = b.input_ids.numel()
        if groups and size + tokens <= sweep_tokens:
            groups[-1].append(b)
            size += tokens
        else:
            groups.append([b])
            size = tokens
    return groups


def _check_peak(device, budget: int, plan: SweepPlan) -> None:
    peak = torch.cuda.max_memory_allocated(device)
    if peak > budget:
        raise TucoError(f"device memory peaked at {peak / 2**30:.2f} GiB, over max_gpu_memory "
                        f"{budget / 2**30:.2f} GiB (plan: {plan.describe()}); lower --batch-tokens or raise the budget")


def _progress(enabled: bool, n_prompts: int, n_layers: int, n_sweeps: int, schedule: str):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    if schedule == "layer":
        return tqdm(total=n_layers * n_sweeps, unit="layer", dynamic_ncols=True,
                    desc=f"scoring ({n_sweeps} sweep{'s' if n_sweeps != 1 else ''} × {n_layers} layers)")
    return tqdm(total=n_prompts, unit="prompt", desc="scoring", dynamic_ncols=True)
