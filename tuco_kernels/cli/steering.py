"""``tuco steer``: completions under FTC α-scaling, printed as each chunk of prompts finishes, grouped by prompt
with α beside each text; ``--out`` keeps them as rows."""

from __future__ import annotations

import sys

from ..generate import generate, prepare_generation
from ..prompts.output import OutputTarget
from ..result import run_metadata
from .console import EXIT_OK
from .prepare import check_before_loading, command_line, estimated_bytes, load, options_of

STEER_CHUNK = 8   # prompts generated together before their completions are printed


def cmd_steer(args) -> int:
    prompts = check_before_loading(args, args.alpha)
    target = None
    if args.out:
        target = OutputTarget(args.out, inputs=[args.prompts], force=args.force,
                              estimated_bytes=estimated_bytes(len(prompts) * len(args.alpha) * args.samples,
                                                              200 + 8 * args.max_new_tokens)).claim()
    try:
        pair = load(args)
        use_cache = not args.no_cache and pair.resident
        if not args.no_cache and not use_cache:
            print("tuco: streamed weights: generating without a KV cache (each step recomputes the sequence)",
                  file=sys.stderr)
        # every prompt checked (tokens, room for the new ones) before the first completion is printed
        prepare_generation(pair, prompts, args.max_new_tokens, chat=args.chat, system_prompt=args.system_prompt)
        records = []
        with pair:
            for start in range(0, len(prompts), STEER_CHUNK):
                chunk = prompts[start:start + STEER_CHUNK]
                by_alpha = [generate(pair, chunk, alpha, max_new_tokens=args.max_new_tokens, do_sample=args.sample,
                                     temperature=args.temperature, top_p=args.top_p, seed=args.seed,
                                     use_cache=use_cache, num_samples=args.samples, chat=args.chat,
                                     system_prompt=args.system_prompt, batch_tokens=args.batch_tokens,
                                     backend=args.backend) for alpha in args.alpha]
                for k, prompt in enumerate(chunk):
                    rows = [{"id": prompt.id, "prompt": prompt.preview(pair.tokenizer), "alpha": alpha,
                             "sample": o["sample"], "text": o["text"]}
                            for alpha, outs in zip(args.alpha, by_alpha)
                            for o in outs[k * args.samples:(k + 1) * args.samples]]
                    print_completions(rows)
                    records += rows
        if target is not None:
            target.write(records, metadata=run_metadata(pair, options=options_of(args), command=command_line()))
            print(f"tuco: {len(records)} completions written to {args.out}", file=sys.stderr)
    finally:
        if target is not None:
            target.release()
    return EXIT_OK


def print_completions(rows: list[dict]) -> None:
    """One prompt, then each completion under it with its α (and sample), as text."""
    first = rows[0]
    prompt = first["prompt"] if len(first["prompt"]) <= 300 else first["prompt"][:299] + "…"
    print(f"── [{first['id']}] {prompt}")
    for r in rows:
        label = f"α={alpha_label(r['alpha'])}" + (f" #{r['sample']}" if r["sample"] else "")
        text = r["text"].strip().replace("\n", "\n" + " " * (len(label) + 4))
        print(f"   {label}  {text}")
    print(flush=True)


def alpha_label(alpha) -> str:
    return ",".join(f"{a:g}" for a in alpha) if isinstance(alpha, list) else f"{alpha:g}"
