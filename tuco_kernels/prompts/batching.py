"""Token-budget batching: length-sorted, left-padded, last real token found from the attention mask."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import OptionError


@dataclass
class Batch:
    indices: list[int]          # positions of these prompts in the caller's list
    input_ids: torch.Tensor     # [B, T] int64, left-padded
    attention_mask: torch.Tensor  # [B, T] int64, 0 on padding


def make_batches(token_lists: list[list[int]], batch_tokens: int, pad_id: int = 0) -> list[Batch]:
    """Group prompts, longest first, so that rows × padded length ≤ batch_tokens (a longer prompt goes alone)."""
    if batch_tokens < 1:
        raise OptionError(f"batch_tokens must be a positive number of tokens, got {batch_tokens}")
    order = sorted(range(len(token_lists)), key=lambda i: (-len(token_lists[i]), i))
    groups: list[list[int]] = []
    for i in order:
        if groups and (len(groups[-1]) + 1) * len(token_lists[groups[-1][0]]) <= batch_tokens:
            groups[-1].append(i)
        else:
            groups.append([i])
    batches = []
    for group in groups:
        T = len(token_lists[group[0]])
        ids = torch.full((len(group), T), pad_id, dtype=torch.long)
        mask = torch.zeros((len(group), T), dtype=torch.long)
        for row, i in enumerate(group):
            n = len(token_lists[i])
            ids[row, T - n:] = torch.tensor(token_lists[i], dtype=torch.long)
            mask[row, T - n:] = 1
        batches.append(Batch(group, ids, mask))
    return batches


def split_batch(batch: Batch) -> list[Batch]:
    """Two batches of half the rows each (one when there is one row), each trimmed to its own longest prompt."""
    if len(batch.indices) < 2:
        return [batch]
    half = len(batch.indices) // 2
    out = []
    for rows in (slice(0, half), slice(half, None)):
        mask = batch.attention_mask[rows]
        keep = int(mask.sum(-1).max())
        out.append(Batch(batch.indices[rows], batch.input_ids[rows, -keep:], mask[:, -keep:]))
    return out
