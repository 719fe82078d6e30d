"""Layer-by-layer weight exchange: both models' block weights for one layer at a time, prefetched.

Per layer l the engine needs the pre-trained and fine-tuned weights of block l on the compute device.
``LayerStreamer.layers()`` yields them in order, with the next layer's copy under way while the
current one computes:

    host side        offload="cpu": every layer of both models packed in one page-locked arena per model
                     (read once at load time);  offload="disk": two reusable staging buffers per model in
                     one arena, filled from the safetensors files (checkpoint.py) by a reader thread.
                     Blocks may differ (a dense first layer before MoE ones, attention and state-space
                     layers): each layer has its own layout; staging buffers and slots hold the largest.
                     An arena is ordinary memory of exactly the size needed, page-locked with
                     cudaHostRegister: torch's pinned allocator would round every request up to a power
                     of two (a 634 MB bf16 13B layer would take 1 GiB, 80 GiB per model instead of 26).
    device side      (CUDA) two device slots per model (double buffer); layer l+1 is copied host-to-
                     device on a side stream while layer l computes on the current stream. Events order
                     it: the copy of l+1 into slot s waits for the compute that last used s (``free``);
                     the compute of l+1 waits for its copy (``ready``); a staging buffer is refilled only
                     after the copy out of it finished (``staged``). Buffers are allocated once. A pass
                     starts with the copy stream waiting for everything already queued on the compute
                     stream, so a pass that was abandoned half-way (an error, a budget check) cannot have
                     its slots overwritten under it.
                     (CPU) the weights are used where they are: views of the host buffers.

A LoRA fine-tuned side costs no second copy: its weights are the pre-trained slot's tensors, with the
adapted ones merged on the device (``W + s·B·A``, lora.LoraDelta) into a small merge slot.

Each layer's block is the meta skeleton of the fine-tuned model (skeleton.py), run with a weight dict by
``torch.func.functional_call``. ``profile`` records time in copies vs compute and the achieved bandwidth.
"""

from __future__ import annotations

import functools
import time
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field

import torch
from torch.func import functional_call

from ..errors import TucoError
from .checkpoint import LoadConversions, TensorSource, resolve_name
from .lora import LoraAdapter

_ALIGN = 64


class LayerLayout:
    """A block's parameters packed into one flat byte buffer: per name, a dtype, shape and byte offset."""

    def __init__(self, specs: list[tuple[str, torch.dtype, tuple[int, ...]]]):
        self.entries = []
        offset = 0
        for name, dtype, shape in specs:
            nbytes = int(torch.Size(shape).numel()) * dtype.itemsize
            self.entries.append((name, dtype, tuple(shape), offset, nbytes))
            offset += -(-nbytes // _ALIGN) * _ALIGN
        self.nbytes = offset

    def views(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        return {name: flat[o:o + n].view(dtype).view(shape) for name, dtype, shape, o, n in self.entries}



@dataclass
class StreamProfile:
    """Where a pass's time went. Copies: disk reads (host) and host-to-device transfers."""

    layers: int = 0
    bytes_h2d: int = 0
    bytes_read: int = 0
    seconds_read: float = 0.0        # disk -> staging, reader thread
    seconds_h2d: float = 0.0         # host -> device, copy stream (CUDA events)
    seconds_compute: float = 0.0     # both blocks and the fused update, all micro-batches of each layer
    seconds_wall: float = 0.0
    _pending: list = field(default_factory=list, repr=False)

    @property
    def seconds_copy(self) -> float:
        return self.seconds_read + self.seconds_h2d

    @property
    def h2d_gb_per_s(self) -> float:
        return self.bytes_h2d / self.seconds_h2d / 1e9 if self.seconds_h2d else float("nan")

    @property
    def read_gb_per_s(self) -> float:
        return self.bytes_read / self.seconds_read / 1e9 if self.seconds_read else float("nan")

    @property
    def overlap(self) -> float:
        """Fraction of the copy time hidden behind compute: (copy + compute − wall) / copy, in [0, 1]."""
        if not self.seconds_copy:
            return float("nan")
        return min(1.0, max(0.0, (self.seconds_copy + self.seconds_compute - self.seconds_wall) / self.seconds_copy))

    def lines(self) -> list[tuple[str, str]]:
        rows = [("layer visits", f"{self.layers}"), ("wall", f"{self.seconds_wall:.3f} s"),
                ("compute", f"{self.seconds_compute:.3f} s")]
        if self.bytes_read:
            rows.append(("disk reads", f"{self.seconds_read:.3f} s, {self.bytes_read / 1e9:.2f} GB, "
                                       f"{self.read_gb_per_s:.2f} GB/s"))
        if self.bytes_h2d:
            rows.append(("host-to-device copies", f"{self.seconds_h2d:.3f} s, {self.bytes_h2d / 1e9:.2f} GB, "
                                                  f"{self.h2d_gb_per_s:.2f} GB/s"))
        if self.seconds_copy:
            rows.append(("copy time hidden by compute", f"{100 * self.overlap:.0f}%"))
        return rows


class HostArena:
    """``nbytes`` of host memory as one uint8 tensor, page-locked when ``pin`` (for asynchronous copies).

    Ordinary (pageable) memory of exactly the size asked for, registered with ``cudaHostRegister``;
    ``torch.empty(pin_memory=True)`` would go through the caching host allocator, which rounds each
    request up to a power of two. ``close()`` unregisters it (also done when it is garbage-collected).
    """

    PAGE = 4096

    def __init__(self, nbytes: int, pin: bool):
        self.nbytes = int(nbytes)
        self._registered = 0
        if not pin or self.nbytes == 0:
            self.tensor = torch.empty(self.nbytes, dtype=torch.uint8)
            return
        span = -(-self.nbytes // self.PAGE) * self.PAGE
        raw = torch.empty(span + self.PAGE, dtype=torch.uint8)
        skip = -raw.data_ptr() % self.PAGE
        self._raw, self.tensor = raw, raw[skip:skip + self.nbytes]
        err = torch.cuda.cudart().cudaHostRegister(raw.data_ptr() + skip, span, 0)
        if int(err) != 0:
            raise TucoError(f"cannot page-lock {span / 2**30:.2f} GiB of host memory for the weights "
                            f"(cudaHostRegister: {err}); free host memory or use offload='disk'")
        self._registered = raw.data_ptr() + skip

    @property
    def pinned_bytes(self) -> int:
        return self.nbytes if self._registered else 0

    def close(self) -> None:
        if self._registered:
            torch.cuda.cudart().cudaHostUnregister(self._registered)
            self._registered = 0

    def __del__(self):
        try:
            self.close()
        except Exception:  # interpreter shutdown: the CUDA runtime may already be gone
            pass


def _run_block(block, weights, x, **kwargs):
    return functional_call(block, weights, (x,), kwargs, strict=False, tie_weights=False)


def _base_names(ft_block, layout: LayerLayout) -> list[tuple[str, str]]:
    """(name in PEFT's block, name in the streamed layer) of every base weight the fine-tuned block reads."""
    pairs = []
    for name, p in ft_block.named_parameters():
        if p.is_meta:
            rel = name.replace(".base_layer.", ".")
            if rel not in {entry[0] for entry in layout.entries}:
                raise TucoError(f"the fine-tuned block's {name} is not a weight of the streamed layer")
            pairs.append((name, rel))
    return pairs


class _ModelHost:
    """One model's block weights on the host: every layer (offload="cpu") or two staging buffers ("disk")."""

    def __init__(self, source: TensorSource, names: list[list[tuple[str, str]]], layouts: list[LayerLayout],
                 offload: str, pin: bool, prefix: str | None, conversions: LoadConversions | None = None):
        self.source, self.names, self.layouts, self.offload = source, names, layouts, offload
        self.stored = [[(rel, resolve_name(source, full, prefix, [], conversions)) for rel, full in layer]
                       for layer in names]
        sizes = [lay.nbytes for lay in layouts] if offload == "cpu" else [max(lay.nbytes for lay in layouts)] * 2
        self.arena = HostArena(sum(sizes), pin)
        starts = [sum(sizes[:i]) for i in range(len(sizes))]
        self.buffers = [self.arena.tensor[a:a + n] for a, n in zip(starts, sizes)]
        if offload == "cpu":
            for l, buffer in enumerate(self.buffers):
                self.fill(l, buffer)

    def fill(self, l: int, flat: torch.Tensor) -> int:
        views = self.layouts[l].views(flat)
        for rel, stored in self.stored[l]:
            self.source.read_into(stored, views[rel])
        return self.layouts[l].nbytes

    def host_buffer(self, l: int, slot: int) -> torch.Tensor:
        """Layer l's packed weights on the host (its own buffer, or the front of staging buffer ``slot``)."""
        return self.buffers[l] if self.offload == "cpu" else self.buffers[slot][:self.layouts[l].nbytes]


class LayerStreamer:
    """Yields (l, run_pt, run_ft) for every layer with both blocks' weights on ``device``; see the module doc."""

    #: False only in tests: skip the copy stream's waits for compute (the negative control of the GPU tests)
    _order_copies = True

    def __init__(self, *, skeleton, family, pt_source: TensorSource, ft_source: TensorSource | None,
                 adapter: LoraAdapter | None, device, dtype: torch.dtype, offload: str, prefetch: bool = True,
                 ft_sides=None):
        """``prefetch`` (copy layer l+1 while layer l computes) is an attribute that may be changed between
        passes: False copies each layer on the compute stream when it is needed (the serial baseline).

        ``ft_sides`` (shared LoRA pairs, models/shared.py): one list of fine-tuned blocks per adapter, PEFT's modules
        around the skeleton's own; they run on the pre-trained layer's weights (under their ``base_layer`` names) and
        their adapter tensors, which stay on the device: one model's weights move per layer for every adapter,
        nothing is merged."""
        if offload not in ("cpu", "disk"):
            raise ValueError(offload)
        self.device, self.dtype, self.offload, self.prefetch = torch.device(device), dtype, offload, prefetch
        self.blocks = family.layers(skeleton)
        self.n_layers = len(self.blocks)
        params = [list(b.named_parameters()) for b in self.blocks]
        names = [[(rel, f"{family.layers_path}.{l}.{rel}") for rel, _ in layer] for l, layer in enumerate(params)]
        self.layouts = [LayerLayout([(rel, dtype if p.is_floating_point() else p.dtype, tuple(p.shape))
                                     for rel, p in layer]) for layer in params]
        self.slot_bytes = max(lay.nbytes for lay in self.layouts)  # a slot holds the largest layer
        cuda = self.device.type == "cuda"
        prefix = getattr(skeleton, "base_model_prefix", None)
        conversions = LoadConversions.of(skeleton)
        self.hosts = [_ModelHost(pt_source, names, self.layouts, offload, cuda, prefix, conversions)]
        if ft_source is not None:
            self.hosts.append(_ModelHost(ft_source, names, self.layouts, offload, cuda, prefix, conversions))
        self.lora = self._lora_plan(adapter, names) if adapter is not None else None
        self.ft_sides = ft_sides
        self.ft_names = None if ft_sides is None else [[_base_names(b, lay) for b, lay in zip(blocks, self.layouts)]
                                                       for blocks in ft_sides]
        self.slots = ([[torch.empty(self.slot_bytes, dtype=torch.uint8, device=self.device) for _ in range(2)]
                       for _ in self.hosts] if cuda else None)
        if cuda:
            self.copy_stream = torch.cuda.Stream(self.device)
            self.ready = [torch.cuda.Event() for _ in range(2)]
            self.free = [torch.cuda.Event() for _ in range(2)]
            self.staged = [torch.cuda.Event() for _ in range(2)]
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tuco-stream")
        self._prefetching = prefetch
        self.profile: StreamProfile | None = None

    # ---------------------------------------------------------------------------------------- sizes

    @property
    def layer_bytes(self) -> int:
        """Bytes of the largest layer of both models as stored on the host (what one slot pair holds)."""
        return self.slot_bytes * len(self.hosts)

    @property
    def host_bytes(self) -> int:
        """Host memory held for the weights: every layer of each streamed model ("cpu") or two staging buffers."""
        return sum(h.arena.nbytes for h in self.hosts)

    @property
    def pinned_bytes(self) -> int:
        """The part of ``host_bytes`` that is page-locked (all of it on a CUDA device, none on CPU)."""
        return sum(h.arena.pinned_bytes for h in self.hosts)

    @property
    def device_bytes(self) -> int:
        """Device memory held by the double buffers (slots and LoRA merge slots)."""
        if self.device.type != "cuda":
            return 0
        merge = 2 * self.lora["merge_bytes"] if self.lora else 0
        return 2 * self.layer_bytes + merge

    # ----------------------------------------------------------------------------------------- LoRA

    def _lora_plan(self, adapter: LoraAdapter, names):
        """Per layer: the LoRA deltas (adapter tensors moved to the device once) and block replacements."""
        deltas, replaced = [], []
        for l, block in enumerate(self.blocks):
            layer_deltas, layer_repl = {}, {}
            for rel, full in names[l]:
                delta = adapter.delta_for(full, block.get_submodule(rel.rpartition(".")[0]))
                if delta is not None:
                    delta.lora_a, delta.lora_b = delta.lora_a.to(self.device), delta.lora_b.to(self.device)
                    layer_deltas[rel] = delta
                elif full in adapter.replacements:
                    layer_repl[rel] = adapter.replacements[full].to(device=self.device, dtype=self.dtype)
            deltas.append(layer_deltas)
            replaced.append(layer_repl)
        block_names = {full for layer in names for _, full in layer}
        outside = sorted(m + ".weight" for m in adapter.modules if m + ".weight" not in block_names)
        if outside:
            raise TucoError(f"{adapter.directory}: LoRA targets {outside[0]!r}, which is not a decoder-block weight; "
                            f"streaming merges block weights only (load this pair with offload='none')")
        merged = [LayerLayout([(rel, self.dtype, shape) for rel, _, shape, _, _ in layout.entries if rel in adapted])
                  for layout, adapted in zip(self.layouts, deltas)]
        return {"deltas": deltas, "replaced": replaced, "layouts": merged, "merge_slots": None,
                "merge_bytes": max(lay.nbytes for lay in merged)}

    def _lora_weights(self, l: int, pt: dict, slot: int) -> dict:
        """Fine-tuned weights of layer l from the pre-trained ones: merged deltas, replacements, the rest shared."""
        ft = dict(pt)
        ft.update(self.lora["replaced"][l])
        if self.lora["deltas"][l]:
            if self.lora["merge_slots"] is None:
                self.lora["merge_slots"] = [torch.empty(self.lora["merge_bytes"], dtype=torch.uint8,
                                                        device=self.device) for _ in range(2)]
            views = self.lora["layouts"][l].views(self.lora["merge_slots"][slot])
            for rel, delta in self.lora["deltas"][l].items():
                views[rel].copy_(delta.merge(pt[rel]))
                ft[rel] = views[rel]
        return ft

    # ------------------------------------------------------------------------------------- the pass

    def _prepare(self, l: int) -> tuple[dict, dict | None]:
        """Make layer l's weights ready in slot l % 2. Runs on the reader thread (or inline without prefetch)."""
        s = l % 2
        prof = self.profile
        cuda = self.device.type == "cuda"
        if self.offload == "disk":
            if cuda:
                self.staged[s].synchronize()  # the copy out of this staging buffer (layer l − 2) is done
            t0 = time.perf_counter()
            n = sum(h.fill(l, h.buffers[s]) for h in self.hosts)
            if prof is not None:
                prof.seconds_read += time.perf_counter() - t0
                prof.bytes_read += n
        if not cuda:
            weights = [self.layouts[l].views(h.host_buffer(l, s)) for h in self.hosts]
        else:
            # without prefetch the copy runs on the compute stream itself: nothing overlaps (the baseline)
            stream = self.copy_stream if self._prefetching else torch.cuda.current_stream(self.device)
            with torch.cuda.device(self.device), torch.cuda.stream(stream):
                if self._order_copies:
                    stream.wait_event(self.free[s])  # the compute that last read slot s is done
                start = end = None
                if prof is not None:
                    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                    start.record(stream)
                n = self.layouts[l].nbytes
                for h, slots in zip(self.hosts, self.slots):
                    slots[s][:n].copy_(h.host_buffer(l, s), non_blocking=True)
                if prof is not None:
                    end.record(stream)
                    prof._pending.append(("h2d", start, end))
                    prof.bytes_h2d += n * len(self.hosts)
                self.staged[s].record(stream)
                weights = [self.layouts[l].views(slots[s]) for slots in self.slots]
                if self.lora is not None:
                    weights.append(self._lora_weights(l, weights[0], s))
                self.ready[s].record(stream)
            return weights[0], (weights[1] if len(weights) > 1 else None)
        if self.lora is not None:
            weights.append(self._lora_weights(l, weights[0], s))
        return weights[0], (weights[1] if len(weights) > 1 else None)

    def layers(self, profile: StreamProfile | None = None, side: int | None = 0):
        """Generator over the layers; the caller's work between two ``next`` calls is layer l's compute.

        Yields (l, run_pt, run_ft) with ``ft_sides`` side ``side``'s fine-tuned block; ``side=None``: (l, run_pt,
        [run_ft of every side])."""
        self.profile = profile
        cuda = self.device.type == "cuda"
        prefetch = self._prefetching = self.prefetch
        compute_stream = torch.cuda.current_stream(self.device) if cuda else None
        t_wall = time.perf_counter()
        if cuda:
            if self._order_copies:
                # whatever is queued on the compute stream (an earlier pass, possibly abandoned half-way, may
                # still read a slot) comes before this pass's first copy
                self.copy_stream.wait_stream(compute_stream)
            if profile is not None:
                wall_start = torch.cuda.Event(enable_timing=True)
                wall_start.record(compute_stream)
        submit = self.pool.submit if prefetch else _run_now
        future = submit(self._prepare, 0)
        try:
            for l in range(self.n_layers):
                pt_w, ft_w = future.result()
                future = submit(self._prepare, l + 1) if prefetch and l + 1 < self.n_layers else None
                if cuda:
                    compute_stream.wait_event(self.ready[l % 2])
                    if profile is not None:
                        c0, c1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                        c0.record(compute_stream)
                t0 = time.perf_counter()
                block = self.blocks[l]
                try:
                    if self.ft_sides is not None:   # PEFT's blocks around the same modules, on the same weights
                        run_fts = [functools.partial(_run_block, blocks[l], {n: pt_w[rel] for n, rel in names[l]})
                                   for blocks, names in zip(self.ft_sides, self.ft_names)]
                    else:
                        run_fts = [functools.partial(_run_block, block, ft_w)]
                    yield (l, functools.partial(_run_block, block, pt_w), run_fts if side is None else run_fts[side])
                finally:
                    if cuda:  # also when the pass is abandoned here: the slot is free once this compute is done
                        self.free[l % 2].record(compute_stream)
                if cuda:
                    if profile is not None:
                        c1.record(compute_stream)
                        profile._pending.append(("compute", c0, c1))
                elif profile is not None:
                    profile.seconds_compute += time.perf_counter() - t0
                if profile is not None:
                    profile.layers += 1
                if not prefetch and l + 1 < self.n_layers:
                    future = submit(self._prepare, l + 1)
        finally:
            if future is not None:
                wait([future])  # an abandoned pass must not leave the reader writing into a buffer
        if profile is not None:
            if cuda:
                end = torch.cuda.Event(enable_timing=True)
                end.record(compute_stream)
                end.synchronize()
                for kind, a, b in profile._pending:
                    ms = a.elapsed_time(b) / 1e3
                    if kind == "h2d":
                        profile.seconds_h2d += ms
                    else:
                        profile.seconds_compute += ms
                profile._pending.clear()
                profile.seconds_wall += wall_start.elapsed_time(end) / 1e3
            else:
                profile.seconds_wall += time.perf_counter() - t_wall
        self.profile = None

    def close(self):
        """Stop the reader thread, wait for copies in flight, unlock the host memory and close the files."""
        self.pool.shutdown(wait=True)
        if self.device.type == "cuda":
            self.copy_stream.synchronize()
            torch.cuda.current_stream(self.device).synchronize()
        for h in self.hosts:
            h.arena.close()
            h.source.close()


def _run_now(fn, *args):
    """``submit`` without a thread: a finished future (prefetch=False, the prompt-by-prompt baseline)."""
    from concurrent.futures import Future

    future = Future()
    future.set_result(fn(*args))
    return future
