"""Cost of scoring a batch relative to plain HF forward passes on the same batch, in one run.

TuCo runs both models' blocks on every layer, so the floor is two forwards: one of the fine-tuned model and
one of the pre-trained model. Measured on the same padded batch, in the same process, interleaved:

    hf_ft_ms     one HF forward of the fine-tuned model (last-position logits only: logits_to_keep=1)
    hf_pair_ms   that plus one of the pre-trained model: the two plain forwards TuCo must at least cost
    tuco_ms      tuco_kernels scoring the batch (capture + both blocks per layer + fused update)

Targets: small CPU shape, tuco ≤ 2.3 × hf_ft (floor 2.0); ``--preset llama2-7b`` (random weights on the
device, bf16, prompts of 256 tokens, GPU): tuco ≤ 1.1 × hf_pair and ≥ 45% model FLOPs utilisation, counting
both models' block FLOPs (2 · block parameters per token per model; attention scores not counted) against the
GPU's dense bf16 peak (989 TFLOP/s on H100/H200 SXM; a measured 8192³ bf16 matmul is printed beside it).
Appends a row to <results>/engine_overhead.csv.

    python bench/engine_overhead.py [--hidden 512 --layers 8 --batch 8 --seq 256 --repeats 5]
    python bench/engine_overhead.py --preset llama2-7b --batch 32 --seq 256        # on a GPU
"""

from __future__ import annotations

import argparse

import torch
from common import append_rows, block_params, llama_config, provenance, random_model, target, time_wall

import tuco_kernels as tk
from tuco_kernels.core.engine import decompose_batch

DENSE_BF16_PEAK = {"H100": 989.4e12, "H200": 989.4e12, "A100": 312e12}


def peak_flops(device: str) -> tuple[float | None, str]:
    if not device.startswith("cuda"):
        return None, "-"
    name = torch.cuda.get_device_name(torch.device(device))
    for key, value in DENSE_BF16_PEAK.items():
        if key in name:
            return value, f"{key} dense bf16 {value / 1e12:.0f} TFLOP/s"
    return None, f"unknown peak for {name}"


def measured_matmul_flops(device: str) -> float:
    from triton.testing import do_bench

    a = torch.randn(8192, 8192, device=device, dtype=torch.bfloat16)
    b = torch.randn(8192, 8192, device=device, dtype=torch.bfloat16)
    ms = do_bench(lambda: a @ b, warmup=25, rep=200, return_mode="median")
    return 2 * 8192**3 / (ms / 1e3)


def build_pair(args, dtype):
    if args.preset:
        config = llama_config(args.preset)
        pt = random_model(config, dtype, args.device, seed=0)
        ft = random_model(config, dtype, args.device, seed=1)
        return pt, ft, config
    from transformers import LlamaConfig

    heads = max(1, args.hidden // 64)
    cfg = LlamaConfig(vocab_size=args.vocab, hidden_size=args.hidden, intermediate_size=int(args.hidden * 8 / 3) // 64 * 64,
                      num_hidden_layers=args.layers, num_attention_heads=heads, num_key_value_heads=heads,
                      max_position_embeddings=4096)
    return random_model(cfg, dtype, args.device, seed=0), random_model(cfg, dtype, args.device, seed=1), cfg


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", choices=("llama2-7b", "llama2-13b", "small"),
                    help="a Llama-2 shape with random weights (default: the small --hidden/--layers model)")
    ap.add_argument("--hidden", type=int, default=512)
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--vocab", type=int, default=8192)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--dtype", default=None, help="default: bfloat16 with --preset on a GPU, else float32")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()

    cuda = args.device.startswith("cuda")
    dtype = getattr(torch, args.dtype or ("bfloat16" if args.preset and cuda else "float32"))
    pt, ft, config = build_pair(args, dtype)
    pair = tk.load_pair(pt, ft)
    vocab = config.vocab_size
    ids = torch.randint(3, vocab, (args.batch, args.seq), device=args.device,
                        generator=torch.Generator(args.device).manual_seed(0))
    mask = torch.ones_like(ids)
    mask[1::2, -(args.seq // 4):] = 0  # half the rows right-padded, as scoring pads them

    @torch.no_grad()
    def hf_forward(model):
        model(input_ids=ids, attention_mask=mask, use_cache=False, logits_to_keep=1)

    def hf_pair():
        hf_forward(ft)
        hf_forward(pt)

    def tuco_score():
        decompose_batch(pair, ids, mask, [1.0] * pair.n_layers)

    # interleave the measurements to share any drift in machine load
    t_ft, t_pair, t_tuco = [], [], []
    for _ in range(3):
        t_ft.append(time_wall(lambda: hf_forward(ft), args.device, args.repeats))
        t_pair.append(time_wall(hf_pair, args.device, args.repeats))
        t_tuco.append(time_wall(tuco_score, args.device, args.repeats))
    t_ft, t_pair, t_tuco = min(t_ft), min(t_pair), min(t_tuco)
    tokens = int(mask.sum())
    flops = 2 * 2 * block_params(config) * tokens        # both models' block matmuls, 2 FLOPs per weight per token
    peak, peak_name = peak_flops(args.device)
    info = provenance(args.device)
    row = dict(date=info["date"], device=info["device"], torch=info["torch"], transformers=info["transformers"],
               backend=tk.ops.resolve_backend(None, args.device), dtype=str(dtype).removeprefix("torch."),
               preset=args.preset or "", hidden=config.hidden_size, layers=config.num_hidden_layers,
               batch=args.batch, seq=args.seq, hf_forward_ms=round(t_ft * 1e3, 2), hf_pair_ms=round(t_pair * 1e3, 2),
               tuco_ms=round(t_tuco * 1e3, 2), ratio=round(t_tuco / t_ft, 3), ratio_vs_pair=round(t_tuco / t_pair, 3),
               tuco_tokens_per_s=round(tokens / t_tuco), prompts_per_s=round(args.batch / t_tuco, 2),
               tflops=round(flops / t_tuco / 1e12, 1), mfu=round(flops / t_tuco / peak, 3) if peak else "")
    print(f"device: {row['device']}; torch {row['torch']}, transformers {row['transformers']}, backend {row['backend']}")
    print(f"llama d={config.hidden_size} L={config.num_hidden_layers}, batch {args.batch}×{args.seq} "
          f"({tokens} real tokens), {row['dtype']}")
    print(f"HF forward, fine-tuned only:        {t_ft * 1e3:9.2f} ms")
    print(f"HF forwards, fine-tuned + pre-trained: {t_pair * 1e3:9.2f} ms")
    print(f"TuCo score (both models):           {t_tuco * 1e3:9.2f} ms   ({row['tuco_tokens_per_s']} tokens/s, "
          f"{row['prompts_per_s']} prompts/s, {row['tflops']} TFLOP/s of block matmuls)")
    if cuda:
        matmul = measured_matmul_flops(args.device)
        row["matmul_tflops"] = round(matmul / 1e12, 1)
        print(f"peak: {peak_name}; measured 8192³ bf16 matmul here: {matmul / 1e12:.0f} TFLOP/s")
    print(f"ratio: {t_tuco / t_ft:.3f}× one forward, {t_tuco / t_pair:.3f}× two forwards")
    if args.preset:
        target(f"{args.preset} tuco / two HF forwards", t_tuco / t_pair, "≤ 1.10", t_tuco / t_pair <= 1.10)
        if peak:
            target(f"{args.preset} model FLOPs utilisation (both models' blocks)", 100 * flops / t_tuco / peak,
                   "≥ 45%", flops / t_tuco / peak >= 0.45, "{:.1f}%")
    else:
        target("small model tuco / one HF forward", t_tuco / t_ft, "≤ 2.3 (floor 2.0)", t_tuco / t_ft <= 2.3)
    print(f"appended to {append_rows('engine_overhead', [row])}")


if __name__ == "__main__":
    main()
