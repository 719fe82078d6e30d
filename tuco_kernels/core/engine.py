"""The decomposition step: one batch through every layer of both models.

For a batch, the fine-tuned model's own forward is recorded (capture.py): x_0 and each block's call
arguments. Then for l = 0..L-1 both models' block l run on the same stream x_l and the fused update (ops/)
writes x_{l+1} = out_pt + α_l·(out_ft − out_pt) and accumulates the last-token PTC and FTC (docs/math.md §1, §4).
Under α ≠ 1 the stream is the α-model's own, re-decomposed at every layer (§3).
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import torch

from .. import ops
from ..errors import OptionError
from .capture import capture, last_token_index


def layer_alphas(alpha, n_layers: int) -> list[float]:
    """A scalar α or one value per layer (numbers, numpy scalars or arrays, tensors), as n_layers finite floats."""
    if hasattr(alpha, "tolist") and not isinstance(alpha, (str, bytes)):   # tensors, numpy arrays and scalars
        alpha = alpha.tolist()
    if isinstance(alpha, numbers.Real) and not isinstance(alpha, bool):
        values = [float(alpha)] * n_layers
    elif isinstance(alpha, (list, tuple)) and all(isinstance(a, numbers.Real) and not isinstance(a, bool)
                                                  for a in alpha):
        values = [float(a) for a in alpha]
        if len(values) != n_layers:
            raise OptionError(f"alpha has {len(values)} values but the model has {n_layers} layers")
    else:
        raise OptionError(f"alpha must be a number or one number per layer, got {type(alpha).__name__} {alpha!r}")
    bad = [a for a in values if not math.isfinite(a)]
    if bad:
        raise OptionError(f"alpha must be finite, got {bad[0]}")
    return values


@dataclass
class BatchDecomposition:
    """Everything one batch yields. Rows follow the batch; sums are at each row's last real token."""

    last_idx: torch.Tensor              # [B] int64
    acc_ptc: torch.Tensor               # [B, d] fp32: Σ_l PTC_l[last]   ([B, T, d] with token_map)
    acc_ftc: torch.Tensor               # [B, d] fp32: Σ_l FTC_l[last]
    layer_norms: torch.Tensor | None    # [B, L, 4] fp32: |PTC_l|₁, |FTC_l|₁, |Σ_{≤l} PTC|₁, |Σ_{≤l} FTC|₁
    x_final: torch.Tensor | None        # [B, T, d] model dtype: x_L (pre final norm)
    x_pt_final: torch.Tensor | None = None  # [B, T, d]: the pre-trained model's own x_L (OutputCo)
    nonfinite_layer: torch.Tensor | None = None  # [B] int64: first layer whose output was not finite, −1: none
    nonfinite_side: torch.Tensor | None = None   # [B] int64: there, 0 the pre-trained block, 1 the fine-tuned one

    def sums_at_last(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.acc_ptc.dim() == 3:
            rows = torch.arange(self.acc_ptc.shape[0], device=self.acc_ptc.device)
            return self.acc_ptc[rows, self.last_idx], self.acc_ftc[rows, self.last_idx]
        return self.acc_ptc, self.acc_ftc


class _Rows:
    """One micro-batch's state while a sweep walks the layers: its stream x_l, call arguments, sums.

    ``x`` (and ``x_pt``, the pre-trained model's own stream for OutputCo) live on the device, or in pinned
    host memory when the sweep spills; :class:`_Spill` then moves them in and out around each step.
    """

    def __init__(self, pair, input_ids, attention_mask, *, layers, token_map, own_pt, spill):
        device = pair.device
        input_ids, attention_mask = input_ids.to(device), attention_mask.to(device)
        rec = capture(pair.finetuned, pair.family, input_ids, attention_mask)
        B, T, d = rec.x0.shape
        self.kwargs = rec.block_kwargs
        self.last_idx = last_token_index(attention_mask)
        shape = (B, T, d) if token_map else (B, d)
        self.acc_ptc = torch.zeros(shape, dtype=torch.float32, device=device)
        self.acc_ftc = torch.zeros_like(self.acc_ptc)
        self.norms = torch.zeros((len(self.kwargs), B, 4), dtype=torch.float32, device=device) if layers else None
        self.real = attention_mask.bool()
        # where the stream first stopped being finite, tracked on the device (no synchronisation per layer)
        self.bad_layer = torch.where(_nonfinite_rows(rec.x0, self.real), -2, -1)   # −2: the embedding already
        self.bad_side = torch.zeros(B, dtype=torch.int64, device=device)
        self.x = _to_host(rec.x0) if spill else rec.x0
        self.block_output = pair.family.block_output
        self.x_pt = self.kwargs_pt = None
        if own_pt:
            pt = pair.pretrained_frame()
            rec_pt = capture(pt, pair.family, input_ids, attention_mask)
            self.x_pt, self.kwargs_pt = (_to_host(rec_pt.x0) if spill else rec_pt.x0), rec_pt.block_kwargs

    def streams(self) -> list[torch.Tensor]:
        return [self.x] if self.x_pt is None else [self.x, self.x_pt]

    def step(self, l: int, run_pt, run_ft, alpha: float, backend, x, x_pt):
        """Layer l on this micro-batch: both blocks on x_l, then the fused update writes x_{l+1} over x_l.

        ``x``/``x_pt`` are the streams on the device; returns them after the layer (x updated in place)."""
        out_pt = self.block_output(run_pt(x, **self.kwargs[l]))
        out_ft = self.block_output(run_ft(x, **self.kwargs[l]))
        self._track_nonfinite(l, out_pt, out_ft)
        norms = self.norms[l] if self.norms is not None else None
        ops.fused_update(x, out_pt, out_ft, alpha, self.last_idx, self.acc_ptc, self.acc_ftc, out=x, norms=norms,
                         backend=backend)
        if x_pt is not None:
            x_pt = self.block_output(run_pt(x_pt, **self.kwargs_pt[l]))
        return x, x_pt

    def _track_nonfinite(self, l: int, out_pt: torch.Tensor, out_ft: torch.Tensor) -> None:
        """Record, per row, the first layer whose block output is not finite on a real token, and which block."""
        bad_pt, bad_ft = _nonfinite_rows(out_pt, self.real), _nonfinite_rows(out_ft, self.real)
        first = (self.bad_layer == -1) & (bad_pt | bad_ft)
        self.bad_layer = torch.where(first, l, self.bad_layer)
        self.bad_side = torch.where(first, torch.where(bad_pt, 0, 1), self.bad_side)

    def finish(self, keep_final: bool) -> BatchDecomposition:
        norms = self.norms.transpose(0, 1).contiguous() if self.norms is not None else None
        device = self.last_idx.device
        x = self.x.to(device) if keep_final else None  # a spilled stream comes back (stream-ordered after its copy)
        x_pt = self.x_pt.to(device) if self.x_pt is not None else None
        return BatchDecomposition(self.last_idx, self.acc_ptc, self.acc_ftc, norms, x, x_pt, self.bad_layer,
                                  self.bad_side)


def _nonfinite_rows(t: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """[B] bool: the row has a NaN or inf on a real (not padding) token of ``t`` [B, T, d]."""
    return (~torch.isfinite(t).all(-1) & real).any(-1)


def _to_host(t: torch.Tensor) -> torch.Tensor:
    """A pinned host copy of a device tensor (the spill of a sweep's hidden states past the device budget)."""
    host = torch.empty(t.shape, dtype=t.dtype, pin_memory=t.device.type == "cuda")
    return host.copy_(t)


class _Spill:
    """Moves spilled micro-batch streams between pinned host memory and the device, one micro-batch ahead.

    On CUDA the copies run on a side stream: micro-batch i+1 is uploaded while i computes, and i is written
    back while i+1 computes; events order each copy after what it depends on (an upload after the previous
    write-back of the same rows, a write-back after the compute of the layer). Two micro-batches' streams are
    on the device at a time. On CPU the copies are plain and in order.
    """

    def __init__(self, device: torch.device):
        self.device = device
        self.cuda = device.type == "cuda"
        self.stream = torch.cuda.Stream(device) if self.cuda else None
        self.pending: dict[int, tuple[list, object]] = {}

    def prefetch(self, rows: _Rows) -> None:
        if not self.cuda:
            return
        with torch.cuda.stream(self.stream):
            on_device = [t.to(self.device, non_blocking=True) for t in rows.streams()]
            done = torch.cuda.Event()
            done.record(self.stream)
        self.pending[id(rows)] = (on_device, done)

    def take(self, rows: _Rows) -> list:
        if not self.cuda:
            return [t.to(self.device) for t in rows.streams()]
        if id(rows) not in self.pending:
            self.prefetch(rows)
        on_device, done = self.pending.pop(id(rows))
        compute = torch.cuda.current_stream(self.device)
        compute.wait_event(done)
        for t in on_device:
            t.record_stream(compute)  # allocated on the side stream, used on the compute stream
        return on_device

    def put_back(self, rows: _Rows, on_device: list) -> None:
        if not self.cuda:
            for host, t in zip(rows.streams(), on_device):
                host.copy_(t)
            return
        computed = torch.cuda.Event()
        computed.record(torch.cuda.current_stream(self.device))
        self.stream.wait_event(computed)
        with torch.cuda.stream(self.stream):
            for host, t in zip(rows.streams(), on_device):
                host.copy_(t, non_blocking=True)
                t.record_stream(self.stream)

    def drain(self) -> None:
        """Make the compute stream wait for the last write-backs (before the streams are read back)."""
        if self.cuda:
            torch.cuda.current_stream(self.device).wait_stream(self.stream)


@torch.no_grad()
def decompose_sweep(pair, batches, alphas: list[float], *, layers: bool = False, token_map: bool = False,
                    keep_final: bool = False, own_pt: bool = False, spill: bool = False,
                    backend: str | None = None, profile=None, on_layer=None) -> list[BatchDecomposition]:
    """Layer-major over micro-batches: each layer's weights are fetched once and every batch runs through it.

    ``batches`` are (input_ids, attention_mask) pairs. One batch is the prompt-major step; both schedules
    run this same code, so they give the same numbers. ``spill`` keeps the hidden states in pinned host
    memory between layers; ``own_pt`` also runs the pre-trained model's own stream (OutputCo).

    A pair with several sides (:class:`~tuco_kernels.core.pair_set.PairSet`: one base, several fine-tunes) runs
    every side's own stream of every batch through each layer while it is there; the result is side-major (side 0's
    batches, then side 1's, ...), each side's numbers those of its pair alone. The pre-trained model's own stream
    (``own_pt``) does not depend on the fine-tune: it runs once, on side 0, and every side's OutputCo reads it.
    """
    sides = pair.sides
    rows = [(k, _Rows(side, ids, mask, layers=layers, token_map=token_map, own_pt=own_pt and k == 0, spill=spill))
            for k, side in enumerate(sides) for ids, mask in batches]
    mover = _Spill(pair.device) if spill else None
    for l, runners in pair.side_layers(profile):
        if mover is not None:
            mover.prefetch(rows[0][1])
        for i, (k, r) in enumerate(rows):
            run_pt, run_ft = runners[k]
            if mover is None:
                r.x, r.x_pt = r.step(l, run_pt, run_ft, alphas[l], backend, r.x, r.x_pt)
                continue
            if i + 1 < len(rows):
                mover.prefetch(rows[i + 1][1])  # its upload overlaps this micro-batch's compute
            x, x_pt = (mover.take(r) + [None])[:2]
            x, x_pt = r.step(l, run_pt, run_ft, alphas[l], backend, x, x_pt)
            mover.put_back(r, [x] if x_pt is None else [x, x_pt])
        if on_layer is not None:
            on_layer(l)
    if mover is not None:
        mover.drain()
    out = [r.finish(keep_final) for _, r in rows]
    if own_pt:   # the pre-trained model's own x_L, computed with side 0's batches, for every side
        for i, dec in enumerate(out[len(batches):], start=len(batches)):
            dec.x_pt_final = out[i % len(batches)].x_pt_final
    return out


@torch.no_grad()
def decompose_batch(pair, input_ids: torch.Tensor, attention_mask: torch.Tensor, alphas: list[float], *,
                    layers: bool = False, token_map: bool = False, keep_final: bool = False,
                    backend: str | None = None) -> BatchDecomposition:
    """Run one padded batch through both models layer by layer; see the module docstring."""
    return decompose_sweep(pair, [(input_ids, attention_mask)], alphas, layers=layers, token_map=token_map,
                           keep_final=keep_final, backend=backend)[0]
