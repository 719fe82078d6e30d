"""Loading models and tokenizers with HuggingFace (``from_pretrained``), merging a PEFT adapter, and preparing a
loaded model for the engine (dtype of the parameters only, device, eval mode, no gradients)."""

from __future__ import annotations

import logging
import os
import re
import warnings
from pathlib import Path

import torch

from ..core.families import check_config
from ..errors import ModelError
from ..offload.checkpoint import Checkpoint
from .sources import is_adapter_dir, read_config, resolve_source, weights_kind

log = logging.getLogger("tuco_kernels")


def load_model(source, *, dtype, gguf_file, allow_pickle, attn_implementation):
    from transformers import AutoModelForCausalLM

    directory, gguf = resolve_source(source, gguf_file)
    kwargs = dict(trust_remote_code=False, dtype=dtype or "auto")
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    if gguf:
        kwargs["gguf_file"] = gguf
        if dtype is None:
            kwargs["dtype"] = torch.float32  # GGUF is dequantized to fp32 nn.Linear weights
    else:
        kwargs["use_safetensors"] = weights_kind(directory, allow_pickle) == "safetensors"
    check_config(read_config(source, gguf_file))  # refuse what cannot be a decoder-only LM before loading weights
    where = directory / (gguf or "")
    if not gguf and kwargs["use_safetensors"]:
        Checkpoint(directory).close()   # every shard's header against its file size: a damaged file is named
    try:
        model, info = AutoModelForCausalLM.from_pretrained(directory, output_loading_info=True, **kwargs)
    except Exception as exc:  # HF, safetensors and torch raise many kinds; all mean "this folder does not load"
        if "ignore_mismatched_sizes" in str(exc):   # HF's own report of which tensor went to its log, not the error
            raise ModelError(f"{where}: {mismatched_shapes(directory, kwargs)}") from None
        raise ModelError(f"{where}: cannot load the model: {first_line(exc)}") from None
    for key, what in (("missing_keys", "has no weights for"), ("mismatched_keys", "has weights of another shape for")):
        names = sorted(info.get(key) or [])
        if names:
            shown = names[0] if isinstance(names[0], str) else names[0][0]
            raise ModelError(f"{where}: the checkpoint {what} {len(names)} parameter(s) of the model its config "
                             f"describes (first: {shown}); HF would fill them with random values")
    return model


def mismatched_shapes(directory, kwargs) -> str:
    """Which stored tensor disagrees with the config, and how (loading again with mismatches allowed to learn it)."""
    from transformers import AutoModelForCausalLM

    try:
        _, info = AutoModelForCausalLM.from_pretrained(directory, output_loading_info=True,
                                                       ignore_mismatched_sizes=True, **kwargs)
        bad = sorted(info.get("mismatched_keys") or [])
    except Exception:   # noqa: BLE001 - the second try is only for the message
        bad = []
    if not bad:
        return "the checkpoint's tensor shapes disagree with config.json"
    name, stored, expected = bad[0]
    return (f"config.json disagrees with the stored weights: {name} is stored as {list(stored)} but the config "
            f"makes it {list(expected)}" + (f" ({len(bad) - 1} more tensors disagree)" if len(bad) > 1 else "")
            + "; the config belongs to another model, or the weights do")


def first_line(exc: BaseException) -> str:
    """The informative first line of an exception from a library, at most 300 characters."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return (lines[0] if lines else type(exc).__name__)[:300]


def load_tokenizer(sources: list, gguf_files: list):
    """The first tokenizer found among the sources (fine-tuned side first)."""
    from transformers import AutoTokenizer

    for source, gguf in zip(sources, gguf_files):
        if source is None or not isinstance(source, (str, os.PathLike)):
            continue
        directory, g = resolve_source(source, gguf)
        has_files = g or any((directory / n).is_file() for n in ("tokenizer.json", "tokenizer_config.json",
                                                                  "tokenizer.model", "vocab.json"))
        if has_files:
            try:
                return AutoTokenizer.from_pretrained(directory, trust_remote_code=False,
                                                     **({"gguf_file": g} if g else {}))
            except Exception as exc:  # a damaged tokenizer.json, a missing sentencepiece model, ...
                raise ModelError(f"{directory}: cannot load the tokenizer: {first_line(exc)}") from None
    return None


def tokenizers_for(tokenizer, pretrained, finetuned, g_pt, g_ft):
    """(fine-tuned tokenizer, pre-trained tokenizer or None) as load_pair resolves them."""
    if isinstance(tokenizer, (str, os.PathLike)):
        loaded = load_tokenizer([tokenizer], [None])
        if loaded is None:
            raise ModelError(f"{tokenizer}: the tokenizer given (--tokenizer, tokenizer=) has no tokenizer files "
                             f"(tokenizer.json, tokenizer_config.json, tokenizer.model or vocab.json)")
        return loaded, None
    if tokenizer is not None:
        return tokenizer, None
    ft_tok = load_tokenizer([finetuned, pretrained], [g_ft, g_pt])
    template = Path(os.fspath(finetuned)) / "chat_template.jinja" if is_adapter_dir(finetuned) else None
    if ft_tok is not None and template is not None and template.is_file() and not getattr(ft_tok, "chat_template", None):
        ft_tok.chat_template = template.read_text(encoding="utf-8")  # an adapter's own chat format
    pt_tok = load_tokenizer([pretrained], [g_pt]) if not is_adapter_dir(finetuned) else None
    return ft_tok, pt_tok


def apply_adapter(base, adapter_dir: Path, allow_pickle: bool):
    """``base`` with the adapter merged into its weights (PEFT's ``merge_and_unload``): ``lora="merged"``."""
    return load_peft(base, adapter_dir, allow_pickle).merge_and_unload()


def load_peft(base, adapter_dir: Path, allow_pickle: bool):
    """``PeftModel.from_pretrained(base, adapter_dir)`` (inference, adapter active, unmerged), its errors named."""
    from peft import PeftModel

    check_adapter_files(adapter_dir, allow_pickle)
    try:
        with warnings.catch_warnings():   # PEFT reads transformers' deprecated is_gradient_checkpointing: not ours to show
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
            return PeftModel.from_pretrained(base, adapter_dir, is_trainable=False)
    except Exception as exc:  # PEFT, safetensors and torch errors alike
        raise adapter_load_error(adapter_dir, exc) from None


def check_adapter_files(adapter_dir: Path, allow_pickle: bool) -> None:
    """The adapter's weights file is there (pickle ``adapter_model.bin`` only with ``allow_pickle``)."""
    names = [p.name for p in adapter_dir.iterdir()]
    if "adapter_model.safetensors" not in names:
        if "adapter_model.bin" in names and not allow_pickle:
            raise ModelError(f"{adapter_dir / 'adapter_model.bin'}: pickle adapter weights are refused; "
                            f"pass allow_pickle=True (--allow-pickle)")
        if "adapter_model.bin" not in names:
            raise ModelError(f"{adapter_dir}: no adapter weights (adapter_model.safetensors)")


def adapter_load_error(adapter_dir: Path, exc: Exception) -> ModelError:
    """PEFT's failure to load an adapter onto a base, as one named line."""
    mismatch = _SIZE_MISMATCH.search(str(exc))
    if mismatch:
        name = mismatch["name"].removeprefix("base_model.model.").replace(".default", "")
        more = len(_SIZE_MISMATCH.findall(str(exc))) - 1
        return ModelError(f"{adapter_dir}: the adapter was made for another base model: {name} is "
                          f"{_shape(mismatch['stored'])} in the adapter but {_shape(mismatch['model'])} for this "
                          f"pre-trained model" + (f" ({more} more tensors differ)" if more else ""))
    return ModelError(f"{adapter_dir}: the adapter does not fit the pre-trained model: {first_line(exc)}")


# torch's load_state_dict report, one line per tensor
_SIZE_MISMATCH = re.compile(r"size mismatch for (?P<name>\S+): copying a param with shape torch\.Size\((?P<stored>"
                            r"\[[^\]]*\])\) from checkpoint, the shape in current model is torch\.Size\("
                            r"(?P<model>\[[^\]]*\])\)")


def _shape(text: str) -> str:
    return text.replace(" ", "")


def cast_parameters(model: torch.nn.Module, dtype: torch.dtype) -> torch.nn.Module:
    """Cast floating parameters only, in place. ``model.to(dtype)`` would also cast buffers such as the rotary
    ``inv_freq``, which HF keeps in fp32 when it loads a bf16/fp16 checkpoint; the rotary angles would then
    differ from the model HF itself builds."""
    for p in model.parameters():
        if p.is_floating_point() and p.dtype != dtype:
            p.data = p.data.to(dtype)
    return model


def prepare_model(model, dtype, device):
    if dtype is not None:
        model = cast_parameters(model, dtype)
    if device is not None:
        model = model.to(device)
    model.eval()
    model.requires_grad_(False)
    return model
