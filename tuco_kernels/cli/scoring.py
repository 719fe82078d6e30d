"""``tuco score``: TuCo of every prompt of a file, written to one file (or, with ``--out DIR/``, to shards:
:mod:`.sharded`), with a summary on stderr."""

from __future__ import annotations

import sys

from ..errors import OptionError
from ..models.sources import parse_device
from ..prompts.output import OutputTarget
from ..result import run_metadata
from ..score import score
from .console import EXIT_FLAGGED, EXIT_OK, EXIT_USER
from .prepare import (check_before_loading, command_line, default_device, estimated_bytes, load, one_process,
                      options_of)
from .sharded import check_file_out_args, cmd_score_dataset, is_dataset_out


def cmd_score(args) -> int:
    if not str(args.out).strip():
        raise OptionError("--out is empty; name a .jsonl, .csv or .parquet file, or a directory (DIR/)")
    sharded = is_dataset_out(args.out)
    if not sharded and not one_process("tuco score with a file --out", "give --out a directory (DIR/): its shards "
                                       "are shared by the ranks"):
        return EXIT_USER
    prompts = check_before_loading(args, [args.alpha])
    device = parse_device(default_device(args.device))
    if args.max_gpu_memory and device.type != "cuda":
        raise OptionError(f"--max-gpu-memory {args.max_gpu_memory} is a budget for a CUDA device, but the device is "
                          f"{device}")
    if sharded:  # --out DIR/: sharded and resumable, torchrun-aware
        return cmd_score_dataset(args, lambda a: (load(a), prompts))
    check_file_out_args(args)
    per_row = 160 + (3 * 24 * 64 if args.layers else 0) + (4000 if args.token_map else 0)
    sides = len(args.finetuned) if isinstance(args.finetuned, list) else 1
    with OutputTarget(args.out, inputs=[args.prompts], force=args.force,
                      estimated_bytes=estimated_bytes(len(prompts) * sides, per_row)) as target:
        pair = load(args)
        each = f" (each scored by {sides} fine-tunes, {len(prompts) * sides} rows)" if sides > 1 else ""
        print(f"tuco: {pair}; {len(prompts)} prompts from {args.prompts}{each}", file=sys.stderr)
        with pair:
            result = score(pair, prompts, alpha=args.alpha, chat=args.chat, system_prompt=args.system_prompt,
                           batch_tokens=args.batch_tokens, layers=args.layers, output_co=args.output_co,
                           progress=not args.no_progress, backend=args.backend, schedule=args.schedule,
                           max_gpu_memory=args.max_gpu_memory, sweep_tokens=args.sweep_tokens, profile=args.profile,
                           truncate=args.truncate, token_map=args.token_map)
        target.write(result.to_records(), metadata=run_metadata(pair, options=options_of(args), run=result.run,
                                                                command=command_line(args)))
    print_summary(args, pair, result)
    return EXIT_FLAGGED if result.flagged else EXIT_OK


def print_summary(args, pair, result) -> None:
    s = result.summary()
    rows = [("prompts", f"{s['n']}" + (f" ({s['flagged']} flagged, not averaged)" if s["flagged"] else "")),
            ("TuCo mean ± sd", f"{s['tuco_mean']:.4f} ± {s['tuco_sd']:.4f}"),
            ("TuCo min / max", f"{s['tuco_min']:.4f} / {s['tuco_max']:.4f}"),
            ("tokens per prompt (mean)", f"{s['tokens_mean']:.1f}"), ("written to", str(args.out))]
    if result.output_co is not None:
        rows.insert(3, ("OutputCo mean", f"{result.output_co[result.ok].mean():.4f}"))
    if result.truncated_from is not None:
        rows.append(("truncated", f"{sum(1 for t in result.truncated_from if t)} prompt(s) cut to the model's "
                                  f"positions (column truncated_from)"))
    if result.finetuned is not None:   # a pair set: each fine-tune's own numbers
        rows[1:3] = [(f"TuCo mean ± sd, min / max [{name}]",
                      f"{t['tuco_mean']:.4f} ± {t['tuco_sd']:.4f}, {t['tuco_min']:.4f} / {t['tuco_max']:.4f}")
                     for name, t in ((name, part.summary()) for name, part in result.by_finetuned().items())]
        rows[0] = ("rows", f"{s['n']} ({s['n'] // len(pair.sides)} prompts × {len(pair.sides)} fine-tunes)"
                   + (f", {s['flagged']} flagged, not averaged" if s["flagged"] else ""))
    if args.profile:
        rows += result.run.lines()
    width = max(len(k) for k, _ in rows)
    print("\n".join(f"  {k:<{width}}  {v}" for k, v in rows), file=sys.stderr)
    if result.flagged:
        first = result.flagged[0]
        hint = ""
        if str(pair.dtype) == "torch.float16" and any("non-finite" in result.status[i] for i in result.flagged):
            hint = "; float16 overflows easily: try --dtype bfloat16 or float32"
        who = f" scored by {result.finetuned[first]}" if result.finetuned is not None else ""
        unit = "rows" if result.finetuned is not None else "prompts"
        print(f"tuco: warning: {s['flagged']} of {s['n']} {unit} have no usable TuCo (status column); the first, id "
              f"{result.ids[first]!r}{who}: {result.status[first]}{hint}", file=sys.stderr)
