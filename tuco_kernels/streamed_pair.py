"""``load_pair(..., offload="cpu"|"disk")``: a pair whose decoder blocks are streamed, never held whole.

Both models become frames built from their configs (skeleton.py). The fine-tuned frame's embedding,
final norm and head are read onto the device; the blocks' weights stay where ``offload`` says (pinned
host memory, or the safetensors files) and a :class:`~tuco_kernels.stream.LayerStreamer` brings one
layer of both models at a time. Sources: safetensors directories (single or sharded) for any mode;
for offload="cpu" also GGUF, pickle (when allowed) and in-memory models, read through HF first.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from .checkpoint import Checkpoint, LoraAdapter, ModuleTensors, TensorSource
from .errors import TucoError
from .pair import (ModelPair, _is_adapter_dir, _load_model, _read_config, _resolve_source, _tokenizers,
                   _weights_kind, check_compatible, check_configs)
from .skeleton import empty_model, materialize_outer, outer_parameter_groups
from .stream import LayerStreamer


def _source(model, gguf, *, side: str, offload: str, allow_pickle: bool, dtype, attn_implementation):
    """(tensor source, config) of one side."""
    if isinstance(model, torch.nn.Module):
        if offload == "disk":
            raise TucoError(f"offload='disk' streams from safetensors files, but the {side} model was passed as an "
                            f"object already in memory; use offload='cpu' or pass its directory")
        return ModuleTensors(model, f"the {side} model object"), model.config
    directory, g = _resolve_source(model, gguf)
    config = _read_config(model, gguf)
    if not g and _weights_kind(directory, allow_pickle) == "safetensors":
        return Checkpoint(directory), config
    if offload == "disk":
        what = f"GGUF file {directory / g}" if g else f"pickle weights in {directory}"
        raise TucoError(f"offload='disk' streams from safetensors files; the {side} model has {what}. "
                        f"Use offload='cpu' (it is dequantized/loaded into host memory once) or convert it")
    loaded = _load_model(model, dtype=dtype, gguf_file=gguf, allow_pickle=allow_pickle,
                         attn_implementation=attn_implementation)
    return ModuleTensors(loaded, str(directory / (g or ""))), config


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


def load_streamed(pretrained, finetuned, *, tokenizer, dtype, device, g_pt, g_ft, allow_pickle,
                  attn_implementation, offload, prefetch) -> ModelPair:
    device = device or "cpu"
    opts = dict(offload=offload, allow_pickle=allow_pickle, dtype=dtype, attn_implementation=attn_implementation)
    adapter = LoraAdapter(Path(os.fspath(finetuned))) if _is_adapter_dir(finetuned) else None
    pt_source, pc = _source(pretrained, g_pt, side="pre-trained", **opts)
    if adapter is not None:
        ft_source, fc = None, pc
    else:
        ft_source, fc = _source(finetuned, g_ft, side="fine-tuned", **opts)
    ft_tok, pt_tok = _tokenizers(tokenizer, pretrained, finetuned, g_pt, g_ft)
    return streamed_pair(pt_source, pc, ft_source, fc, adapter=adapter, tokenizers=(ft_tok, pt_tok), dtype=dtype,
                         device=device, offload=offload, prefetch=prefetch, attn_implementation=attn_implementation)


def streamed_pair(pt_source: TensorSource, pc, ft_source: TensorSource | None, fc, *, adapter=None,
                  tokenizers=(None, None), dtype=None, device="cpu", offload="cpu", prefetch=True,
                  attn_implementation=None) -> ModelPair:
    """A streamed :class:`ModelPair` from two tensor sources and their configs (``ft_source=None``: the fine-tuned
    side is ``pt_source`` + ``adapter``). :func:`load_pair` builds its sources from paths; benchmarks and
    tests can pass any :class:`~tuco_kernels.checkpoint.TensorSource`."""
    device = torch.device(device)
    family = check_configs(pc, fc)
    target = dtype or _stored_dtype(fc, ft_source or pt_source)
    ft_frame = empty_model(fc, target, attn_implementation)
    pt_frame = empty_model(pc, target, attn_implementation)

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

    def materialize_pretrained():
        materialize_outer(pt_frame, family, pt_source, device, target)

    return ModelPair(pretrained=pt_frame, finetuned=ft_frame, tokenizer=ft_tok, family=family, offload=offload,
                     streamer=streamer, _materialize_pretrained=materialize_pretrained)
