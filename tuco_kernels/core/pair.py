"""The pair the engine decomposes: one interface, two kinds.

:class:`ModelPair` is what every part of the package reads from a pair: the fine-tuned model (whose own forward
is captured and whose head turns x_L into logits), the pre-trained one, the tokenizer, the family, where the
weights live (``offload``), and :meth:`ModelPair.layers`, which yields each layer's two blocks ready to run.
The engine never asks which kind it has.

* :class:`ResidentPair`: both models whole on the device; ``layers`` yields their blocks.
* ``StreamedPair`` (:mod:`tuco_kernels.offload.streamed_pair`): the blocks' weights stay in host memory or on disk
  and a layer streamer brings one layer of both models at a time; its models are frames with empty blocks.

Both are context managers (``with tk.load_pair(...) as pair:``) whose ``close()`` releases what they hold.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from torch import nn

from .families import Family
from .reuse import ProjectionReuse

#: (layer index, run the pre-trained block, run the fine-tuned block): ``run(x, **block_kwargs) -> out``
LayerRunners = tuple[int, Callable[..., torch.Tensor], Callable[..., torch.Tensor]]


class ModelPair:
    """A pre-trained / fine-tuned pair of one family, same dtype and device (see the module docstring)."""

    offload = "none"
    #: what :func:`~tuco_kernels.load_pair` was given, ``{"pretrained", "finetuned", "gguf"}`` (paths or models),
    #: so that a run can name the models it scored (a dataset's fingerprint); None for a pair built otherwise
    sources: dict | None = None
    #: with a PEFT adapter as the fine-tuned side: ``{"mode": "shared"|"merged", "reason": ...}`` (load_pair's
    #: ``lora``; the reason says why an adapter asked to be shared was merged); None for two whole models
    lora: dict | None = None

    def __init__(self, pretrained: nn.Module, finetuned: nn.Module, tokenizer, family: Family):
        self.pretrained, self.finetuned, self.tokenizer, self.family = pretrained, finetuned, tokenizer, family

    # ---------------------------------------------------------------------------- what the engine uses

    def layers(self, profile=None) -> Iterator[LayerRunners]:
        """Every layer in order, both blocks ready to run on the device (``profile``: a StreamProfile or None)."""
        raise NotImplementedError

    def pretrained_frame(self) -> nn.Module:
        """The pre-trained model with at least its embedding, final norm and head in memory (for OutputCo)."""
        return self.pretrained

    def device_bytes(self, *, own_pt: bool = False) -> int:
        """Device memory the pair holds before any batch runs (weights; with ``own_pt`` the pre-trained head too)."""
        raise NotImplementedError

    def close(self) -> None:
        """Release what the pair holds beyond its modules (a streamer's thread, page-locked memory, files)."""

    # ---------------------------------------------------------------------------------- shared facts

    @property
    def resident(self) -> bool:
        """Both models whole in memory (so HF's own calls such as ``generate`` can run them)."""
        return self.offload == "none"

    @property
    def n_layers(self) -> int:
        return len(self.family.layers(self.finetuned))

    @property
    def device(self) -> torch.device:
        return self.finetuned.get_input_embeddings().weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.finetuned.get_input_embeddings().weight.dtype

    @property
    def vocab_size(self) -> int:
        return self.finetuned.get_input_embeddings().weight.shape[0]

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        offload = f", offload={self.offload}" if self.offload != "none" else ""
        lora = f", lora={self.lora['mode']}" if self.lora else ""
        return (f"ModelPair({self.family.model_type}, {self.n_layers} layers, d={self.finetuned.config.hidden_size}, "
                f"{self.dtype}, {self.device}{offload}{lora})")


class ResidentPair(ModelPair):
    """Both models whole on the device (``load_pair(..., offload="none")``, the default)."""

    #: a shared LoRA pair's :class:`~tuco_kernels.core.reuse.ProjectionReuse` (None: each block computes all)
    reuse: ProjectionReuse | None = None

    def layers(self, profile=None) -> Iterator[LayerRunners]:
        for l, (pt_block, ft_block) in enumerate(zip(self.family.layers(self.pretrained),
                                                     self.family.layers(self.finetuned))):
            if self.reuse is None:
                yield l, pt_block, ft_block
                continue
            with self.reuse.around(pt_block, pt_block, ft_block) as (run_pt, run_ft):
                yield l, run_pt, run_ft

    def device_bytes(self, *, own_pt: bool = False) -> int:
        """Each tensor once: a shared LoRA pair's fine-tuned side holds the pre-trained weights plus its adapter."""
        unique = {p.data_ptr(): p for m in (self.pretrained, self.finetuned) for p in m.parameters()}
        return sum(p.numel() * p.element_size() for p in unique.values())
