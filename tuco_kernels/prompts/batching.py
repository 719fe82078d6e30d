"""Token-budget batching: length-sorted, right-padded, last real token found from the attention mask.

Right padding keeps every prompt exactly where it would be alone: its tokens sit at positions 0..n-1 and a
causal model's real tokens never see the padding after them, whether or not the model's forward takes
``position_ids`` (learned absolute positions, ALiBi, state-space layers). Left padding would shift those models'
prompts, so a prompt's TuCo would depend on its batch mates. (Generation is the other way round: new tokens go
after each row's last one, so generate.py asks for ``side="left"``.) A model whose outputs depend on the other
rows of its batch even so (the chain probe's ``pads_invariant``) is given one prompt per batch (``alone``).

:func:`batch_groups` decides which prompts share a micro-batch from their lengths alone, and :func:`pad_batch`
builds one batch's tensors; :func:`make_batches` is both. Drivers that must not hold every padded batch at once
(sharded datasets) group first and pad a shard's batches when it runs, and get the same micro-batches.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..errors import positive_int


@dataclass
class Batch:
    indices: list[int]          # positions of these prompts in the caller's list
    input_ids: torch.Tensor     # [B, T] int64, right-padded
    attention_mask: torch.Tensor  # [B, T] int64, 0 on padding


def batch_groups(lengths: Sequence[int], batch_tokens: int, *, alone: bool = False) -> list[list[int]]:
    """Prompt indices per micro-batch, longest first (ties in input order), rows × padded length ≤ batch_tokens
    (a longer prompt goes alone; with ``alone`` every prompt does)."""
    batch_tokens = positive_int("batch_tokens", batch_tokens)
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    groups: list[list[int]] = []
    for i in order:
        if groups and not alone and (len(groups[-1]) + 1) * lengths[groups[-1][0]] <= batch_tokens:
            groups[-1].append(i)
        else:
            groups.append([i])
    return groups


def pad_batch(token_lists, group: list[int], pad_id: int = 0, side: str = "right") -> Batch:
    """The padded batch of the prompts ``group`` (indices into ``token_lists``; the first is the longest)."""
    T = len(token_lists[group[0]])
    ids = torch.full((len(group), T), pad_id, dtype=torch.long)
    mask = torch.zeros((len(group), T), dtype=torch.long)
    for row, i in enumerate(group):
        n = len(token_lists[i])
        cols = slice(0, n) if side == "right" else slice(T - n, T)
        ids[row, cols] = torch.as_tensor(token_lists[i], dtype=torch.long)
        mask[row, cols] = 1
    return Batch(list(group), ids, mask)


def make_batches(token_lists: list[list[int]], batch_tokens: int, pad_id: int = 0, *, side: str = "right",
                 alone: bool = False) -> list[Batch]:
    """Group prompts, longest first, so that rows × padded length ≤ batch_tokens (a longer prompt goes alone),
    padded on ``side``."""
    groups = batch_groups([len(t) for t in token_lists], batch_tokens, alone=alone)
    return [pad_batch(token_lists, g, pad_id, side) for g in groups]


def split_batch(batch: Batch) -> list[Batch]:
    """Two batches of half the rows each (one when there is one row), each trimmed to its own longest prompt."""
    if len(batch.indices) < 2:
        return [batch]
    half = len(batch.indices) // 2
    out = []
    for rows in (slice(0, half), slice(half, None)):
        mask = batch.attention_mask[rows]
        keep = int(mask.sum(-1).max())
        cols = slice(0, keep) if bool(batch.attention_mask[:, 0].all()) else slice(-keep, None)  # right / left padded
        out.append(Batch(batch.indices[rows], batch.input_ids[rows, cols], mask[:, cols]))
    return out
