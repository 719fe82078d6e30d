"""A PEFT LoRA adapter, read whole (it is small) and merged layer by layer exactly as PEFT merges it.

``W_ft = W_pt + scaling · (B @ A)`` (transposed for GPT-2's Conv1D), with PEFT's rank/alpha patterns and rsLoRA
scaling; ``modules_to_save`` and trained biases are full replacements. A streamed LoRA pair therefore moves one
model's weights per layer, not two.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import ModelError
from .checkpoint import Checkpoint


def _pattern_value(patterns: dict, module_name: str, default):
    """PEFT's rank/alpha pattern lookup: a key matches a module name that ends with it at a dot boundary."""
    for key, value in patterns.items():
        if re.match(rf"(.*\.)?({key})$", module_name):
            return value
    return default


@dataclass
class LoraDelta:
    """One adapted weight: W_ft = W_pt + scaling · (B @ A), transposed when ``fan_in_fan_out`` (Conv1D)."""

    lora_a: torch.Tensor   # [r, in] fp32
    lora_b: torch.Tensor   # [out, r] fp32
    scaling: float
    fan_in_fan_out: bool

    def merge(self, weight: torch.Tensor) -> torch.Tensor:
        """The merged weight in ``weight``'s dtype, on its device: what PEFT's ``merge_and_unload`` computes
        with fp32 adapter weights (its default): ``W += delta`` rounds W + delta once to W's dtype."""
        a, b = self.lora_a.to(weight.device), self.lora_b.to(weight.device)
        delta = b @ a
        if self.fan_in_fan_out:
            delta = delta.T
        delta = delta * self.scaling
        if weight.dtype == torch.float32:
            return weight + delta
        return (weight.float() + delta).to(weight.dtype)


class LoraAdapter:
    """A PEFT LoRA adapter directory: per base-model parameter, a :class:`LoraDelta` or a full replacement.

    Replacements are what PEFT stores whole: ``modules_to_save`` (e.g. ``lm_head``) and trained biases.
    Variants whose merge is not ``W + s·B·A`` (DoRA, LoRA biases, embedding or conv LoRA, other PEFT
    methods) are refused with the field named; load such pairs with ``offload="none"``.
    """

    PREFIX = "base_model.model."

    def __init__(self, directory: Path):
        self.directory = Path(directory)
        cfg_path = self.directory / "adapter_config.json"
        try:
            cfg = json.loads(cfg_path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ModelError(f"{cfg_path}: cannot read the adapter config ({exc})") from None
        unsupported = [(k, cfg.get(k)) for k, ok in (("peft_type", "LORA"),) if cfg.get(k) != ok]
        unsupported += [(k, cfg[k]) for k in ("use_dora", "lora_bias") if cfg.get(k)]
        if cfg.get("target_parameters"):
            unsupported.append(("target_parameters", cfg["target_parameters"]))
        if unsupported:
            field, value = unsupported[0]
            raise ModelError(f"{cfg_path}: {field}={value!r} is not supported when streaming weights (only plain "
                            f"LoRA merges as W + scaling·B·A); load this pair with offload='none'")
        file = self.directory / "adapter_model.safetensors"
        if not file.is_file():
            raise ModelError(f"{self.directory}: no adapter_model.safetensors (streaming reads safetensors only)")
        ckpt = Checkpoint(self.directory, file.name)
        self.lora_alpha = float(cfg.get("lora_alpha", 8))
        self.use_rslora = bool(cfg.get("use_rslora", False))
        self.alpha_pattern = cfg.get("alpha_pattern") or {}
        pairs: dict[str, dict[str, torch.Tensor]] = {}
        self.replacements: dict[str, torch.Tensor] = {}
        for key in ckpt.names():
            if not key.startswith(self.PREFIX):
                raise ModelError(f"{file}: unexpected tensor {key!r} (PEFT keys start with {self.PREFIX!r})")
            rest = key[len(self.PREFIX):]
            m = re.fullmatch(r"(.+)\.(lora_A|lora_B)\.weight", rest)
            if m:
                pairs.setdefault(m.group(1), {})[m.group(2)] = ckpt.read(key, torch.float32)
            elif re.search(r"\.lora_(embedding_[AB]|magnitude_vector)\b|\.lora_[AB]\.", rest):
                raise ModelError(f"{file}: {key!r} is an embedding/DoRA/conv LoRA tensor, not supported when "
                                f"streaming weights; load this pair with offload='none'")
            else:
                self.replacements[rest.replace(".base_layer.", ".").replace(".modules_to_save.default", "")] = \
                    ckpt.read(key)
        ckpt.close()
        self.modules: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        for module, ab in pairs.items():
            if set(ab) != {"lora_A", "lora_B"}:
                raise ModelError(f"{file}: module {module!r} has {sorted(ab)} but needs both lora_A and lora_B")
            self.modules[module] = (ab["lora_A"], ab["lora_B"])

    def check_fits(self, shapes: dict, base: str) -> None:
        """Refuse an adapter made for another base model, naming the first tensor whose shape differs from the
        base's (``shapes``: parameter name -> shape; names the base does not list are left to the load)."""
        for module, (a, b) in sorted(self.modules.items()):
            shape = shapes.get(module + ".weight")
            made = (b.shape[0], a.shape[1])
            if shape is not None and tuple(shape) not in (made, made[::-1]):   # Conv1D stores [in, out]
                raise ModelError(f"{self.directory}: the adapter was made for another base model: {module}.weight is "
                                 f"{list(shape)} in the pre-trained model ({base}) but lora_B·lora_A makes it "
                                 f"{list(made)}")
        for name, t in sorted(self.replacements.items()):
            shape = shapes.get(name)
            if shape is not None and tuple(shape) != tuple(t.shape):
                raise ModelError(f"{self.directory}: the adapter was made for another base model: {name} is "
                                 f"{list(shape)} in the pre-trained model ({base}) but {list(t.shape)} in the adapter")

    def delta_for(self, param_name: str, module: torch.nn.Module | None) -> LoraDelta | None:
        """The LoRA delta for base parameter ``param_name`` (``<module>.weight``), if the adapter has one."""
        if not param_name.endswith(".weight") or param_name[: -len(".weight")] not in self.modules:
            return None
        module_name = param_name[: -len(".weight")]
        a, b = self.modules[module_name]
        r = a.shape[0]  # the module's rank (rank_pattern included)
        alpha = float(_pattern_value(self.alpha_pattern, module_name, self.lora_alpha))
        scaling = alpha / math.sqrt(r) if self.use_rslora else alpha / r
        fan_in_fan_out = module is not None and type(module).__name__ == "Conv1D"  # PEFT forces it for Conv1D
        return LoraDelta(a, b, scaling, fan_in_fan_out)

    def adapted_parameters(self) -> set[str]:
        return {m + ".weight" for m in self.modules} | set(self.replacements)
