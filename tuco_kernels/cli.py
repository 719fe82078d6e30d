"""The ``tuco`` command: ``tuco score``, ``tuco steer`` and ``tuco info``.

Exit status: 0 a clean run; 2 a mistake the user can fix (a bad option, prompt file, model or output path), printed
as one line ``tuco: error: ...`` naming it; 3 the run finished but some rows are flagged (their numbers are not
finite: see the ``status`` column); 1 an internal error (a bug: one line, the traceback saved to a file to report);
130 interrupted. Everything that can be checked without the models (options, the output path, every line of the
prompt file, α against the config's layer count) is checked before any model loads.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import shlex
import sys
import tempfile
import traceback
import warnings

from . import ops, report
from ._version import __version__
from .cli_dataset import add_dataset_args, check_file_out_args, cmd_score_dataset, is_dataset_out  # --out DIR/
from .core.families import SUPPORTED
from .errors import OptionError, TucoError
from .generate import generate
from .models.load import load_pair
from .models.sources import parse_device, parse_dtype, read_config
from .prompts.output import OutputTarget
from .prompts.records import read_prompt_file
from .prompts.tokenize import TRUNCATE_SIDES, rendering
from .prompts.templates import PAPER_TEMPLATES, TemplateMismatchWarning, paper_template, use_paper_template
from .result import run_metadata
from .score import score


EXIT_OK, EXIT_INTERNAL, EXIT_USER, EXIT_FLAGGED, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
REPORT_URL = "the project's issue tracker"


class _Parser(argparse.ArgumentParser):
    """argparse, with its errors in the one-line form every other error takes."""

    def error(self, message):
        print(f"tuco: error: {message} (see `{self.prog} --help`)", file=sys.stderr)
        raise SystemExit(EXIT_USER)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def _probability(text: str) -> float:
    value = _positive_float(text)
    if value > 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {text}")
    return value


def _alpha(text: str):
    """'1.25' -> 1.25; '1,1,0.5' -> one value per layer."""
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number or comma-separated list of numbers: {text!r}") from None
    if not all(v == v and abs(v) != float("inf") for v in values):
        raise argparse.ArgumentTypeError(f"must be finite: {text!r}")
    return values[0] if len(values) == 1 else values


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Examples kept as written; every option's default shown, unless it has none."""

    def _get_help_string(self, action):
        text = action.help or ""
        if "%(default)" not in text and action.default not in (None, False, argparse.SUPPRESS) and action.option_strings:
            text += " (default: %(default)s)"
        return text


EXAMPLES = {
    "score": """examples:
  tuco score --prompts prompts.txt --out scores.csv                   # the default pair (gemma-3-270m + chat LoRA)
  tuco score --pretrained meta-llama/Llama-2-7b-hf --finetuned meta-llama/Llama-2-7b-chat-hf \\
             --template llama2 --prompts prompts.jsonl --out scores.parquet --dtype bfloat16 --layers
  tuco score --pretrained BASE --finetuned CHAT --prompts p.jsonl --out s.parquet --offload disk --max-gpu-memory 8GiB

exit status: 0 clean; 2 a mistake named on one line; 3 finished, but rows are flagged (see the status column);
1 an internal error (a bug); 130 interrupted.""",
    "steer": """examples:
  tuco steer --prompts prompts.txt --alpha 0.75 1 1.25 --max-new-tokens 40          # the default pair
  tuco steer --pretrained BASE --finetuned CHAT --prompts p.txt --alpha 1.25 --sample --samples 4 --out gen.jsonl""",
    "info": """example:
  tuco info""",
}


def _parser_for(sub, name: str, help_text: str) -> argparse.ArgumentParser:
    return sub.add_parser(name, help=help_text, description=help_text, epilog=EXAMPLES.get(name),
                          formatter_class=_HelpFormatter)


def _add_input_args(p: argparse.ArgumentParser):
    g = p.add_argument_group("input")
    g.add_argument("--prompts", required=True, metavar="FILE",
                   help="prompt file: .jsonl (prompt or messages, optional id), .csv (prompt, optional id), .txt (one "
                        "prompt a line)")
    g.add_argument("--chat", action="store_true", help="insist on rendering text prompts as user turns of the "
                                                       "fine-tuned tokenizer's chat template (the default when it has one)")
    g.add_argument("--raw-text", action="store_true", help="render text prompts as raw text, not as chat user turns")
    g.add_argument("--template", choices=PAPER_TEMPLATES, help="render prompts with one of the paper's templates "
                                                               "(App. E.2) for this model family")
    g.add_argument("--system-prompt", metavar="TEXT", help="system message for chat prompts")
    g.add_argument("--truncate", choices=TRUNCATE_SIDES,
                   help="cut prompts longer than the model's positions: left keeps the end (the last token), right "
                        "the beginning (default: refuse them, naming each)")


def _add_model_args(p: argparse.ArgumentParser):
    g = p.add_argument_group("models")
    g.add_argument("--pretrained", metavar="MODEL", help="pre-trained model: a directory, a .gguf file or a hub id "
                                                         "(with --finetuned; neither: the default gemma-3-270m pair)")
    g.add_argument("--finetuned", metavar="MODEL", help="fine-tuned model: a directory, .gguf file, hub id or PEFT "
                                                        "adapter")
    g.add_argument("--tokenizer", metavar="DIR", help="tokenizer directory or hub id (default: the fine-tuned side's)")
    g.add_argument("--dtype", help="float32, bfloat16 or float16 (default: the checkpoints' own)")
    g.add_argument("--device", help="cpu, cuda, cuda:N (default: cuda when there is a GPU, else cpu)")
    g.add_argument("--allow-pickle", action="store_true", help="permit pickle (*.bin) weights (they can run code)")


def _add_memory_args(p: argparse.ArgumentParser, scoring: bool):
    g = p.add_argument_group("memory")
    g.add_argument("--offload", choices=("none", "cpu", "disk"),
                   help="where block weights live: none (on the device), cpu (page-locked host memory, streamed per "
                        "layer), disk (read per layer from the safetensors files); default: none, or what "
                        "--max-gpu-memory needs")
    g.add_argument("--max-gpu-memory", metavar="SIZE", help="device memory budget, e.g. 8GiB: picks --offload and "
                                                            "sizes the batches")
    g.add_argument("--no-prefetch", action="store_true", help="with --offload: copy each layer only when it runs")
    if scoring:
        g.add_argument("--schedule", choices=("prompt", "layer"),
                       help="prompt: all layers per batch; layer: all batches per layer, weights fetched once per sweep "
                            "(default: layer with --offload, else prompt)")
        g.add_argument("--sweep-tokens", type=_positive_int, metavar="N", help="cap on the tokens of one layer-major "
                                                                               "sweep")
        g.add_argument("--profile", action="store_true", help="print time in weight copies vs compute, GB/s, overlap")


def _add_common(p: argparse.ArgumentParser):
    p.add_argument("-v", "--verbose", action="store_true", help="also show the libraries' warnings and progress")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="tuco", description="TuCo: how much of a model's answer comes from fine-tuning "
                                              "(Nuti, Franzmeyer, Henriques, ICML 2025)",
                     epilog="`tuco COMMAND --help` shows a command's options and examples.")
    parser.add_argument("--version", action="version", version=f"tuco {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser, metavar="COMMAND")

    s = _parser_for(sub, "score", "TuCo of every prompt of a file")
    _add_input_args(s)
    _add_model_args(s)
    g = s.add_argument_group("scoring")
    g.add_argument("--alpha", type=_alpha, default=1.0, metavar="A",
                   help="FTC scale α, or comma-separated per-layer values (1: the fine-tuned model)")
    g.add_argument("--layers", action="store_true", help="also write per-layer ptc_l1, ftc_l1 and cumulative beta")
    g.add_argument("--token-map", action="store_true",
                   help="also write TuCo at every token (token_tuco) beside the token strings (tokens)")
    g.add_argument("--output-co", action="store_true", help="also write the OutputCo baseline")
    g.add_argument("--batch-tokens", type=_positive_int, default=4096, metavar="N",
                   help="rows × padded length per micro-batch")
    g.add_argument("--backend", choices=ops.BACKENDS, help="force a kernel backend (see `tuco info`)")
    _add_memory_args(s, scoring=True)
    o = s.add_argument_group("output")
    o.add_argument("--out", required=True, metavar="FILE|DIR/",
                   help="results: a .jsonl, .csv or .parquet file (+ FILE.meta.json); or a directory (DIR/): sharded, "
                        "resumable, several processes under torchrun")
    o.add_argument("--force", action="store_true", help="replace --out if it exists (default: refuse)")
    o.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    add_dataset_args(o)  # --shard-tokens, --also, --rank-timeout (cli_dataset.py)
    _add_common(s)

    t = _parser_for(sub, "steer", "generate under FTC α-scaling")
    _add_input_args(t)
    _add_model_args(t)
    g = t.add_argument_group("generation")
    g.add_argument("--alpha", type=_alpha, nargs="+", default=[1.0], metavar="A",
                   help="one or more α values (or comma-separated per-layer lists)")
    g.add_argument("--max-new-tokens", type=_positive_int, default=32, metavar="N")
    g.add_argument("--sample", action="store_true", help="sample instead of greedy decoding")
    g.add_argument("--temperature", type=_positive_float, default=1.0)
    g.add_argument("--top-p", type=_probability, default=1.0, metavar="P")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--samples", type=_positive_int, default=1, metavar="N",
                   help="completions per prompt and α (with --sample: independent draws)")
    g.add_argument("--no-cache", action="store_true", help="recompute the whole sequence at every step")
    g.add_argument("--batch-tokens", type=_positive_int, default=4096, metavar="N",
                   help="rows × padded length per micro-batch")
    g.add_argument("--backend", choices=ops.BACKENDS, help="force a kernel backend (see `tuco info`)")
    _add_memory_args(t, scoring=False)
    o = t.add_argument_group("output")
    o.add_argument("--out", metavar="FILE", help="also write {id, prompt, alpha, sample, text} rows to .jsonl, .csv "
                                                 "or .parquet (completions are printed as they finish either way)")
    o.add_argument("--force", action="store_true", help="replace --out if it exists (default: refuse)")
    _add_common(t)

    i = _parser_for(sub, "info", "versions, device, compiled ops and kernel backends (and why one cannot run)")
    _add_common(i)
    r = report.add_parser(sub)
    _add_common(r)
    return parser


def _default_device(requested):
    import torch

    return requested or ("cuda" if torch.cuda.is_available() else "cpu")


def _n_layers(args) -> int | None:
    """The fine-tuned side's layer count from its config (no weights read); None when it cannot be told yet."""
    if args.pretrained is None:
        return None   # the default pair: known once fetched, checked by the scoring itself
    source = args.pretrained if os.path.isfile(os.path.join(args.finetuned, "adapter_config.json")) else args.finetuned
    config = read_config(source)
    return getattr(config, "num_hidden_layers", None) or getattr(config, "n_layer", None)


def _check_before_loading(args, alphas) -> list:
    """Every check that costs nothing, before any model loads; returns the prompts."""
    if (args.pretrained is None) != (args.finetuned is None):
        raise OptionError("give both --pretrained and --finetuned, or neither (the default gemma-3-270m pair)")
    parse_dtype(args.dtype)
    parse_device(_default_device(args.device))
    if args.template:
        paper_template(args.template)  # an unknown name fails before any weights load
    if args.backend is not None:
        ops.resolve_backend(args.backend, _default_device(args.device))
    _rendering_choice(args)
    prompts = read_prompt_file(args.prompts)  # every line, before any weights load
    n_layers = _n_layers(args)
    for alpha in alphas:
        if isinstance(alpha, list) and n_layers is not None and len(alpha) != n_layers:
            raise OptionError(f"--alpha has {len(alpha)} values but the model has {n_layers} layers")
    return prompts


def _rendering_choice(args) -> bool | None:
    """--chat: True, --raw-text: False, neither: None (the chat template when the tokenizer has one)."""
    if args.chat and args.raw_text:
        raise OptionError("--chat and --raw-text contradict each other; give one")
    return True if args.chat or args.template else (False if args.raw_text else None)


def _load(args):
    if args.pretrained is None:
        print("tuco: no model given; using the default pair (gemma-3-270m + chat LoRA; first run fetches it)",
              file=sys.stderr)
    pair = load_pair(args.pretrained, args.finetuned, tokenizer=args.tokenizer, dtype=args.dtype,
                     device=_default_device(args.device), allow_pickle=args.allow_pickle, offload=args.offload,
                     max_gpu_memory=args.max_gpu_memory, prefetch=not args.no_prefetch)
    if args.template:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", TemplateMismatchWarning)
            use_paper_template(pair, args.template)
        for w in caught:
            print(f"tuco: warning: {w.message}", file=sys.stderr)
    args.chat = _rendering_choice(args)
    print(f"tuco: rendering: {rendering(pair.tokenizer, args.chat, args.system_prompt)}", file=sys.stderr)
    return pair


def _estimated_bytes(n_prompts: int, per_row: int) -> int:
    return n_prompts * per_row + 4096


def cmd_score(args) -> int:
    prompts = _check_before_loading(args, [args.alpha])
    if is_dataset_out(args.out):  # --out DIR/: sharded and resumable, torchrun-aware (cli_dataset.py)
        return cmd_score_dataset(args, lambda a: (_load(a), prompts))
    check_file_out_args(args)
    per_row = 160 + (3 * 24 * 64 if args.layers else 0) + (4000 if args.token_map else 0)
    with OutputTarget(args.out, inputs=[args.prompts], force=args.force,
                      estimated_bytes=_estimated_bytes(len(prompts), per_row)) as target:
        pair = _load(args)
        print(f"tuco: {pair}; {len(prompts)} prompts from {args.prompts}", file=sys.stderr)
        with pair:
            result = score(pair, prompts, alpha=args.alpha, chat=args.chat, system_prompt=args.system_prompt,
                           batch_tokens=args.batch_tokens, layers=args.layers, output_co=args.output_co,
                           progress=not args.no_progress, backend=args.backend, schedule=args.schedule,
                           max_gpu_memory=args.max_gpu_memory, sweep_tokens=args.sweep_tokens, profile=args.profile,
                           truncate=args.truncate, token_map=args.token_map)
        target.write(result.to_records(), metadata=run_metadata(pair, options=_options(args), run=result.run,
                                                                command=shlex.join(["tuco", *sys.argv[1:]])))
    _print_summary(args, pair, result)
    return EXIT_FLAGGED if result.flagged else EXIT_OK


def _options(args) -> dict:
    """The options of the run as given (for the results' metadata)."""
    skip = {"command", "pretrained", "finetuned", "no_progress"}
    return {k: v for k, v in vars(args).items() if k not in skip}


def _print_summary(args, pair, result) -> None:
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
    if args.profile:
        rows += result.run.lines()
    width = max(len(k) for k, _ in rows)
    print("\n".join(f"  {k:<{width}}  {v}" for k, v in rows), file=sys.stderr)
    if result.flagged:
        first = result.flagged[0]
        hint = ""
        if str(pair.dtype) == "torch.float16" and any("non-finite" in result.status[i] for i in result.flagged):
            hint = "; float16 overflows easily: try --dtype bfloat16 or float32"
        print(f"tuco: warning: {s['flagged']} of {s['n']} prompts have no usable TuCo (status column); the first, id "
              f"{result.ids[first]!r}: {result.status[first]}{hint}", file=sys.stderr)


STEER_CHUNK = 8   # prompts generated together before their completions are printed


def cmd_steer(args) -> int:
    prompts = _check_before_loading(args, args.alpha)
    target = None
    if args.out:
        target = OutputTarget(args.out, inputs=[args.prompts], force=args.force,
                              estimated_bytes=_estimated_bytes(len(prompts) * len(args.alpha) * args.samples,
                                                               200 + 8 * args.max_new_tokens)).claim()
    try:
        pair = _load(args)
        use_cache = not args.no_cache and pair.resident
        if not args.no_cache and not use_cache:
            print("tuco: streamed weights: generating without a KV cache (each step recomputes the sequence)",
                  file=sys.stderr)
        records = []
        with pair:
            for start in range(0, len(prompts), STEER_CHUNK):   # completions printed as each chunk finishes
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
                    _print_completions(rows)
                    records += rows
        if target is not None:
            target.write(records, metadata=run_metadata(pair, options=_options(args),
                                                        command=shlex.join(["tuco", *sys.argv[1:]])))
            print(f"tuco: {len(records)} completions written to {args.out}", file=sys.stderr)
    finally:
        if target is not None:
            target.release()
    return EXIT_OK


def _print_completions(rows: list[dict]) -> None:
    """One prompt, then each completion under it with its α (and sample), as text."""
    first = rows[0]
    prompt = first["prompt"] if len(first["prompt"]) <= 300 else first["prompt"][:299] + "…"
    print(f"── [{first['id']}] {prompt}")
    for r in rows:
        label = f"α={_alpha_label(r['alpha'])}" + (f" #{r['sample']}" if r["sample"] else "")
        text = r["text"].strip().replace("\n", "\n" + " " * (len(label) + 4))
        print(f"   {label}  {text}")
    print(flush=True)


def _alpha_label(alpha) -> str:
    return ",".join(f"{a:g}" for a in alpha) if isinstance(alpha, list) else f"{alpha:g}"


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


class _StderrLines(logging.Handler):
    """tuco's own log lines (loading stages) as ``tuco: ...`` on whatever stderr is when they are written."""

    def emit(self, record):
        print(f"tuco: {record.getMessage()}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def _console(verbose: bool):
    """For one command: without -v, no third-party warnings and no HF progress bars (tuco's stage lines and bar
    say what happens); tuco's log lines on stderr. Everything is put back afterwards."""
    from transformers.utils import logging as hf_logging

    logger = logging.getLogger("tuco_kernels")
    saved = (logger.level, logger.propagate, hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled())
    handler = _StderrLines()
    with warnings.catch_warnings():
        if not verbose:
            warnings.simplefilter("ignore")
            hf_logging.set_verbosity_error()
            hf_logging.disable_progress_bar()
        logger.addHandler(handler)
        logger.setLevel(logging.DEBUG if verbose else logging.INFO)
        logger.propagate = False
        try:
            yield
        finally:
            logger.removeHandler(handler)
            logger.setLevel(saved[0])
            logger.propagate = saved[1]
            hf_logging.set_verbosity(saved[2])
            if saved[3]:
                hf_logging.enable_progress_bar()


def main(argv=None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:   # --help, --version (0) or an option argparse refused (2, already printed as one line)
        return exc.code
    with _console(getattr(args, "verbose", False)):
        return _run(args)


def _run(args) -> int:
    try:
        return {"score": cmd_score, "steer": cmd_steer, "info": cmd_info, "report": report.run}[args.command](args)
    except TucoError as exc:
        print(f"tuco: error: {exc}", file=sys.stderr)
        return EXIT_USER
    except KeyboardInterrupt:
        print("tuco: interrupted; no output written", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:  # a bug: one line here, the traceback in a file for the report
        fd, path = tempfile.mkstemp(prefix="tuco-crash-", suffix=".txt")
        with os.fdopen(fd, "w") as f:
            f.write(f"tuco {__version__}; command line: {' '.join(sys.argv)}\n\n")
            traceback.print_exc(file=f)
        print(f"tuco: internal error ({type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}); "
              f"this is a bug in tuco_kernels. Please report it at {REPORT_URL} with the traceback saved in {path}",
              file=sys.stderr)
        return EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())
