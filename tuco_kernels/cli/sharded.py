"""``tuco score --out DIR/``: a sharded, resumable run (:func:`tuco_kernels.dataset.score_dataset`), on one
process or on every rank of a torchrun job.

``--out`` names a directory when it ends with ``/`` or is an existing directory. Exit status: 0 when every shard
is done and merged; 3 when merged but rows are flagged (non-finite numbers: the status column); 1 when shards
failed (the others are written) or a rank was lost; 2 for what the user can fix (bad input, a rerun whose
fingerprint differs).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from ..dataset import (DEFAULT_SHARD_TOKENS, DEFAULT_TIMEOUT_S, EXTRA_FORMATS, Layout, RankLost, RunAborted,
                       ShardsFailed, check_plan, connect, device_for_rank, dist_env, score_dataset, sources_identity)
from ..errors import TucoError
from ..models.loaders import choose_offload
from ..models.sources import parse_dtype
from ..prompts.output import OUTPUT_SUFFIXES
from ..result import run_metadata
from .console import EXIT_FLAGGED, EXIT_INTERNAL, EXIT_INTERRUPTED, EXIT_OK, EXIT_TERMINATED, EXIT_USER, Terminated
from .prepare import command_line, options_of
from .values import positive_float, positive_int


def is_dataset_out(out: str) -> bool:
    """``--out DIR/``, or an existing directory whose name is not that of a results file: the sharded mode. An
    existing directory named like a file (``x.jsonl``) is refused by the file check instead, naming it: a typo must
    not turn into a sharded run."""
    out = str(out)
    if out.endswith(("/", os.sep)):
        return True
    return Path(out).is_dir() and Path(out).suffix.lower() not in OUTPUT_SUFFIXES


def _formats(text: str) -> list[str]:
    values = [v.strip().lower().lstrip(".") for v in text.split(",") if v.strip()]
    bad = [v for v in values if v not in EXTRA_FORMATS]
    if bad:
        raise argparse.ArgumentTypeError(f"unknown format {bad[0]!r}; choose from {', '.join(EXTRA_FORMATS)}")
    return values


def add_dataset_args(p: argparse.ArgumentParser) -> None:
    """The options of ``tuco score --out DIR/``."""
    p.add_argument("--shard-tokens", type=positive_int, default=None, metavar="N",
                   help=f"with --out DIR/: padded tokens per shard file (default {DEFAULT_SHARD_TOKENS})")
    p.add_argument("--also", type=_formats, default=None, metavar="csv,jsonl",
                   help="with --out DIR/: merge into scores.csv / scores.jsonl too (scores.parquet always; default: neither)")
    p.add_argument("--rank-timeout", type=positive_float, default=DEFAULT_TIMEOUT_S, metavar="SECONDS",
                   help="with several processes: seconds without a heartbeat before a rank counts as dead and the "
                        "job fails")


def check_file_out_args(args) -> None:
    """Dataset-only options given with a file --out."""
    if getattr(args, "shard_tokens", None) is not None or getattr(args, "also", None):
        raise TucoError("--shard-tokens and --also go with a directory --out (ending with /)")


def _precheck(args) -> None:
    """Before any weights load: an output that cannot be a run's directory, and a rerun with other model files or
    options, fail at once, not after loading."""
    Layout(args.out).check_usable()
    if args.pretrained is None or not Path(args.out, "plan.json").is_file():
        return
    ids = sources_identity(args.pretrained, args.finetuned)
    fields = {"pretrained": ids["pretrained"]["sha256"], "finetuned": ids["finetuned"]["sha256"],
              "layers": bool(args.layers), "output_co": bool(args.output_co), "token_map": bool(args.token_map)}
    if args.shard_tokens is not None:
        fields["shard_tokens"] = args.shard_tokens
    check_plan(args.out, fields)


def _offload_for_ranks(args, env) -> None:
    """Several ranks on a node: where a budget would stream from host memory (offload="cpu", a copy per rank),
    stream from the files instead (offload="disk": the page cache holds one copy for all ranks)."""
    if env.local_world_size <= 1 or args.pretrained is None or args.offload or not args.max_gpu_memory:
        return
    several = isinstance(args.finetuned, list)   # a pair set streams only LoRA adapters on one base: as one of them
    mode = choose_offload(args.pretrained, args.finetuned[0] if several else args.finetuned, args.max_gpu_memory,
                          args.device, parse_dtype(args.dtype), shared=several)
    if mode == "cpu":
        args.offload = "disk"
        if env.rank == 0:
            print(f"tuco: {env.local_world_size} ranks per node: --offload disk (one copy of the weights in the page "
                  f"cache for all of them) rather than cpu (a copy in each); pass --offload cpu to insist",
                  file=sys.stderr)


def stopped_how(env, coord, what: str) -> str:
    """Why this run stopped, in words: under torchrun, a rank whose process is gone (torchrun then stops the
    others), or torchrun stopping every rank; alone, ``what``."""
    if not env.distributed:
        return what
    gone = coord.lost_ranks()
    if gone:
        rank, where = gone[0]
        return (f"rank {rank} ({where}) died (killed or crashed), and torchrun then stopped the other ranks "
                f"(rank {env.rank} {what})")
    return (f"rank {env.rank} {what}: torchrun stops every rank when one of them fails or the job is cancelled "
            f"(its report names the rank)")


def cmd_score_dataset(args, load) -> int:
    """``load(args) -> (pair, prompts)`` is the command line's own loader (prepare.load)."""
    env = dist_env()
    coord = connect(env, timeout=args.rank_timeout)
    try:
        if env.rank == 0:
            _precheck(args)
        args.device = device_for_rank(args.device, env)
        _offload_for_ranks(args, env)
        pair, prompts = load(args)
        if pair.offload == "cpu" and env.local_world_size > 1 and env.local_rank == 0:
            print(f"tuco: warning: --offload cpu with {env.local_world_size} ranks per node: each rank holds its own "
                  f"copy of the weights ({pair.streamer.host_bytes / 2**30:.1f} GiB); --offload disk shares the page "
                  f"cache", file=sys.stderr)
        if env.rank == 0:
            print(f"tuco: {pair}; {len(prompts)} prompts from {args.prompts} -> {args.out} "
                  f"({env.world_size} process{'es' if env.distributed else ''})", file=sys.stderr)
        run = score_dataset(pair, prompts, args.out, alpha=args.alpha, chat=args.chat,
                            system_prompt=args.system_prompt, batch_tokens=args.batch_tokens, layers=args.layers,
                            output_co=args.output_co, backend=args.backend, schedule=args.schedule,
                            max_gpu_memory=args.max_gpu_memory, sweep_tokens=args.sweep_tokens,
                            shard_tokens=args.shard_tokens or DEFAULT_SHARD_TOKENS, formats=args.also or (),
                            progress=not args.no_progress, coordinator=coord, truncate=args.truncate,
                            token_map=args.token_map,
                            metadata=run_metadata(pair, options=options_of(args), command=command_line(args)))
        pair.close()
    except (ShardsFailed, RankLost) as exc:
        print(f"tuco: error: {exc}", file=sys.stderr)
        return EXIT_INTERNAL
    except RunAborted as exc:
        print(f"tuco: error: {exc}", file=sys.stderr)
        return exc.code
    except TucoError as exc:
        coord.abort(str(exc), EXIT_USER)
        raise
    except KeyboardInterrupt as exc:
        terminated = isinstance(exc, Terminated)
        what, code = ("terminated (SIGTERM)", EXIT_TERMINATED) if terminated else ("interrupted", EXIT_INTERRUPTED)
        coord.abort(f"rank {env.rank} was {what}", code)
        if coord.first_to_report():   # under torchrun every rank is stopped: one of them says so
            print(f"tuco: {stopped_how(env, coord, what)}; the finished shards in {args.out} are kept: rerun the "
                  f"same command to resume", file=sys.stderr)
        return code
    except BaseException as exc:
        coord.abort(f"{type(exc).__name__}: {exc}")
        raise
    finally:
        coord.close()
    if env.rank == 0:
        print_dataset_summary(run)
        flagged = run.flagged()
        if flagged:
            n = run.n_prompts * len(run.fine_tunes or [None])
            print(f"tuco: warning: {flagged} of {n} {'rows' if run.fine_tunes else 'prompts'} have no usable TuCo "
                  f"(status column)",
                  file=sys.stderr)
            return EXIT_FLAGGED
    return EXIT_OK


def print_dataset_summary(run) -> None:
    """What a sharded run did, over every rank: the shards, this run's share and speed, TuCo over the merged rows
    (as a file run prints it), and every file written."""
    here = (f" ({len(run.scored)} by rank 0)" if run.world_size > 1 else "")
    flagged = run.flagged()
    stats = run.tuco_stats()
    rows = [("prompts", f"{run.n_prompts:,} in {run.n_shards} shards ({run.resumed} finished by earlier runs)"
                        + (f"; {flagged} flagged, not averaged" if flagged else "")),
            ("this run", f"{run.shards_this_run} shards over {run.world_size} process"
                         f"{'es' if run.world_size > 1 else ''}{here}, {run.seconds:.1f} s, "
                         f"{run.tokens_per_s:,.0f} tokens/s")]
    if run.fine_tunes:   # a pair set: each fine-tune's own numbers
        rows[0] = ("prompts", rows[0][1].replace(" in ", f" × {len(run.fine_tunes)} fine-tunes in ", 1))
        for name in run.fine_tunes:
            t = run.tuco_stats(name)
            if t["n"]:
                rows.append((f"TuCo mean ± sd, min / max [{name}]",
                             f"{t['mean']:.4f} ± {t['sd']:.4f}, {t['min']:.4f} / {t['max']:.4f}"))
    elif stats["n"]:
        rows += [("TuCo mean ± sd", f"{stats['mean']:.4f} ± {stats['sd']:.4f}"),
                 ("TuCo min / max", f"{stats['min']:.4f} / {stats['max']:.4f}")]
    rows.append(("written to", f"{run.out_dir}{os.sep}: " + ", ".join(p.name for p in run.files)))
    width = max(len(k) for k, _ in rows)
    print("\n".join(f"  {k:<{width}}  {v}" for k, v in rows), file=sys.stderr)
