"""``tuco steer``: completions under FTC α-scaling, printed as each chunk of prompts finishes, grouped by prompt
with α beside each text; ``--out`` keeps them as rows (with a ``status`` column). A completion whose next-token
probabilities stopped being finite is flagged as scoring flags a row (exit 3). When stdout's reader stops reading
(``| head``), the run stops, or, with ``--out``, goes on into the file."""

from __future__ import annotations

import sys

from ..generate import generate, prepare_generation
from ..prompts.output import OutputTarget
from ..result import run_metadata
from ..errors import OptionError
from .console import EXIT_FLAGGED, EXIT_OK, EXIT_USER, silence_stdout
from .prepare import check_before_loading, command_line, estimated_bytes, load, one_process, options_of

STEER_CHUNK = 8   # prompts generated together before their completions are printed


def cmd_steer(args) -> int:
    if not one_process("tuco steer", "run it as one process (python -m tuco_kernels.cli steer ..., or tuco steer)"):
        return EXIT_USER
    args.alpha = steer_alphas(args)
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
        stdout_open = True
        with pair:
            for start in range(0, len(prompts), STEER_CHUNK):
                chunk = prompts[start:start + STEER_CHUNK]
                by_alpha = [generate(pair, chunk, alpha, max_new_tokens=args.max_new_tokens, do_sample=args.sample,
                                     temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
                                     seed=args.seed,
                                     use_cache=use_cache, num_samples=args.samples, chat=args.chat,
                                     system_prompt=args.system_prompt, batch_tokens=args.batch_tokens,
                                     backend=args.backend) for alpha in args.alpha]
                for k, prompt in enumerate(chunk):
                    labels = prompt.extra.get("columns") or {}
                    rows = [{"id": prompt.id, "prompt": prompt.preview(pair.tokenizer), **labels, "alpha": alpha,
                             "sample": o["sample"], "text": o["text"], "status": o["status"]}
                            for alpha, outs in zip(args.alpha, by_alpha)
                            for o in outs[k * args.samples:(k + 1) * args.samples]]
                    records += rows
                    if stdout_open:
                        try:
                            print_completions(rows)
                        except BrokenPipeError:   # `| head` had enough: without --out there is nothing left to do
                            if target is None:
                                raise
                            silence_stdout()
                            stdout_open = False
        if target is not None:
            target.write(records, metadata=run_metadata(pair, options=options_of(args), command=command_line(args)))
            print(f"tuco: {len(records)} completions written to {args.out}", file=sys.stderr)
    finally:
        if target is not None:
            target.release()
    return warn_flagged(records, str(pair.dtype))


def steer_alphas(args) -> list:
    """The α values to generate at: --alpha-sweep A,B,C (the convention of eval), or --alpha A (one α; a comma
    separates per-layer values, as for score). --alpha A B C, the older spelling of a sweep, is still read."""
    if args.alpha_sweep is not None and args.alpha is not None:
        raise OptionError("--alpha and --alpha-sweep both given; use --alpha for one α, --alpha-sweep for several")
    if args.alpha_sweep is not None:
        return list(args.alpha_sweep)
    return [1.0] if args.alpha is None else list(args.alpha)


def warn_flagged(records: list[dict], dtype: str) -> int:
    """EXIT_FLAGGED with a warning naming the first completion whose log-probabilities were not finite, else
    EXIT_OK."""
    flagged = [r for r in records if r["status"] != "ok"]
    if not flagged:
        return EXIT_OK
    first = flagged[0]
    hint = "; float16 overflows easily: try --dtype bfloat16 or float32" if dtype == "torch.float16" else ""
    print(f"tuco: warning: {len(flagged)} of {len(records)} completions stopped because their next-token "
          f"probabilities were not finite (status column); the first, id {first['id']!r} at α="
          f"{alpha_label(first['alpha'])}: {first['status']}{hint}", file=sys.stderr)
    return EXIT_FLAGGED


def print_completions(rows: list[dict]) -> None:
    """One prompt, then each completion under it with its α (and sample), as text."""
    first = rows[0]
    prompt = first["prompt"] if len(first["prompt"]) <= 300 else first["prompt"][:299] + "…"
    print(f"── [{first['id']}] {prompt}")
    for r in rows:
        label = f"α={alpha_label(r['alpha'])}" + (f" #{r['sample']}" if r["sample"] else "")
        text = r["text"].strip().replace("\n", "\n" + " " * (len(label) + 4))
        if r["status"] != "ok":
            text += ("  " if text else "") + f"[stopped: {r['status']}]"
        print(f"   {label}  {text}")
    print(flush=True)


def alpha_label(alpha) -> str:
    return ",".join(f"{a:g}" for a in alpha) if isinstance(alpha, list) else f"{alpha:g}"
