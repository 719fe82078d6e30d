"""A model built from its config with no weights in memory: the frame that streamed weights run in.

``empty_model`` builds the HF CausalLM with every parameter on the meta device (no storage) and its
buffers real -- the rotary ``inv_freq`` and Gemma's embedding scale are computed from the config
exactly as HF computes them when it loads a checkpoint. The parameters outside the decoder blocks
(embedding, final norm, head; GPT-2's position embedding) are then read on their own
(``materialize_outer``); the blocks stay on meta and serve as one skeleton per layer that
``torch.func.functional_call`` runs with either model's weights for that layer.
"""

from __future__ import annotations

import torch
from torch import nn

from ..core.families import Family
from ..errors import ModelError
from .checkpoint import LoadConversions, TensorSource, resolve_name


def empty_model(config, dtype: torch.dtype, attn_implementation: str | None = None) -> nn.Module:
    """``config``'s CausalLM, parameters on meta, buffers real (on CPU), in eval mode."""
    from accelerate import init_empty_weights
    from transformers import AutoModelForCausalLM

    kwargs = {"attn_implementation": attn_implementation} if attn_implementation else {}
    with init_empty_weights(include_buffers=False):
        try:
            model = AutoModelForCausalLM.from_config(config, dtype=dtype, trust_remote_code=False, **kwargs)
        except ValueError:   # a sub-config (a multimodal model's text part): the class its checkpoint names
            model = _named_class(config)._from_config(config, dtype=dtype, **kwargs)
    model.tie_weights()  # under init_empty_weights HF leaves a tied head untied; a loaded model has it tied
    return model.eval().requires_grad_(False)


def _named_class(config):
    import transformers

    for name in getattr(config, "architectures", None) or []:
        cls = getattr(transformers, name, None)
        if cls is not None and name.endswith("ForCausalLM"):
            return cls
    raise ModelError(f"{getattr(config, 'model_type', '?')}: the config names no causal-LM class transformers has "
                     f"({getattr(config, 'architectures', None)})")


def block_parameter_names(family: Family, model: nn.Module, layer: int) -> list[tuple[str, str]]:
    """(name inside the block, name in the model) for every parameter of decoder block ``layer``."""
    block = family.layers(model)[layer]
    prefix = f"{family.layers_path}.{layer}."
    return [(rel, prefix + rel) for rel, _ in block.named_parameters(remove_duplicate=False)]


def outer_parameter_groups(family: Family, model: nn.Module) -> list[list[str]]:
    """The parameters outside the decoder blocks, grouped by identity (a tied head shares the embedding)."""
    groups: dict[int, list[str]] = {}
    prefix = family.layers_path + "."
    for name, p in model.named_parameters(remove_duplicate=False):
        if not name.startswith(prefix):
            groups.setdefault(id(p), []).append(name)
    return list(groups.values())


def _set_parameter(model: nn.Module, name: str, tensor: torch.Tensor) -> None:
    owner_path, _, leaf = name.rpartition(".")
    owner = model.get_submodule(owner_path) if owner_path else model
    owner._parameters[leaf] = nn.Parameter(tensor, requires_grad=False)


def materialize_outer(model: nn.Module, family: Family, source: TensorSource, device, dtype: torch.dtype,
                      replacements: dict[str, torch.Tensor] | None = None) -> int:
    """Read the non-block parameters from ``source`` onto ``device`` in ``dtype``; move every buffer there.

    ``replacements`` (a LoRA adapter's ``modules_to_save``) override stored tensors by name. Returns the
    bytes placed on the device.
    """
    replacements = replacements or {}
    prefix = getattr(model, "base_model_prefix", None)
    conversions = LoadConversions.of(model)
    placed = 0
    for group in outer_parameter_groups(family, model):
        shared = None
        for name in group:
            if name in replacements:
                tensor = replacements[name].to(device=device, dtype=dtype)
            else:
                if shared is None:
                    stored = resolve_name(source, name, prefix, [n for n in group if n != name], conversions)
                    host = source.read(stored)
                    shared = host.to(device=device, dtype=dtype if host.is_floating_point() else host.dtype)
                    placed += shared.numel() * shared.element_size()
                tensor = shared
            _set_parameter(model, name, tensor)
    for module in model.modules():
        for key, buf in module._buffers.items():
            if buf is not None:
                module._buffers[key] = buf.to(device)
    return placed


def is_materialized(model: nn.Module, family: Family) -> bool:
    """Whether the non-block parameters hold data (not meta)."""
    return all(not model.get_parameter(group[0]).is_meta for group in outer_parameter_groups(family, model))
