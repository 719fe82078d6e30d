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
from contextlib import contextmanager
from pathlib import Path

import torch

from ..errors import ModelError
from .hf import check_adapter_files, first_line, load_peft
from .sources import read_adapter_config

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


def stored_base_tensors(adapter_dir: Path) -> dict[str, torch.Tensor]:
    """The base model's parameters the adapter stores whole, by the base model's parameter names: trained biases
    (``bias="all"``/``"lora_only"``), the embedding PEFT saves with embedding LoRA. PEFT loads them into the base
    modules themselves."""
    from safetensors.torch import load_file

    file = adapter_dir / "adapter_model.safetensors"
    if not file.is_file():   # adapter_model.bin, allowed by allow_pickle (checked before)
        file = adapter_dir / "adapter_model.bin"
    try:
        tensors = (load_file(file) if file.suffix == ".safetensors"
                   else torch.load(file, map_location="cpu", weights_only=True))
    except Exception as exc:  # safetensors, pickle and OS errors alike: the file does not read
        raise ModelError(f"{file}: cannot read the adapter weights: {first_line(exc)}") from None
    own = ("lora_", "modules_to_save", "trainable_tokens", "token_adapter")
    saved = read_adapter_config(adapter_dir).get("modules_to_save") or []   # PEFT loads these into its own copies
    out = {}
    for key, t in tensors.items():
        name = key.removeprefix("base_model.model.").replace(".base_layer.", ".")
        module = name.rpartition(".")[0]
        if not any(part in key for part in own) and not any(module == m or module.endswith("." + m) for m in saved):
            out[name] = t
    return out


def differing(model: torch.nn.Module, stored: dict[str, torch.Tensor]) -> list[str]:
    """The stored tensors whose values are not the base's own (at the base's dtype): those need a private copy."""
    params = dict(model.named_parameters())
    return [name for name, t in stored.items()
            if name in params and not torch.equal(t.to(params[name].dtype), params[name].detach().cpu())]


def give_own_tensors(model: torch.nn.Module, names: list[str]) -> None:
    """In a :func:`share_structure` copy: each named parameter a private copy in a private copy of its module (the
    module's other tensors still shared), so that what PEFT loads into it leaves the pre-trained model as it was."""
    for name in names:
        module_path, _, param = name.rpartition(".")
        parent_path, _, child = module_path.rpartition(".")
        try:
            parent = model.get_submodule(parent_path)
            leaf = parent.get_submodule(child)
        except AttributeError:
            continue   # not a parameter of this model: PEFT names it when it loads
        if param not in leaf._parameters or leaf._parameters[param] is None:
            continue
        own = copy.copy(leaf)
        own._parameters = dict(leaf._parameters)
        old = leaf._parameters[param]
        own._parameters[param] = torch.nn.Parameter(old.detach().clone(), requires_grad=False)
        parent._modules[child] = own


def shared_finetuned(pretrained: torch.nn.Module, adapter_dir: Path, allow_pickle: bool) -> torch.nn.Module:
    """The fine-tuned model: PEFT's unmerged LoRA model on ``pretrained``'s own weights (see the module docstring).

    Base tensors the adapter stores whole with other values (trained biases) get a private copy on the fine-tuned
    side; that PEFT then changes no tensor of the pre-trained model is checked (each tensor's version counter, and
    the values of those it wrote its own equal values into). Returns the HF
    model inside the PeftModel (PeftModel.forward calls it with the same arguments)."""
    check_adapter_files(adapter_dir, allow_pickle)
    structure = share_structure(pretrained)
    stored = stored_base_tensors(adapter_dir)
    own = differing(pretrained, stored)
    give_own_tensors(structure, own)
    same = set(stored) - set(own)   # PEFT writes the values these already have: harmless
    versions = {name: p._version for name, p in pretrained.named_parameters()}
    peft_model = load_peft(structure, adapter_dir, allow_pickle)
    written = [name for name, p in pretrained.named_parameters() if p._version != versions[name] and name not in same]
    if written:
        raise ModelError(f"{adapter_dir}: loading the adapter wrote into the pre-trained weights ({written[0]}), "
                         f"which the shared pair must keep as they are; use lora='merged'")
    model = peft_model.get_base_model()
    model.eval()
    model.requires_grad_(False)
    return model


def shared_parameters(pretrained: torch.nn.Module, finetuned: torch.nn.Module) -> int:
    """How many of the fine-tuned side's parameters are the pre-trained side's own tensors (same storage)."""
    own = {p.data_ptr() for p in pretrained.parameters()}
    return sum(p.data_ptr() in own for p in finetuned.parameters())


#: names of the tensors an adapter brings (PEFT's own modules), as opposed to the base model's
ADAPTER_TENSORS = ("lora_", "modules_to_save", "trainable_tokens", "token_adapter")


@contextmanager
def _weights_in_place(model: torch.nn.Module, device):
    """Each empty (meta) parameter of ``model`` stands in as a zero-size tensor of its shape on ``device`` (one
    element, stride 0) while PEFT loads: PEFT then places and casts its adapter as it would for a base on ``device``
    and loads its tensors; afterwards every such parameter is empty again, in every module that holds it."""
    stand_ins = {}
    for module in model.modules():
        for key, p in module._parameters.items():
            if p is not None and p.is_meta:
                stand_in = torch.nn.Parameter(torch.zeros((), device=device, dtype=p.dtype).expand(p.shape),
                                              requires_grad=False)
                stand_ins[id(stand_in)] = p
                module._parameters[key] = stand_in
    holders = [model]
    try:
        yield holders
    finally:
        for root in holders:
            for module in root.modules():
                for key, p in module._parameters.items():
                    if p is not None and id(p) in stand_ins:
                        module._parameters[key] = stand_ins[id(p)]


def streamed_finetuned(frame: torch.nn.Module, adapter_dir: Path, allow_pickle: bool, device) -> tuple:
    """(PEFT's unmerged model on ``frame``, None), or (None, why not): ``frame`` has its embedding, norm and head
    on ``device`` and empty blocks whose weights a streamer passes in per layer; the adapter's tensors are PEFT's,
    on ``device``. Adapters that store base tensors of other values cannot be placed on an empty frame."""
    check_adapter_files(adapter_dir, allow_pickle)
    stored = stored_base_tensors(adapter_dir)
    params = dict(frame.named_parameters())
    inside = [n for n in stored if n in params and params[n].is_meta]
    if inside or differing(frame, {n: t for n, t in stored.items() if n not in inside}):
        return None, (f"the adapter stores base tensors with values of its own ({(inside or sorted(stored))[0]}), "
                      f"which a streamed shared pair does not hold")
    with _weights_in_place(frame, torch.device(device)) as holders:
        structure = share_structure(frame)
        holders.append(structure)
        peft_model = load_peft(structure, adapter_dir, allow_pickle)
    model = peft_model.get_base_model()
    empty = [n for n, p in model.named_parameters() if p.is_meta and any(m in n for m in ADAPTER_TENSORS)]
    if empty:
        return None, f"PEFT left {empty[0]} empty on a frame whose blocks stream"
    model.eval()
    model.requires_grad_(False)
    return model, None
