"""``load_pair``: a (pre-trained, fine-tuned) pair from paths or models, checked, resident or streamed.

Sources, for either side: a local directory (safetensors, single or sharded), an already-built
``PreTrainedModel``, or a GGUF file (a path ending in ``.gguf``, or ``gguf_file=``). The fine-tuned side may
also be a PEFT/LoRA adapter directory: fine-tuned = pre-trained + adapter. With no model at all, the default
pair (:mod:`tuco_kernels.models.default_pair`). Where the blocks' weights live is ``offload``: "none" (a
:class:`~tuco_kernels.core.pair.ResidentPair`), "cpu" or "disk" (a
:class:`~tuco_kernels.offload.streamed_pair.StreamedPair`), or what ``max_gpu_memory`` calls for.
"""

from __future__ import annotations

import os

import torch

from ..core.pair import ModelPair
from ..errors import ModelError, OptionError
from . import default_pair, hub
from .load_set import load_pair_set
from .loaders import (LORA_MODES, OFFLOAD_MODES, merged_mode, choose_offload, load_resident, load_streamed, lora_choice,
                      quiet_hf_progress)
from .sources import is_adapter_dir, parse_device, parse_dtype, read_adapter_config

__all__ = ["load_pair", "choose_offload", "OFFLOAD_MODES", "LORA_MODES"]


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
                lora_mode, pair = merged_mode(f"offload={offload!r}: {pair}"), None
        if pair is None:
            pair = load_streamed(pretrained, finetuned, **opts)
    pair.sources = {"pretrained": pretrained, "finetuned": finetuned, "gguf": (g_pt, g_ft)}
    pair.lora = lora_mode
    return pair
