"""``load_pair(base, [a, b, ...])``: one pre-trained model against several fine-tunes, a
:class:`~tuco_kernels.core.pair_set.PairSet` scored in one sweep per layer.

Resident, the base is loaded once and every side is built on that model object: LoRA adapters shared on it
(models/shared.py, one base copy for all of them), merged adapters and whole fine-tuned models beside it. Streamed
(``offload="cpu"|"disk"``), the sides must be LoRA adapters shared on the base: one streamer brings each base layer
once per layer visit and every adapter's PEFT block runs on it. One tokenizer renders the prompts for every side:
the one given, else the first fine-tune's; a fine-tune whose own tokenizer files differ is refused by name.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch

from ..core.pair_set import PairSet
from ..core.reuse import ProjectionReuse
from ..errors import ModelError, OptionError
from . import hub
from ..core.budget import host_memory_available, parse_size
from ..offload.streamed_pair import streamed_pair_set
from .hf import tokenizers_for
from .loaders import (OFFLOAD_MODES, load_resident, lora_choice, model_bytes, quiet_hf_progress, stage,
                   tensor_source)
from .shared import streamed_finetuned
from .sources import is_adapter_dir, parse_device, parse_dtype, read_adapter_config, resolve_source

#: the files a tokenizer is read from (models/hf.py load_tokenizer finds one by the first four)
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json", "merges.txt",
                   "special_tokens_map.json", "chat_template.jinja", "chat_template.json")


def side_names(finetuned: list) -> list[str]:
    """What each fine-tune is called in the results: a path or hub id as given, a model object's name_or_path."""
    names = []
    for k, source in enumerate(finetuned):
        if isinstance(source, torch.nn.Module):
            name = getattr(getattr(source, "config", None), "_name_or_path", None) or f"finetuned[{k}]"
        else:
            name = os.fspath(source)
        if name in names:
            raise OptionError(f"the fine-tune {name!r} is given twice (fine-tunes {names.index(name)} and {k}); "
                              f"each is scored once")
        names.append(name)
    return names


def load_pair_set(pretrained, finetuned: list, *, tokenizer=None, dtype=None, device=None, gguf_file=None,
                  allow_pickle: bool = False, attn_implementation=None, offload=None, max_gpu_memory=None,
                  prefetch: bool = True, lora: str = "shared") -> PairSet:
    """See :func:`~tuco_kernels.models.load.load_pair` (``finetuned`` a list) and the module docstring."""
    if pretrained is None:
        raise OptionError("several fine-tunes are scored against one pre-trained model: give it (--pretrained)")
    if not finetuned:
        raise OptionError("the list of fine-tuned models is empty; give at least one")
    for k, source in enumerate(finetuned):
        if not isinstance(source, (str, os.PathLike, torch.nn.Module)):
            raise ModelError(f"finetuned[{k}]: expected a model directory, a .gguf file, a hub id, a PEFT adapter or "
                             f"a PreTrainedModel, got {type(source).__name__} {source!r}")
    names = side_names(finetuned)
    pretrained, tokenizer = hub.local_source(pretrained), hub.local_source(tokenizer)
    sources = [hub.local_source(f) for f in finetuned]
    modes = [lora_choice(lora, read_adapter_config(s), s) if is_adapter_dir(s) else None for s in sources]
    shared = [m is not None and m["mode"] == "shared" for m in modes]
    dtype, device = parse_dtype(dtype), parse_device(device)
    g_pt, g_ft = gguf_file if isinstance(gguf_file, (tuple, list)) else (gguf_file, gguf_file)
    if tokenizer is None:
        check_one_tokenizer(pretrained, sources, names, g_pt, g_ft)
    if offload is None:
        offload = choose_set_offload(pretrained, sources, names, shared, max_gpu_memory, dtype, g_pt, g_ft)
    if offload not in OFFLOAD_MODES:
        raise OptionError(f"unknown offload mode {offload!r}; use one of {', '.join(OFFLOAD_MODES)}")
    if offload == "none":
        pairs = _resident_sides(pretrained, sources, names, shared, tokenizer=tokenizer, dtype=dtype, device=device,
                                g_pt=g_pt, g_ft=g_ft, allow_pickle=allow_pickle,
                                attn_implementation=attn_implementation)
        base = pairs[0].pretrained
        pair_set = PairSet(pairs, names, layer_source=lambda profile: _resident_layers(pairs),
                           reuse=ProjectionReuse() if any(p.reuse is not None for p in pairs) else None)
        assert all(p.pretrained is base for p in pairs)
    else:
        pair_set = _streamed_set(pretrained, sources, names, shared, modes, tokenizer=tokenizer, dtype=dtype,
                                 device=device, g_pt=g_pt, allow_pickle=allow_pickle,
                                 attn_implementation=attn_implementation, offload=offload, prefetch=prefetch)
    for pair, source, mode in zip(pair_set.pairs, sources, modes):   # each side as load_pair(base, source) says it
        pair.sources = {"pretrained": pretrained, "finetuned": source, "gguf": (g_pt, g_ft)}
        pair.lora = mode
    pair_set.sources = {"pretrained": pretrained, "finetuned": sources, "gguf": (g_pt, g_ft)}
    pair_set.lora = modes
    return pair_set


def choose_set_offload(pretrained, sources, names, shared, max_gpu_memory, dtype, g_pt, g_ft) -> str:
    """:func:`~tuco_kernels.models.loaders.choose_offload` for a set: resident when the base and every side's own
    weights fit with a quarter of the budget left, else streamed (shared adapters only; else refused by name)."""
    budget = parse_size(max_gpu_memory)
    if budget is None:
        return "none"
    base = model_bytes(pretrained, g_pt, dtype)
    own = [0 if is_shared else (base if is_adapter_dir(s) else model_bytes(s, g_ft, dtype))
           for s, is_shared in zip(sources, shared)]
    if base + sum(own) <= 0.75 * budget:
        return "none"
    if not all(shared):
        k = shared.index(False)
        raise OptionError(f"max_gpu_memory {max_gpu_memory}: the base and {len(sources)} fine-tunes do not fit it "
                          f"resident, and only LoRA adapters shared on the base stream together ({names[k]} is not "
                          f"one); score it on its own or raise the budget")
    return "cpu" if base <= 0.9 * host_memory_available() else "disk"


def _resident_sides(pretrained, sources, names, shared, *, tokenizer, dtype, device, g_pt, g_ft, allow_pickle,
                    attn_implementation) -> list:
    """One ResidentPair per fine-tune, all on the pre-trained model the first one loaded (its dtype and device)."""
    pairs = []
    base, base_invariant = pretrained, None
    for k, (source, name) in enumerate(zip(sources, names)):
        with stage(f"fine-tune {k + 1} of {len(sources)}: {name}"):
            pair = load_resident(base, source, tokenizer=tokenizer, dtype=dtype, device=device, g_pt=g_pt,
                                 g_ft=g_ft, allow_pickle=allow_pickle, attn_implementation=attn_implementation,
                                 shared=shared[k], pt_pads_invariant=base_invariant)
            base_invariant = pair.pt_pads_invariant   # the base is proven once, on the first side
        if k == 0:
            base, dtype, device = pair.pretrained, pair.dtype, pair.device
            tokenizer = pair.tokenizer   # one tokenizer renders the prompts for every side (checked before)
        pair.tokenizer = tokenizer
        pairs.append(pair)
    return pairs


def _resident_layers(pairs):
    """(l, the base's block, run it, [each side's fine-tuned block]) for a resident set."""
    family = pairs[0].family
    base = family.layers(pairs[0].pretrained)
    sides = [family.layers(p.finetuned) for p in pairs]
    for l, block in enumerate(base):
        yield l, block, block, [blocks[l] for blocks in sides]


def _streamed_set(pretrained, sources, names, shared, modes, *, tokenizer, dtype, device, g_pt, allow_pickle,
                  attn_implementation, offload, prefetch) -> PairSet:
    """The sides as shared LoRA adapters around one streamed base (the streamer's ``ft_sides``)."""
    for name, source, mode, is_shared in zip(names, sources, modes, shared):
        if not is_shared:
            what = (f"merged ({mode['reason']})" if mode is not None and mode["reason"]
                    else "merged (--lora merged)" if mode is not None else "a whole fine-tuned model")
            raise OptionError(f"offload={offload!r} with several fine-tunes streams one base for LoRA adapters "
                              f"shared on it, but {name} is {what}; score it on its own, or load the set with "
                              f"offload='none'")
    opts = dict(offload=offload, allow_pickle=allow_pickle, dtype=dtype, attn_implementation=attn_implementation)
    pt_source, pc = tensor_source(pretrained, g_pt, side="pre-trained", **opts)
    ft_tok, pt_tok = tokenizers_for(tokenizer, pretrained, sources[0], g_pt, None)
    builders = [(lambda frame, d=Path(os.fspath(s)): streamed_finetuned(frame, d, allow_pickle, device or "cpu"))
                for s in sources]
    where = "page-locked host memory" if offload == "cpu" else "the safetensors files (read per layer)"
    with quiet_hf_progress(), stage(f"preparing {len(sources)} adapters around one streamed base: block weights in "
                                    f"{where}, each adapter unmerged on the device"):
        result = streamed_pair_set(pt_source, pc, builders, names, tokenizers=(ft_tok, pt_tok), dtype=dtype,
                                   device=device or "cpu", offload=offload, prefetch=prefetch,
                                   attn_implementation=attn_implementation)
    if isinstance(result, tuple):   # (side, why it cannot be placed on an empty frame)
        k, why = result
        raise ModelError(f"{names[k]}: offload={offload!r} cannot share this adapter with the other fine-tunes: "
                         f"{why}; score it on its own (it is merged per layer there)")
    return result


def check_one_tokenizer(pretrained, sources, names, g_pt, g_ft) -> None:
    """Every fine-tune reads its prompts with the first one's tokenizer files (the files load_pair would use for it,
    by content), or the set is refused naming the two that differ."""
    def files_of(source):
        if isinstance(source, torch.nn.Module):
            return None
        chosen = {}
        for candidate, g in ((source, g_ft), (pretrained, g_pt)):
            if candidate is None or isinstance(candidate, torch.nn.Module):
                continue
            directory, gguf = resolve_source(candidate, g)
            present = [n for n in TOKENIZER_FILES if (directory / n).is_file()]
            if gguf or set(present) & set(TOKENIZER_FILES[:4]):   # where load_tokenizer finds a tokenizer
                chosen = {n: hashlib.sha256((directory / n).read_bytes()).hexdigest() for n in present}
                if gguf:
                    chosen["gguf"] = str(directory / gguf)
                break
        if is_adapter_dir(source) and (Path(os.fspath(source)) / "chat_template.jinja").is_file():
            chosen["adapter chat_template.jinja"] = hashlib.sha256(
                (Path(os.fspath(source)) / "chat_template.jinja").read_bytes()).hexdigest()
        return chosen

    first = files_of(sources[0])
    for name, source in zip(names[1:], sources[1:]):
        mine = files_of(source)
        if first is None or mine is None or mine == first:
            continue
        differ = sorted(set(first) ^ set(mine) | {n for n in set(first) & set(mine) if first[n] != mine[n]})
        raise ModelError(f"{name}: its tokenizer differs from {names[0]}'s ({', '.join(differ)}), and one tokenizer "
                         f"renders the prompts for every fine-tune of a set; give one (tokenizer=..., --tokenizer) "
                         f"or score them separately")
