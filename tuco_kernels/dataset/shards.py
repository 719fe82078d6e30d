"""Shards: consecutive whole micro-batches of :func:`~tuco_kernels.score`, at most ``shard_tokens`` padded tokens
each and as even as whole batches allow, so that every prompt is scored in the batch ``tk.score`` would have put it
in."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..errors import positive_int


@dataclass
class Shard:
    """Whole micro-batches (prompt indices, longest first) scored and written together."""

    k: int
    batches: list[list[int]]
    prompts: int
    tokens: int     # real tokens
    padded: int     # rows × padded length, summed over the batches

    def summary(self) -> dict:
        return {"k": self.k, "batches": len(self.batches), "prompts": self.prompts, "tokens": self.tokens,
                "padded_tokens": self.padded}


def pack_shards(groups: list[list[int]], lengths: np.ndarray, shard_tokens: int) -> list[Shard]:
    """Consecutive whole batches, ≤ ``shard_tokens`` padded tokens a shard (a bigger batch goes alone), as even
    as whole batches allow: near-equal parts of the total rather than full shards and a small last one, so that
    ranks finish together."""
    shard_tokens = positive_int("shard_tokens", shard_tokens)
    sizes = [len(g) * int(lengths[g[0]]) for g in groups]
    # shards end within half a batch of their aim, and never above shard_tokens: aim that much below it
    n = max(1, math.ceil(sum(sizes) / max(1.0, shard_tokens - max(sizes, default=0) / 2)))
    left, target = sum(sizes), sum(sizes) / n     # each new shard aims at an equal part of what is left
    shards: list[Shard] = []
    for g, padded in zip(groups, sizes):
        real = int(lengths[g].sum())
        if shards and shards[-1].padded + padded <= shard_tokens and shards[-1].padded + padded / 2 <= target:
            s = shards[-1]
            s.batches.append(g)
            s.prompts += len(g)
            s.tokens += real
            s.padded += padded
        else:
            if shards:
                left -= shards[-1].padded
                target = left / max(1, n - len(shards))
            shards.append(Shard(len(shards), [g], len(g), real, padded))
    return shards
