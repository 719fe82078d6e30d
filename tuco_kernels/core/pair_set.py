"""One pre-trained model against several fine-tuned ones, in one sweep per layer (``load_pair(base, [a, b, ...])``).

A :class:`PairSet` holds one :class:`~tuco_kernels.core.pair.ModelPair` per fine-tune, all on the same pre-trained
model object (one copy of the base: LoRA adapters shared on it, models/shared.py, take nothing more than their
adapter). :meth:`PairSet.side_layers` brings each layer once (streamed: one copy of the base layer per layer visit)
with every side's two runners, and the engine runs each side's own stream through them (core/engine.py): a side's
numbers are those of its pair alone, bit for bit. What cannot be shared is each side's stream: the pre-trained
block runs on every side's own x_l (docs/math.md §6).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from torch import nn

from ..errors import OptionError, TucoError
from .pair import ModelPair, SideRunners, with_reuse
from .reuse import ProjectionReuse


class PairSet(ModelPair):
    """Several pairs on one pre-trained model (see the module docstring); ``side_names[k]`` names ``sides[k]``.

    ``layer_source(profile)`` yields (l, the pre-trained block module, run it, [run side k's fine-tuned block]);
    ``reuse``: one :class:`~tuco_kernels.core.reuse.ProjectionReuse` for every side (LoRA adapters shared on the
    base call the pre-trained block's own leaf modules)."""

    def __init__(self, pairs: list[ModelPair], names: list[str], *,
                 layer_source: Callable[..., Iterator], reuse: ProjectionReuse | None = None):
        if len(pairs) != len(names) or not pairs:
            raise ValueError("one name per pair, at least one pair")
        first = pairs[0]
        super().__init__(first.pretrained, first.finetuned, first.tokenizer, first.family)
        self.pairs, self.side_names, self.offload = list(pairs), list(names), first.offload
        self.reuse = reuse
        self._layer_source = layer_source

    @property
    def sides(self) -> list[ModelPair]:
        return self.pairs

    @property
    def streamer(self):
        """A streamed set's one :class:`~tuco_kernels.offload.streamer.LayerStreamer` (None when resident)."""
        return getattr(self.pairs[0], "streamer", None)

    def side_layers(self, profile=None) -> Iterator[SideRunners]:
        yield from with_reuse(self.reuse, self._layer_source(profile))

    def one_pair(self, what: str) -> ModelPair:
        raise OptionError(f"{what} runs one fine-tune, but this pair set holds {len(self.pairs)} "
                          f"({', '.join(self.side_names)}); pass one of them: pair.sides[k]")

    def layers(self, profile=None):
        raise TucoError(f"this pair set holds {len(self.pairs)} fine-tunes ({', '.join(self.side_names)}); score it "
                        f"with tk.score, or use one of them: pair.sides[k]")

    def pretrained_frame(self) -> nn.Module:
        return self.pairs[0].pretrained_frame()

    def device_bytes(self, *, own_pt: bool = False) -> int:
        """Each tensor once (the sides share the base), plus what streamed sides hold beyond their tensors."""
        models = [m for p in self.pairs for m in (p.pretrained, p.finetuned)]
        unique = {t.data_ptr(): t for m in models for t in m.parameters() if not t.is_meta}
        streamer = self.streamer
        extra = streamer.device_bytes if streamer is not None else 0
        if own_pt and streamer is not None:
            extra += sum(t.numel() * t.element_size() for t in self.pairs[0].pretrained.parameters() if not t.is_meta)
        return extra + sum(t.numel() * t.element_size() for t in unique.values())

    def close(self) -> None:
        for p in self.pairs:
            p.close()

    def __repr__(self) -> str:
        offload = f", offload={self.offload}" if self.offload != "none" else ""
        sides = ", ".join(f"{name}" + (f" ({p.lora['mode']} LoRA)" if p.lora else "")
                          for name, p in zip(self.side_names, self.pairs))
        return (f"PairSet({self.family.model_type}, {self.n_layers} layers, d={self.finetuned.config.hidden_size}, "
                f"{self.dtype}, {self.device}{offload}; {len(self.pairs)} fine-tunes: {sides})")
