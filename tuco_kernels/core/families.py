"""Where each supported HuggingFace family keeps its parts, and how its head turns x_L into logits.

The engine never re-implements attention, masks or rotary embeddings: it drives the model's own
decoder blocks with the call arguments recorded from the model's own forward (see capture.py).
What it does need per family is small: the list of decoder blocks, the final norm and LM head
(for logits under α), and the embedding (for nothing but checks). Families outside SUPPORTED are
refused rather than silently mis-scored: a family whose decoder loop does work between blocks
(per-layer inputs, cross-layer KV sharing, ...) would break the identity x_{l+1} = block_l(x_l).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..errors import UnsupportedModelError

# model_type -> (attribute path of the decoder stack, attribute path of the final norm)
_LAYOUT = {
    "llama": ("model.layers", "model.norm"),
    "mistral": ("model.layers", "model.norm"),
    "qwen2": ("model.layers", "model.norm"),
    "qwen3": ("model.layers", "model.norm"),
    "gemma": ("model.layers", "model.norm"),
    "gemma2": ("model.layers", "model.norm"),
    "gemma3_text": ("model.layers", "model.norm"),
    "phi3": ("model.layers", "model.norm"),
    "gpt2": ("transformer.h", "transformer.ln_f"),
}
SUPPORTED = tuple(_LAYOUT)


def _get(obj, path: str):
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


@dataclass(frozen=True)
class Family:
    """Accessors for one model_type. Stateless: every method takes the model."""

    model_type: str
    layers_path: str
    norm_path: str

    def layers(self, model: nn.Module) -> nn.ModuleList:
        return _get(model, self.layers_path)

    def final_norm(self, model: nn.Module) -> nn.Module:
        return _get(model, self.norm_path)

    def logits(self, model: nn.Module, x_last: torch.Tensor) -> torch.Tensor:
        """Final norm, LM head and (Gemma 2/3) soft-capping, exactly as the HF CausalLM forward does.

        ``x_last`` is the pre-norm residual stream x_L of the positions wanted, [..., d].
        """
        logits = model.get_output_embeddings()(self.final_norm(model)(x_last))
        cap = getattr(model.config, "final_logit_softcapping", None)
        if cap is not None:
            logits = torch.tanh(logits / cap) * cap
        return logits


def family_of(model_or_config) -> Family:
    """The :class:`Family` of a model or config; raises :class:`UnsupportedModelError` if unknown."""
    config = getattr(model_or_config, "config", model_or_config)
    model_type = getattr(config, "model_type", None)
    if model_type not in _LAYOUT:
        raise UnsupportedModelError(
            f"model_type {model_type!r} is not supported: the engine drives decoder blocks one by one and "
            f"is verified only for {', '.join(SUPPORTED)}. Other families may do work between blocks "
            f"that this decomposition would silently drop, so they are refused."
        )
    layers_path, norm_path = _LAYOUT[model_type]
    return Family(model_type, layers_path, norm_path)
