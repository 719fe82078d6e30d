"""Cost of scoring a batch relative to one plain HF forward pass of the fine-tuned model, in one run.

TuCo needs both models' blocks on every layer, so 2.0× one forward is the floor; the target is ≤ 2.3×.
The baseline forward computes logits for the last position only (logits_to_keep=1), the strictest
comparison: the engine computes no logits at all. Appends a row to bench/results/engine_overhead.csv.

    python bench/engine_overhead.py [--hidden 512 --layers 8 --batch 8 --seq 256 --repeats 5]
"""

from __future__ import annotations

import argparse

import torch
from common import append_rows, provenance, time_call

import tuco_kernels as tk
from tuco_kernels.engine import decompose_batch
from tuco_kernels.tiny import build_model, perturbed_copy, tiny_config


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--hidden", type=int, default=512)
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--vocab", type=int, default=8192)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()

    dtype = getattr(torch, args.dtype)
    cfg = tiny_config("llama", args.vocab, hidden=args.hidden, layers=args.layers)
    cfg.intermediate_size = int(args.hidden * 8 / 3) // 64 * 64
    cfg.num_attention_heads, cfg.num_key_value_heads = args.hidden // 64, args.hidden // 64
    pt = build_model(cfg, dtype=dtype).to(args.device)
    ft = perturbed_copy(pt)
    pair = tk.load_pair(pt, ft)
    ids = torch.randint(3, args.vocab, (args.batch, args.seq), device=args.device)
    mask = torch.ones_like(ids)
    mask[1::2, : args.seq // 4] = 0  # half the rows left-padded, as in real batches

    @torch.no_grad()
    def hf_forward():
        ft(input_ids=ids, attention_mask=mask, use_cache=False, logits_to_keep=1)

    def tuco_score():
        decompose_batch(pair, ids, mask, [1.0] * pair.n_layers)

    # interleave the two measurements to share any drift in machine load
    t_hf, t_tuco = [], []
    for _ in range(3):
        t_hf.append(time_call(hf_forward, args.device, args.repeats, reducer=min))
        t_tuco.append(time_call(tuco_score, args.device, args.repeats, reducer=min))
    t_hf, t_tuco = min(t_hf), min(t_tuco)
    ratio = t_tuco / t_hf
    tokens = int(mask.sum())
    info = provenance(args.device)
    row = dict(date=info["date"], device=info["device"], torch=info["torch"], transformers=info["transformers"],
               backend=tk.ops.resolve_backend(None, args.device), dtype=args.dtype,
               hidden=args.hidden, layers=args.layers, batch=args.batch, seq=args.seq,
               hf_forward_ms=round(t_hf * 1e3, 2), tuco_ms=round(t_tuco * 1e3, 2), ratio=round(ratio, 3),
               tuco_tokens_per_s=round(tokens / t_tuco))
    print(f"device: {row['device']}; torch {row['torch']}, transformers {row['transformers']}, backend {row['backend']}")
    print(f"llama d={args.hidden} L={args.layers}, batch {args.batch}×{args.seq} ({tokens} real tokens), {args.dtype}")
    print(f"HF forward (fine-tuned only): {t_hf * 1e3:8.1f} ms")
    print(f"TuCo score (both models):     {t_tuco * 1e3:8.1f} ms   ({row['tuco_tokens_per_s']} tokens/s)")
    print(f"ratio: {ratio:.2f}×   (floor 2.0, target ≤ 2.3)")
    append_rows("engine_overhead", [row])


if __name__ == "__main__":
    main()
