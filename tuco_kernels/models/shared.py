"""A LoRA fine-tuned side on the pre-trained model's own weights (``load_pair(..., lora="shared")``).

The fine-tuned model is PEFT's own unmerged model (``PeftModel.from_pretrained``) built on a *structural* copy of
the pre-trained model: every module that has children is a new object, every leaf (Linear, Embedding, norm,
rotary) is the pre-trained model's own. PEFT then replaces leaves of the copy by its LoRA layers, whose
``base_layer`` is the pre-trained leaf. So one copy of the base weights serves both sides, the pre-trained model
is untouched (f_PT is the base block as loaded), and f_FT is PEFT's forward exactly as PEFT runs it (docs/math.md §6).

:func:`shared_refusal` names what cannot be shared: such adapters are merged with a line saying why, or refused.
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch

from ..errors import ModelError
from .hf import load_peft

#: LoRA options under which the wrapped modules are not PEFT's whole forward: refused by name in shared mode
REFUSED = {
    "alora_invocation_tokens": "activated LoRA (alora_invocation_tokens) needs PeftModel's per-call offsets from "
                               "the input ids, which a per-layer split does not pass",
    "layer_replication": "layer_replication gives the fine-tuned model more layers than the pre-trained one",
}
#: options under which sharing is not exact: merged instead (with this reason in the pair's ``lora`` note)
MERGED_INSTEAD = {
    "target_parameters": "target_parameters parametrizes the base module in place, so the pre-trained side would "
                         "change too",
}


def shared_refusal(cfg: dict, where) -> str | None:
    """None when the adapter config can be shared exactly; else why it is merged instead. Raises
    :class:`ModelError` (the option named) for what can be neither shared nor merged faithfully."""
    if cfg.get("peft_type") != "LORA":
        return f"peft_type {cfg.get('peft_type')}: sharing the base is for LoRA adapters"
    for key, why in REFUSED.items():
        if cfg.get(key):
            raise ModelError(f"{where}: cannot score this adapter: {why} ({key}={cfg[key]!r})")
    for key, why in MERGED_INSTEAD.items():
        if cfg.get(key):
            return why
    return None


def share_structure(module: torch.nn.Module) -> torch.nn.Module:
    """A copy of ``module`` whose leaf modules (and so every parameter and buffer) are the original's own objects;
    the modules above them are new, so that replacing a child in the copy leaves the original as it was."""
    if not module._modules:
        return module
    clone = copy.copy(module)
    for key, value in vars(module).items():   # containers of state and hooks: the copy's own, same contents
        if isinstance(value, (dict, set, list)):
            setattr(clone, key, copy.copy(value))
    clone._modules = {name: (share_structure(child) if child is not None else None)
                      for name, child in module._modules.items()}
    return clone


def shared_finetuned(pretrained: torch.nn.Module, adapter_dir: Path, allow_pickle: bool) -> torch.nn.Module:
    """The fine-tuned model: PEFT's unmerged LoRA model on ``pretrained``'s own weights (see the module docstring).

    Returns the HF model inside the PeftModel (PeftModel.forward calls it with the same arguments)."""
    peft_model = load_peft(share_structure(pretrained), adapter_dir, allow_pickle)
    model = peft_model.get_base_model()
    model.eval()
    model.requires_grad_(False)
    return model


def shared_parameters(pretrained: torch.nn.Module, finetuned: torch.nn.Module) -> int:
    """How many of the fine-tuned side's parameters are the pre-trained side's own tensors (same storage)."""
    own = {p.data_ptr() for p in pretrained.parameters()}
    return sum(p.data_ptr() in own for p in finetuned.parameters())
