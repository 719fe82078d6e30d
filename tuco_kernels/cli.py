"""The ``tuco`` command: ``tuco score``, ``tuco steer`` and ``tuco info``.

Errors the user can fix (a bad prompt file, an incompatible pair, an unknown dtype) print one line,
``tuco: error: ...``, and exit with status 2; output files are written atomically (prompts/output.py).
"""

from __future__ import annotations

import argparse
import sys

from . import ops
from ._version import __version__
from .cli_dataset import add_dataset_args, check_file_out_args, cmd_score_dataset, is_dataset_out  # --out DIR/
from .core.families import SUPPORTED
from .errors import TucoError
from .generate import generate
from .models.load import load_pair
from .prompts.output import check_output_path, write_records
from .prompts.records import read_prompt_file
from .prompts.templates import paper_template, use_paper_template
from .score import score


def _add_model_args(p: argparse.ArgumentParser):
    p.add_argument("--pretrained", help="pre-trained model: directory or .gguf file "
                                        "(with --finetuned; neither: the default gemma-3-270m pair)")
    p.add_argument("--finetuned", help="fine-tuned model: directory, .gguf file or PEFT adapter")
    p.add_argument("--tokenizer", help="tokenizer directory (default: the fine-tuned side's)")
    p.add_argument("--dtype", help="float32, bfloat16 or float16 (default: the checkpoints')")
    p.add_argument("--device", help="e.g. cpu, cuda, cuda:1 (default: cuda if available, else cpu)")
    p.add_argument("--allow-pickle", action="store_true", help="permit pickle (*.bin) weights")
    p.add_argument("--prompts", required=True, help="prompt file: .jsonl (prompt|messages, id), .csv (prompt), .txt")
    p.add_argument("--chat", action="store_true", help="render text prompts as user turns of the chat template "
                                                       "(always on for the default pair, a chat model)")
    p.add_argument("--system-prompt", help="system message for chat prompts")
    p.add_argument("--template", help="render prompts with one of the paper's templates (implies --chat): "
                                      "llama2, vicuna, llama3, gemma, zephyr-gemma, mistral")
    p.add_argument("--raw-text", action="store_true", help="with the default pair: score text prompts as raw "
                                                           "text instead of chat user turns")
    p.add_argument("--batch-tokens", type=int, default=4096, help="rows × padded length per batch (default 4096)")
    p.add_argument("--backend", help="force a kernel backend (see `tuco info`)")
    p.add_argument("--offload", choices=("none", "cpu", "disk"),
                   help="where block weights live: none (on the device), cpu (pinned host memory, streamed per layer), "
                        "disk (read per layer from the safetensors files); default: none, or what --max-gpu-memory needs")
    p.add_argument("--max-gpu-memory", help="device memory budget, e.g. 8GiB: picks --offload and sizes batches")
    p.add_argument("--no-prefetch", action="store_true", help="with offload: copy each layer only when it runs")


def _alpha(text: str):
    """'1.25' -> 1.25; '1,1,0.5' -> one value per layer."""
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number or comma-separated list of numbers: {text!r}") from None
    return values[0] if len(values) == 1 else values


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tuco", description="TuCo: how much of a model's answer comes from fine-tuning")
    sub = parser.add_subparsers(dest="command", required=True)

    s = sub.add_parser("score", help="TuCo per prompt")
    _add_model_args(s)
    s.add_argument("--out", required=True, help="output file: .jsonl, .csv or .parquet; or a directory (OUT/): "
                                                "sharded, resumable, several processes under torchrun")
    s.add_argument("--alpha", type=_alpha, default=1.0, help="FTC scale, or comma-separated per-layer values")
    s.add_argument("--layers", action="store_true", help="also write per-layer ptc_l1, ftc_l1 and beta")
    s.add_argument("--output-co", action="store_true", help="also write the OutputCo baseline")
    s.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    s.add_argument("--schedule", choices=("prompt", "layer"),
                   help="prompt: all layers per batch; layer: all batches per layer, weights fetched once per sweep "
                        "(default: layer with --offload, else prompt)")
    s.add_argument("--sweep-tokens", type=int, help="cap on the tokens of one layer-major sweep")
    s.add_argument("--profile", action="store_true", help="print time in weight copies vs compute, GB/s and overlap")
    add_dataset_args(s)  # --shard-tokens, --also, --rank-timeout (cli_dataset.py)

    g = sub.add_parser("steer", help="generate under FTC α-scaling")
    _add_model_args(g)
    g.add_argument("--alpha", type=_alpha, nargs="+", default=[1.0], help="one or more α values (or per-layer lists)")
    g.add_argument("--max-new-tokens", type=int, default=32)
    g.add_argument("--sample", action="store_true", help="sample instead of greedy decoding")
    g.add_argument("--temperature", type=float, default=1.0)
    g.add_argument("--top-p", type=float, default=1.0)
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--samples", type=int, default=1, help="completions per prompt and α (with --sample: independent draws)")
    g.add_argument("--no-cache", action="store_true", help="recompute the whole sequence at every step")
    g.add_argument("--out", help="write {id, alpha, text} records here (.jsonl/.csv/.parquet); default: print")

    sub.add_parser("info", help="versions, device and available kernel backends")
    return parser


def _default_device(requested):
    import torch

    return requested or ("cuda" if torch.cuda.is_available() else "cpu")


def _load(args):
    prompts = read_prompt_file(args.prompts)  # validate the input before loading any weights
    if args.template:
        paper_template(args.template)  # an unknown name fails before any weights load
    if (args.pretrained is None) != (args.finetuned is None):
        raise TucoError("give both --pretrained and --finetuned, or neither (the default gemma-3-270m pair)")
    if args.pretrained is None:
        args.chat = not args.raw_text
        print("tuco: no model given; using the default pair (gemma-3-270m + chat LoRA; first run fetches it)",
              file=sys.stderr)
    pair = load_pair(args.pretrained, args.finetuned, tokenizer=args.tokenizer, dtype=args.dtype,
                     device=_default_device(args.device), allow_pickle=args.allow_pickle, offload=args.offload,
                     max_gpu_memory=args.max_gpu_memory, prefetch=not args.no_prefetch)
    if args.template:
        use_paper_template(pair.tokenizer, args.template)
        args.chat = True
    return pair, prompts


def cmd_score(args) -> int:
    if is_dataset_out(args.out):  # --out DIR/: sharded and resumable, torchrun-aware (cli_dataset.py)
        return cmd_score_dataset(args, _load)
    check_file_out_args(args)
    check_output_path(args.out)
    pair, prompts = _load(args)
    print(f"tuco: {pair}; {len(prompts)} prompts from {args.prompts}", file=sys.stderr)
    result = score(pair, prompts, alpha=args.alpha, chat=args.chat, system_prompt=args.system_prompt,
                   batch_tokens=args.batch_tokens, layers=args.layers, output_co=args.output_co,
                   progress=not args.no_progress, backend=args.backend, schedule=args.schedule,
                   max_gpu_memory=args.max_gpu_memory, sweep_tokens=args.sweep_tokens, profile=args.profile)
    pair.close()
    write_records(result.to_records(), args.out)
    s = result.summary()
    rows = [("prompts", f"{s['n']}"), ("TuCo mean ± sd", f"{s['tuco_mean']:.4f} ± {s['tuco_sd']:.4f}"),
            ("TuCo min / max", f"{s['tuco_min']:.4f} / {s['tuco_max']:.4f}"),
            ("tokens per prompt (mean)", f"{s['tokens_mean']:.1f}"), ("written to", str(args.out))]
    if result.output_co is not None:
        rows.insert(3, ("OutputCo mean", f"{result.output_co.mean():.4f}"))
    if args.profile:
        rows += result.run.lines()
    width = max(len(k) for k, _ in rows)
    print("\n".join(f"  {k:<{width}}  {v}" for k, v in rows), file=sys.stderr)
    return 0


def cmd_steer(args) -> int:
    if args.out:
        check_output_path(args.out)
    pair, prompts = _load(args)
    records = []
    use_cache = not args.no_cache and pair.resident
    if not args.no_cache and not use_cache:
        print("tuco: streamed weights: generating without a KV cache (each step recomputes the sequence)",
              file=sys.stderr)
    for alpha in args.alpha:
        outs = generate(pair, prompts, alpha, max_new_tokens=args.max_new_tokens, do_sample=args.sample,
                        temperature=args.temperature, top_p=args.top_p, seed=args.seed, use_cache=use_cache,
                        num_samples=args.samples,
                        chat=args.chat, system_prompt=args.system_prompt, batch_tokens=args.batch_tokens,
                        backend=args.backend)
        for o in outs:
            records.append({"id": o["id"], "alpha": alpha, "sample": o["sample"], "text": o["text"]})
    if args.out:
        write_records(records, args.out)
    else:
        for r in records:
            print(f"[{r['id']}] α={r['alpha']}: {r['text']!r}")
    return 0


def cmd_info(_args) -> int:
    import platform

    import torch
    import transformers


    try:
        import triton
        triton_version = triton.__version__
    except ImportError:
        triton_version = "not installed"
    lines = [("tuco_kernels", __version__), ("python", platform.python_version()), ("torch", torch.__version__),
             ("triton", triton_version), ("transformers", transformers.__version__),
             ("cuda", torch.cuda.get_device_name(0) if torch.cuda.is_available() else
              f"not available (torch built {'with CUDA ' + torch.version.cuda if torch.version.cuda else 'without CUDA'})"),
             ("families", ", ".join(SUPPORTED))]
    device = "cuda" if torch.cuda.is_available() else "cpu"
    lines.append(("compiled ops", ops.extension.load().how))
    lines += [(f"backend {name}", status) for name, status in ops.backend_status(device).items()]
    lines.append((f"default on {device}", ops.resolve_backend(None, device)))
    width = max(len(k) for k, _ in lines)
    print("\n".join(f"{k:<{width}}  {v}" for k, v in lines))
    return 0


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # HF's per-file loading bars; ours reports the scoring
    try:
        return {"score": cmd_score, "steer": cmd_steer, "info": cmd_info}[args.command](args)
    except TucoError as exc:
        print(f"tuco: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("tuco: interrupted; no output written", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
