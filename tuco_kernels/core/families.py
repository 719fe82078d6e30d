"""Where a model keeps its decoder blocks, found from the model itself rather than from a table of families.

The engine needs three things of a CausalLM: the ModuleList of decoder blocks that its forward calls in order,
the module that reads the last block's output (the final norm, when there is one), and a way to turn x_L into
logits. The blocks are found here by structure: the one ``ModuleList`` of ``num_hidden_layers`` modules, the
shallowest such list under the model (a small override table names the stack where that is ambiguous). The final
norm and the head's behaviour are found and checked on the model's own forward by :mod:`.chain`, which completes
the :class:`Family`; logits come from the model's own head (:mod:`.head`), so soft-capping and logit scales are
HF's, never re-implemented here. Which families are exact is decided at load by the chain probe, not listed.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import nn

from ..errors import UnsupportedModelError
from .head import head_logits

#: model_type -> the decoder stack's path, where structure alone is ambiguous (checked by the chain probe anyway)
STACK_OVERRIDES: dict[str, str] = {}

#: model types whose outputs depend on the other rows of a batch although the probe's short batch does not show it
#: (found by tests/core/test_families.py); scored one prompt per batch like those the probe catches
BATCH_DEPENDENT: dict[str, str] = {
    "axk2": "HF's own forward gives a padded prompt other hidden states than the same prompt alone (TuCo 0.33 vs "
            "0.17 on the sweep's model; suspected: its sparse-attention indexer's top-k over masked keys)"}

#: configs that cannot be a decoder-only causal LM, with why (refused before any weights load)
_REFUSED_CONFIG = {
    "is_encoder_decoder": "an encoder-decoder model: TuCo decomposes a decoder-only residual stream",
}


def _get(obj, path: str):
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


def text_config(config):
    """The decoder's config (the text config of a multimodal model, the config itself otherwise)."""
    try:
        return config.get_text_config(decoder=True)
    except (AttributeError, ValueError):
        return config


def n_layers_of_config(config) -> int | None:
    text = text_config(config)
    for name in ("num_hidden_layers", "n_layer", "num_layers", "n_layers"):
        value = getattr(text, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


@dataclass(frozen=True)
class Family:
    """Where one model's parts are. ``norm_path`` and ``block_returns_tuple`` come from the chain probe.

    Stateless: every method takes the model, so one Family serves both models of a pair (same class, same paths).
    """

    model_type: str
    layers_path: str                 # the ModuleList of decoder blocks, e.g. "model.layers"
    norm_path: str | None = None     # the first module to read x_L (the final norm), as the probe found it
    block_returns: int = 0           # blocks return hidden (0) or a tuple of this many items, hidden first
    proven: bool = False             # the chain probe passed on this model
    pads_invariant: bool = True      # a prompt's outputs do not depend on the rows batched with it (the probe)

    def layers(self, model: nn.Module) -> nn.ModuleList:
        return _get(model, self.layers_path)

    def final_norm(self, model: nn.Module) -> nn.Module:
        """The first module that reads x_L (the final norm; an identity when the head reads x_L itself)."""
        return _get(model, self.norm_path) if self.norm_path else nn.Identity()

    def block_output(self, out) -> torch.Tensor:
        """The hidden states of a block's return value (a tensor, or the first item of a tuple)."""
        return out if isinstance(out, torch.Tensor) else out[0]

    def block_return(self, hidden: torch.Tensor):
        """What a block of this family returns when its hidden states are ``hidden`` (for wrapped blocks; the
        other items of a tuple, attention weights or a cache, are None as in an uncached forward)."""
        return (hidden,) + (None,) * (self.block_returns - 1) if self.block_returns else hidden

    def logits(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """Logits from pre-norm residual states ``x`` [..., d], by the model's own head (see head.py)."""
        return head_logits(model, self, x)

    def with_probe(self, **found) -> Family:
        return replace(self, **found)


def check_config(config) -> None:
    """Refuse, before any weights load, a config that cannot be a decoder-only causal LM."""
    for field, why in _REFUSED_CONFIG.items():
        if getattr(config, field, False):
            raise UnsupportedModelError(f"model_type {config.model_type!r} is {why}")
    if n_layers_of_config(config) is None:
        raise UnsupportedModelError(f"model_type {config.model_type!r}: the config names no number of decoder layers "
                                    f"(num_hidden_layers)")


def find_family(model: nn.Module) -> Family:
    """The :class:`Family` of a built model (its parts found by structure; not yet proven: see chain.py)."""
    config = model.config
    model_type = getattr(config, "model_type", None)
    check_config(config)
    n = n_layers_of_config(config)
    path = STACK_OVERRIDES.get(model_type) or _find_stack(model, n, model_type)
    return Family(model_type, path)


def _find_stack(model: nn.Module, n: int, model_type) -> str:
    lists = [name for name, m in model.named_modules() if isinstance(m, nn.ModuleList) and len(m) == n and name]
    outermost = [name for name in lists if not any(name.startswith(other + ".") for other in lists)]
    if not outermost:
        raise UnsupportedModelError(f"model_type {model_type!r}: no list of {n} decoder blocks (num_hidden_layers) "
                                    f"found in {type(model).__name__}")
    if len(outermost) > 1:   # several stacks (an audio or vision tower beside the language model): the decoder's
        decoder = _decoder_path(model)
        if decoder is not None:
            outermost = [name for name in outermost if name.startswith(decoder + ".")] or outermost
    depth = min(name.count(".") for name in outermost)
    shallowest = [name for name in outermost if name.count(".") == depth]
    if len(shallowest) > 1:
        raise UnsupportedModelError(f"model_type {model_type!r}: {len(shallowest)} lists of {n} modules "
                                    f"({', '.join(shallowest)}); which one is the decoder stack is ambiguous")
    return shallowest[0]


def _decoder_path(model: nn.Module) -> str | None:
    """Where HF's ``get_decoder()`` says the language model is, when the model says."""
    try:
        decoder = model.get_decoder()
    except (AttributeError, NotImplementedError, ValueError):
        return None
    return next((name for name, m in model.named_modules() if m is decoder and name), None)
