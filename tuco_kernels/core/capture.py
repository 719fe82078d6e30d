"""Record x_0 and every decoder block's exact call arguments from a model's own HF forward.

Each block's ``forward`` is temporarily replaced (on the instance, so the module and its attributes
stay as they are) by a recorder that stores its arguments and returns its input unchanged (in the
block's own return form, found by the chain probe); after the last block the forward is stopped, so neither the blocks nor the head do any work. What HF builds
for the blocks -- causal / sliding-window / padding masks, rotary (cos, sin) per layer type, position
ids -- is thereby taken from HF itself for every family instead of being re-implemented here.

Positional arguments are bound to their parameter names, so a block can later be called as
``block(x, **kwargs)`` and a caller can swap one argument (the KV cache) by name.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import torch
from torch import nn


NO_FORWARD = object()   # "no instance-level forward" (see saved_forward)


def restore_forward(block: nn.Module, previous) -> None:
    """Put back what ``block.forward`` was on the instance before we wrapped it (nothing, or another tool's
    wrapper: accelerate's hooks, nnsight, a user's own patch), so that wrapping never deletes theirs."""
    if previous is NO_FORWARD:
        vars(block).pop("forward", None)
    else:
        block.forward = previous


def saved_forward(block: nn.Module):
    """The instance-level ``forward`` of ``block`` (another tool's wrapper), or a marker that there is none."""
    return vars(block).get("forward", NO_FORWARD)


class _StopForward(Exception):
    """Raised by the last recorder to end the HF forward once every block's arguments are known."""


def bind_block_call(block: nn.Module, args: tuple, kwargs: dict) -> tuple[str, torch.Tensor, dict]:
    """Bind a block call's ``(hidden_states, *args), **kwargs`` to names.

    Returns the hidden-states parameter name, the hidden states and the remaining arguments as a
    flat keyword dict (``**kwargs`` of the signature merged in).
    """
    sig = inspect.signature(type(block).forward)
    bound = sig.bind(block, *args, **kwargs)
    named: dict = {}
    for name, value in bound.arguments.items():
        kind = sig.parameters[name].kind
        if name == "self":
            continue
        if kind is inspect.Parameter.VAR_KEYWORD:
            named.update(value)
        elif kind is inspect.Parameter.VAR_POSITIONAL:
            if value:
                raise TypeError(f"{type(block).__name__} received extra positional arguments; cannot record them")
        else:
            named[name] = value
    hs_name = next(n for n in sig.parameters if n != "self")
    return hs_name, named.pop(hs_name), named


@dataclass
class Capture:
    """x_0 [B, T, d] and, per block l, the keyword arguments HF passed to it (hidden states excluded)."""

    x0: torch.Tensor
    block_kwargs: list[dict]


def last_token_index(attention_mask: torch.Tensor) -> torch.Tensor:
    """Index of each row's last real token, [B] int64 (works for left and right padding)."""
    T = attention_mask.shape[1]
    return (T - 1 - attention_mask.flip(-1).long().argmax(-1)).long()


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions 0..n-1 over each row's real tokens (left padding gets position 0), [B, T] int64.

    Passed explicitly where the model takes them, so that a prompt's positions never depend on its batch's
    padding (scoring pads on the right, where they equal HF's default ``arange(T)``; a caller's left-padded
    batch would otherwise shift its prompts).
    """
    return (attention_mask.long().cumsum(-1) - 1).clamp_(min=0)


def forward_kwargs(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> dict:
    """The arguments of a plain, uncached forward; positions from the mask for a left-padded batch, where the model
    takes them."""
    kwargs = {"input_ids": input_ids, "attention_mask": attention_mask, "use_cache": False}
    if not is_right_padded(attention_mask) and "position_ids" in inspect.signature(model.forward).parameters:
        kwargs["position_ids"] = position_ids_from_mask(attention_mask)
    return kwargs


def is_right_padded(attention_mask: torch.Tensor) -> bool:
    """Every row's real tokens come first (scoring's batches): HF's own positions are then the right ones, and the
    model is called exactly as ``model(input_ids, attention_mask)``."""
    return bool((attention_mask[:, 1:] <= attention_mask[:, :-1]).all())


@torch.no_grad()
def capture(model: nn.Module, family, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> Capture:
    """Run ``model``'s own forward through its blocks without running them and record every block's call."""
    layers = family.layers(model)
    records: list = [None] * len(layers)
    last = len(layers) - 1

    def make_recorder(i: int, block: nn.Module):
        def recorder(*args, **kwargs):
            _, hidden, named = bind_block_call(block, args, kwargs)
            records[i] = (hidden, named)
            if i == last:
                raise _StopForward
            return family.block_return(hidden)
        return recorder

    saved = [saved_forward(block) for block in layers]   # other tools' instance-level wrappers, put back after
    for i, block in enumerate(layers):
        block.forward = make_recorder(i, block)
    try:
        model(**forward_kwargs(model, input_ids, attention_mask))
    except _StopForward:
        pass
    finally:
        for block, previous in zip(layers, saved):
            restore_forward(block, previous)
    if any(r is None for r in records):
        missing = [i for i, r in enumerate(records) if r is None]
        raise RuntimeError(f"the model's forward did not call decoder blocks {missing}; cannot decompose it")
    return Capture(x0=records[0][0], block_kwargs=[r[1] for r in records])
