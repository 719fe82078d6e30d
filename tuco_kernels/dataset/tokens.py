"""Token ids of a whole prompt set: every prompt checked and tokenized once, in chunks, into one flat array
(:class:`TokenTable`) whose digest is the fingerprint's ``inputs``."""

from __future__ import annotations

import hashlib
import json

import numpy as np

from ..prompts.records import normalize_prompts
from ..prompts.tokenize import fit_context, max_positions, tokenize

TOKENIZE_CHUNK = 8192


class TokenTable:
    """Token ids of every prompt in one flat array (``tokens[i]`` is prompt i's ids), not a list per prompt."""

    def __init__(self, flat: np.ndarray, offsets: np.ndarray):
        self.flat, self.offsets = flat, offsets

    @classmethod
    def from_lists(cls, lists) -> TokenTable:
        lengths = np.fromiter((len(t) for t in lists), dtype=np.int64, count=len(lists))
        offsets = np.zeros(len(lists) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        flat = np.fromiter((t for ids in lists for t in ids), dtype=np.int64, count=int(offsets[-1]))
        return cls(flat, offsets)

    @classmethod
    def concat(cls, tables: list[TokenTable]) -> TokenTable:
        flat = np.concatenate([t.flat for t in tables]) if tables else np.zeros(0, np.int64)
        lengths = np.concatenate([np.diff(t.offsets) for t in tables]) if tables else np.zeros(0, np.int64)
        offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        return cls(flat, offsets)

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i: int) -> np.ndarray:
        return self.flat[self.offsets[i]:self.offsets[i + 1]]

    def digest(self, ids: list) -> str:
        """sha256 of every prompt's id and token ids, in input order."""
        h = hashlib.sha256()
        h.update(json.dumps(ids, default=str).encode())
        h.update(self.lengths.astype("<i8").tobytes())
        h.update(self.flat.astype("<i8").tobytes())
        return h.hexdigest()


def tokenize_all(pair, prompts, *, chat: bool, system_prompt: str | None, truncate: str | None = None):
    """(records, :class:`TokenTable`): every prompt checked and tokenized once, in chunks (lengths checked against
    the model's positions as :func:`tuco_kernels.score` checks them)."""
    records = normalize_prompts(prompts)
    limit = max_positions(pair.finetuned.config)
    parts = []
    for start in range(0, len(records), TOKENIZE_CHUNK):
        chunk = records[start:start + TOKENIZE_CHUNK]
        lists = tokenize(chunk, pair.tokenizer, chat=chat, system_prompt=system_prompt, vocab_size=pair.vocab_size)
        parts.append(TokenTable.from_lists(fit_context(chunk, lists, limit, truncate)))
    return records, TokenTable.concat(parts)
