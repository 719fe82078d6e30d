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
#: (layer index, one (run the pre-trained block, run the fine-tuned block) per fine-tuned side, see ``sides``)
SideRunners = tuple[int, list[tuple[Callable[..., torch.Tensor], Callable[..., torch.Tensor]]]]


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

    @property
    def sides(self) -> list[ModelPair]:
        """The (pre-trained, fine-tuned) pairs one sweep scores: this pair; a :class:`PairSet`'s pairs."""
        return [self]

    #: what each side is called in the results' ``finetuned`` column (a :class:`PairSet`'s); None for one pair
    side_names: list[str] | None = None

    def one_pair(self, what: str) -> ModelPair:
        """This pair, for what runs one fine-tune (``what``: steering, generation, lm-eval); a pair set refuses."""
        return self

    def side_layers(self, profile=None) -> Iterator[SideRunners]:
        """Every layer in order with each side's two runners (:meth:`layers` for a pair with one side)."""
        for l, run_pt, run_ft in self.layers(profile):
            yield l, [(run_pt, run_ft)]

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
    #: the pre-trained model's own chain probe: whether its scores do not depend on the batch (load_pair sets it;
    #: a pair set's later sides reuse it instead of probing the same base again)
    pt_pads_invariant: bool | None = None

    def layers(self, profile=None) -> Iterator[LayerRunners]:
        blocks = zip(self.family.layers(self.pretrained), self.family.layers(self.finetuned))
        for l, [(run_pt, run_ft)] in with_reuse(self.reuse, ((l, pt, pt, [ft]) for l, (pt, ft) in enumerate(blocks))):
            yield l, run_pt, run_ft

    def device_bytes(self, *, own_pt: bool = False) -> int:
        """Each tensor once: a shared LoRA pair's fine-tuned side holds the pre-trained weights plus its adapter."""
        unique = {p.data_ptr(): p for m in (self.pretrained, self.finetuned) for p in m.parameters()}
        return sum(p.numel() * p.element_size() for p in unique.values())


def with_reuse(reuse: ProjectionReuse | None, layers) -> Iterator[SideRunners]:
    """``layers``: (l, the pre-trained block module, run it, [run each side's fine-tuned block]) per layer; yields
    (l, [(run_pt, run_ft) per side]), the runners answering through ``reuse`` (core/reuse.py) when there is one."""
    for l, pt_block, run_pt, run_fts in layers:
        if reuse is None:
            yield l, [(run_pt, run_ft) for run_ft in run_fts]
            continue
        with reuse.around(pt_block, run_pt, run_fts) as (pt, fts):
            yield l, [(pt, ft) for ft in fts]
