"""The steps of loading one pair: the LoRA mode, resident models, streamed tensor sources, the offload a budget
calls for, and the stage lines that say what loading is doing. :func:`tuco_kernels.models.load.load_pair` puts
them together for one fine-tune, :mod:`tuco_kernels.models.load_set` for several against one base.
"""

from __future__ import annotations

import copy
import math
import os
import time
from contextlib import contextmanager
from pathlib import Path

import torch

from ..core.chain import prove_chain
from ..core.compat import check_compatible, check_configs, prove_pair
from ..core.pair import ModelPair, ResidentPair
from ..core.reuse import ProjectionReuse
from ..errors import ModelError
from ..core.budget import host_memory_available, parse_size
from ..offload.checkpoint import Checkpoint, ModuleTensors
from ..offload.lora import LoraAdapter
from ..offload.streamed_pair import streamed_pair
from .hf import apply_adapter, load_model, log, prepare_model, tokenizers_for
from .shared import shared_finetuned, shared_refusal, streamed_finetuned
from .sources import is_adapter_dir, read_config, resolve_source, weights_kind

OFFLOAD_MODES = ("none", "cpu", "disk")
LORA_MODES = ("shared", "merged")


def lora_choice(lora: str, cfg: dict, adapter) -> dict:
    """``{"mode": "shared"|"merged", "reason": why it was merged when "shared" was asked, else None}``."""
    if lora == "merged":
        return {"mode": "merged", "reason": None}
    reason = shared_refusal(cfg, adapter)
    return {"mode": "shared", "reason": None} if reason is None else merged_mode(reason)


def merged_mode(reason: str) -> dict:
    log.warning("the adapter is merged into a copy of the base, not shared: %s", reason)
    return {"mode": "merged", "reason": reason}


@contextmanager
def stage(what: str, silent: bool = False):
    """Log the start and the end (with its time) of a loading step (``tuco`` prints these as progress)."""
    if silent:
        yield
        return
    log.info("%s ...", what)
    t0 = time.perf_counter()
    yield
    log.info("%s: done in %.1f s", what.split(" from ")[0].split(" into ")[0], time.perf_counter() - t0)


@contextmanager
def quiet_hf_progress():
    """HF's per-file loading bars off while a pair loads (the stage lines say what happens), as they were after."""
    from transformers.utils import logging as hf_logging

    enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            hf_logging.enable_progress_bar()


def load_resident(pretrained, finetuned, *, tokenizer, dtype, device, g_pt, g_ft, allow_pickle,
                  attn_implementation, shared: bool = False, pt_pads_invariant: bool | None = None) -> ResidentPair:
    load = dict(dtype=dtype, allow_pickle=allow_pickle, attn_implementation=attn_implementation)
    if not isinstance(pretrained, torch.nn.Module) and not isinstance(finetuned, torch.nn.Module) \
            and not is_adapter_dir(finetuned):
        check_configs(read_config(pretrained, g_pt), read_config(finetuned, g_ft))  # before any weights load

    with quiet_hf_progress():
        with stage(f"loading the pre-trained model from {pretrained}", isinstance(pretrained, torch.nn.Module)):
            pt = pretrained if isinstance(pretrained, torch.nn.Module) else load_model(pretrained, gguf_file=g_pt,
                                                                                     **load)
        if shared:   # cast and placed first: PEFT keeps its adapter weights as it loads them onto this base
            pt = prepare_model(pt, dtype or next(pt.parameters()).dtype, device)
            with stage(f"adding the adapter {finetuned} to the pre-trained model's weights (shared, unmerged)"):
                ft = shared_finetuned(pt, Path(os.fspath(finetuned)), allow_pickle)
        elif is_adapter_dir(finetuned):
            with stage(f"merging the adapter {finetuned} into a copy of the pre-trained model"):
                adapter_dir = Path(os.fspath(finetuned))
                base = (copy.deepcopy(pt) if isinstance(pretrained, torch.nn.Module)
                        else load_model(pretrained, gguf_file=g_pt, **load))
                ft = apply_adapter(base, adapter_dir, allow_pickle)
        elif isinstance(finetuned, torch.nn.Module):
            ft = finetuned
        else:
            with stage(f"loading the fine-tuned model from {finetuned}"):
                ft = load_model(finetuned, gguf_file=g_ft, **load)

    ft_tok, pt_tok = tokenizers_for(tokenizer, pretrained, finetuned, g_pt, g_ft)
    family = check_compatible(pt, ft, pt_tok, ft_tok)

    if not shared:
        target = dtype or next(ft.parameters()).dtype
        if next(pt.parameters()).dtype != target:
            log.info("casting the pre-trained model to %s to match the fine-tuned one", target)
        pt, ft = prepare_model(pt, target, device), prepare_model(ft, target, device)
    with stage("proving the decoder chain on a probe (docs/math.md §1)"):
        if pt_pads_invariant is None:   # the pre-trained model's own probe (a pair set's base: once for all sides)
            pt_pads_invariant = prove_chain(pt, family).family.pads_invariant
        family = prove_pair(pt, ft, family, pt_pads_invariant=pt_pads_invariant)
    pair = ResidentPair(pt, ft, ft_tok, family)
    pair.pt_pads_invariant = pt_pads_invariant
    if shared:   # the projections both blocks compute alike, once (core/reuse.py)
        pair.reuse = ProjectionReuse()
    return pair


def tensor_source(model, gguf, *, side: str, offload: str, allow_pickle: bool, dtype, attn_implementation):
    """(tensor source, config) of one side."""
    if isinstance(model, torch.nn.Module):
        if offload == "disk":
            raise ModelError(f"offload='disk' streams from safetensors files, but the {side} model was passed as an "
                            f"object already in memory; use offload='cpu' or pass its directory")
        return ModuleTensors(model, f"the {side} model object"), model.config
    directory, g = resolve_source(model, gguf)
    config = read_config(model, gguf)
    if not g and weights_kind(directory, allow_pickle) == "safetensors":
        return Checkpoint(directory), config
    if offload == "disk":
        what = f"GGUF file {directory / g}" if g else f"pickle weights in {directory}"
        raise ModelError(f"offload='disk' streams from safetensors files; the {side} model has {what}. "
                        f"Use offload='cpu' (it is dequantized/loaded into host memory once) or convert it")
    loaded = load_model(model, dtype=dtype, gguf_file=gguf, allow_pickle=allow_pickle,
                        attn_implementation=attn_implementation)
    return ModuleTensors(loaded, str(directory / (g or ""))), config


def load_streamed(pretrained, finetuned, *, tokenizer, dtype, device, g_pt, g_ft, allow_pickle,
                  attn_implementation, offload, prefetch, shared: bool = False) -> ModelPair | str:
    """A :class:`~tuco_kernels.offload.streamed_pair.StreamedPair` from paths (or models, for offload="cpu").
    ``shared``: the adapter unmerged around the streamed base (or, where it cannot be, the reason, a string)."""
    device = device or "cpu"
    opts = dict(offload=offload, allow_pickle=allow_pickle, dtype=dtype, attn_implementation=attn_implementation)
    if shared:
        pt_source, pc = tensor_source(pretrained, g_pt, side="pre-trained", **opts)
        ft_tok, pt_tok = tokenizers_for(tokenizer, pretrained, finetuned, g_pt, g_ft)
        adapter_dir = Path(os.fspath(finetuned))
        where = "page-locked host memory" if offload == "cpu" else "the safetensors files (read per layer)"
        with quiet_hf_progress(), stage(f"preparing the streamed shared pair: block weights in {where}, the adapter "
                                        f"unmerged on the device"):
            return streamed_pair(pt_source, pc, None, pc, tokenizers=(ft_tok, pt_tok), dtype=dtype, device=device,
                                 offload=offload, prefetch=prefetch, attn_implementation=attn_implementation,
                                 shared=lambda frame: streamed_finetuned(frame, adapter_dir, allow_pickle, device))
    adapter = LoraAdapter(Path(os.fspath(finetuned))) if is_adapter_dir(finetuned) else None
    pt_source, pc = tensor_source(pretrained, g_pt, side="pre-trained", **opts)
    if adapter is not None:
        adapter.check_fits({n: pt_source.spec(n)[1] for n in pt_source.names()}, str(pretrained))
    if adapter is not None:
        ft_source, fc = None, pc
    else:
        ft_source, fc = tensor_source(finetuned, g_ft, side="fine-tuned", **opts)
    ft_tok, pt_tok = tokenizers_for(tokenizer, pretrained, finetuned, g_pt, g_ft)
    where = "page-locked host memory" if offload == "cpu" else "the safetensors files (read per layer)"
    with quiet_hf_progress(), stage(f"preparing the streamed pair: block weights in {where}"):
        return streamed_pair(pt_source, pc, ft_source, fc, adapter=adapter, tokenizers=(ft_tok, pt_tok), dtype=dtype,
                             device=device, offload=offload, prefetch=prefetch,
                             attn_implementation=attn_implementation)


def model_bytes(model, gguf, dtype) -> int:
    """Parameter bytes of one side at ``dtype`` (default: as stored), without reading any weights."""
    if isinstance(model, torch.nn.Module):
        return sum(p.numel() * (dtype or p.dtype).itemsize for p in model.parameters())
    if is_adapter_dir(model):
        return 0
    directory, g = resolve_source(model, gguf)
    if g:
        return (directory / g).stat().st_size * 4  # an estimate: GGUF is dequantized to fp32 on load
    try:
        ckpt = Checkpoint(directory)
    except ModelError:
        return sum(p.stat().st_size for p in directory.iterdir() if p.is_file())
    return sum(math.prod(e.shape) * (dtype or e.dtype).itemsize for e in ckpt.entries.values())


def choose_offload(pretrained, finetuned, max_gpu_memory, device, dtype, g_pt=None, g_ft=None, *,
                   shared: bool = False) -> str:
    """'none' if both models fit the budget with a quarter of it left to compute in, else 'cpu' if host
    memory holds what offload="cpu" pins (with 10% spare), else 'disk'. Without a budget: 'none'.

    offload="cpu" page-locks exactly the bytes of each streamed model's blocks (no power-of-two rounding,
    see stream.HostArena); a LoRA fine-tuned side is merged on the device from the pre-trained weights, so it
    adds nothing there, while resident it is a full second model (merged) or nothing (shared: one base copy)."""
    budget = parse_size(max_gpu_memory)
    if budget is None:
        return "none"
    pt = model_bytes(pretrained, g_pt, dtype)
    ft = 0 if is_adapter_dir(finetuned) else model_bytes(finetuned, g_ft, dtype)
    if pt + (ft or (0 if shared else pt)) <= 0.75 * budget:
        return "none"
    return "cpu" if pt + ft <= 0.9 * host_memory_available() else "disk"
