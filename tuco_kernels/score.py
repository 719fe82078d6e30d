"""``score``: TuCo for a list of prompts, batched by a token budget, results in input order.

The steps are public so that other drivers (sharded datasets) score the same micro-batches the same way:
:func:`plan_batches` (memory plan and micro-batches), :func:`group_batches` (the schedule), :func:`score_groups`
(the engine, yielding :class:`BatchScores`) and :func:`assemble` (one result in input order).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from .core.engine import decompose_sweep, layer_alphas
from .core.metrics import contribution_ratio, output_co as output_co_metric, tuco_from_sums
from .errors import TucoError
from .offload.budget import SweepPlan, check_peak, group_sweeps, parse_size, plan_for
from .offload.streamer import StreamProfile
from .prompts.batching import Batch, make_batches
from .prompts.tokenize import pad_id_of, prepare
from .result import RunInfo, TuCoResult

DEFAULT_BATCH_TOKENS = 4096


SCHEDULES = ("prompt", "layer")


def score(pair, prompts, *, alpha=1.0, chat: bool = False, system_prompt: str | None = None,
          batch_tokens: int = DEFAULT_BATCH_TOKENS, layers: bool = False, token_map: bool = False,
          output_co: bool = False, progress: bool = False, backend: str | None = None,
          schedule: str | None = None, max_gpu_memory=None, sweep_tokens: int | None = None,
          profile: bool = False) -> TuCoResult:
    """TuCo of each prompt's last token under the pair's decomposition (paper Def. 4.3).

    Args:
        pair: a :class:`~tuco_kernels.core.pair.ModelPair` from :func:`load_pair`.
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
            weights in flight; sizes them (offload/budget.py), spills hidden states to pinned host memory when they do not
            fit, and raises rather than exceed it.
        sweep_tokens: cap on the tokens of one layer-major sweep (default: as many as the budget allows).
        profile: record where the time went (copies vs compute, bandwidth, overlap) in ``result.run.profile``.
    """
    schedule = schedule or ("prompt" if pair.resident else "layer")
    if schedule not in SCHEDULES:
        raise TucoError(f"unknown schedule {schedule!r}; use 'prompt' or 'layer'")
    budget = parse_size(max_gpu_memory)
    if budget is not None and pair.device.type != "cuda":
        raise TucoError(f"max_gpu_memory is a budget for a CUDA device, but the pair is on {pair.device}")
    records, token_lists = prepare(pair, prompts, chat=chat, system_prompt=system_prompt)
    alphas = layer_alphas(alpha, pair.n_layers)
    plan, batches = plan_batches(pair, token_lists, batch_tokens=batch_tokens, budget=budget,
                                 sweep_tokens=sweep_tokens, output_co=output_co, token_map=token_map)
    groups = group_batches(batches, schedule, plan)
    prof = StreamProfile() if profile else None
    if budget is not None:
        torch.cuda.reset_peak_memory_stats(pair.device)
    bar = _progress(progress, len(records), pair.n_layers, len(groups), schedule)

    def after_layer(l):
        if budget is not None:
            check_peak(pair.device, budget, plan)
        if bar is not None and schedule == "layer":
            bar.update(1)

    parts = []
    for part in score_groups(pair, groups, alphas=alphas, layers=layers, token_map=token_map, output_co=output_co,
                             spill=plan.spill, backend=backend, profile=prof, on_layer=after_layer):
        parts.append(part)
        if bar is not None and schedule == "prompt":
            bar.update(len(part.indices))
    if bar is not None:
        bar.close()
    run = RunInfo(schedule=schedule, offload=pair.offload, plan=plan, sweeps=len(groups), profile=prof,
                  peak_gpu_memory=torch.cuda.max_memory_allocated(pair.device) if budget is not None else None)
    return assemble(records, token_lists, alphas, parts, layers=layers, token_map=token_map, output_co=output_co,
                    run=run)


@dataclass
class BatchScores:
    """The scores of one micro-batch's prompts; ``indices`` are their positions in the prompt list."""

    indices: list[int]
    tuco: np.ndarray                    # [b]
    norms: np.ndarray | None = None     # [b, L, 4]: |PTC_l|₁, |FTC_l|₁, |Σ PTC|₁, |Σ FTC|₁ at the last token
    token_tuco: list | None = None      # b arrays [n_tokens]
    output_co: np.ndarray | None = None  # [b]


def plan_batches(pair, token_lists: list[list[int]], *, batch_tokens: int, budget: int | None,
                 sweep_tokens: int | None, output_co: bool, token_map: bool) -> tuple[SweepPlan, list[Batch]]:
    """The memory plan and the micro-batches (length-sorted, left-padded) that scoring these prompts uses."""
    batch_plan = plan_for(pair, [len(t) for t in token_lists], batch_tokens=batch_tokens, budget=budget,
                          own_pt=output_co, token_map=token_map)
    batches = make_batches(token_lists, batch_plan.batch_tokens, pad_id_of(pair.tokenizer))
    return batch_plan.sweeps(sum(b.input_ids.numel() for b in batches), sweep_tokens), batches


def group_batches(batches: list[Batch], schedule: str, plan: SweepPlan) -> list[list[Batch]]:
    """One batch per group (prompt-major) or sweeps of ≤ ``plan.sweep_tokens`` padded tokens (layer-major)."""
    return [[b] for b in batches] if schedule == "prompt" else group_sweeps(batches, plan.sweep_tokens)


def score_groups(pair, groups: list[list[Batch]], *, alphas: list[float], layers: bool = False,
                 token_map: bool = False, output_co: bool = False, spill: bool = False, backend: str | None = None,
                 profile=None, on_layer=None) -> Iterator[BatchScores]:
    """Each group walks the layers once (:func:`~tuco_kernels.core.engine.decompose_sweep`); yields each batch's
    scores as its group finishes. A prompt's scores depend only on its own batch, not on the other groups."""
    for group in groups:
        decs = decompose_sweep(pair, [(b.input_ids, b.attention_mask) for b in group], alphas, layers=layers,
                               token_map=token_map, keep_final=output_co, own_pt=output_co, spill=spill,
                               backend=backend, profile=profile, on_layer=on_layer)
        for batch, dec in zip(group, decs):
            yield _batch_scores(batch, dec, layers=layers, token_map=token_map, output_co=output_co)


def _batch_scores(batch: Batch, dec, *, layers: bool, token_map: bool, output_co: bool) -> BatchScores:
    ptc, ftc = dec.sums_at_last()
    out = BatchScores(list(batch.indices), tuco_from_sums(ptc, ftc).cpu().numpy())
    if layers:
        out.norms = dec.layer_norms.double().cpu().numpy()
    if token_map:
        per_pos = tuco_from_sums(dec.acc_ptc, dec.acc_ftc)
        lengths = batch.attention_mask.sum(-1).tolist()
        out.token_tuco = [per_pos[r, -n:].cpu().numpy() for r, n in enumerate(lengths)]
    if output_co:
        rows = torch.arange(len(batch.indices), device=dec.last_idx.device)
        out.output_co = output_co_metric(dec.x_final[rows, dec.last_idx], dec.x_pt_final[rows, dec.last_idx]).cpu().numpy()
    return out


def assemble(records, token_lists, alphas, parts: list[BatchScores], *, layers: bool, token_map: bool,
             output_co: bool, run: RunInfo | None = None) -> TuCoResult:
    """One :class:`TuCoResult` in input order from the batches' scores."""
    n = len(records)
    tuco = np.full(n, np.nan)
    norms = np.zeros((n, len(alphas), 4)) if layers else None
    token_tuco = [None] * n if token_map else None
    oco = np.full(n, np.nan) if output_co else None
    for part in parts:
        rows = part.indices
        tuco[rows] = part.tuco
        if layers:
            norms[rows] = part.norms
        if token_map:
            for i, values in zip(rows, part.token_tuco):
                token_tuco[i] = values
        if output_co:
            oco[rows] = part.output_co
    result = TuCoResult(ids=[r.id for r in records], tuco=tuco, n_tokens=np.array([len(t) for t in token_lists]),
                        alpha=alphas, token_tuco=token_tuco, output_co=oco, run=run)
    if layers:
        result.ptc_l1, result.ftc_l1 = norms[..., 0], norms[..., 1]
        result.beta = contribution_ratio(norms[..., 3], norms[..., 2])
    return result


def _progress(enabled: bool, n_prompts: int, n_layers: int, n_sweeps: int, schedule: str):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    if schedule == "layer":
        return tqdm(total=n_layers * n_sweeps, unit="layer", dynamic_ncols=True,
                    desc=f"scoring ({n_sweeps} sweep{'s' if n_sweeps != 1 else ''} × {n_layers} layers)")
    return tqdm(total=n_prompts, unit="prompt", desc="scoring", dynamic_ncols=True)
