"""``score``: TuCo for a list of prompts, batched by a token budget, results in input order.

The steps are public so that other drivers (sharded datasets) score the same micro-batches the same way:
:func:`plan_batches` (memory plan and micro-batches), :func:`group_batches` (the schedule), :func:`score_groups`
(the engine, yielding :class:`BatchScores`) and :func:`assemble` (one result in input order; :func:`assemble_sides`
for a pair set, one block of rows per fine-tune).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from .core.engine import decompose_sweep, layer_alphas
from .core.metrics import contribution_ratio, output_co as output_co_metric, tuco_from_sums
from .errors import DeviceMemoryError, OptionError
from .core.budget import SweepPlan, check_peak, group_sweeps, parse_size, plan_for
from .offload.streamer import StreamProfile
from .prompts.batching import Batch, make_batches, split_batch
from .prompts.tokenize import pad_id_of, prepare, rendering
from .result import RunInfo, TuCoResult

DEFAULT_BATCH_TOKENS = 4096


SCHEDULES = ("prompt", "layer")
OUTPUT_CO_NONFINITE = ("non-finite: OutputCo, from the pre-trained model's own forward (its last hidden state x_L^PT "
                       "has NaN/inf)")


def score(pair, prompts, *, alpha=1.0, chat: bool | None = None, system_prompt: str | None = None,
          batch_tokens: int = DEFAULT_BATCH_TOKENS, layers: bool = False, token_map: bool = False,
          output_co: bool = False, progress: bool = False, backend: str | None = None,
          schedule: str | None = None, max_gpu_memory=None, sweep_tokens: int | None = None,
          profile: bool = False, truncate: str | None = None) -> TuCoResult:
    """TuCo of each prompt's last token under the pair's decomposition (paper Def. 4.3).

    Args:
        pair: a :class:`~tuco_kernels.core.pair.ModelPair` from :func:`load_pair`; a
            :class:`~tuco_kernels.core.pair_set.PairSet` (``load_pair(base, [a, b])``) scores every prompt with each
            fine-tune in the same sweeps, its rows fine-tune by fine-tune (``result.finetuned``).
        prompts: a string, a chat, or a list of strings, chats (lists of messages) or mappings with
            ``prompt`` / ``messages`` / ``input_ids`` (and optional ``id``).
        alpha: FTC scaling (a scalar or one value per layer); 1.0 is the fine-tuned model itself.
        chat: how text prompts are rendered: None (default) as the user turn of the fine-tuned tokenizer's chat
            template when it has one, else raw text; True the template (an error without one); False raw text.
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
            weights in flight; sizes them (core/budget.py), spills hidden states to pinned host memory when they do not
            fit, and raises rather than exceed it.
        sweep_tokens: cap on the tokens of one layer-major sweep (default: as many as the budget allows).
        profile: record where the time went (copies vs compute, bandwidth, overlap) in ``result.run.profile``.
        truncate: a prompt longer than the model's positions is refused by default; "left" keeps its end (the last
            token, where TuCo is read), "right" its beginning; ``result.truncated_from`` says which were cut.

    Rows whose numbers are not finite keep their place with ``result.status`` saying where the stream broke; they
    are never averaged (``result.summary()``).
    """
    schedule = schedule or ("prompt" if pair.resident else "layer")
    if schedule not in SCHEDULES:
        raise OptionError(f"unknown schedule {schedule!r}; use 'prompt' or 'layer'")
    budget = parse_size(max_gpu_memory)
    if budget is not None and pair.device.type != "cuda":
        raise OptionError(f"max_gpu_memory is a budget for a CUDA device, but the pair is on {pair.device}")
    records, token_lists = prepare(pair, prompts, chat=chat, system_prompt=system_prompt, truncate=truncate)
    alphas = layer_alphas(alpha, pair.n_layers)
    labels = [f"{r.where} (id {r.id!r}, {len(t)} tokens)" for r, t in zip(records, token_lists)]
    plan, batches = plan_batches(pair, token_lists, batch_tokens=batch_tokens, budget=budget,
                                 sweep_tokens=sweep_tokens, output_co=output_co, token_map=token_map)
    groups = group_batches(batches, schedule, plan)
    prof = StreamProfile() if profile else None
    if budget is not None:
        torch.cuda.reset_peak_memory_stats(pair.device)
    bar = _progress(progress, len(records), pair.n_layers, len(groups), schedule, sides=len(pair.sides))

    def after_layer(l):
        if budget is not None:
            check_peak(pair.device, budget, plan)
        if bar is not None:
            bar.update(1)

    parts, done = [], 0
    for part in score_groups(pair, groups, alphas=alphas, layers=layers, token_map=token_map, output_co=output_co,
                             spill=plan.spill, backend=backend, profile=prof, on_layer=after_layer, labels=labels):
        parts.append(part)
        done += len(part.indices) if part.side == 0 else 0   # a pair set's sides finish a group together
        if bar is not None:
            bar.set_postfix_str(f"{done}/{len(records)} prompts", refresh=False)
    if bar is not None:
        bar.close()
    run = RunInfo(schedule=schedule, offload=pair.offload, plan=plan, sweeps=len(groups), profile=prof,
                  rendering=rendering(pair.tokenizer, chat, system_prompt),
                  peak_gpu_memory=torch.cuda.max_memory_allocated(pair.device) if budget is not None else None)
    return assemble_sides(pair, records, token_lists, alphas, parts, layers=layers, token_map=token_map,
                          output_co=output_co, run=run)


def assemble_sides(pair, records, token_lists, alphas, parts: list[BatchScores], **options) -> TuCoResult:
    """:func:`assemble` for a pair; for a :class:`~tuco_kernels.core.pair_set.PairSet`, one result per fine-tune
    joined fine-tune by fine-tune, each row named in ``finetuned`` (``pair.side_names``)."""
    if pair.side_names is None:
        return assemble(records, token_lists, alphas, parts, tokenizer=pair.tokenizer, **options)
    results = [assemble(records, token_lists, alphas, [p for p in parts if p.side == k], tokenizer=pair.tokenizer,
                        **options) for k in range(len(pair.side_names))]
    return TuCoResult.concat(results, finetuned=pair.side_names)


@dataclass
class BatchScores:
    """The scores of one micro-batch's prompts; ``indices`` are their positions in the prompt list."""

    indices: list[int]
    tuco: np.ndarray                    # [b]
    norms: np.ndarray | None = None     # [b, L, 4]: |PTC_l|₁, |FTC_l|₁, |Σ PTC|₁, |Σ FTC|₁ at the last token
    token_tuco: list | None = None      # b arrays [n_tokens]
    output_co: np.ndarray | None = None  # [b]
    nonfinite_layer: np.ndarray | None = None  # [b]: first layer with a NaN/inf block output, −1 none, −2 embedding
    nonfinite_side: np.ndarray | None = None   # [b]: 0 the pre-trained block, 1 the fine-tuned one
    side: int = 0                       # which fine-tune of a PairSet (``pair.sides[side]``); 0 for a pair


def plan_batches(pair, token_lists: list[list[int]], *, batch_tokens: int, budget: int | None,
                 sweep_tokens: int | None, output_co: bool, token_map: bool) -> tuple[SweepPlan, list[Batch]]:
    """The memory plan and the micro-batches (length-sorted, right-padded) that scoring these prompts uses."""
    batch_plan = plan_for(pair, [len(t) for t in token_lists], batch_tokens=batch_tokens, budget=budget,
                          own_pt=output_co, token_map=token_map)
    batches = make_batches(token_lists, batch_plan.batch_tokens, pad_id_of(pair.tokenizer),
                           alone=not pair.family.pads_invariant)
    return batch_plan.sweeps(sum(b.input_ids.numel() for b in batches), sweep_tokens), batches


def group_batches(batches: list[Batch], schedule: str, plan: SweepPlan) -> list[list[Batch]]:
    """One batch per group (prompt-major) or sweeps of ≤ ``plan.sweep_tokens`` padded tokens (layer-major)."""
    return [[b] for b in batches] if schedule == "prompt" else group_sweeps(batches, plan.sweep_tokens)


def score_groups(pair, groups: list[list[Batch]], *, alphas: list[float], layers: bool = False,
                 token_map: bool = False, output_co: bool = False, spill: bool = False, backend: str | None = None,
                 profile=None, on_layer=None, labels: list[str] | None = None) -> Iterator[BatchScores]:
    """Each group walks the layers once (:func:`~tuco_kernels.core.engine.decompose_sweep`); yields each batch's
    scores as its group finishes. A prompt's scores depend only on its own batch, not on the other groups.

    When the device runs out of memory, the group's micro-batches are halved and the group runs again, down to
    one prompt per batch; then :class:`~tuco_kernels.errors.DeviceMemoryError` names the prompt (``labels[i]``
    describes prompt i). A prompt's scores do not depend on its batch beyond fp32 rounding.
    """
    options = dict(layers=layers, token_map=token_map, output_co=output_co, spill=spill, backend=backend,
                   profile=profile, on_layer=on_layer)
    for group in groups:
        yield from _score_group(pair, group, alphas, options, labels)


def _score_group(pair, group: list[Batch], alphas, options: dict, labels) -> Iterator[BatchScores]:
    o = options
    try:
        decs = decompose_sweep(pair, [(b.input_ids, b.attention_mask) for b in group], alphas, layers=o["layers"],
                               token_map=o["token_map"], keep_final=o["output_co"], own_pt=o["output_co"],
                               spill=o["spill"], backend=o["backend"], profile=o["profile"], on_layer=o["on_layer"])
    except torch.OutOfMemoryError:
        if pair.device.type == "cuda":
            torch.cuda.empty_cache()
        if all(len(b.indices) == 1 for b in group):
            if len(group) > 1:   # a sweep of single prompts: one at a time
                for b in group:
                    yield from _score_group(pair, [b], alphas, options, labels)
                return
            i = group[0].indices[0]
            what = labels[i] if labels else f"prompt {i} ({group[0].input_ids.shape[1]} tokens)"
            raise DeviceMemoryError(f"{what}: out of device memory even alone; use a shorter prompt, "
                                    f"load the pair with offload='cpu' or 'disk' (--offload cpu|disk) or a smaller dtype "
                                    f"(--dtype)") from None
        yield from _score_group(pair, [half for b in group for half in split_batch(b)], alphas, options, labels)
        return
    for i, dec in enumerate(decs):   # side-major: side k's batches are decs[k * len(group):(k + 1) * len(group)]
        side, batch = divmod(i, len(group))
        yield _batch_scores(group[batch], dec, layers=o["layers"], token_map=o["token_map"],
                            output_co=o["output_co"], side=side)


def _batch_scores(batch: Batch, dec, *, layers: bool, token_map: bool, output_co: bool,
                  side: int = 0) -> BatchScores:
    ptc, ftc = dec.sums_at_last()
    out = BatchScores(list(batch.indices), tuco_from_sums(ptc, ftc).cpu().numpy(), side=side,
                      nonfinite_layer=dec.nonfinite_layer.cpu().numpy(), nonfinite_side=dec.nonfinite_side.cpu().numpy())
    if layers:
        out.norms = dec.layer_norms.double().cpu().numpy()
    if token_map:
        per_pos = tuco_from_sums(dec.acc_ptc, dec.acc_ftc)
        lengths = batch.attention_mask.sum(-1).tolist()
        out.token_tuco = [per_pos[r, :n].cpu().numpy() for r, n in enumerate(lengths)]
    if output_co:
        rows = torch.arange(len(batch.indices), device=dec.last_idx.device)
        out.output_co = output_co_metric(dec.x_final[rows, dec.last_idx], dec.x_pt_final[rows, dec.last_idx]).cpu().numpy()
    return out


def row_status(tuco: float, nonfinite_layer: int, nonfinite_side: int) -> str:
    """"ok", or why a row's TuCo is not a number (where the stream first stopped being finite)."""
    if nonfinite_layer == -2:
        return "non-finite: the embedding output (x_0) has NaN/inf"
    if nonfinite_layer >= 0:
        block = "pre-trained" if nonfinite_side == 0 else "fine-tuned"
        return f"non-finite: from layer {nonfinite_layer}, the {block} block's output"
    if not np.isfinite(tuco):
        return "undefined: ΣPTC and ΣFTC are both zero" if np.isnan(tuco) else "non-finite sums"
    return "ok"


def prompt_columns(records) -> list[dict] | None:
    """The labels carried with the prompts (the same names in every row), or None when they carry none."""
    if not any(r.extra.get("columns") for r in records):
        return None
    return [dict(r.extra.get("columns") or {}) for r in records]


def assemble(records, token_lists, alphas, parts: list[BatchScores], *, layers: bool, token_map: bool,
             output_co: bool, run: RunInfo | None = None, tokenizer=None) -> TuCoResult:
    """One :class:`TuCoResult` in input order from the batches' scores (``tokenizer``: for the prompts' previews and
    the token strings beside a token map)."""
    n = len(records)
    tuco = np.full(n, np.nan)
    status = ["not scored"] * n
    norms = np.zeros((n, len(alphas), 4)) if layers else None
    token_tuco = [None] * n if token_map else None
    oco = np.full(n, np.nan) if output_co else None
    for part in parts:
        rows = part.indices
        tuco[rows] = part.tuco
        for r, i in enumerate(rows):
            status[i] = row_status(part.tuco[r], int(part.nonfinite_layer[r]), int(part.nonfinite_side[r]))
        if layers:
            norms[rows] = part.norms
        if token_map:
            for i, values in zip(rows, part.token_tuco):
                token_tuco[i] = values
        if output_co:
            oco[rows] = part.output_co
    if output_co:   # TuCo can be finite while the pre-trained model's own forward is not: flag the row all the same
        for i in np.flatnonzero(~np.isfinite(oco)):
            if status[i] == "ok":
                status[i] = OUTPUT_CO_NONFINITE
    truncated = ([r.extra.get("truncated_from", 0) for r in records]
                 if any("truncated_from" in r.extra for r in records) else None)
    tokens = None
    if token_map and tokenizer is not None:
        tokens = [[tokenizer.decode([t]) for t in ids] for ids in token_lists]
    result = TuCoResult(ids=[r.id for r in records], tuco=tuco, n_tokens=np.array([len(t) for t in token_lists]),
                        alpha=alphas, token_tuco=token_tuco, output_co=oco, status=status,
                        truncated_from=truncated, run=run, texts=[r.preview(tokenizer) for r in records],
                        tokens=tokens, columns=prompt_columns(records))
    if layers:
        result.ptc_l1, result.ftc_l1 = norms[..., 0], norms[..., 1]
        result.beta = contribution_ratio(norms[..., 3], norms[..., 2])
    return result


def _progress(enabled: bool, n_prompts: int, n_layers: int, n_groups: int, schedule: str, sides: int = 1):
    """A bar that moves every layer (a micro-batch or sweep through one layer), with the prompts done beside it."""
    if not enabled:
        return None
    from tqdm.auto import tqdm

    what = "sweep" if schedule == "layer" else "batch"
    fine_tunes = f", {sides} fine-tunes each" if sides > 1 else ""
    return tqdm(total=n_layers * n_groups, unit="layer", dynamic_ncols=True, postfix=f"0/{n_prompts} prompts",
                desc=f"scoring ({n_groups} {what}{'es' if what == 'batch' and n_groups != 1 else ''}"
                     f"{'s' if what == 'sweep' and n_groups != 1 else ''} × {n_layers} layers{fine_tunes})")
