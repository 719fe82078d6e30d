"""``load_pair``: a (pre-trained, fine-tuned) pair from paths or models, checked, resident or streamed.

Sources, for either side: a local directory (safetensors, single or sharded), an already-built
``PreTrainedModel``, or a GGUF file (a path ending in ``.gguf``, or ``gguf_file=``). The fine-tuned side may
also be a PEFT/LoRA adapter directory: fine-tuned = pre-trained + adapter. With no model at all, the default
pair (:mod:`tuco_kernels.models.default_pair`). Where the blocks' weights live is ``offload``: "none" (a
:class:`~tuco_kernels.core.pair.ResidentPair`), "cpu" or "disk" (a
:class:`~tuco_kernels.offload.streamed_pair.StreamedPair`), or what ``max_gpu_memory`` calls for.
"""

from __future__ import annotations

import copy
import math
import os
import time
from contextlib import contextmanager
from pathlib import Path

import torch

from ..core.compat import check_compatible, check_configs, prove_pair
from ..core.pair import ModelPair, ResidentPair
from ..core.reuse import ProjectionReuse
from ..errors import ModelError, OptionError
from ..core.budget import host_memory_available, parse_size
from ..offload.checkpoint import Checkpoint, ModuleTensors
from ..offload.lora import LoraAdapter
from ..offload.streamed_pair import streamed_pair
from . import default_pair, hub
from .hf import apply_adapter, load_model, log, prepare_model, tokenizers_for
from .shared import shared_finetuned, shared_refusal, streamed_finetuned
from .sources import (is_adapter_dir, parse_device, parse_dtype, read_adapter_config, read_config, resolve_source,
                      weights_kind)

OFFLOAD_MODES = ("none", "cpu", "disk")
LORA_MODES = ("shared", "merged")


def load_pair(pretrained=None, finetuned=None, *, tokenizer=None, dtype=None, device=None, gguf_file=None,
              allow_pickle: bool = False, attn_implementation: str | None = None, offload: str | None = None,
              max_gpu_memory=None, prefetch: bool = True, lora: str = "shared") -> ModelPair:
    """Load and check a pre-trained / fine-tuned pair.

    With no ``pretrained`` and ``finetuned``, the default pair: google/gemma-3-270m and the project's chat LoRA
    of it (:mod:`tuco_kernels.models.default_pair`; fetched and converted on first use, fp32 unless ``dtype`` is given).

    Args:
        pretrained, finetuned: local directories, ``.gguf`` paths, hub ids (``org/name`` or ``org/name@revision``,
            from the local HF cache when ``HF_HUB_OFFLINE=1``; see :mod:`tuco_kernels.models.hub`) or
            ``PreTrainedModel`` objects; the fine-tuned side may be a PEFT adapter (directory or hub id), see
            ``lora``. A list of fine-tuned models gives a :class:`~tuco_kernels.core.pair_set.PairSet`: each
            scored against the one base in the same sweep per layer (LoRA adapters all shared on one base copy),
            one result row per prompt and fine-tune (``finetuned`` column; models/load_set.py).
        tokenizer: a tokenizer or a directory; default: the fine-tuned side's, else the pre-trained side's.
        dtype: "float32", "bfloat16", "float16" or a torch dtype; default: the checkpoints' own (the fine-tuned
            one's if they differ).
        device: where to put both models; default: where they are (CPU for paths).
        gguf_file: a GGUF file name inside the directories, one name for both or a (pre-trained, fine-tuned) pair.
        allow_pickle: permit ``*.bin`` weights (pickle can execute code; refused by default).
        offload: where the decoder-block weights live. "none": both models on ``device``. "cpu": both models in
            (page-locked) host memory, each layer streamed to the device when it runs. "disk": nothing but the
            fine-tuned embedding, final norm and head is loaded; each layer is read from the safetensors files
            when it runs. Default: "none", or the mode that ``max_gpu_memory`` calls for.
        max_gpu_memory: a device-memory budget ("8GiB", "24GB" or bytes) that chooses ``offload`` when it is
            not given: "none" when both models fit with room to compute, else "cpu" when host memory holds
            both, else "disk". Pass the same budget to :func:`score` to size its batches and sweeps.
        prefetch: with offload, copy layer l+1 while layer l computes (False: the serial baseline).
        lora: with a PEFT LoRA adapter as the fine-tuned side. "shared" (default): one copy of the base; the
            fine-tuned model is PEFT's own unmerged model on the pre-trained model's weights (docs/math.md §6).
            "merged": the adapter merged into a second copy (PEFT's ``merge_and_unload``); streamed, merged per
            layer on the device. An adapter that cannot be shared exactly is merged; ``pair.lora`` says which mode
            ran and why.
    """
    if lora not in LORA_MODES:
        raise OptionError(f"unknown lora mode {lora!r}; use one of {', '.join(LORA_MODES)}")
    if isinstance(finetuned, (list, tuple)):   # several fine-tunes against one base: a PairSet
        from .load_set import load_pair_set   # (load_set builds on this module's loaders)

        return load_pair_set(pretrained, list(finetuned), tokenizer=tokenizer, dtype=dtype, device=device,
                             gguf_file=gguf_file, allow_pickle=allow_pickle, attn_implementation=attn_implementation,
                             offload=offload, max_gpu_memory=max_gpu_memory, prefetch=prefetch, lora=lora)
    if pretrained is None and finetuned is None:   # the default pair, fp32 unless asked otherwise
        with quiet_hf_progress():   # the first use converts the GGUF; the stage line says so, not HF's bar
            pretrained, finetuned = default_pair.paths()
        dtype = dtype or "float32"
        tokenizer = tokenizer if tokenizer is not None else default_pair.chat_tokenizer(pretrained)
    if pretrained is None or finetuned is None:
        raise OptionError("give both the pre-trained and the fine-tuned model, or neither (the default pair)")
    for side, source in (("pretrained", pretrained), ("finetuned", finetuned)):
        if not isinstance(source, (str, os.PathLike, torch.nn.Module)):
            raise ModelError(f"{side}: expected a model directory, a .gguf file, a hub id or a PreTrainedModel, "
                             f"got {type(source).__name__} {source!r}")
    pretrained, finetuned = hub.local_source(pretrained), hub.local_source(finetuned)   # hub ids -> snapshots
    tokenizer = hub.local_source(tokenizer)
    lora_mode = None
    if is_adapter_dir(finetuned):
        cfg = read_adapter_config(finetuned)   # a broken adapter_config.json is named before any weights load
        lora_mode = lora_choice(lora, cfg, finetuned)
    dtype = parse_dtype(dtype)
    device = parse_device(device)
    g_pt, g_ft = gguf_file if isinstance(gguf_file, (tuple, list)) else (gguf_file, gguf_file)
    if offload is None:
        offload = choose_offload(pretrained, finetuned, max_gpu_memory, device, dtype, g_pt, g_ft,
                                 shared=lora_mode is not None and lora_mode["mode"] == "shared")
    if offload not in OFFLOAD_MODES:
        raise OptionError(f"unknown offload mode {offload!r}; use one of {', '.join(OFFLOAD_MODES)}")
    if offload == "none":
        pair = load_resident(pretrained, finetuned, tokenizer=tokenizer, dtype=dtype, device=device, g_pt=g_pt,
                             g_ft=g_ft, allow_pickle=allow_pickle, attn_implementation=attn_implementation,
                             shared=lora_mode is not None and lora_mode["mode"] == "shared")
    else:
        opts = dict(tokenizer=tokenizer, dtype=dtype, device=device, g_pt=g_pt, g_ft=g_ft, allow_pickle=allow_pickle,
                    attn_implementation=attn_implementation, offload=offload, prefetch=prefetch)
        pair = None
        if lora_mode is not None and lora_mode["mode"] == "shared":
            pair = load_streamed(pretrained, finetuned, shared=True, **opts)
            if isinstance(pair, str):   # what cannot be placed on an empty frame: merged per layer instead
                lora_mode, pair = _merged(f"offload={offload!r}: {pair}"), None
        if pair is None:
            pair = load_streamed(pretrained, finetuned, **opts)
    pair.sources = {"pretrained": pretrained, "finetuned": finetuned, "gguf": (g_pt, g_ft)}
    pair.lora = lora_mode
    return pair


def lora_choice(lora: str, cfg: dict, adapter) -> dict:
    """``{"mode": "shared"|"merged", "reason": why it was merged when "shared" was asked, else None}``."""
    if lora == "merged":
        return {"mode": "merged", "reason": None}
    reason = shared_refusal(cfg, adapter)
    return {"mode": "shared", "reason": None} if reason is None else _merged(reason)


def _merged(reason: str) -> dict:
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
                  attn_implementation, shared: bool = False) -> ResidentPair:
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
        family = prove_pair(pt, ft, family)
    pair = ResidentPair(pt, ft, ft_tok, family)
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
