"""Load a (pre-trained, fine-tuned) model pair and check that one can be decomposed against the other.

Sources, for either side: a local directory (safetensors, single or sharded), an already-built
``PreTrainedModel``, or a GGUF file (a path ending in ``.gguf``, or ``gguf_file=``). The fine-tuned
side may also be a PEFT/LoRA adapter directory: fine-tuned = pre-trained + adapter, merged.
Pickle weights (``*.bin``, ``*.pt``) are refused unless ``allow_pickle=True``; remote code never runs.
"""

from __future__ import annotations

import copy
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from .errors import IncompatiblePairError, TucoError
from .families import Family, family_of

log = logging.getLogger(__name__)

_PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt")
_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "float": torch.float32,
           "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
           "float16": torch.float16, "fp16": torch.float16, "half": torch.float16}


@dataclass
class ModelPair:
    """The two models (eval mode, same dtype and device), the fine-tuned tokenizer and the family.

    With ``offload="cpu"`` or ``"disk"`` the two models are frames (skeleton.py): the decoder blocks hold no
    weights (meta) and ``streamer`` brings each layer's weights of both models to the device in turn; the
    fine-tuned frame's embedding, final norm and head are loaded, the pre-trained frame's only on demand
    (``pretrained_frame``, for OutputCo).
    """

    pretrained: torch.nn.Module
    finetuned: torch.nn.Module
    tokenizer: object | None
    family: Family
    offload: str = "none"
    streamer: object | None = None
    _materialize_pretrained: object | None = None

    @property
    def n_layers(self) -> int:
        return len(self.family.layers(self.finetuned))

    @property
    def device(self) -> torch.device:
        return self.finetuned.get_input_embeddings().weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.finetuned.get_input_embeddings().weight.dtype

    def pretrained_frame(self) -> torch.nn.Module:
        """The pre-trained model with (at least) its embedding, final norm and head in memory."""
        if self._materialize_pretrained is not None:
            self._materialize_pretrained()
            self._materialize_pretrained = None
        return self.pretrained

    def close(self) -> None:
        """Stop the streamer's reader thread and close its files (streamed pairs; a no-op otherwise)."""
        if self.streamer is not None:
            self.streamer.close()

    @property
    def vocab_size(self) -> int:
        return self.finetuned.get_input_embeddings().weight.shape[0]

    def __repr__(self) -> str:
        offload = f", offload={self.offload}" if self.offload != "none" else ""
        return (f"ModelPair({self.family.model_type}, {self.n_layers} layers, d={self.finetuned.config.hidden_size}, "
                f"{self.dtype}, {self.device}{offload})")


def parse_dtype(dtype) -> torch.dtype | None:
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    if isinstance(dtype, str) and dtype.lower() in _DTYPES:
        return _DTYPES[dtype.lower()]
    if dtype == "auto":
        return None
    raise TucoError(f"unknown dtype {dtype!r}; use one of float32, bfloat16, float16")


def _weights_kind(directory: Path, allow_pickle: bool) -> str:
    """'safetensors' or 'pickle' for a model directory; refuses pickle unless allowed."""
    names = [p.name for p in directory.iterdir() if p.is_file()]
    if any(n.endswith(".safetensors") for n in names):
        return "safetensors"
    pickles = sorted(n for n in names if n.endswith(_PICKLE_SUFFIXES))
    if pickles:
        if not allow_pickle:
            raise TucoError(f"{directory / pickles[0]}: pickle weights can run arbitrary code when loaded and are "
                            f"refused; convert them to safetensors or pass allow_pickle=True (--allow-pickle)")
        return "pickle"
    raise TucoError(f"{directory}: no model weights found (expected *.safetensors)")


def _resolve_source(source, gguf_file):
    """(directory, gguf file name or None) for a path source."""
    path = Path(os.fspath(source)).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise TucoError(f"{path}: GGUF file not found")
        return path.parent, path.name
    if not path.is_dir():
        raise TucoError(f"{path}: not a directory or .gguf file (models are loaded from local paths only)")
    if gguf_file is not None and not (path / gguf_file).is_file():
        raise TucoError(f"{path / gguf_file}: GGUF file not found")
    return path, gguf_file


def _read_config(source, gguf_file):
    from transformers import AutoConfig

    directory, gguf = _resolve_source(source, gguf_file)
    if not gguf and not (directory / "config.json").is_file():
        raise TucoError(f"{directory}: no config.json (not a HuggingFace model directory)")
    try:
        return AutoConfig.from_pretrained(directory, trust_remote_code=False, **({"gguf_file": gguf} if gguf else {}))
    except (OSError, ValueError, KeyError) as exc:
        raise TucoError(f"{directory}: cannot read the model config: {exc}") from exc


def _load_model(source, *, dtype, gguf_file, allow_pickle, attn_implementation):
    from transformers import AutoModelForCausalLM

    directory, gguf = _resolve_source(source, gguf_file)
    kwargs = dict(trust_remote_code=False, dtype=dtype or "auto")
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    if gguf:
        kwargs["gguf_file"] = gguf
        if dtype is None:
            kwargs["dtype"] = torch.float32  # GGUF is dequantized to fp32 nn.Linear weights
    else:
        kwargs["use_safetensors"] = _weights_kind(directory, allow_pickle) == "safetensors"
    family_of(_read_config(source, gguf_file))  # refuse unsupported families before loading any weights
    try:
        return AutoModelForCausalLM.from_pretrained(directory, **kwargs)
    except (OSError, ValueError, KeyError) as exc:
        raise TucoError(f"{directory / (gguf or '')}: cannot load the model: {exc}") from exc


def _load_tokenizer(sources: list, gguf_files: list):
    """The first tokenizer found among the sources (fine-tuned side first)."""
    from transformers import AutoTokenizer

    for source, gguf in zip(sources, gguf_files):
        if source is None or not isinstance(source, (str, os.PathLike)):
            continue
        directory, g = _resolve_source(source, gguf)
        has_files = g or any((directory / n).is_file() for n in ("tokenizer.json", "tokenizer_config.json",
                                                                  "tokenizer.model", "vocab.json"))
        if has_files:
            return AutoTokenizer.from_pretrained(directory, trust_remote_code=False,
                                                 **({"gguf_file": g} if g else {}))
    return None


def _is_adapter_dir(source) -> bool:
    return isinstance(source, (str, os.PathLike)) and (Path(os.fspath(source)) / "adapter_config.json").is_file()


def _apply_adapter(base, adapter_dir: Path, allow_pickle: bool):
    from peft import PeftModel

    names = [p.name for p in adapter_dir.iterdir()]
    if "adapter_model.safetensors" not in names:
        if "adapter_model.bin" in names and not allow_pickle:
            raise TucoError(f"{adapter_dir / 'adapter_model.bin'}: pickle adapter weights are refused; "
                            f"pass allow_pickle=True (--allow-pickle)")
        if "adapter_model.bin" not in names:
            raise TucoError(f"{adapter_dir}: no adapter weights (adapter_model.safetensors)")
    try:
        peft_model = PeftModel.from_pretrained(base, adapter_dir, is_trainable=False)
    except (ValueError, KeyError, RuntimeError) as exc:
        raise TucoError(f"{adapter_dir}: the adapter does not fit the pre-trained model: {exc}") from exc
    return peft_model.merge_and_unload()


def _config_field(config, field):
    return getattr(config, field, None)


def check_configs(pc, fc) -> Family:
    """Raise :class:`IncompatiblePairError` naming the first config field on which the two models disagree."""
    if pc.model_type != fc.model_type:
        raise IncompatiblePairError("model_type", pc.model_type, fc.model_type)
    family = family_of(fc)
    for field in ("num_hidden_layers", "hidden_size", "vocab_size", "num_attention_heads",
                  "num_key_value_heads", "head_dim", "layer_types", "sliding_window"):
        a, b = _config_field(pc, field), _config_field(fc, field)
        if a != b:
            raise IncompatiblePairError(field, a, b)
    return family


def check_compatible(pt, ft, pt_tokenizer=None, ft_tokenizer=None) -> Family:
    """Check configs, built modules and tokenizers; raise :class:`IncompatiblePairError` naming the field."""
    pc, fc = pt.config, ft.config
    family = check_configs(pc, fc)
    n_pt, n_ft = len(family.layers(pt)), len(family.layers(ft))
    if n_pt != n_ft:
        raise IncompatiblePairError("number of decoder layers", n_pt, n_ft)
    if pt.get_input_embeddings().weight.shape != ft.get_input_embeddings().weight.shape:
        raise IncompatiblePairError("vocabulary size (embedding rows)", pt.get_input_embeddings().weight.shape[0],
                                    ft.get_input_embeddings().weight.shape[0])
    if pt_tokenizer is not None and ft_tokenizer is not None:
        pv, fv = pt_tokenizer.get_vocab(), ft_tokenizer.get_vocab()
        for token, idx in pv.items():
            if fv.get(token) != idx:
                raise IncompatiblePairError("tokenizer vocabulary", f"{token!r} -> {idx}", f"{token!r} -> {fv.get(token)}",
                                            "the fine-tuned tokenizer must keep every pre-trained token id")
    rope_a, rope_b = _config_field(pc, "rope_parameters"), _config_field(fc, "rope_parameters")
    if rope_a != rope_b:
        log.warning("rope parameters differ (%s vs %s); pre-trained blocks will see the fine-tuned model's "
                    "rotary embeddings, as the decomposition requires", rope_a, rope_b)
    return family


def cast_parameters(model: torch.nn.Module, dtype: torch.dtype) -> torch.nn.Module:
    """Cast floating parameters only, in place. ``model.to(dtype)`` would also cast buffers such as the rotary
    ``inv_freq``, which HF keeps in fp32 when it loads a bf16/fp16 checkpoint; the rotary angles would then
    differ from the model HF itself builds."""
    for p in model.parameters():
        if p.is_floating_point() and p.dtype != dtype:
            p.data = p.data.to(dtype)
    return model


def _prepare(model, dtype, device):
    if dtype is not None:
        model = cast_parameters(model, dtype)
    if device is not None:
        model = model.to(device)
    model.eval()
    model.requires_grad_(False)
    return model


OFFLOAD_MODES = ("none", "cpu", "disk")


def load_pair(pretrained=None, finetuned=None, *, tokenizer=None, dtype=None, device=None, gguf_file=None,
              allow_pickle: bool = False, attn_implementation: str | None = None, offload: str | None = None,
              max_gpu_memory=None, prefetch: bool = True) -> ModelPair:
    """Load and check a pre-trained / fine-tuned pair.

    With no ``pretrained`` and ``finetuned``, the default pair: google/gemma-3-270m and the project's chat LoRA
    of it (:mod:`tuco_kernels.default_pair`; fetched and converted on first use, fp32 unless ``dtype`` is given).

    Args:
        pretrained, finetuned: local directories, ``.gguf`` paths or ``PreTrainedModel`` objects; the fine-tuned
            side may be a PEFT adapter directory (then it is merged into a copy of the pre-trained model).
        tokenizer: a tokenizer or a directory; default: the fine-tuned side's, else the pre-trained side's.
        dtype: "float32", "bfloat16", "float16" or a torch dtype; default: the checkpoints' own (the fine-tuned
            one's if they differ).
        device: where to put both models; default: where they are (CPU for paths).
        gguf_file: a GGUF file name inside the directories, one name for both or a (pre-trained, fine-tuned) pair.
        allow_pickle: permit ``*.bin`` weights (pickle can execute code; refused by default).
        offload: where the decoder-block weights live. "none": both models on ``device``. "cpu": both models in
            (pinned) host memory, each layer streamed to the device when it runs. "disk": nothing but the
            fine-tuned embedding, final norm and head is loaded; each layer is read from the safetensors files
            when it runs. Default: "none", or the mode that ``max_gpu_memory`` calls for.
        max_gpu_memory: a device-memory budget ("8GiB", "24GB" or bytes) that chooses ``offload`` when it is
            not given: "none" when both models fit with room to compute, else "cpu" when host memory holds
            both, else "disk". Pass the same budget to :func:`score` to size its batches and sweeps.
        prefetch: with offload, copy layer l+1 while layer l computes (False: the serial baseline).
    """
    if pretrained is None and finetuned is None:
        from .default_pair import load_default_pair

        return load_default_pair(tokenizer=tokenizer, dtype=dtype or "float32", device=device,
                                 attn_implementation=attn_implementation, offload=offload,
                                 max_gpu_memory=max_gpu_memory, prefetch=prefetch)
    if pretrained is None or finetuned is None:
        raise TucoError("give both the pre-trained and the fine-tuned model, or neither (the default pair)")
    dtype = parse_dtype(dtype)
    g_pt, g_ft = gguf_file if isinstance(gguf_file, (tuple, list)) else (gguf_file, gguf_file)
    if offload is None:
        from .plan import choose_offload

        offload = choose_offload(pretrained, finetuned, max_gpu_memory, device, dtype, g_pt, g_ft)
    if offload not in OFFLOAD_MODES:
        raise TucoError(f"unknown offload mode {offload!r}; use one of {', '.join(OFFLOAD_MODES)}")
    if offload == "none":
        return _load_resident(pretrained, finetuned, tokenizer=tokenizer, dtype=dtype, device=device, g_pt=g_pt,
                              g_ft=g_ft, allow_pickle=allow_pickle, attn_implementation=attn_implementation)
    from .streamed_pair import load_streamed

    return load_streamed(pretrained, finetuned, tokenizer=tokenizer, dtype=dtype, device=device, g_pt=g_pt,
                         g_ft=g_ft, allow_pickle=allow_pickle, attn_implementation=attn_implementation,
                         offload=offload, prefetch=prefetch)


def _tokenizers(tokenizer, pretrained, finetuned, g_pt, g_ft):
    """(fine-tuned tokenizer, pre-trained tokenizer or None) as load_pair resolves them."""
    if isinstance(tokenizer, (str, os.PathLike)):
        return _load_tokenizer([tokenizer], [None]), None
    if tokenizer is not None:
        return tokenizer, None
    ft_tok = _load_tokenizer([finetuned, pretrained], [g_ft, g_pt])
    template = Path(os.fspath(finetuned)) / "chat_template.jinja" if _is_adapter_dir(finetuned) else None
    if ft_tok is not None and template is not None and template.is_file() and not getattr(ft_tok, "chat_template", None):
        ft_tok.chat_template = template.read_text(encoding="utf-8")  # an adapter's own chat format
    pt_tok = _load_tokenizer([pretrained], [g_pt]) if not _is_adapter_dir(finetuned) else None
    return ft_tok, pt_tok


def _load_resident(pretrained, finetuned, *, tokenizer, dtype, device, g_pt, g_ft, allow_pickle,
                   attn_implementation) -> ModelPair:
    load = dict(dtype=dtype, allow_pickle=allow_pickle, attn_implementation=attn_implementation)
    if not isinstance(pretrained, torch.nn.Module) and not isinstance(finetuned, torch.nn.Module) \
            and not _is_adapter_dir(finetuned):
        check_configs(_read_config(pretrained, g_pt), _read_config(finetuned, g_ft))  # before any weights load

    pt = pretrained if isinstance(pretrained, torch.nn.Module) else _load_model(pretrained, gguf_file=g_pt, **load)
    if _is_adapter_dir(finetuned):
        adapter_dir = Path(os.fspath(finetuned))
        base = (copy.deepcopy(pt) if isinstance(pretrained, torch.nn.Module)
                else _load_model(pretrained, gguf_file=g_pt, **load))
        ft = _apply_adapter(base, adapter_dir, allow_pickle)
    elif isinstance(finetuned, torch.nn.Module):
        ft = finetuned
    else:
        ft = _load_model(finetuned, gguf_file=g_ft, **load)

    ft_tok, pt_tok = _tokenizers(tokenizer, pretrained, finetuned, g_pt, g_ft)
    family = check_compatible(pt, ft, pt_tok, ft_tok)

    target = dtype or next(ft.parameters()).dtype
    if next(pt.parameters()).dtype != target:
        log.info("casting the pre-trained model to %s to match the fine-tuned one", target)
    pt, ft = _prepare(pt, target, device), _prepare(ft, target, device)
    return ModelPair(pretrained=pt, finetuned=ft, tokenizer=ft_tok, family=family)
