"""A pair whose decoder blocks are streamed, never held whole (``load_pair(..., offload="cpu"|"disk")``).

Both models become frames built from their configs (skeleton.py). The fine-tuned frame's embedding, final norm
and head are read onto the device; the blocks' weights stay where ``offload`` says (page-locked host memory, or
the safetensors files) and a :class:`~tuco_kernels.offload.streamer.LayerStreamer` brings one layer of both
models at a time. :func:`streamed_pair` builds one from any two tensor sources; reading them from paths is
:func:`tuco_kernels.models.load.load_pair`'s job.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
from torch import nn

from ..core.chain import prove_chain
from ..core.compat import check_compatible, check_configs
from ..core.families import Family, find_family
from ..core.pair import ModelPair, with_reuse
from ..core.pair_set import PairSet
from ..core.reuse import ProjectionReuse
from ..errors import TucoError
from .checkpoint import TensorSource
from .skeleton import empty_model, materialize_outer, outer_parameter_groups
from .streamer import LayerStreamer


class StreamedPair(ModelPair):
    """Both models as frames (empty blocks); ``layers`` streams each layer's weights of both (see the module doc).

    The pre-trained frame's embedding, final norm and head are read only when needed (:meth:`pretrained_frame`,
    for OutputCo). ``streamer`` is the :class:`~tuco_kernels.offload.streamer.LayerStreamer` (its ``prefetch``,
    ``host_bytes`` and ``pinned_bytes`` are public).
    """

    def __init__(self, pretrained: nn.Module, finetuned: nn.Module, tokenizer, family: Family, *, offload: str,
                 streamer: LayerStreamer, materialize_pretrained: Callable[[], object], side: int = 0):
        super().__init__(pretrained, finetuned, tokenizer, family)
        self.offload, self.streamer, self.side = offload, streamer, side
        self._materialize_pretrained: Callable[[], object] | None = materialize_pretrained
        self.closed = False

    def _check_open(self) -> None:
        if self.closed:
            raise TucoError("this streamed pair was closed (pair.close()): its reader thread, page-locked memory and "
                            "files are released; load it again with tk.load_pair to score with it")

    #: a shared pair's :class:`~tuco_kernels.core.reuse.ProjectionReuse` (PEFT's blocks call the skeleton's modules)
    reuse: ProjectionReuse | None = None

    def layers(self, profile=None):
        self._check_open()
        if self.reuse is None:
            return self.streamer.layers(profile, side=self.side)
        return self._reusing(profile)

    def _reusing(self, profile):
        blocks = self.family.layers(self.pretrained)
        layers = ((l, blocks[l], run_pt, [run_ft])
                  for l, run_pt, run_ft in self.streamer.layers(profile, side=self.side))
        for l, [(run_pt, run_ft)] in with_reuse(self.reuse, layers):
            yield l, run_pt, run_ft

    def pretrained_frame(self) -> nn.Module:
        if self._materialize_pretrained is not None:
            self._materialize_pretrained()
            self._materialize_pretrained = None
        return self.pretrained

    def device_bytes(self, *, own_pt: bool = False) -> int:
        """The streamer's slots (two layers of both models, LoRA merge slots) and the frames' outer parts."""
        self._check_open()
        outer = sum(p.numel() * p.element_size() for p in self.finetuned.parameters() if not p.is_meta)
        return self.streamer.device_bytes + outer * (2 if own_pt else 1)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.streamer.close()


def _stored_dtype(config, source) -> torch.dtype:
    """The dtype HF's ``dtype="auto"`` would pick: the config's, else the first floating tensor's."""
    value = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None)
    if isinstance(value, str):
        value = getattr(torch, value, None)
    if isinstance(value, torch.dtype) and value.is_floating_point:
        return value
    for name in source.names():
        stored, _ = source.spec(name)
        if stored.is_floating_point:
            return stored
    return torch.float32


def streamed_pair(pt_source: TensorSource, pc, ft_source: TensorSource | None, fc, *, adapter=None,
                  tokenizers=(None, None), dtype=None, device="cpu", offload="cpu", prefetch=True,
                  attn_implementation=None, shared=None) -> StreamedPair | str:
    """A :class:`StreamedPair` from two tensor sources and their configs (``ft_source=None``: the fine-tuned side is
    ``pt_source`` + ``adapter``). ``tk.load_pair(..., offload=...)`` builds its sources from paths; benchmarks and
    tests can pass any :class:`~tuco_kernels.offload.checkpoint.TensorSource`.

    ``shared``: a function that puts PEFT's unmerged adapter on the (materialized) pre-trained frame, returning
    (fine-tuned model, None) or (None, why not) (models/shared.py ``streamed_finetuned``); with it the pair is a
    shared LoRA pair (``pair.lora`` mode "shared"), or, when it says why not, that reason is returned instead of a
    pair (load_pair then merges)."""
    device = torch.device(device)
    check_configs(pc, fc)
    target = dtype or _stored_dtype(fc, ft_source or pt_source)
    ft_frame = empty_model(fc, target, attn_implementation)
    pt_frame = empty_model(pc, target, attn_implementation)
    family = find_family(ft_frame)
    if shared is not None:
        return _shared_streamed_pair(pt_frame, family, pt_source, shared, tokenizers=tokenizers, device=device,
                                     target=target, offload=offload, prefetch=prefetch)

    outer_replacements = {}
    if adapter is not None:
        outer = {n for group in outer_parameter_groups(family, ft_frame) for n in group}
        blocks = {n for n, _ in ft_frame.named_parameters() if n.startswith(family.layers_path + ".")}
        for name, tensor in adapter.replacements.items():
            if name in outer:
                outer_replacements[name] = tensor
            elif name not in blocks:
                raise TucoError(f"{adapter.directory}: the adapter stores {name!r}, which the model does not have")
    materialize_outer(ft_frame, family, ft_source or pt_source, device, target, outer_replacements)

    ft_tok, pt_tok = tokenizers
    check_compatible(pt_frame, ft_frame, pt_tok, ft_tok)
    streamer = LayerStreamer(skeleton=ft_frame, family=family, pt_source=pt_source, ft_source=ft_source,
                             adapter=adapter, device=device, dtype=target, offload=offload, prefetch=prefetch)
    try:   # the chain probe on the fine-tuned frame, its blocks run with their streamed weights (one pass)
        family = prove_chain(ft_frame, family, runners=streamer.layers).family
    except BaseException:
        streamer.close()
        raise

    return StreamedPair(pt_frame, ft_frame, ft_tok, family, offload=offload, streamer=streamer,
                        materialize_pretrained=lambda: materialize_outer(pt_frame, family, pt_source, device, target))


def _shared_streamed_pair(pt_frame, family, pt_source, shared, *, tokenizers, device, target, offload,
                          prefetch) -> StreamedPair | str:
    """The pre-trained frame (embedding, norm, head read once) and PEFT's model around it; blocks streamed once."""
    pairs = _shared_sides(pt_frame, family, pt_source, [shared], tokenizers=tokenizers, device=device, target=target,
                          offload=offload, prefetch=prefetch)
    return pairs[1] if isinstance(pairs, tuple) else pairs[0]


def _shared_sides(pt_frame, family, pt_source, builders, *, tokenizers, device, target, offload,
                  prefetch) -> list[StreamedPair] | tuple[int, str]:
    """One StreamedPair per adapter builder, all on ``pt_frame`` and one streamer (its ``ft_sides``); or (k, why
    builder k's adapter cannot be placed on the frame)."""
    materialize_outer(pt_frame, family, pt_source, device, target)
    frames = []
    for k, build in enumerate(builders):
        ft_frame, why_not = build(pt_frame)
        if ft_frame is None:
            return k, why_not
        frames.append(ft_frame)
    ft_tok, pt_tok = tokenizers
    for ft_frame in frames:
        check_compatible(pt_frame, ft_frame, pt_tok, ft_tok)
    streamer = LayerStreamer(skeleton=pt_frame, family=family, pt_source=pt_source, ft_source=None, adapter=None,
                             device=device, dtype=target, offload=offload, prefetch=prefetch,
                             ft_sides=[family.layers(f) for f in frames])
    pairs = []
    try:
        for k, ft_frame in enumerate(frames):
            side_family = prove_chain(ft_frame, family, runners=functools.partial(streamer.layers, side=k)).family
            pair = StreamedPair(pt_frame, ft_frame, ft_tok, side_family, offload=offload, streamer=streamer,
                                materialize_pretrained=lambda: None, side=k)
            pair.reuse = ProjectionReuse()
            pairs.append(pair)
    except BaseException:
        streamer.close()
        raise
    return pairs


def streamed_pair_set(pt_source: TensorSource, pc, builders: list, names: list[str], *, tokenizers=(None, None),
                      dtype=None, device="cpu", offload="cpu", prefetch=True,
                      attn_implementation=None) -> PairSet | tuple[int, str]:
    """Several LoRA adapters shared on one streamed base (``load_pair(base, [a, b], offload=...)``): a
    :class:`~tuco_kernels.core.pair_set.PairSet` whose one streamer brings each base layer once per layer visit for
    every adapter's PEFT block (``builders``: like :func:`streamed_pair`'s ``shared``, one per adapter); or (k, why
    adapter k cannot be shared streamed)."""
    device = torch.device(device)
    target = dtype or _stored_dtype(pc, pt_source)
    pt_frame = empty_model(pc, target, attn_implementation)
    family = find_family(pt_frame)
    pairs = _shared_sides(pt_frame, family, pt_source, builders, tokenizers=tokenizers, device=device, target=target,
                          offload=offload, prefetch=prefetch)
    if isinstance(pairs, tuple):
        return pairs
    streamer, blocks = pairs[0].streamer, family.layers(pt_frame)

    def layer_source(profile):
        for l, run_pt, run_fts in streamer.layers(profile, side=None):
            yield l, blocks[l], run_pt, run_fts

    return PairSet(pairs, names, layer_source=layer_source, reuse=ProjectionReuse())
