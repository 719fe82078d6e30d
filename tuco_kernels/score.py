"""``score``: TuCo for a list of prompts, batched by a token budget, results in input order."""

from __future__ import annotations

import numpy as np
import torch

from .batching import make_batches
from .data import normalize_prompts, tokenize
from .engine import decompose_batch, layer_alphas, own_final_stream
from .metrics import contribution_ratio, output_co as output_co_metric, tuco_from_sums
from .result import TuCoResult

DEFAULT_BATCH_TOKENS = 4096


def pad_id_of(tokenizer) -> int:
    pad = getattr(tokenizer, "pad_token_id", None) if tokenizer is not None else None
    return 0 if pad is None else pad  # padded positions are masked; the id only has to be valid


def prepare(pair, prompts, *, chat=False, system_prompt=None):
    """Normalised prompts and their token ids."""
    records = normalize_prompts(prompts)
    ids = tokenize(records, pair.tokenizer, chat=chat, system_prompt=system_prompt, vocab_size=pair.vocab_size)
    return records, ids


def score(pair, prompts, *, alpha=1.0, chat: bool = False, system_prompt: str | None = None,
          batch_tokens: int = DEFAULT_BATCH_TOKENS, layers: bool = False, token_map: bool = False,
          output_co: bool = False, progress: bool = False, backend: str | None = None) -> TuCoResult:
    """TuCo of each prompt's last token under the pair's decomposition (paper Def. 4.3).

    Args:
        pair: a :class:`~tuco_kernels.pair.ModelPair` from :func:`load_pair`.
        prompts: a string, a chat, or a list of strings, chats (lists of messages) or mappings with
            ``prompt`` / ``messages`` / ``input_ids`` (and optional ``id``).
        alpha: FTC scaling (a scalar or one value per layer); 1.0 is the fine-tuned model itself.
        chat: render text prompts as the user turn of the fine-tuned tokenizer's chat template.
        system_prompt: prepended as a system message to chats.
        batch_tokens: rows × padded length per batch.
        layers: also return per-layer ``ptc_l1``, ``ftc_l1`` and the cumulative ``beta``.
        token_map: also return TuCo at every token position.
        output_co: also compute the OutputCo baseline (one extra pre-trained forward).
    """
    records, token_lists = prepare(pair, prompts, chat=chat, system_prompt=system_prompt)
    alphas = layer_alphas(alpha, pair.n_layers)
    n, L = len(records), pair.n_layers
    tuco = np.full(n, np.nan)
    n_tokens = np.array([len(t) for t in token_lists])
    norms = np.zeros((n, L, 4)) if layers else None
    token_tuco = [None] * n if token_map else None
    oco = np.full(n, np.nan) if output_co else None

    batches = make_batches(token_lists, batch_tokens, pad_id_of(pair.tokenizer))
    bar = _progress(progress, n)
    for batch in batches:
        dec = decompose_batch(pair, batch.input_ids, batch.attention_mask, alphas, layers=layers,
                              token_map=token_map, keep_final=output_co, backend=backend)
        ptc, ftc = dec.sums_at_last()
        t = tuco_from_sums(ptc, ftc).cpu().numpy()
        rows = batch.indices
        tuco[rows] = t
        if layers:
            norms[rows] = dec.layer_norms.double().cpu().numpy()
        if token_map:
            per_pos = tuco_from_sums(dec.acc_ptc, dec.acc_ftc)
            for r, i in enumerate(rows):
                token_tuco[i] = per_pos[r, -n_tokens[i]:].cpu().numpy()
        if output_co:
            x_pt = own_final_stream(pair.pretrained, pair.family, batch.input_ids, batch.attention_mask)
            r_idx = torch.arange(len(rows), device=x_pt.device)
            oco[rows] = output_co_metric(dec.x_final[r_idx, dec.last_idx], x_pt[r_idx, dec.last_idx]).cpu().numpy()
        if bar is not None:
            bar.update(len(rows))
    if bar is not None:
        bar.close()

    result = TuCoResult(ids=[r.id for r in records], tuco=tuco, n_tokens=n_tokens, alpha=alphas,
                        token_tuco=token_tuco, output_co=oco)
    if layers:
        result.ptc_l1, result.ftc_l1 = norms[..., 0], norms[..., 1]
        result.beta = contribution_ratio(norms[..., 3], norms[..., 2])
    return result


def _progress(enabled: bool, total: int):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="prompt", desc="scoring", dynamic_ncols=True)
